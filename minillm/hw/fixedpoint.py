r"""Fixed-point arithmetic for integer-only inference, with TensorFlow Lite's exact semantics.

An int8 accelerator stores a real tensor $r$ as integers $q$ with a scale $S$ and a zero point $Z$
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"):

$$r = S\,(q - Z).$$

For a linear layer $y = x W + b$ with input $(S_1, Z_1)$, weights $(S_2, Z_2)$ and output
$(S_3, Z_3)$, substituting gives the integer recipe

$$q_3 = Z_3 + M \sum_k (q_{1,k} - Z_1)(q_{2,k} - Z_2) + M\,q_b,\qquad M = \frac{S_1 S_2}{S_3},$$

where the bias is stored as int32 with scale $S_1 S_2$ (so it adds straight into the accumulator),
the int8 x int8 products accumulate in int32, and the one real number left, $M$, is applied as a
fixed-point multiply. $M$ is written as $M = M_0 \, 2^{\text{shift}}$ with $M_0 \in [0.5, 1)$
stored in Q31 (an int32 $m_0 = \mathrm{round}(M_0 2^{31})$):

$$M \approx m_0 \, 2^{\text{shift} - 31}.$$

Applying it is two integer steps (gemmlowp):

1. `SaturatingRoundingDoublingHighMul(a, b)`: the high 32 bits of $2ab$, rounded, i.e.
   $\lfloor (ab + \nu) / 2^{31} \rceil_{\to 0}$ with nudge $\nu = 2^{30}$ if $ab \ge 0$ else
   $1 - 2^{30}$ and C's truncating division; ties go toward $+\infty$. Its one overflow,
   $a = b = -2^{31}$ (the true result $2^{31}$ does not fit), saturates to $2^{31} - 1$.
2. `RoundingDivideByPOT(x, n)`: $x / 2^n$ rounded to nearest, ties away from zero, by an
   arithmetic shift plus a correction: $(x \gg n) + [\,x \,\&\, (2^n-1) > \lfloor (2^n-1)/2 \rfloor
   + [x<0]\,]$.

`MultiplyByQuantizedMultiplier(x, m0, shift)` left-shifts $x$ by $\max(\text{shift}, 0)$ (in
int32: TFLite writes ``x * (1 << left_shift)``, which wraps on two's-complement hardware; we wrap
the same way), applies step 1 with $m_0$, then step 2 with $\max(-\text{shift}, 0)$.
Everything here is vectorised over NumPy int32 arrays using int64 intermediates.

Accumulator range: with zero points subtracted each product is at most $255^2$ in magnitude, so
an int32 accumulator cannot overflow for $K \le 33025$ inputs; beyond that it wraps modulo
$2^{32}$ as the hardware does (we reproduce the wraparound, we do not saturate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "QuantizedLinear",
    "affine_qparams",
    "dequantize",
    "int8_linear",
    "multiply_by_quantized_multiplier",
    "quantize",
    "quantize_bias",
    "quantize_multiplier",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _int_array(x: ArrayLike, name: str, lo: int, hi: int) -> np.ndarray:
    """`x` as an int64 array, checked to be integers within [lo, hi]."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got values in [{a.min()}, {a.max()}]")
    return a


def _wrap_int32(v: np.ndarray) -> np.ndarray:
    """Two's-complement wraparound of int64 values to int32 (what a 32-bit register keeps)."""
    return v.astype(np.int32)  # NumPy's int64 -> int32 cast keeps the low 32 bits


def quantize_multiplier(real: ArrayLike) -> tuple[int, int] | tuple[np.ndarray, np.ndarray]:
    """Split a real multiplier into a Q31 significand and a power of two (TFLite's QuantizeMultiplier).

    $M = q\\,2^{\\text{shift}}$ with $q \\in [0.5, 1)$ (``frexp``), $m_0 = \\mathrm{round}(q\\,2^{31})$
    (half away from zero); if rounding gives $2^{31}$ then $m_0 = 2^{30}$ and shift + 1;
    multipliers below about $2^{-31}$ (shift < -31) flush to ``(0, 0)``.

    Parameters
    ----------
    real : float or array_like of float
        Non-negative finite multiplier(s), e.g. $S_1 S_2 / S_3$ per output channel.

    Returns
    -------
    (m0, shift)
        Python ints for a scalar input, else two int32 arrays of the input's shape.

    >>> quantize_multiplier(0.001)
    (1099511628, -9)
    """
    try:
        r = np.asarray(real, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"real must be a finite number >= 0 (or an array of them), got {real!r}") from None
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"real must be finite and >= 0, got {real!r}")
    q, shift = np.frexp(r)  # r = q * 2**shift, q in [0.5, 1) (q = 0 for r = 0)
    shift = shift.astype(np.int64)
    q_fixed = np.floor(q * 2.0**31 + 0.5).astype(np.int64)  # exact scaling; round half away (q >= 0)
    carry = q_fixed == 2**31  # q rounded up to 1.0: renormalise
    q_fixed = np.where(carry, q_fixed // 2, q_fixed)
    shift = np.where(carry, shift + 1, shift)
    flush = shift < -31  # every bit would be shifted out: TFLite stores zero instead
    q_fixed = np.where(flush, 0, q_fixed)
    shift = np.where(flush, 0, shift)
    if r.ndim == 0:
        return int(q_fixed), int(shift)
    return q_fixed.astype(np.int32), shift.astype(np.int32)


def saturating_rounding_doubling_high_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 arrays (broadcasting).

    Returns $\\mathrm{trunc}((ab + \\nu)/2^{31})$ with $\\nu = 2^{30}$ for $ab \\ge 0$, else
    $1 - 2^{30}$; the single overflow case $a = b = -2^{31}$ returns $2^{31} - 1$.
    """
    a = _int_array(a, "a", INT32_MIN, INT32_MAX)
    b = _int_array(b, "b", INT32_MIN, INT32_MAX)
    ab = a * b  # |ab| <= 2^62: exact in int64
    num = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    # C++ `/` truncates toward zero; NumPy's >> floors, so shift the magnitude.
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: $x / 2^{\\text{exponent}}$, nearest, ties away from zero.

    `exponent` (0..31) broadcasts against `x` (int32 values).
    """
    x = _int_array(x, "x", INT32_MIN, INT32_MAX)
    n = _int_array(exponent, "exponent", 0, 31)
    mask = (np.int64(1) << n) - 1
    remainder = x & mask  # two's complement: the low bits, also for negative x
    threshold = (mask >> 1) + (x < 0)
    return ((x >> n) + (remainder > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(x: ArrayLike, m0: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier: $x \\cdot m_0 2^{\\text{shift}-31}$, rounded, in int32.

    Parameters
    ----------
    x : array_like of int
        int32 values (e.g. accumulators), any shape.
    m0 : int or array_like of int
        Q31 multiplier(s) from `quantize_multiplier`; broadcasts against `x` (per-channel: last axis).
    shift : int or array_like of int
        In [-31, 30]; positive values shift `x` left first (wrapping in int32, as TFLite does).

    Returns
    -------
    np.ndarray
        int32 array of the broadcast shape.

    >>> m0, shift = quantize_multiplier(0.001)
    >>> multiply_by_quantized_multiplier([1000, 1500, -1500, 123456], m0, shift)
    array([  1,   2,  -2, 123], dtype=int32)
    """
    x = _int_array(x, "x", INT32_MIN, INT32_MAX)
    m0 = _int_array(m0, "m0", INT32_MIN, INT32_MAX)
    shift = _int_array(shift, "shift", -31, 30)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = _wrap_int32(x << left)  # x * (1 << left_shift) in an int32 register
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), right)


# ----------------------------------------------------------------------------------------------
# Quantized tensors and an integer-only linear layer


def affine_qparams(x_min: ArrayLike, x_max: ArrayLike, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """int8 scale and zero point covering ``[x_min, x_max]`` (the range is widened to include 0).

    Asymmetric: $S = (x_{max} - x_{min}) / 255$, $Z = \\mathrm{round}(-128 - x_{min}/S)$ clipped to
    int8, so that 0.0 is exactly representable. Symmetric: $S = \\max(|x_{min}|, |x_{max}|)/127$,
    $Z = 0$ (the usual choice for weights, which makes the $Z_2$ terms vanish).
    Works elementwise (per-channel ranges give per-channel parameters).

    Returns
    -------
    (scale, zero_point)
        float64 and int64 arrays (0-d for scalar ranges).
    """
    lo = np.minimum(np.asarray(x_min, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(x_max, dtype=np.float64), 0.0)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo > hi):
        raise ValueError(f"x_min/x_max must be finite with x_min <= x_max, got {x_min!r}, {x_max!r}")
    tiny = np.finfo(np.float32).tiny  # an all-zero range still needs a positive scale
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / 127.0, tiny)
        return scale, np.zeros(scale.shape, dtype=np.int64)
    scale = np.maximum((hi - lo) / 255.0, tiny)
    zero_point = np.clip(np.round(-128.0 - lo / scale), -128, 127).astype(np.int64)
    return scale, zero_point


def quantize(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike) -> np.ndarray:
    """$q = \\mathrm{clip}(\\mathrm{round}(x/S) + Z, -128, 127)$ as int8 (round half to even)."""
    q = np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: ArrayLike, scale: ArrayLike, zero_point: ArrayLike) -> np.ndarray:
    """$r = S (q - Z)$ in float64."""
    return (np.asarray(q, dtype=np.float64) - zero_point) * scale


def quantize_bias(b: ArrayLike, x_scale: ArrayLike, w_scale: ArrayLike) -> np.ndarray:
    """int32 bias with scale $S_1 S_2$ (input scale times weight scale), so it adds to the accumulator."""
    qb = np.rint(np.asarray(b, dtype=np.float64) / (np.asarray(x_scale) * np.asarray(w_scale)))
    if qb.size and (qb.min() < INT32_MIN or qb.max() > INT32_MAX):
        raise ValueError("bias / (x_scale * w_scale) does not fit in int32; the scales are too small")
    return qb.astype(np.int32)


def int8_linear(x_q: ArrayLike, x_zp: int, w_q: ArrayLike, w_zp: ArrayLike, bias_i32: ArrayLike | None,
                multiplier: ArrayLike | tuple[ArrayLike, ArrayLike], out_zp: int,
                act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """An integer-only linear layer $y = xW + b$ as an int8 accelerator computes it.

    $$\\mathrm{acc}_j = \\sum_k (x_k - Z_x)(w_{kj} - Z_w) + b_j \\quad (\\text{int32}),\\qquad
    y_j = \\mathrm{clip}(Z_y + \\mathrm{MBQM}(\\mathrm{acc}_j, m_0, \\text{shift}), a_{min}, a_{max}).$$

    The sum is computed as the hardware does: the raw products $\\sum_k x_k w_{kj}$, then the
    zero-point corrections $-Z_w \\sum_k x_k - Z_x \\sum_k w_{kj} + K Z_x Z_w$ (Jacob et al. eq. 7;
    $\\sum_k w_{kj}$ is precomputed offline), all modulo $2^{32}$ like an int32 register.

    Parameters
    ----------
    x_q : array_like of int8, shape (..., K)
        Quantized inputs.
    x_zp : int
        Input zero point $Z_x$ in [-128, 127].
    w_q : array_like of int8, shape (K, N)
        Quantized weights in Conv1D layout ($y = x W$).
    w_zp : int or array_like, shape (N,)
        Weight zero point(s) (0 for symmetric weights).
    bias_i32 : array_like of int32, shape (N,), or None
        Bias quantized with scale $S_x S_w$ (see `quantize_bias`).
    multiplier : float, array (N,), or tuple (m0, shift)
        The real $M = S_x S_w / S_y$ (turned into ``(m0, shift)`` by `quantize_multiplier`) or a
        precomputed pair; per output channel when arrays.
    out_zp : int
        Output zero point $Z_y$.
    act_min, act_max : int
        Clamp range (a fused ReLU is ``act_min = out_zp``).

    Returns
    -------
    np.ndarray
        int8 array of shape (..., N).
    """
    x = _int_array(x_q, "x_q", -128, 127)
    w = _int_array(w_q, "w_q", -128, 127)
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"x_q (..., K) and w_q (K, N) do not match: {x.shape} and {w.shape}")
    K, N = w.shape
    zx = int(_int_array(x_zp, "x_zp", -128, 127))
    zw = _int_array(w_zp, "w_zp", -128, 127)
    zy = int(_int_array(out_zp, "out_zp", -128, 127))
    if zw.ndim > 1 or zw.size not in (1, N):
        raise ValueError(f"w_zp must be a scalar or shape ({N},), got shape {zw.shape}")
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"need -128 <= act_min <= act_max <= 127, got {act_min}, {act_max}")
    # int8 products summed in float64 are exact (|sum| <= K * 2^14 << 2^53) and use BLAS.
    raw = np.matmul(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    acc = raw - zw * x.sum(axis=-1, keepdims=True) - zx * w.sum(axis=0) + K * zx * zw
    if bias_i32 is not None:
        bias = _int_array(bias_i32, "bias_i32", INT32_MIN, INT32_MAX)
        if bias.shape != (N,):
            raise ValueError(f"bias_i32 must have shape ({N},), got {bias.shape}")
        acc = acc + bias
    acc = _wrap_int32(acc)  # the accumulator register is 32 bits wide
    if isinstance(multiplier, tuple):
        m0, shift = multiplier
    else:
        m0, shift = quantize_multiplier(multiplier)
    y = multiply_by_quantized_multiplier(acc, m0, shift).astype(np.int64) + zy
    return np.clip(y, act_min, act_max).astype(np.int8)


@dataclass(frozen=True)
class QuantizedLinear:
    """A float linear layer $y = xW + b$ turned into integers for `int8_linear`.

    Build with `from_float`; call with int8 inputs to get int8 outputs, or use `forward` for a
    float-in, float-out comparison with the original layer.
    """

    w_q: np.ndarray  # (K, N) int8
    w_scale: np.ndarray  # () or (N,) float64
    w_zp: np.ndarray  # () or (N,) int64 (zero for symmetric weights)
    bias_q: np.ndarray | None  # (N,) int32 with scale x_scale * w_scale
    x_scale: float
    x_zp: int
    y_scale: float
    y_zp: int
    m0: np.ndarray  # Q31 multipliers, () or (N,)
    shift: np.ndarray

    @classmethod
    def from_float(cls, w: ArrayLike, b: ArrayLike | None, x_range: tuple[float, float], y_range: tuple[float, float],
                   per_channel: bool = True) -> QuantizedLinear:
        """Quantize weights symmetrically (per output channel or per tensor), bias to int32.

        `x_range` and `y_range` are the calibrated (min, max) of the layer's inputs and outputs;
        activations get asymmetric int8 parameters.
        """
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(f"w must be 2-D (K, N), got shape {w.shape}")
        if per_channel:
            w_scale, w_zp = affine_qparams(w.min(axis=0), w.max(axis=0), symmetric=True)
        else:
            w_scale, w_zp = affine_qparams(w.min(), w.max(), symmetric=True)
        x_scale, x_zp = affine_qparams(*x_range)
        y_scale, y_zp = affine_qparams(*y_range)
        bias_q = None if b is None else quantize_bias(b, x_scale, w_scale)
        m0, shift = quantize_multiplier(np.asarray(x_scale * w_scale / y_scale))
        return cls(quantize(w, w_scale, w_zp), w_scale, w_zp, bias_q, float(x_scale), int(x_zp),
                   float(y_scale), int(y_zp), np.asarray(m0), np.asarray(shift))

    def __call__(self, x_q: ArrayLike) -> np.ndarray:
        """int8 inputs (..., K) -> int8 outputs (..., N), integers only."""
        return int8_linear(x_q, self.x_zp, self.w_q, self.w_zp, self.bias_q,
                           (self.m0, self.shift), self.y_zp)

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Float inputs -> quantize -> integer layer -> dequantized float64 outputs."""
        y_q = self(quantize(x, self.x_scale, self.x_zp))
        return dequantize(y_q, self.y_scale, self.y_zp)
