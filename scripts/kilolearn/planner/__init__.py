"""Memory planner: checkpointed backprop that fits training into an SRAM budget.

Given a lowered :class:`~kilolearn.model.Graph`, a dtype and an arena budget, :func:`plan`
returns the schedule with the fewest recomputed MACs whose arena peak fits: a list of steps the
engine executes one by one (forward into a buffer, free a buffer, loss, allocate a gradient,
backward through an op), static offsets for every buffer in one region of the arena, and the
exact arena peak (the engine's bookkeeping, weight copies and scratch mirrored byte for byte from
``kl_model_init``). docs/planner.md describes the model, the algorithm and the figures.

The graph is treated as a chain of *cuts*: cut ``i`` lies before op ``i`` (ops in blob order);
its bundle ``D_i`` is every tensor made before the cut and read at or after it (for a plain chain
one tensor; inside a residual block the block input as well). Checkpointing cut ``i`` keeps
``D_i``, from which ops ``i..`` can be recomputed. On that chain :func:`_search` is exact over
every schedule the engine can run (chains of up to ``EXACT_MAX`` ops: checkpoints dropped and
recomputed whenever that pays) and :class:`_GridDp` is optimal among persistent schedules on a
grid of memory levels (longer chains; heterogeneous sizes and MACs, the checkpoints re-chosen for
every phase of the backward pass as it frees memory); the steps are then generated with buffers
freed right after their last read, and the peak is measured on the steps and the offsets, not
estimated.
"""

from __future__ import annotations

from .chain import (  # noqa: F401
    EXACT_MAX,
    GRID_LEVELS,
    GRID_MEMORY_MAX,
    Chain,
    _GridDp,
    _replay,
    _search,
    chain_cost,
    chain_of,
    chain_plan,
)
from .cli import (  # noqa: F401
    _check_plan_args,
    _graph_from_args,
    _measure,
    _model_from_args,
    add_cli,
    cmd_plan,
    phase_rows,
    write_blob,
)
from .curve import curve, plot_curve  # noqa: F401
from .memory import *  # noqa: F403 - its __all__, the private helpers too
from .steps import Plan, Step, _assign_offsets, assign_offsets, build_steps, trim_compact  # noqa: F401
from .strategies import (  # noqa: F401
    _finish,
    _probe_bounds,
    _recompute_all_macros,
    _segments_macros,
    _store_all_macros,
    baseline,
    budget_of,
    format_plan,
    min_budget,
    optimal,
    plan,
    sqrt_n_macros,
)
