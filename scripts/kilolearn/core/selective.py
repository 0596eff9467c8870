"""Selective updates (docs/selective-updates.md): which weights an SGD step writes.

The numpy side of ``kl_model_set_update_policy``: policy names and numbers, and the selection
rules, written independently of the engine's (a stable sort where the engine uses a histogram
threshold, whole-tensor masks where it skips work), so that the twin checks it.

* ``topr`` (Kwon & Park): per trainable layer, the ``round(r n)`` weight updates largest in
  magnitude are applied (ties: lower index first); biases train fully.
* ``channel-norm`` (Deutel et al.): per layer, the ``round(r C)`` output channels with the largest
  gradient norm (weights and bias, squared) are updated; the others keep weights and bias.
* ``channel-sparse`` (Paissan et al.): per dense/conv layer before the classifier, a block of
  ``round(r C)`` output channels backpropagates this step (blocks in turn, the last one ending
  at the last channel); the other channels get no weight, bias or input-gradient work. The
  classifier (the op making the logits) trains fully: its output channels are the classes.
* ``partial`` (Paissan et al., partial activations; int8): a tensor read by a conv layer whose
  weights train, right after the tensor's producer, keeps a block of ``round(r C)`` of its
  channels after that forward step (blocks in turn, as above); the gradient flows through
  those channels only (a tensor that needs a gradient must come from a conv layer), and each
  conv layer updates the weights joining its input's kept block to its output's block.
"""

from __future__ import annotations

import numpy as np

POLICIES = {"all": 0, "topr": 1, "channel-norm": 2, "channel-sparse": 3, "partial": 4}
NAMES = {v: k for k, v in POLICIES.items()}
FRAC_ONE = 1000  # fractions are per mille


def policy_id(policy: str | int) -> int:
    if isinstance(policy, int):
        if policy not in NAMES:
            raise ValueError(f"unknown update policy {policy}")
        return policy
    if policy not in POLICIES:
        raise ValueError(f"unknown update policy {policy!r} (known: {', '.join(POLICIES)})")
    return POLICIES[policy]


def permille(fraction: float) -> int:
    """A fraction in (0, 1] as the blob's per-mille integer."""
    p = int(round(fraction * FRAC_ONE))
    if not 1 <= p <= FRAC_ONE:
        raise ValueError(f"fraction {fraction} outside (0, 1]")
    return p


def count(n: int, pm: int) -> int:
    """round(n * pm / 1000) (half up), at least 1, at most n."""
    return max(1, min(n, (n * pm + FRAC_ONE // 2) // FRAC_ONE))


def active_block(n_ch: int, pm: int, step: int) -> tuple[int, int]:
    """(first channel, count) of the channel-sparse block at this step."""
    k = count(n_ch, pm)
    nb = -(-n_ch // k)
    s = (step % nb) * k
    return (n_ch - k if s + k > n_ch else s), k


def top_r(keys: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k largest keys (ties: lower flat index first), by a stable sort."""
    flat = np.asarray(keys).reshape(-1).astype(np.int64)
    order = np.lexsort((np.arange(flat.size), -flat))
    mask = np.zeros(flat.size, bool)
    mask[order[:k]] = True
    return mask.reshape(np.shape(keys))


def top_channels(scores: list, k: int) -> np.ndarray:
    """Mask of the k channels with the largest scores (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], c))
    mask = np.zeros(len(scores), bool)
    mask[order[:k]] = True
    return mask


def channel_axis(kind: str) -> int:
    """Axis of the output channels in an op's weights (dense/conv: rows, depthwise: last)."""
    return -1 if kind == "dwconv" else 0


def channel_mask_dy(dy: np.ndarray, kind: str, pm: int, step: int) -> tuple[np.ndarray, int]:
    """Paissan: dy with the channels outside this step's block zeroed, and the block size."""
    n_ch = dy.shape[-1] if kind != "dense" else dy.size
    c0, k = active_block(n_ch, pm, step)
    flat = dy.reshape(-1, n_ch) if kind != "dense" else dy.reshape(1, -1)
    out = np.zeros_like(flat)
    out[:, c0:c0 + k] = flat[:, c0:c0 + k]
    return out.reshape(dy.shape), k


def partial_tensors(g, need: list[bool]) -> dict[int, int]:  # noqa: ANN001 (a Graph)
    """``partial``: the tensors that keep a block of their channels, each with its consumer
    (the rule of kl_partial_user, written from the docs)."""
    out: dict[int, int] = {}
    producer = {op.output: i for i, op in enumerate(g.ops)}
    for t, p in producer.items():
        u = p + 1
        if t == g.output or u >= len(g.ops) or len(g.consumers(t)) != 1:
            continue
        op = g.ops[u]
        if op.kind != "conv" or op.inputs[0] != t or not op.trainable or op.bias_only:
            continue
        if need[t] and g.ops[p].kind != "conv":
            continue
        out[t] = u
    return out
