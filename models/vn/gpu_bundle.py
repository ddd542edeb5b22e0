"""Carry the reader's training inputs to a machine without ../shared (a lent GPU box, 64 MiB cap).

  python gpu_bundle.py pack   [--ckpt work/ocr10_ckpt.pt]   # here: -> work/gpu/ (~32 MB)
  python gpu_bundle.py unpack                              # there: work/gpu/ -> work/, shared/ tree, fonts

The bundle holds what `train_ocr.py train` reads: the cleaned real crops (the 66 MB zero-padded
cache re-encoded as lossless WebP, pixel-identical), the 60 background frames of `bg_pool`, the
widened base graph, the checkpoint to resume from, and the DejaVu fonts that `synth.py` draws with.
Data files stay out of git (work/ is ignored), as ../shared's licences ask.
"""
import argparse
import glob
import os
import random
import shutil

import cv2
import numpy as np

import train_ocr
from common import DATA, WORK

BUNDLE = os.path.join(WORK, "gpu")
FONTS = "/usr/share/fonts/truetype/dejavu"
FONT_FILES = ["DejaVuSansCondensed-Bold.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf",
              "DejaVuSansMono-Bold.ttf"]


def pack(ckpt):
    os.makedirs(BUNDLE, exist_ok=True)
    z = np.load(train_ocr.REAL_NPZ)
    blobs = []
    for im, lw in zip(z["imgs"], z["labels"]):
        w = int(str(lw).split("|")[1])
        ok, buf = cv2.imencode(".webp", np.ascontiguousarray(im[:, :w]), [cv2.IMWRITE_WEBP_QUALITY, 101])
        assert ok
        blobs.append(buf.tobytes())
    np.savez(os.path.join(BUNDLE, "real.npz"), webp=np.array(blobs, dtype=object), labels=z["labels"],
             names=z["names"], allow_pickle=True)
    # the same 60 frames bg_pool() picks from the full set
    files = sorted(glob.glob(os.path.join(DATA, "vn_plate_detect_train", "images", "*.jpg")))
    random.Random(0).shuffle(files)
    bg = os.path.join(BUNDLE, "bg")
    os.makedirs(bg, exist_ok=True)
    for f in files[:60]:
        shutil.copy(f, bg)
    shutil.copy(train_ocr.BASE_OCR10, BUNDLE)
    shutil.copy(ckpt, os.path.join(BUNDLE, "start_ckpt.pt"))
    for f in FONT_FILES:
        shutil.copy(os.path.join(FONTS, f), BUNDLE)


def unpack():
    z = np.load(os.path.join(BUNDLE, "real.npz"), allow_pickle=True)
    imgs = np.zeros((len(z["webp"]), train_ocr.KEEP_H, 400, 3), np.uint8)
    for i, b in enumerate(z["webp"]):
        im = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)
        imgs[i, :, :im.shape[1]] = im
    np.savez(train_ocr.REAL_NPZ, imgs=imgs, labels=z["labels"], names=z["names"])
    # bg_pool() globs $MATTHAN_SHARED/data/vn_plate_detect_train/images
    images = os.path.join(BUNDLE, "shared", "data", "vn_plate_detect_train", "images")
    os.makedirs(images, exist_ok=True)
    for f in glob.glob(os.path.join(BUNDLE, "bg", "*.jpg")):
        shutil.copy(f, images)
    shutil.copy(os.path.join(BUNDLE, os.path.basename(train_ocr.BASE_OCR10)), train_ocr.BASE_OCR10)
    os.makedirs(FONTS, exist_ok=True)
    for f in FONT_FILES:
        if not os.path.exists(os.path.join(FONTS, f)):
            shutil.copy(os.path.join(BUNDLE, f), FONTS)
    print("unpacked: %d real crops, %d backgrounds; MATTHAN_SHARED=%s"
          % (len(imgs), len(os.listdir(images)), os.path.join(BUNDLE, "shared")))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["pack", "unpack"])
    ap.add_argument("--ckpt", default=train_ocr.CKPT10, help="pack: the checkpoint to resume from there")
    a = ap.parse_args()
    pack(a.ckpt) if a.cmd == "pack" else unpack()
