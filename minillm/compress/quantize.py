r"""Quantization: store a weight as small integers and a scale.

A real value $x$ is represented by an integer code $q$ with a scale $s$ and a zero point $z$:

$$q = \operatorname{clamp}\!\left(z + \operatorname{round}(x / s),\ q_{\min},\ q_{\max}\right),
\qquad \hat x = s\,(q - z).$$

Codes are signed, $q \in [-2^{b-1}, 2^{b-1}-1]$ for $b$ bits (2..8), and held in int8
(PyTorch's unsigned quint8, $[0, 255]$, is the same map with $q$ and $z$ shifted by 128).
Inside the range the error is at most half a step, $|x - \hat x| \le s/2$.

*Symmetric* quantization has $z = 0$ and $s = \max|x| / q_{\max}$ (``convention="absmax"``,
the default: $\pm\max|x|$ map exactly to $\pm q_{\max}$, as in llama.cpp and LLM.int8()); or
PyTorch's observers' $s = \max|x| / ((q_{\max} - q_{\min})/2)$ (``convention="torch"``,
$127.5$ for 8 bits). *Affine* quantization uses the whole range, as PyTorch does:
$$s = \frac{\max(x_{\max}, 0) - \min(x_{\min}, 0)}{q_{\max} - q_{\min}}, \qquad
z = \operatorname{clamp}(q_{\min} - \operatorname{round}(\min(x_{\min}, 0)/s)),$$
the range forced to contain 0 so that 0 is exact. Every scale is at least
$\epsilon = 2^{-23}$ (float32 eps), so an all-zero input gives zero codes, not NaN.

Rounding is round-half-to-even (`np.rint`, like `torch.round` and C's `nearbyint`), and the
code is computed as PyTorch does, $x \cdot (1/s)$ in float32, so our codes match
`torch.quantize_per_tensor` / `torch.fake_quantize_per_*_affine` bit for bit.

Granularity: one scale for the tensor (``axis=None``), one per index of ``axis`` (PyTorch's
``ch_axis``; for a Conv1D weight (in, out), ``axis=1`` gives one scale per output column), or
one per group of ``group_size`` consecutive entries along axis 0 — the input dimension of a
Conv1D weight — and per index of the other axes.

The llama.cpp formats `q8_0` / `q4_0` follow its reference C code exactly (round half *away*
from zero for Q8_0; Q4_0's signed-maximum trick), in blocks of 32 along axis 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import numpy as np

from ..kinds import (
    Q4_0,
    Q8_0,
    Q_BLOCK,
    Int8PerChannel,
    IntPerGroup,
    TiedEmbedding,
    block_matmul_names,
    check_array,
    check_bits,
)

EPS = np.float32(np.finfo(np.float32).eps)  # PyTorch observers' smallest scale
CONVENTIONS = ("absmax", "torch")


def qrange(bits: int) -> tuple[int, int]:
    """Signed code range $[-2^{b-1}, 2^{b-1} - 1]$ for `bits` in 2..8."""
    bits = check_bits(bits)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass(frozen=True, eq=False)
class QTensor:
    """Integer codes and what is needed to turn them back into reals.

    `q` (int8, the input's shape), `scale` (float32) and `zero_point` (int32, zeros when
    symmetric) have shape () per tensor, (n,) per channel of `axis`, or
    (shape[0] // group_size, *shape[1:]) per group.
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    axis: int | None = None
    group_size: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.q.shape

    def scale_per_element(self) -> np.ndarray:
        """The scale that applies to each code, broadcast to the codes' shape (the step size)."""
        s = _expand(self.scale, self.q.ndim, self.axis, self.group_size)
        return np.broadcast_to(s, self.q.shape)


# Granularity: how a per-tensor / per-channel / per-group parameter array meets the data.


def _check_layout(x: np.ndarray, axis: Any, group_size: Any) -> tuple[int | None, int | None]:
    if axis is not None and group_size is not None:
        raise ValueError(
            f"give axis or group_size, not both (got axis={axis!r}, group_size={group_size!r})"
        )
    if axis is not None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"axis must be an int or None, got {axis!r}")
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"axis must be in [{-x.ndim}, {x.ndim - 1}] for shape {x.shape}, "
                             f"got {axis}")
        return int(axis) % x.ndim, None
    if group_size is not None:
        g = group_size
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
            raise ValueError(f"group_size must be a positive int, got {g!r}")
        if x.ndim < 1 or x.shape[0] % g:
            raise ValueError(
                f"group_size={g} must divide axis 0 (the input dimension) of x, got shape {x.shape}"
            )
        return None, int(g)
    return None, None


def _reduce(x: np.ndarray, fn: Any, axis: int | None, group_size: int | None) -> np.ndarray:
    """Apply a reduction (np.min / np.max) at the granularity: () / (n,) / (groups, *rest)."""
    if group_size is not None:
        return fn(x.reshape(x.shape[0] // group_size, group_size, *x.shape[1:]), axis=1)
    if axis is not None:
        return fn(x, axis=tuple(i for i in range(x.ndim) if i != axis))
    return np.asarray(fn(x))


def _param_shape(shape: tuple[int, ...], axis: int | None, group_size: int | None) -> tuple:
    """Shape of scale / zero_point: () per tensor, (n,) per channel, (groups, *rest) per group."""
    if group_size is not None:
        return (shape[0] // group_size, *shape[1:])
    if axis is not None:
        return (shape[axis],)
    return ()


def _expand(p: np.ndarray, x_ndim: int, axis: int | None, group_size: int | None) -> np.ndarray:
    """Broadcast a parameter array back against the data it describes."""
    if group_size is not None:
        return np.repeat(p, group_size, axis=0)  # one value per input, per other index
    if axis is not None:
        return p.reshape([-1 if i == axis else 1 for i in range(x_ndim)])
    return p


def qparams(
    x_min: Any,
    x_max: Any,
    bits: int = 8,
    symmetric: bool = True,
    convention: str = "absmax",
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int32) from a range, computed in float32 as PyTorch does.

    The range is first widened to contain 0. See the module docstring for the formulas.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    qmin, qmax = qrange(bits)
    lo = np.minimum(np.asarray(x_min, dtype=np.float32), np.float32(0))
    hi = np.maximum(np.asarray(x_max, dtype=np.float32), np.float32(0))
    if symmetric:
        amax = np.maximum(-lo, hi)
        denom = qmax if convention == "absmax" else (qmax - qmin) / 2
        scale = np.maximum(amax / np.float32(denom), EPS)
        zero_point = np.zeros(scale.shape, dtype=np.int32)
    else:
        scale = np.maximum((hi - lo) / np.float32(qmax - qmin), EPS)
        zero_point = np.clip(qmin - np.rint(lo / scale), qmin, qmax).astype(np.int32)
    return scale.astype(np.float32), zero_point


def quantize_with(
    x: Any,
    scale: Any,
    zero_point: Any,
    bits: int = 8,
    axis: int | None = None,
    group_size: int | None = None,
) -> QTensor:
    """Quantize `x` with given parameters: $q = \\mathrm{clamp}(z + \\mathrm{rint}(x (1/s)))$.

    `scale` / `zero_point` must have the shape of the chosen granularity (see `QTensor`).
    """
    x = check_array("x", x).astype(np.float32, copy=False)
    axis, group_size = _check_layout(x, axis, group_size)
    qmin, qmax = qrange(bits)
    scale = check_array("scale", scale).astype(np.float32)
    zero_point = check_array("zero_point", zero_point).astype(np.int32)
    want = _param_shape(x.shape, axis, group_size)
    if scale.shape != want or zero_point.shape != want:
        raise ValueError(f"scale and zero_point must have shape {want} for x of shape {x.shape}, "
                         f"got {scale.shape} and {zero_point.shape}")
    if np.any(scale <= 0):
        raise ValueError(f"scale must be > 0, got a value {scale[scale <= 0].ravel()[0]}")
    inv_scale = np.float32(1) / _expand(scale, x.ndim, axis, group_size)
    zp = _expand(zero_point, x.ndim, axis, group_size).astype(np.float32)
    q = np.clip(np.rint(x * inv_scale) + zp, qmin, qmax).astype(np.int8)
    return QTensor(q, scale, zero_point, int(bits), axis, group_size)


def quantize(
    x: Any,
    bits: int = 8,
    symmetric: bool = True,
    axis: int | None = None,
    group_size: int | None = None,
    convention: str = "absmax",
) -> QTensor:
    """Quantize `x` to `bits`-bit signed codes with a min/max-derived scale.

    Parameters
    ----------
    x : array_like
        Finite real values (computed in float32).
    bits : int
        Code width, 2..8.
    symmetric : bool
        Zero point 0 and $s = \\max|x|/q_{\\max}$ (or PyTorch's $/127.5$, see `convention`);
        otherwise affine with the full $[x_{\\min}, x_{\\max}]$ range (widened to contain 0).
    axis : int, optional
        Keep one scale per index of this axis (PyTorch's ``ch_axis``).
    group_size : int, optional
        One scale per `group_size` consecutive entries along axis 0 (the input dimension of a
        Conv1D weight), per index of the other axes. Exclusive with `axis`.
    convention : {"absmax", "torch"}
        Symmetric scale $\\max|x|/q_{\\max}$ (default) or $\\max|x|/((q_{\\max}-q_{\\min})/2)$.

    Examples
    --------
    >>> import numpy as np
    >>> qt = quantize(np.array([-1, -.5, 0, .3, 2]), convention="torch")
    >>> qt.q
    array([-64, -32,   0,  19, 127], dtype=int8)
    """
    x = check_array("x", x).astype(np.float32, copy=False)
    axis, group_size = _check_layout(x, axis, group_size)
    if x.size == 0:
        raise ValueError(f"x must not be empty, got shape {x.shape}")
    if not isinstance(symmetric, (bool, np.bool_)):  # bool("no") would be True
        raise TypeError(f"symmetric must be a bool (True or False), got {symmetric!r}")
    scale, zero_point = qparams(
        _reduce(x, np.min, axis, group_size),
        _reduce(x, np.max, axis, group_size),
        bits,
        bool(symmetric),
        convention,
    )
    return quantize_with(x, scale, zero_point, bits, axis, group_size)


def dequantize(qt: QTensor) -> np.ndarray:
    """$\\hat x = s\\,(q - z)$ as float32, broadcasting the parameters to the codes."""
    if not isinstance(qt, QTensor):
        raise TypeError(f"qt must be a QTensor, got {type(qt).__name__}")
    s = _expand(qt.scale, qt.q.ndim, qt.axis, qt.group_size)
    z = _expand(qt.zero_point, qt.q.ndim, qt.axis, qt.group_size)
    return ((qt.q.astype(np.float32) - z.astype(np.float32)) * s).astype(np.float32)


def fake_quantize(
    x: Any,
    scale: Any,
    zero_point: Any,
    bits: int = 8,
    axis: int | None = None,
    group_size: int | None = None,
) -> np.ndarray:
    """Quantize then dequantize (float32 in, float32 out), as `torch.fake_quantize_per_*_affine`.

    Used to simulate quantized activations inside a float forward pass.
    """
    return dequantize(quantize_with(x, scale, zero_point, bits, axis, group_size))


# Calibration: observe activations over batches, then freeze their quantization parameters.


class MinMaxObserver:
    """Running min and max over every batch seen (per tensor, or per index of `axis`).

    Call `update(x)` on each calibration batch, then `qparams()` for (scale, zero_point).
    Defaults to affine (activations after GELU are far from symmetric).
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        axis: int | None = None,
        convention: str = "absmax",
    ) -> None:
        check_bits(bits)
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.bits, self.symmetric, self.axis, self.convention = bits, symmetric, axis, convention
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def update(self, x: Any) -> MinMaxObserver:
        x = check_array("x", x)
        x = x.astype(np.result_type(x.dtype, np.float32), copy=False)  # min/max are exact
        if x.size == 0:
            raise ValueError(f"x must not be empty, got shape {x.shape}")
        axis, _ = _check_layout(x, self.axis, None)
        lo, hi = _reduce(x, np.min, axis, None), _reduce(x, np.max, axis, None)
        if self.min is not None and self.min.shape != lo.shape:
            raise ValueError(f"x has {lo.shape} channels along axis {self.axis}, "
                             f"earlier batches had {self.min.shape}")
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)
        return self

    def qparams(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale float32, zero_point int32) for the range seen so far."""
        if self.min is None:
            raise ValueError("observer has seen no data: call update(x) first")
        return qparams(self.min, self.max, self.bits, self.symmetric, self.convention)


class PercentileObserver:
    """Clip the range at a percentile of the values seen, ignoring rare outliers.

    Keeps every value it is shown (memory grows with the calibration set; a few thousand
    activation vectors are fine) and computes `np.percentile` (linear interpolation) at the
    end: the range is [P(100 - p), P(p)] for affine, $\\pm P_{|x|}(p)$ for symmetric.
    Values outside are clamped when quantized.
    """

    def __init__(self, percentile: float = 99.99, bits: int = 8, symmetric: bool = False) -> None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not (
            50 < percentile <= 100
        ):
            raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
        check_bits(bits)
        self.percentile, self.bits, self.symmetric = float(percentile), bits, symmetric
        self._values: list[np.ndarray] = []

    def update(self, x: Any) -> PercentileObserver:
        x = check_array("x", x)
        x = x.astype(np.result_type(x.dtype, np.float32))  # a copy: the caller may reuse x
        if x.size == 0:
            raise ValueError(f"x must not be empty, got shape {x.shape}")
        self._values.append(x.ravel())
        return self

    def range(self) -> tuple[float, float]:
        """The clipping range (low, high) chosen from the values seen."""
        if not self._values:
            raise ValueError("observer has seen no data: call update(x) first")
        v = np.concatenate(self._values)
        p = self.percentile
        if self.symmetric:
            a = float(np.percentile(np.abs(v), p))
            return -a, a
        return float(np.percentile(v, 100 - p)), float(np.percentile(v, p))

    def qparams(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.range()
        return qparams(lo, hi, self.bits, self.symmetric)


# llama.cpp block formats (ggml-quants.c, quantize_row_q8_0_ref / quantize_row_q4_0_ref).


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's `roundf`: round to nearest, ties away from zero (exact: `v - trunc(v)` is exact)."""
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0).astype(v.dtype)


def _blocks(x: Any, name: str = "x") -> np.ndarray:
    """x (K, *rest) as float32 blocks (K/32, 32, *rest)."""
    x = check_array(name, x).astype(np.float32, copy=False)
    if x.ndim < 1 or x.shape[0] % Q_BLOCK or x.shape[0] == 0:
        raise ValueError(
            f"{name} must have axis 0 (the input dimension) a positive multiple of 32, "
            f"got shape {x.shape}"
        )
    return x.reshape(x.shape[0] // Q_BLOCK, Q_BLOCK, *x.shape[1:])


def _inverse(d: np.ndarray) -> np.ndarray:
    """llama.cpp's `id = d ? 1.0f/d : 0.0f` in float32.

    One deviation: for d below ~3e-39 (float32 subnormals), 1/d overflows to inf and C would
    cast inf to an integer (undefined); we use 0 there, i.e. zero codes. Such a d is 0 in
    float16 anyway, so the block dequantizes to zeros either way.
    """
    safe = np.where(d != 0, d, np.float32(1))
    with np.errstate(over="ignore"):
        inv = np.float32(1) / safe
    return np.where((d != 0) & np.isfinite(inv), inv, np.float32(0)).astype(np.float32)


def _to_fp16(d: np.ndarray, what: str, q_max: int) -> np.ndarray:
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
        d16 = d.astype(np.float16)  # round to nearest even, as GGML_FP32_TO_FP16
    if not np.all(np.isfinite(d16)):
        amax = float(np.max(np.abs(d))) * q_max
        raise ValueError(
            f"{what}: x holds |x| = {amax:.4g}, whose block scale overflows float16 (|d| > 65504); "
            f"allowed: |x| up to about {65504 * q_max:.3g}"
        )
    return d16


def q8_0(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp Q8_0: per block of 32, $d = \\max|x|/127$, $q = \\mathrm{roundf}(x/d)$.

    Returns ``(qs, d)``: int8 codes of x's shape and float16 scales (K/32, *rest). The
    float32 $d$ quantizes; the stored float16 $d$ dequantizes.

    >>> import numpy as np
    >>> x = np.zeros(32, np.float32); x[:6] = [127, .5, 1.5, 2.5, -.5, -2.5]
    >>> qs, d = q8_0(x)
    >>> qs[:6], d
    (array([127,   1,   2,   3,  -1,  -3], dtype=int8), array([1.], dtype=float16))
    """
    blocks = _blocks(x)  # (nb, 32, *rest)
    amax = np.max(np.abs(blocks), axis=1)  # (nb, *rest)
    d = (amax / np.float32(127)).astype(np.float32)
    qs = round_half_away(blocks * _inverse(d)[:, None])  # |q| <= 127 by construction
    return qs.astype(np.int8).reshape(np.shape(x)), _to_fp16(d, "q8_0", 127)


def q4_0(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp Q4_0: $d = m / -8$ with $m$ the signed value of largest magnitude (first on
    ties), $q = \\min(15, \\lfloor x/d + 8.5 \\rfloor)$ in 0..15.

    Returns ``(qs, d)``: uint8 codes 0..15 (unpacked, x's shape) and float16 scales.

    >>> import numpy as np
    >>> x = np.zeros(32, np.float32); x[:6] = [-8, 7, .5, -.5, 1.5, 3.2]
    >>> qs, d = q4_0(x)
    >>> qs[:6], d
    (array([ 0, 15,  9,  8, 10, 11], dtype=uint8), array([1.], dtype=float16))
    """
    blocks = _blocks(x)  # (nb, 32, *rest)
    first_max = np.argmax(np.abs(blocks), axis=1)[:, None]  # argmax returns the first on ties
    m = np.take_along_axis(blocks, first_max, axis=1)[:, 0]  # (nb, *rest), signed
    d = (m / np.float32(-8)).astype(np.float32)
    # The sign flip makes the largest-magnitude value land on code 0 (i.e. -8 after the
    # offset), so the asymmetric range -8..7 is used in full on that side.
    v = blocks * _inverse(d)[:, None] + np.float32(8.5)  # float32, in [0.5, 16.5] up to rounding
    qs = np.minimum(15, np.trunc(v)).astype(np.uint8)
    return qs.reshape(np.shape(x)), _to_fp16(d, "q4_0", 8)


def _check_codes(qs: Any, d: Any, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    qs, d = np.asarray(qs), np.asarray(d)
    if qs.dtype != dtype:
        raise TypeError(f"qs must have dtype {np.dtype(dtype).name}, got {qs.dtype}")
    if d.dtype != np.float16:
        raise TypeError(f"d must have dtype float16, got {d.dtype}")
    if qs.ndim < 1 or qs.shape[0] % Q_BLOCK or d.shape != (qs.shape[0] // Q_BLOCK, *qs.shape[1:]):
        raise ValueError(f"qs (K, ...) with K a multiple of 32 and d (K/32, ...) expected, "
                         f"got {qs.shape} and {d.shape}")
    return qs, d


def dequantize_q8_0(qs: Any, d: Any) -> np.ndarray:
    """$\\hat x = q \\cdot d$ with the float16 $d$ widened to float32."""
    qs, d = _check_codes(qs, d, np.int8)
    return qs.astype(np.float32) * np.repeat(d.astype(np.float32), Q_BLOCK, axis=0)


def dequantize_q4_0(qs: Any, d: Any) -> np.ndarray:
    """$\\hat x = (q - 8) \\cdot d$ for unpacked codes 0..15."""
    qs, d = _check_codes(qs, d, np.uint8)
    if qs.size and qs.max() > 15:
        raise ValueError(f"qs must hold 4-bit codes 0..15, got {qs.max()}")
    return (qs.astype(np.float32) - 8) * np.repeat(d.astype(np.float32), Q_BLOCK, axis=0)


def pack_q4_0(qs: Any) -> np.ndarray:
    """Two codes per byte: byte $j$ of a block = code $j$ (low nibble) | code $j+16$ (high).

    uint8 (K, *rest) -> uint8 (K/2, *rest).
    """
    qs = np.asarray(qs)
    if qs.dtype != np.uint8 or (qs.size and qs.max() > 15):
        raise ValueError(f"qs must be uint8 codes 0..15, got dtype {qs.dtype}")
    if qs.ndim < 1 or qs.shape[0] % Q_BLOCK:
        raise ValueError(f"qs must have axis 0 a multiple of 32, got shape {qs.shape}")
    b = qs.reshape(qs.shape[0] // Q_BLOCK, Q_BLOCK, *qs.shape[1:])
    packed = b[:, : Q_BLOCK // 2] | (b[:, Q_BLOCK // 2 :] << 4)  # (nb, 16, *rest)
    return packed.reshape(qs.shape[0] // 2, *qs.shape[1:])


def unpack_q4_0(packed: Any) -> np.ndarray:
    """Inverse of `pack_q4_0`: uint8 (K/2, *rest) -> codes 0..15 uint8 (K, *rest)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim < 1 or packed.shape[0] % (Q_BLOCK // 2):
        raise ValueError(f"packed must be uint8 with axis 0 a multiple of 16, got dtype "
                         f"{packed.dtype}, shape {packed.shape}")
    b = packed.reshape(packed.shape[0] // (Q_BLOCK // 2), Q_BLOCK // 2, *packed.shape[1:])
    codes = np.concatenate([b & 0x0F, b >> 4], axis=1)  # (nb, 32, *rest)
    return codes.reshape(2 * packed.shape[0], *packed.shape[1:])


# Weights -> weight kinds.

_GROUP_METHOD = re.compile(r"int([2-8])-g([1-9][0-9]*)")
METHODS = ("int8", "q8_0", "q4_0", "int<b>-g<G> (e.g. int4-g32)")


def _fp16_at_least(s: np.ndarray) -> np.ndarray:
    """The smallest float16 >= s: rounding a scale *up* keeps every code inside its range."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported below
        s16 = s.astype(np.float16)
    low = s16.astype(np.float32) < s
    s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    if not np.all(np.isfinite(s16)):
        raise ValueError("a group scale overflows float16 (> 65504); the weight is too large")
    return s16


def quantize_weight(w: Any, method: str) -> Any:
    """Turn a dense Conv1D weight (in, out) into a weight kind.

    Methods
    -------
    ``"int8"``
        `Int8PerChannel`: symmetric, $s_o = \\max_i |W_{io}| / 127$ per output column.
    ``"q8_0"``, ``"q4_0"``
        llama.cpp blocks of 32 inputs (`Q8_0`, `Q4_0`); `in` must be a multiple of 32.
    ``"int<b>-g<G>"``, e.g. ``"int4-g32"``
        `IntPerGroup`: affine $b$-bit codes per group of $G$ inputs per output column, with a
        float16 scale rounded *up* to the next float16 (so no code is clipped) and a $b$-bit
        zero point: 4.625 bits per weight for int4-g32. Affine rather than symmetric because a
        group of 32 weights is rarely centred on 0, and 16 levels are too few to waste.
    """
    w = check_array("w", w, ndim=2)
    if method == "int8":
        qt = quantize(w, bits=8, symmetric=True, axis=1)
        return Int8PerChannel(qt.q, qt.scale)
    if method == "q8_0":
        return Q8_0(*q8_0(w))
    if method == "q4_0":
        qs, d = q4_0(w)
        return Q4_0(pack_q4_0(qs), d)
    match = _GROUP_METHOD.fullmatch(method) if isinstance(method, str) else None
    if match is None:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    bits, g = int(match[1]), int(match[2])
    w32 = w.astype(np.float32)
    _check_layout(w32, None, g)
    qmin, qmax = qrange(bits)
    lo = np.minimum(_reduce(w32, np.min, None, g), 0)
    scale, _ = qparams(lo, _reduce(w32, np.max, None, g), bits, symmetric=False)
    scale16 = _fp16_at_least(scale)
    # Zero point recomputed for the stored scale, so codes and parameters agree exactly.
    zero_point = np.clip(qmin - np.rint(lo / scale16.astype(np.float32)), qmin, qmax)
    qt = quantize_with(w32, scale16.astype(np.float32), zero_point, bits, group_size=g)
    return IntPerGroup(qt.q, scale16, zero_point.astype(np.int8), bits, g)


def quantize_params(params: dict[str, Any], method: str, skip: tuple[str, ...] = ()) -> dict:
    """A new params dict whose matmul weights — every block's and the tied LM head — are quantized.

    Every name ending in ``c_attn.weight``, ``c_proj.weight`` or ``c_fc.weight``, and the token
    embedding ``wte.weight`` (which is also the LM head, so it becomes a
    `minillm.kinds.TiedEmbedding` whose head $W_{te}^\\top$ is quantized per vocabulary entry),
    unless it matches a `skip` pattern (e.g. ``("h.0.*",)``, or ``("wte.weight",)`` to keep the
    head in float32). Position embeddings, LayerNorms and biases stay float32 and are shared
    with `params`, not copied.
    """
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    names = block_matmul_names(params, skip)
    wte = params.get("wte.weight")
    if isinstance(wte, np.ndarray) and not any(fnmatch("wte.weight", p) for p in skip):
        names.append("wte.weight")
    out = dict(params)
    for name in names:
        try:
            if name == "wte.weight":
                out[name] = TiedEmbedding(quantize_weight(wte.T, method))  # the head, (C, V)
            else:
                out[name] = quantize_weight(params[name], method)
        except (TypeError, ValueError) as e:  # say which weight failed
            raise type(e)(f"{name}: {e}") from None
    return out


# Integer-only inference: a float layer run with int8 inputs and weights, int32 accumulators.


def calibrated_int8_linear(
    w: Any,
    b: Any,
    x_calibration: Any,
    percentile: float | None = None,
    per_channel: bool = True,
) -> Any:
    """Calibrate a float layer $y = xW + b$ and return it as an integer-only layer.

    The input and output ranges are observed over `x_calibration` (one array (..., in) or an
    iterable of batches) with `MinMaxObserver`, or `PercentileObserver(percentile)` if given;
    the layer itself is `minillm.hw.fixedpoint.QuantizedLinear` (symmetric int8 weights, per
    output channel by default; affine int8 activations; int32 bias and accumulators; TFLite's
    fixed-point output multiplier). Call the result on int8 inputs, or `.forward(x)` on floats.
    """
    from ..hw.fixedpoint import QuantizedLinear  # integer arithmetic lives with the hardware

    w = check_array("w", w, ndim=2).astype(np.float64)
    b = None if b is None else check_array("b", b, ndim=1).astype(np.float64)
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape ({w.shape[1]},), got {b.shape}")
    batches = [x_calibration] if isinstance(x_calibration, np.ndarray) else list(x_calibration)
    if not batches:
        raise ValueError("x_calibration must hold at least one batch")

    def observer() -> Any:
        return MinMaxObserver() if percentile is None else PercentileObserver(percentile)

    x_obs, y_obs = observer(), observer()
    for x in batches:
        x = check_array("x_calibration", x).astype(np.float64)
        if x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"x_calibration batches must have shape (..., {w.shape[0]}), "
                             f"got {x.shape}")
        x_obs.update(x)
        y_obs.update(x @ w + (0 if b is None else b))

    def observed(obs: Any) -> tuple[float, float]:
        return (float(obs.min), float(obs.max)) if percentile is None else obs.range()

    return QuantizedLinear.from_float(w, b, observed(x_obs), observed(y_obs), per_channel)
