"""The Zephyr engine suite's golden vectors (tests/zephyr/engine/src/golden.h) are what
tests/zephyr/engine/gen_golden.py makes from the numpy reference today: regenerate them in a
temporary directory and compare with the committed header. Needs no Zephyr."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "zephyr" / "engine"


def load_generator():
    spec = importlib.util.spec_from_file_location("kl_gen_golden", SUITE / "gen_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_golden_header_is_current(tmp_path):
    out = tmp_path / "golden.h"
    subprocess.run([sys.executable, str(SUITE / "gen_golden.py"), str(out)], check=True,
                   capture_output=True)
    committed = (SUITE / "src" / "golden.h").read_text()
    fresh = out.read_text()
    assert fresh == committed, (
        "tests/zephyr/engine/src/golden.h is stale: run "
        "python tests/zephyr/engine/gen_golden.py and commit the result")


def test_golden_header_contents():
    """The header covers what the suite checks (a guard against a generator that silently
    emits less)."""
    text = load_generator().render()
    for name in ("s8g_mlp_blob", "s8g_mlp_gw", "s8g_mlp_w_final", "s8g_cnn_blob", "s8g_cnn_gw",
                 "s8g_cnn_y_exp_final", "s8t_blob", "s8t_w_final", "s8t_y_exp_final",
                 "f32a_blob", "f32a_gw", "f32b_gw", "f32b_w_final"):
        assert f" {name}[" in text, name
    # an int8 case with convolutions and pooling
    assert "'conv', 'maxpool', 'conv', 'avgpool', 'dense'" in text
    # blobs are 4-byte aligned (the engine reads frozen weights in place)
    assert text.count("__aligned(4)") == 5
