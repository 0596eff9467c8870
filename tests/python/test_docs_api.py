"""docs/python-api.md's example runs as written (host build of the session firmware) and its
device-vs-numpy check holds; every sub-package the page lists imports."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def _run_example(doc: Path, tmp_path: Path) -> str:
    """The first ```python block of ``doc`` run as a script; its stdout."""
    code = re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1)
    script = tmp_path / f"{doc.stem}.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_example_runs_and_device_equals_numpy(tmp_path):
    assert "device = numpy after 100 steps" in _run_example(DOC, tmp_path)


def test_listed_subpackages_import():
    names = re.findall(r"^\| `(kilolearn\.\w+)` \|", DOC.read_text(), re.M)
    assert len(names) >= 6
    for n in names:
        importlib.import_module(n)


def test_user_guide_example_runs_and_the_pulled_model_is_the_devices(tmp_path):
    """docs/user-guide.md's Python loop (fit, adapt on the host build, pull back) as written."""
    out = _run_example(DOC.with_name("user-guide.md"), tmp_path)
    m = re.search(r"shifted test accuracy ([\d.]+) % -> ([\d.]+) %", out)
    assert m and float(m.group(2)) > float(m.group(1)) + 10  # adapting recovers accuracy
