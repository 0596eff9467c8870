"""Job images for the C runner (runner/kl_job.h) and parsing of its report.

A job carries a model blob, a data set already in the model's input type and the training
settings. The same image runs on the host (a file) and on a QEMU board (loaded into memory).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"KLJB"
VERSION = 1
HEADER_SIZE = 80
CMD_TRAIN, CMD_GRADS = 1, 2
FLAG_DUMP_WEIGHTS = 0x01
FLAG_PROFILE = 0x02
FLAG_UPDATE = 0x04  # set the update policy (kl_model_set_update_policy)
FLAG_PAGED = 0x08  # the blob in simulated NOR flash, a weight log beside it (kl_runner_paged.c)
FLAG_TARGETS = 0x10  # train targets (MSE, BCE losses): offset in bytes 72..75, not with paged
FLAG_OPTIM = 0x20  # optimiser options in bytes 80..95: optimizer, batch, Adam's betas and eps
OPTIMIZERS = {"sgd": 0, "adam": 1}  # kilolearn.h enum kl_optimizer
FLAG_FAR = 0x40  # a second arena region of far_size bytes (kl_arena_set_far): the schedule's region


def build(blob: bytes, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None = None,
          y_test: np.ndarray | None = None, *, cmd: int = CMD_TRAIN, lr: float = 0.05,
          momentum: float = 0.0, seed: int = 1, epochs: int = 1, n_steps: int = 0,
          dump_weights: bool = False, profile: bool = False, arena_size: int = 0,
          update: tuple[int, int] | None = None, paged: bool = False, log_size: int = 0,
          targets: np.ndarray | None = None, optimizer: str = "sgd", batch: int = 1,
          betas: tuple[float, float] = (0.0, 0.0), eps: float = 0.0,
          far_size: int = 0) -> bytes:
    """x arrays must already have the model's input dtype (float32 or int8). ``update``:
    (policy, per mille) for kl_model_set_update_policy (docs/selective-updates.md); None
    keeps the blob's policy. ``paged``: the runner stores the (paged) blob in simulated NOR flash
    and trains with a weight log of ``log_size`` bytes (0: all the memory left). ``targets``:
    per training sample a target vector in the model's dtype (losses MSE and sigmoid BCE,
    kl_train_step_target); None trains on the labels (an MSE model: toward its input).
    ``optimizer`` ("sgd", "adam"), ``batch`` (samples per update), Adam's ``betas`` and ``eps``
    (0: the engine's defaults 0.9, 0.999, 1e-8) go to kl_train_cfg_t."""
    if targets is not None and paged:
        raise ValueError("a job with targets is not paged")
    if x_test is None or y_test is None:
        x_test, y_test = x_train[:0], y_train[:0]
    parts: list[bytes] = []
    off = HEADER_SIZE

    def place(b: bytes) -> int:
        nonlocal off
        start = off
        pad = b"\0" * (-len(b) % 4)
        parts.append(b + pad)
        off += len(b) + len(pad)
        return start

    optim = optimizer != "sgd" or batch != 1 or any(betas) or eps
    if optim:  # the options right after the header
        place(struct.pack("<BxHfff", OPTIMIZERS[optimizer], batch, *betas, eps))
    blob_off = place(blob)
    trx = place(np.ascontiguousarray(x_train).tobytes())
    try_ = place(np.asarray(y_train, np.uint8).tobytes())
    tex = place(np.ascontiguousarray(x_test).tobytes())
    tey = place(np.asarray(y_test, np.uint8).tobytes())
    if targets is not None and (paged or far_size):
        raise ValueError("train targets take bytes 72..75: not with paged or far_size")
    if targets is not None:
        log_size = place(np.ascontiguousarray(targets).tobytes())  # bytes 72..75: its offset
    policy, permille = update if update is not None else (0, 0)
    body = struct.pack("<ffIHHIIIIIIIIIIIBxH", lr, momentum, seed & 0xFFFFFFFF, epochs,
                       (FLAG_DUMP_WEIGHTS if dump_weights else 0)
                       | (FLAG_PROFILE if profile else 0)
                       | (FLAG_UPDATE if update is not None else 0)
                       | (FLAG_PAGED if paged else 0)
                       | (FLAG_TARGETS if targets is not None else 0)
                       | (FLAG_OPTIM if optim else 0) | (FLAG_FAR if far_size else 0),
                       blob_off, len(blob), len(y_train), trx, try_, len(y_test), tex, tey,
                       n_steps, arena_size,
                       log_size if paged or targets is not None else far_size, policy,
                       permille) + b"".join(parts)
    total = 16 + len(body)
    crc = zlib.crc32(body) & 0xFFFFFFFF
    img = MAGIC + struct.pack("<HHII", VERSION, cmd, total, crc) + body
    assert len(img) == total
    return img


@dataclass
class Report:
    """What a runner printed: records by key, tensor dumps by name."""

    records: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    dumps: dict[str, list[bytes]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    text: str = ""

    def one(self, key: str) -> dict[str, int]:
        return self.records[key][-1]

    def dump(self, name: str, dtype: str, index: int = -1) -> np.ndarray:
        return np.frombuffer(self.dumps[name][index], dtype)


def parse(text: str) -> Report:
    rep = Report(text=text)
    for line in text.splitlines():
        if not line.startswith("KL "):
            continue
        parts = line.split()
        key = parts[1]
        if key == "dump":
            rep.dumps.setdefault(parts[2], []).append(bytes.fromhex(parts[3] if len(parts) > 3
                                                                    else ""))
        elif key == "error":
            rep.errors.append(line[len("KL error "):])
        else:
            rec: dict[str, int] = {}
            for k, v in zip(parts[2::2], parts[3::2], strict=False):
                try:
                    rec[k] = int(v)
                except ValueError:
                    pass
            rep.records.setdefault(key, []).append(rec)
    return rep
