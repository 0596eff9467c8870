"""The main job's claim: the 64-32-10 MLP learns sklearn digits on the emulated Cortex-M4,
float32 >= 90 % and int8 FQT >= 88 % test accuracy, and the numpy reference gets the same."""

from __future__ import annotations

import pytest
from conftest import require_target

from kilolearn.device import train


@pytest.mark.parametrize("dtype,floor", [("f32", 0.90), ("s8", 0.88)])
def test_digits_mlp_learns_on_emulated_m4(dtype, floor, digits):
    require_target("mps2-an386")
    r = train.run("mps2-an386", dtype, epochs=20, lr=0.05, ds=digits)
    assert r.device_acc[-1] >= floor
    assert r.reference_acc >= floor
    assert r.device_acc[0] < r.device_acc[-1]  # it learned over the epochs
    if dtype == "s8":  # bit-exact: the very same predictions
        assert r.device_acc[-1] == r.reference_acc
    else:  # float32 sums in another order (and fused multiply-adds on the M4F)
        assert abs(r.device_acc[-1] - r.reference_acc) <= 0.01
    assert r.insn_per_train_sample is not None and r.insn_per_train_sample > 1000
    assert r.arena_bytes <= (12 * 1024 if dtype == "f32" else 4 * 1024)


def test_digits_cnn_int8_within_two_points_of_float_on_emulated_m4(digits):
    """Conv-BN-ReLU / max-pool / conv-BN-ReLU / global-average-pool / dense, 10 epochs."""
    require_target("mps2-an386")
    r32 = train.run("mps2-an386", "f32", epochs=10, lr=0.05, ds=digits, model_name="cnn")
    r8 = train.run("mps2-an386", "s8", epochs=10, lr=0.05, ds=digits, model_name="cnn")
    assert r32.device_acc[-1] >= 0.88
    assert r8.device_acc[-1] >= r32.device_acc[-1] - 0.02
    assert r8.device_acc[-1] == r8.reference_acc  # bit-exact
    assert abs(r32.device_acc[-1] - r32.reference_acc) <= 0.01
