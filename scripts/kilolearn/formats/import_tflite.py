"""TFLite (int8 or float32) -> kilolearn graph + weights (kilolearn.formats.importer
.load_tflite), and for int8 the mapping of its quantisation to kilolearn's power-of-two scales
(docs/import.md)."""

from __future__ import annotations

import math

import numpy as np

from ..core import model as M
from ..core import quant as q
from ..core.model import Op, Params, _conv_geometry
from ..core.reference import build_qmodel, int8_weights
from .import_common import Imported, UnsupportedModel, _Builder, _unsupported

TFLITE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D",
              "AVERAGE_POOL_2D", "MEAN", "RESHAPE", "SOFTMAX", "RELU", "RELU6", "LOGISTIC",
              "TANH", "LEAKY_RELU")
#: stand-alone activation ops -> the activation they become on the op that makes their input
ACT_OPS = {"RELU": "relu", "RELU6": "relu6", "LOGISTIC": "sigmoid", "TANH": "tanh",
           "LEAKY_RELU": "leaky_relu"}


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
    n_readers: dict[int, int] = {}  # TFLite tensor -> how many operators read it
    for o in opers:
        for k in range(o.InputsLength()):
            n_readers[o.Inputs(k)] = n_readers.get(o.Inputs(k), 0) + 1

    def fused(o, opts_cls, name: str) -> str:
        opt = opts_cls()
        opt.Init(o.BuiltinOptions().Bytes, o.BuiltinOptions().Pos)
        f = opt.FusedActivationFunction()
        if f not in acts:
            raise UnsupportedModel(f"'{name}': fused activation {f} not supported (none, "
                                   "RELU, RELU6; LOGISTIC, TANH, LEAKY_RELU as ops)")
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
        elif kind in ACT_OPS:
            act = ACT_OPS[kind]
            i = next((k for k, op in enumerate(B.ops) if op.output == x), None)
            if act == "leaky_relu":
                from tflite.LeakyReluOptions import LeakyReluOptions

                lo = LeakyReluOptions()
                if o.BuiltinOptions() is not None:
                    lo.Init(o.BuiltinOptions().Bytes, o.BuiltinOptions().Pos)
                alpha = lo.Alpha() if o.BuiltinOptions() is not None else 0.0
                if alpha != M.LEAKY_ALPHA:
                    raise UnsupportedModel(f"LEAKY_RELU '{name}': only alpha {M.LEAKY_ALPHA} "
                                           f"(exact in int8) is supported, got {alpha:g}")
            kinds = ("conv", "dwconv", "dense") + (() if act in M.SMOOTH_ACTS else ("add",))
            if i is None or B.ops[i].kind not in kinds or B.ops[i].act != "none" or \
                    n_readers.get(x_t, 0) != 1 or x_t == sg.Outputs(0):
                raise UnsupportedModel(
                    f"{kind} '{name}' must follow a " + ("CONV_2D, DEPTHWISE_CONV_2D or "
                                                         "FULLY_CONNECTED" if act in
                                                         M.SMOOTH_ACTS else "conv, fully "
                                                         "connected or ADD op")
                    + " without an activation, as the only reader of its output")
            B.ops[i].act = act
            B.names[i] += f"+{name}"
            tid[out_t] = x
            src_of[x] = out_t  # the folded op's output is quantised as the activation's
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
    kept = requant = 0

    def act(t: int, nonneg: bool) -> tuple[int, int]:
        nonlocal kept, requant
        qp = tq.get(t)
        if qp is None:
            raise UnsupportedModel(f"tensor {t} of the int8 model has no quantisation")
        s, z = float(qp[0][0]), int(qp[1][0])
        e = _pow2_exp(s)
        conv_zp = -128 if nonneg else 0
        if e is not None and z == conv_zp:
            kept += 1
            return e, z
        requant += 1
        return q.act_qparams(s * (-128 - z), s * (127 - z), nonneg)

    def weights(i: int) -> tuple[int, np.ndarray]:
        wq = qparams(w_tensors[i])
        raw = data(w_tensors[i])
        wf = imp.params.weights[i].astype(np.float64)
        e = _pow2_exp(float(wq[0][0])) if wq is not None and wq[0].size == 1 else None
        if e is not None and int(wq[1][0]) == 0:
            wi = raw.astype(np.int64).reshape(g.weight_shape(i)) if g.ops[i].kind != "dwconv" \
                else raw.astype(np.int64)[0]
            wi = np.clip(wi, -127, 127)
        else:
            e = q.exp_for_range(float(np.abs(wf).max()), 127)
            wi = int8_weights(wf, e)
        imp.weight_err[i] = float(np.linalg.norm(wi * 2.0**e - wf) /
                                  max(np.linalg.norm(wf), 1e-30))
        return e, wi

    iq = tq[g.input]
    imp.qmodel = build_qmodel(g, act, iq is not None and int(iq[1][0]) == -128, weights,
                              imp.params.biases)
    for i, op in enumerate(g.ops):
        qo, qi = tq.get(op.output), tq.get(op.inputs[0])
        if op.kind in ("avgpool", "maxpool") and qo is not None and qi is not None and \
                (qo[0][0] != qi[0][0] or qo[1][0] != qi[1][0]):
            imp.notes.append(f"{B.names[i]}: pool output re-quantised to its input's "
                             "scale (kilolearn pools keep the scale)")
    worst = max(imp.weight_err.values(), default=0.0)
    imp.notes.append(f"int8: {kept} activation scale(s) kept exactly, {requant} re-quantised "
                     f"to a power of two; weights re-quantised where needed, worst relative "
                     f"error {worst:.2%}")

