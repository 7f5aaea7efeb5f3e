"""The NumPy backend: the living definition of every inference kernel.

A backend supplies an array namespace `xp` and a few kernels that the GPT forward pass
(`minillm.nn.gpt.forward`) calls. Every other backend subclasses this one and overrides only
what it makes faster, so this file is the specification the others are tested against
(`tests/test_backends.py` runs every kernel of every available backend against it):

- `linear(x, W, b)` $= xW + b$, dispatching on the weight's kind (dense array or one of
  `minillm.kinds`, whose `.matmul` is the reference product), so compression never touches
  the forward code;
- `layer_norm`, `gelu`, `softmax`;
- `attention(q, k, v)`: causal attention of the $T$ newest queries over the $S$ keys held in
  the KV cache (query $t$ sits at position $S - T + t$ and sees keys $0 \\ldots S - T + t$);
- `embed(wte, idx)` $= W_{te}[\\mathrm{idx}]$ and `lm_head(x, wte)` $= x W_{te}^\\top$: the token
  embedding and the tied output head that reuses it;
- `kv_alloc` / `kv_write`: the preallocated KV cache.

A backend that computes somewhere else (a GPU, a compiler) first converts the weights once with
`prepare(params)`. The *kernel form* of a weight kind defined at the end of this file is what
those backends hold: the kind's arrays, unchanged in meaning, as plain fields a compiled kernel
(Numba) or a device array library (CuPy, JAX) can take.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .. import kinds as K
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
        if isinstance(w, np.ndarray):
            y = x @ w  # (N, out)
        elif K.is_kind(w):
            y = w.matmul(x)  # the kind's own reference product
        else:
            raise TypeError(f"weight must be a numpy array or one of minillm.kinds, got {type(w).__name__}")
        if b is not None:
            y += b
        return y

    def layer_norm(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
        """$\\gamma (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon} + \\beta$ over the last axis."""
        return F.layer_norm(x, w, b, eps)[0]

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """GPT-2's tanh GELU, $\\tfrac12 x (1 + \\tanh(\\sqrt{2/\\pi}(x + 0.044715 x^3)))$."""
        return F.gelu(x)[0]

    def softmax(self, x: np.ndarray) -> np.ndarray:
        """Softmax over the last axis, shifted by the row maximum."""
        return F.softmax(x)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, n_keys: int | None = None) -> np.ndarray:
        """Causal attention; q (B, H, T, D) are the *last* T of the S positions in k, v (B, H, S, D).

        With `n_keys`, only the first n_keys positions of k, v are keys: k, v may then be a
        whole preallocated KV cache (B, H, size, D), whose unused positions are ignored."""
        k, v = keys_in_use(q, k, v, n_keys)
        T, S = q.shape[2], k.shape[2]
        s = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, T, S)
        if T > 1:  # a single new query may see every cached key: no mask needed
            s = np.where(F.causal_mask(T, S), -np.inf, s)
        return self.softmax(s) @ v  # (B, H, T, D)

    def embed(self, wte: Any, idx: np.ndarray) -> np.ndarray:
        """Token embeddings $W_{te}[\\mathrm{idx}]$: (B, T, C) for ids (B, T); a quantized tied
        embedding (`minillm.kinds.TiedEmbedding`) dequantizes only the rows asked for."""
        return wte[idx] if isinstance(wte, np.ndarray) else wte.rows(idx)

    def lm_head(self, x: np.ndarray, wte: Any) -> np.ndarray:
        """Logits $x W_{te}^\\top$ (tied head) for x (N, C)."""
        return x @ wte.T if isinstance(wte, np.ndarray) else wte.matmul_t(x)  # (N, V)

    # --- the KV cache ----------------------------------------------------------------------
    def kv_alloc(self, n_layer: int, B: int, H: int, T: int, D: int, dtype: Any) -> tuple:
        """Preallocate keys and values for T positions: two (L, B, H, T, D) arrays."""
        shape = (n_layer, B, H, T, D)
        return np.zeros(shape, dtype), np.zeros(shape, dtype)

    def kv_write(self, cache: tuple, layer: int, pos0: int, k: np.ndarray, v: np.ndarray) -> tuple:
        """Write k, v (B, H, T, D) at positions pos0.. and return the (same) cache."""
        T = k.shape[2]
        cache[0][layer, :, :, pos0 : pos0 + T] = k
        cache[1][layer, :, :, pos0 : pos0 + T] = v
        return cache

    def __repr__(self) -> str:
        return f"<minillm backend {self.name!r}>"


def keys_in_use(q: Any, k: Any, v: Any, n_keys: int | None) -> tuple[Any, Any]:
    """k, v cut to their first `n_keys` positions (axis 2), after checking that they hold the
    T queries' own positions: T <= n_keys <= k's length."""
    if n_keys is None:
        return k, v
    if isinstance(n_keys, bool) or not isinstance(n_keys, (int, np.integer)) or not q.shape[2] <= n_keys <= k.shape[2]:
        raise ValueError(f"n_keys must be an int from T={q.shape[2]} to the cache length {k.shape[2]}, got {n_keys!r}")
    return k[:, :, :n_keys], v[:, :, :n_keys]


# ------------------------------------------------------------------------------------------
# Weights in kernel form: a kind's arrays as plain fields, on whatever device holds them.
#
# The meaning of every field is the kind's own (see `minillm.kinds`); only the container
# changes, so a compiled kernel or a device library never sees a NumPy-only object. `.shape`
# is the dense (in, out) shape, as for the kinds.
@dataclass(frozen=True, eq=False)
class Int8Arrays:
    """`Int8PerChannel`: $W_{io} = s_o q_{io}$; q int8 (in, out), scale (out,)."""

    q: Any
    scale: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)


@dataclass(frozen=True, eq=False)
class GroupArrays:
    """`IntPerGroup`: $W_{io} = s_{go}(q_{io} - z_{go})$; zero is all zeros when symmetric.

    The group size is implied by the shapes: in / scale.shape[0]."""

    q: Any
    scale: Any
    zero: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)


@dataclass(frozen=True, eq=False)
class Q8Arrays:
    """`Q8_0`: $W = d\\,q$ in blocks of 32 inputs; qs int8 (in, out), d (in/32, out)."""

    qs: Any
    d: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qs.shape)


@dataclass(frozen=True, eq=False)
class Q4Arrays:
    """`Q4_0`: $W = d\\,(q - 8)$; packed uint8 (in/2, out), low nibble = element j, high = j+16."""

    packed: Any
    d: Any

    @property
    def shape(self) -> tuple[int, int]:
        return (2 * self.packed.shape[0], self.packed.shape[1])


@dataclass(frozen=True, eq=False)
class LowRankArrays:
    """`LowRank`: $W = AB$, a (in, r), b (r, out)."""

    a: Any
    b: Any

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.shape[0], self.b.shape[1])


@dataclass(frozen=True, eq=False)
class NMArrays:
    """`NMSparse`: n kept values of every m inputs; indices uint8 are positions in the group."""

    values: Any
    indices: Any
    n: int
    m: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0] * self.m // self.n, self.values.shape[1])


@dataclass(frozen=True, eq=False)
class DenseRows:
    """A dense (in, out) weight held transposed, $W^\\top$ (out, in) row-major: the layout
    `minillm.nn.gpt.output_major` gives on the host, kept on the device (`ArrayBackend.prepare`)."""

    wt: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.wt.shape[::-1])


@dataclass(frozen=True, eq=False)
class TiedArrays:
    """`TiedEmbedding`: the head's kernel form (C, V); `.shape` is the embedding's (V, C)."""

    head: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.head.shape[::-1])


KERNEL_FORMS = (Int8Arrays, GroupArrays, Q8Arrays, Q4Arrays, LowRankArrays, NMArrays, TiedArrays, DenseRows)


def kernel_form(w: Any, asarray: Callable[[Any], Any] = np.asarray, dtype: Any = np.float32,
                scale_dtype: Any = None) -> Any:  # fmt: skip
    """A weight in the form a backend's kernels take: a dense array, or one of `KERNEL_FORMS`.

    Parameters
    ----------
    w : ndarray or weight kind
        The weight as it sits in a params dict.
    asarray : callable
        Puts one NumPy array where the backend computes (``cupy.asarray``, ``jax.device_put``).
    dtype : dtype
        The float type of dense values (dense weights, low-rank factors, sparse values).
    scale_dtype : dtype, optional
        Convert quantization scales to this type (Numba has no float16); None keeps them as stored.

    A `Masked` weight becomes the dense array $W \\odot M$ (the same bytes: see `Masked.nbytes`).
    """
    def scale(s: np.ndarray) -> Any:
        return asarray(s if scale_dtype is None else s.astype(scale_dtype))

    if isinstance(w, np.ndarray):
        return asarray(w.astype(dtype, copy=False))
    if isinstance(w, K.Int8PerChannel):
        return Int8Arrays(asarray(w.q), scale(w.scale))
    if isinstance(w, K.IntPerGroup):
        zero = np.zeros(w.scale.shape, np.int8) if w.zero_point is None else w.zero_point
        return GroupArrays(asarray(w.q), scale(w.scale), asarray(zero))
    if isinstance(w, K.Q8_0):
        return Q8Arrays(asarray(w.qs), scale(w.d))
    if isinstance(w, K.Q4_0):
        return Q4Arrays(asarray(w.packed), scale(w.d))
    if isinstance(w, K.LowRank):
        return LowRankArrays(asarray(w.a.astype(dtype)), asarray(w.b.astype(dtype)))
    if isinstance(w, K.NMSparse):
        return NMArrays(asarray(w.values.astype(dtype)), asarray(w.indices), int(w.n), int(w.m))
    if isinstance(w, K.Masked):
        return asarray(w.dequantize().astype(dtype))
    if isinstance(w, K.TiedEmbedding):
        return TiedArrays(kernel_form(w.head, asarray, dtype, scale_dtype))
    raise TypeError(f"weight must be a numpy array or one of minillm.kinds, got {type(w).__name__}")


def take_columns(w: Any, idx: Any) -> Any:
    """The kernel form of output columns `idx` of a quantized kernel form: every array field of
    `Int8Arrays`, `GroupArrays`, `Q8Arrays` and `Q4Arrays` has the output column as its last axis."""
    if not isinstance(w, (Int8Arrays, GroupArrays, Q8Arrays, Q4Arrays)):
        raise TypeError(f"take_columns needs a quantized kernel form, got {type(w).__name__}")
    return type(w)(*(getattr(w, f.name)[..., idx] for f in fields(w)))


class WeightCache:
    """Converted copies of weights, one per weight *object*, forgotten when the weight is freed.

    `prepare` runs on every `generate` call; converting (or copying to a GPU) once per weight
    object makes the second call free. The key is the object's identity, kept honest by a weak
    reference: when the weight is garbage-collected its entry goes too, so a new object that
    reuses the address never sees a stale copy. Changing an array *in place* after `prepare`
    is not noticed — call `clear()` (``backend.clear_cache()``) after doing that.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, w: Any, convert: Callable[[Any], Any]) -> Any:
        key = id(w)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is w:
            return hit[1]
        out = convert(w)
        try:
            ref = weakref.ref(w, lambda _r, key=key, entries=self._entries: entries.pop(key, None))
        except TypeError:  # not weak-referenceable (e.g. a plain list): do not cache
            return out
        self._entries[key] = (ref, out)
        return out

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
