"""Fine-tune fast-plate-ocr cct_xs_v1_global (converted to PyTorch with onnx2torch) for Vietnamese
plates, including tiny CCTV-like crops. Keeps the I/O contract: uint8 [N,64,128,3] RGB in,
float32 per-slot softmax out: [N,9,37] originally, [N,10,38] since `widen` (10 slots for electric
motorbike plates, class 37 = Đ appended after the pad `_`).

  python train_ocr.py clean            # label cleaning report + cache (work/ocr_real.npz)
  python train_ocr.py widen [--from work/ocr_ckpt.pt] [--ckpt work/ocr10_ckpt.pt]
                                       # 9x37 -> 10x38: work/ocr_base_10x38.onnx + widened checkpoint
  python train_ocr.py train --minutes 30 [--resume] [--ckpt work/ocr10_ckpt.pt]
  python train_ocr.py export [--ckpt work/ocr10_ckpt.pt] [--out vn_plate_ocr.onnx]   # verified in onnxruntime
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

from common import (ALPHABET, BASE_OCR, DATA, NEW_OCR, PLATE_RE, SLOTS, WORK, decode_probs, encode_label,
                    held_out, levenshtein)
import synth

REAL_NPZ = os.path.join(WORK, "ocr_real.npz")
CKPT = os.path.join(WORK, "ocr_ckpt.pt")  # 9x37 checkpoints (sessions 1-2)
CKPT10 = os.path.join(WORK, "ocr10_ckpt.pt")  # 10x38 checkpoints (session 3 on)
BASE_OCR10 = os.path.join(WORK, "ocr_base_10x38.onnx")  # the upstream graph widened by `widen`
# What depends on 9 slots / 37 classes in the upstream graph (all found by scanning initializers,
# node attributes, value_info and outputs for 9 / 37):
SLOT_QUERIES = "CCT_OCR_1/token_reducer_1/Reshape_1:0"  # (1,9,64) learned slot queries
SLOT_SHAPES = ["Concat__319:0_", "Concat__264:0_", "Concat__388:0_", "Concat__195:0_"]  # int64 reshape targets
VOCAB_W = "CCT_OCR_1/vocab_projection_1/dense_9_1/Cast/ReadVariableOp:0"  # (64,37)
VOCAB_B = "CCT_OCR_1/vocab_projection_1/dense_9_1/BiasAdd/ReadVariableOp:0"  # (37,)
D_BIAS = -3.0  # Đ starts as a copy of D, 3 logits less likely
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


def widen_arrays(q, w, b):
    """Slot queries (1,9,64) -> (1,10,64), the 10th a copy of the 9th; vocab weight (64,37) -> (64,38)
    and bias (37,) -> (38,), Đ = copy of D with bias - 3. numpy or torch (w may be transposed: 37 last
    or first dim is detected)."""
    import torch
    cat = torch.cat if isinstance(q, torch.Tensor) else np.concatenate
    di = ALPHABET.index("D")
    q = cat([q, q[:, -1:]], 1)
    w = cat([w, w[:, di:di + 1]], 1) if w.shape[-1] == 37 else cat([w, w[di:di + 1]], 0)
    b = cat([b, b[di:di + 1] + D_BIAS], 0)
    return q, w, b


def widen_onnx(src=BASE_OCR, dst=BASE_OCR10):
    """Graph surgery: the upstream 9x37 reader -> 10 slots x 38 classes, checked in onnxruntime."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    arr = {n: numpy_helper.to_array(inits[n]) for n in [SLOT_QUERIES, VOCAB_W, VOCAB_B] + SLOT_SHAPES}
    assert arr[SLOT_QUERIES].shape == (1, 9, 64) and arr[VOCAB_W].shape == (64, 37) and arr[VOCAB_B].shape == (37,)
    q, w, b = widen_arrays(arr[SLOT_QUERIES], arr[VOCAB_W], arr[VOCAB_B])
    new = {SLOT_QUERIES: q, VOCAB_W: w, VOCAB_B: b}
    for n in SLOT_SHAPES:
        a = arr[n].copy()
        assert a.dtype == np.int64 and (a == 9).sum() == 1, (n, a)
        a[a == 9] = 10
        new[n] = a
    for n, a in new.items():
        inits[n].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a), n))
    # value_info carries the old static shapes (…,9,…) and symbolic batch sizes derived from 9*4*65 etc.;
    # it is optional, so drop it rather than patch it
    del g.value_info[:]
    dims = g.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [9, 37]
    dims[1].dim_value, dims[2].dim_value = SLOTS, len(ALPHABET)
    # nothing else may mention 9 or 37: scan the remaining initializers and node attributes
    for i in g.initializer:
        if i.name in new:
            continue
        a = numpy_helper.to_array(i)
        assert not (9 in a.shape or 37 in a.shape), i.name
        assert not (a.dtype.kind == "i" and a.size <= 8 and (a == 9).any()), (i.name, a)
    for nd in g.node:
        for at in nd.attribute:
            assert not (9 in at.ints or 37 in at.ints) and nd.op_type != "Constant", (nd.name, at.name)
    m.producer_name = "matthan models/vn (widened to 10x38)"
    onnx.checker.check_model(m, full_check=True)  # incl. strict shape inference
    onnx.save(m, dst)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    x = np.random.randint(0, 255, (3, 64, 128, 3), dtype=np.uint8)
    o_new = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    o_old = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert o_new.shape == (3, SLOTS, len(ALPHABET)) and o_new.dtype == np.float32, o_new.shape
    # slots 0-8 and classes 0-36 are the old ones up to the softmax renormalisation
    p = o_new[:, :9, :37] / o_new[:, :9, :37].sum(-1, keepdims=True)
    print("widened", dst, "output", o_new.shape, o_new.dtype, "max|old - new renormalised| slots 0-8: %.2e" % np.abs(p - o_old).max())


def make_model(base=BASE_OCR10):
    """onnx2torch model of `base` (BASE_OCR10 = 10x38 widened graph, or BASE_OCR = upstream 9x37);
    float initializers (MatMul weights, LayerNorm, embeddings) are made trainable."""
    import torch
    from onnx2torch import convert
    m = convert(base)
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


def evaluate(model, data, device="cpu"):
    import torch
    model.eval()
    ok = 0
    with torch.no_grad():
        for i in range(0, len(data), 64):
            chunk = data[i:i + 64]
            x = np.stack([cv2.resize(im, (128, 64), interpolation=cv2.INTER_LINEAR) for im, _ in chunk])
            p = model(torch.from_numpy(x).to(device)).cpu().numpy()
            ok += sum(decode_probs(pp) == lab for pp, (_, lab) in zip(p, chunk))
    model.train()
    return ok / max(1, len(data))


def batches(real, pool, args):
    """Endless training batches (uint8 images, label indices). With --workers N they are drawn in N
    processes, each seeded apart, so that a GPU is not left waiting on the Python synthesis
    (~6 ms a synthetic crop); without, in this process, as on the 2-core CPU box."""
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            if info is not None:
                cv2.setNumThreads(1)
                random.seed(args.seed * 1000 + info.id + 1)
                np.random.seed(args.seed * 1000 + info.id + 1)
            while True:
                x, y = batch(real, pool, args.batch, args.real_frac, args.cctv_frac)
                yield torch.from_numpy(x), torch.from_numpy(y)

    if args.workers == 0:
        return iter(Stream())
    return iter(torch.utils.data.DataLoader(Stream(), batch_size=None, num_workers=args.workers,
                                            prefetch_factor=4, persistent_workers=True))


def train(args):
    import torch
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    real = load_real()
    print("real train %d val %d" % (len(real["train"]), len(real["val"])), flush=True)
    pool = bg_pool()
    synth.use_real_glyphs(args.real_glyphs)
    model = make_model(BASE_OCR10)
    params = []
    for n, p_ in model.named_parameters():
        if p_.numel() <= 1:  # graph constants (e.g. the 1/255 rescale) stay fixed
            p_.requires_grad_(False)
        else:
            params.append(p_)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    step, elapsed0 = 0, 0.0
    ckpt = args.ckpt
    if args.resume:
        ck = torch.load(ckpt, weights_only=False, map_location="cpu")
        model.load_state_dict(ck["model"])
        if "opt" in ck:  # a freshly widened checkpoint has none: the optimizer starts fresh
            opt.load_state_dict(ck["opt"])
        step, elapsed0 = ck["step"], ck.get("elapsed", 0.0)
        print("resumed at step", step, "from", ckpt, "(optimizer %s)" % ("restored" if "opt" in ck else "fresh"), flush=True)
    snap_fmt = os.path.splitext(ckpt)[0].replace("_ckpt", "") + "_snap_%d.pt"
    data = batches(real["train"], pool, args)  # workers fork before CUDA starts in this process
    model.to(args.device)
    for state in opt.state.values():  # restored Adam moments follow the model
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(args.device)
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
        x, y = next(data)
        p = model(x.to(args.device, non_blocking=True))
        logp = torch.log(p.clamp_min(1e-7))
        loss = -logp.gather(2, y.to(args.device).long()[:, :, None]).mean()
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
                        "elapsed": elapsed0 + el}, ckpt)
        if args.snapshot_min and el > (n_snap + 1) * args.snapshot_min * 60:
            # numbered copies so an earlier (better) point can still be exported after the run
            n_snap += 1
            torch.save({"model": model.state_dict(), "step": step}, snap_fmt % step)
            print("snapshot step %d" % step, flush=True)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "elapsed": elapsed0 + time.time() - t0}, ckpt)
    acc = evaluate(model, real["val"], args.device)
    print("done: steps %d, train time %.1f min (this run), held-out real-crop exact %.3f (labels are auto/cleaned)"
          % (step, (time.time() - t0) / 60, acc), flush=True)


def widen(src=CKPT, dst=CKPT10):
    """9x37 checkpoint -> 10x38: writes the widened graph (BASE_OCR10) and a model-only checkpoint for
    it (step carried over, no optimizer state), then compares the two models' reads on the held-out
    real crops."""
    import torch
    widen_onnx(BASE_OCR, BASE_OCR10)
    old, new = make_model(BASE_OCR), make_model(BASE_OCR10)
    ck = torch.load(src, weights_only=False, map_location="cpu")
    old.load_state_dict(ck["model"])
    sd_old, sd_new = ck["model"], new.state_dict()
    # parameter names are the same in both conversions; find the three widened tensors by shape
    by_shape = {}
    for k, v in sd_old.items():
        if tuple(v.shape) != tuple(sd_new[k].shape):
            by_shape[tuple(v.shape)] = k
    kq, kw, kb = by_shape.pop((1, 9, 64)), by_shape.pop((64, 37)), by_shape.pop((37,))
    assert not by_shape, by_shape
    q, w, b = widen_arrays(sd_old[kq], sd_old[kw], sd_old[kb])
    out = {}
    for k, v in sd_new.items():
        if k in (kq, kw, kb):
            out[k] = {kq: q, kw: w, kb: b}[k]
        elif v.dtype.is_floating_point:
            out[k] = sd_old[k]
        else:
            out[k] = v  # int64 graph constants: the widened reshape targets (9 -> 10)
    new.load_state_dict(out)
    torch.save({"model": new.state_dict(), "step": ck["step"], "elapsed": ck.get("elapsed", 0.0),
                "widened_from": os.path.basename(src)}, dst)
    real = load_real()["val"]
    x = torch.from_numpy(np.stack([cv2.resize(im, (128, 64), interpolation=cv2.INTER_LINEAR) for im, _ in real]))
    old.eval()
    new.eval()
    with torch.no_grad():
        po, pn = old(x).numpy(), new(x).numpy()
    am_o, am_n = po.argmax(-1), pn.argmax(-1)
    same = (am_o == am_n[:, :9]).mean()
    ro, rn = [decode_probs(p) for p in po], [decode_probs(p) for p in pn]
    print("widened checkpoint %s (step %d) -> %s; held-out real crops (%d): argmax slots 0-8 identical %.4f, "
          "slot 9 = pad %.4f, Đ argmax anywhere %d, same string %d, exact old %d new %d"
          % (src, ck["step"], dst, len(real), same, (am_n[:, 9] == ALPHABET.index("_")).mean(),
             int((am_n == ALPHABET.index("Đ")).sum()), sum(a == b for a, b in zip(ro, rn)),
             sum(r == lab for r, (_, lab) in zip(ro, real)), sum(r == lab for r, (_, lab) in zip(rn, real))), flush=True)


def export(ckpt=CKPT10, out=NEW_OCR):
    """Writes the checkpoint's weights into a copy of its base graph: the widened 10x38 graph, or the
    upstream 9x37 one for the older checkpoints (picked by the slot-query shape)."""
    import onnxruntime as ort
    import torch
    import onnx_weights
    ck = torch.load(ckpt, weights_only=False, map_location="cpu")
    base = BASE_OCR if any(tuple(v.shape) == (37,) for v in ck["model"].values()) else BASE_OCR10  # 9x37 bias
    model = make_model(base)
    mapping = onnx_weights.build_map(base, model)
    model.load_state_dict(ck["model"])
    model.eval()
    onnx_weights.write(base, model, mapping, out)
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    xi = np.random.randint(0, 255, (3, 64, 128, 3), dtype=np.uint8)
    o = sess.run(None, {"input": xi})[0]
    with torch.no_grad():
        t = model(torch.from_numpy(xi)).numpy()
    i = sess.get_inputs()[0]
    print("exported", out, "(step %d, base %s)" % (ck["step"], os.path.basename(base)), os.path.getsize(out), "bytes; input", i.name, i.type, i.shape,
          "output", sess.get_outputs()[0].name, o.shape, o.dtype, "row sums", o.sum(-1).min(), o.sum(-1).max(),
          "max|ort-torch|", np.abs(o - t).max())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["clean", "widen", "train", "export"])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--real-frac", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="train: torch device (cuda on a GPU machine)")
    ap.add_argument("--workers", type=int, default=0, help="train: processes drawing batches (0 = this one)")
    ap.add_argument("--real-glyphs", type=float, default=0.0, help="train: share of glyph-by-glyph synthetic "
                    "plates drawn from glyphs cut from the real crops (real_glyphs.py harvest first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--snapshot-min", type=float, default=0, help="also save <ckpt without _ckpt>_snap_STEP.pt (work/ocr10_snap_STEP.pt) every N minutes")
    ap.add_argument("--cctv-frac", type=float, default=0.65, help="share of real crops shrunk to CCTV size + JPEG")
    ap.add_argument("--ckpt", default=CKPT10, help="train: checkpoint to resume from and write (snapshots "
                    "beside it as *_snap_STEP.pt); export: checkpoint to read; widen: checkpoint to write")
    ap.add_argument("--from", dest="src", default=CKPT, help="widen: the 9x37 checkpoint to widen")
    ap.add_argument("--out", default=NEW_OCR, help="export: ONNX file to write")
    a = ap.parse_args()
    if a.cmd == "clean":
        clean()
    elif a.cmd == "widen":
        widen(a.src, a.ckpt)
    elif a.cmd == "train":
        train(a)
    else:
        export(a.ckpt, a.out)
