"""A small graph API: build a model, initialise float32 weights, lower it to fused layers.

    model = Model([Input(64), Dense(32), ReLU(), Dense(10), SoftmaxCrossEntropy()])
    params = model.init(seed=0)

The device executes *fused* layers (Dense with its activation), so ``Model.lower()`` folds each
ReLU into the Dense before it; that is also what the exporter writes to the blob.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Input:
    features: int


@dataclass(frozen=True)
class Dense:
    units: int
    activation: str | None = None  # None or "relu"
    trainable: bool = True


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class SoftmaxCrossEntropy:
    pass


Layer = Input | Dense | ReLU | SoftmaxCrossEntropy


@dataclass(frozen=True)
class FusedDense:
    """What the engine runs: y = act(W x + b), W of shape (n_out, n_in)."""

    n_in: int
    n_out: int
    relu: bool
    trainable: bool = True


@dataclass
class Params:
    """float32 weights of a lowered model, one (W, b) per FusedDense."""

    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)

    def copy(self) -> Params:
        return Params([w.copy() for w in self.weights], [b.copy() for b in self.biases])


class ModelError(ValueError):
    pass


class Model:
    def __init__(self, layers: list[Layer]):
        self.layers = list(layers)
        self.fused = self.lower()

    @property
    def n_inputs(self) -> int:
        return self.fused[0].n_in

    @property
    def n_classes(self) -> int:
        return self.fused[-1].n_out

    def lower(self) -> list[FusedDense]:
        layers = self.layers
        if not layers or not isinstance(layers[0], Input):
            raise ModelError("a model starts with Input(features)")
        if not isinstance(layers[-1], SoftmaxCrossEntropy):
            raise ModelError("a trainable model ends with SoftmaxCrossEntropy()")
        width = layers[0].features
        out: list[FusedDense] = []
        for i, layer in enumerate(layers[1:-1], start=1):
            if isinstance(layer, Dense):
                if layer.activation not in (None, "relu"):
                    raise ModelError(f"layer {i}: unsupported activation {layer.activation!r}")
                out.append(FusedDense(width, layer.units, layer.activation == "relu",
                                      layer.trainable))
                width = layer.units
            elif isinstance(layer, ReLU):
                if not out or out[-1].relu:
                    raise ModelError(f"layer {i}: ReLU must follow a Dense without activation")
                last = out[-1]
                out[-1] = FusedDense(last.n_in, last.n_out, True, last.trainable)
            else:
                raise ModelError(f"layer {i}: {type(layer).__name__} not allowed here")
        if not out:
            raise ModelError("the model has no Dense layer")
        if out[-1].relu:
            raise ModelError("the last Dense feeds the softmax: it must have no activation")
        return out

    def init(self, seed: int = 0) -> Params:
        """He-uniform weights (float32), zero biases; deterministic in ``seed``."""
        rng = np.random.default_rng(seed)
        p = Params()
        for f in self.fused:
            bound = np.sqrt(6.0 / f.n_in)
            p.weights.append(rng.uniform(-bound, bound, (f.n_out, f.n_in)).astype(np.float32))
            p.biases.append(np.zeros(f.n_out, np.float32))
        return p


def mlp(sizes: list[int]) -> Model:
    """MLP with ReLU hidden layers: mlp([64, 32, 10])."""
    layers: list[Layer] = [Input(sizes[0])]
    for n in sizes[1:-1]:
        layers += [Dense(n), ReLU()]
    layers += [Dense(sizes[-1]), SoftmaxCrossEntropy()]
    return Model(layers)
