"""Fine-tune fast-plate-ocr cct_xs_v1_global (converted to PyTorch with onnx2torch) for Vietnamese
plates, including tiny CCTV-like crops. Keeps the I/O contract: uint8 [N,64,128,3] RGB in,
float32 [N,9,37] per-slot softmax out.

  python train_ocr.py clean            # label cleaning report + cache (work/ocr_real.npz)
  python train_ocr.py train --minutes 30 [--resume]
  python train_ocr.py export [--ckpt work/ocr_ckpt.pt] [--out vn_plate_ocr.onnx]   # verified in onnxruntime
"""
import argparse
import csv
import glob
import json
import os
import random
import time

import cv2
import numpy as np

from common import (ALPHABET, BASE_OCR, DATA, NEW_OCR, PLATE_RE, WORK, decode_probs, encode_label,
                    held_out, levenshtein)
import synth

REAL_NPZ = os.path.join(WORK, "ocr_real.npz")
CKPT = os.path.join(WORK, "ocr_ckpt.pt")
KEEP_H = 96  # real crops are cached at this height (aspect kept) for augmentation


def clean():
    import onnxruntime as ort
    sess = ort.InferenceSession(BASE_OCR, providers=["CPUExecutionProvider"])
    rows = list(csv.DictReader(open(os.path.join(DATA, "vn_plate_crops_ocr", "strings.csv"))))
    stats = {"total": len(rows), "bad_grammar": 0, "model_disagrees": 0, "unreadable": 0, "kept": 0}
    imgs, labels, names = [], [], []
    for r in rows:
        lab = r["text_alnum"].strip().upper()
        if not PLATE_RE.match(lab):
            stats["bad_grammar"] += 1
            continue
        im = cv2.imread(os.path.join(DATA, "vn_plate_crops_ocr", "images", r["image"]))
        if im is None:
            stats["unreadable"] += 1
            continue
        im = im[:, :, ::-1]
        x = cv2.resize(im, (128, 64), interpolation=cv2.INTER_LINEAR)[None]
        read = decode_probs(sess.run(None, {"input": x})[0][0])
        # the base model reads legible crops well; a label that is far (>= 3 edits) from its read is
        # more likely an auto-label error than a model error -> drop.
        if levenshtein(read, lab) >= 3:
            stats["model_disagrees"] += 1
            continue
        h, w = im.shape[:2]
        s = KEEP_H / h
        im = cv2.resize(im, (max(8, int(w * s)), KEEP_H), interpolation=cv2.INTER_AREA)
        pad = np.zeros((KEEP_H, 400, 3), np.uint8)
        ww = min(400, im.shape[1])
        pad[:, :ww] = im[:, :ww]
        imgs.append(pad)
        labels.append(lab + "|" + str(ww))
        names.append(r["image"])
        stats["kept"] += 1
    np.savez_compressed(REAL_NPZ, imgs=np.stack(imgs), labels=np.array(labels), names=np.array(names))
    print(json.dumps(stats))
    json.dump(stats, open(os.path.join(WORK, "ocr_clean_stats.json"), "w"))


def load_real():
    z = np.load(REAL_NPZ)
    out = {"train": [], "val": []}
    for im, lw, n in zip(z["imgs"], z["labels"], z["names"]):
        lab, w = str(lw).split("|")
        out["val" if held_out(str(n)) else "train"].append((im[:, :int(w)], lab))
    return out


def aug_real(im, cctv_p=0.65):
    h, w = im.shape[:2]
    # jitter the crop box: -4%..+10% per side (negative = cut into the plate)
    pads = [int(random.uniform(-0.04, 0.10) * s) for s in (w, h, w, h)]
    src = np.float32([[-pads[0], -pads[1]], [w + pads[2], -pads[1]], [w + pads[2], h + pads[3]], [-pads[0], h + pads[3]]])
    src += np.random.uniform(-0.04, 0.04, (4, 2)).astype(np.float32) * np.float32([w, h])
    ow, oh = 128, 64
    M = cv2.getPerspectiveTransform(src, np.float32([[0, 0], [ow, 0], [ow, oh], [0, oh]]))
    out = cv2.warpPerspective(im, M, (ow, oh), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    r = random.random()
    if r < cctv_p:
        # street-CCTV size and codec: the same shrink (INTER_AREA) + mild degrade + JPEG 25-70 as synth
        out = cv2.resize(out, synth.cctv_size(2 if w / h < 2.2 else 1), interpolation=cv2.INTER_AREA)
        out = synth.degrade_cctv(out)
    else:
        if r < cctv_p + (1 - cctv_p) * 0.5:
            th = random.randint(16, 45)
            tw = int(th * random.uniform(1.0, 1.6)) if w / h < 2.2 else int(th * random.uniform(2.5, 4.5))
            out = cv2.resize(out, (tw, th), interpolation=cv2.INTER_AREA)
        out = synth.degrade(out, 0.8)
    return cv2.resize(out, (128, 64), interpolation=cv2.INTER_LINEAR)


def bg_pool(n=60):
    files = sorted(glob.glob(os.path.join(DATA, "vn_plate_detect_train", "images", "*.jpg")))
    random.Random(0).shuffle(files)
    pool = []
    for f in files[:n]:
        im = cv2.imread(f)
        if im is not None:
            pool.append(cv2.resize(im, (320, int(320 * im.shape[0] / im.shape[1])))[:, :, ::-1].copy())
    return pool


def make_model():
    """onnx2torch model; float initializers (MatMul weights, LayerNorm, embeddings) are made trainable."""
    import torch
    from onnx2torch import convert
    m = convert(BASE_OCR)
    init = m.initializers
    for name, buf in list(init.named_buffers(recurse=False)):
        if buf.dtype.is_floating_point and buf.numel() > 1:
            del init._buffers[name]
            init.register_parameter(name, torch.nn.Parameter(buf.clone()))
    return m


def batch(real, pool, n, real_frac, cctv_frac=0.65):
    xs, ys = [], []
    for _ in range(n):
        if random.random() < real_frac:
            im, lab = random.choice(real)
            xs.append(aug_real(im, cctv_frac))
        else:
            im, lab = synth.ocr_sample(pool)
            xs.append(im)
        ys.append(encode_label(lab))
    return np.stack(xs), np.array(ys)


def evaluate(model, data):
    import torch
    model.eval()
    ok = 0
    with torch.no_grad():
        for i in range(0, len(data), 64):
            chunk = data[i:i + 64]
            x = np.stack([cv2.resize(im, (128, 64), interpolation=cv2.INTER_LINEAR) for im, _ in chunk])
            p = model(torch.from_numpy(x)).numpy()
            ok += sum(decode_probs(pp) == lab for pp, (_, lab) in zip(p, chunk))
    model.train()
    return ok / max(1, len(data))


def train(args):
    import torch
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    real = load_real()
    print("real train %d val %d" % (len(real["train"]), len(real["val"])), flush=True)
    pool = bg_pool()
    model = make_model()
    params = []
    for n, p_ in model.named_parameters():
        if p_.numel() <= 1:  # graph constants (e.g. the 1/255 rescale) stay fixed
            p_.requires_grad_(False)
        else:
            params.append(p_)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    step, elapsed0 = 0, 0.0
    if args.resume and os.path.exists(CKPT):
        ck = torch.load(CKPT, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed0 = ck["step"], ck.get("elapsed", 0.0)
        print("resumed at step", step, flush=True)
    total_s = args.minutes * 60
    t0 = time.time()
    model.train()
    losses = []
    n_snap = 0
    while True:
        el = time.time() - t0
        if el > total_s:
            break
        lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, el / total_s))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(real["train"], pool, args.batch, args.real_frac, args.cctv_frac)
        p = model(torch.from_numpy(x))
        logp = torch.log(p.clamp_min(1e-7))
        loss = -logp.gather(2, torch.from_numpy(y).long()[:, :, None]).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 25 == 0:
            print("step %d  %.0fs  lr %.2e  loss %.4f" % (step, el, lr, np.mean(losses[-25:])), flush=True)
        if step % 100 == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed": elapsed0 + el}, CKPT)
        if args.snapshot_min and el > (n_snap + 1) * args.snapshot_min * 60:
            # numbered copies so an earlier (better) point can still be exported after the run
            n_snap += 1
            torch.save({"model": model.state_dict(), "step": step}, os.path.join(WORK, "ocr_snap_%d.pt" % step))
            print("snapshot step %d" % step, flush=True)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "elapsed": elapsed0 + time.time() - t0}, CKPT)
    acc = evaluate(model, real["val"])
    print("done: steps %d, train time %.1f min (this run), held-out real-crop exact %.3f (labels are auto/cleaned)"
          % (step, (time.time() - t0) / 60, acc), flush=True)


def export(ckpt=CKPT, out=NEW_OCR):
    import onnxruntime as ort
    import torch
    import onnx_weights
    model = make_model()
    mapping = onnx_weights.build_map(BASE_OCR, model)
    ck = torch.load(ckpt, weights_only=False)
    model.load_state_dict(ck["model"])
    model.eval()
    onnx_weights.write(BASE_OCR, model, mapping, out)
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    xi = np.random.randint(0, 255, (3, 64, 128, 3), dtype=np.uint8)
    o = sess.run(None, {"input": xi})[0]
    with torch.no_grad():
        t = model(torch.from_numpy(xi)).numpy()
    i = sess.get_inputs()[0]
    print("exported", out, os.path.getsize(out), "bytes; input", i.name, i.type, i.shape,
          "output", sess.get_outputs()[0].name, o.shape, o.dtype, "row sums", o.sum(-1).min(), o.sum(-1).max(),
          "max|ort-torch|", np.abs(o - t).max())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["clean", "train", "export"])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--real-frac", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--snapshot-min", type=float, default=0, help="also save work/ocr_snap_STEP.pt every N minutes")
    ap.add_argument("--cctv-frac", type=float, default=0.65, help="share of real crops shrunk to CCTV size + JPEG")
    ap.add_argument("--ckpt", default=CKPT, help="export: checkpoint to read")
    ap.add_argument("--out", default=NEW_OCR, help="export: ONNX file to write")
    a = ap.parse_args()
    if a.cmd == "clean":
        clean()
    elif a.cmd == "train":
        train(a)
    else:
        export(a.ckpt, a.out)
