"""int8 forward kernels: dsp == ref bit for bit on random layers (kl_fuzz_fwd).

Random conv / FC shapes (channels and im2col lengths with and without a multiple of four,
padding, strides, 1x1 in place), zero points, activations, output and bias shifts (inside
and outside the fast output stage) and biases near the int32 limits; outputs and the
saturation flag must equal ref on the DSP boards.
"""

from __future__ import annotations

import pytest
from conftest import require_target, run_fuzz_firmware


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500", "mps2-an505"])
def test_forward_fuzz_dsp_equals_ref(board: str) -> None:
    require_target(board)
    cases, mismatches = run_fuzz_firmware(board, "kl_fuzz_fwd")
    assert cases > 10000 and mismatches == 0
