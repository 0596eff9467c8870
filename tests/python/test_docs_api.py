"""docs/python-api.md's example runs as written (host build of the session firmware) and its
device-vs-numpy check holds; every sub-package the page lists imports."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def test_example_runs_and_device_equals_numpy(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "device = numpy after 100 steps" in r.stdout


def test_listed_subpackages_import():
    names = re.findall(r"^\| `(kilolearn\.\w+)` \|", DOC.read_text(), re.M)
    assert len(names) >= 6
    for n in names:
        importlib.import_module(n)
