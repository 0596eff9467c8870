"""Shared by test_import_onnx.py and test_import_tflite.py: the logits of the engine and of
its numpy twin, the ONNX test CNN (onnx.helper) and int8 TFLite files written with the `tflite`
package's flatbuffer builders."""

from __future__ import annotations

import numpy as np
import pytest

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner

TARGETS = ["host", "mps2-an386"]


def need(mod: str):
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


# --------------------------------------------------------------------------- ONNX builder


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
