"""Shared paths and helpers for the VN plate model recipes."""
import hashlib
import os
import re

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.environ.get("MATTHAN_SHARED", os.path.abspath(os.path.join(REPO, "..", "shared")))
WORK = os.path.join(HERE, "work")
os.makedirs(WORK, exist_ok=True)

DATA = os.path.join(SHARED, "data")
BASE_DET = os.path.join(SHARED, "models", "hyperlpr3_y5fu_320x_sim.onnx")
BASE_OCR = os.path.join(SHARED, "models", "fpo_cct_xs_v1_global.onnx")
NEW_DET = os.path.join(HERE, "vn_plate_det_320.onnx")
NEW_OCR = os.path.join(HERE, "vn_plate_ocr.onnx")

# The reader is 10 slots x 38 classes since session 3 (`train_ocr.py widen`): Đ is APPENDED after the
# pad, so the first 37 classes and the pad index (36) are those of the original 9x37 model, and
# decode_probs reads both the old [9,37] and the new [10,38] outputs.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_Đ"
PAD = ALPHABET.index("_")
SLOTS = 10
# 2 province digits + series (1-2 of letter/Đ/digit) + 4-5 digits, or the electric-motorbike
# series MĐ + digit 1-9 + 5 digits (10 characters: 29MĐ123456)
PLATE_RE = re.compile(r"^\d\d(?:[A-ZĐ][A-Z0-9Đ]?\d{4,5}|MĐ[1-9]\d{5})$")


def held_out(name, pct=10):
    """Fixed held-out split: md5 of the frame's base name (Roboflow suffix removed) mod 100 < pct."""
    base = name.split("_jpg.rf.")[0].split(".rf.")[0]
    return int(hashlib.md5(base.encode()).hexdigest(), 16) % 100 < pct


def encode_label(s):
    s = s[:SLOTS]
    return [ALPHABET.index(c) for c in s] + [PAD] * (SLOTS - len(s))


def decode_probs(p):
    """p: [slots, classes] ([9,37] original / 9x37 fine-tunes, [10,38] widened) -> string
    (argmax per slot, '_' dropped)."""
    return "".join(ALPHABET[i] for i in p.argmax(-1) if i != PAD)


def levenshtein(a, b):
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[len(b)]


# ---------------- detector pre/post-processing (the contract) ----------------
LETTERBOX_PLACE = os.environ.get("VN_LETTERBOX", "center")  # "topleft" only for the robustness check


def letterbox(img_rgb, size=320, place=None):
    """HyperLPR3 letterbox: scale r = min(S/h, S/w), new = int(w*r) x int(h*r) (cv2 INTER_LINEAR),
    centred: left = int((S-new_w)/2), top = int((S-new_h)/2), black (0) padding.
    Returns float32 [1,3,S,S] RGB/255, r, left, top."""
    import cv2
    h, w = img_rgb.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(w * r), int(h * r)
    left, top = int((size - nw) / 2), int((size - nh) / 2)
    if (place or LETTERBOX_PLACE) == "topleft":
        left, top = 0, 0
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(img_rgb, (nw, nh))
    x = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    return x, r, left, top


def nms(boxes, scores, iou_thr):
    order = np.argsort(-scores)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.maximum(0, xx2 - xx1) * np.maximum(0, yy2 - yy1)
        a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        b = (boxes[order[1:], 2] - boxes[order[1:], 0]) * (boxes[order[1:], 3] - boxes[order[1:], 1])
        iou = inter / np.maximum(a + b - inter, 1e-9)
        order = order[1:][iou <= iou_thr]
    return keep


def postprocess(out, r, left, top, conf=0.3, iou=0.5):
    """out: [1,N,15]. score = obj * max(cls). Returns list of dicts in original-image pixels:
    box (x1,y1,x2,y2), score, corners 4x2 (TL, TR, BR, BL), layout (1 or 2 lines)."""
    d = out[0]
    cls = d[:, 13:15] * d[:, 4:5]
    score = cls.max(1)
    m = score > conf
    d, score, cls = d[m], score[m], cls[m]
    if not len(d):
        return []
    boxes = np.stack([d[:, 0] - d[:, 2] / 2, d[:, 1] - d[:, 3] / 2, d[:, 0] + d[:, 2] / 2, d[:, 1] + d[:, 3] / 2], 1)
    keep = nms(boxes, score, iou)
    res = []
    for k in keep:
        b = boxes[k].copy()
        b[[0, 2]] = (b[[0, 2]] - left) / r
        b[[1, 3]] = (b[[1, 3]] - top) / r
        c = d[k, 5:13].reshape(4, 2).copy()
        c[:, 0] = (c[:, 0] - left) / r
        c[:, 1] = (c[:, 1] - top) / r
        res.append({"box": b, "score": float(score[k]), "corners": c, "layout": int(cls[k].argmax()) + 1})
    return res


def rectify(img_rgb, corners, w=128, h=64):
    """Perspective-warp the quad (TL, TR, BR, BL) to w x h."""
    import cv2
    M = cv2.getPerspectiveTransform(np.float32(corners), np.float32([[0, 0], [w, 0], [w, h], [0, h]]))
    return cv2.warpPerspective(img_rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
