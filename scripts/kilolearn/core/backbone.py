"""Pretrained backbones for continual learning (docs/continual-learning.md).

A continual-learning scenario learns new classes on the device on top of a **frozen backbone**
read in place from flash: its output (the latent-replay cut) feeds a small trainable head.
Paissan et al. and the latent-replay literature start from a backbone pretrained on other data;
here it is pretrained on the host, in float32 with the numpy twin, on images of the same domain
that the session never sees (a data set's pool), then frozen, and the head is initialised anew so
that the device starts knowing no class. What the backbone was pretrained on is a choice
(``PRETRAIN_SOURCES``): every class of the domain from a disjoint pool (the usual setting, as an
ImageNet backbone for CORe50), or only the first task's classes (the strict class-incremental
setting: the device alone ever sees the later classes).

Pretraining is deterministic (seeded), so its result is cached by a hash of everything it
depends on (``cache_dir``) and made again when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import model as M
from . import reference
from .fit import epoch_orders

PRETRAIN_SOURCES = ("all", "first")
CACHE_VERSION = 1  # of the cached parameters' format


@dataclass(frozen=True)
class CnnSpec:
    """A small MCU CNN: three 3x3 stride-2 conv + ReLU layers (channels doubling from ``c1``), a
    dense embedding (the latent, ``embed`` int8 values) -- the frozen backbone -- then the head:
    ``head`` hidden units with ReLU (0: none) and the class layer."""

    shape: tuple[int, int, int] = (28, 28, 1)
    c1: int = 8
    embed: int = 64
    head: int = 32


def cnn(spec: CnnSpec, n_classes: int) -> tuple[M.Model, int]:
    """The model and the index of its first head op (every op before it is the backbone)."""
    layers: list[M.Layer] = [M.Input(spec.shape)]
    for k in range(3):
        layers.append(M.Conv2D(spec.c1 << k, 3, stride=2, activation="relu"))
    layers += [M.Flatten(), M.Dense(spec.embed, "relu")]
    if spec.head:
        layers.append(M.Dense(spec.head, "relu"))
    layers += [M.Dense(n_classes), M.SoftmaxCrossEntropy()]
    m = M.Model(layers)
    first_head = [i for i, op in enumerate(m.graph.ops) if op.has_params][4]
    return m, first_head


@dataclass(frozen=True)
class SeriesSpec:
    """A random 1-D conv backbone for multichannel time series (samples (1, length, dims)),
    frozen: two conv + ReLU layers along time (``k1`` then ``k2`` steps, the second of stride
    2), global average pooling -- the latent, ``c2`` values, the fraction of time each random
    filter fires weighted by how strongly (as ROCKET's features, without dilations) -- then
    the head: ``head`` hidden units with ReLU and the class layer."""

    c1: int = 16
    k1: int = 7
    c2: int = 32
    k2: int = 5
    head: int = 16


def series_model(spec: SeriesSpec, shape: tuple[int, int, int], n_classes: int,
                 seed: int) -> tuple[M.Model, M.Params, int]:
    """The time-series model with its random frozen backbone (``seed``): model, parameters and
    the cut (the pooled latent)."""
    m = M.Model([M.Input(shape), M.Conv2D(spec.c1, (1, spec.k1), activation="relu",
                                          trainable=False),
                 M.Conv2D(spec.c2, (1, spec.k2), stride=2, activation="relu", trainable=False),
                 M.GlobalAvgPool(), M.Dense(spec.head, "relu"), M.Dense(n_classes),
                 M.SoftmaxCrossEntropy()])
    g = m.graph
    first_head = next(i for i, op in enumerate(g.ops) if op.kind == "dense")
    return m, m.init(seed), g.ops[first_head].inputs[0]


@dataclass(frozen=True)
class Pretraining:
    source: str = "all"  # PRETRAIN_SOURCES
    n: int = 20000  # images of the pretraining pool
    epochs: int = 3
    lr: float = 0.02
    seed: int = 7


def pretrained_cnn(spec: CnnSpec, pre: Pretraining, x: np.ndarray, y: np.ndarray,
                   n_classes: int, first_task: list[int], seed: int,
                   cache_dir: Path | None = None
                   ) -> tuple[M.Model, M.Params, int, np.ndarray]:
    """The CNN with its backbone pretrained on (x, y) -- every class, or with source 'first'
    only the images of ``first_task``'s classes -- frozen, and a head initialised with ``seed``
    (trainable). Returns the model, its parameters, the cut (the backbone's output tensor) and
    the images it was pretrained on."""
    if pre.source not in PRETRAIN_SOURCES:
        raise ValueError(f"pretraining source must be one of {PRETRAIN_SOURCES}")
    m, first_head = cnn(spec, n_classes)
    g = m.graph
    if pre.source == "first":
        keep = np.isin(y, first_task)
        x, y = x[keep], y[keep]
    x, y = x[:pre.n], y[:pre.n]
    key = hashlib.sha256(json.dumps([asdict(spec), asdict(pre), n_classes, sorted(first_task),
                                     CACHE_VERSION]).encode())
    key.update(np.ascontiguousarray(x).tobytes())
    key.update(np.ascontiguousarray(y).tobytes())
    path = None if cache_dir is None else cache_dir / f"backbone-{key.hexdigest()[:16]}.npz"
    p = _load(path, g)
    if p is None:
        p = _pretrain(m, x, y, pre)
        _save(path, p)
    head = m.init(seed)
    for i, op in enumerate(g.ops):
        op.trainable = op.has_params and i >= first_head
        if i >= first_head and op.has_params:
            p.weights[i], p.biases[i] = head.weights[i], head.biases[i]
    return m, p, g.ops[first_head].inputs[0], x


def _pretrain(m: M.Model, x: np.ndarray, y: np.ndarray, pre: Pretraining) -> M.Params:
    for op in m.graph.ops:
        op.trainable = op.has_params
    t = reference.F32Trainer(m.graph, m.init(pre.seed), lr=pre.lr)
    for order in epoch_orders(len(x), pre.epochs, pre.seed):
        for i in order:
            t.step(x[i], int(y[i]))
    return t.p


def _load(path: Path | None, g: M.Graph) -> M.Params | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as z:
            p = M.Params()
            for i, op in enumerate(g.ops):
                has = op.has_params
                p.weights.append(z[f"w{i}"].astype(np.float32) if has else None)
                p.biases.append(z[f"b{i}"].astype(np.float32) if has else None)
                if has and p.weights[i].shape != g.weight_shape(i):
                    return None
        return p
    except (OSError, KeyError, ValueError):  # unreadable: pretrain again
        return None


def _save(path: Path | None, p: M.Params) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i}": w for i, w in enumerate(p.weights) if w is not None}
    arrays |= {f"b{i}": b for i, b in enumerate(p.biases) if b is not None}
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
