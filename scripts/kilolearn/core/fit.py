"""Host side of the user's loop: fit a model on the user's data with the numpy twin, choose what
trains on the device, evaluate a blob (``kilolearn fit``, ``kilolearn eval``; docs/user-guide.md).

A new model (MLP or small CNN) is trained in float32 (batch-1 SGD, shuffled epochs) and, for
int8, quantised with the data's first samples as calibration; an existing blob continues
training in its own type (int8: the engine's own arithmetic, bit for bit). What trains on the
board is a property of the blob (each layer's trainable and bias-only flags), set here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..formats import export
from . import model as M
from . import reference
from .model import Graph

CALIBRATION = 200  # samples that set an int8 model's activation ranges


class FitError(ValueError):
    """A fit or trainable choice that cannot be made (one line)."""


# ---------------------------------------------------------------------------- what trains

TRAINS_HELP = ("what trains on the device: all, bias (biases only), none, last:N (the last N "
               "layers with weights), last:N:bias")


def parse_trains(text: str) -> tuple[int | None, str]:
    """'all' | 'bias' | 'none' | 'last:N' | 'last:N:bias' -> (last N or None, 'all'|'bias'|
    'none')."""
    m = re.fullmatch(r"(all|bias|none)|last:(\d{1,4})(?::(bias|all))?", text.strip())
    if m is None:
        raise FitError(f"{text!r}: expected {TRAINS_HELP.split(': ', 1)[1]}")
    if m.group(1):
        return None, m.group(1)
    n = int(m.group(2))
    if n < 1:
        raise FitError(f"{text!r}: last:N needs N >= 1 (none freezes everything)")
    return n, m.group(3) or "all"


def set_trainable(g: Graph, last: int | None = None, what: str = "all") -> list[int]:
    """Mark what trains: the last ``last`` layers with weights (all when None); ``what``
    'all' (weights and biases), 'bias' (biases only: the weights stay in flash, read in place)
    or 'none'. Returns the trainable ops."""
    if what not in ("all", "none", "bias"):
        raise FitError(f"{what!r}: expected all, none or bias")
    if last is not None and last < 0:
        raise FitError("the number of last layers must be >= 0")
    with_w = [i for i, op in enumerate(g.ops) if op.has_params]
    chosen = set() if what == "none" else set(
        with_w if last is None else with_w[len(with_w) - min(last, len(with_w)):])
    for i, op in enumerate(g.ops):
        op.trainable = i in chosen
        op.bias_only = op.trainable and what == "bias"
    return sorted(chosen)


def describe_trainable(g: Graph) -> str:
    """'ops 3, 5 (bias only: 5)' style summary of what trains."""
    tr = [i for i, op in enumerate(g.ops) if op.trainable]
    if not tr:
        return "nothing (frozen)"
    bias = [i for i in tr if g.ops[i].bias_only]
    s = f"op{'s' if len(tr) > 1 else ''} {', '.join(map(str, tr))}"
    return s + (f" (bias only: {', '.join(map(str, bias))})" if bias else "")


def reexport(b: export.Blob, keep_schedule: bool = True) -> bytes:
    """The blob again from its parsed form (after changing what trains or the weights)."""
    upd = None if b.update[0] == 0 else (b.update[0], b.update[1] / 1000.0)
    plan = b.schedule if keep_schedule else None
    if b.qmodel is not None:
        return export.export_s8(b.qmodel, plan=plan, update=upd, paged=b.paged)
    assert b.params is not None
    return export.export_f32(b.graph, b.params, plan=plan, update=upd, paged=b.paged)


def with_trainable(blob: bytes, trains: str) -> bytes:
    """The blob with what trains set by a ``parse_trains`` spec."""
    b = export.read(blob)
    return reexport(choose_trainable(b, trains))


def choose_trainable(b: export.Blob, trains: str) -> export.Blob:
    """``b`` (parsed) with what trains set by a ``parse_trains`` spec."""
    if b.schedule is not None:
        raise FitError("the blob carries a checkpoint schedule planned for the layers it "
                       "trains: choose what trains first, then plan (kilolearn plan)")
    set_trainable(b.graph, *parse_trains(trains))
    return b


# ---------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    dtype: str
    model: str
    epochs: int
    train_acc: float
    test_acc: float | None = None
    f32_test_acc: float | None = None  # a new int8 model: the float model before quantising
    trainable: str = ""
    notes: list[str] = field(default_factory=list)


def cnn_shape(n_inputs: int, hidden: int, shape: tuple[int, int, int] | None
              ) -> tuple[int, int, int]:
    """The CNN's input shape (square single-channel when the data gives none), or FitError."""
    if shape is None:
        side = int(round(np.sqrt(n_inputs)))
        if side * side != n_inputs:
            raise FitError(f"samples of {n_inputs} values are not a square image: save "
                           "them as images, x of shape (n, H, W) or (n, H, W, C), in an "
                           ".npz for the CNN")
        shape = (side, side, 1)
    if int(np.prod(shape)) != n_inputs:
        raise FitError(f"images of {'x'.join(map(str, shape))} hold {int(np.prod(shape))} "
                       f"values, the samples {n_inputs}")
    if hidden < 4:
        raise FitError(f"--hidden {hidden}: the CNN needs at least 4 (hidden/4 channels)")
    return shape


def build(arch: str, n_inputs: int, n_classes: int, hidden: int = 32,
          shape: tuple[int, int, int] | None = None, seed: int = 0) -> tuple[M.Model, M.Params]:
    """A new MLP (n_inputs-hidden-n_classes) or small CNN (input ``shape``, square
    single-channel by default) with initial parameters."""
    if arch == "mlp":
        m = M.mlp([n_inputs, hidden, n_classes])
    elif arch == "cnn":
        m = M.small_cnn(cnn_shape(n_inputs, hidden, shape), n_classes,
                        channels=max(1, hidden // 4))
    else:
        raise FitError(f"{arch!r}: expected mlp, cnn or a .klm blob")
    return m, m.init(seed)


def epoch_orders(n: int, epochs: int, seed: int):  # noqa: ANN202 - generator of index arrays
    """Each epoch's visiting order of n samples: a permutation drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield rng.permutation(n)


def fit_new(x: np.ndarray, y: np.ndarray, arch: str = "mlp", dtype: str = "s8",
            hidden: int = 32, shape: tuple[int, int, int] | None = None, epochs: int = 20,
            lr: float = 0.05, seed: int = 0, x_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None, n_classes: int | None = None
            ) -> tuple[bytes, FitResult]:
    """Train a new model in float32 on (x, y); int8: quantise it (calibration: the first
    samples). Returns the blob and what it reached."""
    n_classes = n_classes or int(y.max()) + 1
    if n_classes < 2:
        raise FitError("the labels hold one class: a classifier needs at least 2")
    m, p = build(arch, x.shape[1], n_classes, hidden, shape, seed)
    t = reference.F32Trainer(m.graph, p, lr=lr)
    for order in epoch_orders(len(x), epochs, seed):
        for i in order:
            t.step(x[i], int(y[i]))
    res = FitResult(dtype, f"{arch} {describe_graph(m.graph)}", epochs, 0.0)
    if dtype == "f32":
        blob = export.export_f32(m.graph, t.p)
    else:
        res.f32_test_acc = None if x_test is None else float(np.mean(t.predict(x_test) == y_test))
        qm = reference.quantize_model(m.graph, t.p, x[:CALIBRATION])
        blob = export.export_s8(qm)
    res.train_acc = evaluate(blob, x, y)
    if x_test is not None:
        res.test_acc = evaluate(blob, x_test, y_test)
    res.trainable = describe_trainable(m.graph)
    return blob, res


def fit_blob(blob: bytes, x: np.ndarray, y: np.ndarray, epochs: int = 20, lr: float = 0.05,
             seed: int = 0, x_test: np.ndarray | None = None,
             y_test: np.ndarray | None = None) -> tuple[bytes, FitResult]:
    """Continue training a blob on (x, y) in its own type: what it marks trainable trains."""
    b = export.read(blob)
    if b.schedule is not None:
        raise FitError("the blob carries a checkpoint schedule: fit the model before planning")
    tr = trainer(b, lr=lr, seed=seed)
    xs = encode(b, x)
    for order in epoch_orders(len(x), epochs, seed):
        for i in order:
            tr.step(xs[i], int(y[i]))
    if b.qmodel is not None:
        b.qmodel = tr.m
    else:
        b.params = tr.p
    out = reexport(b)
    dt = "s8" if b.qmodel is not None else "f32"
    res = FitResult(dt, f"blob {describe_graph(b.graph)}", epochs, evaluate(out, x, y),
                    None if x_test is None else evaluate(out, x_test, y_test),
                    trainable=describe_trainable(b.graph))
    return out, res


def describe_graph(g: Graph) -> str:
    """'64-32-10' for an MLP, else '8x8x1 -> 10, 3 layers with weights'."""
    with_w = [op for op in g.ops if op.has_params]
    n_in = int(np.prod(g.shapes[g.input]))
    if all(op.kind == "dense" for op in g.ops):
        return "-".join([str(n_in)] + [str(int(np.prod(g.shapes[op.output]))) for op in with_w])
    return (f"{'x'.join(map(str, g.shapes[g.input]))} -> {int(np.prod(g.shapes[g.output]))}, "
            f"{len(with_w)} layers with weights")


# ---------------------------------------------------------------------------- twin and eval


def trainer(b: export.Blob, lr: float = 0.05, seed: int = 1
            ) -> reference.S8Trainer | reference.F32Trainer:
    """The numpy twin of a device running blob ``b`` (CONFIG lr and seed)."""
    if b.qmodel is not None:
        return reference.S8Trainer(b.qmodel, lr=lr, seed=seed)
    assert b.params is not None
    return reference.F32Trainer(b.graph, b.params, lr=lr)


def encode(b: export.Blob, x: np.ndarray) -> np.ndarray:
    """Samples as the model takes them: int8 with the blob's input scale, or float32."""
    if b.qmodel is not None:
        return b.qmodel.quantize_input(x).reshape(len(x), -1)
    return np.ascontiguousarray(x, np.float32).reshape(len(x), -1)


def predict(blob: bytes | export.Blob, x: np.ndarray) -> np.ndarray:
    """Host (numpy) predictions of a blob, every class active."""
    b = export.read(blob) if isinstance(blob, bytes | bytearray) else blob
    return trainer(b).predict(encode(b, x))


def evaluate(blob: bytes | export.Blob, x: np.ndarray, y: np.ndarray) -> float:
    """Host (numpy) accuracy of a blob on (x, y)."""
    return float(np.mean(predict(blob, x) == y))
