"""int8 mve kernels (Cortex-M55, Helium): == ref bit for bit on random layers (kl_fuzz_mve).

Dense forward (outputs and saturation flag), input gradient, weight gradient and fused SGD step
(weights, biases and the dither state, also with steps and shifts outside the vector path), and
the depthwise forward, input gradient and weight gradient on random geometries (kernels 1-5,
non-square, strides 1-3, odd channel counts, padding, row bands with a shifted pad_t), zero
points, activations, output and bias shifts inside and outside the vector output stage, and
extreme values (every input +127 / -128, weights of -128).
"""

from __future__ import annotations

from conftest import require_target, run_fuzz_firmware


def test_mve_fuzz_equals_ref() -> None:
    require_target("mps3-an547")
    cases, mismatches = run_fuzz_firmware("mps3-an547", "kl_fuzz_mve")
    assert cases > 3000 and mismatches == 0
