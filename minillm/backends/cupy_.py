"""The CuPy backend: the same forward on an NVIDIA GPU, written against an array namespace.

CuPy mirrors NumPy's API on the GPU, so the kernels here are NumPy's written with a module
`xp` in place of `np` — `ArrayBackend(xp)`. With ``xp = cupy`` they run on the GPU; with
``xp = numpy`` the very same code runs on the CPU, which is how it is tested on machines without
a GPU (`CupyBackend(xp=numpy)`); the JAX backend reuses it with ``xp = jax.numpy``.

Weights move to the device once: `prepare(params)` converts every weight to its *kernel form*
(`minillm.backends.numpy_.kernel_form`: a kind's arrays as they are stored — int8 codes, packed
nibbles, float16 scales) on the device, cached per weight object, so a `generate` call after
the first copies nothing. A quantized weight is dequantized on the device, by elementwise array
operations, just before its product:

- int8 per channel: $xW = (x\\,q)\\,\\mathrm{diag}(s)$ — the scale is applied to the product;
- per group / Q8_0: $W_{io} = s_{go}(q_{io} - z_{go})$, the codes viewed as (groups, g, out);
- Q4_0: the low and high nibbles of each byte ($p \\,\\&\\, 15$, $p \\gg 4$) are inputs $j$ and
  $j + 16$ of a block of 32, $W = d\\,(q - 8)$;
- 2:4 sparse: each kept value lands at its index inside its group of 4 (a one-hot sum, no
  scatter, so it runs unchanged under JAX's tracing);
- low rank: $(xA)B$.

On a GPU the dequantized tile is written to device memory and read back by the GEMM; a fused
kernel (as the Numba backend has for the CPU) would save that traffic. It is not written here,
because it could not be run and tested on the machines this code was developed on (no GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kinds as K
from ..nn.gpt import MATMUL_WEIGHTS
from . import BackendUnavailable
from .numpy_ import (
    KERNEL_FORMS,
    DenseRows,
    GroupArrays,
    Int8Arrays,
    LowRankArrays,
    NMArrays,
    NumpyBackend,
    Q4Arrays,
    Q8Arrays,
    TiedArrays,
    WeightCache,
    kernel_form,
    keys_in_use,
    take_columns,
)


class ArrayBackend(NumpyBackend):
    """The inference kernels written once against an array namespace `xp` (numpy, cupy, jax.numpy).

    Parameters
    ----------
    xp : module
        The array namespace.
    name : str
        The backend's name.
    dtype : dtype
        Compute type of activations and dense weights (float32 unless a subclass allows less).
    """

    def __init__(self, xp: Any, name: str | None = None, dtype: Any = np.float32) -> None:
        self.xp = xp
        self.name = name or xp.__name__
        self.dtype = dtype
        self._cache = WeightCache()

    # --- moving data -----------------------------------------------------------------------
    def asarray(self, a: Any) -> Any:
        return self.xp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every weight on the device in kernel form, copied once per weight object (cached).

        The result is marked (`Prepared`), so preparing it again — as every JAX step does —
        returns it at once instead of looking up every weight."""
        if isinstance(params, Prepared) and params.backend is self:
            return params
        return Prepared(self, {name: self.put(w, rows=name.endswith(MATMUL_WEIGHTS)) for name, w in params.items()})

    def put(self, w: Any, rows: bool = False) -> Any:
        """One weight on the device: dense -> array of `dtype`, kind -> kernel form; device arrays pass.

        With `rows`, an output-major matmul weight (`minillm.nn.gpt.output_major`) stays
        output-major: device arrays are row-major, so it is held as its transpose (`DenseRows`),
        which XLA's CPU dot reads a few percent faster."""
        if not (isinstance(w, np.ndarray) or K.is_kind(w)):
            return w  # already on the device (or a traced value)
        if rows and isinstance(w, np.ndarray) and w.ndim == 2 and w.T.flags.c_contiguous:
            return self._cache.get(w, lambda w: DenseRows(self.asarray(w.T.astype(self._dense_dtype(w), copy=False))))
        return self._cache.get(w, lambda w: kernel_form(w, self.asarray, self._dense_dtype(w)))

    def _dense_dtype(self, w: Any) -> Any:
        # Only floating arrays take the compute dtype; integer arrays keep theirs.
        if isinstance(w, np.ndarray) and not np.issubdtype(w.dtype, np.floating):
            return w.dtype
        return self.dtype

    def clear_cache(self) -> None:
        """Forget device copies (needed only after changing a weight array in place)."""
        self._cache.clear()

    # --- products ----------------------------------------------------------------------------
    def mm(self, a: Any, b: Any) -> Any:
        """The one matrix product every kernel uses (JAX overrides it to fix the precision)."""
        return a @ b

    def mm_t(self, a: Any, bt: Any) -> Any:
        """$a B$ for B held transposed, bt = $B^\\top$ (..., n, k), batched over leading axes (JAX
        overrides it to contract without a transpose)."""
        return self.mm(a, bt.swapaxes(-1, -2))

    def dequantize(self, w: Any) -> Any:
        """The dense float32 (in, out) matrix of a kernel form, built with `xp` operations."""
        xp, f32 = self.xp, np.float32
        if isinstance(w, DenseRows):
            return w.wt.T.astype(f32)
        n_in, n_out = w.shape
        if isinstance(w, Int8Arrays):
            return w.q.astype(f32) * w.scale.astype(f32)
        if isinstance(w, GroupArrays):
            G = w.scale.shape[0]
            q = w.q.reshape(G, n_in // G, n_out).astype(f32)  # (groups, g, out)
            zero, scale = w.zero.astype(f32)[:, None], w.scale.astype(f32)[:, None]
            return ((q - zero) * scale).reshape(n_in, n_out)
        if isinstance(w, Q8Arrays):
            q = w.qs.reshape(-1, 32, n_out).astype(f32)  # (blocks, 32, out)
            return (q * w.d.astype(f32)[:, None]).reshape(n_in, n_out)
        if isinstance(w, Q4Arrays):
            blocks = w.packed.reshape(-1, 16, n_out)  # (blocks, 16, out) bytes
            codes = xp.concatenate([blocks & 15, blocks >> 4], axis=1)  # (blocks, 32, out)
            return ((codes.astype(f32) - 8.0) * w.d.astype(f32)[:, None]).reshape(n_in, n_out)
        if isinstance(w, NMArrays):
            G = w.values.shape[0] // w.n
            values = w.values.astype(f32).reshape(G, w.n, 1, n_out)
            idx = w.indices.reshape(G, w.n, 1, n_out)
            slots = xp.arange(w.m, dtype=w.indices.dtype).reshape(1, 1, w.m, 1)
            return (values * (idx == slots)).sum(axis=1).reshape(n_in, n_out)  # (groups, m, out)
        if isinstance(w, LowRankArrays):
            return self.mm(w.a, w.b).astype(f32)
        raise TypeError(f"not a kernel form: {type(w).__name__}")

    def matmul(self, x: Any, w: Any) -> Any:
        """$xW$ for a dense device array or a kernel form."""
        if isinstance(w, DenseRows):
            return self.mm_t(x, w.wt)
        if isinstance(w, Int8Arrays):  # the per-column scale factors out of the sum
            return self.mm(x, w.q.astype(self.dtype)) * w.scale.astype(self.dtype)
        if isinstance(w, LowRankArrays):
            return self.mm(self.mm(x, w.a), w.b)
        if isinstance(w, KERNEL_FORMS):
            return self.mm(x, self.dequantize(w).astype(self.dtype))
        return self.mm(x, w)

    # --- kernels ---------------------------------------------------------------------------
    def linear(self, x: Any, w: Any, b: Any) -> Any:
        y = self.matmul(x, self.put(w))  # (N, out)
        return y if b is None else y + self.put(b)

    def layer_norm(self, x: Any, w: Any, b: Any, eps: float) -> Any:
        xp = self.xp
        x32 = x.astype(np.float32)  # statistics in float32 even when computing in bfloat16
        mu = x32.mean(axis=-1, keepdims=True)
        xc = x32 - mu
        var = (xc * xc).mean(axis=-1, keepdims=True)
        y = xc * (1.0 / xp.sqrt(var + eps)) * self.put(w).astype(np.float32) + self.put(b).astype(np.float32)
        return y.astype(self.dtype)

    def gelu(self, x: Any) -> Any:
        c = np.float32(np.sqrt(2.0 / np.pi))
        return 0.5 * x * (1.0 + self.xp.tanh(c * (x + 0.044715 * x * x * x)))

    def softmax(self, x: Any) -> Any:
        xp = self.xp
        z = x.astype(np.float32)
        e = xp.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def attention(self, q: Any, k: Any, v: Any, n_keys: int | None = None) -> Any:
        """Causal attention; q (B, H, T, D) are the *last* T of the S positions in k, v (B, H, S, D)
        (of the first `n_keys` positions, if given: see `NumpyBackend.attention`)."""
        k, v = keys_in_use(q, k, v, n_keys)
        T, S = q.shape[2], k.shape[2]
        return self.attention_at(q, k, v, S - T)

    def attention_at(self, q: Any, k: Any, v: Any, pos0: Any) -> Any:
        """Attention of queries at positions pos0.. over keys 0..S-1; key $s$ is visible to query
        $t$ iff $s \\le \\mathrm{pos0} + t$ (so cache entries past the queries are ignored)."""
        xp = self.xp
        T, S = q.shape[2], k.shape[2]
        s = self.mm_t(q, k) * np.float32(1.0 / np.sqrt(q.shape[-1]))  # (B, H, T, S)
        hidden = xp.arange(S)[None, :] > (pos0 + xp.arange(T))[:, None]  # (T, S) future keys
        s = xp.where(hidden, -np.inf, s.astype(np.float32))
        return self.mm(self.softmax(s).astype(self.dtype), v)  # (B, H, T, D)

    def embed(self, wte: Any, idx: Any) -> Any:
        """Token embeddings (B, T, C); a quantized tied embedding dequantizes only columns `idx`."""
        wte = self.put(wte)
        if isinstance(wte, TiedArrays):
            cols = self.dequantize(take_columns(wte.head, idx.reshape(-1)))  # (C, B*T)
            return cols.T.reshape(*idx.shape, -1).astype(self.dtype)
        return wte[idx]

    def lm_head(self, x: Any, wte: Any) -> Any:
        wte = self.put(wte)
        if isinstance(wte, TiedArrays):  # the head's product, from its codes
            return self.matmul(x, wte.head).astype(np.float32)
        return self.mm_t(x, wte).astype(np.float32)  # (N, V) logits in float32

    # --- the KV cache ----------------------------------------------------------------------
    def kv_alloc(self, n_layer: int, B: int, H: int, T: int, D: int, dtype: Any = None) -> tuple:
        shape = (n_layer, B, H, T, D)
        return self.xp.zeros(shape, self.dtype), self.xp.zeros(shape, self.dtype)


class Prepared(dict):
    """A params dict already converted by `backend.prepare` (a plain dict otherwise)."""

    def __init__(self, backend: Any, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.backend = backend


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailable(
            f"backend 'cupy' is unavailable: {e}; install it with: pip install 'minillm[cuda]'"
        ) from None
    try:
        ok = bool(cupy.is_available())
    except Exception:  # a broken driver can raise instead of answering
        ok = False
    if not ok:
        raise BackendUnavailable(
            "backend 'cupy' is unavailable: no CUDA GPU is present (cupy is installed, but "
            "cupy.is_available() is False: no device, or no driver that supports it)"
        )
    return cupy


class CupyBackend(ArrayBackend):
    """`ArrayBackend` on the GPU with CuPy.

    ``CupyBackend()`` needs CuPy and a CUDA GPU (else `BackendUnavailable`). ``CupyBackend(xp=numpy)``
    is the test double: the same code path with NumPy standing in for CuPy, runnable anywhere.
    """

    def __init__(self, xp: Any = None) -> None:
        if xp is None:
            xp = _import_cupy()
        super().__init__(xp, name="cupy" if xp.__name__ == "cupy" else f"cupy[{xp.__name__}]")

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.xp.__name__ == "cupy":
            return self.xp.asnumpy(a)
        return np.asarray(a)
