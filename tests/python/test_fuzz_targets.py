"""libFuzzer targets (tests/fuzz/, built by kilolearn.tools.fuzz with clang and
-fsanitize=fuzzer,address,undefined): the committed seed corpora and the reproducers of fixed
crashes (tests/fuzz/regressions/<target>/) replayed once each, then every target fuzzed for a
bounded time (KL_FUZZ_SECONDS, default 25 s each). `kilolearn fuzz --seconds N` runs them
longer."""

from __future__ import annotations

import os
import shutil

import pytest

from kilolearn.tools import fuzz

pytestmark = pytest.mark.skipif(fuzz.missing() is not None, reason=str(fuzz.missing()))

SECONDS = int(os.environ.get("KL_FUZZ_SECONDS", "25"))


@pytest.fixture(scope="module")
def exes():
    return fuzz.build(jobs=2)


@pytest.mark.parametrize("target", list(fuzz.TARGETS))
def test_seeds_and_regressions_replay_clean(exes, target):
    files = fuzz.inputs_of(target)
    assert any(f.parent == fuzz.corpus_dir(target) for f in files), "no seed corpus"
    ok, text = fuzz.replay(target, exes[target], files)
    assert ok, text


@pytest.mark.parametrize("target", list(fuzz.TARGETS))
def test_fuzz_bounded(exes, target, tmp_path):
    r = fuzz.run_target(target, exes[target], SECONDS, work=tmp_path)
    print(f"{target}: {r.execs:,} executions, {r.exec_per_s:,}/s, cov {r.cov} ft {r.ft}, "
          f"corpus {r.corpus}")
    if r.crashes:  # keep the reproducers where `kilolearn fuzz` puts them
        keep = fuzz.out_dir() / "artifacts" / target
        keep.mkdir(parents=True, exist_ok=True)
        kept = [shutil.copy(c, keep) for c in r.crashes if c.is_file()]
        pytest.fail(f"{target} crashed (exit {r.returncode}); reproducers {kept}; replay with "
                    f"{exes[target]} FILE (KL_FUZZ_TRACE=1 shows the frames)\n{r.excerpt}")
    assert r.execs > 0 and r.cov > 0, (r.log.read_text()[-3000:] if r.log else "")


def test_final_stats_parsed():
    text = ("#8\tINITED cov: 902 ft: 1870 corp: 7/6168b exec/s: 0 rss: 31Mb\n"
            "#52113\tDONE   cov: 1337 ft: 4242 corp: 99/12Kb lim: 4096 exec/s: 2084 rss: 40Mb\n"
            "stat::number_of_executed_units: 52113\nstat::average_exec_per_sec:     2084\n"
            "stat::new_units_added:          92\n")
    r = fuzz.parse_output("t", text)
    assert (r.execs, r.exec_per_s, r.cov, r.ft, r.corpus, r.new_units) == \
        (52113, 2084, 1337, 4242, 99, 92)
    assert not r.crashes
    crash = text + "artifact_prefix='/x/'; Test unit written to /x/crash-abc\n"
    assert [str(p) for p in fuzz.parse_output("t", crash).crashes] == ["/x/crash-abc"]
