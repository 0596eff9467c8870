"""ONNX -> kilolearn graph + float32 weights (kilolearn.formats.importer.load_onnx):
BatchNormalization folded into its conv or dense, ReLU/ReLU6 fused, NCHW reordered to HWC.
docs/import.md lists what is supported."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import model as M
from ..core.model import Op, Params, _conv_geometry
from .import_common import Imported, UnsupportedModel, _Builder, _unsupported

ONNX_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu",
            "MaxPool", "AveragePool",
            "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Add", "Softmax",
            "Identity", "Dropout", "Constant")
BN_CHECK_TOL = 1e-4  # relative error allowed between conv→BN and the folded conv


def _fold_bn(imp_w: np.ndarray, imp_b: np.ndarray, kind: str, gamma: np.ndarray,
             beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float, name: str,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Fold y = gamma (conv(x) + b - mean) / sqrt(var + eps) + beta into the op's weights;
    checked on random inputs against the unfused computation (float64). Returns (w, b, err)."""
    with np.errstate(all="ignore"):
        return _fold_bn_checked(imp_w, imp_b, kind, gamma, beta, mean, var, eps, name, rng)


def _fold_bn_checked(imp_w, imp_b, kind, gamma, beta, mean, var, eps, name, rng):
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w64, b64 = imp_w.astype(np.float64), imp_b.astype(np.float64)
    if kind == "dwconv":  # (kh, kw, C): per channel on the last axis
        wf = w64 * s
        rows = w64.reshape(-1, w64.shape[-1]).T  # (C, K)
        wrows = wf.reshape(-1, wf.shape[-1]).T
    else:  # (Cout, ...) per output channel
        wf = w64 * s.reshape((-1,) + (1,) * (w64.ndim - 1))
        rows, wrows = w64.reshape(len(s), -1), wf.reshape(len(s), -1)
    bf = (b64 - mean) * s + beta
    x = rng.normal(0, 1, (rows.shape[1], 16))
    ref = (rows @ x + b64[:, None] - mean[:, None]) * s[:, None] + beta[:, None]
    got = wrows.astype(np.float32).astype(np.float64) @ x + bf.astype(np.float32)[:, None]
    err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
    if not err <= BN_CHECK_TOL:
        raise UnsupportedModel(f"{name}: folding BatchNormalization changed the outputs by "
                               f"{err:.2e} (relative); the statistics are degenerate")
    return wf.astype(np.float32), bf.astype(np.float32), err


# --------------------------------------------------------------------------- ONNX


def load_onnx(src: str | Path | bytes | object) -> Imported:
    """An ONNX model (path, bytes or onnx.ModelProto) -> kilolearn graph + float32 weights."""
    import onnx
    from onnx import numpy_helper

    if isinstance(src, (str, Path)):
        m = onnx.load(str(src))
    elif isinstance(src, bytes):
        m = onnx.load_from_string(src)
    else:
        m = src
    g = m.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_int"):
                    consts[n.output[0]] = np.array(a.f if a.name == "value_float" else a.i)
                elif a.name in ("value_floats", "value_ints"):
                    consts[n.output[0]] = np.array(list(a.floats) or list(a.ints))
    bad = [f"{n.op_type} '{n.name or n.output[0]}'" for n in g.node if n.op_type not in ONNX_OPS]
    if bad:
        raise _unsupported(bad, ONNX_OPS, "ONNX")
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise UnsupportedModel(f"kilolearn models have one input and one output, this one has "
                               f"{len(inputs)} inputs and {len(g.output)} outputs")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) == 4 and all(v > 0 for v in dims[1:]):
        in_shape, layout = (dims[2], dims[3], dims[1]), "nchw"
    elif len(dims) == 2 and dims[1] > 0:
        in_shape, layout = (1, 1, dims[1]), "hwc"
    else:
        raise UnsupportedModel(f"input '{inputs[0].name}' has shape {dims}: expected "
                               "(N, C, H, W) or (N, features) with fixed sizes")
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    for o in g.output:
        users[o.name] = users.get(o.name, 0) + 1

    B = _Builder("onnx")
    rng = np.random.default_rng(0)
    tid: dict[str, int] = {inputs[0].name: B.tensor(in_shape)}
    chw_flat: set[str] = set()  # names holding a flattened NCHW tensor (CHW element order)
    pending_matmul: dict[str, int] = {}  # MatMul output -> op index (bias may follow as Add)
    bn_errs: list[float] = []

    def attrs(n) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}

    def fusable(x: str, name: str, what: str) -> int:
        t = tid.get(x)
        if t is None or t not in B.producer or users.get(x, 0) != 1:
            raise UnsupportedModel(f"{what} '{name}' must directly follow a Conv, Gemm or Add "
                                   "whose output has no other user (it is fused into it)")
        return B.producer[t]

    for n in g.node:
        a = attrs(n)
        name = n.name or n.output[0]
        ot = n.op_type
        if ot == "Constant":
            continue
        if ot in ("Identity", "Dropout"):
            if n.input[0] in consts:  # exporters alias weights this way
                consts[n.output[0]] = consts[n.input[0]]
                continue
            tid[n.output[0]] = tid[n.input[0]]
            if n.input[0] in chw_flat:
                chw_flat.add(n.output[0])
            continue
        if ot == "Softmax":
            if n.output[0] != g.output[0].name:
                raise UnsupportedModel(f"Softmax '{name}' is only supported as the last node "
                                       "(kilolearn trains with softmax cross-entropy)")
            tid[n.output[0]] = tid[n.input[0]]
            B.notes.append(f"dropped the final Softmax '{name}': the device outputs logits")
            continue
        if ot in ("Flatten", "Reshape"):
            x = tid[n.input[0]]
            if ot == "Flatten" and a.get("axis", 1) != 1:
                raise UnsupportedModel(f"Flatten '{name}': only axis=1 is supported")
            if ot == "Reshape":
                shape = consts.get(n.input[1])
                ok = shape is not None and shape.ndim == 1 and len(shape) == 2 and \
                    (shape[1] in (-1, int(np.prod(B.shapes[x])))) and shape[0] in (1, -1, 0)
                if not ok:
                    raise UnsupportedModel(f"Reshape '{name}': only a reshape to a vector "
                                           f"(N, features) is supported, got {shape}")
            tid[n.output[0]] = x
            h, w, _ = B.shapes[x]
            if layout == "nchw" and (h, w) != (1, 1) or n.input[0] in chw_flat:
                chw_flat.add(n.output[0])
            continue
        if ot == "BatchNormalization":
            i = fusable(n.input[0], name, "BatchNormalization")
            op = B.ops[i]
            if op.kind not in ("conv", "dwconv", "dense") or op.act != "none":
                raise UnsupportedModel(f"BatchNormalization '{name}' must follow a Conv or "
                                       "Gemm before its activation")
            gamma, beta, mean, var = (consts[k].astype(np.float64) for k in n.input[1:5])
            B.w[i], B.b[i], err = _fold_bn(B.w[i], B.b[i], op.kind, gamma, beta, mean, var,
                                           float(a.get("epsilon", 1e-5)), name, rng)
            bn_errs.append(err)
            B.names[i] += f"+{name}"
            tid[n.output[0]] = op.output
            continue
        if ot in ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu"):
            i = fusable(n.input[0], name, ot)
            act = {"Sigmoid": "sigmoid", "Tanh": "tanh", "LeakyRelu": "leaky_relu"}.get(ot, "relu")
            if ot == "LeakyRelu" and float(a.get("alpha", 0.01)) != M.LEAKY_ALPHA:
                raise UnsupportedModel(f"LeakyRelu '{name}': only alpha {M.LEAKY_ALPHA} (exact "
                                       f"in int8) is supported, got {a.get('alpha', 0.01)}")
            if act in M.SMOOTH_ACTS and B.ops[i].kind not in ("conv", "dwconv", "dense"):
                raise UnsupportedModel(f"{ot} '{name}' must follow a Conv or Gemm")
            if ot == "Clip":
                lo = consts.get(n.input[1]) if len(n.input) > 1 and n.input[1] else a.get("min")
                hi = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else a.get("max")
                lo = None if lo is None else float(np.asarray(lo))
                hi = None if hi is None else float(np.asarray(hi))
                if lo == 0.0 and hi == 6.0:
                    act = "relu6"
                elif lo == 0.0 and hi is None:
                    act = "relu"
                else:
                    raise UnsupportedModel(f"Clip '{name}': only Clip(0, 6) (ReLU6) and "
                                           f"Clip(0, inf) are supported, got ({lo}, {hi})")
            if B.ops[i].act != "none" or B.ops[i].kind in ("avgpool", "maxpool"):
                raise UnsupportedModel(f"{ot} '{name}' must follow a Conv, Gemm or Add "
                                       "without an activation")
            B.ops[i].act = act
            B.names[i] += f"+{name}"
            tid[n.output[0]] = B.ops[i].output
            continue
        if ot == "Conv":
            x = tid[n.input[0]]
            h, w, c = B.shapes[x]
            wt = consts.get(n.input[1])
            if wt is None or wt.ndim != 4:
                raise UnsupportedModel(f"Conv '{name}': weights must be a constant 2-D kernel")
            cout, cin_g, kh, kw = wt.shape
            group = int(a.get("group", 1))
            strides = list(a.get("strides", [1, 1]))
            if any(d != 1 for d in a.get("dilations", [1, 1])) or strides[0] != strides[1]:
                raise UnsupportedModel(f"Conv '{name}': dilations and unequal strides are not "
                                       "supported")
            s = int(strides[0])
            ap = a.get("auto_pad", b"NOTSET")
            ap = ap.decode() if isinstance(ap, bytes) else ap
            if ap in ("SAME_UPPER", "SAME_LOWER"):
                _, _, pad = _conv_geometry(h, w, (kh, kw), s, "same")
                if ap == "SAME_LOWER":
                    pad = (pad[2], pad[3], pad[0], pad[1])
            elif ap == "VALID":
                pad = (0, 0, 0, 0)
            else:
                p = list(a.get("pads", [0, 0, 0, 0]))
                pad = (p[0], p[1], p[2], p[3])
            bias = consts[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros(cout)
            ho, wo = B.conv_out(x, (kh, kw), s, pad, name)
            if group == 1 and cin_g == c:
                op = Op("conv", [x], B.tensor((ho, wo, cout)), kernel=(kh, kw), stride=s,
                        pad=pad)
                B.op(op, name, wt.transpose(0, 2, 3, 1), bias)
            elif group == c and cin_g == 1 and cout == c:
                op = Op("dwconv", [x], B.tensor((ho, wo, c)), kernel=(kh, kw), stride=s,
                        pad=pad)
                B.op(op, name, wt[:, 0].transpose(1, 2, 0), bias)
            else:
                raise UnsupportedModel(f"Conv '{name}': group={group} with {c} input and "
                                       f"{cout} output channels (only 1 or depthwise "
                                       "multiplier 1)")
            tid[n.output[0]] = op.output
            continue
        if ot in ("MaxPool", "AveragePool"):
            x = tid[n.input[0]]
            kh, kw = a["kernel_shape"]
            strides = list(a.get("strides", [1, 1]))
            if any(a.get("pads", [0])) or a.get("ceil_mode", 0) or strides[0] != strides[1] \
                    or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise UnsupportedModel(f"{ot} '{name}': only unpadded pools with equal "
                                       "strides (ceil_mode 0) are supported")
            ho, wo = B.conv_out(x, (kh, kw), int(strides[0]), (0, 0, 0, 0), name)
            op = Op("maxpool" if ot == "MaxPool" else "avgpool", [x],
                    B.tensor((ho, wo, B.shapes[x][2])), kernel=(kh, kw), stride=int(strides[0]))
            tid[n.output[0]] = B.op(op, name)
            continue
        if ot == "GlobalAveragePool":
            x = tid[n.input[0]]
            h, w, c = B.shapes[x]
            op = Op("avgpool", [x], B.tensor((1, 1, c)), kernel=(h, w), stride=1)
            tid[n.output[0]] = B.op(op, name)
            continue
        if ot in ("Gemm", "MatMul"):
            x = tid[n.input[0]]
            wt = consts.get(n.input[1])
            if wt is None or wt.ndim != 2:
                raise UnsupportedModel(f"{ot} '{name}': the second input must be a constant "
                                       "matrix")
            if ot == "Gemm":
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    raise UnsupportedModel(f"Gemm '{name}': transA, alpha and beta must be "
                                           "defaults")
                wt = wt if a.get("transB", 0) else wt.T  # -> (out, in)
            else:
                wt = wt.T
            n_in = int(np.prod(B.shapes[x]))
            if wt.shape[1] != n_in:
                raise UnsupportedModel(f"{ot} '{name}': weights {wt.shape} for {n_in} inputs")
            if n.input[0] in chw_flat:  # ONNX flattened C,H,W; kilolearn reads H,W,C
                h, w, c = B.shapes[x]
                wt = wt.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(len(wt), -1)
                B.notes.append(f"{name}: reordered the weight columns from CHW to HWC")
            bias = np.zeros(len(wt))
            if ot == "Gemm" and len(n.input) > 2 and n.input[2]:
                bias = np.broadcast_to(consts[n.input[2]], (len(wt),))
            op = Op("dense", [x], B.tensor((1, 1, len(wt))))
            tid[n.output[0]] = B.op(op, name, wt, bias)
            if ot == "MatMul":
                pending_matmul[n.output[0]] = len(B.ops) - 1
            continue
        if ot == "Add":
            x0, x1 = n.input
            cst = [v for v in (x0, x1) if v in consts]
            if cst:  # MatMul + bias
                other = x1 if cst[0] == x0 else x0
                i = pending_matmul.get(other)
                if i is None or users.get(other, 0) != 1:
                    raise UnsupportedModel(f"Add '{name}': adding a constant is only "
                                           "supported as the bias of a MatMul")
                B.b[i] = B.b[i] + np.broadcast_to(consts[cst[0]], B.b[i].shape).astype(
                    np.float32)
                B.names[i] += f"+{name}"
                tid[n.output[0]] = B.ops[i].output
                continue
            t0, t1 = tid[x0], tid[x1]
            if B.shapes[t0] != B.shapes[t1]:
                raise UnsupportedModel(f"Add '{name}': shapes {B.shapes[t0]} and "
                                       f"{B.shapes[t1]} (no broadcasting)")
            op = Op("add", [t0, t1], B.tensor(B.shapes[t0]))
            tid[n.output[0]] = B.op(op, name)
            continue
        raise AssertionError(ot)  # pragma: no cover - filtered above

    out = tid.get(g.output[0].name)
    graph = B.graph(out if out is not None else -1)
    if bn_errs:
        B.notes.append(f"fused {len(bn_errs)} BatchNormalization node(s); worst relative "
                       f"change {max(bn_errs):.1e} (checked on random inputs)")
    return Imported(graph, Params(B.w, B.b), "onnx", B.names, layout, notes=B.notes)

