"""kilolearn import: ONNX and TFLite models built here with the packages' own builders
(onnx.helper, the `tflite` package's flatbuffer builders, PyTorch's exporter when installed) give
the same outputs in kilolearn's numpy reference and on the engine (host, QEMU M4) as in
onnxruntime / the LiteRT (TFLite) reference interpreter; an imported MobileNet-class model
fine-tunes on the emulated M4 on classes it never saw. docs/import.md explains the tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_target

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export
from kilolearn.formats import importer as I

TARGETS = ["host", "mps2-an386"]


def _need(mod: str):
    return pytest.importorskip(mod, reason=f"{mod} not installed (pip install -e '.[test]')")


def device_logits(blob: bytes, x: np.ndarray, target: str, dtype: str) -> np.ndarray:
    """Logits of each sample as the engine computes them (a gradient job with lr 0)."""
    rep = runner.run_job(job.build(blob, x, np.zeros(len(x), np.int64), cmd=job.CMD_GRADS,
                                   n_steps=len(x), lr=0.0), target)
    return np.stack([rep.dump("logits", dtype, s) for s in range(len(x))])


def s8_logits(qm: R.QModel, xq: np.ndarray) -> np.ndarray:
    """The numpy twin of device_logits (same steps: exponents may grow on saturation)."""
    tr = R.S8Trainer(qm, lr=0.0)
    out = []
    for x in xq:
        tr.apply(tr.grads(x, 0))
        out.append(tr._fw.acts[qm.graph.output].reshape(-1))
    return np.stack(out)


def dequant(qm: R.QModel, v: np.ndarray, t: int) -> np.ndarray:
    return (v.astype(np.float64) - qm.zp[t]) * 2.0 ** qm.exp[t]


# --------------------------------------------------------------------------- ONNX builders


def onnx_cnn(rng, bn_stats: bool = True):
    """NCHW (1, 2, 8, 8): Conv+BN+Relu, MaxPool, depthwise Conv+BN+Clip(0,6), Conv1x1+BN, Add
    (residual)+Relu, strided SAME_UPPER Conv+Relu, Flatten (CHW order), Gemm, Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    def conv(x, y, cin, cout, k, group=1, **kw):
        w = rng.normal(0, np.sqrt(2.0 / (k * k * cin / group)), (cout, cin // group, k, k))
        nodes.append(helper.make_node("Conv", [x, const(y + "_w", w),
                                               const(y + "_b", rng.normal(0, 0.1, cout))],
                                      [y], name=y, group=group, kernel_shape=[k, k], **kw))
        return y

    def bn(x, y, c):
        g, b = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c)
        mu, var = rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)
        nodes.append(helper.make_node("BatchNormalization", [x, const(y + "_g", g),
                                      const(y + "_be", b), const(y + "_m", mu),
                                      const(y + "_v", var)], [y], name=y, epsilon=1e-5))
        return y

    a = conv("x", "c1", 2, 8, 3, pads=[1, 1, 1, 1])
    a = bn(a, "bn1", 8)
    nodes.append(helper.make_node("Relu", [a], ["r1"], name="r1"))
    nodes.append(helper.make_node("MaxPool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2],
                                  strides=[2, 2]))
    h = bn(conv("p1", "dw", 8, 8, 3, group=8, pads=[1, 1, 1, 1]), "bn2", 8)
    nodes.append(helper.make_node("Clip", [h, const("zero", 0.0), const("six", 6.0)], ["r2"],
                                  name="r2"))
    h = bn(conv("r2", "pw", 8, 8, 1), "bn3", 8)
    nodes.append(helper.make_node("Add", ["p1", h], ["add"], name="add"))
    nodes.append(helper.make_node("Relu", ["add"], ["r3"], name="r3"))
    conv("r3", "c4", 8, 6, 3, strides=[2, 2], auto_pad="SAME_UPPER")
    nodes.append(helper.make_node("Relu", ["c4"], ["r4"], name="r4"))
    nodes.append(helper.make_node("Flatten", ["r4"], ["flat"], name="flat", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc_w", rng.normal(0, 0.3, (5, 24))),
                                           const("fc_b", rng.normal(0, 0.1, 5))], ["fc"],
                                  name="fc", transB=1))
    nodes.append(helper.make_node("Softmax", ["fc"], ["prob"], name="softmax", axis=1))
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 2, 8, 8])], [helper.make_tensor_value_info(
            "prob", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


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
    _need("onnx")
    _need("onnxruntime")
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
    _need("onnx")
    _need("onnxruntime")
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
    _need("onnx")
    _need("onnxruntime")
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
    _need("onnx")
    from onnx import TensorProto, helper

    m = onnx_cnn(rng)
    nodes = list(m.graph.node)
    nodes[2] = helper.make_node("Sigmoid", ["bn1"], ["r1"], name="my_sigmoid")
    nodes.insert(4, helper.make_node("LRN", ["p1"], ["p1n"], name="my_lrn", size=3))
    g = helper.make_graph(nodes, "bad", list(m.graph.input), list(m.graph.output),
                          list(m.graph.initializer))
    with pytest.raises(I.UnsupportedModel) as e:
        I.load_onnx(helper.make_model(g))
    msg = str(e.value)
    assert "Sigmoid 'my_sigmoid'" in msg and "LRN 'my_lrn'" in msg and "2 unsupported" in msg
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
    torch = _need("torch")
    _need("onnx")
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


# --------------------------------------------------------------------------- TFLite builder


class TFLiteWriter:
    """A TFLite flatbuffer made with the `tflite` package's generated builders."""

    def __init__(self):
        self.tensors: list[dict] = []
        self.ops: list[tuple] = []
        self.buffers: list[bytes] = [b""]

    def tensor(self, name, shape, dtype="int8", data=None, scale=None, zp=None, qdim=0):
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), dtype=dtype, buf=buf,
                                 scale=None if scale is None else np.atleast_1d(scale),
                                 zp=None if zp is None else np.atleast_1d(zp), qdim=qdim))
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, opt_type=0, opts=None, version=1):
        self.ops.append((code, inputs, outputs, opt_type, opts or {}, version))

    def finish(self, inputs, outputs) -> bytes:
        import importlib

        import flatbuffers
        from tflite.TensorType import TensorType

        def mod(name):  # the generated module (the package exports the classes by the name)
            return importlib.import_module(f"tflite.{name}")

        Buffer, Model, Operator, OperatorCode, QuantizationParameters, SubGraph, Tensor = (
            mod(n) for n in ("Buffer", "Model", "Operator", "OperatorCode",
                             "QuantizationParameters", "SubGraph", "Tensor"))

        b = flatbuffers.Builder(1024)
        types = {"int8": TensorType.INT8, "int32": TensorType.INT32,
                 "float32": TensorType.FLOAT32}

        def vec(start, items, prepend):
            start(b, len(items))
            for it in reversed(items):
                prepend(it)
            return b.EndVector()

        bufs = []
        for data in self.buffers:
            d = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
            Buffer.Start(b)
            if d is not None:
                Buffer.AddData(b, d)
            bufs.append(Buffer.End(b))
        tens = []
        for t in self.tensors:
            name = b.CreateString(t["name"])
            shape = b.CreateNumpyVector(np.array(t["shape"], np.int32))
            qp = None
            if t["scale"] is not None:
                sc = b.CreateNumpyVector(t["scale"].astype(np.float32))
                zp = b.CreateNumpyVector(t["zp"].astype(np.int64))
                QuantizationParameters.Start(b)
                QuantizationParameters.AddScale(b, sc)
                QuantizationParameters.AddZeroPoint(b, zp)
                QuantizationParameters.AddQuantizedDimension(b, t["qdim"])
                qp = QuantizationParameters.End(b)
            Tensor.Start(b)
            Tensor.AddShape(b, shape)
            Tensor.AddType(b, types[t["dtype"]])
            Tensor.AddBuffer(b, t["buf"])
            Tensor.AddName(b, name)
            if qp is not None:
                Tensor.AddQuantization(b, qp)
            tens.append(Tensor.End(b))
        codes = sorted({(o[0], o[5]) for o in self.ops})
        code_idx = {c: i for i, c in enumerate(codes)}
        ops = []
        for code, ins, outs, opt_type, opts, ver in self.ops:
            opt = None
            if opt_type:
                mod_ = mod(opts.pop("_cls"))
                mod_.Start(b)
                for k, v in opts.items():
                    getattr(mod_, "Add" + k)(b, v)
                opt = mod_.End(b)
            iv = b.CreateNumpyVector(np.array(ins, np.int32))
            ov = b.CreateNumpyVector(np.array(outs, np.int32))
            Operator.Start(b)
            Operator.AddOpcodeIndex(b, code_idx[(code, ver)])
            Operator.AddInputs(b, iv)
            Operator.AddOutputs(b, ov)
            if opt is not None:
                Operator.AddBuiltinOptionsType(b, opt_type)
                Operator.AddBuiltinOptions(b, opt)
            ops.append(Operator.End(b))
        tv = vec(SubGraph.StartTensorsVector, tens, b.PrependUOffsetTRelative)
        iv = b.CreateNumpyVector(np.array(inputs, np.int32))
        ov = b.CreateNumpyVector(np.array(outputs, np.int32))
        opv = vec(SubGraph.StartOperatorsVector, ops, b.PrependUOffsetTRelative)
        SubGraph.Start(b)
        SubGraph.AddTensors(b, tv)
        SubGraph.AddInputs(b, iv)
        SubGraph.AddOutputs(b, ov)
        SubGraph.AddOperators(b, opv)
        sg = SubGraph.End(b)
        ocs = []
        for code, ver in codes:
            OperatorCode.Start(b)
            OperatorCode.AddDeprecatedBuiltinCode(b, min(code, 127))
            OperatorCode.AddBuiltinCode(b, code)
            OperatorCode.AddVersion(b, ver)
            ocs.append(OperatorCode.End(b))
        ocv = vec(Model.StartOperatorCodesVector, ocs, b.PrependUOffsetTRelative)
        sgv = vec(Model.StartSubgraphsVector, [sg], b.PrependUOffsetTRelative)
        bv = vec(Model.StartBuffersVector, bufs, b.PrependUOffsetTRelative)
        desc = b.CreateString("kilolearn test")
        Model.Start(b)
        Model.AddVersion(b, 3)
        Model.AddOperatorCodes(b, ocv)
        Model.AddSubgraphs(b, sgv)
        Model.AddBuffers(b, bv)
        Model.AddDescription(b, desc)
        b.Finish(Model.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def tfl_net() -> M.Model:
    """The test network as a kilolearn model (the TFLite file is written from it)."""
    x = M.Node(M.Input((8, 8, 2)), [])
    a = M.Conv2D(8, 3, activation="relu")(x)
    h = M.DepthwiseConv2D(3, activation="relu6")(a)
    h = M.Conv2D(8, 1)(h)
    r = M.Add(activation="relu")([a, h])
    p = M.GlobalAvgPool()(M.MaxPool2D(2)(r))
    return M.Model(M.SoftmaxCrossEntropy()(M.Dense(4)(M.Flatten()(p))))


def write_tflite(g: M.Graph, params: M.Params, qm: R.QModel, per_channel: bool,
                 calib: np.ndarray) -> bytes:
    """int8 TFLite of graph ``g``. per_channel=False: every scale is qm's power of two
    (kilolearn's own convention); True: what a converter writes — per-channel weight scales
    max|w|/127, activation scales and zero points from the float ranges on ``calib``."""
    from tflite.BuiltinOperator import BuiltinOperator as BO
    from tflite.BuiltinOptions import BuiltinOptions as BOpt

    W = TFLiteWriter()
    tq: dict[int, tuple[float, int]] = {}
    if per_channel:  # a converter's tight ranges, from the float model on calibration data
        acts = [R.F32Trainer(g, params).forward(v) for v in calib]
        lo = [min(float(a[t].min()) for a in acts) for t in range(len(g.shapes))]
        hi = [max(float(a[t].max()) for a in acts) for t in range(len(g.shapes))]
    for t in range(len(g.shapes)):
        s, z = 2.0 ** qm.exp[t], qm.zp[t]
        if per_channel:
            lo_t, hi_t = min(lo[t], 0.0), max(hi[t], 0.0)
            s = (hi_t - lo_t) / 255
            z = int(np.clip(np.round(-128 - lo_t / s), -128, 127))
        tq[t] = (s, z)
    ids = {}
    for t, shp in enumerate(g.shapes):
        shape = [1, *shp] if t == g.input or g.ops[[o.output for o in g.ops].index(t)].kind \
            != "dense" else [1, shp[2]]
        ids[t] = W.tensor(f"t{t}", shape, scale=tq[t][0], zp=tq[t][1])
    for i, op in enumerate(g.ops):
        x, y = ids[op.inputs[0]], ids[op.output]
        sx = tq[op.inputs[0]][0]
        act = {"none": 0, "relu": 1, "relu6": 3}[op.act]
        if op.has_params:
            wf = params.weights[i].astype(np.float64)
            if per_channel:
                ch = wf.reshape(-1, wf.shape[-1]) if op.kind == "dwconv" else \
                    wf.reshape(len(wf), -1).T
                sw = np.abs(ch).max(axis=0) / 127
                wq = np.round(wf / (sw if op.kind == "dwconv" else
                                    sw.reshape((-1,) + (1,) * (wf.ndim - 1))))
            else:
                sw = np.array([2.0 ** qm.ew[i]])
                wq = qm.w[i].astype(np.float64)
            bq = np.round(params.biases[i] / (sx * sw))
            wshape = [1, *wq.shape] if op.kind == "dwconv" else list(wq.shape)
            wt = W.tensor(f"w{i}", wshape, data=wq.astype(np.int8).reshape(wshape), scale=sw,
                          zp=np.zeros(sw.size, np.int64), qdim=3 if op.kind == "dwconv" else 0)
            bt = W.tensor(f"b{i}", [len(bq)], "int32", bq.astype(np.int32), scale=sx * sw,
                          zp=np.zeros(sw.size, np.int64))
            pad = 0 if any(op.pad) or op.kernel == (1, 1) else 1
            if op.kind == "conv":
                W.op(BO.CONV_2D, [x, wt, bt], [y], BOpt.Conv2DOptions, dict(
                    _cls="Conv2DOptions", Padding=pad, StrideW=op.stride, StrideH=op.stride,
                    FusedActivationFunction=act, DilationWFactor=1, DilationHFactor=1), 3)
            elif op.kind == "dwconv":
                W.op(BO.DEPTHWISE_CONV_2D, [x, wt, bt], [y], BOpt.DepthwiseConv2DOptions, dict(
                    _cls="DepthwiseConv2DOptions", Padding=pad, StrideW=op.stride,
                    StrideH=op.stride, DepthMultiplier=1, FusedActivationFunction=act,
                    DilationWFactor=1, DilationHFactor=1), 3)
            else:
                n_in = int(np.prod(g.shapes[op.inputs[0]]))
                flat = W.tensor(f"flat{i}", [1, n_in], scale=tq[op.inputs[0]][0],
                                zp=tq[op.inputs[0]][1])
                shp = W.tensor(f"shape{i}", [2], "int32", np.array([1, n_in], np.int32))
                W.op(BO.RESHAPE, [x, shp], [flat])
                W.op(BO.FULLY_CONNECTED, [flat, wt, bt], [y], BOpt.FullyConnectedOptions,
                     dict(_cls="FullyConnectedOptions", FusedActivationFunction=act), 4)
        elif op.kind == "add":
            W.op(BO.ADD, [x, ids[op.inputs[1]]], [y], BOpt.AddOptions,
                 dict(_cls="AddOptions", FusedActivationFunction=act), 2)
        elif op.kind == "maxpool":
            W.op(BO.MAX_POOL_2D, [x], [y], BOpt.Pool2DOptions, dict(
                _cls="Pool2DOptions", Padding=1, StrideW=op.stride, StrideH=op.stride,
                FilterWidth=op.kernel[1], FilterHeight=op.kernel[0]), 2)
        else:  # global average pool as TFLite's MEAN over H, W (same scale in and out)
            tq[op.output] = tq[op.inputs[0]]
            W.tensors[y]["scale"] = np.atleast_1d(tq[op.output][0])
            W.tensors[y]["zp"] = np.atleast_1d(tq[op.output][1])
            W.tensors[y]["shape"] = [1, 1, 1, g.shapes[op.output][2]]
            ax = W.tensor(f"axes{i}", [2], "int32", np.array([1, 2], np.int32))
            W.op(BO.MEAN, [x, ax], [y], BOpt.ReducerOptions,
                 dict(_cls="ReducerOptions", KeepDims=True), 2)
    prob = W.tensor("prob", [1, g.n_classes], scale=1 / 256, zp=-128)
    W.op(BO.SOFTMAX, [ids[g.output]], [prob], BOpt.SoftmaxOptions,
         dict(_cls="SoftmaxOptions", Beta=1.0), 2)
    return W.finish([ids[g.input]], [prob])


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


def tfl_case(rng, per_channel: bool):
    m = tfl_net()
    g = m.graph
    p = m.init(3)
    for b in p.biases:
        if b is not None:
            b[:] = rng.normal(0, 0.1, b.shape)
    x = rng.uniform(0, 1, (48,) + g.shapes[g.input]).astype(np.float32)
    qm = R.quantize_model(g, p, x)
    buf = write_tflite(g, p, qm, per_channel, x)
    return g, p, qm, buf, x


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


def test_tflite_pow2_bit_exact_with_tflm(rng):
    """A TFLite int8 model whose scales are powers of two (conv, depthwise, 1x1 conv, ADD,
    max pool, MEAN, fully connected): the import keeps every scale and weight exactly, and
    every tensor of kilolearn's forward pass equals TFLite Micro's, bit for bit."""
    _need("tflite")
    _need("tflite_micro")
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
    _need("tflite")
    _need("ai_edge_litert")
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
    _need("tflite")
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
    _need("tflite")
    _need("ai_edge_litert")
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
    _need("tflite")
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
    _need("onnx")
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
    for _ in range(epochs):
        for i in range(len(xq_tr)):
            ref.step(xq_tr[i], int(ytr[i]))
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
    _need("onnx")
    _need("tflite")
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
