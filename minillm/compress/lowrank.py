r"""Low-rank factorization: replace $W$ (m, n) by $AB$ with $A$ (m, r), $B$ (r, n).

The truncated SVD $W_r = U_r \Sigma_r V_r^\top$ is the best rank-$r$ approximation in both the
Frobenius and the spectral norm (Eckart–Young–Mirsky), with errors

$$\lVert W - W_r \rVert_F = \sqrt{\textstyle\sum_{i > r} \sigma_i^2}, \qquad
\lVert W - W_r \rVert_2 = \sigma_{r+1}.$$

We split the singular values evenly, $A = U_r \Sigma_r^{1/2}$, $B = \Sigma_r^{1/2} V_r^\top$,
so that both factors have the same scale (better for fine-tuning them afterwards, and for
quantizing them); ``split="left"`` / ``"right"`` put all of $\Sigma_r$ into one factor.

The factors cost $r(m+n)$ values instead of $mn$, so factorizing saves memory (and
multiply-adds) only when $r < mn/(m+n)$ — for GPT-2's 768 x 3072 MLP, $r < 614.4$.
The SVD is computed in float64 and the factors returned in the weight's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..kinds import LowRank, block_matmul_names, check_array

SPLITS = ("sqrt", "left", "right")
WHICH = {
    "mlp": ("mlp.c_fc.weight", "mlp.c_proj.weight"),
    "attn": ("attn.c_attn.weight", "attn.c_proj.weight"),
    "all": ("mlp.c_fc.weight", "mlp.c_proj.weight", "attn.c_attn.weight", "attn.c_proj.weight"),
}


def _check_rank(rank: Any, shape: tuple[int, int]) -> int:
    hi = min(shape)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= hi:
        raise ValueError(f"rank must be an int in 1..{hi} for a {shape[0]}x{shape[1]} matrix, "
                         f"got {rank!r}")
    return int(rank)


def svd_factorize(w: Any, rank: int, split: str = "sqrt") -> tuple[np.ndarray, np.ndarray]:
    """Factors `(a, b)` with `a @ b` the best rank-`rank` approximation of `w` (m, n).

    >>> import numpy as np
    >>> a, b = svd_factorize(np.array([[3., 0.], [0., 1.]]), 1)
    >>> a @ b
    array([[3., 0.],
           [0., 0.]])
    """
    w = check_array("w", w, ndim=2)
    r = _check_rank(rank, w.shape)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    dtype = w.dtype if np.issubdtype(w.dtype, np.floating) else np.float64
    u, sigma, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    u, sigma, vt = u[:, :r], sigma[:r], vt[:r]  # (m, r), (r,), (r, n)
    root, ones = np.sqrt(sigma), np.ones(r)
    left, right = {"sqrt": (root, root), "left": (sigma, ones), "right": (ones, sigma)}[split]
    a, b = u * left, right[:, None] * vt  # (m, r), (r, n)
    return a.astype(dtype), b.astype(dtype)


def break_even_rank(m: int, n: int) -> float:
    """$mn / (m + n)$: a rank-$r$ factorization stores fewer values iff $r$ is below this.

    >>> break_even_rank(768, 3072)
    614.4
    """
    for name, v in (("m", m), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return m * n / (m + n)


def rank_for_budget(shape: tuple[int, int], fraction_of_params: float) -> int:
    """Largest $r$ with $r(m+n) \\le$ fraction $\\cdot\\, mn$ (capped at $\\min(m, n)$).

    >>> rank_for_budget((768, 3072), 0.5)
    307
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (m, n), got {shape!r}")
    m, n = (int(v) for v in shape)
    break_even_rank(m, n)  # validates m, n
    f = fraction_of_params
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0):
        raise ValueError(f"fraction_of_params must be a finite number > 0, got {f!r}")
    r = min(math.floor(f * m * n / (m + n)), min(m, n))
    if r < 1:
        raise ValueError(f"fraction_of_params={f} of a {m}x{n} matrix is below one rank-1 "
                         f"factorization ({m + n} values, fraction {(m + n) / (m * n):.3g})")
    return r


def rank_for_energy(sigma: Any, energy: float) -> int:
    """Smallest $r$ with $\\sum_{i \\le r} \\sigma_i^2 \\ge$ energy $\\cdot \\sum_i \\sigma_i^2$.

    `sigma` are singular values in decreasing order; `energy` in (0, 1].
    """
    sigma = check_array("sigma", sigma, ndim=1).astype(np.float64)
    if sigma.size == 0 or np.any(sigma < 0) or np.any(np.diff(sigma) > 0):
        raise ValueError("sigma must be non-empty, non-negative and decreasing (as from an SVD)")
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    cum = np.cumsum(sigma**2)
    if cum[-1] == 0:
        return 1  # the zero matrix: rank 1 is already exact
    # cum[-1] is the total in the same summation order, so energy = 1 gives the full rank.
    return int(np.searchsorted(cum, energy * cum[-1], side="left")) + 1


def factorize_params(
    params: dict[str, Any],
    which: str = "mlp",
    fraction: float = 0.5,
    rank: int | None = None,
    split: str = "sqrt",
) -> dict[str, Any]:
    """A new params dict whose chosen matmul weights are `LowRank` kinds.

    `which` is ``"mlp"`` (c_fc, c_proj of the MLP), ``"attn"`` or ``"all"``; the rank of each
    weight is `rank` if given, else `rank_for_budget(shape, fraction)` — e.g. 0.5 keeps half of
    that weight's values. Other entries are shared with `params`, not copied.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {sorted(WHICH)}, got {which!r}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    out = dict(params)
    for name in block_matmul_names(params):
        if not name.endswith(WHICH[which]):
            continue
        w = check_array(name, params[name], ndim=2)
        try:
            r = rank_for_budget(w.shape, fraction) if rank is None else rank
            out[name] = LowRank(*svd_factorize(w.astype(np.float32), r, split))
        except ValueError as e:  # say which weight failed
            raise ValueError(f"{name}: {e}") from None
    return out
