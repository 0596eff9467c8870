"""Build models: a small Keras-like graph API, lowered to what the device executes.

Sequential:

    model = Model([Input((8, 8, 1)), Conv2D(8, 3), BatchNorm(), ReLU(), MaxPool2D(2),
                   Flatten(), Dense(10), SoftmaxCrossEntropy()])

Functional (residual blocks):

    x = Input((16, 16, 8))
    y = Conv2D(8, 1)(x)
    y = Add()([x, y])

``Model.lower()`` turns the layers into a :class:`Graph` of fused ops (conv/depthwise/dense with
folded batch norm and their activation, pooling, add): the graph the reference trains and the
exporter writes. Activations are HWC; a vector is (1, 1, n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BN_EPS = 1e-3


class ModelError(ValueError):
    pass


# --------------------------------------------------------------------------- layers


class Layer:
    """Base: calling a layer on nodes makes a new node (functional API)."""

    def __call__(self, inputs: Node | list[Node]) -> Node:
        ins = inputs if isinstance(inputs, list) else [inputs]
        return Node(self, ins)


@dataclass(frozen=True, eq=False)
class Input(Layer):
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.shape) not in (1, 3) or min(self.shape) < 1:
            raise ModelError(f"Input shape must be (features,) or (H, W, C), got {self.shape}")

    @property
    def hwc(self) -> tuple[int, int, int]:
        return (1, 1, self.shape[0]) if len(self.shape) == 1 else tuple(self.shape)  # type: ignore

    @property
    def features(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True, eq=False)
class Dense(Layer):
    units: int
    activation: str | None = None
    trainable: bool | str = True  # True, False or "bias" (only the bias trains)


@dataclass(frozen=True, eq=False)
class Conv2D(Layer):
    filters: int
    kernel: int | tuple[int, int] = 3
    stride: int = 1
    padding: str = "same"  # "same" | "valid"
    activation: str | None = None
    trainable: bool | str = True  # True, False or "bias" (only the bias trains)


@dataclass(frozen=True, eq=False)
class DepthwiseConv2D(Layer):
    kernel: int | tuple[int, int] = 3
    stride: int = 1
    padding: str = "same"
    activation: str | None = None
    trainable: bool | str = True  # True, False or "bias" (only the bias trains)


@dataclass(frozen=True, eq=False)
class Conv1D(Layer):
    """A 1-D convolution over time of a (1, T, C) tensor (Input((1, T, C))): lowered to Conv2D
    with a 1 x kernel window, the same kernels (float32, int8)."""

    filters: int
    kernel: int = 3
    stride: int = 1
    padding: str = "same"
    activation: str | None = None
    trainable: bool | str = True


@dataclass(frozen=True, eq=False)
class DepthwiseConv1D(Layer):
    """The depthwise form of Conv1D (a 1 x kernel depthwise Conv2D)."""

    kernel: int = 3
    stride: int = 1
    padding: str = "same"
    activation: str | None = None
    trainable: bool | str = True


@dataclass(frozen=True, eq=False)
class BatchNorm(Layer):
    """Folded into the conv/dense before it when the model is lowered."""


@dataclass(frozen=True, eq=False)
class ReLU(Layer):
    pass


@dataclass(frozen=True, eq=False)
class ReLU6(Layer):
    pass


@dataclass(frozen=True, eq=False)
class Sigmoid(Layer):
    """After a conv, depthwise conv or dense layer (int8: a table, docs/int8-training.md)."""


@dataclass(frozen=True, eq=False)
class Tanh(Layer):
    """After a conv, depthwise conv or dense layer (int8: a table)."""


@dataclass(frozen=True, eq=False)
class LeakyReLU(Layer):
    """x for x > 0, x / 8 below (alpha = 1/8: exact in int8); after a conv, depthwise conv or
    dense layer."""


#: activation layers -> the op's activation (fused into the op before it)
ACT_LAYERS: dict[type, str] = {ReLU: "relu", ReLU6: "relu6", Sigmoid: "sigmoid", Tanh: "tanh",
                               LeakyReLU: "leaky_relu"}
LEAKY_ALPHA = 0.125  # kl_kernels.h KL_LEAKY_ALPHA


@dataclass(frozen=True, eq=False)
class AvgPool2D(Layer):
    pool: int = 2
    stride: int | None = None


@dataclass(frozen=True, eq=False)
class MaxPool2D(Layer):
    pool: int = 2
    stride: int | None = None


@dataclass(frozen=True, eq=False)
class GlobalAvgPool(Layer):
    pass


@dataclass(frozen=True, eq=False)
class Flatten(Layer):
    pass


@dataclass(frozen=True, eq=False)
class Add(Layer):
    activation: str | None = None


@dataclass(frozen=True, eq=False)
class SoftmaxCrossEntropy(Layer):
    pass


@dataclass(frozen=True, eq=False)
class MeanSquaredError(Layer):
    """Mean squared error against a target vector (the input itself when none is given: an
    autoencoder): regression, anomaly detection."""


@dataclass(frozen=True, eq=False)
class SigmoidBinaryCrossEntropy(Layer):
    """Sigmoid then binary cross-entropy per output: binary (one output) or multi-label."""


#: loss layers -> the graph's loss name (the blob's loss byte, docs/blob-format.md)
LOSSES: dict[type, str] = {SoftmaxCrossEntropy: "softmax_ce", MeanSquaredError: "mse",
                           SigmoidBinaryCrossEntropy: "sigmoid_bce"}


@dataclass(eq=False)
class Node:
    layer: Layer
    inputs: list[Node]


# --------------------------------------------------------------------------- lowered graph

OPS = ("conv", "dwconv", "dense", "avgpool", "maxpool", "add")
ACTS = ("none", "relu", "relu6", "sigmoid", "tanh", "leaky_relu")
#: activations not fused into a kernel (blob 2.6): ops with parameters only
SMOOTH_ACTS = ("sigmoid", "tanh", "leaky_relu")


@dataclass
class Op:
    kind: str
    inputs: list[int]  # tensor ids
    output: int
    act: str = "none"
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    trainable: bool = False
    bias_only: bool = False  # trainable, but only the bias

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "dwconv", "dense")


@dataclass
class Graph:
    shapes: list[tuple[int, int, int]]  # tensor id -> (H, W, C)
    ops: list[Op]  # topological order
    input: int = 0
    loss: str = "softmax_ce"  # "softmax_ce" | "mse" | "sigmoid_bce" (LOSSES)

    @property
    def output(self) -> int:
        return self.ops[-1].output

    @property
    def n_classes(self) -> int:
        return int(np.prod(self.shapes[self.output]))

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.shapes[self.input]))

    def weight_shape(self, i: int) -> tuple[int, ...]:
        op = self.ops[i]
        cin = self.shapes[op.inputs[0]]
        cout = self.shapes[op.output][2]
        kh, kw = op.kernel
        if op.kind == "conv":
            return (cout, kh, kw, cin[2])
        if op.kind == "dwconv":
            return (kh, kw, cout)
        if op.kind == "dense":
            return (int(np.prod(self.shapes[op.output])), int(np.prod(cin)))
        raise ModelError(f"op {i} ({op.kind}) has no weights")

    def macs(self, i: int) -> int:
        op = self.ops[i]
        h, w, c = self.shapes[op.output]
        if op.kind == "conv":
            return h * w * c * op.kernel[0] * op.kernel[1] * self.shapes[op.inputs[0]][2]
        if op.kind == "dwconv":
            return h * w * c * op.kernel[0] * op.kernel[1]
        if op.kind == "dense":
            return int(np.prod(self.weight_shape(i)))
        return 0

    def consumers(self, t: int) -> list[int]:
        return [i for i, op in enumerate(self.ops) if t in op.inputs]


@dataclass
class Params:
    """float32 weights and biases of a lowered graph, by op index (None for ops without)."""

    weights: list[np.ndarray | None] = field(default_factory=list)
    biases: list[np.ndarray | None] = field(default_factory=list)

    def copy(self) -> Params:
        return Params([None if w is None else w.copy() for w in self.weights],
                      [None if b is None else b.copy() for b in self.biases])


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def _conv_geometry(h: int, w: int, kernel: tuple[int, int], stride: int, padding: str
                   ) -> tuple[int, int, tuple[int, int, int, int]]:
    kh, kw = kernel
    if padding == "valid":
        if h < kh or w < kw:
            raise ModelError(f"kernel {kernel} larger than the {h}x{w} input")
        return (h - kh) // stride + 1, (w - kw) // stride + 1, (0, 0, 0, 0)
    if padding != "same":
        raise ModelError(f"padding must be 'same' or 'valid', got {padding!r}")
    ho, wo = -(-h // stride), -(-w // stride)
    ph = max((ho - 1) * stride + kh - h, 0)
    pw = max((wo - 1) * stride + kw - w, 0)
    return ho, wo, (ph // 2, pw // 2, ph - ph // 2, pw - pw // 2)  # TFLite's SAME


class Model:
    """A trainable model: a list of layers (sequential) or the output node of a functional
    graph; either way ending in a loss (SoftmaxCrossEntropy, MeanSquaredError,
    SigmoidBinaryCrossEntropy)."""

    def __init__(self, layers: list[Layer] | Node):
        if isinstance(layers, Node):
            self.output_node = layers
        else:
            if not layers or not isinstance(layers[0], Input):
                raise ModelError("a model starts with Input(shape)")
            node = Node(layers[0], [])
            for layer in layers[1:]:
                if isinstance(layer, Input):
                    raise ModelError("Input may only come first")
                node = layer(node)
            self.output_node = node
        if type(self.output_node.layer) not in LOSSES:
            raise ModelError("a trainable model ends with a loss: SoftmaxCrossEntropy(), "
                             "MeanSquaredError() or SigmoidBinaryCrossEntropy()")
        self.graph, self._plan = self._lower()
        self.graph.loss = LOSSES[type(self.output_node.layer)]

    # lowering -------------------------------------------------------------------------------
    def _topo(self) -> list[Node]:
        order: list[Node] = []
        seen: set[int] = set()

        def visit(n: Node) -> None:
            if id(n) in seen:
                return
            seen.add(id(n))
            for p in n.inputs:
                visit(p)
            order.append(n)

        visit(self.output_node)
        return order

    def _lower(self) -> tuple[Graph, list[dict[str, Any]]]:
        nodes = self._topo()
        if not isinstance(nodes[0].layer, Input):
            raise ModelError("the graph has no Input")
        users: dict[int, int] = {}
        for n in nodes:
            for p in n.inputs:
                users[id(p)] = users.get(id(p), 0) + 1
        shapes: list[tuple[int, int, int]] = []
        ops: list[Op] = []
        plan: list[dict[str, Any]] = []  # per op: the layers that make it (for params)
        tensor_of: dict[int, int] = {}
        producer: dict[int, int] = {}  # tensor -> op index

        def new_tensor(shape: tuple[int, int, int]) -> int:
            shapes.append(tuple(int(v) for v in shape))  # type: ignore[arg-type]
            return len(shapes) - 1

        for n in nodes:
            L = n.layer
            name = type(L).__name__
            if isinstance(L, Input):
                if tensor_of:
                    raise ModelError("only one Input is supported")
                tensor_of[id(n)] = new_tensor(L.hwc)
                continue
            if type(L) in LOSSES:
                tensor_of[id(n)] = tensor_of[id(n.inputs[0])]
                continue
            if isinstance(L, Add):
                if len(n.inputs) != 2:
                    raise ModelError("Add takes exactly two inputs")
            elif len(n.inputs) != 1:
                raise ModelError(f"{name} takes one input")
            src = [tensor_of[id(p)] for p in n.inputs]
            h, w, c = shapes[src[0]]
            if isinstance(L, BatchNorm) or type(L) in ACT_LAYERS:
                t = src[0]
                if t not in producer or users.get(id(n.inputs[0]), 0) != 1:
                    raise ModelError(f"{name} must directly follow a conv, dense or add layer "
                                     "whose output has no other user")
                op = ops[producer[t]]
                if isinstance(L, BatchNorm):
                    if op.kind not in ("conv", "dwconv", "dense") or op.act != "none" or \
                            plan[producer[t]].get("bn"):
                        raise ModelError("BatchNorm must follow a conv or dense layer, "
                                         "before its activation")
                    plan[producer[t]]["bn"] = L
                else:
                    if op.act != "none":
                        raise ModelError(f"{name}: the layer before already has an activation")
                    if ACT_LAYERS[type(L)] in SMOOTH_ACTS and not op.has_params:
                        raise ModelError(f"{name} only after a conv, depthwise conv or dense "
                                         "layer")
                    op.act = ACT_LAYERS[type(L)]
                tensor_of[id(n)] = t
                continue
            if isinstance(L, Flatten):
                tensor_of[id(n)] = src[0]  # Dense reads any tensor flat (HWC order)
                continue
            act = "none"
            if isinstance(L, Dense):
                op = Op("dense", src, new_tensor((1, 1, L.units)), trainable=bool(L.trainable),
                        bias_only=L.trainable == "bias")
                act = L.activation or "none"
            elif isinstance(L, (Conv1D, DepthwiseConv1D)):
                if h != 1:
                    raise ModelError(f"{name} reads a (1, T, C) tensor, got {(h, w, c)}")
                k = (1, int(L.kernel))
                wo, pad = _conv_geometry(1, w, k, L.stride, L.padding)[1:]
                pad = (0, pad[1], 0, pad[3])  # no padding in height
                if isinstance(L, Conv1D):
                    op = Op("conv", src, new_tensor((1, wo, L.filters)), kernel=k,
                            stride=L.stride, pad=pad, trainable=bool(L.trainable),
                            bias_only=L.trainable == "bias")
                else:
                    op = Op("dwconv", src, new_tensor((1, wo, c)), kernel=k, stride=L.stride,
                            pad=pad, trainable=bool(L.trainable), bias_only=L.trainable == "bias")
                act = L.activation or "none"
            elif isinstance(L, Conv2D):
                k = _pair(L.kernel)
                ho, wo, pad = _conv_geometry(h, w, k, L.stride, L.padding)
                op = Op("conv", src, new_tensor((ho, wo, L.filters)), kernel=k, stride=L.stride,
                        pad=pad, trainable=bool(L.trainable), bias_only=L.trainable == "bias")
                act = L.activation or "none"
            elif isinstance(L, DepthwiseConv2D):
                k = _pair(L.kernel)
                ho, wo, pad = _conv_geometry(h, w, k, L.stride, L.padding)
                op = Op("dwconv", src, new_tensor((ho, wo, c)), kernel=k, stride=L.stride,
                        pad=pad, trainable=bool(L.trainable), bias_only=L.trainable == "bias")
                act = L.activation or "none"
            elif isinstance(L, (AvgPool2D, MaxPool2D)):
                s = L.stride or L.pool
                ho, wo, pad = _conv_geometry(h, w, (L.pool, L.pool), s, "valid")
                op = Op("avgpool" if isinstance(L, AvgPool2D) else "maxpool", src,
                        new_tensor((ho, wo, c)), kernel=(L.pool, L.pool), stride=s)
            elif isinstance(L, GlobalAvgPool):
                op = Op("avgpool", src, new_tensor((1, 1, c)), kernel=(h, w), stride=1)
            elif isinstance(L, Add):
                if shapes[src[0]] != shapes[src[1]]:
                    raise ModelError(f"Add of shapes {shapes[src[0]]} and {shapes[src[1]]}")
                op = Op("add", src, new_tensor((h, w, c)))
                act = L.activation or "none"
            else:
                raise ModelError(f"unsupported layer {name}")
            if act not in ACTS:
                raise ModelError(f"{name}: unsupported activation {act!r} "
                                 f"(supported: {', '.join(a for a in ACTS if a != 'none')})")
            if act in SMOOTH_ACTS and not op.has_params:
                raise ModelError(f"{name}: {act} only after a conv, depthwise conv or dense layer")
            op.act = act
            ops.append(op)
            plan.append({"layer": L})
            producer[op.output] = len(ops) - 1
            tensor_of[id(n)] = op.output
        if not ops:
            raise ModelError("the model has no layer")
        out = tensor_of[id(self.output_node)]
        if out != ops[-1].output or ops[-1].act != "none":
            raise ModelError("the layer feeding the loss must be the last one and have no "
                             "activation")
        return Graph(shapes, ops), plan

    # parameters -------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return self.graph.n_inputs

    @property
    def n_classes(self) -> int:
        return self.graph.n_classes

    def init(self, seed: int = 0) -> Params:
        """He-uniform weights, zero biases, batch norm at its initial statistics (folded)."""
        rng = np.random.default_rng(seed)
        g = self.graph
        p = Params()
        for i, op in enumerate(g.ops):
            if not op.has_params:
                p.weights.append(None)
                p.biases.append(None)
                continue
            shape = g.weight_shape(i)
            fan_in = int(np.prod(shape[1:])) if op.kind != "dwconv" else shape[0] * shape[1]
            bound = np.sqrt(6.0 / fan_in)
            w = rng.uniform(-bound, bound, shape).astype(np.float32)
            b = np.zeros(g.shapes[op.output][2] if op.kind != "dense" else shape[0], np.float32)
            if self._plan[i].get("bn") is not None:  # gamma 1, beta 0, mean 0, var 1
                scale = np.float32(1.0 / np.sqrt(1.0 + BN_EPS))
                w = (w * scale).astype(np.float32)
            p.weights.append(w)
            p.biases.append(b)
        return p


def mlp(sizes: list[int]) -> Model:
    """MLP with ReLU hidden layers: mlp([64, 32, 10])."""
    layers: list[Layer] = [Input((sizes[0],))]
    for n in sizes[1:-1]:
        layers += [Dense(n), ReLU()]
    layers += [Dense(sizes[-1]), SoftmaxCrossEntropy()]
    return Model(layers)


def small_cnn(shape: tuple[int, int, int] = (8, 8, 1), classes: int = 10,
              channels: int = 8) -> Model:
    """Conv-BN-ReLU, max-pool, conv-BN-ReLU, global average pool, dense."""
    return Model([Input(shape), Conv2D(channels, 3), BatchNorm(), ReLU(), MaxPool2D(2),
                  Conv2D(2 * channels, 3), BatchNorm(), ReLU(), GlobalAvgPool(),
                  Dense(classes), SoftmaxCrossEntropy()])


def _make_divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def mobilenet_v1(shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10,
                 alpha: float = 0.25, trainable_last: int | None = None) -> Model:
    """MobileNetV1 (depthwise-separable blocks) with width multiplier ``alpha``; only the last
    ``trainable_last`` blocks (plus the classifier) train when given."""
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    n_blocks = len(cfg) + 1
    first_tr = 0 if trainable_last is None else n_blocks - trainable_last

    def tr(b: int) -> bool:
        return b >= first_tr

    layers: list[Layer] = [Input(shape), Conv2D(_make_divisible(32 * alpha), 3, 2,
                                                trainable=tr(0)), BatchNorm(), ReLU6()]
    for b, (c, s) in enumerate(cfg, start=1):
        layers += [DepthwiseConv2D(3, s, trainable=tr(b)), BatchNorm(), ReLU6(),
                   Conv2D(_make_divisible(c * alpha), 1, trainable=tr(b)), BatchNorm(), ReLU6()]
    layers += [GlobalAvgPool(), Dense(classes), SoftmaxCrossEntropy()]
    return Model(layers)


def mobilenet_v2(shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10,
                 alpha: float = 0.35, trainable_last: int | None = None) -> Model:
    """MobileNetV2 (inverted residual blocks) with width multiplier ``alpha``; only the last
    ``trainable_last`` blocks (plus the head and classifier) train when given."""
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]
    blocks = [(t, c, s if i == 0 else 1) for t, c, n, s in cfg for i in range(n)]
    first_tr = 0 if trainable_last is None else len(blocks) + 1 - trainable_last
    x = Input(shape)
    node = Node(x, [])
    c0 = _make_divisible(32 * alpha)
    node = ReLU6()(BatchNorm()(Conv2D(c0, 3, 2, trainable=first_tr <= 0)(node)))
    cin = c0
    for b, (t, c, s) in enumerate(blocks, start=1):
        tr = b >= first_tr
        cout = _make_divisible(c * alpha)
        h = node
        if t != 1:
            h = ReLU6()(BatchNorm()(Conv2D(cin * t, 1, trainable=tr)(h)))
        h = ReLU6()(BatchNorm()(DepthwiseConv2D(3, s, trainable=tr)(h)))
        h = BatchNorm()(Conv2D(cout, 1, trainable=tr)(h))
        node = Add()([node, h]) if s == 1 and cin == cout else h
        cin = cout
    head = _make_divisible(1280 * alpha)  # scaled with alpha (1280 at alpha 1): MCU-sized
    node = ReLU6()(BatchNorm()(Conv2D(head, 1)(node)))
    node = Dense(classes)(GlobalAvgPool()(node))
    return Model(SoftmaxCrossEntropy()(node))
