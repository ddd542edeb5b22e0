"""Static int8 quantisation (QDQ, per-channel weights) of the project's plate
detector and reader, calibrated on training data only (never on the
held-out frames or the CCTV crops). Kept only where `matthan eval` shows
accuracy within 1 point of float (models/vn/README.md gives the figures).

    .venv/bin/python quantize.py            # -> vn_plate_det_320_int8.onnx, vn_plate_ocr_int8.onnx
"""
import csv
import os
import random

import cv2
import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from common import DATA, HERE, NEW_DET, NEW_OCR, held_out, letterbox

CALIBRATION = 160


class Frames(CalibrationDataReader):
    """Training frames (not held out), letterboxed exactly as the agent does."""

    def __init__(self):
        rows = list(csv.DictReader(open(os.path.join(DATA, "vn_plate_detect_train", "index.csv"))))
        rows = [r for r in rows if not held_out(r["image"])]
        random.Random(0).shuffle(rows)
        self.items = iter(rows[:CALIBRATION])

    def get_next(self):
        r = next(self.items, None)
        if r is None:
            return None
        im = cv2.imread(os.path.join(DATA, "vn_plate_detect_train", "images", r["image"]))
        x, *_ = letterbox(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        return {"input": x}


class Crops(CalibrationDataReader):
    """Training plate crops (not held out), resized straight to 128x64 RGB uint8 as the agent does;
    half of them shrunk to CCTV size and back, so the ranges cover tiny plates too."""

    def __init__(self):
        rows = list(csv.DictReader(open(os.path.join(DATA, "vn_plate_crops_ocr", "strings.csv"))))
        rows = [r for r in rows if not held_out(r["image"])]
        random.Random(0).shuffle(rows)
        self.items = iter(enumerate(rows[:CALIBRATION]))

    def get_next(self):
        item = next(self.items, None)
        if item is None:
            return None
        i, r = item
        im = cv2.imread(os.path.join(DATA, "vn_plate_crops_ocr", "images", r["image"]))
        if i % 2:
            h, w = im.shape[:2]
            s = 30 / max(h, w)
            im = cv2.resize(im, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), (128, 64), interpolation=cv2.INTER_LINEAR)
        return {"input": x[None]}


def quantize(src, dst, reader):
    import onnx
    from onnx import version_converter
    pre = dst + ".pre.onnx"
    model = onnx.load(src)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        # Per-channel DequantizeLinear (its `axis`) needs opset 13.
        onnx.save(version_converter.convert_version(model, 13), pre)
        src = pre
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    quantize_static(pre, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    os.remove(pre)
    print("wrote", dst, os.path.getsize(dst), "bytes")


if __name__ == "__main__":
    quantize(NEW_DET, os.path.join(HERE, "vn_plate_det_320_int8.onnx"), Frames())
    quantize(NEW_OCR, os.path.join(HERE, "vn_plate_ocr_int8.onnx"), Crops())
