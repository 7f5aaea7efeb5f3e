"""The Numba backend: compiled CPU kernels that multiply by quantized weights directly.

Decoding one token multiplies a single row $x$ by every weight matrix once, doing two FLOPs per
weight read. It is memory-bound: time is bytes read divided by bandwidth, so the only way to go
faster is to read fewer bytes. NumPy cannot: to multiply by an int8 matrix it must first
materialise a float32 copy (four times the bytes), then multiply. The kernels here read the
stored codes and compute $xW$ from them in one pass — a **fused dequantize-and-multiply**.

For a kind with one scale per block of inputs (a group of 32 inputs of one output column) the
scale factors out of the block's sum, so the inner loop runs on the raw codes:

$$(xW)_o = \\sum_{g} s_{go} \\Big( \\sum_{i \\in g} x_i\\, q_{io} \\; - \\; z_{go} \\sum_{i \\in g} x_i \\Big)$$

($z = 0$ for symmetric int8 and Q8_0, $z = 8$ for Q4_0's unsigned nibbles). The block sums
$\\sum_{i \\in g} x_i$ are computed once per call. Each kernel splits the output columns into
chunks, one parallel task (`prange`) per chunk; a task walks down the input rows and keeps a
small accumulator per column, so it reads its slice of every weight row once and in order.

Everything else decoding needs is fused too: layer norm (one pass per row for the statistics,
one to normalise), GELU, and attention over the KV cache (one task per (batch, head, query):
scores, softmax and the weighted sum of values without materialising the score matrix).

Where compiling does not pay, NumPy stays: dense float32 products (BLAS is already as fast as
the memory allows), low-rank products (two dense products), and prefill with many rows, where
the work is compute-bound and BLAS on dequantized column tiles wins.

Kernels are compiled with ``@njit(parallel=True, fastmath=True, cache=True)`` on first use and
cached on disk (in ``__pycache__`` next to this file or, if that is not writable, in
``$NUMBA_CACHE_DIR``, by default ``~/.cache/minillm/numba``). `NumbaBackend.compile()` triggers
and times the compilation, so benchmarks can report it apart from steady-state speed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import numpy as np

from .numpy_ import (
    KERNEL_FORMS,
    GroupArrays,
    Int8Arrays,
    LowRankArrays,
    NMArrays,
    NumpyBackend,
    Q4Arrays,
    Q8Arrays,
    WeightCache,
    kernel_form,
)


def _set_cache_dir() -> None:
    """Default NUMBA_CACHE_DIR to ~/.cache/minillm/numba when this package is read-only."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = os.path.dirname(os.path.abspath(__file__))
    pycache = os.path.join(here, "__pycache__")
    target = pycache if os.path.isdir(pycache) else here
    if os.access(target, os.W_OK):
        return
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.path.expanduser("~"), ".cache", "minillm", "numba")
    if "numba" in sys.modules:  # already imported elsewhere: make it re-read the environment
        from numba.core import config

        config.reload_config()


_set_cache_dir()

import numba  # noqa: E402  (after the cache directory is chosen)
from numba import njit, prange  # noqa: E402

CHUNK = 64  # output columns per parallel task: one 64-byte cache line of int8 codes per row
TILE = 512  # output columns dequantized at once on the prefill (BLAS) path
JIT = dict(parallel=True, fastmath=True, cache=True)
F32 = np.float32


# ------------------------------------------------------------------------------------------
# Fused dequantize-and-multiply: y = x W + b for x (N, in), W stored as codes, never as float32.
@njit(**JIT)
def matmul_int8(x, q, scale, bias, y):  # pragma: no cover - compiled
    """Int8PerChannel: $y_o = s_o \\sum_i x_i q_{io} + b_o$."""
    N, n_in = x.shape
    n_out = q.shape[1]
    for c in prange((n_out + CHUNK - 1) // CHUNK):
        o0 = c * CHUNK
        w = min(CHUNK, n_out - o0)
        acc = np.zeros((N, w), np.float32)
        for i in range(n_in):
            for r in range(N):
                xi = x[r, i]
                for j in range(w):
                    acc[r, j] += xi * np.float32(q[i, o0 + j])
        for r in range(N):
            for j in range(w):
                y[r, o0 + j] = acc[r, j] * scale[o0 + j] + bias[o0 + j]


@njit(**JIT)
def matmul_group(x, xsum, q, scale, zero, bias, y):  # pragma: no cover - compiled
    """IntPerGroup: $y_o = \\sum_g s_{go}(\\sum_{i\\in g} x_i q_{io} - z_{go} \\sum_{i \\in g} x_i) + b_o$."""
    N, n_in = x.shape
    n_groups, n_out = scale.shape
    g = n_in // n_groups
    for c in prange((n_out + CHUNK - 1) // CHUNK):
        o0 = c * CHUNK
        w = min(CHUNK, n_out - o0)
        acc = np.zeros((N, w), np.float32)
        part = np.empty((N, w), np.float32)
        for gi in range(n_groups):
            part[:] = 0.0
            for i in range(gi * g, gi * g + g):
                for r in range(N):
                    xi = x[r, i]
                    for j in range(w):
                        part[r, j] += xi * np.float32(q[i, o0 + j])
            for r in range(N):
                for j in range(w):
                    z = np.float32(zero[gi, o0 + j]) * xsum[r, gi]
                    acc[r, j] += scale[gi, o0 + j] * (part[r, j] - z)
        for r in range(N):
            for j in range(w):
                y[r, o0 + j] = acc[r, j] + bias[o0 + j]


@njit(**JIT)
def matmul_q8_0(x, qs, d, bias, y):  # pragma: no cover - compiled
    """Q8_0: $y_o = \\sum_{\\text{block } k} d_{ko} \\sum_{i \\in k} x_i q_{io} + b_o$."""
    N, n_in = x.shape
    n_blocks, n_out = d.shape
    for c in prange((n_out + CHUNK - 1) // CHUNK):
        o0 = c * CHUNK
        w = min(CHUNK, n_out - o0)
        acc = np.zeros((N, w), np.float32)
        part = np.empty((N, w), np.float32)
        for kb in range(n_blocks):
            part[:] = 0.0
            for i in range(kb * 32, kb * 32 + 32):
                for r in range(N):
                    xi = x[r, i]
                    for j in range(w):
                        part[r, j] += xi * np.float32(qs[i, o0 + j])
            for r in range(N):
                for j in range(w):
                    acc[r, j] += d[kb, o0 + j] * part[r, j]
        for r in range(N):
            for j in range(w):
                y[r, o0 + j] = acc[r, j] + bias[o0 + j]


@njit(**JIT)
def matmul_q4_0(x, xsum, packed, d, bias, y):  # pragma: no cover - compiled
    """Q4_0: $y_o = \\sum_k d_{ko}(\\sum_{i\\in k} x_i q_{io} - 8\\sum_{i\\in k} x_i) + b_o$, q from nibbles.

    Byte $j$ of block $k$ (row $16k + j$ of `packed`) holds input $32k + j$ in its low nibble
    and input $32k + j + 16$ in its high nibble."""
    N, n_in = x.shape
    n_blocks, n_out = d.shape
    eight = np.float32(8.0)
    for c in prange((n_out + CHUNK - 1) // CHUNK):
        o0 = c * CHUNK
        w = min(CHUNK, n_out - o0)
        acc = np.zeros((N, w), np.float32)
        part = np.empty((N, w), np.float32)
        for kb in range(n_blocks):
            part[:] = 0.0
            for jb in range(16):
                row = kb * 16 + jb
                i = kb * 32 + jb
                for r in range(N):
                    x_lo = x[r, i]
                    x_hi = x[r, i + 16]
                    for j in range(w):
                        p = packed[row, o0 + j]
                        part[r, j] += x_lo * np.float32(p & 15) + x_hi * np.float32(p >> 4)
            for r in range(N):
                for j in range(w):
                    acc[r, j] += d[kb, o0 + j] * (part[r, j] - eight * xsum[r, kb])
        for r in range(N):
            for j in range(w):
                y[r, o0 + j] = acc[r, j] + bias[o0 + j]


@njit(**JIT)
def matmul_nm(x, values, indices, n, m, bias, y):  # pragma: no cover - compiled
    """N:M sparse: $y_o = \\sum_k x_{m\\lfloor k/n \\rfloor + \\mathrm{idx}_{ko}}\\, v_{ko} + b_o$ — only kept values are read."""
    N = x.shape[0]
    n_kept, n_out = values.shape
    for c in prange((n_out + CHUNK - 1) // CHUNK):
        o0 = c * CHUNK
        w = min(CHUNK, n_out - o0)
        acc = np.zeros((N, w), np.float32)
        for k in range(n_kept):
            base = (k // n) * m
            for r in range(N):
                for j in range(w):
                    acc[r, j] += x[r, base + indices[k, o0 + j]] * values[k, o0 + j]
        for r in range(N):
            for j in range(w):
                y[r, o0 + j] = acc[r, j] + bias[o0 + j]


# ------------------------------------------------------------------------------------------
# Dequantize a tile of columns o0.. into `out` (in, w): the prefill path, followed by BLAS.
@njit(**JIT)
def dequant_int8(q, scale, o0, out):  # pragma: no cover - compiled
    n_in, w = out.shape
    for i in prange(n_in):
        for j in range(w):
            out[i, j] = np.float32(q[i, o0 + j]) * scale[o0 + j]


@njit(**JIT)
def dequant_group(q, scale, zero, o0, out):  # pragma: no cover - compiled
    n_in, w = out.shape
    g = n_in // scale.shape[0]
    for i in prange(n_in):
        gi = i // g
        for j in range(w):
            out[i, j] = scale[gi, o0 + j] * (np.float32(q[i, o0 + j]) - np.float32(zero[gi, o0 + j]))


@njit(**JIT)
def dequant_q8_0(qs, d, o0, out):  # pragma: no cover - compiled
    n_in, w = out.shape
    for i in prange(n_in):
        for j in range(w):
            out[i, j] = d[i // 32, o0 + j] * np.float32(qs[i, o0 + j])


@njit(**JIT)
def dequant_q4_0(packed, d, o0, out):  # pragma: no cover - compiled
    w = out.shape[1]
    eight = np.float32(8.0)
    for row in prange(packed.shape[0]):
        kb, jb = row // 16, row % 16
        i = kb * 32 + jb
        for j in range(w):
            p = packed[row, o0 + j]
            out[i, j] = d[kb, o0 + j] * (np.float32(p & 15) - eight)
            out[i + 16, j] = d[kb, o0 + j] * (np.float32(p >> 4) - eight)


@njit(**JIT)
def dequant_nm(values, indices, n, m, o0, out):  # pragma: no cover - compiled
    w = out.shape[1]
    n_groups = values.shape[0] // n
    for gi in prange(n_groups):
        for i in range(gi * m, gi * m + m):
            for j in range(w):
                out[i, j] = 0.0
        for k in range(gi * n, gi * n + n):
            for j in range(w):
                out[gi * m + indices[k, o0 + j], j] = values[k, o0 + j]


# ------------------------------------------------------------------------------------------
# Fused elementwise and row kernels.
@njit(**JIT)
def layer_norm_rows(x, w, b, eps, y):  # pragma: no cover - compiled
    """$y = \\gamma (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon} + \\beta$ per row; statistics in float64."""
    N, C = x.shape
    for r in prange(N):
        mu = 0.0
        for c in range(C):
            mu += x[r, c]
        mu /= C
        var = 0.0
        for c in range(C):
            dv = x[r, c] - mu
            var += dv * dv
        var /= C
        rstd = np.float32(1.0 / math.sqrt(var + eps))
        mu32 = np.float32(mu)
        for c in range(C):
            y[r, c] = (x[r, c] - mu32) * rstd * w[c] + b[c]


@njit(**JIT)
def gelu_flat(x, y):  # pragma: no cover - compiled
    """$\\tfrac12 x (1 + \\tanh(\\sqrt{2/\\pi}(x + 0.044715 x^3)))$ elementwise, in float32."""
    c = np.float32(math.sqrt(2.0 / math.pi))
    a = np.float32(0.044715)
    half, one = np.float32(0.5), np.float32(1.0)
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = half * v * (one + np.tanh(c * (v + a * v * v * v)))


@njit(**JIT)
def softmax_rows(x, y):  # pragma: no cover - compiled
    """$e^{x_i - \\max x} / \\sum_j e^{x_j - \\max x}$ per row."""
    N, n = x.shape
    for r in prange(N):
        mx = x[r, 0]
        for j in range(1, n):
            mx = max(mx, x[r, j])
        total = np.float32(0.0)
        for j in range(n):
            e = np.exp(x[r, j] - mx)
            y[r, j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(n):
            y[r, j] *= inv


@njit(**JIT)
def attention_cache(q, k, v, y):  # pragma: no cover - compiled
    """Causal attention of q (B, H, T, D), the newest T of S positions, over k, v (B, H, S, D).

    One task per (b, h, t): the scores of the visible keys $0 \\ldots S-T+t$, their softmax,
    and the weighted sum of values — the (T, S) score matrix is never stored."""
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = np.float32(1.0 / math.sqrt(D))
    for task in prange(B * H * T):
        b = task // (H * T)
        h = (task // T) % H
        t = task % T
        n_keys = S - T + t + 1
        s = np.empty(n_keys, np.float32)
        mx = np.float32(-np.inf)
        for j in range(n_keys):
            acc = np.float32(0.0)
            for e in range(D):
                acc += q[b, h, t, e] * k[b, h, j, e]
            s[j] = acc * scale
            mx = max(mx, s[j])
        total = np.float32(0.0)
        for j in range(n_keys):
            s[j] = np.exp(s[j] - mx)
            total += s[j]
        out = np.zeros(D, np.float32)
        for j in range(n_keys):
            wj = s[j] / total
            for e in range(D):
                out[e] += wj * v[b, h, j, e]
        for e in range(D):
            y[b, h, t, e] = out[e]


# ------------------------------------------------------------------------------------------
def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class NumbaBackend(NumpyBackend):
    """Numba-compiled CPU kernels: fused dequantize-and-multiply for every quantized kind.

    `prefill_rows`: products with at least this many rows (prefill) dequantize column tiles
    and call BLAS instead — there the work is compute-bound and BLAS is faster.
    """

    name = "numba"
    prefill_rows = 16

    def __init__(self) -> None:
        self._cache = WeightCache()
        self.compile_s: float | None = None

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        """Params with every weight kind in kernel form (float32 scales: Numba has no float16).

        The conversion shares the codes with the kind (no copy) and is done once per weight."""
        return {name: self.kernel_weight(w) for name, w in params.items()}

    def kernel_weight(self, w: Any) -> Any:
        if isinstance(w, np.ndarray) or isinstance(w, KERNEL_FORMS):
            return w
        return self._cache.get(w, lambda w: kernel_form(w, np.ascontiguousarray, np.float32, np.float32))

    def clear_cache(self) -> None:
        """Forget converted weights (needed only after changing a weight array in place)."""
        self._cache.clear()

    # --- kernels ---------------------------------------------------------------------------
    def linear(self, x: np.ndarray, w: Any, b: np.ndarray | None) -> np.ndarray:
        """$y = xW + b$: fused kernels for quantized and N:M kinds, BLAS for dense and low rank."""
        w = self.kernel_weight(w)
        if isinstance(w, np.ndarray):
            return super().linear(x, w, b)
        if isinstance(w, LowRankArrays):  # two dense products, (xA)B
            y = (x @ w.a) @ w.b
            if b is not None:
                y += b
            return y
        x = _f32(x)
        N = x.shape[0]
        n_in, n_out = w.shape
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"x must have shape (N, {n_in}) to multiply this weight, got {x.shape}")
        bias = np.zeros(n_out, np.float32) if b is None else _f32(b)
        if N >= self.prefill_rows:
            return self._tiled_blas(x, w, bias)
        y = np.empty((N, n_out), np.float32)
        if isinstance(w, Int8Arrays):
            matmul_int8(x, w.q, w.scale, bias, y)
        elif isinstance(w, GroupArrays):
            xsum = x.reshape(N, w.scale.shape[0], -1).sum(-1)  # (N, groups): sum of x per group
            matmul_group(x, xsum, w.q, w.scale, w.zero, bias, y)
        elif isinstance(w, Q8Arrays):
            matmul_q8_0(x, w.qs, w.d, bias, y)
        elif isinstance(w, Q4Arrays):
            xsum = x.reshape(N, -1, 32).sum(-1)  # (N, blocks)
            matmul_q4_0(x, xsum, w.packed, w.d, bias, y)
        else:
            matmul_nm(x, w.values, w.indices, w.n, w.m, bias, y)
        return y

    def _tiled_blas(self, x: np.ndarray, w: Any, bias: np.ndarray) -> np.ndarray:
        """Prefill: dequantize TILE columns at a time into one buffer and multiply with BLAS."""
        n_in, n_out = w.shape
        y = np.empty((x.shape[0], n_out), np.float32)
        buf = np.empty((n_in, min(TILE, n_out)), np.float32)
        for o0 in range(0, n_out, TILE):
            tile = buf[:, : min(TILE, n_out - o0)]
            if isinstance(w, Int8Arrays):
                dequant_int8(w.q, w.scale, o0, tile)
            elif isinstance(w, GroupArrays):
                dequant_group(w.q, w.scale, w.zero, o0, tile)
            elif isinstance(w, Q8Arrays):
                dequant_q8_0(w.qs, w.d, o0, tile)
            elif isinstance(w, Q4Arrays):
                dequant_q4_0(w.packed, w.d, o0, tile)
            else:
                dequant_nm(w.values, w.indices, w.n, w.m, o0, tile)
            np.matmul(x, tile, out=y[:, o0 : o0 + tile.shape[1]])
        y += bias
        return y

    def layer_norm(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
        x2 = _f32(x).reshape(-1, x.shape[-1])
        y = np.empty_like(x2)
        layer_norm_rows(x2, _f32(w), _f32(b), float(eps), y)
        return y.reshape(x.shape)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        flat = _f32(x).reshape(-1)
        y = np.empty_like(flat)
        gelu_flat(flat, y)
        return y.reshape(x.shape)

    def softmax(self, x: np.ndarray) -> np.ndarray:
        x2 = _f32(x).reshape(-1, x.shape[-1])
        y = np.empty_like(x2)
        softmax_rows(x2, y)
        return y.reshape(x.shape)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Fused causal attention over the cache (k, v may be strided views of it)."""
        if q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32:
            return super().attention(q, k, v)
        y = np.empty(q.shape, np.float32)
        attention_cache(q, k, v, y)
        return y

    # --- compilation -----------------------------------------------------------------------
    def compile(self) -> float:
        """Compile (or load from the disk cache) every kernel for the types the forward uses.

        Returns the seconds it took (also kept as `compile_s`): a one-time cost per process,
        reported apart from steady-state speed."""
        from .. import kinds as K

        t = time.perf_counter()
        rng = np.random.default_rng(0)
        w = rng.standard_normal((64, 64)).astype(np.float32)
        ws = [K.Int8PerChannel(rng.integers(-127, 128, (64, 64)).astype(np.int8), np.ones(64, np.float32)),
              K.IntPerGroup(rng.integers(-8, 8, (64, 64)).astype(np.int8), np.ones((2, 64), np.float16),
                            np.zeros((2, 64), np.int8), 4, 32),
              K.Q8_0(rng.integers(-127, 128, (64, 64)).astype(np.int8), np.ones((2, 64), np.float16)),
              K.Q4_0(rng.integers(0, 256, (32, 64)).astype(np.uint8), np.ones((2, 64), np.float16)),
              K.NMSparse(w[:32], np.tile(np.array([0, 1], np.uint8), 16)[:, None].repeat(64, 1))]  # fmt: skip
        for kind in ws:
            for rows in (1, self.prefill_rows):
                self.linear(w[:rows], kind, w[0])
        self.layer_norm(w, w[0], w[1], 1e-5)
        self.gelu(w)
        self.softmax(w)
        cache = np.zeros((2, 1, 2, 8, 32), np.float32)
        for T in (1, 4):  # q, k, v strided views, exactly as the forward passes them
            qkv = rng.standard_normal((T, 3 * 64)).astype(np.float32)
            q = qkv.reshape(1, T, 3, 2, 32).transpose(2, 0, 3, 1, 4)[0]  # (1, 2, T, 32)
            self.attention(q, cache[0, :, :, :4], cache[1, :, :, :4])
        self.compile_s = time.perf_counter() - t
        return self.compile_s

    warmup = compile

    @property
    def threads(self) -> int:
        """Threads Numba's parallel loops use (NUMBA_NUM_THREADS)."""
        return numba.get_num_threads()
