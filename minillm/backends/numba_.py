"""The Numba backend: compiled CPU kernels that multiply by quantized weights directly.

Decoding one token multiplies a single row $x$ by every weight matrix once, doing two FLOPs per
weight read. It is memory-bound: time is bytes read divided by bandwidth, so the only way to go
faster is to read fewer bytes. NumPy cannot: to multiply by an int8 matrix it must first
materialise a float32 copy (four times the bytes), then multiply. The kernels here read the
stored codes and compute $xW$ from them in one pass — a **fused dequantize-and-multiply**.

For a kind with one scale per block of inputs (a group of 32 inputs of one output column) the
scale factors out of the block's sum, so the inner loop runs on the raw codes:

$$(xW)_o = \\sum_{g} s_{go} \\Big( \\sum_{i \\in g} x_i\\, q_{io} \\; - \\; z_{go} \\sum_{i \\in g} x_i \\Big)$$

($z = 0$ for symmetric int8 and Q8_0, $z = 8$ for Q4_0's unsigned nibbles; the block sums
$\\sum_{i \\in g} x_i$ are computed once per call). The integer kinds (int8 per channel, Q8_0,
Q4_0, the per-group kinds) are held in **tiles of 64 outputs**: for each input, the codes of
the tile's 64 outputs sit side by side, so one parallel task (`prange`) per tile keeps the 64
running sums in four SIMD vectors, each code costs one conversion and one multiply-add, and
each block's sums are scaled once, at its end. (A dot product per output, over an (out, in)
row, would reduce across SIMD lanes at every block or multiply every code by its block's scale,
as this backend's earlier row kernels did.) Q4_0's tiles pack eight inputs into a 32-bit word,
laid out to unpack with one AND per code and no shifts. Dense float32 weights stay output-major
rows, one dot product per output: they have no blocks. The tile kernels spend many instructions
per byte, so they ask for their codes 8 KB ahead (`prefetch`): otherwise too few bytes are in
flight to keep memory busy.

Everything else decoding needs is fused too: layer norm (one pass per row for the statistics,
one to normalise), GELU, and attention over the KV cache (one task per (batch, head, query):
scores, softmax and the weighted sum of values without materialising the score matrix). GELU
and attention's softmax use `exp_in_place`, an exponential written out so that it vectorizes
(`np.exp` is one C-library call per element). Float16 scales are widened inside the kernels
(`block_scales`), so the tiles keep their 2 bytes. And a whole transformer block runs as one
compiled call (`decode_block`): the same kernels, with no Python between them.

Dense float32 and low-rank products have kernels here too — not to beat BLAS, but because a
BLAS call between these kernels costs more than it saves: both thread pools spin and fight for
the two cores (see the note on the thread pool below). Only prefill with many rows, which is
compute-bound, goes to BLAS, on dequantized tiles of the weight.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import kinds as K
from ..nn.gpt import MATMUL_WEIGHTS, block_param_shapes
from .numpy_ import NumpyBackend, WeightCache, keys_in_use


def default_cache_dir(package_dir: str, environ: Any = os.environ) -> str | None:
    """Where Numba should cache compiled kernels, or None to keep its default.

    Numba's default is ``__pycache__`` next to this file; when that is not writable (a
    system-wide install) and the user has not set NUMBA_CACHE_DIR, use ~/.cache/minillm/numba."""
    if environ.get("NUMBA_CACHE_DIR"):
        return None
    pycache = os.path.join(package_dir, "__pycache__")
    if os.access(pycache if os.path.isdir(pycache) else package_dir, os.W_OK):
        return None
    return os.path.join(os.path.expanduser("~"), ".cache", "minillm", "numba")


_cache_dir = default_cache_dir(os.path.dirname(os.path.abspath(__file__)))
if _cache_dir is not None:
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir
    if "numba" in sys.modules:  # imported elsewhere already: make it re-read the environment
        from numba.core import config as _numba_config

        _numba_config.reload_config()

import numba  # noqa: E402  (after the cache directory is chosen)
from llvmlite import ir  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

# A decode step runs about a hundred small parallel loops. Numba's OpenMP pool ("omp") starts
# one in ~3 us because its threads spin for a while after each loop, waiting for the next; the
# "workqueue" pool sleeps and takes 40-120 us per loop, more than the products themselves. But a
# spinning pool fights every other thread for the cores — OpenBLAS's above all: alternating
# Numba loops and BLAS calls took 100x longer here. So: OpenMP first, with a short spin
# (GOMP_SPINCOUNT, read once when libgomp loads; ~10k spins is tens of microseconds), and no BLAS
# call between kernels while decoding (dense products have their own kernel below). Set
# NUMBA_THREADING_LAYER or GOMP_SPINCOUNT yourself to override either choice.
SPINCOUNT = "10000"
os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

TILE = 512  # output columns dequantized at once on the prefill (BLAS) path
LANES = 64  # outputs per task of the tiled kernels: four 16-float SIMD vectors
NIBBLE_SCALE = (16.0 ** -np.arange(8)).astype(np.float32)  # 1 / 16^k for nibble k
JIT = dict(parallel=True, fastmath=True, cache=True)
# Without "reassoc", LLVM keeps our order of additions: sums of independent pairs
# instead of one long chain of dependent multiply-adds (for kernels that need no reductions).
JIT_ORDERED = dict(JIT, fastmath={"contract", "nsz", "arcp"})
# Python's error model checks every float division for a zero divisor (to raise
# ZeroDivisionError), and that branch keeps the loop from using SIMD; NumPy's gives inf or nan.
JIT_VECTOR = dict(fastmath=True, error_model="numpy", cache=True)


# ------------------------------------------------------------------------------------------
# Kernel forms. Quantized and N:M kinds: tiles of 64 outputs, the codes of one input for the
# tile's 64 outputs side by side (SIMD across outputs). Dense and low rank: output-major rows,
# the values of output o one contiguous row, so the dot product that produces y_o streams in order.
@dataclass(frozen=True, eq=False)
class TilesInt:
    """Int8 codes with a scale per block of inputs (Int8PerChannel, Q8_0, IntPerGroup) in tiles
    of `LANES` outputs (see `matmul_tiles`): q (tiles, in, 64) int8, scale (tiles, blocks, 64)
    float32 or, for float16 scales, their bits as uint16 (see `tile_scales`), zero (tiles,
    blocks, 64) int8 or None; outputs past `n_out` (padding of the last tile) have scale 0.

    ``q[t, i, l]`` is the code of input $i$ for output $64t + l$; a block is `in / blocks`
    consecutive inputs (all of them for int8 per channel, 32 for Q8_0)."""

    q: np.ndarray
    scale: np.ndarray
    zero: np.ndarray | None
    n_out: int


@dataclass(frozen=True, eq=False)
class TilesQ4_0:
    """Q4_0 in tiles of `LANES` outputs (see `matmul_q4_0`): words (tiles, in/8, 64) uint32,
    d (tiles, in/32, 64) uint16, the bits of the float16 scales (see `tile_scales`); outputs
    past `n_out` (padding of the last tile) have d = 0.

    Nibble $k$ of ``words[t, c, l]`` is the code of input $8c + k$ for output $64t + l$."""

    words: np.ndarray
    d: np.ndarray
    n_out: int


@dataclass(frozen=True, eq=False)
class TilesNM:
    """NMSparse in tiles of `LANES` outputs (see `matmul_nm`): values (tiles, kept, 64) float32,
    indices (tiles, kept, 64) uint8, kept = in·n/m; outputs past `n_out` have value 0.

    ``values[t, k, l]`` is the k-th kept weight of output $64t + l$, the weight of input
    $\\lfloor k/n \\rfloor m$ + ``indices[t, k, l]``: the kind's own (kept, out) arrays, cut into
    tiles."""

    values: np.ndarray
    indices: np.ndarray
    n: int
    m: int
    n_out: int


@dataclass(frozen=True, eq=False)
class RowsDense:
    """A dense weight transposed: w (out, in) float32 (`Masked` folded to $W \\odot M$)."""

    w: np.ndarray


@dataclass(frozen=True, eq=False)
class RowsLowRank:
    """LowRank transposed: $(xA)B$ as two dense products; a (r, in), b (out, r) float32."""

    a: np.ndarray
    b: np.ndarray


@dataclass(frozen=True, eq=False)
class RowsTied:
    """TiedEmbedding: its head (C, V) in a rows form, (V, C): row $t$ is token $t$'s embedding."""

    head: Any


TILE_FORMS = (TilesInt, TilesQ4_0, TilesNM)
ROW_FORMS = (*TILE_FORMS, RowsDense, RowsLowRank)
KERNEL_FORMS = (np.ndarray, *ROW_FORMS, RowsTied)  # what `kernel_weight` passes through


def rows_form(w: Any) -> Any:
    """A weight kind in the form this backend's kernels take (a one-time copy, cached per kind).

    Integer and N:M kinds become tiles of 64 outputs (`TilesInt`, `TilesQ4_0`, `TilesNM`), the
    others output-major rows: the values of output $o$ are one contiguous row. Codes stay int8 /
    packed nibbles, float16 scales stay 2 bytes (`tile_scales`)."""
    if isinstance(w, K.Int8PerChannel):
        return int_tiles(w.q, w.scale[None, :], None)  # one block: all inputs
    if isinstance(w, K.IntPerGroup):
        return int_tiles(w.q, w.scale, w.zero_point)
    if isinstance(w, K.Q8_0):
        return int_tiles(w.qs, w.d, None)
    if isinstance(w, K.Q4_0):
        return q4_0_tiles(w)
    if isinstance(w, K.NMSparse):
        n_tiles = n_tiles_for(w.shape[1])
        return TilesNM(tiled(w.values.astype(np.float32), n_tiles), tiled(w.indices, n_tiles), int(w.n), int(w.m),
                       w.shape[1])  # fmt: skip
    if isinstance(w, K.LowRank):
        return RowsLowRank(_t(w.a.astype(np.float32)), _t(w.b.astype(np.float32)))
    if isinstance(w, K.Masked):
        return RowsDense(_t(w.dequantize()))
    if isinstance(w, K.TiedEmbedding):
        return RowsTied(rows_form(w.head))
    raise TypeError(f"weight must be a numpy array or one of minillm.kinds, got {type(w).__name__}")


def _rows_shape(w: Any) -> tuple[int, int]:
    """(out, in) of a kernel form."""
    if isinstance(w, TilesQ4_0):
        return w.n_out, 8 * w.words.shape[1]
    if isinstance(w, TilesInt):
        return w.n_out, w.q.shape[1]
    if isinstance(w, TilesNM):
        return w.n_out, w.values.shape[1] * w.m // w.n
    if isinstance(w, RowsLowRank):
        return w.b.shape[0], w.a.shape[1]
    return w.w.shape


def _t(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def _dequantize_rows(w: Any, o0: int, out: np.ndarray) -> None:
    """Outputs o0 .. o0 + len(out) of a tied head's kernel form (integer or Q4_0 tiles), as
    float32 rows (in,) into `out`: the embedding lookup."""
    if isinstance(w, TilesInt):
        dequant_tiles(w.q, w.scale, *_zero_args(w), o0, out)
    else:
        dequant_q4_0(w.words, w.d, o0, out)


def _dequantize_cols(w: Any, t0: int, out: np.ndarray) -> None:
    """Tiles t0, t0 + 1, ... of a tiled form, as float32 columns into `out` (in, 64 per tile)."""
    if isinstance(w, TilesInt):
        dequant_tiles_cols(w.q, w.scale, *_zero_args(w), t0, out)
    elif isinstance(w, TilesNM):
        dequant_nm_cols(w.values, w.indices, w.n, w.m, t0, out)
    else:
        dequant_q4_0_cols(w.words, w.d, t0, out)


def n_tiles_for(n_out: int) -> int:
    """Tiles of `LANES` outputs that hold `n_out` outputs (the last one possibly padded)."""
    return -(-n_out // LANES)


def tiled(a: np.ndarray, n_tiles: int) -> np.ndarray:
    """(rows, out) -> (tiles, rows, LANES): output $64t + l$ of row $i$ at [t, i, l]; the last
    tile padded with zeros."""
    pad = n_tiles * LANES - a.shape[1]
    a = np.pad(a, ((0, 0), (0, pad)))
    return np.ascontiguousarray(a.reshape(a.shape[0], n_tiles, LANES).transpose(1, 0, 2))


def tile_scales(scale: np.ndarray, n_tiles: int) -> np.ndarray:
    """Scales (blocks, out) in tiles: float32 as they are, float16 as their bits (uint16), which
    the kernels widen themselves (`block_scales`), so that they read 2 bytes per scale, not 4."""
    if scale.dtype != np.float16:
        return tiled(scale.astype(np.float32), n_tiles)
    return tiled(scale.view(np.uint16), n_tiles)


def int_tiles(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> TilesInt:
    """q (in, out) int8 codes, scale and zero (blocks, out), as `TilesInt` (codes unchanged)."""
    n_tiles = n_tiles_for(q.shape[1])
    return TilesInt(tiled(q, n_tiles), tile_scales(scale, n_tiles),
                    None if zero is None else tiled(zero, n_tiles), q.shape[1])  # fmt: skip


# A placeholder for kinds without zero points, typed like the real argument (C-contiguous), so
# `dequant_tiles` compiles once for both.
_NO_ZERO = (np.zeros((1, 1, 1), np.int8), False)


def _zero_args(w: TilesInt) -> tuple[np.ndarray, bool]:
    return _NO_ZERO if w.zero is None else (w.zero, True)


def q4_0_tiles(w: K.Q4_0) -> TilesQ4_0:
    """Regroup Q4_0's nibbles into the tiles `matmul_q4_0` reads (codes and scales unchanged)."""
    n_in, n_out = w.shape
    n_tiles = n_tiles_for(n_out)
    pad = n_tiles * LANES - n_out
    blocks = w.packed.reshape(n_in // 32, 16, n_out)  # byte j of a block: inputs j (low), j + 16 (high)
    codes = np.concatenate([blocks & 15, blocks >> 4], axis=1).reshape(n_in, n_out)  # (in, out)
    words = np.zeros((n_tiles, n_in // 8, LANES), np.uint32)
    for k in range(8):  # the codes of inputs 8c + k, for every c, go to nibble k
        nib = np.pad(codes[k::8], ((0, 0), (0, pad))).astype(np.uint32) << np.uint32(4 * k)
        words |= nib.reshape(n_in // 8, n_tiles, LANES).transpose(1, 0, 2)
    return TilesQ4_0(words, tile_scales(w.d, n_tiles), n_out)  # padding outputs: scale 0


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# Fused dequantize-and-multiply: y = x W + b for x (N, in), W stored as codes, never as float32.
@njit(**JIT)
def matmul_rows(x, w, bias, y):  # pragma: no cover - compiled
    """Dense float32 rows (out, in): $y_o = \\sum_i x_i w_{oi} + b_o$, one task per output: a dot
    product over a contiguous row."""
    N, n_in = x.shape
    for o in prange(w.shape[0]):
        for r in range(N):
            acc = np.float32(0.0)
            for i in range(n_in):
                acc += x[r, i] * w[o, i]
            y[r, o] = acc + bias[o]


@njit(**JIT)
def matmul_in_out(x, w, bias, y):  # pragma: no cover - compiled
    """Dense (in, out) row-major: $y = xW + b$ without a transposed copy (a weight built by hand,
    not output-major). Each of two tasks takes half the input rows — one contiguous half of the
    matrix — and adds $x_i W_{i,:}$ into its own partial sum; the two are added at the end."""
    N, n_in = x.shape
    n_out = w.shape[1]
    half = (n_in + 1) // 2
    partial = np.zeros((2, N, n_out), np.float32)
    for c in prange(2):
        for i in range(c * half, min(n_in, (c + 1) * half)):
            for r in range(N):
                xi = x[r, i]
                for o in range(n_out):
                    partial[c, r, o] += xi * w[i, o]
    for r in range(N):
        for o in range(n_out):
            y[r, o] = partial[0, r, o] + partial[1, r, o] + bias[o]


# Software prefetch. The tile kernels spend many instructions per byte they read (a conversion
# and a multiply-add per code, more for Q4_0), so the CPU's out-of-order window — a few hundred
# instructions — reaches only a kilobyte or two of loads ahead. A stream runs at about (bytes in
# flight) / (memory latency), and the hardware prefetchers did not make up the difference here:
# Q4_0's tiles streamed at 15-16 GB/s on one thread where a plain sum over the same array ran at
# 41. So the kernels ask for the bytes `PREFETCH_BYTES` ahead of where they read themselves.
PREFETCH_BYTES = 8192


@intrinsic
def prefetch(typingctx, arr, index):  # pragma: no cover - compiled
    """Ask the CPU to bring the cache line of element `index` of the C-contiguous `arr`
    (counting over the flattened array) into its caches: LLVM's `llvm.prefetch`, a hint that
    changes no value and never faults, so a loop may prefetch past the end of its array."""
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        call_prefetch(builder, address)

    return sig, codegen


@njit(inline="always")
def prefetch_lines(arr, first, n):  # pragma: no cover - compiled
    """`prefetch` every 64-byte cache line of elements first .. first + n - 1 of `arr`."""
    for i in range(first, first + n, 64 // arr.itemsize):
        prefetch(arr, i)


def call_prefetch(builder: Any, address: Any) -> None:
    """Emit `llvm.prefetch(address, read, keep in all cache levels, data)`."""
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
                                        "llvm.prefetch.p0")  # fmt: skip
    builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


HALF_TO_FLOAT = np.float32(2.0**112)


def block_scales(scale: np.ndarray, t: int, kb: int, bits: np.ndarray, sc: np.ndarray) -> None:
    """sc[l] = the float32 scale of block kb, output $64t + l$, for l < 64; `bits` is int32
    scratch of 64. Python's version of what kernels compile (`_block_scales`), for reading."""
    h = scale[t, kb, :LANES]
    sc[:LANES] = h.view(np.float16) if h.dtype == np.uint16 else h


@overload(block_scales, inline="always", jit_options=dict(fastmath=True))
def _block_scales(scale, t, kb, bits, sc):  # pragma: no cover - compiled
    """Widening float16 without float16 arithmetic (Numba has none on the CPU). A half's sign,
    5-bit exponent and 10-bit mantissa, moved to float32's bit positions (sign to bit 31, the
    other 15 bits up by 13), make the float32 $h \\cdot 2^{-112}$: float32's exponent bias is 127,
    a half's 15. Multiplying by $2^{112}$ gives $h$ exactly — for subnormal halves too, which
    become subnormal float32s. Integer shifts, one reinterpretation of the array and one multiply:
    all SIMD. (An infinite or nan half would come out finite; the weight kinds refuse them.)"""
    if scale.dtype != types.uint16:

        def copy(scale, t, kb, bits, sc):
            for l in range(LANES):
                sc[l] = scale[t, kb, l]

        return copy

    def widen(scale, t, kb, bits, sc):
        for l in range(LANES):
            h = np.int32(scale[t, kb, l])
            bits[l] = ((h & 0x7FFF) << 13) | ((h & 0x8000) << 16)
        as_float = bits.view(np.float32)
        for l in range(LANES):
            sc[l] = as_float[l] * HALF_TO_FLOAT

    return widen


@njit(inline="always", fastmath=True)
def _block_sums(x, r, q, t, base, g, blk):  # pragma: no cover - compiled
    """blk[l] = $\\sum_{i=\\text{base}}^{\\text{base}+g-1} x_{ri}\\, q_{t,i,l}$: one block's sums for the
    64 outputs of tile t. For each input, one broadcast $x_i$ and 64 consecutive codes: per
    16 outputs a load that widens 16 codes, one conversion and one multiply-add, no reduction
    across SIMD lanes.

    `base` is unsigned: Numba wraps negative indices (x[-1] is the last element), and an index
    it cannot prove non-negative costs a compare-and-add at every access."""
    for l in range(LANES):
        blk[l] = 0.0
    ahead = np.uint64(t) * np.uint64(q.shape[1]) + np.uint64(PREFETCH_BYTES // LANES)  # in rows of 64 codes
    for j in range(g):
        i = base + np.uint64(j)
        prefetch(q, (ahead + i) * np.uint64(LANES))  # into the next tile near the end: the next task's
        xi = x[r, i]
        for l in range(LANES):
            blk[l] += xi * np.float32(q[t, i, l])


@njit(**JIT)
def matmul_tiles(x, q, scale, bias, y):  # pragma: no cover - compiled
    """Int8 codes in tiles (`TilesInt`): $y_o = \\sum_k s_{ko} \\sum_{i \\in k} x_i q_{io} + b_o$.

    One task per tile of 64 outputs; each block's sums (`_block_sums`) are scaled once, at its
    end: every 32 inputs for Q8_0, once for int8 per channel."""
    N, n_in = x.shape
    n_tiles, n_blocks = scale.shape[0], scale.shape[1]
    g = n_in // n_blocks
    n_out = y.shape[1]
    for t in prange(n_tiles):
        bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
        for r in range(N):
            out = np.zeros(LANES, np.float32)
            blk = np.empty(LANES, np.float32)
            for kb in range(n_blocks):
                _block_sums(x, r, q, t, np.uint64(kb * g), g, blk)
                block_scales(scale, t, kb, bits, sc)
                for l in range(LANES):
                    out[l] += sc[l] * blk[l]
            for l in range(min(LANES, n_out - LANES * t)):
                y[r, LANES * t + l] = out[l] + bias[LANES * t + l]


@njit(**JIT)
def matmul_tiles_zero(x, q, scale, zero, bias, y):  # pragma: no cover - compiled
    """`matmul_tiles` with zero points: $y_o = \\sum_k s_{ko}\\big(\\sum_{i \\in k} x_i q_{io} - z_{ko}
    \\sum_{i \\in k} x_i\\big) + b_o$; each task sums x over the block itself (32 additions per
    block, next to 64 x 32 multiply-adds). (A separate kernel: one kernel with a run-time switch
    between the two ran 4-11 % slower here.)"""
    N, n_in = x.shape
    n_tiles, n_blocks = scale.shape[0], scale.shape[1]
    g = n_in // n_blocks
    n_out = y.shape[1]
    for t in prange(n_tiles):
        bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
        for r in range(N):
            out = np.zeros(LANES, np.float32)
            blk = np.empty(LANES, np.float32)
            for kb in range(n_blocks):
                _block_sums(x, r, q, t, np.uint64(kb * g), g, blk)
                block_scales(scale, t, kb, bits, sc)
                zx = np.float32(0.0)
                for i in range(kb * g, kb * g + g):
                    zx += x[r, i]
                for l in range(LANES):
                    out[l] += sc[l] * (blk[l] - np.float32(zero[t, kb, l]) * zx)
            for l in range(min(LANES, n_out - LANES * t)):
                y[r, LANES * t + l] = out[l] + bias[LANES * t + l]


@njit(**JIT_ORDERED)
def matmul_q4_0(x, words, d, bias, y):  # pragma: no cover - compiled
    """Q4_0: $y_o = \\sum_k d_{ko}\\big(\\sum_{i \\in k} x_i q_{io} - 8 \\sum_{i \\in k} x_i\\big) + b_o$.

    Unpacking nibbles costs more than reading them, so this kernel is laid out to unpack as
    little as possible. One task per tile of 64 outputs; a 32-bit word holds the codes of 8
    consecutive inputs for one output, nibble $k$ for input $8c + k$. Masking a word with
    $\\mathtt{0xF} \\ll 4k$ leaves $16^k q$, an integer that converts to float32 exactly, so
    with the inputs pre-divided, `xs` $= x_i / 16^{i \\bmod 8}$ (exact: a power of two), each
    code costs one AND, one conversion and one multiply-add: no shifts. The 64 outputs are four
    SIMD vectors of 16, updated side by side; per block, the sum starts at $-8\\sum_{i\\in k} x_i$
    and is scaled once by $d_{ko}$."""
    N, n_in = x.shape
    n_tiles, n_blocks, n_c = d.shape[0], d.shape[1], words.shape[1]
    n_out = y.shape[1]
    xs = np.empty((N, n_in), np.float32)  # x_i / 16^(i mod 8)
    xsum = np.zeros((N, n_blocks), np.float32)  # the sum of x over each block
    for r in range(N):
        for i in range(n_in):
            xs[r, i] = x[r, i] * NIBBLE_SCALE[i % 8]
            xsum[r, i // 32] += x[r, i]
    m0, m1, m2, m3 = np.uint32(0xF), np.uint32(0xF0), np.uint32(0xF00), np.uint32(0xF000)
    m4, m5, m6, m7 = np.uint32(0xF0000), np.uint32(0xF00000), np.uint32(0xF000000), np.uint32(0xF0000000)
    for t in prange(n_tiles):
        bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
        for r in range(N):
            out = np.zeros(LANES, np.float32)
            blk = np.empty(LANES, np.float32)
            for kb in range(n_blocks):
                z = np.float32(-8.0) * xsum[r, kb]
                for c in range(4 * kb, 4 * kb + 4):  # 8 inputs per step
                    # the words PREFETCH_BYTES ahead: 4 lines per c, written out (`prefetch_lines` here
                    # made the whole kernel 6-9 % slower: 0.909x and 0.940x on 49 products, scratch)
                    for line in range(4):
                        prefetch(words, ((t * n_c + c) * LANES + PREFETCH_BYTES // 4) + 16 * line)
                    i = 8 * c
                    x0, x1, x2, x3 = xs[r, i], xs[r, i + 1], xs[r, i + 2], xs[r, i + 3]
                    x4, x5, x6, x7 = xs[r, i + 4], xs[r, i + 5], xs[r, i + 6], xs[r, i + 7]
                    first = c == 4 * kb  # the block's sum starts here (no separate zeroing pass)
                    for l in range(LANES):
                        w = words[t, c, l]
                        v = ((x0 * np.float32(w & m0) + x1 * np.float32(w & m1))
                             + (x2 * np.float32(w & m2) + x3 * np.float32(w & m3))
                             + (x4 * np.float32(w & m4) + x5 * np.float32(w & m5))
                             + (x6 * np.float32(w & m6) + x7 * np.float32(w & m7)))
                        blk[l] = (z + v) if first else (blk[l] + v)
                block_scales(d, t, kb, bits, sc)
                for l in range(LANES):
                    out[l] += sc[l] * blk[l]
            for l in range(min(LANES, n_out - LANES * t)):
                y[r, LANES * t + l] = out[l] + bias[LANES * t + l]


@njit(**JIT)
def matmul_nm(x, values, indices, n, m, bias, y):  # pragma: no cover - compiled
    """N:M sparse in tiles (`TilesNM`): $y_o = \\sum_k x_{\\lfloor k/n \\rfloor m + i_{ko}}\\, v_{ko} + b_o$.

    Only the kept values are read: half the bytes and half the multiply-adds for 2:4. Each of
    the 64 outputs of a tile takes its input by its own index: in SIMD across outputs, a
    gather, which is slow. For m = 4 (2:4, 1:4, 3:4) the pick is written as selects among the
    group's four inputs, which compile to compares and blends; other m take each input of the
    group in turn and keep it where the index matches. (One 768 x 2304 2:4 product, weights in
    the caches: 31 us with the selects, 130 us taking the inputs in turn, 190 us as a gather,
    470 us for the earlier kernel that ran one output row at a time.)"""
    N = x.shape[0]
    n_tiles, kept = values.shape[0], values.shape[1]
    n_out = y.shape[1]
    for t in prange(n_tiles):
        picked = np.empty(LANES, np.float32)
        for r in range(N):
            out = np.zeros(LANES, np.float32)
            if m == 4:
                for g in range(kept // n):
                    x0, x1, x2, x3 = x[r, 4 * g], x[r, 4 * g + 1], x[r, 4 * g + 2], x[r, 4 * g + 3]
                    for k in range(n * g, n * g + n):
                        for l in range(LANES):
                            i = indices[t, k, l]
                            xi = x0 if i == 0 else (x1 if i == 1 else (x2 if i == 2 else x3))
                            out[l] += xi * values[t, k, l]
            else:
                for k in range(kept):
                    for j in range(m):
                        xj = x[r, (k // n) * m + j]
                        for l in range(LANES):
                            picked[l] = xj if indices[t, k, l] == j else picked[l]
                    for l in range(LANES):
                        out[l] += picked[l] * values[t, k, l]
            for l in range(min(LANES, n_out - LANES * t)):
                y[r, LANES * t + l] = out[l] + bias[LANES * t + l]


# ------------------------------------------------------------------------------------------
# Q4_0 with integer dot products. The float kernel above is bound by its arithmetic (an AND, a
# conversion and a multiply-add per code). AVX-512 VNNI's `vpdpbusd` multiplies 64 unsigned
# bytes by 64 signed bytes and adds each group of four products into one of 16 int32 lanes: 64
# multiply-adds in one instruction, exact. The codes are the unsigned bytes; the row x becomes
# integers in *block floating point*: $x_i \approx S m_i$ with $S = \max|x| / 8{,}355{,}711$
# (`DIGITS_MAX`) and $m_i$ written with three signed base-256 digits, $m = d_0 + 2^8 d_1 +
# 2^{16} d_2$, $d_k \in [-128, 127]$. Then, exactly in integers, per block
# $\sum_i (q_i - 8) m_i = \sum_k 2^{8k} \big(\sum_i q_i d_{k,i} - 8 \sum_i d_{k,i}\big)$:
# one `vpdpbusd` per 64 codes and digit. Rounding x to $S m$ errs by at most $S$ per element
# (half a step, plus float32's rounding of $x_i / S$): $1.2 \cdot 10^{-7} \max|x|$, float32's
# own resolution relative to the row's largest element.
DIGITS_MAX = 127 * 65536 + 127 * 256 + 127  # the largest m three digits in [-128, 127] can write
NAN32 = np.float32(np.nan)


def _host_has_vnni() -> bool:
    """Whether this CPU has AVX-512 VNNI (and Numba compiles for this CPU, not a generic one)."""
    try:
        from llvmlite import binding

        features = binding.get_host_cpu_features()
    except Exception:  # not x86, or llvmlite cannot tell: use the float kernel
        return False
    return bool(features.get("avx512vnni") and features.get("avx512bw")) and not numba.config.CPU_NAME


HAS_VNNI = _host_has_vnni()


@intrinsic
def q4_0_tile_dot(typingctx, words, d, t, xw, dsum, out):  # pragma: no cover - compiled
    """out[l] = $\\sum_k d_{kl} \\sum_{i \\in k} (q_{il} - 8)\\, m_i$ over the blocks k of tile t.

    Written as LLVM IR, because Numba has no SIMD vector type: per block, 12 vectors of 16
    int32 sums (3 digits x 64 outputs) stay in registers through the block's 32 inputs, and the
    64 outputs' running sums through all blocks. A word of `words` holds 8 codes, nibble j for
    input 8c + j; masking with 0x0F0F0F0F keeps nibbles 0, 2, 4, 6 (inputs 8c, 8c+2, 8c+4,
    8c+6) as bytes, shifting by 4 first keeps the odd ones. `xw[k, h, c]` holds digit k of
    those four inputs (h = 0: even, 1: odd) as one int32, which is broadcast to every lane.
    `dsum[k, b]` = $\\sum_{i \\in b} d_{k,i}$ pays for the 8. The float16 scales (their bits, as
    the tiles store them) are widened by the CPU's own conversion (`fpext` of LLVM's half)."""
    sig = types.void(words, d, t, xw, dsum, out)
    i16, i32, i64, f32 = ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
    v16, v16f = ir.VectorType(i32, 16), ir.VectorType(f32, 16)
    v16s, v16h = ir.VectorType(i16, 16), ir.VectorType(ir.HalfType(), 16)

    def codegen(context, builder, signature, args):
        w_arr, d_arr, t, x_arr, s_arr, o_arr = (context.make_array(ty)(context, builder, a)
                                                if isinstance(ty, types.Array) else a
                                                for ty, a in zip(signature.args, args, strict=True))  # fmt: skip
        n_c = builder.extract_value(w_arr.shape, 1)  # words per tile row: in / 8
        n_blocks = builder.sdiv(n_c, ir.Constant(i64, 4))
        dpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpdpbusd.512")
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16f, [v16f, v16f, v16f]),
                                             "llvm.fma.v16f32")  # fmt: skip
        i8p = ir.IntType(8).as_pointer()

        def const(ty, v):
            return ir.Constant(ty, v)

        def splat(v):
            one = builder.insert_element(ir.Constant(v16, ir.Undefined), v, const(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(v16, ir.Undefined), ir.Constant(v16, [0] * 16))

        def load_i32(arr, index):
            return builder.load(builder.gep(arr.data, [index]), align=4)

        def vector_at(ptr, index, ty):
            return builder.bitcast(builder.gep(ptr, [index]), ty.as_pointer())

        tile = builder.gep(w_arr.data, [builder.mul(t, builder.mul(n_c, const(i64, LANES)))])
        scales = builder.gep(d_arr.data, [builder.mul(t, builder.mul(n_blocks, const(i64, LANES)))])
        mask, four = ir.Constant(v16, [0x0F0F0F0F] * 16), ir.Constant(v16, [4] * 16)
        before = builder.basic_block
        head, body, done = (builder.append_basic_block(f"q4_0_dot.{n}") for n in ("head", "body", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        b = builder.phi(i64)
        b.add_incoming(const(i64, 0), before)
        outs = [builder.phi(v16f) for _ in range(4)]  # the 64 outputs' sums, 16 per vector
        for o in outs:
            o.add_incoming(ir.Constant(v16f, [0.0] * 16), before)
        builder.cbranch(builder.icmp_signed("<", b, n_blocks), body, done)
        builder.position_at_end(body)
        ahead = builder.add(b, const(i64, PREFETCH_BYTES // (16 * LANES)))  # blocks of 4 words x 64 lanes
        for line in range(16):  # that block's words, 1 KB, and its 64 scales, 128 bytes
            at = builder.add(builder.mul(ahead, const(i64, 4 * LANES)), const(i64, 16 * line))
            call_prefetch(builder, builder.bitcast(builder.gep(tile, [at]), i8p))
        for line in range(2):
            at = builder.add(builder.mul(ahead, const(i64, LANES)), const(i64, 32 * line))
            call_prefetch(builder, builder.bitcast(builder.gep(scales, [at]), i8p))
        sums = [[ir.Constant(v16, [0] * 16)] * 4 for _ in range(3)]  # [digit][16 outputs]
        for cc in range(4):  # the block's 4 words, 8 inputs each
            c = builder.add(builder.mul(b, const(i64, 4)), const(i64, cc))
            x_kh = [[splat(load_i32(x_arr, builder.add(builder.mul(const(i64, 2 * k + h), n_c), c)))
                     for h in (0, 1)] for k in range(3)]  # fmt: skip
            for g in range(4):
                at = builder.add(builder.mul(c, const(i64, LANES)), const(i64, 16 * g))
                codes = builder.load(vector_at(tile, at, v16), align=4)
                even, odd = builder.and_(codes, mask), builder.and_(builder.lshr(codes, four), mask)
                for k in range(3):
                    acc = builder.call(dpbusd, [sums[k][g], even, x_kh[k][0]])
                    sums[k][g] = builder.call(dpbusd, [acc, odd, x_kh[k][1]])
        eight_d = [splat(builder.mul(load_i32(s_arr, builder.add(builder.mul(const(i64, k), n_blocks), b)),
                                     const(i32, 8))) for k in range(3)]  # fmt: skip
        new_outs = []
        for g in range(4):  # each digit's sum minus 8 * its digit sum: |.| <= 2^15, exact
            a0, a1, a2 = (builder.sub(sums[k][g], eight_d[k]) for k in range(3))
            low = builder.sitofp(builder.add(a0, builder.shl(a1, ir.Constant(v16, [8] * 16))), v16f)  # < 2^24: exact
            block = builder.call(fma, [builder.sitofp(a2, v16f), ir.Constant(v16f, [65536.0] * 16), low])
            at = builder.add(builder.mul(b, const(i64, LANES)), const(i64, 16 * g))
            scale = builder.fpext(builder.bitcast(builder.load(vector_at(scales, at, v16s), align=2), v16h), v16f)
            new_outs.append(builder.call(fma, [scale, block, outs[g]]))
        b.add_incoming(builder.add(b, const(i64, 1)), builder.basic_block)
        for o, v in zip(outs, new_outs, strict=True):
            o.add_incoming(v, builder.basic_block)
        builder.branch(head)
        builder.position_at_end(done)
        for g in range(4):
            builder.store(outs[g], vector_at(o_arr.data, const(i64, 16 * g), v16f), align=4)

    return sig, codegen


@njit(**JIT_VECTOR)
def x_digits(x, mx, xw, dsum):  # pragma: no cover - compiled
    """Row x (in,) as $S m$ with three signed base-256 digits per $m_i$ (see above); returns S.
    mx is $\\max_i |x_i|$ (`abs_max_bits`), xw (3, 2, in/8) int32 gets the digits of even and odd
    inputs four to a word, dsum (3, in/32) each block's digit sums."""
    n_in = x.shape[0]
    # In float64: DIGITS_MAX / mx overflows float32 for rows below 2.5e-32, and S would lose
    # precision below 1e-31 (subnormal); float64 keeps both exact to its precision for any row.
    inv = DIGITS_MAX / np.float64(mx) if mx > 0 else 1.0
    limit = np.float64(DIGITS_MAX)
    digits = xw.view(np.int8).reshape(3, 2, n_in // 2)  # digit k of input 2j + h at [k, h, j]
    for b in range(n_in // 32):
        s0, s1, s2 = 0, 0, 0
        for j in range(16 * b, 16 * b + 16):
            for h in range(2):
                m = np.int32(min(max(np.rint(x[2 * j + h] * inv), -limit), limit))
                d0 = ((m + 128) & 255) - 128  # the remainder in [-128, 127]
                m = (m - d0) >> 8
                d1 = ((m + 128) & 255) - 128
                d2 = (m - d1) >> 8
                digits[0, h, j], digits[1, h, j], digits[2, h, j] = d0, d1, d2
                s0, s1, s2 = s0 + d0, s1 + d1, s2 + d2
        dsum[0, b], dsum[1, b], dsum[2, b] = s0, s1, s2
    return 1.0 / inv


INF_BITS = 0x7F800000  # float32 +inf; nan's bits (sign cleared) are larger


@njit(**JIT_VECTOR)
def abs_max_bits(row):  # pragma: no cover - compiled
    """The bits of $\\max_i |x_i|$ as an int32, found by an integer max over the bits with the
    sign cleared: for floats >= 0 the bits' integer order is the floats' order. One pass that
    vectorizes (Numba's float `max` compiles to a compare-and-branch that does not: 1.8 against
    0.2 us for 3072 floats here) and that also answers whether the row is finite: the result is
    below `INF_BITS` exactly when no element is an inf or a nan. Integer tests, which fastmath
    (free to assume neither exists) cannot fold away."""
    bits = row.view(np.int32)
    top = np.int32(0)
    for i in range(bits.shape[0]):
        top = max(top, bits[i] & 0x7FFFFFFF)
    return top


@njit(**JIT)
def matmul_q4_0_vnni(x, words, d, bias, y):  # pragma: no cover - compiled
    """Q4_0 by integer dot products (`q4_0_tile_dot`): the same $y_o$ as `matmul_q4_0`, with
    $\\sum_{i \\in k} x_i (q_{io} - 8) = S \\sum_{i \\in k} m_i (q_{io} - 8)$ computed exactly.
    `d` must hold float16 bits (uint16), as `tile_scales` makes them for Q4_0. A row with an
    inf or nan has no digits: its outputs are nan, never a finite number made up by the
    conversion."""
    N, n_in = x.shape
    n_tiles = d.shape[0]
    n_out = y.shape[1]
    xw = np.empty((N, 3, 2, n_in // 8), np.int32)
    dsum = np.empty((N, 3, n_in // 32), np.int32)
    S = np.empty(N, np.float64)  # y = S out in float64, rounded once: exact scaling for any row
    top = np.empty(N, np.int32)  # the bits of max|x| per row, read as float32 below
    finite = np.empty(N, np.bool_)
    for r in range(N):
        top[r] = abs_max_bits(x[r])
        finite[r] = top[r] < INF_BITS
        S[r] = x_digits(x[r], top.view(np.float32)[r], xw[r], dsum[r]) if finite[r] else 0.0
    for t in prange(n_tiles):
        out = np.empty(LANES, np.float32)
        for r in range(N):
            if not finite[r]:  # stored, not computed: fastmath arithmetic may not carry a nan
                for l in range(min(LANES, n_out - LANES * t)):
                    y[r, LANES * t + l] = NAN32
                continue
            q4_0_tile_dot(words, d, t, xw[r], dsum[r], out)
            for l in range(min(LANES, n_out - LANES * t)):
                y[r, LANES * t + l] = S[r] * out[l] + bias[LANES * t + l]


# ------------------------------------------------------------------------------------------
# Dequantize into float32 for BLAS (the prefill path): tiles as columns (in, 64 per tile);
# single rows of a tile also serve the embedding lookup.
# Serial on purpose: these run between BLAS calls, and OpenBLAS's threads keep spinning for a
# while after each call. A parallel loop then waits for the thread that shares its core with
# one of them (the 48 dequantizations of a 128-token GPT-2 prefill took 90-170 ms in parallel,
# 30 ms serial); one thread, the caller's, never waits.
SERIAL = dict(fastmath=True, cache=True)


@njit(**SERIAL)
def dequant_tiles(q, scale, zero, has_zero, o0, out):  # pragma: no cover - compiled
    g = out.shape[1] // scale.shape[1]
    bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
    for j in range(out.shape[0]):
        t, lane = (o0 + j) // LANES, (o0 + j) % LANES
        for kb in range(scale.shape[1]):
            block_scales(scale, t, kb, bits, sc)  # all 64 lanes' scales; this row needs one
            z = np.float32(zero[t, kb, lane]) if has_zero else np.float32(0.0)
            for i in range(kb * g, (kb + 1) * g):
                out[j, i] = sc[lane] * (np.float32(q[t, i, lane]) - z)


@njit(**SERIAL)
def dequant_tiles_cols(q, scale, zero, has_zero, t0, out):  # pragma: no cover - compiled
    g = q.shape[1] // scale.shape[1]
    bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
    for tt in range(out.shape[1] // LANES):
        t, c0 = t0 + tt, LANES * tt
        for kb in range(scale.shape[1]):
            block_scales(scale, t, kb, bits, sc)
            for i in range(kb * g, (kb + 1) * g):
                if has_zero:
                    for l in range(LANES):
                        out[i, c0 + l] = sc[l] * (np.float32(q[t, i, l]) - np.float32(zero[t, kb, l]))
                else:
                    for l in range(LANES):
                        out[i, c0 + l] = sc[l] * np.float32(q[t, i, l])


@njit(**SERIAL)
def dequant_q4_0_cols(words, d, t0, out):  # pragma: no cover - compiled
    eight, low = np.float32(8.0), np.uint32(15)
    bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
    for tt in range(out.shape[1] // LANES):
        t, c0 = t0 + tt, LANES * tt
        for c in range(words.shape[1]):
            if c % 4 == 0:  # a new block of 32 inputs
                block_scales(d, t, c // 4, bits, sc)
            for k in range(8):
                for l in range(LANES):
                    code = (words[t, c, l] >> np.uint32(4 * k)) & low
                    out[8 * c + k, c0 + l] = sc[l] * (np.float32(code) - eight)


@njit(**SERIAL)
def dequant_q4_0(words, d, o0, out):  # pragma: no cover - compiled
    eight, low = np.float32(8.0), np.uint32(15)
    bits, sc = np.empty(LANES, np.int32), np.empty(LANES, np.float32)
    for j in range(out.shape[0]):
        t, lane = (o0 + j) // LANES, (o0 + j) % LANES
        for c in range(words.shape[1]):
            if c % 4 == 0:  # a new block of 32 inputs
                block_scales(d, t, c // 4, bits, sc)
            w = words[t, c, lane]
            for k in range(8):
                code = (w >> np.uint32(4 * k)) & low
                out[j, 8 * c + k] = sc[lane] * (np.float32(code) - eight)


@njit(**SERIAL)
def dequant_nm_cols(values, indices, n, m, t0, out):  # pragma: no cover - compiled
    out[:] = 0.0
    for tt in range(out.shape[1] // LANES):
        t, c0 = t0 + tt, LANES * tt
        for k in range(values.shape[1]):
            base = (k // n) * m
            for l in range(LANES):
                out[base + indices[t, k, l], c0 + l] = values[t, k, l]


# ------------------------------------------------------------------------------------------
# Fused elementwise and row kernels.
@njit(fastmath=True, cache=True)
def layer_norm_row(x, w, b, eps, y):  # pragma: no cover - compiled
    """$y = \\gamma (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon} + \\beta$ for one row; statistics in float64.

    Not parallel: one row of 768 takes 0.4 us, less than starting a parallel loop (~3 us)."""
    C = x.shape[0]
    mu = 0.0
    for c in range(C):
        mu += x[c]
    mu /= C
    var = 0.0
    for c in range(C):
        dv = x[c] - mu
        var += dv * dv
    var /= C
    rstd = np.float32(1.0 / math.sqrt(var + eps))
    mu32 = np.float32(mu)
    for c in range(C):
        y[c] = (x[c] - mu32) * rstd * w[c] + b[c]


@njit(**JIT)
def layer_norm_rows(x, w, b, eps, y):  # pragma: no cover - compiled
    """`layer_norm_row` for every row, rows in parallel."""
    for r in prange(x.shape[0]):
        layer_norm_row(x[r], w, b, eps, y[r])


@njit(cache=True)
def layer_norm_2d(x, w, b, eps, y):  # pragma: no cover - compiled
    """Layer norm of x (N, C) into y: one row (decoding one sequence) serially, where a
    parallel loop would cost more than the row; several in parallel."""
    if x.shape[0] == 1:
        layer_norm_row(x[0], w, b, eps, y[0])
    else:
        layer_norm_rows(x, w, b, eps, y)


# e^x without a C-library call. `np.exp` compiles to one call of libm's `expf` per element:
# without Intel's SVML (not installed here) LLVM has no SIMD version of it. Written out, it is a
# few multiply-adds that vectorize: $e^x = 2^t$ with $t = x \log_2 e$, split as $t = n + f$,
# $n = \lfloor t + \tfrac12 \rfloor$, $|f| \le \tfrac12$; $2^f = e^{f \ln 2}$ by its Taylor series
# to degree 7 (remainder below $(\tfrac12 \ln 2)^8/8! \approx 5 \cdot 10^{-9}$, under float32's
# $6 \cdot 10^{-8}$) and $2^n$ exactly, from its bits: the float32 whose exponent field is
# $n + 127$ and mantissa 0. $t$ is clamped to $[-126, 60]$, where $2^n$ is a normal float32.
EXP2_TAYLOR = tuple(np.float32(math.log(2.0) ** k / math.factorial(k)) for k in range(8))
EXP_T_MIN, EXP_T_MAX = -126.0, 60.0


@njit(inline="always", **JIT_VECTOR)
def exp_in_place(s, n, bits):  # pragma: no cover - compiled
    """s[j] = $e^{s_j}$ for j < n, as above; `bits` is int32 scratch of at least n. Two passes,
    both SIMD: the polynomial and $2^n$'s bits, then their product (reading the int32 bits
    as float32 is a view of the array, which has no per-element form)."""
    c1, c2, c3, c4 = EXP2_TAYLOR[1], EXP2_TAYLOR[2], EXP2_TAYLOR[3], EXP2_TAYLOR[4]
    c5, c6, c7 = EXP2_TAYLOR[5], EXP2_TAYLOR[6], EXP2_TAYLOR[7]
    log2e, lo, hi = np.float32(1.0 / math.log(2.0)), np.float32(EXP_T_MIN), np.float32(EXP_T_MAX)
    for j in range(n):
        t = min(max(s[j] * log2e, lo), hi)
        k = np.floor(t + np.float32(0.5))
        f = t - k
        s[j] = np.float32(1.0) + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * (c6 + f * c7))))))
        bits[j] = (np.int32(k) + np.int32(127)) << 23
    two_n = bits.view(np.float32)
    for j in range(n):
        s[j] *= two_n[j]


@njit(**JIT_VECTOR)
def gelu_row(x, y):  # pragma: no cover - compiled
    """GPT-2's GELU $\\tfrac12 x (1 + \\tanh u)$, $u = \\sqrt{2/\\pi}(x + 0.044715 x^3)$, in float32,
    computed as $x - x / (1 + e^{2u})$: the same function, since $\\tfrac12(1 + \\tanh u) =
    1/(1 + e^{-2u})$, with one exponential (`exp_in_place`) and no `tanh`. Serial: one 3072-wide
    row took 1.1 us here, less than starting a parallel loop. $e^{2u}$ saturates at $2^{60}$
    (`exp_in_place`'s clamp), where the correction $x/(1 + e^{2u})$ is already below float32
    resolution, and bottoms out at $2^{-126}$, where $x - x/(1 + e^{2u})$ rounds to 0 as it should."""
    n = x.shape[0]
    c2 = np.float32(2.0 * math.sqrt(2.0 / math.pi))
    a = np.float32(0.044715)
    for i in range(n):
        v = x[i]
        y[i] = c2 * (v + a * v * v * v)  # 2u
    exp_in_place(y, n, np.empty(n, np.int32))
    for i in range(n):
        y[i] = x[i] - x[i] / (np.float32(1.0) + y[i])


@njit(**JIT)
def gelu_rows(x, y):  # pragma: no cover - compiled
    """`gelu_row` for every row, rows in parallel."""
    for r in prange(x.shape[0]):
        gelu_row(x[r], y[r])


@njit(cache=True)
def gelu_2d(x, y):  # pragma: no cover - compiled
    """GELU of x (N, C) into y: one row serially, several rows in parallel (as `layer_norm_2d`)."""
    if x.shape[0] == 1:
        gelu_row(x[0], y[0])
    else:
        gelu_rows(x, y)


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


# Attention reads each head's keys, then its values, as two streams of D floats per position,
# which the hardware prefetchers did not keep ahead of (GPT-2 shape, decoding, the cache read
# at about half the machine's bandwidth): the kernel asks for the row `KEYS_AHEAD` positions on.
KEYS_AHEAD = 8


@njit(**JIT)
def attention_cache(q, k, v, S, y):  # pragma: no cover - compiled
    """Causal attention of q (B, H, T, D), the newest T of S positions, over the first S
    positions of k, v (B, H, size, D), size >= S: the whole cache, so that they are contiguous
    arrays (a slice of the first S positions is not, and compiles to code that cannot use SIMD).

    One task per (b, h, t): the scores of the visible keys $0 \\ldots S-T+t$, their softmax,
    and the weighted sum of values — the (T, S) score matrix is never stored. Each task has its
    own row of one scratch array, allocated once, not once per task."""
    B, H, T, D = q.shape
    scale = np.float32(1.0 / math.sqrt(D))
    scores = np.empty((B * H * T, S), np.float32)
    bits = np.empty((B * H * T, S), np.int32)  # exp_in_place's scratch
    for task in prange(B * H * T):
        b = task // (H * T)
        h = (task // T) % H
        t = task % T
        n_keys = S - T + t + 1
        s = scores[task]
        prefetch_lines(k[b, h], 0, min(KEYS_AHEAD, n_keys) * D)  # the first keys, which nothing prefetched
        mx = np.float32(-np.inf)
        for j in range(n_keys):
            prefetch_lines(k[b, h], (j + KEYS_AHEAD) * D, D)  # the key row KEYS_AHEAD positions on
            acc = np.float32(0.0)
            for e in range(D):
                acc += q[b, h, t, e] * k[b, h, j, e]
            s[j] = acc * scale
            mx = max(mx, s[j])
        for j in range(n_keys):
            s[j] -= mx
        exp_in_place(s, n_keys, bits[task])
        total = np.float32(0.0)
        for j in range(n_keys):
            total += s[j]
        inv = np.float32(1.0) / total
        for e in range(D):
            y[b, h, t, e] = 0.0
        for j in range(n_keys):
            prefetch_lines(v[b, h], (j + KEYS_AHEAD) * D, D)
            wj = s[j] * inv
            for e in range(D):
                y[b, h, t, e] += wj * v[b, h, j, e]


# ------------------------------------------------------------------------------------------
# A transformer block in one compiled call. Decoding a token runs about a hundred kernels, and
# between them runs Python: the forward's reshapes and residual adds, each wrapper's checks, and
# Numba's dispatch of each call (typing its arguments) — 20-25 us per GPT-2 block here, about a
# tenth of a Q4_0 step. `decode_block` runs the same kernels in the same order from compiled
# code, so the result is the same to the bit (tested), with one dispatch per block.
# A block's parameters other than its four products (`MATMUL_WEIGHTS`): layer norms and biases.
BLOCK_VECTORS = tuple(name for name in block_param_shapes(1) if name not in MATMUL_WEIGHTS)


def block_args(w: Any, shape: tuple[int, int]) -> tuple | None:
    """A kernel form of an (in, out) = `shape` weight as the tuple of arrays `block_linear`
    takes, or None if `decode_block` does not take it (the forward then runs that block kernel
    by kernel): float32 output-major rows, integer tiles, Q4_0 tiles with float16 scale bits and
    N:M tiles (their n and m last), all C-contiguous and of that shape."""
    if isinstance(w, np.ndarray) and w.ndim == 2 and w.T.flags.c_contiguous:
        w = RowsDense(w.T)  # an output-major (in, out) array is its (out, in) rows
    if isinstance(w, RowsDense) and w.w.dtype == np.float32 and w.w.ndim == 2:
        arrays: tuple = (w.w,)
    elif isinstance(w, TilesInt):
        arrays = (w.q, w.scale) if w.zero is None else (w.q, w.scale, w.zero)
    elif isinstance(w, TilesQ4_0) and w.d.dtype == np.uint16:
        arrays = (w.words, w.d)
    elif isinstance(w, TilesNM):
        arrays = (w.values, w.indices)
    else:
        return None
    if _rows_shape(w) != shape[::-1] or not all(a.flags.c_contiguous for a in arrays):
        return None
    return (*arrays, w.n, w.m) if isinstance(w, TilesNM) else arrays


def block_linear(x: np.ndarray, w: tuple, bias: np.ndarray, y: np.ndarray, vnni: bool) -> None:
    """$y = xW + b$ for W as `block_args` gives it: the kernel `NumbaBackend.linear` would pick
    for the same form. Compiled code calls the `@overload` below, which picks by the tuple's
    types (one array: dense rows; four items: N:M; three: tiles with zero points; uint32 words:
    Q4_0; int8 codes: tiles) when it compiles."""
    if len(w) == 1:
        matmul_rows(x, w[0], bias, y)
    elif len(w) == 4:
        matmul_nm(x, *w, bias, y)
    elif len(w) == 3:
        matmul_tiles_zero(x, *w, bias, y)
    elif w[0].dtype == np.uint32:
        (matmul_q4_0_vnni if vnni else matmul_q4_0)(x, w[0], w[1], bias, y)
    else:
        matmul_tiles(x, w[0], w[1], bias, y)


@overload(block_linear)
def _block_linear(x, w, bias, y, vnni):  # pragma: no cover - compiled
    if len(w) == 1:
        def dense(x, w, bias, y, vnni):
            matmul_rows(x, w[0], bias, y)

        return dense
    if len(w) == 4:
        def nm(x, w, bias, y, vnni):
            matmul_nm(x, w[0], w[1], w[2], w[3], bias, y)

        return nm
    if len(w) == 3:
        def tiles_zero(x, w, bias, y, vnni):
            matmul_tiles_zero(x, w[0], w[1], w[2], bias, y)

        return tiles_zero
    if w[0].dtype == types.uint32:
        if not HAS_VNNI:  # vpdpbusd would not compile for this CPU
            def q4_0(x, w, bias, y, vnni):
                matmul_q4_0(x, w[0], w[1], bias, y)

            return q4_0

        def q4_0_either(x, w, bias, y, vnni):
            if vnni:
                matmul_q4_0_vnni(x, w[0], w[1], bias, y)
            else:
                matmul_q4_0(x, w[0], w[1], bias, y)

        return q4_0_either

    def tiles(x, w, bias, y, vnni):
        matmul_tiles(x, w[0], w[1], bias, y)

    return tiles


@njit(cache=True)
def decode_block(x, ln1_w, ln1_b, w_attn, b_attn, w_proj, b_proj, ln2_w, ln2_b, w_fc, b_fc, w_mlp, b_mlp,
                 eps, k, v, pos0, B, T, H, vnni):  # pragma: no cover - compiled  # fmt: skip
    """One block of `minillm.nn.gpt.forward` for x (B*T, C): the newest T positions of B
    sequences, after pos0 cached ones. k, v (B, H, size, D) are the block's layer of the KV
    cache, written in place. Returns $x + \\text{attn}(\\text{ln}_1(x))$ plus the MLP of its
    $\\text{ln}_2$: the kernels `NumbaBackend`'s methods call, in the same order, with the
    forward's reshapes as copy loops."""
    N, C = x.shape
    D = C // H
    h = np.empty((N, C), np.float32)
    layer_norm_2d(x, ln1_w, ln1_b, eps, h)
    qkv = np.empty((N, 3 * C), np.float32)
    block_linear(h, w_attn, b_attn, qkv, vnni)
    q = np.empty((B, H, T, D), np.float32)
    for b in range(B):  # (B*T, 3C) -> q (B, H, T, D), and k, v into the cache at pos0..
        for t in range(T):
            for hh in range(H):
                for e in range(D):
                    q[b, hh, t, e] = qkv[b * T + t, hh * D + e]
                    k[b, hh, pos0 + t, e] = qkv[b * T + t, C + hh * D + e]
                    v[b, hh, pos0 + t, e] = qkv[b * T + t, 2 * C + hh * D + e]
    y = np.empty((B, H, T, D), np.float32)
    attention_cache(q, k, v, pos0 + T, y)
    heads = np.empty((N, C), np.float32)
    for b in range(B):  # (B, H, T, D) -> (B*T, C)
        for t in range(T):
            for hh in range(H):
                for e in range(D):
                    heads[b * T + t, hh * D + e] = y[b, hh, t, e]
    out = np.empty((N, C), np.float32)
    block_linear(heads, w_proj, b_proj, out, vnni)
    x = x + out
    layer_norm_2d(x, ln2_w, ln2_b, eps, h)
    f = np.empty((N, 4 * C), np.float32)
    block_linear(h, w_fc, b_fc, f, vnni)
    g = np.empty((N, 4 * C), np.float32)
    gelu_2d(f, g)
    block_linear(g, w_mlp, b_mlp, out, vnni)
    x += out
    return x


class PreparedParams(dict):
    """The params `NumbaBackend.prepare` returns: the same dict, which also keeps, per block,
    the arguments `block` assembles for `decode_block` (checking, converting and collecting
    twelve arrays is Python that cost about 15 us per block in a decode step, where it runs
    cold between streaming products). Setting, deleting or updating any entry forgets them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_args: dict[tuple, tuple | None] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.block_args.clear()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.block_args.clear()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> PreparedParams:
        self.block_args.clear()
        return super().__ior__(other)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.block_args.clear()
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.block_args.clear()
        return super().setdefault(key, default)

    def pop(self, *args: Any) -> Any:
        self.block_args.clear()
        return super().pop(*args)

    def popitem(self) -> tuple[Any, Any]:
        self.block_args.clear()
        return super().popitem()

    def clear(self) -> None:
        self.block_args.clear()
        super().clear()


# ------------------------------------------------------------------------------------------
class NumbaBackend(NumpyBackend):
    """Numba-compiled CPU kernels: every product (dense, quantized, sparse) and every row kernel.

    Products with many rows (prefill) are compute-bound: from `prefill_rows` rows on, a weight is
    dequantized, 512 outputs at a time, and multiplied by BLAS. The threshold depends on how good
    the fused kernel is at many rows: 32 for dense float32 (one dot product per output),
    `prefill_rows_tiles` = 256 for the tiled integer kinds, whose kernels reuse each code for
    every row from the caches and beat dequantize + BLAS up to about 256-512 rows here, and in
    effect never for Q4_0 on integer dot products (`prefill_rows_vnni`) and for N:M
    (`prefill_rows_nm`), whose kernels beat dequantize + BLAS at every prompt length measured
    here (GPT-2 shape, Q4_0: 300, 600 and 1000 tokens at 996, 908 and 732 tok/s against 684, 596
    and 381; 2:4: 32, 128, 512 and 1000 tokens at 665, 788, 734 and 525 tok/s against 412, 757,
    702 and 485, and the decode steps after BLAS are slower too, see docs/backends-notes.md).
    """

    name = "numba"
    prefill_rows = 32
    prefill_rows_tiles = 256
    prefill_rows_nm = 1 << 20
    prefill_rows_vnni = 1 << 20
    q4_0_vnni = HAS_VNNI  # Q4_0 by integer dot products where the CPU has them (set False to compare)
    fused_blocks = True  # decode a block in one compiled call (`decode_block`; False: kernel by kernel)

    def __init__(self) -> None:
        self._cache = WeightCache()
        self.compile_s: float | None = None

    def prepare(self, params: dict[str, Any]) -> PreparedParams:
        """Params with every weight kind in this backend's kernel form (see `rows_form`), as a
        `PreparedParams`, which also keeps what `block` assembles.

        Kinds are converted once per weight object and cached; dense arrays pass through
        untouched: an output-major (in, out) array (`minillm.nn.gpt.output_major`) *is* its
        (out, in) rows, and a row-major one is read in place by `matmul_in_out`."""
        return PreparedParams({name: self.kernel_weight(w) for name, w in params.items()})

    def kernel_weight(self, w: Any) -> Any:
        """`w` in kernel form: cached, so the second call for the same weight is free."""
        if isinstance(w, KERNEL_FORMS):
            return w
        return self._cache.get(w, rows_form)

    def clear_cache(self) -> None:
        """Forget converted weights (needed only after changing a weight array in place)."""
        self._cache.clear()

    # --- kernels ---------------------------------------------------------------------------
    def linear(self, x: np.ndarray, w: Any, b: np.ndarray | None) -> np.ndarray:
        """$y = xW + b$ from the stored codes (fused kernels), or BLAS for many rows (prefill)."""
        w = self.kernel_weight(w)
        if isinstance(w, np.ndarray):
            if w.ndim != 2 or x.shape[-1] != w.shape[0]:
                raise ValueError(f"x {x.shape} and W {w.shape} do not multiply: need x (N, in), W (in, out)")
            if x.shape[0] >= self.prefill_rows:  # prefill: compute-bound, BLAS is faster
                return super().linear(x, w, b)
            if w.T.flags.c_contiguous:  # output-major: W^T is its (out, in) rows, free
                w = RowsDense(w.T.astype(np.float32, copy=False))
        elif not isinstance(w, ROW_FORMS):
            raise TypeError(f"weight must be a numpy array or one of minillm.kinds, got {type(w).__name__}")
        x = _f32(x)
        n_out, n_in = w.shape[::-1] if isinstance(w, np.ndarray) else _rows_shape(w)
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"x must have shape (N, {n_in}) to multiply this weight, got {x.shape}")
        N = x.shape[0]
        bias = np.zeros(n_out, np.float32) if b is None else _f32(b)
        if isinstance(w, RowsLowRank):  # (xA)B: two dense products
            return self.linear(self.linear(x, RowsDense(w.a), None), RowsDense(w.b), bias)
        if N >= self._blas_rows(w):
            return self._tiled_blas(x, w, bias)
        y = np.empty((N, n_out), np.float32)
        if isinstance(w, np.ndarray):  # row-major (in, out), e.g. built by hand: read in place
            matmul_in_out(x, _f32(w), bias, y)
        elif isinstance(w, RowsDense):
            matmul_rows(x, w.w, bias, y)
        elif isinstance(w, TilesInt) and w.zero is None:
            matmul_tiles(x, w.q, w.scale, bias, y)
        elif isinstance(w, TilesInt):
            matmul_tiles_zero(x, w.q, w.scale, w.zero, bias, y)
        elif isinstance(w, TilesQ4_0):
            (matmul_q4_0_vnni if self._vnni(w) else matmul_q4_0)(x, w.words, w.d, bias, y)
        else:
            matmul_nm(x, w.values, w.indices, w.n, w.m, bias, y)
        return y

    def _blas_rows(self, w: Any) -> int:
        """From how many rows `linear` multiplies this kernel form with BLAS."""
        if isinstance(w, TilesNM):
            return self.prefill_rows_nm
        if isinstance(w, TilesQ4_0) and self._vnni(w):
            return self.prefill_rows_vnni
        return self.prefill_rows_tiles if isinstance(w, (TilesInt, TilesQ4_0)) else self.prefill_rows

    def _vnni(self, w: TilesQ4_0) -> bool:
        """Whether Q4_0 tiles go to the VNNI kernel, which reads raw memory: only where the CPU has
        VNNI and only tiles laid out as `q4_0_tiles` makes them (contiguous, float16 scale bits)."""
        return (self.q4_0_vnni and w.d.dtype == np.uint16
                and w.words.flags.c_contiguous and w.d.flags.c_contiguous)  # fmt: skip

    def _tiled_blas(self, x: np.ndarray, w: Any, bias: np.ndarray) -> np.ndarray:
        """Prefill: dequantize TILE outputs at a time into one buffer, multiply with BLAS.

        Every quantized form is tiled (`TILE_FORMS`) and dequantized as columns, (in, outputs):
        its codes for one input and 64 outputs are contiguous, so both the reads and the writes
        stream."""
        if isinstance(w, RowsDense):
            return x @ w.w.T + bias
        n_out, n_in = _rows_shape(w)
        y = np.empty((x.shape[0], n_out), np.float32)
        buf = np.empty(n_in * min(TILE, LANES * n_tiles_for(n_out)), np.float32)
        for o0 in range(0, n_out, TILE):  # whole tiles: o0 is a multiple of LANES
            n = min(TILE, n_out - o0)
            cols = buf[: n_in * LANES * n_tiles_for(n)].reshape(n_in, -1)  # (in, tiles * 64)
            _dequantize_cols(w, o0 // LANES, cols)
            np.matmul(x, cols[:, :n], out=y[:, o0 : o0 + n])
        y += bias
        return y

    def block(self, params: dict[str, Any], config: Any, i: int, x: np.ndarray, kv: tuple, pos0: int,
              B: int, T: int) -> np.ndarray | None:  # fmt: skip
        """Block i of `minillm.nn.gpt.forward` as one compiled call (`decode_block`): its output
        for x (B*T, C), with the layer's keys and values written into the cache kv. Or None, and
        the forward runs the block kernel by kernel (whose checks then report any error): for
        prefill (from `prefill_rows` rows, where products go to BLAS), weight forms `block_args`
        does not take, a cache that is not float32, or any shape that does not fit — the
        compiled block indexes without bounds checks, so every shape is checked here. The
        block's weights and vectors are assembled once per `PreparedParams` (what `prepare`
        returns); x, the cache and the positions are checked at every call."""
        C, H = config.n_embd, config.n_head
        k, v = kv[0][i], kv[1][i]
        if (not self.fused_blocks or x.shape != (B * T, C) or B * T >= self.prefill_rows or x.dtype != np.float32
                or k.dtype != np.float32 or v.dtype != np.float32 or k.shape != v.shape
                or k.shape != (B, H, k.shape[2], C // H) or H * (C // H) != C or not 0 <= pos0 <= k.shape[2] - T
                or not (k.flags.c_contiguous and v.flags.c_contiguous)):  # fmt: skip
            return None
        key = (i, C, float(config.layer_norm_epsilon))
        kept = params.block_args if isinstance(params, PreparedParams) else {}
        if key in kept:
            args = kept[key]
        else:
            args, keep = self._block_args(params, i, C, key[2])
            if keep:
                kept[key] = args
        return None if args is None else decode_block(x, *args, k, v, pos0, B, T, H, self.q4_0_vnni)

    def _block_args(self, params: dict[str, Any], i: int, C: int, eps: float) -> tuple[tuple | None, bool]:
        """`decode_block`'s arguments for block i's weights and vectors (None if it does not take
        them), and whether they may be kept: not if a vector had to be copied to float32, as a
        later change to the original would not reach the copy."""
        p, shapes = f"h.{i}.", block_param_shapes(C)
        ws = [block_args(self.kernel_weight(params[p + n]), shapes[n]) for n in MATMUL_WEIGHTS]
        given = [params[p + n] for n in BLOCK_VECTORS]
        vectors = [_f32(a) for a in given]
        if any(w is None for w in ws) or [a.shape for a in vectors] != [shapes[n] for n in BLOCK_VECTORS]:
            return None, True
        ln1_w, ln1_b, b_attn, b_proj, ln2_w, ln2_b, b_fc, b_mlp = vectors
        w_attn, w_proj, w_fc, w_mlp = ws
        args = (ln1_w, ln1_b, w_attn, b_attn, w_proj, b_proj, ln2_w, ln2_b, w_fc, b_fc, w_mlp, b_mlp, eps)
        return args, all(a is b for a, b in zip(vectors, given, strict=True))

    def embed(self, wte: Any, idx: np.ndarray) -> np.ndarray:
        """Token embeddings; for a quantized tied embedding, row $t$ of the head's rows form *is*
        token $t$'s codes, so a lookup dequantizes one row per token."""
        wte = self.kernel_weight(wte)
        if not isinstance(wte, RowsTied):
            return super().embed(wte, idx)
        flat = np.asarray(idx).reshape(-1)
        out = np.empty((flat.size, _rows_shape(wte.head)[1]), np.float32)
        for n, token in enumerate(flat):
            _dequantize_rows(wte.head, int(token), out[n : n + 1])
        return out.reshape(*np.shape(idx), -1)

    def lm_head(self, x: np.ndarray, wte: Any) -> np.ndarray:
        """Logits $x W_{te}^\\top$: the embedding (V, C) *is* the head's rows, so no copy is needed."""
        wte = self.kernel_weight(wte)
        head = wte.head if isinstance(wte, RowsTied) else RowsDense(_f32(wte))
        return self.linear(x, head, None)

    def layer_norm(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
        x2 = _f32(x).reshape(-1, x.shape[-1])
        y = np.empty_like(x2)
        layer_norm_2d(x2, _f32(w), _f32(b), float(eps), y)
        return y.reshape(x.shape)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        x2 = _f32(x).reshape(-1, x.shape[-1] if x.ndim and x.shape[-1] else 1)
        y = np.empty_like(x2)
        gelu_2d(x2, y)
        return y.reshape(x.shape)

    def softmax(self, x: np.ndarray) -> np.ndarray:
        x2 = _f32(x).reshape(-1, x.shape[-1])
        y = np.empty_like(x2)
        softmax_rows(x2, y)
        return y.reshape(x.shape)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, n_keys: int | None = None) -> np.ndarray:
        """Fused causal attention over the first `n_keys` positions of k, v (all by default).

        Pass the whole cache with `n_keys` rather than a slice of it: the cache is contiguous,
        a slice is not, and the kernel compiled for non-contiguous arrays cannot use SIMD (3x
        slower here). A non-contiguous k or v is copied."""
        if q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32:
            return super().attention(q, k, v, n_keys)
        S = keys_in_use(q, k, v, n_keys)[0].shape[2]  # checks n_keys
        y = np.empty(q.shape, np.float32)
        attention_cache(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v), S, y)
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
              K.NMSparse(w[:32], np.tile(np.array([0, 1], np.uint8), 16)[:, None].repeat(64, 1)),
              w, np.asfortranarray(w)]  # dense: row-major and output-major  # fmt: skip
        x = rng.standard_normal((max(self.prefill_rows, self.prefill_rows_tiles), 64)).astype(np.float32)
        for kind in ws:
            blas_rows = self._blas_rows(self.kernel_weight(kind))
            for rows in (1, blas_rows):  # the fused and the BLAS path
                self.linear(x[:rows], kind, w[0])
            if isinstance(kind, K.HEAD_KINDS):  # a quantized tied embedding's lookup
                self.embed(K.TiedEmbedding(kind), np.zeros((1, 2), np.int64))
        for rows in (1, 2):  # one row (decode: serial kernel) and several (parallel)
            self.layer_norm(w[:rows], w[0], w[1], 1e-5)
        for rows in (1, 2):
            self.gelu(w[:rows])
        self.softmax(w)
        cache = np.zeros((2, 1, 2, 8, 32), np.float32)
        q = rng.standard_normal((1, 2, 4, 32)).astype(np.float32)
        self.attention(q, cache[0], cache[1], n_keys=6)
        self._compile_blocks(rng)
        self.compile_s = time.perf_counter() - t
        return self.compile_s

    warmup = compile

    def _compile_blocks(self, rng: np.random.Generator) -> None:
        """`decode_block` for each weight form it takes, on a one-layer block of width 64."""
        from ..config import GPTConfig

        C = 64
        cfg = GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=2, n_embd=C)

        def codes(i: int, o: int) -> np.ndarray:
            return rng.integers(-127, 128, (i, o)).astype(np.int8)

        def halves(i: int, o: int) -> np.ndarray:
            return np.ones((i // 32, o), np.float16)

        kinds = [lambda i, o: np.asfortranarray(rng.standard_normal((i, o)).astype(np.float32)),  # output-major
                 lambda i, o: K.Int8PerChannel(codes(i, o), np.ones(o, np.float32)),
                 lambda i, o: K.Q8_0(codes(i, o), halves(i, o)),
                 lambda i, o: K.Q4_0(rng.integers(0, 256, (i // 2, o)).astype(np.uint8), halves(i, o)),
                 lambda i, o: K.IntPerGroup(codes(i, o) // 16, halves(i, o), np.zeros((i // 32, o), np.int8), 4, 32),
                 lambda i, o: K.NMSparse(rng.standard_normal((i // 2, o)).astype(np.float32),
                                         np.tile(np.uint8([0, 2]), i // 4)[:, None].repeat(o, 1))]  # fmt: skip
        x = rng.standard_normal((1, C)).astype(np.float32)
        kv = (np.zeros((1, 1, 2, 4, C // 2), np.float32), np.zeros((1, 1, 2, 4, C // 2), np.float32))
        for make in kinds:
            params = {f"h.0.{n}": make(*shape) if n in MATMUL_WEIGHTS else np.ones(shape, np.float32)
                      for n, shape in block_param_shapes(C).items()}  # fmt: skip
            if self.fused_blocks and self.block(params, cfg, 0, x, kv, 0, 1, 1) is None:
                raise RuntimeError(f"decode_block did not take {type(params['h.0.mlp.c_fc.weight']).__name__}")

    @property
    def threads(self) -> int:
        """Threads Numba's parallel loops use (NUMBA_NUM_THREADS)."""
        return numba.get_num_threads()

    @property
    def threading_layer(self) -> str:
        """The thread pool Numba loaded ("omp", "tbb" or "workqueue"), after the first kernel ran."""
        try:
            return numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            return "not started"
