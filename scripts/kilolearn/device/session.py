"""Continual-learning sessions: start (or reach) a device, stream a class-incremental scenario to
it over the session protocol, and run the same scenario in the numpy reference.

Default scenario: split digits, 5 tasks of 2 classes. The model is a frozen random backbone
(Dense 128, ReLU: the latent-replay cut) and a trainable head (Dense 32, ReLU, Dense 10); the
head's logits are masked to the classes seen so far. Strategies: ``replay`` (class-balanced
latent replay), ``naive`` (fine-tuning only on the new task) and ``joint`` (all classes at once,
the upper bound).

Fashion-MNIST (28x28): a CNN backbone pretrained on the host on images the session never sees
(core/backbone.py), frozen and read in place from the device's flash, its 64-value embedding
the latent; the head learns the classes on the device.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..core import backbone as bb
from ..core import data as datasets
from ..core import model as M
from ..core import reference, selective
from ..core.replay import ReplayBuffer
from ..formats import export
from . import build, protocol, qemu

STRATEGIES = ("replay", "naive", "joint")


@dataclass
class Scenario:
    epochs: int = 3
    lr: float = 0.05
    replay_cap: int = 200
    replay_ratio: int = 2
    backbone: int = 128
    seed: int = 2
    classes_per_task: int = 2
    update: tuple[str, float] | None = None  # selective-update policy and fraction updated
    #: when replay_cap latents do not fit the device's arena: hold as many as fit (else
    #: DoesNotFit says how many would)
    fit_replay: bool = False
    #: image data sets: the backbone, a CNN pretrained on the data set's pool of images the
    #: session never sees -- every class ("all") or the first task's ("first"); None: a
    #: random frozen Dense(backbone) layer
    pretrain: str | None = "all"
    cnn: bb.CnnSpec = field(default_factory=bb.CnnSpec)
    series: bb.SeriesSpec = field(default_factory=bb.SeriesSpec)
    pretraining: bb.Pretraining = field(default_factory=bb.Pretraining)
    #: the replay buffer's latents in the device's replay store (flash) instead of its arena
    #: (docs/replay.md)
    replay_flash: bool = False


class DoesNotFit(ValueError):
    """The scenario asks the device for more arena than it has."""


@dataclass
class Result:
    strategy: str
    acc_after_task: list[float] = field(default_factory=list)  # on all classes seen so far
    task_acc: list[list[float]] = field(default_factory=list)  # [after task t][task k]
    reference_acc_after_task: list[float] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    replay_cap: int = 0  # latents the replay buffer held (0: no replay)
    # what the device's counter (stats' train_insn) counts: "insn", retired instructions (a
    # QEMU board started here with -icount shift=0), or "cycles", the device's own cycle
    # counter (a board, or a QEMU without -icount, behind --port): not instructions
    counter: str = "insn"

    def as_dict(self) -> dict:
        return asdict(self)


def build_model(sc: Scenario, n_inputs: int = 64, n_classes: int = 10) -> M.Model:
    return M.Model([M.Input((n_inputs,)), M.Dense(sc.backbone, "relu", trainable=False),
                    M.Dense(32, "relu"), M.Dense(n_classes), M.SoftmaxCrossEntropy()])


#: scenario settings that differ by data set (the rest: Scenario's defaults): BasicMotions
#: has 10 recordings per class, so more epochs at a smaller step
DATA_DEFAULTS: dict[str, dict] = {"basicmotions": {"epochs": 10, "lr": 0.01}}


def load_data(name: str) -> datasets.Dataset:
    """A scenario's data: digits (8x8, features), or Fashion-MNIST at 28x28 with 3,000 training
    and 1,000 test images and a pretraining pool of the next 20,000."""
    if name == "fashion":
        return datasets.fashion(n_train=3000, n_test=1000, size=28,
                                n_pool=bb.Pretraining().n)
    return datasets.load(name)  # digits, basicmotions


def scenario_model(sc: Scenario, ds: datasets.Dataset
                   ) -> tuple[M.Graph, M.Params, int, np.ndarray]:
    """The scenario's model: graph, parameters, the latent-replay cut (the frozen backbone's
    output tensor) and the int8 calibration images. Images with a pretraining pool (and
    ``sc.pretrain``): the pretrained CNN, calibrated on the images it was pretrained on; else the
    random Dense backbone, calibrated on the first training samples; time series (a shape
    of height 1): the random 1-D conv backbone, calibrated on the first task's training
    series (what the device has first)."""
    if sc.pretrain is not None and ds.shape is not None and ds.x_pool is not None:
        assert ds.y_pool is not None
        spec = replace(sc.cnn, shape=ds.shape)
        first = tasks_of(ds, sc.classes_per_task)[0]
        pre = replace(sc.pretraining, source=sc.pretrain)
        m, p, cut, seen = bb.pretrained_cnn(spec, pre, ds.x_pool, ds.y_pool,
                                            ds.n_classes, first, sc.seed, build.cache_dir())
        return m.graph, p, cut, seen[:200]
    if ds.shape is not None and ds.shape[0] == 1:
        m, p, cut = bb.series_model(sc.series, ds.shape, ds.n_classes, sc.seed)
        first = tasks_of(ds, sc.classes_per_task)[0]
        return m.graph, p, cut, ds.x_train[np.isin(ds.y_train, first)][:200]
    m = build_model(sc, ds.x_train.shape[1], ds.n_classes)
    return m.graph, m.init(sc.seed), m.graph.ops[0].output, ds.x_train[:200]


def tasks_of(ds: datasets.Dataset, per_task: int) -> list[list[int]]:
    return [list(range(c, min(c + per_task, ds.n_classes)))
            for c in range(0, ds.n_classes, per_task)]


# ---------------------------------------------------------------------------- devices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def open_device(board: str = "mps2-an386", url: str | None = None,
                sanitize: bool = False, timeout: float = 20.0) -> Iterator[protocol.Client]:
    """A client for a device: a pyserial URL, the host build, or a QEMU board started here with
    its UART on a local TCP socket. ``timeout``: seconds to wait for each reply."""
    if url is not None:
        link: protocol.Link = protocol.SerialLink(url)
        proc = None
    elif board == "host":
        exe = build.build("host", sanitize=sanitize, target="kl_session")
        link = protocol.ProcessLink([str(exe)])
        proc = None
    elif board == "host-pty":  # the host build behind a pseudo-terminal, reached by pyserial
        import os
        import pty
        import tty

        exe = build.build("host", sanitize=sanitize, target="kl_session")
        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        proc = subprocess.Popen([str(exe)], stdin=master, stdout=master,
                                stderr=subprocess.DEVNULL)
        os.close(master)
        link = protocol.SerialLink(os.ttyname(slave))
        os.close(slave)
    else:
        elf = build.build(board, target="kl_session")
        port = _free_port()
        cmd = qemu.qemu_command(elf, board)
        i = cmd.index("-nographic")
        cmd[i:i + 1] = ["-display", "none",
                        "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        link = _connect(f"socket://127.0.0.1:{port}", proc)
    try:
        client = protocol.Client(link, timeout=timeout)
        # the emulated board's (or host build's) process: what a power-loss test switches off
        client.process = proc or getattr(link, "proc", None)  # type: ignore[attr-defined]
        # only a QEMU board started here runs with -icount shift=0: its counter counts
        # instructions; a device behind a port counts its own cycles
        client.counter = "cycles" if url is not None else "insn"  # type: ignore[attr-defined]
        yield client
    finally:
        link.close()
        if proc is not None:
            proc.kill()
            proc.wait()


def _connect(url: str, proc: subprocess.Popen) -> protocol.SerialLink:
    end = time.monotonic() + 20
    while True:
        try:
            return protocol.SerialLink(url)
        except Exception as e:  # QEMU not listening yet
            if proc.poll() is not None or time.monotonic() > end:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"cannot reach the emulated board: {e} {err}") from e
            time.sleep(0.05)


# ---------------------------------------------------------------------------- scenario


class _Reference:
    """The same session in numpy: int8 trainer + replay twin, step for step."""

    def __init__(self, qm: reference.QModel, sc: Scenario, replay: bool, n_classes: int,
                 cut: int):
        self.t = reference.S8Trainer(qm, lr=sc.lr, seed=sc.seed)
        if sc.update is not None:
            self.t.set_update_policy(*sc.update)
        self.mask = np.zeros(n_classes, bool)
        self.t.class_mask = self.mask
        self.cut = cut
        self.buf = ReplayBuffer(sc.replay_cap, n_classes, sc.seed ^ 0x9E3779B9) if replay \
            else None
        self.ratio = sc.replay_ratio

    def train(self, x: np.ndarray, label: int) -> None:
        self.mask[label] = True
        self.t.step(x, label)
        if self.buf is not None:
            self.buf.add(self.t._fw.acts[self.cut].reshape(-1), label)
            for _ in range(self.ratio):
                k = self.buf.pick()
                self.t.step(self.buf.latents[k], self.buf.labels[k], start=self.cut)

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return self.t.predict(xs)


def replay_bytes(cap: int, latent: int, n_classes: int) -> int:
    """Arena bytes of a replay buffer (kl_replay_reserve): the latents (each on a 4-byte
    boundary), 2 cap + 2 bytes of labels, 2 and 4 bytes per class, each part 4-aligned."""
    def a4(n: int) -> int:
        return (n + 3) // 4 * 4

    return cap * a4(latent) + a4(2 * cap + 2) + a4(2 * n_classes) + 4 * n_classes


def _fit_replay(client: protocol.Client, cap: int, cfg: dict, latent: int, n_classes: int,
                fit: bool) -> tuple[int, str]:
    """After CONFIG with ``cap`` latents failed with KL_ENOMEM: the arena the model takes (a
    CONFIG without latents, then STATS) and the largest capacity that fits the arena INFO
    reported. Returns (capacity, note) when ``fit``, else raises DoesNotFit."""
    arena = (client.last_info or client.info()).arena_size
    try:
        client.config(replay_cap=0, **cfg)
    except protocol.DeviceError as e:
        if e.status != ENOMEM:
            raise
        raise DoesNotFit(f"the model does not fit the device's {arena:,}-byte arena") from None
    base = client.stats().arena_used - replay_bytes(0, latent, n_classes)
    lo, hi = 0, max(0, (arena - base) // max(latent, 1)) + 1
    while hi - lo > 1:  # the largest capacity whose buffer fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if base + replay_bytes(mid, latent, n_classes) <= arena else (lo, mid)
    what = (f"replay capacity {cap} latents ({replay_bytes(cap, latent, n_classes):,} B) does "
            f"not fit the device's {arena:,}-byte arena, the model takes {base:,} B")
    if lo < 1:
        raise DoesNotFit(f"{what}: no replay buffer fits (a latent takes {latent} B)")
    if not fit:
        raise DoesNotFit(f"{what}: at most {lo} latents fit")
    return lo, f"{what}: using {lo} latents"


ENOMEM, ENOSPC, ENOTSUP = -12, -28, -134


def run(client: protocol.Client, strategy: str, sc: Scenario | None = None,
        ds: datasets.Dataset | None = None, with_reference: bool = True,
        progress: Callable[[str], None] | None = None,
        note: Callable[[str], None] | None = None) -> Result:
    """Run one strategy of the class-incremental scenario on the device (and in numpy).
    A replay buffer of ``sc.replay_cap`` latents that does not fit the device's arena raises
    DoesNotFit, or with ``sc.fit_replay`` shrinks to what fits (said through ``note``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}")
    sc = sc or Scenario()
    ds = ds or datasets.digits()
    g, p, cut, calib = scenario_model(sc, ds)
    qm = reference.quantize_model(g, p, calib)
    xq, xt = qm.quantize_input(ds.x_train), qm.quantize_input(ds.x_test)
    replay = strategy == "replay"
    t0 = time.monotonic()
    client.load(export.export_s8(qm))
    cfg = dict(lr=sc.lr, seed=sc.seed, cut=cut if replay else protocol.NO_CUT,
               replay_ratio=sc.replay_ratio if replay else 0, classes=b"",
               update=None if sc.update is None else
               (selective.policy_id(sc.update[0]), selective.permille(sc.update[1])))
    if replay and sc.replay_flash:
        cfg["replay_where"] = protocol.REPLAY_FLASH
    cap = sc.replay_cap if replay else 0
    try:
        client.config(replay_cap=cap, **cfg)
    except protocol.DeviceError as e:
        if replay and sc.replay_flash and e.status in (ENOSPC, ENOTSUP):
            size = (client.last_info or client.info()).replay_store_size
            raise DoesNotFit(f"{cap} latents do not fit the device's replay store ({size:,} B)"
                             if size else "the device has no replay store") from None
        if not (replay and e.status == ENOMEM) or sc.replay_flash:
            raise
        latent = int(np.prod(g.shapes[cut]))  # int8
        cap, msg = _fit_replay(client, cap, cfg, latent, ds.n_classes, sc.fit_replay)
        if note is not None:
            note(msg)
        client.config(replay_cap=cap, **cfg)
        sc = replace(sc, replay_cap=cap)
    ref = _Reference(qm, sc, replay, ds.n_classes, cut) if with_reference else None
    res = Result(strategy, replay_cap=cap, counter=getattr(client, "counter", "insn"))
    tasks = tasks_of(ds, sc.classes_per_task)
    rng = np.random.default_rng(sc.seed)
    if strategy == "joint":  # one task holding every class, as many steps as replay takes
        tasks = [sorted(c for t in tasks for c in t)]
        epochs = sc.epochs * (1 + sc.replay_ratio)
    else:
        epochs = sc.epochs
    seen: list[int] = []
    for ti, classes in enumerate(tasks):
        idx = np.flatnonzero(np.isin(ds.y_train, classes))
        for e in range(epochs):
            order = rng.permutation(idx)
            for n, i in enumerate(order):
                client.train(int(ds.y_train[i]), xq[i].tobytes())
                if ref is not None:
                    ref.train(xq[i], int(ds.y_train[i]))
                if progress and n % 100 == 0:
                    progress(f"{strategy}: task {ti + 1}/{len(tasks)} epoch {e + 1}/{epochs} "
                             f"sample {n}/{len(order)}")
        seen += classes
        test = np.flatnonzero(np.isin(ds.y_test, seen))
        preds = np.array([client.eval(int(ds.y_test[i]), xt[i].tobytes())[0] for i in test])
        ok = preds == ds.y_test[test]
        res.acc_after_task.append(float(ok.mean()))
        res.task_acc.append([float(ok[np.isin(ds.y_test[test], c)].mean()) for c in tasks[:ti + 1]])
        if ref is not None:
            res.reference_acc_after_task.append(
                float((ref.predict(xt[test]) == ds.y_test[test]).mean()))
        res.stats.append(asdict(client.stats()))
    res.seconds = time.monotonic() - t0
    return res


def task_table(r: dict) -> str:
    """One strategy's table, from a Result.as_dict() record: per task the accuracy on the
    classes seen so far (device, numpy twin), per task, the steps, instructions per new sample,
    arena peak, latents held and store bytes written."""
    from tabulate import tabulate

    flash = any(s.get("replay_where", 0) != protocol.REPLAY_ARENA for s in r["stats"])
    rows = []
    for t, accs in enumerate(r["task_acc"]):
        s = r["stats"][t]
        rows.append([t + 1, f"{100 * r['acc_after_task'][t]:.1f}",
                     f"{100 * r['reference_acc_after_task'][t]:.1f}"
                     if r["reference_acc_after_task"] else "-",
                     " ".join(f"{100 * v:.0f}" for v in accs),
                     f"{s['train_steps'] + s['replay_steps']:,}",
                     f"{s['train_insn'] / max(s['train_steps'], 1):,.0f}"
                     if s["train_insn"] else "n/a",
                     f"{s['arena_peak']:,}", s["replay_count"], f"{s['store_bytes_written']:,}"]
                    + ([f"{s['replay_bytes_written']:,}", s["replay_erases"]] if flash else []))
    return tabulate(rows, headers=["task", "acc seen %", "numpy %", "per-task acc %", "steps",
                                   "insn/new sample" if r.get("counter", "insn") == "insn"
                                   else "device cycles/new sample (not insn)", "arena peak",
                                   "replay", "store bytes"]
                    + (["replay flash bytes", "erases"] if flash else []), disable_numparse=True)


def summary_table(results: list[dict]) -> str:
    """The summary ``kilolearn session`` ends with, from Result.as_dict() records: per
    strategy the accuracy on all classes after the last task (device, numpy twin) and the mean
    of the per-task accuracies."""
    from tabulate import tabulate

    return tabulate([[r["strategy"], f"{100 * r['acc_after_task'][-1]:.2f} %",
                      f"{100 * r['reference_acc_after_task'][-1]:.2f} %"
                      if r["reference_acc_after_task"] else "-",
                      f"{100 * float(np.mean(r['task_acc'][-1])):.2f} %"] for r in results],
                    headers=["strategy", "device", "numpy reference", "average task accuracy"])


def plot(results: list[Result], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        xs = np.arange(1, len(r.acc_after_task) + 1)
        if r.strategy == "joint":
            ax.axhline(100 * r.acc_after_task[-1], ls="--", color="gray", label="joint")
        else:
            ax.plot(xs, 100 * np.array(r.acc_after_task), marker="o", label=r.strategy)
            ax.set_xticks(xs)
    ax.set_xlabel("task (2 new classes each)")
    ax.set_ylabel("accuracy on classes seen so far (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("class-incremental split digits, int8 on device")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def raw_rate(client: protocol.Client, frame_size: int, n: int = 2000) -> float:
    """Bytes/s of the link itself: frames of ``frame_size`` bytes with a damaged CRC pushed back
    to back; the device rejects each at once (a NAK), so only the link and framing limit."""
    junk = protocol.pack(protocol.TRAIN, client.seq + 10, b"\0" * (frame_size - 15))
    junk = junk[:-5] + bytes([junk[-5] ^ 0xFF or 1]) + junk[-4:]
    t0 = time.monotonic()
    for start in range(0, n, 200):
        block = min(200, n - start)
        client.link.write(junk * block)
        for _ in range(block):
            client.link.read_frame(30)
    return n * len(junk) / (time.monotonic() - t0)


def bench_link(client: protocol.Client, n: int = 2000, sc: Scenario | None = None,
               ds: datasets.Dataset | None = None) -> dict[str, float]:
    """TRAIN streaming rate (stop-and-wait, the protocol's window of one) against the raw rate
    of the same link: frames of the same size pushed back to back, which the device rejects
    at once (NAKs), so only the link and the framing limit them."""
    sc = sc or Scenario()
    ds = ds or datasets.digits()
    m = build_model(sc, ds.x_train.shape[1], ds.n_classes)
    qm = reference.quantize_model(m.graph, m.init(sc.seed), ds.x_train[:200])
    xq = qm.quantize_input(ds.x_train)
    client.load(export.export_s8(qm))
    client.config(lr=sc.lr, cut=protocol.NO_CUT, replay_cap=0, replay_ratio=0, classes=b"")
    size = len(protocol.pack(protocol.TRAIN, 1, b"\0" * (2 + xq.shape[1])))
    t0 = time.monotonic()
    for k in range(n):
        i = k % len(xq)
        client.train(int(ds.y_train[i]), xq[i].tobytes())
    t_train = time.monotonic() - t0
    raw = raw_rate(client, size, n)
    return {"frame_bytes": size, "train_frames_per_s": n / t_train,
            "train_bytes_per_s": n * size / t_train, "raw_frames_per_s": raw / size,
            "raw_bytes_per_s": raw, "fraction_of_raw": n * size / t_train / raw,
            "uart_115200_frames_per_s": 11520 / size}
