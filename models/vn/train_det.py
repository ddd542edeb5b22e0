"""Fine-tune the HyperLPR3 y5fu 320 plate detector (YOLOv5-face style: box, objectness, 4 corners,
2 layout classes) on Vietnamese frames + synthetic plates, keeping its exact I/O contract.

The ONNX model is converted with onnx2torch; training uses the three raw head convolutions
(Conv_500/596/692, strides 8/16/32, 3 anchors each), and the trained weights are written back into
the original ONNX graph (onnx_weights.py), so the decoding in the graph is the original one:
  output [1, 6300, 15] = cx, cy, w, h (320-input px), obj (sigmoid), x1,y1 (TL), x2,y2 (TR),
  x3,y3 (BR), x4,y4 (BL), cls single-line, cls double-line (sigmoid).

  python train_det.py train --minutes 40 [--resume]
  python train_det.py export      # work/det_ckpt.pt -> vn_plate_det_320.onnx (verified)
"""
import argparse
import ast
import csv
import glob
import os
import random
import time

import cv2
import numpy as np

from common import BASE_DET, DATA, NEW_DET, WORK, held_out
import synth

CKPT = os.path.join(WORK, "det_ckpt.pt")
S = 320
STRIDES = [8, 16, 32]
HEADS = ["Conv_500", "Conv_596", "Conv_692"]
ANCHORS = np.array([[[4, 5], [8, 10], [13, 16]],
                    [[23, 29], [43, 55], [73, 105]],
                    [[146, 217], [231, 300], [335, 433]]], np.float32)  # px, from the ONNX anchor_grid


def layout_of(kind, w, h):
    """class index: 0 = single-line, 1 = double-line."""
    if kind == "motorbike_2line":
        return 1
    return 0 if w / max(h, 1e-6) >= 2.2 else 1


def load_frames(split):
    """Returns list of (name, rgb image, targets) ; targets rows: cls, 8 corner coords (TL,TR,BR,BL), lmk weight."""
    out = []
    rows = list(csv.DictReader(open(os.path.join(DATA, "vn_plate_detect_train", "index.csv"))))
    for r in rows:
        if held_out(r["image"]) != (split == "heldout"):
            continue
        im = cv2.imread(os.path.join(DATA, "vn_plate_detect_train", "images", r["image"]))
        if im is None:
            continue
        t = []
        for x1, y1, x2, y2 in ast.literal_eval(r["boxes_xyxy_px"]):
            t.append([layout_of(r["vehicle_plate_type"], x2 - x1, y2 - y1), x1, y1, x2, y1, x2, y2, x1, y2, 0.3])
        out.append((r["image"], im[:, :, ::-1].copy(), np.array(t, np.float32).reshape(-1, 10),
                    r["vehicle_plate_type"]))
    ex = os.path.join(DATA, "vn_plate_detect_extra", "dungnt_parking_gate")
    for f in sorted(glob.glob(os.path.join(ex, "images", "*.jpg"))):
        name = os.path.basename(f)
        if held_out(name) != (split == "heldout"):
            continue
        im = cv2.imread(f)
        lab = os.path.join(ex, "labels", os.path.splitext(name)[0] + ".txt")
        if im is None or not os.path.exists(lab):
            continue
        H, W = im.shape[:2]
        t = []
        for line in open(lab):
            p = line.split()
            if len(p) < 5:
                continue
            cx, cy, w, h = float(p[1]) * W, float(p[2]) * H, float(p[3]) * W, float(p[4]) * H
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            t.append([layout_of("car_1line", w, h), x1, y1, x2, y1, x2, y2, x1, y2, 0.3])
        out.append((name, im[:, :, ::-1].copy(), np.array(t, np.float32).reshape(-1, 10), "car_1line"))
    return out


def make_sample(frame, targets, synth_prob=0.7):
    """Random zoom/shift into a 320x320 canvas (black fill like the letterbox), flip, synthetic plates,
    photometric noise. Returns uint8 canvas and targets in canvas px."""
    h, w = frame.shape[:2]
    r = min(S / h, S / w)
    if random.random() < 0.35:
        z, left, top = 1.0, int((S - int(w * r)) / 2), int((S - int(h * r)) / 2)  # exact letterbox
        s = r
    else:
        z = np.exp(random.uniform(np.log(0.5), np.log(2.2)))
        s = r * z
        nw, nh = w * s, h * s
        left = random.uniform(min(0, S - nw), max(0, S - nw))
        top = random.uniform(min(0, S - nh), max(0, S - nh))
    nw, nh = max(1, int(w * s)), max(1, int(h * s))
    rs = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    left, top = int(round(left)), int(round(top))
    canvas = np.zeros((S, S, 3), np.uint8)
    cx0, cy0 = max(0, left), max(0, top)
    cx1, cy1 = min(S, left + nw), min(S, top + nh)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = rs[cy0 - top:cy1 - top, cx0 - left:cx1 - left]
    s_x, s_y = nw / w, nh / h
    t = targets.copy()
    if len(t):
        t[:, 1:9:2] = t[:, 1:9:2] * s_x + left
        t[:, 2:9:2] = t[:, 2:9:2] * s_y + top
        x1, x2 = t[:, 1:9:2].min(1), t[:, 1:9:2].max(1)
        y1, y2 = t[:, 2:9:2].min(1), t[:, 2:9:2].max(1)
        area = (x2 - x1) * (y2 - y1)
        vis = (np.clip(x2, 0, S) - np.clip(x1, 0, S)).clip(0) * (np.clip(y2, 0, S) - np.clip(y1, 0, S)).clip(0)
        keep = (vis > 0.6 * area) & ((x2 - x1) > 4)
        t = t[keep]
    if random.random() < 0.5:  # horizontal flip: corners TL<->TR, BR<->BL
        canvas = canvas[:, ::-1].copy()
        if len(t):
            xs = S - t[:, 1:9:2]
            ys = t[:, 2:9:2]
            order = [1, 0, 3, 2]
            t[:, 1:9:2] = xs[:, order]
            t[:, 2:9:2] = ys[:, order]
    # synthetic plates
    t = list(t)
    if random.random() < synth_prob:
        for _ in range(random.choice([1, 1, 2, 3])):
            kind = random.choices(["moto", "car1", "car2"], [0.6, 0.28, 0.12])[0]
            plate, _, layout = synth.render_plate(kind, scale=random.uniform(0.4, 1.0))
            if kind == "car1":
                pw = np.exp(random.uniform(np.log(24), np.log(160)))
            else:
                pw = np.exp(random.uniform(np.log(10), np.log(140)))
            plate = synth.degrade(plate, 0.5)
            ok = None
            for _try in range(5):
                tmp = canvas.copy()
                res = synth.paste_plate(tmp, plate, layout, pw)
                if res is None:
                    continue
                q = res[0]
                bx = [q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()]
                if all(_iou(bx, [o[1:9:2].min(), o[2:9:2].min(), o[1:9:2].max(), o[2:9:2].max()]) == 0 for o in t):
                    ok = (tmp, q)
                    break
            if ok:
                canvas, q = ok
                t.append(np.array([layout - 1] + q.reshape(-1).tolist() + [1.0], np.float32))
    t = np.array(t, np.float32).reshape(-1, 10)
    # photometric
    img = canvas.astype(np.float32)
    u = random.random()
    if u < 0.2:
        img = img * random.uniform(0.25, 0.6)
    else:
        img = img * random.uniform(0.75, 1.25) + random.uniform(-20, 20)
    if random.random() < 0.3:
        img = img + np.random.normal(0, random.uniform(2, 8), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if random.random() < 0.2:
        img = cv2.GaussianBlur(img, (3, 3), random.uniform(0.3, 1.0))
    return img, t


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1e-6, (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _patch_reshape_batch():
    """The y5fu graph hard-codes batch 1 in its channel-shuffle Reshapes; for batched training
    replace a leading 1 by the input's batch size (the exported graph is untouched)."""
    import torch
    from onnx2torch.node_converters.reshape import OnnxReshape

    def _do_reshape(input_tensor, shape):
        shape = [int(v) for v in shape]
        if any(v == 0 for v in shape):
            shape = [input_tensor.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        if shape and shape[0] == 1 and input_tensor.shape[0] != 1:
            shape[0] = input_tensor.shape[0]
        return torch.reshape(input_tensor, shape)

    OnnxReshape._do_reshape = staticmethod(_do_reshape)


class RawHeads:
    """Backbone + neck of the converted model, returning the three raw head maps [B,45,H,W]."""

    @staticmethod
    def build():
        import torch
        import torch.fx as fx
        from onnx2torch import convert
        _patch_reshape_batch()
        gm = convert(BASE_DET)
        g = gm.graph
        outs = {}
        for n in g.nodes:
            if n.op == "call_module" and n.target in HEADS:
                outs[n.target] = n
        old_out = [n for n in g.nodes if n.op == "output"][0]
        with g.inserting_after(outs[HEADS[-1]]):
            pass
        g.erase_node(old_out)
        g.output(tuple(outs[h] for h in HEADS))
        g.eliminate_dead_code()
        gm.recompile()
        # keep only trainable parameters; graph constants (anchor grids) are no longer used
        return gm


def yolo_loss(preds, targets_list, torch):
    """preds: list of 3 tensors [B,45,H,W]; targets_list: per image array [n,10] (cls, 8 corners, lmk_w)."""
    F = torch.nn.functional
    dev = preds[0].device
    lbox = torch.zeros((), device=dev)
    lobj = torch.zeros((), device=dev)
    lcls = torch.zeros((), device=dev)
    llmk = torch.zeros((), device=dev)
    balance = [4.0, 1.0, 0.4]
    npos = 0
    for li, p in enumerate(preds):
        B, _, H, W = p.shape
        p = p.view(B, 3, 15, H, W).permute(0, 1, 3, 4, 2)  # B,3,H,W,15
        tobj = torch.zeros(p.shape[:4], device=dev)
        stride = STRIDES[li]
        anc = torch.tensor(ANCHORS[li] / stride, device=dev)  # grid units
        bi, ai, gj, gi, tb, tl, tc, tw = [], [], [], [], [], [], [], []
        for b, t in enumerate(targets_list):
            if not len(t):
                continue
            t = torch.tensor(t, device=dev)
            q = t[:, 1:9].view(-1, 4, 2) / stride
            x1, y1 = q[:, :, 0].min(1).values, q[:, :, 1].min(1).values
            x2, y2 = q[:, :, 0].max(1).values, q[:, :, 1].max(1).values
            cxy = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2], 1)
            wh = torch.stack([x2 - x1, y2 - y1], 1).clamp_min(1e-3)
            for a in range(3):
                rr = wh / anc[a]
                ok = torch.max(rr, 1 / rr).max(1).values < 4.0
                for k in torch.nonzero(ok).flatten().tolist():
                    c = cxy[k]
                    cells = [(int(c[0]), int(c[1]))]
                    fx_, fy_ = c[0] - int(c[0]), c[1] - int(c[1])
                    cells.append((int(c[0]) - 1, int(c[1])) if fx_ < 0.5 else (int(c[0]) + 1, int(c[1])))
                    cells.append((int(c[0]), int(c[1]) - 1) if fy_ < 0.5 else (int(c[0]), int(c[1]) + 1))
                    for (cx_, cy_) in cells:
                        if 0 <= cx_ < W and 0 <= cy_ < H:
                            bi.append(b); ai.append(a); gj.append(cy_); gi.append(cx_)
                            tb.append(torch.cat([c - torch.tensor([cx_, cy_], device=dev, dtype=c.dtype), wh[k]]))
                            tl.append((q[k] - torch.tensor([cx_, cy_], device=dev, dtype=q.dtype)).reshape(-1))
                            tc.append(int(t[k, 0]))
                            tw.append(float(t[k, 9]))
        if bi:
            bi_, ai_, gj_, gi_ = (torch.tensor(v, device=dev) for v in (bi, ai, gj, gi))
            ps = p[bi_, ai_, gj_, gi_]
            tb_ = torch.stack(tb)
            tl_ = torch.stack(tl)
            anc_ = anc[ai_]
            pxy = ps[:, 0:2].sigmoid() * 2 - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anc_
            iou = _ciou(torch.cat([pxy, pwh], 1), tb_)
            lbox = lbox + (1 - iou).mean()
            tobj[bi_, ai_, gj_, gi_] = iou.detach().clamp(0).to(tobj.dtype)
            tcls = torch.zeros_like(ps[:, 13:15])
            tcls[torch.arange(len(tc)), torch.tensor(tc)] = 1.0
            lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 13:15], tcls)
            plm = ps[:, 5:13].view(-1, 4, 2)
            tlm = tl_.view(-1, 4, 2) / anc_[:, None, :]
            w_ = torch.tensor(tw, device=dev)[:, None, None]
            llmk = llmk + (F.smooth_l1_loss(plm, tlm, reduction="none", beta=0.1) * w_).mean()
            npos += len(bi)
        lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * balance[li]
    return 0.05 * lbox + 1.0 * lobj + 0.5 * lcls + 0.05 * llmk, (lbox.item(), lobj.item(), lcls.item(), llmk.item(), npos)


def _ciou(a, b, eps=1e-7):
    """a, b: [n,4] cx,cy,w,h -> CIoU."""
    import math
    import torch
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(1)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter + eps
    iou = inter / union
    cw = torch.max(a2, b2) - torch.min(a1, b1)
    c2 = (cw ** 2).sum(1) + eps
    rho2 = ((a[:, :2] - b[:, :2]) ** 2).sum(1)
    v = (4 / math.pi ** 2) * (torch.atan(b[:, 2] / (b[:, 3] + eps)) - torch.atan(a[:, 2] / (a[:, 3] + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def train(args):
    import torch
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    t_load = time.time()
    frames = load_frames("train")
    print("train frames %d (loaded in %.0fs)" % (len(frames), time.time() - t_load), flush=True)
    model = RawHeads.build()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=5e-4)
    step, elapsed0 = 0, 0.0
    if args.resume and os.path.exists(CKPT):
        ck = torch.load(CKPT, weights_only=False)
        model.load_state_dict(ck["model"])
        step, elapsed0 = ck["step"], ck.get("elapsed", 0.0)
        print("resumed at step", step, flush=True)
    total_s = args.minutes * 60
    t0 = time.time()
    model.train()
    hist = []
    while True:
        el = time.time() - t0
        if el > total_s:
            break
        warm = min(1.0, (step + 1) / 50) if not args.resume else 1.0
        lr = args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, el / total_s))))
        for g in opt.param_groups:
            g["lr"] = lr
        imgs, tl = [], []
        for _ in range(args.batch):
            _, fr, tg, _ = random.choice(frames)
            im, t = make_sample(fr, tg, args.synth_prob)
            imgs.append(im)
            tl.append(t)
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
        preds = model(x)
        loss, parts = yolo_loss(list(preds), tl, torch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        hist.append([loss.item()] + list(parts[:4]))
        step += 1
        if step % 10 == 0:
            h = np.mean(hist[-10:], 0)
            print("step %d %.0fs lr %.1e loss %.4f box %.3f obj %.4f cls %.3f lmk %.3f" % ((step, el, lr) + tuple(h)),
                  flush=True)
        if step % 50 == 0:
            torch.save({"model": model.state_dict(), "step": step, "elapsed": elapsed0 + el}, CKPT)
    torch.save({"model": model.state_dict(), "step": step, "elapsed": elapsed0 + time.time() - t0}, CKPT)
    print("done: steps %d, %.1f min this run" % (step, (time.time() - t0) / 60), flush=True)


def export():
    import onnxruntime as ort
    import torch
    from onnx2torch import convert
    import onnx_weights
    full = convert(BASE_DET)
    mapping = onnx_weights.build_map(BASE_DET, full)
    raw = RawHeads.build()
    ck = torch.load(CKPT, weights_only=False)
    raw.load_state_dict(ck["model"], strict=False)
    # copy trained weights into the full converted model (same module names)
    sd = full.state_dict()
    n = 0
    for k, v in raw.state_dict().items():
        if k in sd and sd[k].shape == v.shape:
            sd[k] = v
            n += 1
    full.load_state_dict(sd)
    onnx_weights.write(BASE_DET, full, mapping, NEW_DET)
    sess = ort.InferenceSession(NEW_DET, providers=["CPUExecutionProvider"])
    x = np.random.rand(1, 3, S, S).astype(np.float32)
    o = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        t = full(torch.from_numpy(x)).numpy()
    print("exported", NEW_DET, os.path.getsize(NEW_DET), "bytes;", n, "tensors copied; output", o.shape,
          "max|ort-torch|", np.abs(o - t).max())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["train", "export", "demo"])
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--synth-prob", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    if a.cmd == "train":
        train(a)
    elif a.cmd == "export":
        export()
    else:
        fr = load_frames("train")
        os.makedirs(os.path.join(WORK, "det_demo"), exist_ok=True)
        for i in range(8):
            _, f, tg, _ = random.choice(fr)
            im, t = make_sample(f, tg)
            im = im[:, :, ::-1].copy()
            for row in t:
                q = row[1:9].reshape(4, 2).astype(np.int32)
                cv2.polylines(im, [q], True, (0, 255, 0) if row[0] == 1 else (0, 0, 255), 1)
                cv2.circle(im, tuple(q[0]), 2, (255, 0, 0), -1)
            cv2.imwrite(os.path.join(WORK, "det_demo", "%d.png" % i), im)
