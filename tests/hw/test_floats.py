"""round_to against ml_dtypes (bfloat16, float8) and NumPy's IEEE float16, bit for bit."""

import numpy as np
import pytest

from minillm.hw.floats import FORMATS, decode_bits, machine_epsilon, round_to

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is the oracle for bfloat16/float8")

NARROW = ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]


def oracle_dtype(fmt):
    return np.dtype(np.float16) if fmt == "float16" else np.dtype(getattr(ml_dtypes, fmt))


def oracle(x, fmt):
    """x.astype(fmt).astype(float32) by the library (warnings on overflow casts silenced)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float32).astype(oracle_dtype(fmt)).astype(np.float32)


def assert_same_bits(got, want):
    """Bit-for-bit equality; NaNs must be NaN with the same sign (payloads are not kept)."""
    assert got.dtype == np.float32 and got.shape == want.shape
    g, w = got.view(np.uint32), want.view(np.uint32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    bad = np.flatnonzero((g != w) & ~nan)
    assert bad.size == 0, f"{bad.size} mismatches, e.g. x-index {bad[:5]}: {got.flat[bad[:5]]} vs {want.flat[bad[:5]]}"
    np.testing.assert_array_equal(g[nan] >> 31, w[nan] >> 31)


@pytest.mark.parametrize("fmt", NARROW)
def test_random_bit_patterns_match_oracle(fmt):
    # 1e6 uniformly random float32 bit patterns: all exponents, NaNs, infs, subnormals.
    rng = np.random.default_rng(sum(map(ord, fmt)))
    x = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint32).view(np.float32)
    assert_same_bits(round_to(x, fmt), oracle(x, fmt))


@pytest.mark.parametrize("fmt", NARROW)
def test_values_near_the_format_range_match_oracle(fmt):
    # Uniform bit patterns rarely land in float8's narrow range; sample around it densely.
    f = FORMATS[fmt]
    rng = np.random.default_rng(1)
    lo, hi = np.log2(f.min_subnormal) - 2, np.log2(f.max) + 1
    mag = np.exp2(rng.uniform(lo, hi, 200_000))
    with np.errstate(over="ignore"):  # bfloat16's range ends where float32's does
        x = (mag * rng.choice([-1.0, 1.0], mag.size)).astype(np.float32)
    assert_same_bits(round_to(x, fmt), oracle(x, fmt))


@pytest.mark.parametrize("fmt", NARROW)
def test_every_grid_point_and_every_midpoint(fmt):
    # All representable values of the format, and the exact midpoints between neighbours
    # (ties): round to nearest even must pick the neighbour with an even last mantissa bit.
    codes = np.arange(2 ** FORMATS[fmt].bits, dtype=np.uint32)
    values = decode_bits(codes, fmt)
    finite = np.unique(values[np.isfinite(values)])
    x = finite.astype(np.float32)
    assert_same_bits(round_to(x, fmt), x)
    mids = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)
    assert_same_bits(round_to(mids, fmt), oracle(mids, fmt))


REFERENCE_EXAMPLES = [
    ("float8_e4m3fn", 464.0, 448.0),  # tie between 448 and (NaN) 480: even side
    ("float8_e4m3fn", 470.0, np.nan),  # overflow: no inf in e4m3fn
    ("float8_e4m3fn", 0.1, 0.1015625),
    ("float8_e5m2", 61440.0, np.inf),  # tie between 57344 and 65536 (inf): rounds up
    ("float8_e5m2", 0.1, 0.09375),
    ("float16", 65520.0, np.inf),
    ("float16", 65519.0, 65504.0),
    ("bfloat16", 1.0 + 2**-8, 1.0),  # tie: 1.0 has the even mantissa
    ("bfloat16", 1.0 + 3 * 2**-8, 1.0 + 2**-6),  # tie: rounds up to the even neighbour
]


@pytest.mark.parametrize(("fmt", "x", "want"), REFERENCE_EXAMPLES)
def test_reference_examples(fmt, x, want):
    got = round_to(x, fmt)
    assert got.shape == ()
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == np.float32(want)
    assert_same_bits(round_to(-x, fmt), oracle(-x, fmt))


@pytest.mark.parametrize("fmt", NARROW)
def test_edge_cases(fmt):
    f = FORMATS[fmt]
    s = f.min_subnormal
    above_half = np.nextafter(np.float32(s / 2), np.float32(1))
    x = np.array([0.0, -0.0, s, -s, s / 2, above_half, s * 1.5, s * 2.5, f.min_normal,
                  f.min_normal * (1 - 2**-12), f.max, -f.max, np.inf, -np.inf, np.nan, -np.nan,
                  3.4028235e38, 1e-45, -1e-45], dtype=np.float32)
    got = round_to(x, fmt)
    assert_same_bits(got, oracle(x, fmt))
    assert got[0] == 0 and not np.signbit(got[0]) and np.signbit(got[1])  # signed zero
    assert got[2] == s and got[4] == 0 and got[5] == s  # half the smallest subnormal ties to 0
    assert got[6] == 2 * s and got[7] == 2 * s  # ties to even among subnormals
    assert got[10] == f.max


@pytest.mark.parametrize("fmt", NARROW)
def test_format_table_matches_oracle(fmt):
    f = FORMATS[fmt]
    info = ml_dtypes.finfo(oracle_dtype(fmt))
    assert f.max == float(info.max)
    assert f.min_normal == float(info.smallest_normal)
    assert f.min_subnormal == float(info.smallest_subnormal)
    assert machine_epsilon(fmt) == float(info.eps)
    assert f.bits == oracle_dtype(fmt).itemsize * 8
    assert f.row()["bias"] == f.bias


@pytest.mark.parametrize("fmt", NARROW)
def test_decode_bits_matches_oracle_for_every_code(fmt):
    f = FORMATS[fmt]
    codes = np.arange(2**f.bits, dtype=np.uint32)
    view = np.uint8 if f.bits == 8 else np.uint16
    with np.errstate(invalid="ignore"):
        want = codes.astype(view).view(oracle_dtype(fmt)).astype(np.float64)
    got = decode_bits(codes, fmt)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got[ok], want[ok])
    np.testing.assert_array_equal(np.signbit(got[ok]), np.signbit(want[ok]))


def test_shapes_dtypes_and_float64_input():
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    y = round_to(x, "bfloat16")
    assert y.shape == (2, 3, 4) and y.dtype == np.float32
    # float64 goes through float32 first (documented double rounding)
    np.testing.assert_array_equal(y, round_to(x.astype(np.float32), "bfloat16"))
    assert round_to([1, 2, 3], "float8_e4m3fn").tolist() == [1.0, 2.0, 3.0]  # ints accepted
    x32 = np.float32([1.1])
    assert round_to(x32, "float32") is not x32 and round_to(x32, "float32")[0] == x32[0]


@pytest.mark.parametrize("fmt", NARROW)
def test_scalars_in_every_range(fmt):
    f = FORMATS[fmt]
    for v in (f.min_subnormal * 1.3, -f.min_normal * 0.7, 1.7, -f.max * 1.01, 0.0):
        got = round_to(v, fmt)
        assert got.shape == () and got.dtype == np.float32
        assert_same_bits(got, oracle(v, fmt))


def test_input_not_modified():
    x = np.array([0.1, 470.0], dtype=np.float32)
    before = x.copy()
    round_to(x, "float8_e4m3fn")
    np.testing.assert_array_equal(x, before)


def test_validation():
    with pytest.raises(ValueError, match=r"fmt must be one of .*bfloat16.*got 'float8'"):
        round_to(1.0, "float8")
    with pytest.raises(ValueError, match="fmt must be one of"):
        machine_epsilon("fp16")
    with pytest.raises(TypeError, match="real numbers"):
        round_to(np.array([1 + 2j]), "float16")
    with pytest.raises(ValueError, match=r"bits must be integers in \[0, 256\)"):
        decode_bits([256], "float8_e5m2")
