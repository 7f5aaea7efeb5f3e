r"""Weight kinds: what a params dict may hold in place of a dense weight.

A block's matmul weight is a float32 array $W$ of shape (in, out) in Conv1D layout,
$y = xW + b$. Compression replaces it by an object that stores *less* and still knows how to
multiply:

| kind | stores | dequantized weight |
|---|---|---|
| `Int8PerChannel` | int8 $q$ (in, out), a scale $s_o$ per output column | $W_{io} = s_o q_{io}$ |
| `IntPerGroup` | $b$-bit codes, scale (and zero point) per input group | $s_{go}(q_{io}-z_{go})$ |
| `Q8_0` | llama.cpp blocks of 32 inputs: 32 int8 + one fp16 $d$ | $W = d\,q$ |
| `Q4_0` | llama.cpp blocks of 32 inputs: 16 packed bytes + one fp16 $d$ | $W = d\,(q - 8)$ |
| `LowRank` | $A$ (in, r), $B$ (r, out) | $W = AB$ |
| `NMSparse` | N kept values of every M inputs + their positions | zeros elsewhere |
| `Masked` | dense $W$ and a keep-mask | $W \odot M$ |
| `TiedEmbedding` | the tied embedding as its head $W_{te}^\top$ in one of the quantized kinds | $W_{te}$ |

Every kind has the same small interface, so a backend's `linear(x, W, b)` can dispatch on it:

- `.shape` — the dense (in, out) shape;
- `.nbytes` — bytes of the *storage format* (codes packed at their bit width, scales in the
  dtype they are held in, indices at their bit width): what a file or a GPU kernel would read;
- `.n_params` — how many weight values are stored ($r(m+n)$ for low rank, the nonzeros for
  sparse kinds, $mn$ for quantized kinds);
- `.dequantize()` — the dense float32 (in, out) array;
- `.matmul(x)` — $xW$ for `x` of shape (..., in), computed by NumPy (the reference kernel).

The kinds hold plain NumPy arrays and are immutable dataclasses; `__post_init__` checks
dtypes and shapes so that a malformed kind fails where it is built, not deep inside a forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import numpy as np

# The four matmul weights of a GPT-2 block; these are the weights compression replaces.
# Position embeddings, LayerNorms and biases stay float32; the token embedding, which is also the
# LM head, may be quantized as a `TiedEmbedding`.
BLOCK_MATMUL_SUFFIXES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)

Q_BLOCK = 32  # llama.cpp's QK8_0 = QK4_0 = 32 weights per block


def block_matmul_names(params: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """Names of the block matmul weights in `params`, minus those matching a `skip` pattern.

    Parameters
    ----------
    params : dict
        A GPT params dict (Hugging Face GPT-2 names without ``transformer.``).
    skip : tuple of str
        Shell-style patterns (`fnmatch`) of names to leave alone, e.g. ``("h.0.*",)``.
    """
    if isinstance(skip, str):
        raise TypeError(f"skip must be a tuple of patterns, got the string {skip!r}")
    return [
        name
        for name in params
        if name.endswith(BLOCK_MATMUL_SUFFIXES) and not any(fnmatch(name, p) for p in skip)
    ]


def is_kind(w: Any) -> bool:
    """True if `w` is one of the weight kinds of this module (not a plain array)."""
    return isinstance(w, KINDS)


def as_dense(w: Any) -> np.ndarray:
    """The dense array behind a weight: `w` itself for an ndarray, `w.dequantize()` for a kind."""
    return w.dequantize() if is_kind(w) else np.asarray(w)


def stored_bytes(w: Any) -> int:
    """Stored bytes of a weight: `.nbytes` works for arrays and kinds alike."""
    return int(w.nbytes)


# Argument checks shared with minillm.compress: one wording for every error message.


def check_array(name: str, x: Any, *, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """`x` as an ndarray; raise if it is not numeric, has the wrong ndim, or is not finite."""
    if is_kind(x):
        raise TypeError(f"{name} must be a dense array, got a {type(x).__name__} weight kind")
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if finite and np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)].ravel()[0]
        raise ValueError(f"{name} must be finite (no NaN/inf), got a value {bad}")
    return arr


def check_bits(bits: Any) -> int:
    """Bit width of an integer code: an int in 2..8."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in 2..8, got {bits!r}")
    return int(bits)


def check_fraction(name: str, value: Any) -> float:
    """A number in the closed interval [0, 1] (a sparsity, an alpha)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not (0.0 <= float(value) <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _check_dtype(name: str, x: Any, dtypes: tuple[type, ...]) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in [np.dtype(d) for d in dtypes]:
        allowed = ", ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {x.dtype}")


def _check_shape(name: str, x: np.ndarray, shape: tuple[int, ...]) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")


def _check_x(x: Any, n_in: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] != n_in:
        raise ValueError(f"x must have shape (..., {n_in}) to multiply this weight, got {x.shape}")
    return x


def _packed_bytes(n_values: int, bits: int) -> int:
    """Bytes to store `n_values` codes of `bits` bits each, packed back to back."""
    return math.ceil(n_values * bits / 8)


# The kinds.


@dataclass(frozen=True, eq=False)
class Int8PerChannel:
    r"""Symmetric int8 with one float32 scale per output column: $W_{io} = s_o q_{io}$.

    Because the scale depends only on the output column, it factors out of the sum:
    $(xW)_o = s_o \sum_i x_i q_{io}$ — the matmul runs on the integers and scales once.
    """

    q: np.ndarray  # int8 (in, out)
    scale: np.ndarray  # float32 (out,)

    def __post_init__(self) -> None:
        _check_dtype("q", self.q, (np.int8,))
        _check_dtype("scale", self.scale, (np.float32,))
        if self.q.ndim != 2:
            raise ValueError(f"q must be 2-D (in, out), got shape {self.q.shape}")
        _check_shape("scale", self.scale, (self.q.shape[1],))
        check_array("scale", self.scale)

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes

    @property
    def n_params(self) -> int:
        return self.q.size

    def dequantize(self) -> np.ndarray:
        return self.q.astype(np.float32) * self.scale  # (in, out) * (out,)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        x = _check_x(x, self.shape[0])
        return (x @ self.q.astype(np.float32)) * self.scale  # (..., out)


@dataclass(frozen=True, eq=False)
class IntPerGroup:
    r"""$b$-bit integer codes with a scale (and optional zero point) per group of inputs.

    Groups are `group_size` consecutive inputs (axis 0) of one output column, so `scale` has
    shape (in / group_size, out): $W_{io} = s_{go}\,(q_{io} - z_{go})$ with $g = \lfloor i /
    \text{group\_size} \rfloor$. Codes are signed, $q \in [-2^{b-1}, 2^{b-1} - 1]$, held
    unpacked in int8 for readability; `nbytes` counts them packed at `bits` bits each (as a
    file or kernel stores them), plus the scales in their stored dtype (float16 from
    `quantize_weight`, float32 allowed), plus zero points packed at `bits` bits.
    """

    q: np.ndarray  # int8 codes (in, out)
    scale: np.ndarray  # float16 or float32 (in // group_size, out)
    zero_point: np.ndarray | None  # int8 (in // group_size, out) or None (symmetric)
    bits: int
    group_size: int

    def __post_init__(self) -> None:
        check_bits(self.bits)
        _check_dtype("q", self.q, (np.int8,))
        _check_dtype("scale", self.scale, (np.float16, np.float32))
        if self.q.ndim != 2:
            raise ValueError(f"q must be 2-D (in, out), got shape {self.q.shape}")
        n_in, n_out = self.q.shape
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 or n_in % g:
            raise ValueError(f"group_size must be a positive int dividing in={n_in}, got {g!r}")
        _check_shape("scale", self.scale, (n_in // g, n_out))
        check_array("scale", self.scale)
        qmin, qmax = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        if self.q.size and (self.q.min() < qmin or self.q.max() > qmax):
            raise ValueError(f"q codes must lie in [{qmin}, {qmax}] for bits={self.bits}")
        if self.zero_point is not None:
            _check_dtype("zero_point", self.zero_point, (np.int8,))
            _check_shape("zero_point", self.zero_point, self.scale.shape)
            zp = self.zero_point
            if zp.size and (zp.min() < qmin or zp.max() > qmax):
                raise ValueError(f"zero_point must lie in [{qmin}, {qmax}] for bits={self.bits}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    @property
    def nbytes(self) -> int:
        n = _packed_bytes(self.q.size, self.bits) + self.scale.nbytes
        if self.zero_point is not None:
            n += _packed_bytes(self.zero_point.size, self.bits)
        return n

    @property
    def n_params(self) -> int:
        return self.q.size

    def dequantize(self) -> np.ndarray:
        g = self.group_size
        q = self.q.astype(np.float32)
        if self.zero_point is not None:
            q = q - np.repeat(self.zero_point.astype(np.float32), g, axis=0)
        return q * np.repeat(self.scale.astype(np.float32), g, axis=0)  # (in, out)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return _check_x(x, self.shape[0]) @ self.dequantize()


@dataclass(frozen=True, eq=False)
class Q8_0:
    """llama.cpp Q8_0: blocks of 32 inputs, 32 int8 codes + one fp16 scale = 34 bytes.

    `qs` is int8 (in, out); `d` is float16 (in / 32, out); $W = d\\,q$ with $d$ widened
    to float32. Build one with `minillm.compress.quantize.quantize_weight(w, "q8_0")`.
    """

    qs: np.ndarray  # int8 (in, out)
    d: np.ndarray  # float16 (in // 32, out)

    def __post_init__(self) -> None:
        _check_dtype("qs", self.qs, (np.int8,))
        _check_dtype("d", self.d, (np.float16,))
        if self.qs.ndim != 2 or self.qs.shape[0] % Q_BLOCK:
            raise ValueError(f"qs must be 2-D with in divisible by 32, got shape {self.qs.shape}")
        _check_shape("d", self.d, (self.qs.shape[0] // Q_BLOCK, self.qs.shape[1]))
        check_array("d", self.d)

    @property
    def shape(self) -> tuple[int, int]:
        return self.qs.shape

    @property
    def nbytes(self) -> int:
        return self.qs.nbytes + self.d.nbytes  # 32 + 2 bytes per block

    @property
    def n_params(self) -> int:
        return self.qs.size

    def dequantize(self) -> np.ndarray:
        n_blocks, n_out = self.d.shape
        # Each block's 32 codes times its scale, broadcast over a (blocks, 32, out) view of qs: the
        # codes keep their memory order (output-major or not). A repeated (in, out) scale array is
        # C-ordered, and mixing the two orders cost 13 ms instead of 1 ms on a 768 x 3072 weight.
        blocks = self.qs.reshape(n_blocks, Q_BLOCK, n_out) * self.d.astype(np.float32)[:, None, :]
        return blocks.reshape(self.shape)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return _check_x(x, self.shape[0]) @ self.dequantize()


@dataclass(frozen=True, eq=False)
class Q4_0:
    """llama.cpp Q4_0: blocks of 32 inputs, 16 bytes of packed nibbles + one fp16 scale = 18 bytes.

    `packed` is uint8 (in / 2, out): byte $j$ of a block holds element $j$ in its low nibble and
    element $j + 16$ in its high nibble. `d` is float16 (in / 32, out); $W = d\\,(q - 8)$.
    """

    packed: np.ndarray  # uint8 (in // 2, out)
    d: np.ndarray  # float16 (in // 32, out)

    def __post_init__(self) -> None:
        _check_dtype("packed", self.packed, (np.uint8,))
        _check_dtype("d", self.d, (np.float16,))
        if self.packed.ndim != 2 or self.packed.shape[0] % (Q_BLOCK // 2):
            raise ValueError(
                f"packed must be 2-D (in/2, out) with in divisible by 32, got {self.packed.shape}"
            )
        _check_shape("d", self.d, (self.packed.shape[0] // (Q_BLOCK // 2), self.packed.shape[1]))
        check_array("d", self.d)

    @property
    def shape(self) -> tuple[int, int]:
        return (2 * self.packed.shape[0], self.packed.shape[1])

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.d.nbytes  # 16 + 2 bytes per block

    @property
    def n_params(self) -> int:
        return 2 * self.packed.size

    def codes(self) -> np.ndarray:
        """The unpacked codes 0..15 as uint8, shape (in, out)."""
        blocks = self.packed.reshape(-1, Q_BLOCK // 2, self.packed.shape[1])  # (nb, 16, out)
        low, high = blocks & 0x0F, blocks >> 4
        return np.concatenate([low, high], axis=1).reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        d = np.repeat(self.d.astype(np.float32), Q_BLOCK, axis=0)
        return (self.codes().astype(np.float32) - 8.0) * d

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return _check_x(x, self.shape[0]) @ self.dequantize()


@dataclass(frozen=True, eq=False)
class LowRank:
    """$W \\approx AB$ with `a` (in, r) and `b` (r, out): $r(m+n)$ values instead of $mn$.

    `matmul` multiplies in two steps, $(xA)B$, which costs $r(m+n)$ multiply-adds per row
    instead of $mn$ — the reason to factorize at all.
    """

    a: np.ndarray  # (in, r)
    b: np.ndarray  # (r, out)

    def __post_init__(self) -> None:
        _check_dtype("a", self.a, (np.float32, np.float64))
        _check_dtype("b", self.b, (self.a.dtype.type,))
        if self.a.ndim != 2 or self.b.ndim != 2 or self.a.shape[1] != self.b.shape[0]:
            raise ValueError(
                f"a (in, r) and b (r, out) must be 2-D with matching r, got {self.a.shape} "
                f"and {self.b.shape}"
            )
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        check_array("a", self.a)
        check_array("b", self.b)

    @property
    def rank(self) -> int:
        return self.a.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.shape[0], self.b.shape[1])

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + self.b.nbytes

    @property
    def n_params(self) -> int:
        return self.a.size + self.b.size

    def dequantize(self) -> np.ndarray:
        return (self.a @ self.b).astype(np.float32)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        x = _check_x(x, self.shape[0])
        return (x @ self.a) @ self.b  # (..., r) then (..., out)


@dataclass(frozen=True, eq=False)
class NMSparse:
    """N:M structured sparsity along the input dimension (2:4 by default).

    In every group of `m` consecutive inputs of an output column only `n` weights are nonzero.
    `values` (in·n/m, out) holds them in order, and `indices` (same shape, uint8) their
    position 0..m-1 inside the group. `nbytes` counts the values in their dtype plus
    $\\lceil\\log_2 m\\rceil$ bits per index (2 bits for 2:4: NVIDIA's sparse tensor-core
    metadata); the indices are held unpacked in uint8 here for readability.
    """

    values: np.ndarray  # (in * n // m, out)
    indices: np.ndarray  # uint8 (in * n // m, out), strictly increasing within a group
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        for name in ("n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not (self.n <= self.m <= 256):
            raise ValueError(f"need n <= m <= 256, got n={self.n}, m={self.m}")
        _check_dtype("values", self.values, (np.float16, np.float32, np.float64))
        _check_dtype("indices", self.indices, (np.uint8,))
        if self.values.ndim != 2 or self.values.shape[0] % self.n:
            raise ValueError(
                f"values must be 2-D with a multiple of n={self.n} rows, got {self.values.shape}"
            )
        _check_shape("indices", self.indices, self.values.shape)
        check_array("values", self.values)
        idx = self.indices.reshape(-1, self.n, self.values.shape[1])  # (groups, n, out)
        if idx.size and (idx.max() >= self.m or np.any(np.diff(idx.astype(int), axis=1) <= 0)):
            raise ValueError(
                f"indices must be increasing positions in 0..{self.m - 1} within each group"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0] * self.m // self.n, self.values.shape[1])

    @property
    def nbytes(self) -> int:
        index_bits = max(1, math.ceil(math.log2(self.m)))
        return self.values.nbytes + _packed_bytes(self.indices.size, index_bits)

    @property
    def n_params(self) -> int:
        return int(np.count_nonzero(self.values))

    def dequantize(self) -> np.ndarray:
        n_in, n_out = self.shape
        groups = np.arange(self.values.shape[0]) // self.n  # group of each kept row
        rows = groups[:, None] * self.m + self.indices  # (kept, out) input index
        w = np.zeros((n_in, n_out), dtype=np.float32)
        np.put_along_axis(w, rows.astype(np.intp), self.values.astype(np.float32), axis=0)
        return w

    def matmul(self, x: np.ndarray) -> np.ndarray:
        # Reference kernel: scatter to dense. Sparse tensor cores skip the zeros instead.
        return _check_x(x, self.shape[0]) @ self.dequantize()


@dataclass(frozen=True, eq=False)
class Masked:
    """A dense weight with a keep-mask (unstructured sparsity): $W \\odot M$.

    Honest bytes: in a dense layout a pruned weight is still stored (as 0), so `nbytes` is the
    dense values' size — unstructured sparsity saves nothing until stored sparsely;
    `nbytes_csr` gives the size as CSR (float32 values, int32 column indices, int32 row
    pointers), which only wins above about 50 % sparsity.
    """

    w: np.ndarray  # float32 (in, out)
    mask: np.ndarray  # bool (in, out), True = keep

    def __post_init__(self) -> None:
        _check_dtype("w", self.w, (np.float32, np.float64))
        _check_dtype("mask", self.mask, (np.bool_,))
        if self.w.ndim != 2:
            raise ValueError(f"w must be 2-D (in, out), got shape {self.w.shape}")
        _check_shape("mask", self.mask, self.w.shape)
        check_array("w", self.w)

    @property
    def shape(self) -> tuple[int, int]:
        return self.w.shape

    @property
    def nbytes(self) -> int:
        # The mask folds into the zeros of w, so only the dense values need storing.
        return self.w.size * self.w.itemsize

    @property
    def nbytes_csr(self) -> int:
        nnz = int(np.count_nonzero(self.mask))
        return nnz * (self.w.itemsize + 4) + (self.w.shape[0] + 1) * 4

    @property
    def n_params(self) -> int:
        return int(np.count_nonzero(self.mask))

    def dequantize(self) -> np.ndarray:
        return np.where(self.mask, self.w, 0).astype(np.float32)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return _check_x(x, self.shape[0]) @ self.dequantize()


# Kinds whose every array field has the output column as its last axis: selecting output
# columns `idx` is `field[..., idx]` for all of them (what `TiedEmbedding.rows` relies on).
HEAD_KINDS = (Int8PerChannel, IntPerGroup, Q8_0, Q4_0)


@dataclass(frozen=True, eq=False)
class TiedEmbedding:
    r"""The tied token embedding $W_{te}$ (V, C), stored as the LM head's weight $W_{te}^\top$ (C, V).

    GPT-2 uses one matrix twice: as a lookup table (row $t$ is token $t$'s vector) and as the
    output head, logits $= x W_{te}^\top$. The head is read in full at every decode step — for
    the GPT-2 124M shape it is 31 % of all weight bytes — so a quantized model that leaves it in
    float32 still streams most of its bytes as float32. Here `head` is a quantized kind of shape
    (C, V) in the usual (in, out) layout: its output columns are vocabulary entries, so a
    per-column scale is one scale per token, and llama.cpp's blocks of 32 run along C.

    - `matmul_t(x)` $= x W_{te}^\top$ is `head.matmul(x)`: the logits, from the codes;
    - `rows(idx)` is the embedding lookup: it dequantizes only the head's columns `idx`.
    """

    head: Any  # one of HEAD_KINDS, shape (C, V)

    def __post_init__(self) -> None:
        if not isinstance(self.head, HEAD_KINDS):
            allowed = ", ".join(k.__name__ for k in HEAD_KINDS)
            raise TypeError(f"head must be one of {allowed} of shape (C, V), got {type(self.head).__name__}")

    @property
    def shape(self) -> tuple[int, int]:
        n_embd, vocab = self.head.shape
        return (vocab, n_embd)

    @property
    def nbytes(self) -> int:
        return self.head.nbytes

    @property
    def n_params(self) -> int:
        return self.head.n_params

    def dequantize(self) -> np.ndarray:
        return np.ascontiguousarray(self.head.dequantize().T)  # (V, C)

    def rows(self, idx: Any) -> np.ndarray:
        """Embedding vectors of token ids `idx` (any shape): float32 of shape idx.shape + (C,)."""
        idx = np.asarray(idx)
        flat = idx.reshape(-1)
        fields = {f: getattr(self.head, f) for f in self.head.__dataclass_fields__}
        picked = {f: (v[..., flat] if isinstance(v, np.ndarray) else v) for f, v in fields.items()}
        cols = type(self.head)(**picked).dequantize()  # (C, n): only the columns asked for
        return cols.T.reshape(*idx.shape, self.shape[1])

    def matmul_t(self, x: np.ndarray) -> np.ndarray:
        """$x W_{te}^\top$ for x (..., C): the tied head's logits (..., V)."""
        return self.head.matmul(x)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return _check_x(x, self.shape[0]) @ self.dequantize()


KINDS = (Int8PerChannel, IntPerGroup, Q8_0, Q4_0, LowRank, NMSparse, Masked, TiedEmbedding)


# The kinds a checkpoint may hold (minillm.io stores each as its arrays plus its class name;
# a TiedEmbedding's head is stored the same way under the field name "head").
KIND_CLASSES = ("Int8PerChannel", "IntPerGroup", "Q8_0", "Q4_0", "LowRank", "NMSparse", "Masked",
                "TiedEmbedding")
