"""Conv1D and its depthwise form for time series (issue 20): lowered to 1 x k Conv2D ops on
(1, T, C) tensors, so the same kernels run them. The lowering against a direct 1-D convolution
written with numpy loops; the engine against the twin on the host and the emulated
Cortex-M3/M4/M7/M33 (float32 to 1e-5, int8 bit for bit); ONNX import of Sigmoid, Tanh and
LeakyRelu against onnxruntime and on the device."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import QEMU_BOARDS, require_target, run_job, split_target
from import_helpers import device_logits, need

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export
from kilolearn.formats import importer as I

TARGETS = ["host", "host-asan"] + QEMU_BOARDS


def ts_net() -> M.Model:
    return M.Model([M.Input((1, 24, 6)), M.Conv1D(8, 5), M.ReLU(),
                    M.DepthwiseConv1D(3, 2, "valid"), M.Tanh(), M.Conv1D(6, 3, 2, "valid"),
                    M.LeakyReLU(), M.GlobalAvgPool(), M.Dense(4), M.SoftmaxCrossEntropy()])


def conv1d_direct(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: tuple[int, int]
                  ) -> np.ndarray:
    """x (T, C), w (F, k, C) -> (T', F): a plain 1-D convolution (cross-correlation)."""
    xp = np.pad(x, ((pad[0], pad[1]), (0, 0)))
    k = w.shape[1]
    n = (len(xp) - k) // stride + 1
    return np.array([[np.sum(xp[t * stride:t * stride + k] * w[f]) + b[f]
                      for f in range(w.shape[0])] for t in range(n)])


def test_conv1d_lowering_is_a_1d_convolution(rng):
    m = ts_net()
    g = m.graph
    assert g.ops[0].kernel == (1, 5) and g.ops[0].pad == (0, 2, 0, 2)
    assert g.shapes[g.ops[0].output] == (1, 24, 8) and g.shapes[g.ops[1].output] == (1, 11, 8)
    p = m.init(1)
    x = rng.normal(0, 1, (1, 24, 6)).astype(np.float32)
    acts = R.F32Trainer(g, p).forward(x, dtype=np.float64)
    w0 = p.weights[0][:, 0].astype(np.float64)  # (F, 1, k, C) -> (F, k, C)
    want = np.maximum(conv1d_direct(x[0].astype(np.float64), w0, p.biases[0], 1, (2, 2)), 0)
    np.testing.assert_allclose(acts[g.ops[0].output][0], want, rtol=1e-12, atol=1e-12)
    wd = p.weights[1][0].astype(np.float64)  # depthwise (1, k, C) -> per channel
    h = acts[g.ops[0].output][0]
    dw = np.stack([conv1d_direct(h[:, [c]], wd[None, :, [c]], p.biases[1][[c]], 2, (0, 0))[:, 0]
                   for c in range(8)], 1)
    np.testing.assert_allclose(acts[g.ops[1].output][0], np.tanh(dw), rtol=1e-12, atol=1e-12)
    with pytest.raises(M.ModelError, match=r"\(1, T, C\)"):
        M.Model([M.Input((4, 4, 2)), M.Conv1D(2, 3), M.Flatten(), M.Dense(2),
                 M.SoftmaxCrossEntropy()])


@pytest.mark.parametrize("target", TARGETS)
def test_conv1d_engine_matches_numpy(target, rng):
    require_target(target)
    board, asan = split_target(target)
    m = ts_net()
    g = m.graph
    p = m.init(2)
    x = rng.normal(0, 1, (12,) + g.shapes[g.input]).astype(np.float32)
    y = rng.integers(0, 4, 12)
    rep = runner.run_job(job.build(export.export_f32(g, p), x, y, cmd=job.CMD_GRADS, n_steps=3,
                                   lr=0.05, dump_weights=True), board, sanitize=asan)
    ref = R.F32Trainer(g, p, lr=0.05)
    for s in range(3):
        dws, dbs, _ = ref.grads(x[s], int(y[s]))
        for i, op in enumerate(g.ops):
            if op.trainable and dws[i] is not None:
                got = rep.dump(f"g{i:02d}w", "<f4", s).reshape(dws[i].shape)
                assert np.linalg.norm(got - dws[i]) <= 1e-5 * np.linalg.norm(dws[i]), (s, i)
        ref.apply(dws, dbs)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    rep = run_job(job.build(export.export_s8(qm), xq, y, lr=0.2, seed=3, epochs=2,
                            dump_weights=True), target)
    tw = R.S8Trainer(qm, lr=0.2, seed=3)
    R.train_in_order(tw, xq, y, 2)
    for i, op in enumerate(g.ops):
        if op.has_params:
            assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(tw.m.w[i].shape),
                                  tw.m.w[i]), i


def onnx_acts_mlp(rng, alpha: float = 0.125):
    from onnx import TensorProto, helper, numpy_helper

    f = lambda n, a: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    dims = [10, 8, 8, 6, 3]
    inits, nodes, cur = [], [], "x"
    acts = ["Sigmoid", "Tanh", "LeakyRelu", None]
    for k in range(4):
        inits += [f(f"w{k}", rng.normal(0, 0.6, (dims[k + 1], dims[k]))),
                  f(f"b{k}", rng.normal(0, 0.2, dims[k + 1]))]
        nodes.append(helper.make_node("Gemm", [cur, f"w{k}", f"b{k}"], [f"g{k}"], name=f"fc{k}",
                                      transB=1))
        cur = f"g{k}"
        if acts[k]:
            kw = {"alpha": alpha} if acts[k] == "LeakyRelu" else {}
            nodes.append(helper.make_node(acts[k], [cur], [f"a{k}"], name=f"act{k}", **kw))
            cur = f"a{k}"
    return helper.make_model(helper.make_graph(
        nodes, "acts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", 3])], inits),
        opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_onnx_import_of_the_new_activations(target, rng):
    need("onnx")
    need("onnxruntime")
    require_target(target)
    from test_import_onnx import ort_run

    m = onnx_acts_mlp(rng)
    imp = I.load_onnx(m)
    assert [op.act for op in imp.graph.ops] == ["sigmoid", "tanh", "leaky_relu", "none"]
    x = rng.normal(0, 1, (6, 10)).astype(np.float32)
    want = ort_run(m, x)
    tr = R.F32Trainer(imp.graph, imp.params)
    np.testing.assert_allclose(np.stack([tr.logits(v) for v in x]), want, rtol=1e-4, atol=1e-5)
    got = device_logits(export.export_f32(imp.graph, imp.params), x, target, "<f4")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(I.UnsupportedModel, match="alpha"):
        I.load_onnx(onnx_acts_mlp(rng, alpha=0.01))
