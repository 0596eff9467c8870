"""Import trained models from ONNX and int8/float TFLite into a kilolearn Graph + weights.

    imp = load("model.onnx")                # or "model.tflite"
    set_trainable(imp, last=3)              # the last 3 layers with weights train
    blob = export.export_f32(imp.graph, imp.params)
    blob = export.export_s8(imp.qmodel or reference.quantize_model(imp.graph, imp.params, calib))

What is supported, the fusions done here and the quantisation policy for int8 TFLite (what is
kept exactly, what is re-quantised to kilolearn's power-of-two scales) are in docs/import.md.
Anything outside the supported set raises :class:`UnsupportedModel`, naming every offending
node and the supported ops: there is no silent fallback.

The loaders live in import_onnx and import_tflite, what they share in import_common; every name
is re-exported here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .import_common import Imported, UnsupportedModel, _Builder, _unsupported  # noqa: F401
from .import_onnx import (  # noqa: F401
    BN_CHECK_TOL,
    ONNX_OPS,
    _fold_bn,
    _fold_bn_checked,
    load_onnx,
)
from .import_tflite import TFLITE_OPS, _map_quantisation, _pow2_exp, load_tflite  # noqa: F401


def set_trainable(imp: Imported, last: int | None = None, what: str = "all") -> list[int]:
    """Choose what trains: the last ``last`` layers with weights (all when None), and ``what``
    ('all' = weights and biases, 'bias' = only the biases, the weights stay frozen and are
    read in place, 'none' = frozen). Returns the indices of the trainable ops
    (``core.fit.set_trainable`` on the imported graph)."""
    from ..core import fit

    if what not in ("all", "none", "bias"):
        raise UnsupportedModel(f"--train {what!r}: expected all, none or bias")
    if last is not None and last < 0:
        raise UnsupportedModel("--train-last must be >= 0")
    return fit.set_trainable(imp.graph, last, what)


def load(path: str | Path) -> Imported:
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return load_onnx(p)
    if p.suffix.lower() == ".tflite":
        return load_tflite(p.read_bytes())
    raise UnsupportedModel(f"{p.name}: expected a .onnx or .tflite file")


def summary(imp: Imported) -> str:
    """A human-readable table of the imported graph."""
    g = imp.graph
    lines = [f"{imp.source} model: input {g.shapes[g.input]}, {len(g.ops)} ops, "
             f"{g.n_classes} outputs"]
    for i, op in enumerate(g.ops):
        n_par = 0 if not op.has_params else int(np.prod(g.weight_shape(i))) + \
            int(np.size(imp.params.biases[i]))
        err = f"  w-requant {imp.weight_err[i]:.2%}" if i in imp.weight_err else ""
        lines.append(f"  {i:2d} {op.kind:8s} {op.act:5s} {str(g.shapes[op.output]):14s} "
                     f"params {n_par:6d} {'train' if op.trainable else 'frozen':6s} "
                     f"{imp.names[i]}{err}")
    lines += [f"  note: {s}" for s in imp.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def add_arguments(p) -> None:
    from .. import cliargs as ca

    p.add_argument("model", type=ca.InFile("model", (".onnx", ".tflite")),
                   help="a .onnx or .tflite file")
    p.add_argument("-o", "--output", type=ca.OutFile(),
                   help="the .klm blob to write (default: MODEL.klm)")
    p.add_argument("--dtype", choices=["f32", "s8"],
                   help="blob type (default: s8 for an int8 TFLite model, else f32)")
    p.add_argument("--train-last", type=ca.IntRange(0, 65535), metavar="N",
                   help="train only the last N layers with weights (default: all)")
    p.add_argument("--train", choices=["all", "none", "bias"], default="all",
                   help="what trains in the chosen layers (bias: needs engine support)")
    p.add_argument("--calib", metavar="X.npy", type=ca.InFile("calibration array", (".npy",)),
                   help="calibration inputs for --dtype s8 from a float model, in the model's "
                        "own layout (N, C, H, W for ONNX); default: 64 uniform [0, 1) samples")
    p.add_argument("--requantize", action="store_true",
                   help="int8 TFLite: calibrate afresh instead of keeping its quantisation")


def load_checked(path: str | Path) -> Imported:
    """``load`` for the command line: anything a broken or foreign file makes the parsers
    raise becomes an UnsupportedModel naming the file; a model with fewer than two outputs is
    refused (kilolearn trains classifiers)."""
    p = Path(path)
    kind = "ONNX" if p.suffix.lower() == ".onnx" else "TFLite"
    if kind == "TFLite":
        with open(p, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise UnsupportedModel(f"{p}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        imp = load(p)
    except UnsupportedModel as e:
        raise UnsupportedModel(f"{p.name}: {e}") from None
    except ModuleNotFoundError as e:
        raise UnsupportedModel(f"importing {kind} needs the {e.name} package: pip install "
                               "'kilolearn[import]'") from None
    except (MemoryError, RecursionError) as e:
        raise UnsupportedModel(f"{p}: not a valid {kind} model ({type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - a malformed file may break a parser anywhere
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise UnsupportedModel(f"{p}: not a valid {kind} model ({type(e).__name__}: "
                               f"{msg})") from None
    n_out = int(np.prod(imp.graph.shapes[imp.graph.output]))
    if n_out < 2:
        raise UnsupportedModel(f"{p.name}: the model has {n_out} output(s); kilolearn trains "
                               "classifiers (at least 2 classes)")
    return imp


def _calibration(imp: Imported, path: str) -> np.ndarray:
    """--calib: (N, ...) inputs in the model's own layout -> (N, features) finite float32."""
    from ..cliargs import UsageError

    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"--calib {path}: not a .npy array ({e})") from None
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "biuf" or raw.ndim < 1 or \
            len(raw) == 0:
        raise UsageError(f"--calib {path}: expected a numeric (N, ...) array of N >= 1 inputs")
    n_in = imp.graph.n_inputs
    with np.errstate(over="ignore", invalid="ignore"):
        calib = imp.to_hwc(raw)
    if calib.shape[1] != n_in:
        raise UsageError(f"--calib {path}: inputs of {calib.shape[1]} values (shape "
                         f"{raw.shape}), the model takes {n_in}")
    if not np.isfinite(calib).all():
        raise UsageError(f"--calib {path}: NaN, infinite or too large values")
    return calib


def run(a) -> int:
    from ..cliargs import UsageError, check_writable
    from ..core.reference import quantize_model
    from . import export

    out = Path(a.output or Path(a.model).with_suffix(".klm"))
    if not a.output:
        try:
            check_writable(str(out))
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"cannot write the default output: {e} (give -o)") from None
    imp = load_checked(a.model)
    set_trainable(imp, a.train_last, a.train)
    dtype = a.dtype or ("s8" if imp.qmodel is not None else "f32")
    calibrate = dtype == "s8" and (imp.qmodel is None or a.requantize)
    if a.calib and not calibrate:
        raise UsageError(f"--calib {a.calib}: not used: only an int8 blob from a float model "
                         "(--dtype s8) or --requantize calibrates")
    calib = _calibration(imp, a.calib) if a.calib else None
    if dtype == "f32":
        blob = export.export_f32(imp.graph, imp.params)
    elif imp.qmodel is not None and not a.requantize:
        blob = export.export_s8(imp.qmodel)
    else:
        if calib is None:
            calib = np.random.default_rng(0).uniform(0, 1, (64, imp.graph.n_inputs))
            imp.notes.append("int8 scales calibrated on 64 uniform [0, 1) inputs (give --calib "
                             "with real data)")
        blob = export.export_s8(quantize_model(imp.graph, imp.params, calib))
    out.write_bytes(blob)
    print(summary(imp))
    print(f"wrote {out}: {len(blob):,} bytes, {dtype}, "
          f"{sum(op.trainable for op in imp.graph.ops)} trainable layer(s)")
    return 0
