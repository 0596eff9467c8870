"""kilolearn import, TFLite: int8 models written with the `tflite` package's flatbuffer
builders (import_helpers.py) keep their scales and weights on import and give the same tensors
in kilolearn's numpy reference and on the engine (host, QEMU M4) as in TensorFlow Lite for
Microcontrollers and the LiteRT (TFLite) reference interpreter. docs/import.md explains the
tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_target
from import_helpers import TARGETS, TFLiteWriter, dequant, device_logits, need, s8_logits, tfl_case

from kilolearn.core import reference as R
from kilolearn.formats import export
from kilolearn.formats import importer as I

# --------------------------------------------------------------------------- TFLite references


def litert_logits(buf: bytes, xq: np.ndarray, logits: str, ref: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(int8 logits, int8 probabilities) per sample from the LiteRT interpreter (reference
    kernels unless ref=False); ``logits`` names the tensor before the SOFTMAX."""
    from ai_edge_litert import interpreter as lt

    it = lt.Interpreter(model_content=buf, experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=(lt.OpResolverType.BUILTIN_REF if ref
                                                       else lt.OpResolverType.AUTO))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    logit_idx = next(d["index"] for d in it.get_tensor_details() if d["name"] == logits)
    lo, pr = [], []
    for x in xq:
        it.set_tensor(inp["index"], x.reshape(inp["shape"]).astype(np.int8))
        it.invoke()
        lo.append(it.get_tensor(logit_idx).reshape(-1).copy())
        pr.append(it.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(lo).astype(np.int64), np.stack(pr)


def tflm_tensors(buf: bytes, xq: np.ndarray, n_tensors: int) -> list[list[np.ndarray]]:
    """Every tensor 0..n_tensors-1 per sample as TensorFlow Lite for Microcontrollers (the
    interpreter that runs on the boards, PyPI `tflite-micro`) computes them."""
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(
        buf, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    shape = it.get_input_details(0)["shape"]
    out = []
    for x in xq:
        it.set_input(x.reshape(shape).astype(np.int8), 0)
        it.invoke()
        out.append([np.asarray(it.GetTensor(t, 0)["tensor_data"]).reshape(-1).astype(np.int64)
                    for t in range(n_tensors)])
    return out


# --------------------------------------------------------------------------- TFLite tests


def test_tflite_pow2_bit_exact_with_tflm(rng):
    """A TFLite int8 model whose scales are powers of two (conv, depthwise, 1x1 conv, ADD,
    max pool, MEAN, fully connected): the import keeps every scale and weight exactly, and
    every tensor of kilolearn's forward pass equals TFLite Micro's, bit for bit."""
    need("tflite")
    need("tflite_micro")
    g, p, qm, buf, x = tfl_case(rng, per_channel=False)
    imp = I.load_tflite(buf)
    assert [op.kind for op in imp.graph.ops] == [op.kind for op in g.ops]
    iq = imp.qmodel
    assert iq.exp == qm.exp and iq.zp == qm.zp and iq.ew == qm.ew
    assert all(a is None or np.array_equal(a, b) for a, b in zip(iq.w, qm.w, strict=True))
    assert max(imp.weight_err.values()) == 0 and " 0 re-quantised" in imp.notes[-1]
    xq = iq.quantize_input(x)
    tr = R.S8Trainer(iq)
    n = len(g.shapes)
    for xi, tfl in zip(xq, tflm_tensors(buf, xq, n), strict=True):
        ours = tr.forward(xi).acts
        for t in range(n):
            assert np.array_equal(tfl[t], ours[t].reshape(-1)), (t, g.ops[t - 1].kind)


def test_tflite_pow2_matches_litert(rng):
    """The same model in LiteRT's reference kernels: every tensor is identical except that
    LiteRT's FULLY_CONNECTED rounds once (TFLite Micro and CMSIS-NN round twice); the logits
    differ only where the dense accumulator sits next to a rounding tie (docs/import.md)."""
    need("tflite")
    need("ai_edge_litert")
    from ai_edge_litert import interpreter as lt

    from kilolearn.core import quant as Q

    g, p, qm, buf, x = tfl_case(rng, per_channel=False)
    iq = I.load_tflite(buf).qmodel
    xq = iq.quantize_input(x)
    it = lt.Interpreter(model_content=buf, experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=lt.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    idx = {d["name"]: d["index"] for d in it.get_tensor_details()}
    tr = R.S8Trainer(iq)
    d = len(g.ops) - 1
    assert g.ops[d].kind == "dense" and g.ops[d].output == g.output
    s = iq.exp[g.output] - iq.exp[g.ops[d].inputs[0]] - iq.ew[d]
    differ = 0
    for xi in xq:
        it.set_tensor(it.get_input_details()[0]["index"], xi.reshape(1, 8, 8, 2))
        it.invoke()
        ours = tr.forward(xi).acts
        lite = [it.get_tensor(idx[f"t{t}"]).reshape(-1).astype(np.int64)
                for t in range(len(g.shapes))]
        for t in range(g.output):
            assert np.array_equal(lite[t], ours[t].reshape(-1)), t
        h = ours[g.ops[d].inputs[0]].reshape(-1) - iq.zp[g.ops[d].inputs[0]]
        acc = iq.w[d] @ h + Q.rshift_round(iq.b[d], iq.exp[g.ops[d].inputs[0]] + iq.ew[d]
                                           - iq.eb[d])
        # one rounding and two part only where the residue mod 2^s is a tie or one below
        near = np.isin(acc & ((1 << s) - 1), [(1 << (s - 1)) - 1, 1 << (s - 1)])
        once = np.clip(Q.rshift_round(acc, s), -128, 127) + iq.zp[g.output]
        assert np.array_equal(lite[g.output], once)
        mine = ours[g.output].reshape(-1)
        assert np.array_equal(mine[~near], once[~near])
        differ += int((mine != once).sum())
    assert differ > 0  # the case that tells the two apart occurred


@pytest.mark.parametrize("target", TARGETS)
def test_tflite_device_matches_numpy(target, rng):
    need("tflite")
    require_target(target)
    g, p, qm, buf, x = tfl_case(rng, per_channel=True)
    imp = I.load_tflite(buf)
    I.set_trainable(imp, last=2)
    xq = imp.qmodel.quantize_input(x[:6])
    dev = device_logits(export.export_s8(imp.qmodel), xq, target, "i1")
    assert np.array_equal(dev, s8_logits(imp.qmodel, xq))
    f32 = device_logits(export.export_f32(imp.graph, imp.params), x[:6], target, "<f4")
    tr = R.F32Trainer(imp.graph, imp.params)
    want = np.stack([tr.logits(v) for v in x[:6]])
    assert np.abs(f32 - want).max() <= 1e-5 * np.abs(want).max()


def test_tflite_per_channel_within_tolerance(rng):
    """A converter-style int8 model (per-channel weights, non-power-of-two scales): kilolearn
    re-quantises it; its logits stay within the quantisation tolerance of LiteRT's."""
    need("tflite")
    need("ai_edge_litert")
    g, p, qm, buf, x = tfl_case(rng, per_channel=True)
    imp = I.load_tflite(buf)
    iq = imp.qmodel
    assert "0 activation scale(s) kept" in imp.notes[-1]
    assert max(imp.weight_err.values()) < 0.05
    s_in, z_in = imp.tflite_io["input"]
    xt = np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8)
    tfl, _ = litert_logits(buf, xt, f"t{g.output}")
    sl, zl = imp.tflite_io["logits"]
    want = (tfl - zl) * sl
    got = dequant(iq, np.stack([R.S8Trainer(iq).logits(v) for v in iq.quantize_input(x)]),
                  iq.graph.output)
    f32 = R.F32Trainer(g, p)
    fl = np.stack([f32.logits(v) for v in x])
    top = np.abs(fl).max()
    e_tfl, e_kl = np.abs(want - fl).max() / top, np.abs(got - fl).max() / top
    # both are int8 approximations of the same float model: kilolearn's coarser (power-of-two)
    # scales may cost up to one bit per tensor, so allow twice TFLite's own error, plus 2 %
    assert e_kl <= 2 * e_tfl + 0.02, (e_kl, e_tfl)
    assert np.abs(got - want).max() / top < 0.1
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_tflite_unsupported_op_named(rng):
    need("tflite")
    from tflite.BuiltinOperator import BuiltinOperator as BO

    W = TFLiteWriter()
    a = W.tensor("in", [1, 4], scale=0.5, zp=0)
    b = W.tensor("swish_out", [1, 4], scale=0.5, zp=0)
    c = W.tensor("elu_out", [1, 4], scale=0.5, zp=0)
    W.op(BO.HARD_SWISH, [a], [b])
    W.op(BO.ELU, [b], [c])
    with pytest.raises(I.UnsupportedModel) as e:
        I.load_tflite(W.finish([a], [c]))
    assert "HARD_SWISH 'swish_out'" in str(e.value) and "ELU 'elu_out'" in str(e.value)
    assert "Supported TFLite ops: CONV_2D" in str(e.value)


# --------------------------------------------------------------------------- activation ops

#: the MLP of the activation tests: (units, TFLite activation op after the layer or None,
#: the layer's fused activation code); the last layer gives the logits
ACT_MLP = [(12, "LOGISTIC", 0), (10, "TANH", 0), (8, "LEAKY_RELU", 0), (8, "RELU6", 0),
           (6, None, 1), (4, None, 0)]


def act_mlp_tflite(rng, int8: bool, x: np.ndarray, alpha: float = 0.125) -> bytes:
    """A TFLite MLP 16-12-10-8-8-6-4 with stand-alone LOGISTIC, TANH, LEAKY_RELU and RELU6 ops
    and one fused RELU, float32 or int8 (a converter's scales from the float ranges on ``x``,
    TFLite's fixed output scales of LOGISTIC (1/256, -128) and TANH (1/128, 0))."""
    from tflite.BuiltinOperator import BuiltinOperator as BO
    from tflite.BuiltinOptions import BuiltinOptions as BOpt

    fns = {"LOGISTIC": lambda v: 1 / (1 + np.exp(-v)), "TANH": np.tanh, "RELU6":
           lambda v: np.clip(v, 0, 6), "LEAKY_RELU": lambda v: np.where(v < 0, alpha * v, v)}
    W = TFLiteWriter()
    dt = "int8" if int8 else "float32"
    layers, a, n_in = [], x.astype(np.float64), x.shape[1]
    for units, act, fused in ACT_MLP:  # the float model, and each tensor's range on x
        w = rng.normal(0, 1.2 / np.sqrt(n_in), (units, n_in))
        b = rng.normal(0, 0.2, units)
        pre = a @ w.T + b
        post = fns[act](pre) if act else np.maximum(pre, 0) if fused == 1 else pre
        layers.append((w, b, pre, post))
        a, n_in = post, units

    def q(v: np.ndarray) -> tuple[float, int]:
        lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
        s = (hi - lo) / 255
        return s, int(np.clip(np.round(-128 - lo / s), -128, 127))

    def tensor(name, shape, v, fixed=None):
        if not int8:
            return W.tensor(name, shape, dt)
        s, z = fixed or q(v)
        return W.tensor(name, shape, dt, scale=s, zp=z), s

    t = tensor("in", [1, x.shape[1]], x)
    cur, s_cur = t if int8 else (t, 1.0)
    for k, ((w, b, pre, post), (units, act, fused)) in enumerate(zip(layers, ACT_MLP,
                                                                         strict=True)):
        if int8:
            sw = np.abs(w).max(axis=1) / 127
            wt = W.tensor(f"w{k}", list(w.shape), "int8", np.round(w / sw[:, None]).astype(
                np.int8), scale=sw, zp=np.zeros(units, np.int64))
            bt = W.tensor(f"b{k}", [units], "int32", np.round(b / (s_cur * sw)).astype(
                np.int32), scale=s_cur * sw, zp=np.zeros(units, np.int64))
        else:
            wt = W.tensor(f"w{k}", list(w.shape), dt, w.astype(np.float32))
            bt = W.tensor(f"b{k}", [units], dt, b.astype(np.float32))
        y = tensor(f"fc{k}", [1, units], post if act is None else pre)
        y, s_y = y if int8 else (y, 1.0)
        W.op(BO.FULLY_CONNECTED, [cur, wt, bt], [y], BOpt.FullyConnectedOptions,
             dict(_cls="FullyConnectedOptions", FusedActivationFunction=fused), 4)
        if act is not None:
            fixed = {"LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0)}.get(act)
            z = tensor(f"{act.lower()}{k}", [1, units], post, fixed)
            z, s_y = z if int8 else (z, 1.0)
            if act == "LEAKY_RELU":
                W.op(BO.LEAKY_RELU, [y], [z], BOpt.LeakyReluOptions,
                     dict(_cls="LeakyReluOptions", Alpha=alpha), 2)
            else:
                W.op(getattr(BO, act), [y], [z], version=2)
            y = z
        cur, s_cur = y, s_y
    return W.finish([t[0] if int8 else t], [cur])


def litert_run(buf: bytes, xs: np.ndarray) -> np.ndarray:
    """The output of each sample in the LiteRT reference interpreter."""
    from ai_edge_litert import interpreter as lt

    it = lt.Interpreter(model_content=buf,
                        experimental_op_resolver_type=lt.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = []
    for v in xs:
        it.set_tensor(inp["index"], v.reshape(inp["shape"]).astype(inp["dtype"]))
        it.invoke()
        res.append(it.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(res)


def test_tflite_activation_ops_float_match_litert(rng):
    """LOGISTIC, TANH, LEAKY_RELU (alpha 1/8) and RELU6 ops become the activations
    of the fully connected ops before them; kilolearn's float32 forward pass equals LiteRT's on
    the same file."""
    need("tflite")
    need("ai_edge_litert")
    x = rng.uniform(-2, 2, (32, 16)).astype(np.float32)
    imp = I.load_tflite(act_mlp_tflite(rng, False, x))
    assert [(op.kind, op.act) for op in imp.graph.ops] == [
        ("dense", a) for a in ("sigmoid", "tanh", "leaky_relu", "relu6", "relu", "none")]
    want = litert_run(act_mlp_tflite(np.random.default_rng(7), False, x), x)
    imp = I.load_tflite(act_mlp_tflite(np.random.default_rng(7), False, x))
    tr = R.F32Trainer(imp.graph, imp.params)
    got = np.stack([tr.logits(v) for v in x])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("target", TARGETS)
def test_tflite_activation_ops_int8_on_device(target, rng):
    """The int8 file: the engine's logits = the numpy twin's bit for bit; both within the
    quantisation tolerance of LiteRT's int8 run of the same file (kilolearn's sigmoid and tanh
    tables use fixed pre-activation scales, docs/int8-training.md), and float32 on the engine
    = numpy."""
    need("tflite")
    require_target(target)
    x = rng.uniform(-2, 2, (24, 16)).astype(np.float32)
    buf = act_mlp_tflite(np.random.default_rng(11), True, x)
    imp = I.load_tflite(buf)
    iq = imp.qmodel
    assert [op.act for op in imp.graph.ops] == ["sigmoid", "tanh", "leaky_relu", "relu6",
                                                "relu", "none"]
    xq = iq.quantize_input(x)
    dev = device_logits(export.export_s8(iq), xq[:6], target, "i1")
    assert np.array_equal(dev, s8_logits(iq, xq[:6]))
    if target == "host":
        need("ai_edge_litert")
        s_in, z_in = imp.tflite_io["input"]
        s_out, z_out = imp.tflite_io["output"]
        xt = np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8)
        lite = (litert_run(buf, xt).astype(np.float64) - z_out) * s_out
        ours = dequant(iq, np.stack([R.S8Trainer(iq).logits(v) for v in xq]),
                       iq.graph.output)
        fl = litert_run(act_mlp_tflite(np.random.default_rng(11), False, x), x)
        top = np.abs(fl).max()
        e_lite, e_kl = np.abs(lite - fl).max() / top, np.abs(ours - fl).max() / top
        assert e_kl <= 2 * e_lite + 0.03, (e_kl, e_lite)  # measured: 0.043 vs 0.017
        assert (ours.argmax(1) == fl.argmax(1)).mean() >= 0.9
    f32 = I.load_tflite(act_mlp_tflite(np.random.default_rng(11), False, x))
    dev32 = device_logits(export.export_f32(f32.graph, f32.params), x[:6], target, "<f4")
    tr = R.F32Trainer(f32.graph, f32.params)
    want = np.stack([tr.logits(v) for v in x[:6]])
    assert np.abs(dev32 - want).max() <= 1e-5 * np.abs(want).max()


def test_tflite_activation_op_errors_name_the_node(rng):
    """Activation ops kilolearn cannot fold: one clear error naming the op, never a wrong
    model."""
    need("tflite")
    from tflite.BuiltinOperator import BuiltinOperator as BO
    from tflite.BuiltinOptions import BuiltinOptions as BOpt

    x = rng.uniform(-2, 2, (8, 16)).astype(np.float32)
    with pytest.raises(I.UnsupportedModel, match="LEAKY_RELU 'leaky_relu2'.*alpha 0.125.*0.2"):
        I.load_tflite(act_mlp_tflite(rng, False, x, alpha=0.2))

    def two_readers(first: str) -> bytes:  # in -> FC -> t; first(t) and ADD(t, first(t))
        W = TFLiteWriter()
        a = W.tensor("in", [1, 4], "float32")
        w = W.tensor("w", [4, 4], "float32", np.eye(4, dtype=np.float32))
        b = W.tensor("b", [4], "float32", np.zeros(4, np.float32))
        t = W.tensor("fc", [1, 4], "float32")
        u = W.tensor("act", [1, 4], "float32")
        o = W.tensor("out", [1, 4], "float32")
        W.op(BO.FULLY_CONNECTED, [a, w, b], [t], BOpt.FullyConnectedOptions,
             dict(_cls="FullyConnectedOptions", FusedActivationFunction=0), 4)
        W.op(getattr(BO, first), [t], [u], version=2)
        W.op(BO.ADD, [t, u], [o], BOpt.AddOptions, dict(_cls="AddOptions",
                                                       FusedActivationFunction=0), 2)
        return W.finish([a], [o])

    for op in ("LOGISTIC", "RELU"):
        with pytest.raises(I.UnsupportedModel, match=f"{op} 'act' must follow.*only reader"):
            I.load_tflite(two_readers(op))
    W = TFLiteWriter()  # an activation on the model's input: nothing to fold it into
    a = W.tensor("in", [1, 4], "float32")
    u = W.tensor("act", [1, 4], "float32")
    W.op(BO.TANH, [a], [u], version=2)
    with pytest.raises(I.UnsupportedModel, match="TANH 'act' must follow"):
        I.load_tflite(W.finish([a], [u]))
