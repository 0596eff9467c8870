"""kilolearn import, ONNX: models built here with onnx.helper (and PyTorch's exporter when
installed) give the same outputs in kilolearn's numpy reference and on the engine (host, QEMU
M4) as in onnxruntime; an imported MobileNet-class model fine-tunes on the emulated M4 on
classes it never saw; `kilolearn import` writes blobs from ONNX and TFLite files. The TFLite
tests are in test_import_tflite.py, the builders both use in import_helpers.py.
docs/import.md explains the tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_target
from import_helpers import TARGETS, dequant, device_logits, need, onnx_cnn, s8_logits, tfl_case

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export
from kilolearn.formats import importer as I


def ort_run(model, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """onnxruntime outputs per sample; ``output`` taps an intermediate tensor (the logits)."""
    import onnx
    import onnxruntime as ort

    if output is not None:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output[0].name = output
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


# --------------------------------------------------------------------------- ONNX tests


def test_onnx_cnn_round_trip_numpy(rng):
    need("onnx")
    need("onnxruntime")
    m = onnx_cnn(rng)
    imp = I.load_onnx(m)
    g = imp.graph
    assert [op.kind for op in g.ops] == ["conv", "maxpool", "dwconv", "conv", "add", "conv",
                                         "dense"]
    assert [op.act for op in g.ops] == ["relu", "none", "relu6", "none", "relu", "relu", "none"]
    assert any("CHW to HWC" in n for n in imp.notes) and any("3 BatchNorm" in n for n in imp.notes)
    x = rng.uniform(0, 1, (16, 2, 8, 8)).astype(np.float32)
    want = ort_run(m, x, "fc")
    tr = R.F32Trainer(g, imp.params)
    got = np.stack([tr.logits(v) for v in imp.to_hwc(x)])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    prob = ort_run(m, x)  # the dropped Softmax is only a monotone map of the logits
    assert np.array_equal(prob.argmax(1), got.argmax(1))


@pytest.mark.parametrize("target", TARGETS)
def test_onnx_cnn_round_trip_device(target, rng):
    """float32 on the device equals onnxruntime to 1e-4; int8 (quantize_model) equals numpy bit
    for bit and onnxruntime within the quantisation error."""
    need("onnx")
    need("onnxruntime")
    require_target(target)
    m = onnx_cnn(rng)
    imp = I.load_onnx(m)
    I.set_trainable(imp, last=1)
    g = imp.graph
    x = rng.uniform(0, 1, (8, 2, 8, 8)).astype(np.float32)
    want = ort_run(m, x, "fc")
    xh = imp.to_hwc(x)
    got = device_logits(export.export_f32(g, imp.params), xh, target, "<f4")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

    calib = imp.to_hwc(rng.uniform(0, 1, (64, 2, 8, 8)).astype(np.float32))
    qm = R.quantize_model(g, imp.params, calib)
    xq = qm.quantize_input(xh)
    dev = device_logits(export.export_s8(qm), xq, target, "i1")
    ref = s8_logits(qm, xq)
    assert np.array_equal(dev, ref)
    deq = dequant(qm, ref, g.output)
    err = np.abs(deq - want).max() / np.abs(want).max()
    assert err < 0.12, err  # 7 requantised layers, power-of-two scales (docs/import.md)
    assert (deq.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_onnx_matmul_reshape_mlp(rng):
    """(N, features) input, MatMul + Add bias + Relu, Reshape, Dropout/Identity, Gemm with
    transB=0."""
    need("onnx")
    need("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    w1, b1 = rng.normal(0, 0.5, (10, 16)), rng.normal(0, 0.1, 16)
    w2, b2 = rng.normal(0, 0.5, (16, 3)), rng.normal(0, 0.1, 3)
    f = lambda n, a: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    ints = [f("w1", w1), f("b1", b1), f("w2", w2), f("b2", b2),
            numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "b1"], ["h"], name="bias"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["d"], name="drop"),
             helper.make_node("Reshape", ["d", "shape"], ["rs"], name="rs"),
             helper.make_node("Identity", ["rs"], ["id"], name="id"),
             helper.make_node("Gemm", ["id", "w2", "b2"], ["y"], name="fc")]
    m = helper.make_model(helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], ints),
        opset_imports=[helper.make_opsetid("", 13)])
    imp = I.load_onnx(m)
    assert [(op.kind, op.act) for op in imp.graph.ops] == [("dense", "relu"), ("dense", "none")]
    x = rng.normal(0, 1, (5, 10)).astype(np.float32)
    tr = R.F32Trainer(imp.graph, imp.params)
    got = np.stack([tr.logits(v) for v in x])
    np.testing.assert_allclose(got, ort_run(m, x), rtol=1e-4, atol=1e-5)


def test_onnx_unsupported_ops_named_in_one_error(rng):
    need("onnx")
    from onnx import TensorProto, helper

    m = onnx_cnn(rng)
    nodes = list(m.graph.node)
    nodes[2] = helper.make_node("Softsign", ["bn1"], ["r1"], name="my_softsign")
    nodes.insert(4, helper.make_node("LRN", ["p1"], ["p1n"], name="my_lrn", size=3))
    g = helper.make_graph(nodes, "bad", list(m.graph.input), list(m.graph.output),
                          list(m.graph.initializer))
    with pytest.raises(I.UnsupportedModel) as e:
        I.load_onnx(helper.make_model(g))
    msg = str(e.value)
    assert "Softsign 'my_softsign'" in msg and "LRN 'my_lrn'" in msg and "2 unsupported" in msg
    assert "Supported ONNX ops: Conv, BatchNormalization" in msg
    # structural limits are named too: a BatchNormalization whose conv output has two users
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    with pytest.raises(I.UnsupportedModel, match="Clip 'c'"):
        bad = helper.make_node("Clip", ["x", "zero", "six"], ["c"], name="c")
        I.load_onnx(helper.make_model(helper.make_graph([bad], "g", [x], [x])))


def test_bn_fold_is_checked():
    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 1, (4, 3, 3, 2)).astype(np.float32), np.zeros(4, np.float32)
    c = np.ones(4)
    wf, bf, err = I._fold_bn(w, b, "conv", c * 2, c, c * 0.5, c * 3, 1e-5, "bn", rng)
    assert err < 1e-6 and np.allclose(wf, w * 2 / np.sqrt(3 + 1e-5))
    with pytest.raises(I.UnsupportedModel, match="degenerate"):
        I._fold_bn(w, b, "conv", c * 1e30, c, c, c * 0, 0.0, "bn", rng)


def test_train_selection():
    imp = I.Imported(M.mlp([4, 8, 8, 3]).graph, M.mlp([4, 8, 8, 3]).init(0), "onnx",
                     ["a", "b", "c"])
    assert I.set_trainable(imp, last=2) == [1, 2]
    assert I.set_trainable(imp) == [0, 1, 2]
    assert I.set_trainable(imp, what="none") == []
    assert I.set_trainable(imp, last=1, what="bias") == [2]
    assert [(op.trainable, op.bias_only) for op in imp.graph.ops] == \
        [(False, False), (False, False), (True, True)]
    with pytest.raises(I.UnsupportedModel, match="expected"):
        I.set_trainable(imp, what="weights")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter
def test_torch_export_round_trip(rng):
    """PyTorch → ONNX (TorchScript exporter, BatchNorm kept) → kilolearn, against torch."""
    torch = need("torch")
    need("onnx")
    import io

    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Conv2d(8, 12, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4))
    for mod in net:
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    net.eval()
    buf = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), buf, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    imp = I.load_onnx(buf.getvalue())
    assert [op.kind for op in imp.graph.ops] == ["conv", "dwconv", "avgpool", "conv", "avgpool",
                                                 "dense"]
    x = rng.uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    tr = R.F32Trainer(imp.graph, imp.params)
    got = np.stack([tr.logits(v) for v in imp.to_hwc(x)])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


# --------------------------------------------------------------------------- fine-tuning


def to_onnx_with_bn(g: M.Graph, p: M.Params, rng):
    """A sequential kilolearn graph as an NCHW ONNX model, each conv split back into
    Conv + BatchNormalization (random statistics, same function) + Clip/Relu."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    cur = "x"
    for i, op in enumerate(g.ops):
        y = f"op{i}"
        if op.kind in ("conv", "dwconv"):
            w = p.weights[i].astype(np.float64)
            if op.kind == "conv":
                w, group = w.transpose(0, 3, 1, 2), 1
            else:
                w, group = w.transpose(2, 0, 1)[:, None], w.shape[2]
            c = len(w)
            gamma, var = rng.uniform(0.5, 2, c), rng.uniform(0.5, 2, c)
            mean, b0 = rng.normal(0, 0.3, c), rng.normal(0, 0.1, c)
            s = gamma / np.sqrt(var + 1e-5)
            beta = p.biases[i] - (b0 - mean) * s
            t, left, bt, r = op.pad
            nodes.append(helper.make_node(
                "Conv", [cur, const(y + "w", w / s.reshape(-1, 1, 1, 1)), const(y + "b", b0)],
                [y + "c"], name=y + "_conv", group=group, kernel_shape=list(op.kernel),
                strides=[op.stride] * 2, pads=[t, left, bt, r]))
            nodes.append(helper.make_node(
                "BatchNormalization", [y + "c", const(y + "g", gamma), const(y + "be", beta),
                                       const(y + "m", mean), const(y + "v", var)],
                [y], name=y + "_bn", epsilon=1e-5))
        elif op.kind == "avgpool":
            nodes.append(helper.make_node("GlobalAveragePool", [cur], [y + "p"], name=y))
            nodes.append(helper.make_node("Flatten", [y + "p"], [y], name=y + "_flat"))
        else:
            assert op.kind == "dense"
            nodes.append(helper.make_node("Gemm", [cur, const(y + "w", p.weights[i]),
                                                   const(y + "b", p.biases[i])], [y], name=y,
                                          transB=1))
        cur = y
        if op.act != "none":
            nodes.append(helper.make_node(
                "Clip" if op.act == "relu6" else "Relu",
                [cur] + ([const(y + "lo", 0.0), const(y + "hi", 6.0)] if op.act == "relu6"
                         else []), [y + "a"], name=y + "_act"))
            cur = y + "a"
    h, w, c = g.shapes[g.input]
    return helper.make_model(helper.make_graph(
        nodes, "mobilenet", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, c, h, w])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, g.n_classes])], inits),
        opset_imports=[helper.make_opsetid("", 13)])


def tiny_mobilenet(classes: int) -> M.Model:
    """MobileNetV1-class: conv, then depthwise-separable blocks (one strided), GAP, dense."""
    return M.Model([M.Input((8, 8, 1)), M.Conv2D(8, 3), M.BatchNorm(), M.ReLU6(),
                    M.DepthwiseConv2D(3), M.BatchNorm(), M.ReLU6(), M.Conv2D(16, 1),
                    M.BatchNorm(), M.ReLU6(), M.DepthwiseConv2D(3, 2), M.BatchNorm(), M.ReLU6(),
                    M.Conv2D(24, 1), M.BatchNorm(), M.ReLU6(), M.GlobalAvgPool(), M.Dense(classes),
                    M.SoftmaxCrossEntropy()])


def test_imported_mobilenet_finetunes_on_m4(digits):
    """Pretrained (numpy, float) on digits 0-4, written as ONNX with BatchNorm, imported, then
    fine-tuned int8 on the emulated M4 on digits 5-9, classes it never saw (the head's 5
    outputs are re-used for them), only the last pointwise conv and the classifier training
    (measured: 29.9 % before, 79.3 % after 5 epochs)."""
    need("onnx")
    require_target("mps2-an386")
    rng = np.random.default_rng(7)
    old_tr, old_te = digits.y_train < 5, digits.y_test < 5
    m = tiny_mobilenet(5)
    base = R.F32Trainer(m.graph, m.init(2), lr=0.05)
    for _ in range(6):
        for i in rng.permutation(np.flatnonzero(old_tr)):
            base.step(digits.x_train[i], int(digits.y_train[i]))
    base_acc = (base.predict(digits.x_test[old_te]) == digits.y_test[old_te]).mean()
    onx = to_onnx_with_bn(m.graph, base.p, rng)
    imp = I.load_onnx(onx)
    assert I.set_trainable(imp, last=2) == [4, 6] and len(imp.graph.ops) == 7
    x_img = digits.x_train.reshape(-1, 1, 8, 8)  # NCHW, as the ONNX model takes it
    tr_new, te_new = ~old_tr, digits.y_test >= 5
    xtr, ytr = imp.to_hwc(x_img[tr_new]), digits.y_train[tr_new] - 5
    xte = imp.to_hwc(digits.x_test.reshape(-1, 1, 8, 8)[te_new])
    yte = digits.y_test[te_new] - 5
    qm = R.quantize_model(imp.graph, imp.params, xtr[:200])
    xq_tr, xq_te = qm.quantize_input(xtr), qm.quantize_input(xte)
    epochs, lr = 5, 0.1
    ref = R.S8Trainer(qm, lr=lr, seed=3)
    before = float((ref.predict(xq_te) == yte).mean())
    rep = runner.run_job(job.build(export.export_s8(qm), xq_tr, ytr, xq_te, yte, lr=lr, seed=3,
                                   epochs=epochs), "mps2-an386", timeout=600)
    R.train_in_order(ref, xq_tr, ytr, epochs)
    dev = [e["test_correct"] / e["n_test"] for e in rep.records["epoch"]]
    numpy_acc = float((ref.predict(xq_te) == yte).mean())
    print(f"\nimported MobileNet-class: base (digits 0-4, float) {base_acc:.1%}; new classes "
          f"5-9 before {before:.1%}, after {epochs} epochs on QEMU M4 "
          f"{' / '.join(f'{a:.1%}' for a in dev)} (numpy {numpy_acc:.1%}), "
          f"{len(xq_tr)} samples, {rep.records['epoch'][-1]['train_insn'] // len(xq_tr):,} "
          f"insn/sample, arena {rep.one('done')['arena_peak']} B")
    assert base_acc > 0.85
    assert before < 0.5 and dev[-1] > 0.7
    assert dev[-1] == pytest.approx(numpy_acc, abs=1e-9)  # bit-exact twin


def test_cli_import(tmp_path, rng, capsys):
    need("onnx")
    need("tflite")
    from kilolearn import cli

    path = tmp_path / "cnn.onnx"
    path.write_bytes(onnx_cnn(rng).SerializeToString())
    assert cli.main(["import", str(path), "--train-last", "2", "--dtype", "s8"]) == 0
    b = export.read((tmp_path / "cnn.klm").read_bytes())
    assert b.dtype == export.DTYPE_S8 and [op.trainable for op in b.graph.ops] == \
        [False] * 5 + [True] * 2
    assert "fused 3 BatchNormalization" in capsys.readouterr().out
    assert cli.main(["import", str(path), "--train-last", "1", "--train", "bias"]) == 0
    b = export.read((tmp_path / "cnn.klm").read_bytes())
    assert [(op.trainable, op.bias_only) for op in b.graph.ops] == \
        [(False, False)] * 6 + [(True, True)]
    capsys.readouterr()
    g, p, qm, buf, x = tfl_case(rng, per_channel=False)
    (tmp_path / "m.tflite").write_bytes(buf)
    assert cli.main(["import", str(tmp_path / "m.tflite"), "-o", str(tmp_path / "t.klm")]) == 0
    assert np.array_equal(export.read((tmp_path / "t.klm").read_bytes()).qmodel.w[0], qm.w[0])
