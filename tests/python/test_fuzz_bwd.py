"""int8 conv input gradient: dsp == ref bit for bit on random geometries (kl_fuzz_bwd).

Kernels 1-5 (also non-square), strides 1-3, odd channel counts, output channels with and
without a multiple of four, padding, and row bands (shifted pad_t, fewer output rows) as
the engine passes them; the scratch must stay within kl_conv_s8_scratch(). Every third case a
dense layer in the paired layout: the input gradient and the fused SGD step (inputs at the zero
point from none to all, every path of the step: the list, its parts, the dense path, weight by
weight) against the ref kernels, the step's scratch within KL_FC_SGD_S8_SCRATCH().
"""

from __future__ import annotations

import pytest
from conftest import require_target, run_fuzz_firmware


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500"])
def test_conv_input_grad_fuzz_dsp_equals_ref(board: str) -> None:
    require_target(board)
    cases, mismatches = run_fuzz_firmware(board, "kl_fuzz_bwd")
    assert cases > 500 and mismatches == 0
