"""Write fine-tuned weights back into the original ONNX graph.

The model was converted with onnx2torch; every trainable tensor of the converted model is one
initializer of the original graph (same values, possibly transposed for Gemm). We match them by
value on the freshly converted model, train, then overwrite the initializers in a copy of the
original ONNX file. The graph (pre/post-processing, decoding, dynamic batch) stays byte-for-byte
the same apart from the weights, so the I/O contract cannot drift.
"""
import numpy as np
import onnx
from onnx import numpy_helper


def build_map(onnx_path, fresh_model):
    m = onnx.load(onnx_path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    by_key = {}
    for n, a in inits.items():
        by_key.setdefault((a.shape, a.dtype.str, hash(a.tobytes())), []).append(n)
    mapping, used = {}, set()
    state = {k: v for k, v in fresh_model.state_dict().items() if v.dtype.is_floating_point}
    for pname, t in state.items():
        a = t.detach().cpu().numpy()
        found = None
        for tr in (False, True):
            b = a.T if (tr and a.ndim == 2) else a
            if tr and a.ndim != 2:
                continue
            b = np.ascontiguousarray(b)
            cands = [c for c in by_key.get((b.shape, b.dtype.str, hash(b.tobytes())), []) if c not in used]
            if cands:
                found = (cands[0], tr, len(cands))
                break
        if found is None and a.size <= 1:
            continue  # scalar graph constants are never trained
        if found is None and any(by_key.get((a.shape, a.dtype.str, hash(np.ascontiguousarray(a).tobytes())), [])):
            continue  # a constant shared by two nodes (e.g. Resize scales); never trained
        if found is None:
            raise RuntimeError("no ONNX initializer for " + pname)
        if found[2] > 1 and a.size > 4:
            print("warning: ambiguous initializer for", pname, found)
        mapping[pname] = (found[0], found[1])
        used.add(found[0])
    return mapping


def write(onnx_path, model, mapping, out_path):
    m = onnx.load(onnx_path)
    state = model.state_dict()
    new = {}
    for pname, (iname, tr) in mapping.items():
        a = state[pname].detach().cpu().numpy()
        new[iname] = np.ascontiguousarray(a.T if tr else a)
    for i, init in enumerate(m.graph.initializer):
        if init.name in new:
            old = numpy_helper.to_array(init)
            arr = new[init.name].astype(old.dtype).reshape(old.shape)
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    m.producer_name = "matthan models/vn (fine-tuned)"
    onnx.checker.check_model(m)
    onnx.save(m, out_path)
