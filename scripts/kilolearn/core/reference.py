"""numpy reference of kilolearn training: float32 and int8 fully quantized (FQT).

The int8 trainer reproduces the C engine bit for bit (same integer operations, same order of the
update dither); the float32 trainer reproduces it to rounding. Batch size 1, plain SGD (or SGD
with momentum in float32), as the engine does it on the device. docs/int8-training.md specifies
the int8 arithmetic.

The code lives in three modules, every name re-exported here: ref_common (window geometry,
the tensors backprop needs, the active-class mask), ref_f32 (F32Trainer), ref_s8 (QModel,
quantize_model, the int8 requantisation helpers, S8Trainer).
"""

from __future__ import annotations

from .ref_common import *  # noqa: F403 - its __all__, the private helpers too
from .ref_f32 import F32Trainer, _act_f32, _dact_f32, _mask_f32  # noqa: F401
from .ref_s8 import (  # noqa: F401
    ACC_MAX,
    ADD_SHIFT_MAX,
    BIAS_EXTRA_BITS,
    EXP_MAX,
    LEAKY_SHIFT,
    MSE_ALIGN_MAX,
    TABLE_ACTS,
    WEIGHT_HEADROOM,
    QForward,
    QGrad,
    QModel,
    S8Trainer,
    accumulate,
    act_mask_q,
    act_table,
    activation_grad_q,
    activation_q,
    avg_div,
    build_qmodel,
    int8_weights,
    merge_grads,
    mse_diff,
    mse_error,
    mse_exp,
    quantize_model,
    relu6_q,
    requant_out,
)
