"""What the ONNX and TFLite loaders share (kilolearn.formats.importer): the imported model,
the error that names what is unsupported, and the builder of the kilolearn graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.model import Graph, Op, Params
from ..core.reference import QModel


class UnsupportedModel(ValueError):
    """The model uses something kilolearn cannot run; the message names every node."""


@dataclass
class Imported:
    graph: Graph
    params: Params  # float32 (dequantised for an int8 TFLite model)
    source: str  # "onnx" | "tflite"
    names: list[str]  # per op: the source node(s) it came from
    layout: str = "hwc"  # "nchw": the source takes (N, C, H, W) inputs (see to_hwc)
    qmodel: QModel | None = None  # int8 TFLite: its quantisation mapped to power-of-two scales
    notes: list[str] = field(default_factory=list)  # fusions, checks, requantisation errors
    weight_err: dict[int, float] = field(default_factory=dict)  # op -> rel. requant error
    tflite_io: dict[str, tuple[float, int]] = field(default_factory=dict)  # in/out scale, zp

    def to_hwc(self, x: np.ndarray) -> np.ndarray:
        """Source-layout inputs (N, ...) -> kilolearn's flat HWC samples (N, features)."""
        x = np.asarray(x, np.float32)
        if self.layout == "nchw" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        return x.reshape(len(x), -1)


# --------------------------------------------------------------------------- common builder


class _Builder:
    def __init__(self, source: str):
        self.source = source
        self.shapes: list[tuple[int, int, int]] = []
        self.ops: list[Op] = []
        self.w: list[np.ndarray | None] = []
        self.b: list[np.ndarray | None] = []
        self.names: list[str] = []
        self.producer: dict[int, int] = {}
        self.notes: list[str] = []

    def tensor(self, shape: tuple[int, ...]) -> int:
        self.shapes.append(tuple(int(v) for v in shape))  # type: ignore[arg-type]
        return len(self.shapes) - 1

    def op(self, op: Op, name: str, w: np.ndarray | None = None,
           b: np.ndarray | None = None) -> int:
        self.ops.append(op)
        self.w.append(None if w is None else np.ascontiguousarray(w, np.float32))
        self.b.append(None if b is None else np.ascontiguousarray(b, np.float32))
        self.names.append(name)
        self.producer[op.output] = len(self.ops) - 1
        return op.output

    def conv_out(self, x: int, kernel: tuple[int, int], stride: int,
                 pad: tuple[int, int, int, int], name: str) -> tuple[int, int]:
        h, w, _ = self.shapes[x]
        t, left, bt, r = pad
        ho = (h + t + bt - kernel[0]) // stride + 1
        wo = (w + left + r - kernel[1]) // stride + 1
        if ho < 1 or wo < 1:
            raise UnsupportedModel(f"{name}: kernel {kernel} larger than the padded input")
        return ho, wo

    def graph(self, out: int) -> Graph:
        if not self.ops:
            raise UnsupportedModel("the model has no layer kilolearn can train")
        if self.ops[-1].output != out:
            raise UnsupportedModel("the model's output must be produced by its last layer")
        if self.ops[-1].act != "none":
            raise UnsupportedModel(f"the last layer ({self.names[-1]}) has an activation: "
                                   "kilolearn trains on logits (a trailing Softmax is fine)")
        return Graph(list(self.shapes), list(self.ops))



def _unsupported(bad: list[str], supported: tuple[str, ...], what: str) -> UnsupportedModel:
    return UnsupportedModel(
        f"{len(bad)} unsupported {what} node(s): " + "; ".join(bad) +
        f". Supported {what} ops: {', '.join(supported)}")
