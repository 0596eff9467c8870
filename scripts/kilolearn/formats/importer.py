"""Import trained models from ONNX and int8/float TFLite into a kilolearn Graph + weights.

    imp = load("model.onnx")                # or "model.tflite"
    set_trainable(imp, last=3)              # the last 3 layers with weights train
    blob = export.export_f32(imp.graph, imp.params)
    blob = export.export_s8(imp.qmodel or reference.quantize_model(imp.graph, imp.params, calib))

What is supported, the fusions done here and the quantisation policy for int8 TFLite (what is
kept exactly, what is re-quantised to kilolearn's power-of-two scales) are in docs/import.md.
Anything outside the supported set raises :class:`UnsupportedModel`, naming every offending
node and the supported ops: there is no silent fallback.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import quant as q
from ..core.model import Graph, Op, Params, _conv_geometry
from ..core.reference import BIAS_EXTRA_BITS, QModel

ONNX_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
            "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Add", "Softmax",
            "Identity", "Dropout", "Constant")
TFLITE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D",
              "AVERAGE_POOL_2D", "MEAN", "RESHAPE", "SOFTMAX")
BN_CHECK_TOL = 1e-4  # relative error allowed between conv→BN and the folded conv


class UnsupportedModel(ValueError):
    """The model uses something kilolearn cannot run; the message names every node."""


@dataclass
class Imported:
    graph: Graph
    params: Params  # float32 (dequantised for an int8 TFLite model)
    source: str  # "onnx" | "tflite"
    names: list[str]  # per op: the source node(s) it came from
    layout: str = "hwc"  # "nchw": the source takes (N, C, H, W) inputs (see to_hwc)
    qmodel: QModel | None = None  # int8 TFLite: its quantisation mapped to power-of-two scales
    notes: list[str] = field(default_factory=list)  # fusions, checks, requantisation errors
    weight_err: dict[int, float] = field(default_factory=dict)  # op -> rel. requant error
    tflite_io: dict[str, tuple[float, int]] = field(default_factory=dict)  # in/out scale, zp

    def to_hwc(self, x: np.ndarray) -> np.ndarray:
        """Source-layout inputs (N, ...) -> kilolearn's flat HWC samples (N, features)."""
        x = np.asarray(x, np.float32)
        if self.layout == "nchw" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        return x.reshape(len(x), -1)


# --------------------------------------------------------------------------- common builder


class _Builder:
    def __init__(self, source: str):
        self.source = source
        self.shapes: list[tuple[int, int, int]] = []
        self.ops: list[Op] = []
        self.w: list[np.ndarray | None] = []
        self.b: list[np.ndarray | None] = []
        self.names: list[str] = []
        self.producer: dict[int, int] = {}
        self.notes: list[str] = []

    def tensor(self, shape: tuple[int, ...]) -> int:
        self.shapes.append(tuple(int(v) for v in shape))  # type: ignore[arg-type]
        return len(self.shapes) - 1

    def op(self, op: Op, name: str, w: np.ndarray | None = None,
           b: np.ndarray | None = None) -> int:
        self.ops.append(op)
        self.w.append(None if w is None else np.ascontiguousarray(w, np.float32))
        self.b.append(None if b is None else np.ascontiguousarray(b, np.float32))
        self.names.append(name)
        self.producer[op.output] = len(self.ops) - 1
        return op.output

    def conv_out(self, x: int, kernel: tuple[int, int], stride: int,
                 pad: tuple[int, int, int, int], name: str) -> tuple[int, int]:
        h, w, _ = self.shapes[x]
        t, left, bt, r = pad
        ho = (h + t + bt - kernel[0]) // stride + 1
        wo = (w + left + r - kernel[1]) // stride + 1
        if ho < 1 or wo < 1:
            raise UnsupportedModel(f"{name}: kernel {kernel} larger than the padded input")
        return ho, wo

    def graph(self, out: int) -> Graph:
        if not self.ops:
            raise UnsupportedModel("the model has no layer kilolearn can train")
        if self.ops[-1].output != out:
            raise UnsupportedModel("the model's output must be produced by its last layer")
        if self.ops[-1].act != "none":
            raise UnsupportedModel(f"the last layer ({self.names[-1]}) has an activation: "
                                   "kilolearn trains on logits (a trailing Softmax is fine)")
        return Graph(list(self.shapes), list(self.ops))


def set_trainable(imp: Imported, last: int | None = None, what: str = "all") -> list[int]:
    """Choose what trains: the last ``last`` layers with weights (all when None), and ``what``
    ('all' = weights and biases, 'bias' = only the biases, the weights stay frozen and are
    read in place, 'none' = frozen). Returns the indices of the trainable ops."""
    if what not in ("all", "none", "bias"):
        raise UnsupportedModel(f"--train {what!r}: expected all, none or bias")
    g = imp.graph
    with_w = [i for i, op in enumerate(g.ops) if op.has_params]
    if last is not None and last < 0:
        raise UnsupportedModel("--train-last must be >= 0")
    chosen = set() if what == "none" else set(with_w if last is None else
                                              with_w[len(with_w) - min(last, len(with_w)):])
    for i, op in enumerate(g.ops):
        op.trainable = i in chosen
        op.bias_only = op.trainable and what == "bias"
    return sorted(chosen)


def load(path: str | Path) -> Imported:
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return load_onnx(p)
    if p.suffix.lower() == ".tflite":
        return load_tflite(p.read_bytes())
    raise UnsupportedModel(f"{p.name}: expected a .onnx or .tflite file")


def _unsupported(bad: list[str], supported: tuple[str, ...], what: str) -> UnsupportedModel:
    return UnsupportedModel(
        f"{len(bad)} unsupported {what} node(s): " + "; ".join(bad) +
        f". Supported {what} ops: {', '.join(supported)}")


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
        if ot in ("Relu", "Clip"):
            i = fusable(n.input[0], name, ot)
            act = "relu"
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


# --------------------------------------------------------------------------- TFLite


def _pow2_exp(scale: float) -> int | None:
    """e if scale == 2**e exactly, else None."""
    m, e = math.frexp(scale)
    return e - 1 if m == 0.5 else None


def load_tflite(buf: bytes) -> Imported:
    """A TFLite flatbuffer (int8 or float32) -> kilolearn graph, float32 weights and, for int8,
    a QModel carrying its quantisation (power-of-two scales, see docs/import.md)."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
    m = tflite.Model.GetRootAsModel(buf, 0)
    if m.SubgraphsLength() != 1:
        raise UnsupportedModel(f"{m.SubgraphsLength()} subgraphs: kilolearn imports one")
    sg = m.Subgraphs(0)

    def opname(o) -> str:
        c = m.OperatorCodes(o.OpcodeIndex())
        return op_names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM")

    def tname(i: int) -> str:
        return sg.Tensors(i).Name().decode()

    opers = [sg.Operators(k) for k in range(sg.OperatorsLength())]
    bad = [f"{opname(o)} '{tname(o.Outputs(0))}'" for o in opers if opname(o) not in TFLITE_OPS]
    if bad:
        raise _unsupported(bad, TFLITE_OPS, "TFLite")
    if sg.InputsLength() != 1 or sg.OutputsLength() != 1:
        raise UnsupportedModel("kilolearn models have one input and one output")

    def qparams(i: int) -> tuple[np.ndarray, np.ndarray] | None:
        qp = sg.Tensors(i).Quantization()
        if qp is None or qp.ScaleLength() == 0:
            return None
        return qp.ScaleAsNumpy().astype(np.float64), qp.ZeroPointAsNumpy().astype(np.int64)

    def data(i: int) -> np.ndarray | None:
        t = sg.Tensors(i)
        b = m.Buffers(t.Buffer())
        if b is None or b.DataLength() == 0:
            return None
        dt = {TensorType.FLOAT32: "<f4", TensorType.INT8: "i1", TensorType.INT32: "<i4",
              TensorType.INT64: "<i8"}.get(t.Type())
        if dt is None:
            raise UnsupportedModel(f"tensor '{tname(i)}': type {t.Type()} not supported")
        return np.frombuffer(b.DataAsNumpy().tobytes(), dt).reshape(t.ShapeAsNumpy())

    def real(i: int) -> np.ndarray | None:
        """Dequantised constant (per-channel along the tensor's quantised dimension)."""
        v = data(i)
        qp = qparams(i)
        if v is None or qp is None or v.dtype == np.float32:
            return v
        s, z = qp
        dim = sg.Tensors(i).Quantization().QuantizedDimension()
        shape = [1] * v.ndim
        if s.size > 1:
            shape[dim] = s.size
        return (v.astype(np.float64) - z.reshape(shape)) * s.reshape(shape)

    t_in = sg.Inputs(0)
    ishape = [int(v) for v in sg.Tensors(t_in).ShapeAsNumpy()]
    if len(ishape) == 4:
        in_shape = tuple(ishape[1:])
    elif len(ishape) == 2:
        in_shape = (1, 1, ishape[1])
    else:
        raise UnsupportedModel(f"input shape {ishape}: expected (N, H, W, C) or (N, features)")
    is_int8 = sg.Tensors(t_in).Type() == TensorType.INT8
    B = _Builder("tflite")
    tid: dict[int, int] = {t_in: B.tensor(in_shape)}
    src_of: dict[int, int] = {tid[t_in]: t_in}  # kilolearn tensor -> TFLite tensor (quant)
    w_src: list[int] = []  # per kilolearn op: its TFLite weight tensor (-1 without)
    acts = {0: "none", 1: "relu", 3: "relu6"}

    def fused(o, opts_cls, name: str) -> str:
        opt = opts_cls()
        opt.Init(o.BuiltinOptions().Bytes, o.BuiltinOptions().Pos)
        f = opt.FusedActivationFunction()
        if f not in acts:
            raise UnsupportedModel(f"'{name}': fused activation {f} not supported (none, "
                                   "RELU, RELU6)")
        return acts[f], opt

    for o in opers:
        kind = opname(o)
        out_t = o.Outputs(0)
        name = tname(out_t)
        x_t = o.Inputs(0)
        x = tid[x_t]
        h, w, c = B.shapes[x]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            from tflite.Conv2DOptions import Conv2DOptions
            from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions

            act, opt = fused(o, Conv2DOptions if kind == "CONV_2D" else DepthwiseConv2DOptions,
                             name)
            if opt.StrideH() != opt.StrideW() or opt.DilationHFactor() != 1 or \
                    opt.DilationWFactor() != 1:
                raise UnsupportedModel(f"{kind} '{name}': unequal strides or dilation")
            wt = real(o.Inputs(1))
            bias = real(o.Inputs(2)) if o.InputsLength() > 2 and o.Inputs(2) >= 0 else None
            s = opt.StrideH()
            kh, kw = wt.shape[1], wt.shape[2]
            ho, wo, pad = _conv_geometry(h, w, (kh, kw), s, "same" if opt.Padding() == 0
                                         else "valid")
            if kind == "CONV_2D":
                cout = wt.shape[0]
                op = Op("conv", [x], B.tensor((ho, wo, cout)), act, (kh, kw), s, pad)
                wk = wt
            else:
                if wt.shape[3] != c:
                    raise UnsupportedModel(f"{kind} '{name}': depth multiplier != 1")
                cout = c
                op = Op("dwconv", [x], B.tensor((ho, wo, c)), act, (kh, kw), s, pad)
                wk = wt[0]
            B.op(op, name, wk, np.zeros(cout) if bias is None else bias)
        elif kind == "FULLY_CONNECTED":
            from tflite.FullyConnectedOptions import FullyConnectedOptions

            act, opt = fused(o, FullyConnectedOptions, name)
            wt = real(o.Inputs(1))
            bias = real(o.Inputs(2)) if o.InputsLength() > 2 and o.Inputs(2) >= 0 else None
            if wt.shape[1] != h * w * c:
                raise UnsupportedModel(f"FULLY_CONNECTED '{name}': weights {wt.shape} for "
                                       f"{h * w * c} inputs")
            op = Op("dense", [x], B.tensor((1, 1, wt.shape[0])), act)
            B.op(op, name, wt, np.zeros(wt.shape[0]) if bias is None else bias)
        elif kind == "ADD":
            from tflite.AddOptions import AddOptions

            act, _ = fused(o, AddOptions, name)
            x1 = tid.get(o.Inputs(1))
            if x1 is None or B.shapes[x1] != B.shapes[x]:
                raise UnsupportedModel(f"ADD '{name}': two activation tensors of one shape "
                                       "are supported (no constants, no broadcasting)")
            B.op(Op("add", [x, x1], B.tensor((h, w, c)), act), name)
        elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            from tflite.Pool2DOptions import Pool2DOptions

            act, opt = fused(o, Pool2DOptions, name)
            kh, kw, s = opt.FilterHeight(), opt.FilterWidth(), opt.StrideH()
            ho, wo, pad = _conv_geometry(h, w, (kh, kw), s, "same" if opt.Padding() == 0
                                         else "valid")
            if act != "none" or opt.StrideW() != s or any(pad):
                raise UnsupportedModel(f"{kind} '{name}': only unpadded pools (VALID or a "
                                       "SAME that needs no padding) without activation")
            B.op(Op("maxpool" if kind == "MAX_POOL_2D" else "avgpool", [x],
                    B.tensor((ho, wo, c)), kernel=(kh, kw), stride=s), name)
        elif kind == "MEAN":
            axes = data(o.Inputs(1))
            if axes is None or sorted(int(v) for v in axes.reshape(-1)) != [1, 2]:
                raise UnsupportedModel(f"MEAN '{name}': only the mean over H and W (global "
                                       "average pooling)")
            B.op(Op("avgpool", [x], B.tensor((1, 1, c)), kernel=(h, w), stride=1), name)
        elif kind == "RESHAPE":
            oshape = [int(v) for v in sg.Tensors(out_t).ShapeAsNumpy()]
            if int(np.prod(oshape[1:])) != h * w * c or (len(oshape) != 2 and
                                                         oshape[1:] != [h, w, c]):
                raise UnsupportedModel(f"RESHAPE '{name}': only to a vector (N, features)")
            tid[out_t] = x  # NHWC flattened is kilolearn's HWC order
            continue
        elif kind == "SOFTMAX":
            if out_t != sg.Outputs(0):
                raise UnsupportedModel(f"SOFTMAX '{name}' is only supported as the last op")
            tid[out_t] = x
            B.notes.append(f"dropped the final SOFTMAX '{name}': the device outputs logits")
            continue
        tid[out_t] = B.ops[-1].output
        src_of[B.ops[-1].output] = out_t
        w_src.append(o.Inputs(1) if B.ops[-1].has_params else -1)

    graph = B.graph(tid.get(sg.Outputs(0), -1))
    imp = Imported(graph, Params(B.w, B.b), "tflite", B.names, notes=B.notes)
    if is_int8:
        _map_quantisation(imp, {k: qparams(v) for k, v in src_of.items()}, B, w_src,
                          qparams, data)
        oq = qparams(sg.Outputs(0))
        iq = qparams(t_in)
        imp.tflite_io = {"input": (float(iq[0][0]), int(iq[1][0])),
                         "output": (float(oq[0][0]), int(oq[1][0]))}
        if sg.Tensors(sg.Outputs(0)).Type() == TensorType.INT8 and opname(opers[-1]) == "SOFTMAX":
            lq = src_of.get(graph.output)
            lp = qparams(lq) if lq is not None else None
            if lp is not None:
                imp.tflite_io["logits"] = (float(lp[0][0]), int(lp[1][0]))
    return imp


def _map_quantisation(imp: Imported, tq: dict[int, tuple[np.ndarray, np.ndarray] | None],
                      B: _Builder, w_tensors: list[int], qparams, data) -> None:
    """TFLite int8 quantisation -> kilolearn's power-of-two QModel (docs/import.md).

    Activations: a scale that is a power of two with the conventional zero point (-128 after
    ReLU/ReLU6 and for non-negative inputs, 0 otherwise) is kept exactly; any other is
    re-quantised to the smallest power of two covering the same real range. Weights: a
    per-tensor power-of-two scale keeps the int8 values exactly; per-channel or other scales
    are re-quantised to one power-of-two scale per tensor (error reported per op). Biases are
    re-expressed exactly in units of 2**(ex + ew - 8) when that is representable."""
    g = imp.graph
    exp = [0] * len(g.shapes)
    zp = [0] * len(g.shapes)
    kept = requant = 0

    def set_t(t: int, nonneg: bool) -> None:
        nonlocal kept, requant
        qp = tq.get(t)
        if qp is None:
            raise UnsupportedModel(f"tensor {t} of the int8 model has no quantisation")
        s, z = float(qp[0][0]), int(qp[1][0])
        e = _pow2_exp(s)
        conv_zp = -128 if nonneg else 0
        if e is not None and z == conv_zp:
            exp[t], zp[t] = e, z
            kept += 1
            return
        lo, hi = s * (-128 - z), s * (127 - z)
        if nonneg:
            exp[t], zp[t] = q.exp_for_range(max(hi, 0.0), 255), -128
        else:
            exp[t], zp[t] = q.exp_for_range(max(abs(lo), abs(hi)), 127), 0
        requant += 1

    iq = tq[g.input]
    set_t(g.input, iq is not None and int(iq[1][0]) == -128)
    n = len(g.ops)
    w: list[np.ndarray | None] = [None] * n
    b: list[np.ndarray | None] = [None] * n
    ew, eb = [0] * n, [0] * n
    for i, op in enumerate(g.ops):
        if op.kind in ("avgpool", "maxpool"):
            exp[op.output], zp[op.output] = exp[op.inputs[0]], zp[op.inputs[0]]
            qo, qi = tq.get(op.output), tq.get(op.inputs[0])
            if qo is not None and qi is not None and (qo[0][0] != qi[0][0] or
                                                      qo[1][0] != qi[1][0]):
                imp.notes.append(f"{B.names[i]}: pool output re-quantised to its input's "
                                 "scale (kilolearn pools keep the scale)")
            continue
        set_t(op.output, op.act != "none")
        if not op.has_params:
            continue
        wq = qparams(w_tensors[i])
        raw = data(w_tensors[i])
        wf = imp.params.weights[i].astype(np.float64)
        e = _pow2_exp(float(wq[0][0])) if wq is not None and wq[0].size == 1 else None
        if e is not None and int(wq[1][0]) == 0:
            ew[i] = e
            wi = raw.astype(np.int64).reshape(g.weight_shape(i)) if op.kind != "dwconv" else \
                raw.astype(np.int64)[0]
            w[i] = np.clip(wi, -127, 127)
        else:
            ew[i] = q.exp_for_range(float(np.abs(wf).max()), 127)
            w[i] = np.clip(np.round(wf / 2.0**ew[i]), -127, 127).astype(np.int64)
        err = float(np.linalg.norm(w[i] * 2.0**ew[i] - wf) / max(np.linalg.norm(wf), 1e-30))
        imp.weight_err[i] = err
        eb[i] = exp[op.inputs[0]] + ew[i] - BIAS_EXTRA_BITS
        b[i] = np.clip(np.round(imp.params.biases[i].astype(np.float64) / 2.0**eb[i]),
                       q.INT32_MIN, q.INT32_MAX).astype(np.int64)
    lut_exp = exp[g.output]
    imp.qmodel = QModel(g, w, b, ew, eb, exp, zp, lut_exp, q.softmax_lut(lut_exp))
    worst = max(imp.weight_err.values(), default=0.0)
    imp.notes.append(f"int8: {kept} activation scale(s) kept exactly, {requant} re-quantised "
                     f"to a power of two; weights re-quantised where needed, worst relative "
                     f"error {worst:.2%}")


def summary(imp: Imported) -> str:
    """A human-readable table of the imported graph."""
    g = imp.graph
    lines = [f"{imp.source} model: input {g.shapes[g.input]}, {len(g.ops)} ops, "
             f"{g.n_classes} outputs"]
    for i, op in enumerate(g.ops):
        n_par = 0 if not op.has_params else int(np.prod(g.weight_shape(i))) + \
            int(np.size(imp.params.biases[i]))
        err = f"  w-requant {imp.weight_err[i]:.2%}" if i in imp.weight_err else ""
        lines.append(f"  {i:2d} {op.kind:8s} {op.act:5s} {str(g.shapes[op.output]):14s} "
                     f"params {n_par:6d} {'train' if op.trainable else 'frozen':6s} "
                     f"{imp.names[i]}{err}")
    lines += [f"  note: {s}" for s in imp.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def add_arguments(p) -> None:
    from .. import cliargs as ca

    p.add_argument("model", type=ca.InFile("model", (".onnx", ".tflite")),
                   help="a .onnx or .tflite file")
    p.add_argument("-o", "--output", type=ca.OutFile(),
                   help="the .klm blob to write (default: MODEL.klm)")
    p.add_argument("--dtype", choices=["f32", "s8"],
                   help="blob type (default: s8 for an int8 TFLite model, else f32)")
    p.add_argument("--train-last", type=ca.IntRange(0, 65535), metavar="N",
                   help="train only the last N layers with weights (default: all)")
    p.add_argument("--train", choices=["all", "none", "bias"], default="all",
                   help="what trains in the chosen layers (bias: needs engine support)")
    p.add_argument("--calib", metavar="X.npy", type=ca.InFile("calibration array", (".npy",)),
                   help="calibration inputs for --dtype s8 from a float model, in the model's "
                        "own layout (N, C, H, W for ONNX); default: 64 uniform [0, 1) samples")
    p.add_argument("--requantize", action="store_true",
                   help="int8 TFLite: calibrate afresh instead of keeping its quantisation")


def load_checked(path: str | Path) -> Imported:
    """``load`` for the command line: anything a broken or foreign file makes the parsers
    raise becomes an UnsupportedModel naming the file; a model with fewer than two outputs is
    refused (kilolearn trains classifiers)."""
    p = Path(path)
    kind = "ONNX" if p.suffix.lower() == ".onnx" else "TFLite"
    if kind == "TFLite":
        with open(p, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise UnsupportedModel(f"{p}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        imp = load(p)
    except UnsupportedModel as e:
        raise UnsupportedModel(f"{p.name}: {e}") from None
    except ModuleNotFoundError as e:
        raise UnsupportedModel(f"importing {kind} needs the {e.name} package: pip install "
                               "'kilolearn[import]'") from None
    except (MemoryError, RecursionError) as e:
        raise UnsupportedModel(f"{p}: not a valid {kind} model ({type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - a malformed file may break a parser anywhere
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise UnsupportedModel(f"{p}: not a valid {kind} model ({type(e).__name__}: "
                               f"{msg})") from None
    n_out = int(np.prod(imp.graph.shapes[imp.graph.output]))
    if n_out < 2:
        raise UnsupportedModel(f"{p.name}: the model has {n_out} output(s); kilolearn trains "
                               "classifiers (at least 2 classes)")
    return imp


def _calibration(imp: Imported, path: str) -> np.ndarray:
    """--calib: (N, ...) inputs in the model's own layout -> (N, features) finite float32."""
    from ..cliargs import UsageError

    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"--calib {path}: not a .npy array ({e})") from None
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "biuf" or raw.ndim < 1 or \
            len(raw) == 0:
        raise UsageError(f"--calib {path}: expected a numeric (N, ...) array of N >= 1 inputs")
    n_in = imp.graph.n_inputs
    with np.errstate(over="ignore", invalid="ignore"):
        calib = imp.to_hwc(raw)
    if calib.shape[1] != n_in:
        raise UsageError(f"--calib {path}: inputs of {calib.shape[1]} values (shape "
                         f"{raw.shape}), the model takes {n_in}")
    if not np.isfinite(calib).all():
        raise UsageError(f"--calib {path}: NaN, infinite or too large values")
    return calib


def run(a) -> int:
    from ..cliargs import UsageError, check_writable
    from ..core.reference import quantize_model
    from . import export

    out = Path(a.output or Path(a.model).with_suffix(".klm"))
    if not a.output:
        try:
            check_writable(str(out))
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"cannot write the default output: {e} (give -o)") from None
    imp = load_checked(a.model)
    set_trainable(imp, a.train_last, a.train)
    dtype = a.dtype or ("s8" if imp.qmodel is not None else "f32")
    calibrate = dtype == "s8" and (imp.qmodel is None or a.requantize)
    if a.calib and not calibrate:
        raise UsageError(f"--calib {a.calib}: not used: only an int8 blob from a float model "
                         "(--dtype s8) or --requantize calibrates")
    calib = _calibration(imp, a.calib) if a.calib else None
    if dtype == "f32":
        blob = export.export_f32(imp.graph, imp.params)
    elif imp.qmodel is not None and not a.requantize:
        blob = export.export_s8(imp.qmodel)
    else:
        if calib is None:
            calib = np.random.default_rng(0).uniform(0, 1, (64, imp.graph.n_inputs))
            imp.notes.append("int8 scales calibrated on 64 uniform [0, 1) inputs (give --calib "
                             "with real data)")
        blob = export.export_s8(quantize_model(imp.graph, imp.params, calib))
    out.write_bytes(blob)
    print(summary(imp))
    print(f"wrote {out}: {len(blob):,} bytes, {dtype}, "
          f"{sum(op.trainable for op in imp.graph.ops)} trainable layer(s)")
    return 0
