"""Flash wear of on-device training (docs/flash-store.md): sector erases and bytes programmed per
1,000 training steps with a COMMIT every N steps, and the lifetime that gives on STM32F429ZI-like
flash (10,000 erase cycles per sector, 16 KB and 128 KB sectors).

The session runs on the host build with the file-backed NOR simulation (``kl_session --flash``),
the same store and commit code as on the boards; the wear comes from its STATS."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..device import build, protocol

#: STM32F429ZI: 2 MB in two banks of 4 x 16 KB, 1 x 64 KB, 7 x 128 KB sectors; 10k cycles;
#: x32 programming (4-byte writes) at 2.7-3.6 V; erased to 0xFF.
CYCLES = 10_000
PARTITIONS = {
    "4x16K": (4 * 16 * 1024, 16 * 1024),  # sectors 12-15 (bank 2)
    "3x128K": (3 * 128 * 1024, 128 * 1024),  # sectors 21-23
    "7x128K": (7 * 128 * 1024, 128 * 1024),  # sectors 17-23
}
WRITE_BLOCK = 4


@dataclass
class Row:
    partition: str
    sectors: int
    sector_kb: int
    commit_every: int
    steps: int
    commits: int
    erases_per_1k: float  # all sectors
    max_sector_erases_per_1k: float  # the most worn sector
    bytes_per_1k: float
    bytes_per_commit: float
    lifetime_steps: float  # until the most worn sector reaches CYCLES
    lifetime_commits: float
    years_at_1_step_per_s: float


def session_blob(seed: int = 0) -> bytes:
    """The split-digits session's int8 model (64 -> 128 frozen -> 32 -> 10)."""
    from ..device import session as S

    sc = S.Scenario()
    m = S.build_model(sc)
    rng = np.random.default_rng(seed)
    qm = S.reference.quantize_model(m.graph, m.init(seed),
                                    rng.uniform(0, 1, (4, 64)).astype(np.float32))
    return S.export.export_s8(qm)


def run_one(exe: Path, blob: bytes, partition: str, every: int, steps: int,
            seed: int = 0) -> Row:
    size, sector = PARTITIONS[partition]
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="kl-store-") as tmp:
        flash = Path(tmp) / "flash.bin"
        link = protocol.ProcessLink([str(exe), "--flash", str(flash), "--geometry",
                                     f"{size},{sector},{WRITE_BLOCK},0xFF"])
        client = protocol.Client(link)
        try:
            client.load(blob)
            info = client.info()
            base = client.stats()  # the LOAD's wear is not the training's
            xs = rng.integers(-128, 128, (256, info.n_inputs), dtype=np.int8)
            commits = 0
            for i in range(steps):
                client.train(int(i % info.n_classes), xs[i % len(xs)].tobytes())
                if (i + 1) % every == 0:
                    client.commit()
                    commits += 1
            st = client.stats()
        finally:
            client.close()
    er = np.array(st.sector_erases) - np.array(base.sector_erases)
    by = np.array(st.sector_bytes) - np.array(base.sector_bytes)
    k = 1000.0 / steps
    worst = float(er.max()) * k
    life = CYCLES / worst * 1000.0 if worst else float("inf")
    return Row(partition, size // sector, sector // 1024, every, steps, commits,
               float(er.sum()) * k, worst, float(by.sum()) * k,
               float(by.sum()) / commits if commits else 0.0,
               life, life / every, life / (365.25 * 86400))


def _duration(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:,.1f} days" if days < 365.25 else f"{days / 365.25:,.1f} years"


def run(a: argparse.Namespace) -> int:
    from ..cliargs import UsageError

    for every in a.every:
        if every * a.commits > MAX_STEPS:
            raise UsageError(f"--every {every} x --commits {a.commits} = "
                             f"{every * a.commits:,} training steps in a run, more than "
                             f"{MAX_STEPS:,}")
    exe = build.build("host", target="kl_session")
    blob = session_blob()
    rows = []
    for part in a.partitions:
        for every in a.every:
            steps = every * a.commits
            rows.append(run_one(exe, blob, part, every, steps))
    print(f"model: split-digits int8 session blob, {len(blob):,} bytes; STM32F429ZI-like flash: "
          f"{CYCLES:,} cycles, {WRITE_BLOCK}-byte writes")
    hdr = ["partition", "commit every", "commits/1k", "erases/1k", "worst sector/1k",
           "KB programmed/1k", "lifetime (steps)", "lifetime (commits)", "at 1 step/s"]
    out = [hdr]
    for r in rows:
        out.append([r.partition, f"{r.commit_every:,}", f"{1000 / r.commit_every:g}",
                    f"{r.erases_per_1k:.1f}", f"{r.max_sector_erases_per_1k:.2f}",
                    f"{r.bytes_per_1k / 1024:,.0f}", f"{r.lifetime_steps:,.0f}",
                    f"{r.lifetime_commits:,.0f}", _duration(r.lifetime_steps)])
    w = [max(len(row[i]) for row in out) for i in range(len(hdr))]
    for j, row in enumerate(out):
        print("  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(row)))
        if j == 0:
            print("  ".join("-" * x for x in w))
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


MAX_STEPS = 10_000_000  # training steps of one run (--every x --commits)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import IntRange, OutFile

    p.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=list(PARTITIONS))
    p.add_argument("--every", nargs="+", type=IntRange(1, 100_000), default=[10, 100, 1000],
                   help="commit every N training steps")
    p.add_argument("--commits", type=IntRange(1, 100_000), default=120,
                   help="commits per run (N x this many training steps; 120 divides evenly "
                   "over 2, 3 and 6 rotating slots)")
    p.add_argument("--json", type=OutFile(), help="write the rows as JSON to this file")
