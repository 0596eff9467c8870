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
    b = W.tensor("tanh_out", [1, 4], scale=0.5, zp=0)
    c = W.tensor("logistic_out", [1, 4], scale=0.5, zp=0)
    W.op(BO.TANH, [a], [b])
    W.op(BO.LOGISTIC, [b], [c])
    with pytest.raises(I.UnsupportedModel) as e:
        I.load_tflite(W.finish([a], [c]))
    assert "TANH 'tanh_out'" in str(e.value) and "LOGISTIC 'logistic_out'" in str(e.value)
    assert "Supported TFLite ops: CONV_2D" in str(e.value)
