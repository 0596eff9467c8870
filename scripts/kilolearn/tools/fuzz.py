"""Coverage-guided fuzzing with libFuzzer: build the targets of tests/fuzz/ with clang
(``-fsanitize=fuzzer,address,undefined``), run them for a bounded time on a copy of their seed
corpora, replay seeds and regression reproducers, and report executions, coverage and crashes.

    kilolearn fuzz                                  # every target, 60 s each
    kilolearn fuzz --targets kl_fuzz_session_lf --seconds 3600 --jobs 2
    kilolearn fuzz --replay                         # seeds + tests/fuzz/regressions/ once

Targets (tests/fuzz/): ``kl_fuzz_blob_lf`` (blob check, init, train, predict),
``kl_fuzz_session_lf`` (whole sessions through the byte feed, with a store, reboots and power
cuts), ``kl_fuzz_store_lf`` (the store's mount, LOAD and COMMIT on crafted images),
``kl_fuzz_wlog_lf`` (a paged model's weight log on crafted flash: mount, train, mount). The engine's
sources come from modules/kilolearn/sources.cmake. A crash leaves its reproducer in
build/fuzz/artifacts/<target>/ and the command exits 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..device.build import BuildError, repo_root

TARGETS: dict[str, list[str]] = {  # target -> extra sources (relative to the source root)
    "kl_fuzz_blob_lf": [],
    "kl_fuzz_session_lf": [],
    "kl_fuzz_store_lf": ["modules/kilolearn/port/posix/kl_store_file.c"],
    "kl_fuzz_wlog_lf": [],
}
MAX_LEN = {"kl_fuzz_blob_lf": 16384, "kl_fuzz_session_lf": 8192, "kl_fuzz_store_lf": 2048,
           "kl_fuzz_wlog_lf": 4096}
SANITIZE = "address,undefined"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fno-omit-frame-pointer",
          f"-fsanitize=fuzzer-no-link,{SANITIZE}", "-fno-sanitize-recover=all"]
LDFLAGS = [f"-fsanitize=fuzzer,{SANITIZE}", "-lm"]

_missing: str | None = None
_probed = False


def clang() -> str:
    return os.environ.get("KL_CLANG", "clang")


def fuzz_dir() -> Path:
    return repo_root() / "tests" / "fuzz"


def out_dir() -> Path:
    return Path(os.environ.get("KILOLEARN_BUILD_DIR", repo_root() / "build")) / "fuzz"


def missing() -> str | None:
    """Why the targets cannot be built here (no clang, no libFuzzer or sanitizer runtime), or
    None."""
    global _missing, _probed
    if _probed:
        return _missing
    _probed = True
    if shutil.which(clang()) is None:
        _missing = f"{clang()} not installed (apt-get install clang libfuzzer-<N>-dev)"
        return _missing
    with tempfile.TemporaryDirectory(prefix="kl-fuzz-probe-") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("#include <stddef.h>\n#include <stdint.h>\n"
                       "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
                       "{ (void)d; (void)n; return 0; }\n")
        r = subprocess.run([clang(), *LDFLAGS, str(src), "-o", str(Path(tmp) / "probe")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            _missing = f"clang cannot link a libFuzzer target (libfuzzer/libclang-rt dev " \
                       f"packages missing?): {last}"
    return _missing


def engine_sources(src: Path) -> list[Path]:
    """KL_ENGINE_SOURCES of modules/kilolearn/sources.cmake."""
    text = (src / "modules" / "kilolearn" / "sources.cmake").read_text()
    text = re.sub(r"#[^\n]*", "", text)  # CMake comments
    m = re.search(r"set\(KL_ENGINE_SOURCES\s+(.*?)\)", text, re.S)
    if m is None:
        raise BuildError("no KL_ENGINE_SOURCES in sources.cmake")
    return [src / "modules" / "kilolearn" / p.replace("${KL_ENGINE_DIR}/", "")
            for p in m.group(1).split()]


def _deps(obj: Path) -> list[Path] | None:
    """What an object was compiled from (clang -MMD's .d file beside it), or None."""
    d = obj.with_suffix(".d")
    if not d.is_file():
        return None
    text = d.read_text().replace("\\\n", " ")
    return [Path(t) for t in text.split(":", 1)[-1].split()]


def _compile(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"{what}: {' '.join(cmd)}\n{(r.stdout + r.stderr)[-4000:]}")


def build(targets: list[str] | None = None, src: Path | None = None, out: Path | None = None,
          jobs: int = 2) -> dict[str, Path]:
    """Compile the engine (instrumented) and link each target; returns target -> executable.
    Rebuilds what is older than its source, a header, or the flags."""
    if (why := missing()) is not None:
        raise BuildError(why)
    targets = targets or list(TARGETS)
    src = Path(src or repo_root()).resolve()
    out = Path(out or out_dir())
    obj_dir = out / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    eng = src / "modules" / "kilolearn"
    incs = [f"-I{eng / 'include'}", f"-I{eng / 'port'}", f"-I{eng / 'src'}", f"-I{fuzz_dir()}"]
    stamp = hashlib.sha1(" ".join([clang(), *CFLAGS, *LDFLAGS, str(src)]).encode()).hexdigest()
    stamp_file = out / "flags.sha1"
    fresh = stamp_file.is_file() and stamp_file.read_text() == stamp
    extra = sorted({e for t in targets for e in TARGETS[t]})
    sources = engine_sources(src) + [src / e for e in extra]

    def obj_of(c: Path) -> Path:
        return obj_dir / (str(c.relative_to(src)).replace("/", "_")[:-2] + ".o")

    def stale(o: Path, deps: list[Path] | None) -> bool:
        if not fresh or not o.is_file() or deps is None:
            return True
        t = o.stat().st_mtime
        return any(not d.is_file() or d.stat().st_mtime > t for d in deps)

    todo = [c for c in sources if stale(obj_of(c), _deps(obj_of(c)))]
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as ex:
        list(ex.map(lambda c: _compile([clang(), *CFLAGS, *incs, "-MMD", "-c", str(c), "-o",
                                        str(obj_of(c))], str(c)), todo))
    stamp_file.write_text(stamp)
    eng_objs = [obj_of(c) for c in engine_sources(src)]
    exes = {}
    for t in targets:
        exe = out / t
        harness = fuzz_dir() / f"{t}.c"
        objs = eng_objs + [obj_of(src / e) for e in TARGETS[t]]
        deps = _deps(exe)
        if todo or stale(exe, None if deps is None else [*deps, *objs]):
            _compile([clang(), *CFLAGS, *incs, "-MMD", "-MF", str(exe) + ".d", str(harness),
                      *map(str, objs), *LDFLAGS, "-o", str(exe)], t)
        exes[t] = exe
    return exes


@dataclass
class Result:
    target: str
    seconds: float = 0.0
    execs: int = 0
    exec_per_s: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0  # inputs in the working corpus at the end
    new_units: int = 0
    crashes: list[Path] = field(default_factory=list)  # reproducers written
    failures: int = 0  # crashes, timeouts and out-of-memory inputs (fork mode: all of them)
    returncode: int = 0
    log: Path | None = None
    excerpt: str = ""  # the sanitizer's / invariant's first lines of a crash


def corpus_dir(target: str) -> Path:
    return fuzz_dir() / "corpus" / target


def regressions_dir(target: str) -> Path:
    return fuzz_dir() / "regressions" / target


_NOISE = ("fuzzer::", "libc.so", "__sanitizer", "nptl/", "stdlib/", "signal/", "csu/",
          " in _start", "LLVMFuzzerTestOneInput ", "NOTE: libFuzzer", "Combine libFuzzer")


def _excerpt(text: str, n: int = 14) -> str:
    """The report of a failure: its first line and what follows, without the frames of
    libFuzzer and libc."""
    lines = [ln for ln in text.splitlines() if not any(k in ln for k in _NOISE)]
    for i, ln in enumerate(lines):
        if ("==ERROR" in ln or "runtime error" in ln or ln.startswith("kl_fuzz:")
                or "deadly signal" in ln):
            return "\n".join(lines[i:i + n])
    return "\n".join(lines[-n:])


def parse_output(target: str, text: str) -> Result:
    r = Result(target)
    stats = dict(re.findall(r"^stat::(\w+):\s*(\d+)", text, re.M))
    r.execs = int(stats.get("number_of_executed_units", 0))
    r.exec_per_s = int(stats.get("average_exec_per_sec", 0))
    r.new_units = int(stats.get("new_units_added", 0))
    cov = re.findall(r"cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?", text)
    if cov:
        r.cov, r.ft = int(cov[-1][0]), int(cov[-1][1])
        if cov[-1][2]:
            r.corpus = int(cov[-1][2])
    # fork mode (--keep-going): "#N: cov: C ft: F corp: K exec/s E oom/timeout/crash: a/b/c"
    fork = re.findall(r"^#(\d+): cov: (\d+) ft: (\d+) corp: (\d+) exec/s (\d+) "
                      r"oom/timeout/crash: (\d+)/(\d+)/(\d+)", text, re.M)
    if fork:
        f = [int(v) for v in fork[-1]]
        r.execs, r.cov, r.ft, r.corpus, r.exec_per_s = f[:5]
        r.failures = sum(f[5:])
    r.crashes = [Path(p) for p in re.findall(r"Test unit written to (\S+)", text)]
    r.failures = max(r.failures, len(r.crashes))
    return r


def run_target(target: str, exe: Path, seconds: int, work: Path | None = None,
               extra: list[str] | None = None, keep_going: bool = False,
               runs: int | None = None) -> Result:
    """Fuzz one target for ``seconds`` (or until ``runs`` executions) on a working copy of its
    seed corpus (build/fuzz/corpus/, kept between runs). Stops at the first crash, unless
    ``keep_going`` (libFuzzer's fork mode: every crash is recorded and the run goes on)."""
    work = Path(work or out_dir())
    corpus = work / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    if corpus_dir(target).is_dir():  # the seeds (regressions are replayed, not fuzzed from)
        shutil.copytree(corpus_dir(target), corpus, dirs_exist_ok=True)
    art = work / "artifacts" / target
    art.mkdir(parents=True, exist_ok=True)
    log = work / f"{target}.log"
    cmd = [str(exe), f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=20",
           "-rss_limit_mb=2048", f"-max_len={MAX_LEN.get(target, 4096)}",
           f"-artifact_prefix={art}/", *(["-fork=1", "-ignore_crashes=1", "-ignore_timeouts=1",
                                          "-ignore_ooms=1"] if keep_going else []),
           *([f"-runs={runs}"] if runs else []),
           *(extra or []), str(corpus)]
    start = time.time()
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=seconds * 2 + 600)
    text = p.stdout + p.stderr
    log.write_text(text)
    r = parse_output(target, text)
    r.seconds = seconds
    r.returncode = p.returncode
    r.log = log
    r.corpus = sum(1 for f in corpus.iterdir() if f.is_file()) or r.corpus
    if keep_going:  # fork mode counts coverage its own way: measure the corpus as one run does
        r.cov, r.ft = corpus_coverage(target, exe, corpus) or (r.cov, r.ft)
    r.crashes = sorted({*r.crashes, *(f for f in art.iterdir() if f.stat().st_mtime >= start)})
    r.failures = max(r.failures, len(r.crashes))
    if p.returncode != 0 or r.crashes:
        r.excerpt = _excerpt(text)
        if r.crashes:  # the reproducer's own report (fork mode logs elsewhere)
            ok, again = replay(target, exe, r.crashes[:1])
            r.excerpt = r.excerpt if ok else again
        else:  # no artifact (e.g. the harness could not start): still a failure
            r.crashes = [log]
        r.failures = max(r.failures, 1)
    return r


def corpus_coverage(target: str, exe: Path, corpus: Path) -> tuple[int, int] | None:
    """(cov, ft) of a corpus, run once (libFuzzer's INITED line); None if it crashes."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    p = subprocess.run([str(exe), "-runs=0", "-timeout=20", f"-max_len={MAX_LEN.get(target, 4096)}",
                        str(corpus)], capture_output=True, text=True, env=env, timeout=1800)
    m = re.findall(r"INITED cov: (\d+) ft: (\d+)", p.stdout + p.stderr)
    return (int(m[-1][0]), int(m[-1][1])) if m else None


def first_error(text: str) -> str:
    """The line that says what went wrong (an invariant, a sanitizer report)."""
    for ln in text.splitlines():
        if ("==ERROR" in ln or "runtime error" in ln or ln.startswith("kl_fuzz:")
                or "deadly signal" in ln):
            return re.sub(r"0x[0-9a-f]{6,}|\(/[^)]*\)", "", ln).strip()
    return "?"


def classify(target: str, exe: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Reproducers grouped by their first error line."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        ok, text = replay(target, exe, [f])
        groups.setdefault("no longer fails" if ok else first_error(text), []).append(f)
    return groups


def replay(target: str, exe: Path, files: list[Path]) -> tuple[bool, str]:
    """Run each input once (no fuzzing); (all fine, output)."""
    if not files:
        return True, ""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    p = subprocess.run([str(exe), "-runs=1", "-timeout=20", *map(str, files)],
                       capture_output=True, text=True, env=env, timeout=600)
    text = p.stdout + p.stderr
    if p.returncode != 0:
        running = re.findall(r"^Running: (\S+)", text, re.M)
        who = running[-1] if running else "?"
        return False, f"{target}: {who} fails\n{_excerpt(text, 20)}"
    return True, text


def inputs_of(target: str, regressions: bool = True) -> list[Path]:
    dirs = [corpus_dir(target)] + ([regressions_dir(target)] if regressions else [])
    return sorted(f for d in dirs if d.is_dir() for f in d.iterdir() if f.is_file())


# ---------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import InDir, IntRange

    p.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS),
                   help="which targets (default: all)")
    p.add_argument("--seconds", type=IntRange(1, 7 * 24 * 3600), default=60,
                   help="fuzzing time per target")
    p.add_argument("--jobs", type=IntRange(1, 64), default=1,
                   help="targets fuzzed at the same time (one libFuzzer process each)")
    p.add_argument("--runs", type=IntRange(1, 1 << 40), default=None,
                   help="stop a target after this many executions (or --seconds, first)")
    p.add_argument("--keep-going", action="store_true",
                   help="record every crash and go on (libFuzzer fork mode) instead of stopping "
                   "at the first")
    p.add_argument("--replay", action="store_true",
                   help="only run the seed corpora and tests/fuzz/regressions/ once each")
    p.add_argument("--src", type=InDir(), default=None,
                   help="build the engine from another source tree (e.g. an older checkout)")


def run(a: argparse.Namespace) -> int:
    from tabulate import tabulate

    try:
        exes = build(a.targets, src=Path(a.src) if a.src else None, jobs=max(2, a.jobs))
    except BuildError as e:
        print(f"kilolearn fuzz: {e}")
        return 2
    if a.replay:
        bad = 0
        for t in a.targets:
            files = inputs_of(t)
            ok, text = replay(t, exes[t], files)
            print(f"{t}: {len(files)} inputs {'ok' if ok else 'FAILED'}")
            if not ok:
                print(text)
                bad += 1
        return 1 if bad else 0
    print(f"kilolearn fuzz: {', '.join(a.targets)}, {a.seconds} s each, {a.jobs} at a time "
          f"(logs and reproducers in {out_dir()})", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as ex:
        results = list(ex.map(lambda t: run_target(t, exes[t], a.seconds,
                                                   keep_going=a.keep_going, runs=a.runs),
                              a.targets))
    rows = [[r.target, f"{r.execs:,}", f"{r.exec_per_s:,}", r.cov, r.ft, r.corpus,
             r.failures] for r in results]
    print(tabulate(rows, headers=["target", "executions", "exec/s", "cov", "ft", "corpus",
                                  "crashes"]))
    failed = [r for r in results if r.failures]
    for r in failed:
        print(f"\n{r.target}: exit {r.returncode}, {len(r.crashes)} reproducers in "
              f"{r.crashes[0].parent if r.crashes else '?'}\n{r.excerpt}")
        if a.keep_going and len(r.crashes) > 1:
            for line, files in classify(r.target, exes[r.target], r.crashes[:50]).items():
                print(f"  {len(files):4d} x {line[:150]}  (e.g. {files[0].name})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kilolearn.tools.fuzz", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
