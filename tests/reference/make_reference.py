"""Reference outputs for the agent's model pre- and post-processing.

An independent implementation in numpy + OpenCV + onnxruntime (Python) of
each model's documented input and output format (../shared/models/MANIFEST.md),
run on real images, each analysed as a camera's frame is: in I420, every
model input shrunk plane by plane and then converted. The Rust tests (agent/src/infer/tests.rs) compare the
agent's results with reference_outputs.json within a pixel.

Regenerate (any Python with onnxruntime==1.32.0, numpy, opencv-python-headless):
    python tests/reference/make_reference.py > tests/reference/reference_outputs.json
"""
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(REPO, "..", "shared")
MODELS = os.path.join(REPO, "models", "fetched")
# 37 classes for fast-plate-ocr's reader; the project's appends Đ.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_Đ"

IMAGES = [
    "media/faces/group_5_faces.jpg",
    "media/faces/messi5.jpg",
    "media/faces/knn_examples__test__obama_and_biden.jpg",
    "data/vn_plate_detect_extra/dungnt_parking_gate/images/e4a7bc1c-37112.jpg",
    "data/vn_plate_detect_extra/dungnt_parking_gate/images/3e4fefb8-38696.jpg",
    "data/vn_plate_detect_extra/dungnt_parking_gate/images/d127aacf-36972.jpg",
    "data/vn_plate_detect_extra/dungnt_parking_gate/images/a6a5940d-38688.jpg",
    "data/vn_plate_detect_train/images/xemay0_jpg.rf.153136008c8b8c64b39e148af858a3ca.jpg",
    "data/vn_plate_detect_train/images/xemay1003_jpg.rf.ebe56175b7840b7a6432c61d99e6775c.jpg",
]


def session(name):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(os.path.join(MODELS, name), opts, providers=["CPUExecutionProvider"])


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(items, thr):
    items = sorted(items, key=lambda d: -d["score"])
    kept = []
    for d in items:
        if all(iou(k["bbox"], d["bbox"]) <= thr for k in kept):
            kept.append(d)
    return kept


def to_i420(bgr):
    """The image as a camera's frame: I420 of even size."""
    h, w = bgr.shape[0] & ~1, bgr.shape[1] & ~1
    return cv2.cvtColor(np.ascontiguousarray(bgr[:h, :w]), cv2.COLOR_BGR2YUV_I420).reshape(-1), w, h


def resize_i420(frame, nw, nh):
    """The luma resized to exactly nw x nh (its edge repeated to an even size), the chroma
    planes to half the even size, converted, the odd column/row cut: the picture is scaled
    by nw / w and nh / h, which is how points are mapped back."""
    yuv, w, h = frame
    ew, eh = nw + nw % 2, nh + nh % 2
    interp = cv2.INTER_AREA if ew < w else cv2.INTER_LINEAR
    luma = cv2.resize(yuv[:w * h].reshape(h, w), (nw, nh), interpolation=interp)
    luma = np.pad(luma, ((0, eh - nh), (0, ew - nw)), mode="edge")
    chroma = [cv2.resize(p.reshape(h // 2, w // 2), (ew // 2, eh // 2), interpolation=interp).reshape(-1)
              for p in (yuv[w * h:w * h * 5 // 4], yuv[w * h * 5 // 4:])]
    small = np.concatenate([luma.reshape(-1)] + chroma)
    return cv2.cvtColor(small.reshape(eh * 3 // 2, ew), cv2.COLOR_YUV2BGR_I420)[:nh, :nw]


def faces(sess, frame, threshold=0.7, long_side=640):
    _, w, h = frame
    s = min(long_side / max(w, h), 1.0)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = resize_i420(frame, nw, nh)
    pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32
    padded = np.zeros((ph, pw, 3), np.uint8)
    padded[:nh, :nw] = img
    x = padded.transpose(2, 0, 1)[None].astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
    dets = []
    for stride in (8, 16, 32):
        cols = pw // stride
        cls = out[f"cls_{stride}"].reshape(-1)
        obj = out[f"obj_{stride}"].reshape(-1)
        box = out[f"bbox_{stride}"].reshape(-1, 4)
        kps = out[f"kps_{stride}"].reshape(-1, 10)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        for i in np.nonzero(score >= threshold)[0]:
            c, r = i % cols, i // cols
            cx, cy = (c + box[i, 0]) * stride, (r + box[i, 1]) * stride
            bw, bh = np.exp(box[i, 2]) * stride, np.exp(box[i, 3]) * stride
            sx, sy = nw / w, nh / h
            lm = [[(c + kps[i, 2 * j]) * stride / sx, (r + kps[i, 2 * j + 1]) * stride / sy] for j in range(5)]
            dets.append({"bbox": [(cx - bw / 2) / sx, (cy - bh / 2) / sy, (cx + bw / 2) / sx, (cy + bh / 2) / sy],
                         "score": float(score[i]), "landmarks": lm})
    kept = nms(dets, 0.3)
    for d in kept:
        d["bbox"] = [float(np.clip(d["bbox"][0], 0, w)), float(np.clip(d["bbox"][1], 0, h)),
                     float(np.clip(d["bbox"][2], 0, w)), float(np.clip(d["bbox"][3], 0, h))]
        d["landmarks"] = [[float(a), float(b)] for a, b in d["landmarks"]]
    return kept


def plates(det, ocr, frame, threshold=0.5):
    yuv, w, h = frame
    size = det.get_inputs()[0].shape[3]
    r = min(size / w, size / h)
    nw, nh = min(max(1, round(w * r)), size), min(max(1, round(h * r)), size)
    img = resize_i420(frame, nw, nh)
    # The reader's crop comes from the frame at full size (the agent converts
    # only the region around the plate, which gives the same pixels).
    bgr = cv2.cvtColor(yuv.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[top:top + nh, left:left + nw] = img
    x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    rows = det.run(None, {det.get_inputs()[0].name: x})[0].reshape(-1, 15)
    dets = []
    for row in rows:
        obj = row[4]
        if obj < threshold:
            continue
        one, two = row[13] * obj, row[14] * obj
        score = max(one, two)
        if score < threshold:
            continue
        unmap = lambda px, py: [(px - left) / (nw / w), (py - top) / (nh / h)]
        cx, cy, bw, bh = row[:4]
        x1, y1 = unmap(cx - bw / 2, cy - bh / 2)
        x2, y2 = unmap(cx + bw / 2, cy + bh / 2)
        corners = [unmap(row[5 + 2 * k], row[6 + 2 * k]) for k in range(4)]
        dets.append({"bbox": [x1, y1, x2, y2], "score": float(score), "corners": corners, "lines": 2 if two > one else 1})
    kept = nms(dets, 0.5)
    for d in kept:
        d["bbox"] = [float(np.clip(d["bbox"][0], 0, w)), float(np.clip(d["bbox"][1], 0, h)),
                     float(np.clip(d["bbox"][2], 0, w)), float(np.clip(d["bbox"][3], 0, h))]
        d["corners"] = [[float(a), float(b)] for a, b in d["corners"]]
        _, ih, iw, _ = ocr.get_inputs()[0].shape
        quad = np.float32(d["corners"])
        centre = quad.mean(axis=0)
        quad = centre + (quad - centre) * 1.06  # corners pushed out by 6 % before rectifying
        m = cv2.getPerspectiveTransform(quad.astype(np.float32), np.float32([[0, 0], [iw, 0], [iw, ih], [0, ih]]))
        crop = cv2.warpPerspective(bgr, m, (iw, ih), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        probs = ocr.run(None, {ocr.get_inputs()[0].name: crop[:, :, ::-1][None].copy()})[0][0]
        best = probs.argmax(axis=1)
        d["chars"] = "".join(ALPHABET[i] for i in best if ALPHABET[i] != "_")
        d["read_confidence"] = float(probs.max(axis=1).mean())
    return kept


# Plate model pairs: the third-party baseline and the project's own.
PLATE_MODELS = [
    ("hyperlpr3_y5fu_320x_sim.onnx", "fpo_cct_xs_v1_global.onnx"),
    ("vn_plate_det_320.onnx", "vn_plate_ocr.onnx"),
]


def main():
    face_sess = session("yunet_s_dynamic.onnx")
    sets = []
    for det_name, ocr_name in PLATE_MODELS:
        det, ocr = session(det_name), session(ocr_name)
        out = []
        for rel in IMAGES:
            frame = to_i420(cv2.imread(os.path.join(SHARED, rel), cv2.IMREAD_COLOR))
            out.append({"image": rel, "faces": faces(face_sess, frame), "plates": plates(det, ocr, frame)})
        sets.append({"plate_detector": det_name, "plate_reader": ocr_name, "images": out})
    json.dump({"generator": "tests/reference/make_reference.py", "onnxruntime": ort.__version__,
               "opencv": cv2.__version__, "model_sets": sets}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
