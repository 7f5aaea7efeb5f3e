"""The NumPy backend: the living definition of every inference kernel.

A backend supplies an array namespace `xp` and a few kernels that the GPT forward pass
(`minillm.nn.gpt.forward`) calls. Every other backend subclasses this one and overrides only
what it makes faster, so this file is the specification the others are tested against:

- `linear(x, W, b)` $= xW + b$, dispatching on the weight's kind (dense array or one of
  `minillm.kinds`), so compression never touches the forward code;
- `layer_norm`, `gelu`, `softmax`;
- `attention(q, k, v, pos0)`: causal attention of $T$ new queries at positions
  $t_0 \\ldots t_0+T-1$ over the $S = t_0 + T$ keys held in the KV cache;
- `kv_write(cache, layer, pos0, k, v)`: store new keys/values in the preallocated cache.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..nn import functional as F


class NumpyBackend:
    """Reference kernels in plain NumPy (float32 on the CPU)."""

    name = "numpy"
    xp = np

    # --- moving data -----------------------------------------------------------------------
    def asarray(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        """Put weights where this backend computes (NumPy: already there)."""
        return params

    # --- kernels ---------------------------------------------------------------------------
    def linear(self, x: np.ndarray, w: Any, b: np.ndarray | None) -> np.ndarray:
        """$y = xW + b$ for x (N, in); W dense (in, out) or a weight kind with `.matmul`."""
        y = x @ w if isinstance(w, np.ndarray) else w.matmul(x)  # (N, out)
        if b is not None:
            y += b
        return y

    def layer_norm(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
        return F.layer_norm(x, w, b, eps)[0]

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return F.gelu(x)[0]

    def softmax(self, x: np.ndarray) -> np.ndarray:
        return F.softmax(x)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Causal attention; q (B, H, T, D) are the *last* T of the S positions in k, v (B, H, S, D)."""
        T, S = q.shape[2], k.shape[2]
        s = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, T, S)
        if T > 1:  # a single new query may see every cached key: no mask needed
            s = np.where(F.causal_mask(T, S), -np.inf, s)
        return self.softmax(s) @ v  # (B, H, T, D)

    def lm_head(self, x: np.ndarray, wte: Any) -> np.ndarray:
        """Logits $x W_{te}^\\top$ (tied head) for x (N, C)."""
        return x @ wte.T if isinstance(wte, np.ndarray) else wte.matmul_t(x)  # (N, V)

    # --- the KV cache ----------------------------------------------------------------------
    def kv_alloc(self, n_layer: int, B: int, H: int, T: int, D: int, dtype) -> tuple:
        """Preallocate keys and values for T positions: two (L, B, H, T, D) arrays."""
        shape = (n_layer, B, H, T, D)
        return np.zeros(shape, dtype), np.zeros(shape, dtype)

    def kv_write(self, cache: tuple, layer: int, pos0: int, k: np.ndarray, v: np.ndarray) -> tuple:
        """Write k, v (B, H, T, D) at positions pos0.. and return the (same) cache."""
        T = k.shape[2]
        cache[0][layer, :, :, pos0 : pos0 + T] = k
        cache[1][layer, :, :, pos0 : pos0 + T] = v
        return cache
