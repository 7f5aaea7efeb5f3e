r"""Number formats: rounding float32 to bfloat16, float16 and the two float8 formats, bit by bit.

A binary floating-point format with $E$ exponent bits, $m$ mantissa (fraction) bits and bias $b$
stores a sign $s$, a biased exponent $e$ and a fraction $f \in [0, 2^m)$; its value is

$$x = (-1)^s \, 2^{e - b} \left(1 + \frac{f}{2^m}\right) \quad (e \ge 1), \qquad
  x = (-1)^s \, 2^{1 - b} \, \frac{f}{2^m} \quad (e = 0,\ \text{subnormal}).$$

Between $2^k$ and $2^{k+1}$ the representable numbers are $2^{k-m}$ apart, so the relative spacing
is the machine epsilon $\varepsilon = 2^{-m}$ (the gap between 1 and the next number). The
smallest normal number is $2^{1-b}$, the smallest subnormal $2^{1-b-m}$.

**Rounding by integer arithmetic.** A finite float32 is the bit pattern $u$ (sign, 8-bit exponent,
23-bit fraction) and its magnitude grows monotonically with $u$. Keeping $m$ of the 23 fraction bits
and rounding to nearest, ties to even, is an integer operation on $u$ with $k = 23 - m$ dropped bits:

$$u' = \left(u + 2^{k-1} - 1 + \left\lfloor u / 2^k \right\rfloor \bmod 2\right)
       \; \& \; \lnot(2^k - 1).$$

A carry out of the fraction bumps the exponent, which is exactly right (1.11…1 rounds up to 10.0).
For bfloat16 ($k = 16$) this one line is the whole conversion, subnormals included, because
bfloat16 has float32's exponent range. Formats with a smaller range (float16, float8) need a second
path below their smallest normal number, where the grid is uniform with step $2^{1-b-m}$; there we
round the float32 significand shifted right by the (larger) number of bits that fall off.

**Overflow** follows ml_dtypes and JAX: a result larger than the format's maximum becomes $\pm\infty$
for bfloat16, float16 and float8_e5m2, and NaN for float8_e4m3fn, which has no infinity (its
all-ones exponent still holds normal numbers, up to 448; only $S.1111.111$ is NaN). PyTorch's
float8 casts saturate to $\pm448$ instead; we do not. NaN stays NaN (returned as the quiet NaN
with the input's sign; payloads are not kept).

The input is first converted to float32 (a float64 input is thus rounded twice, as
``x.astype(np.float32).astype(fmt)`` would be). The result is float32 holding values exactly
representable in the format, so later arithmetic can be done in float32 while storage is
emulated in the narrow format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["FORMATS", "FloatFormat", "decode_bits", "machine_epsilon", "round_to"]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format.

    Attributes
    ----------
    name : str
        Name as used by ml_dtypes / NumPy (``"bfloat16"``, ``"float8_e4m3fn"`` ...).
    exponent_bits, mantissa_bits : int
        $E$ and $m$ (the mantissa excludes the implicit leading 1).
    bias : int
        Exponent bias $b$.
    has_inf : bool
        Whether the all-ones exponent encodes infinities (IEEE style). ``False`` for e4m3fn.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    has_inf: bool

    @property
    def bits(self) -> int:
        """Total width $1 + E + m$."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def max_exponent(self) -> int:
        """Largest unbiased exponent of a finite number."""
        top = 2**self.exponent_bits - 1  # the all-ones exponent field
        return (top - 1 if self.has_inf else top) - self.bias

    @property
    def max(self) -> float:
        """Largest finite value: $(2 - 2^{-m}) 2^{e_{max}}$, or $(2 - 2^{1-m}) 2^{e_{max}}$ for fn."""
        m = self.mantissa_bits
        # e4m3fn spends the one pattern S.1111.111 on NaN, so its top fraction is 1.110.
        top_fraction = 2.0 - 2.0 ** (-m) if self.has_inf else 2.0 - 2.0 ** (1 - m)
        return top_fraction * 2.0**self.max_exponent

    @property
    def min_normal(self) -> float:
        """Smallest positive normal number $2^{1-b}$."""
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal number $2^{1-b-m}$."""
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon $2^{-m}$."""
        return 2.0 ** (-self.mantissa_bits)

    def row(self) -> dict[str, float | int | str]:
        """The format as a table row (exponent bits, mantissa bits, bias, max, min normal ...)."""
        return dict(
            name=self.name, exponent_bits=self.exponent_bits, mantissa_bits=self.mantissa_bits,
            bias=self.bias, max=self.max, min_normal=self.min_normal,
            min_subnormal=self.min_subnormal, eps=self.eps, has_inf=self.has_inf,
        )


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("float32", 8, 23, 127, True),  # IEEE 754 binary32, for comparison
        FloatFormat("bfloat16", 8, 7, 127, True),  # Google Brain float: float32's range, 8-bit precision
        FloatFormat("float16", 5, 10, 15, True),  # IEEE 754 binary16
        FloatFormat("float8_e4m3fn", 4, 3, 7, False),  # OCP FP8 E4M3: finite + NaN only, max 448
        FloatFormat("float8_e5m2", 5, 2, 15, True),  # OCP FP8 E5M2: a truncated float16, max 57344
    )
}


def _format(fmt: str) -> FloatFormat:
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    return FORMATS[fmt]


def machine_epsilon(fmt: str) -> float:
    """Machine epsilon $\\varepsilon = 2^{-m}$: the gap between 1 and the next larger number.

    >>> machine_epsilon("bfloat16")
    0.0078125
    """
    return _format(fmt).eps


def _f32_bits(value: float) -> np.uint32:
    return np.array(value, dtype=np.float32).view(np.uint32)[()]


_SIGN = np.uint32(0x8000_0000)
_ABS = np.uint32(0x7FFF_FFFF)
_INF = np.uint32(0x7F80_0000)
_QNAN = np.uint32(0x7FC0_0000)


def round_to(x: ArrayLike, fmt: str) -> np.ndarray:
    """Round to the nearest value of `fmt` (ties to even) and return it as float32.

    Parameters
    ----------
    x : array_like of real numbers
        Converted to float32 first.
    fmt : str
        ``"bfloat16"``, ``"float16"``, ``"float8_e4m3fn"``, ``"float8_e5m2"`` (or ``"float32"``,
        which only converts).

    Returns
    -------
    np.ndarray
        float32 array of the same shape whose values are exactly representable in `fmt`;
        bit-for-bit ``x.astype(fmt).astype(np.float32)`` of ml_dtypes (NaN payloads aside).

    Examples
    --------
    >>> round_to([464.0, 470.0, 0.1], "float8_e4m3fn").tolist()
    [448.0, nan, 0.1015625]
    """
    f = _format(fmt)
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"x must hold real numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes +-inf, by design
        x32 = np.array(arr, dtype=np.float32)  # a copy we own
    if f.mantissa_bits == 23:
        return x32
    u = x32.reshape(-1).view(np.uint32)  # 1-D so that 0-d inputs stay arrays throughout
    sign = u & _SIGN
    a = u & _ABS  # |x| as bits: monotonic in |x| for non-NaN values

    # Normal range: drop k = 23 - m fraction bits, round to nearest even (carry may bump exponent).
    k = 23 - f.mantissa_bits
    lsb = (a >> np.uint32(k)) & np.uint32(1)
    r = (a + np.uint32((1 << (k - 1)) - 1) + lsb) & np.uint32(~((1 << k) - 1) & 0xFFFF_FFFF)

    # Below the format's smallest normal the grid is uniform, step q = 2^(1-b-m): round |x|/q.
    if f.bias < 127:
        tiny = a < _f32_bits(f.min_normal)
        if tiny.any():
            r[tiny] = _round_subnormal(a[tiny], f)

    # Overflow: beyond the largest finite value -> inf, or NaN for formats without inf (e4m3fn).
    r = np.where(r > _f32_bits(f.max), _INF if f.has_inf else _QNAN, r)
    r = np.where(a > _INF, _QNAN, r)  # NaN in, quiet NaN out
    return (r.astype(np.uint32) | sign).view(np.float32).reshape(x32.shape)


def _round_subnormal(a: np.ndarray, f: FloatFormat) -> np.ndarray:
    """Bits of |x| rounded to a multiple of 2^(1-b-m), for |x| below the format's min normal."""
    e = (a >> np.uint32(23)).astype(np.int64)  # float32 biased exponent (0 for float32 subnormals)
    frac = (a & np.uint32(0x7F_FFFF)).astype(np.int64)
    sig = np.where(e > 0, frac | (1 << 23), frac)  # |x| = sig * 2^(max(e,1) - 150)
    # |x| / q = sig / 2^s with s = (1 - b - m) + 150 - max(e, 1); s >= 24 - m > 0 here.
    # s > 25 leaves nothing (sig < 2^24), so clip to keep shifts well inside 64 bits.
    s = np.minimum((1 - f.bias - f.mantissa_bits) + 150 - np.maximum(e, 1), 26)
    n = sig >> s
    rem = sig & ((1 << s) - 1)
    half = 1 << (s - 1)
    n = n + ((rem > half) | ((rem == half) & ((n & 1) == 1)))  # nearest, ties to even
    # n * q as float32 bits: n (< 2^24) converts exactly; add log2(q) to its exponent field.
    bits = n.astype(np.float32).view(np.uint32).astype(np.int64)
    bits = np.where(n > 0, bits + ((1 - f.bias - f.mantissa_bits) << 23), 0)
    return bits.astype(np.uint32)


def decode_bits(bits: ArrayLike, fmt: str) -> np.ndarray:
    """Value of raw bit patterns of `fmt` (as unsigned integers), by the formula of the module docstring.

    Parameters
    ----------
    bits : array_like of int
        Codes in ``[0, 2**fmt.bits)``, e.g. ``np.arange(256)`` for a float8 format.
    fmt : str
        Any name in `FORMATS`.

    Returns
    -------
    np.ndarray
        float64 values (NaN for NaN codes, $\\pm\\infty$ for infinity codes).

    >>> decode_bits([0x7E, 0x7F, 0x08], "float8_e4m3fn").tolist()
    [448.0, nan, 0.015625]
    """
    f = _format(fmt)
    b = np.asarray(bits)
    if b.dtype.kind not in "iu" or b.size and (b.min() < 0 or b.max() >= 2**f.bits):
        raise ValueError(f"bits must be integers in [0, {2**f.bits}) for {fmt}, got {bits!r}")
    b = b.astype(np.int64)
    m, E = f.mantissa_bits, f.exponent_bits
    s = (b >> (E + m)) & 1
    e = (b >> m) & (2**E - 1)
    frac = b & (2**m - 1)
    sign = np.where(s == 1, -1.0, 1.0)
    normal = np.ldexp(1.0 + frac / 2.0**m, e - f.bias)
    subnormal = np.ldexp(frac / 2.0**m, 1 - f.bias)
    value = sign * np.where(e == 0, subnormal, normal)
    top = e == 2**E - 1
    if f.has_inf:
        value = np.where(top & (frac == 0), sign * np.inf, value)
        value = np.where(top & (frac != 0), np.nan, value)
    else:  # only S.1111.111 is NaN
        value = np.where(top & (frac == 2**m - 1), np.nan, value)
    return value
