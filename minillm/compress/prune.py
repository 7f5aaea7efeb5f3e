r"""Pruning: set weights to zero and keep them there.

A pruning method is a *mask* $M$ (True = keep) chosen by a score; the pruned weight is
$W \odot M$. Masks are plain bool arrays keyed like the params they apply to.

- **Magnitude** (unstructured): prune the $k = \operatorname{round}(s\,n)$ weights of smallest
  $|W_{ij}|$ ($s$ the sparsity, $n$ the weight count, round half to even — PyTorch's
  `l1_unstructured`). `global_magnitude_masks` ranks all given weights together.
- **N:M** (semi-structured): in every group of $m$ consecutive inputs keep the $n$ largest
  $|W|$ (2:4 runs at up to twice the speed on sparse tensor cores).
- **Structured**: remove whole attention heads or MLP neurons, scored by the L2 norm of all
  the weights that belong to them. The rows / columns can then be sliced out for real.
- **Wanda** (Sun et al. 2023): score $|W_{ij}|\,\lVert X_i \rVert_2$, with $\lVert X_i\rVert_2$
  the norm of input feature $i$ over calibration tokens, pruned within each output neuron.
- **Gradual** (Zhu & Gupta 2017): raise the sparsity on a cubic schedule while fine-tuning,
  $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{n\,\Delta t}\right)^3.$$

Layout: weights are Conv1D (in, out), $y = xW + b$, so "input dimension" is axis 0 and an
output neuron is a *column* (a row in PyTorch's `nn.Linear` layout).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..kinds import Masked, NMSparse, block_matmul_names, check_array, check_fraction


def _n_pruned(sparsity: float, n: int) -> int:
    """$k = \\mathrm{round\\_half\\_even}(s\\,n)$, PyTorch's count for a float amount."""
    return int(round(sparsity * n))  # Python's round is half-to-even


def _prune_smallest(score: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask of the same shape with the `k` smallest scores set False (ties: any order)."""
    mask = np.ones(score.size, dtype=bool)
    if k > 0:
        mask[np.argpartition(score.ravel(), k - 1)[:k]] = False
    return mask.reshape(score.shape)


def magnitude_mask(w: Any, sparsity: float) -> np.ndarray:
    """Keep-mask pruning the round-half-even(sparsity * n) entries of smallest |w|.

    >>> import numpy as np
    >>> magnitude_mask(np.array([.5, -2., .1, 3.]), 0.5)
    array([False,  True, False,  True])
    """
    w = check_array("w", w)
    s = check_fraction("sparsity", sparsity)
    return _prune_smallest(np.abs(w), _n_pruned(s, w.size))


def global_magnitude_masks(
    weights: dict[str, Any], sparsity: float, names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Magnitude masks with one threshold across several weights (ranked together).

    `names` defaults to the block matmul weights of a GPT params dict if `weights` has any,
    else every entry. Layers whose weights are small lose more than others.
    """
    if not isinstance(weights, dict):
        raise TypeError(f"weights must be a dict name -> array, got {type(weights).__name__}")
    s = check_fraction("sparsity", sparsity)
    if names is None:
        names = block_matmul_names(weights) or list(weights)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"names not in weights: {missing}")
    if not names:
        return {}
    arrays = [check_array(n, weights[n]) for n in names]
    scores = np.concatenate([np.abs(a).ravel() for a in arrays])
    keep = _prune_smallest(scores, _n_pruned(s, scores.size))
    splits = np.cumsum([a.size for a in arrays])[:-1]
    pieces = np.split(keep, splits)
    return {n: m.reshape(a.shape) for n, a, m in zip(names, arrays, pieces, strict=True)}


def n_m_mask(w: Any, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep the `n` largest |w| in every group of `m` consecutive inputs (axis 0).

    On ties the earlier input is kept.

    >>> import numpy as np
    >>> n_m_mask(np.array([.1, -.9, .3, .05, 2, -1, .5, 0])).astype(int)
    array([0, 1, 1, 0, 1, 1, 0, 0])
    """
    w = check_array("w", w)
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if n > m:
        raise ValueError(f"n must be <= m, got n={n}, m={m}")
    if w.ndim < 1 or w.shape[0] % m:
        raise ValueError(f"axis 0 of w (the inputs) must be a multiple of m={m}, got {w.shape}")
    groups = np.abs(w).reshape(w.shape[0] // m, m, *w.shape[1:])  # (G, m, *rest)
    order = np.argsort(-groups, axis=1, kind="stable")  # largest first, earlier first on ties
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :n], True, axis=1)
    return keep.reshape(w.shape)


def wanda_norms(x: Any) -> np.ndarray:
    """$\\lVert X_i \\rVert_2$ per input feature over every token of `x` (..., in).

    To accumulate over batches, sum `(x**2).sum(axis=all but last)` and take the sqrt.
    """
    x = check_array("x", x).astype(np.float64)
    if x.ndim < 1:
        raise ValueError(f"x must have shape (..., in), got {x.shape}")
    return np.sqrt(np.sum(x.reshape(-1, x.shape[-1]) ** 2, axis=0))


def wanda_mask(w: Any, x_norm: Any, sparsity: float) -> np.ndarray:
    """Wanda: score $|W_{io}|\\,\\lVert X_i\\rVert_2$, prune the lowest per output column.

    Each output neuron (a column of the Conv1D weight (in, out)) loses exactly
    round-half-even(sparsity * in) of its inputs, so no neuron is emptied before the others.
    """
    w = check_array("w", w, ndim=2)
    x_norm = check_array("x_norm", x_norm, ndim=1)
    s = check_fraction("sparsity", sparsity)
    if x_norm.shape[0] != w.shape[0]:
        raise ValueError(f"x_norm must have one entry per input of w: shape ({w.shape[0]},), "
                         f"got {x_norm.shape}")
    if np.any(x_norm < 0):
        raise ValueError("x_norm must be non-negative (it is a norm)")
    score = np.abs(w) * x_norm[:, None]  # (in, out)
    k = _n_pruned(s, w.shape[0])
    keep = np.ones(w.shape, dtype=bool)
    if k > 0:
        lowest = np.argpartition(score, k - 1, axis=0)[:k]  # (k, out) within each column
        np.put_along_axis(keep, lowest, False, axis=0)
    return keep


def cubic_sparsity(t: float, s_i: float, s_f: float, t0: float, n: int, dt: float = 1) -> float:
    """Zhu & Gupta's schedule: $s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(n \\Delta t))^3$.

    $s_i$ before $t_0$, $s_f$ after $t_0 + n\\Delta t$.

    >>> [round(cubic_sparsity(t, 0.0, 0.8, t0=0, n=100), 10) for t in (0, 25, 50, 75, 100)]
    [0.0, 0.4625, 0.7, 0.7875, 0.8]
    """
    s_i, s_f = check_fraction("s_i", s_i), check_fraction("s_f", s_f)
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive int (number of pruning steps), got {n!r}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be > 0, got {dt!r}")
    if not (np.isfinite(t) and np.isfinite(t0)):
        raise ValueError(f"t and t0 must be finite, got t={t!r}, t0={t0!r}")
    progress = min(max((t - t0) / (n * dt), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


# Structured pruning of a GPT: whole heads and whole neurons.

_LAYER = re.compile(r"h\.(\d+)\.")


def _layers(params: dict[str, Any]) -> list[int]:
    found = sorted({int(m[1]) for k in params if (m := _LAYER.match(k))})
    if not found:
        raise ValueError("params has no transformer blocks (names like 'h.0.attn.c_attn.weight')")
    return found


def _n_head(n_head: Any) -> int:
    h = getattr(n_head, "n_head", n_head)  # accept a GPTConfig
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
        raise ValueError(f"n_head must be a positive int or a config with .n_head, got {n_head!r}")
    return int(h)


def head_scores(params: dict[str, Any], layer: int, n_head: Any) -> np.ndarray:
    """L2 norm of each head's weights: its q, k, v columns of c_attn and its rows of c_proj."""
    H = _n_head(n_head)
    w_qkv = check_array("c_attn.weight", params[f"h.{layer}.attn.c_attn.weight"], ndim=2)
    w_o = check_array("c_proj.weight", params[f"h.{layer}.attn.c_proj.weight"], ndim=2)
    C = w_o.shape[0]
    if C % H or w_qkv.shape != (C, 3 * C):
        raise ValueError(f"layer {layer}: c_attn (C, 3C) with C divisible by n_head={H} expected, "
                         f"got {w_qkv.shape}")
    D = C // H
    sq_qkv = (w_qkv.astype(np.float64) ** 2).sum(axis=0).reshape(3, H, D).sum(axis=(0, 2))  # (H,)
    sq_o = (w_o.astype(np.float64) ** 2).sum(axis=1).reshape(H, D).sum(axis=1)  # (H,)
    return np.sqrt(sq_qkv + sq_o)


def head_mask(params: dict[str, Any], n_head: Any, fraction: float) -> dict[int, np.ndarray]:
    """Per layer, a keep-mask over heads (H,) dropping round(fraction * H) lowest-norm heads."""
    f = check_fraction("fraction", fraction)
    H = _n_head(n_head)
    return {
        layer: _prune_smallest(head_scores(params, layer, H), _n_pruned(f, H))
        for layer in _layers(params)
    }


def prune_heads(params: dict[str, Any], n_head: Any, fraction: float) -> dict[str, np.ndarray]:
    """Param masks removing whole heads: the head's q, k, v columns (and biases) of c_attn and
    its rows of attn.c_proj.

    A removed head then contributes exactly nothing: its c_proj rows are zero. Its q, k and v
    are zero too, so the columns (and rows) can be sliced out to shrink the matmuls.
    Apply with `apply_masks`.
    """
    H = _n_head(n_head)
    masks: dict[str, np.ndarray] = {}
    for layer, keep in head_mask(params, H, fraction).items():
        C = params[f"h.{layer}.attn.c_proj.weight"].shape[0]
        per_dim = np.repeat(keep, C // H)  # (C,) one entry per channel of the head outputs
        cols = np.tile(per_dim, 3)  # (3C,) the same heads in q, k and v
        p = f"h.{layer}.attn."
        masks[p + "c_attn.weight"] = np.broadcast_to(cols, (C, 3 * C)).copy()
        if p + "c_attn.bias" in params:
            masks[p + "c_attn.bias"] = cols.copy()
        masks[p + "c_proj.weight"] = np.broadcast_to(per_dim[:, None], (C, C)).copy()
    return masks


def neuron_scores(params: dict[str, Any], layer: int) -> np.ndarray:
    """L2 norm of each MLP neuron's weights: its column of c_fc and its row of mlp.c_proj."""
    w_fc = check_array("c_fc.weight", params[f"h.{layer}.mlp.c_fc.weight"], ndim=2)
    w_pr = check_array("c_proj.weight", params[f"h.{layer}.mlp.c_proj.weight"], ndim=2)
    if w_pr.shape != w_fc.shape[::-1]:
        raise ValueError(f"layer {layer}: mlp.c_proj must be c_fc transposed in shape, "
                         f"got {w_fc.shape} and {w_pr.shape}")
    sq = (w_fc.astype(np.float64) ** 2).sum(axis=0) + (w_pr.astype(np.float64) ** 2).sum(axis=1)
    return np.sqrt(sq)  # (4C,)


def neuron_mask(params: dict[str, Any], fraction: float) -> dict[str, np.ndarray]:
    """Param masks removing round(fraction * 4C) lowest-norm MLP neurons in every block:
    their column of c_fc.weight, entry of c_fc.bias and row of mlp.c_proj.weight.

    A removed neuron's pre-activation is 0, GELU(0) = 0, and its output row is zero anyway.
    """
    f = check_fraction("fraction", fraction)
    masks: dict[str, np.ndarray] = {}
    for layer in _layers(params):
        scores = neuron_scores(params, layer)
        keep = _prune_smallest(scores, _n_pruned(f, scores.size))  # (4C,)
        p = f"h.{layer}.mlp."
        C = params[p + "c_fc.weight"].shape[0]
        masks[p + "c_fc.weight"] = np.broadcast_to(keep, (C, keep.size)).copy()
        if p + "c_fc.bias" in params:
            masks[p + "c_fc.bias"] = keep.copy()
        masks[p + "c_proj.weight"] = np.broadcast_to(keep[:, None], (keep.size, C)).copy()
    return masks


# Bookkeeping: counts, applying masks, keeping pruned weights at zero while training.


def sparsity(mask: Any) -> float:
    """Fraction of entries pruned (False) in a keep-mask."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array (True = keep), got dtype {mask.dtype}")
    return float(np.count_nonzero(~mask) / mask.size) if mask.size else 0.0


def report(masks: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Exact counts per mask and in total: {name: {"pruned", "total", "sparsity"}, "total": ...}."""
    out: dict[str, dict[str, float]] = {}
    pruned_all = total_all = 0
    for name, mask in masks.items():
        mask = np.asarray(mask)
        s = sparsity(mask)
        pruned = int(np.count_nonzero(~mask))
        out[name] = {"pruned": pruned, "total": mask.size, "sparsity": s}
        pruned_all, total_all = pruned_all + pruned, total_all + mask.size
    out["total"] = {
        "pruned": pruned_all,
        "total": total_all,
        "sparsity": pruned_all / total_all if total_all else 0.0,
    }
    return out


def _masked(arrays: dict[str, Any], masks: dict[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(arrays, dict) or not isinstance(masks, dict):
        raise TypeError(f"{what} and masks must be dicts name -> array")
    out = dict(arrays)
    for name, mask in masks.items():
        if name not in arrays:
            raise ValueError(f"mask {name!r} has no matching entry in {what}")
        a, mask = np.asarray(arrays[name]), np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != a.shape:
            raise ValueError(f"mask {name!r} must be bool of shape {a.shape}, "
                             f"got {mask.dtype} {mask.shape}")
        out[name] = np.where(mask, a, 0).astype(a.dtype)  # +0.0, never -0.0
    return out


def apply_masks(params: dict[str, Any], masks: dict[str, Any]) -> dict[str, Any]:
    """A new params dict with every masked entry set to exactly 0 (others shared, not copied)."""
    return _masked(params, masks, "params")


def mask_grads(grads: dict[str, Any], masks: dict[str, Any]) -> dict[str, Any]:
    """Zero the gradients of pruned weights, so that masked fine-tuning keeps them at 0.

    How to take a masked optimizer step (`masked_step`), e.g. AdamW:

    1. ``grads = mask_grads(grads, masks)`` before the update. Adam's moments $m, v$ then
       receive 0 on pruned entries; if they *start* at 0 there (fresh optimizer state, or
       moments multiplied by the mask when the mask changes) they stay exactly 0, the update
       $m/(\\sqrt v + \\epsilon)$ is exactly 0, and decoupled weight decay $w \\leftarrow
       w - \\eta\\lambda w$ keeps a 0 at 0.
    2. Moments carried over from dense training are *not* 0 on newly pruned entries and would
       move them; so also ``params = apply_masks(params, masks)`` after every step. That one
       line is the robust rule (it also covers gradual pruning, whose masks only shrink).
    """
    return _masked(grads, masks, "grads")


# Masks to weight kinds, for inference.


def nm_sparse(w: Any, n: int = 2, m: int = 4) -> NMSparse:
    """Prune a Conv1D weight (in, out) to N:M and store it compactly as an `NMSparse` kind."""
    w = check_array("w", w, ndim=2)
    keep = n_m_mask(w, n, m).reshape(w.shape[0] // m, m, w.shape[1])  # (G, m, out)
    # positions of the kept weights, increasing within each group (False sorts before True)
    positions = np.argsort(~keep, axis=1, kind="stable")[:, :n]  # (G, n, out)
    groups = w.reshape(keep.shape)
    values = np.take_along_axis(groups, positions, axis=1).reshape(-1, w.shape[1])
    dtype = w.dtype if w.dtype in (np.float16, np.float32, np.float64) else np.float32
    return NMSparse(values.astype(dtype), positions.reshape(-1, w.shape[1]).astype(np.uint8), n, m)


def masked_params(params: dict[str, Any], masks: dict[str, Any]) -> dict[str, Any]:
    """A new params dict in which every masked 2-D weight is a `Masked` kind (zeros stored).

    Masks of other entries (biases) are applied as plain zeros.
    """
    out = apply_masks(params, masks)
    for name, mask in masks.items():
        if np.ndim(out[name]) == 2:
            out[name] = Masked(out[name], np.asarray(mask))
    return out
