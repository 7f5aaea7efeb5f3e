"""Fixed-point requantization against a scalar Python-int model of the gemmlowp/TFLite reference."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.hw.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    QuantizedLinear,
    affine_qparams,
    dequantize,
    int8_linear,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_bias,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

# --- the reference, one scalar at a time, in Python ints (C semantics spelled out) ------------


def wrap32(v: int) -> int:
    """What an int32 register keeps of v (two's complement)."""
    return (v + 2**31) % 2**32 - 2**31


def c_div(n: int, d: int) -> int:
    """C's integer division: truncate toward zero."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbpot(x: int, exponent: int) -> int:
    """x / 2^exponent rounded to nearest, ties away from zero (exact rationals)."""
    q = Fraction(x, 2**exponent)
    r = math.floor(abs(q) + Fraction(1, 2))
    return r if q >= 0 else -r


def ref_mbqm(x: int, m0: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return ref_rdbpot(ref_srdhm(wrap32(x * 2**left), m0), right)


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0:
        return 0, 0
    q, shift = math.frexp(real)
    scaled = Fraction(q) * 2**31
    m0 = math.floor(scaled + Fraction(1, 2))  # std::round, q > 0
    if m0 == 2**31:
        m0, shift = m0 // 2, shift + 1
    if shift < -31:
        return 0, 0
    return m0, shift


int32s = st.integers(INT32_MIN, INT32_MAX)
int32_edges = st.sampled_from([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX,
                               2**30, -(2**30), 2**16, -(2**16)])
int32_any = st.one_of(int32s, int32_edges)


# --- quantize_multiplier ----------------------------------------------------------------------


def test_quantize_multiplier_reference_example():
    assert quantize_multiplier(0.001) == (1099511628, -9)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=2.0**-40, max_value=2.0**20, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_matches_reference(real):
    m0, shift = quantize_multiplier(real)
    assert (m0, shift) == ref_quantize_multiplier(real)
    if m0:
        assert 2**30 <= m0 < 2**31  # Q31 significand in [0.5, 1)
        assert abs(Fraction(m0) * Fraction(2) ** (shift - 31) - Fraction(real)) <= \
            Fraction(2) ** (shift - 32)


def test_quantize_multiplier_special_cases():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**-33) == (0, 0)  # shift < -31 flushes to zero
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    # rounds up to 2^31: renormalised to 2^30 with shift + 1
    assert quantize_multiplier(1 - 2.0**-40) == ref_quantize_multiplier(1 - 2.0**-40) == (2**30, 1)
    m0, shift = quantize_multiplier(np.array([0.001, 0.25, 0.0]))
    assert m0.dtype == np.int32 and shift.dtype == np.int32
    assert m0.tolist() == [1099511628, 2**30, 0] and shift.tolist() == [-9, -1, 0]


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError, match="real must be finite and >= 0"):
        quantize_multiplier(bad)


# --- the integer primitives -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(int32_any, int32_any), min_size=1, max_size=40))
def test_srdhm_matches_reference(pairs):
    a, b = (np.array(v, dtype=np.int32) for v in zip(*pairs, strict=True))
    got = saturating_rounding_doubling_high_mul(a, b)
    assert got.dtype == np.int32
    assert got.tolist() == [ref_srdhm(int(x), int(y)) for x, y in pairs]


def test_srdhm_single_overflow_case():
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX
    assert saturating_rounding_doubling_high_mul(INT32_MAX, INT32_MAX) == INT32_MAX - 1
    # ties: +0.5 -> 1, -0.5 -> 0 (toward +inf)
    assert saturating_rounding_doubling_high_mul(1 << 30, 1) == ref_srdhm(1 << 30, 1) == 1
    assert saturating_rounding_doubling_high_mul(-(1 << 30), 1) == ref_srdhm(-(1 << 30), 1) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(int32_any, st.integers(0, 31)), min_size=1, max_size=40))
def test_rounding_divide_by_pot_matches_reference(pairs):
    x, e = (np.array(v) for v in zip(*pairs, strict=True))
    got = rounding_divide_by_pot(x.astype(np.int32), e)
    assert got.tolist() == [ref_rdbpot(int(v), int(n)) for v, n in pairs]


def test_rounding_divide_by_pot_ties_away_from_zero():
    assert rounding_divide_by_pot([5, -5, 6, -6, 7, -7], 2).tolist() == [1, -1, 2, -2, 2, -2]
    assert rounding_divide_by_pot([INT32_MIN, INT32_MAX], 31).tolist() == [-1, 1]


@settings(max_examples=300, deadline=None)
@given(st.lists(int32_any, min_size=1, max_size=40),
       st.one_of(st.integers(0, INT32_MAX), st.sampled_from([0, 2**30, INT32_MAX])),
       st.integers(-31, 30))
def test_multiply_by_quantized_multiplier_matches_reference(xs, m0, shift):
    got = multiply_by_quantized_multiplier(np.array(xs, dtype=np.int32), m0, shift)
    assert got.dtype == np.int32
    assert got.tolist() == [ref_mbqm(x, m0, shift) for x in xs]


def test_multiply_by_quantized_multiplier_per_channel_broadcast():
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**20), 2**20, size=(5, 4)).astype(np.int32)
    m0, shift = quantize_multiplier(np.array([0.001, 0.3, 1.7, 0.02]))
    got = multiply_by_quantized_multiplier(x, m0, shift)
    want = [[ref_mbqm(int(x[i, j]), int(m0[j]), int(shift[j])) for j in range(4)]
            for i in range(5)]
    assert got.tolist() == want


def test_multiply_left_shift_wraps_like_int32():
    # shift = 2: x * 4 overflows int32 for x = 2^30 and wraps to 0 (as compiled TFLite does)
    assert multiply_by_quantized_multiplier(2**30, 2**30, 2) == ref_mbqm(2**30, 2**30, 2) == 0


def test_multiply_validation():
    with pytest.raises(ValueError, match=r"shift must lie in \[-31, 30\]"):
        multiply_by_quantized_multiplier(1, 2**30, 31)
    with pytest.raises(ValueError, match=r"x must lie in \[-2147483648, 2147483647\]"):
        multiply_by_quantized_multiplier(2**31, 2**30, 0)
    with pytest.raises(TypeError, match="x must be an integer array"):
        multiply_by_quantized_multiplier(1.5, 2**30, 0)


# --- affine quantization and the int8 linear layer --------------------------------------------


def test_affine_qparams_and_roundtrip():
    scale, zp = affine_qparams(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zp == round(-128 + 1 / (4 / 255))
    x = np.linspace(-1, 3, 101)
    q = quantize(x, scale, zp)
    assert q.dtype == np.int8 and q.min() >= -128 and q.max() <= 127
    assert np.max(np.abs(dequantize(q, scale, zp) - x)) <= scale / 2 + 1e-12
    assert dequantize(quantize(0.0, scale, zp), scale, zp) == 0.0  # zero is exact
    s, z = affine_qparams(np.array([-2.0, 0.0]), np.array([1.0, 0.5]), symmetric=True)
    assert s.tolist() == [2 / 127, 0.5 / 127] and z.tolist() == [0, 0]
    s0, _ = affine_qparams(0.0, 0.0)  # an all-zero range still has a positive scale
    assert s0 > 0
    with pytest.raises(ValueError, match="x_min/x_max must be finite"):
        affine_qparams(1.0, np.nan)
    assert quantize_bias([0.5, -0.25], 0.1, np.array([0.5, 0.25])).tolist() == [10, -10]
    with pytest.raises(ValueError, match="does not fit in int32"):
        quantize_bias([1.0], 1e-6, 1e-6)


def ref_int8_linear(x, zx, w, zw, bias, m0, shift, zy):
    """Scalar Python ints: int32 accumulator (wrapping), requantize, add zero point, clamp."""
    K, N = w.shape
    zw = np.broadcast_to(zw, (N,))
    m0 = np.broadcast_to(m0, (N,))
    shift = np.broadcast_to(shift, (N,))
    out = np.zeros((x.shape[0], N), dtype=np.int64)
    for i in range(x.shape[0]):
        for j in range(N):
            acc = sum((int(x[i, k]) - zx) * (int(w[k, j]) - int(zw[j])) for k in range(K))
            acc = wrap32(acc + int(bias[j]))
            y = ref_mbqm(acc, int(m0[j]), int(shift[j])) + zy
            out[i, j] = min(127, max(-128, y))
    return out


def test_int8_linear_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(6, 20)).astype(np.int8)
    w = rng.integers(-128, 128, size=(20, 7)).astype(np.int8)
    bias = rng.integers(-(2**16), 2**16, size=7).astype(np.int32)
    zw = rng.integers(-5, 6, size=7)
    m0, shift = quantize_multiplier(rng.uniform(1e-5, 2e-3, size=7))
    got = int8_linear(x, 3, w, zw, bias, (m0, shift), -7)
    assert got.dtype == np.int8 and got.shape == (6, 7)
    np.testing.assert_array_equal(got, ref_int8_linear(x, 3, w, zw, bias, m0, shift, -7))
    # a real multiplier is turned into (m0, shift) the same way
    real = 7.3e-4
    np.testing.assert_array_equal(
        int8_linear(x, 3, w, 0, bias, real, 0),
        ref_int8_linear(x, 3, w, 0, bias, *quantize_multiplier(real), 0))


def test_int8_linear_accumulator_wraps():
    # bias near INT32_MAX plus positive products overflows the 32-bit accumulator
    x = np.full((1, 4), 127, dtype=np.int8)
    w = np.full((4, 1), 127, dtype=np.int8)
    bias = np.array([INT32_MAX - 10], dtype=np.int32)
    m0, shift = quantize_multiplier(2.0**-25)
    got = int8_linear(x, 0, w, 0, bias, (m0, shift), 0)
    want = ref_int8_linear(x, 0, w, 0, bias, m0, shift, 0)
    assert wrap32(INT32_MAX - 10 + 4 * 127 * 127) < 0  # it really wrapped
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] == -64  # -2^31 / 2^25 = -64: wrapped to the most negative accumulators


def test_int8_linear_fused_relu_and_batch_dims():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(2, 3, 8)).astype(np.int8)
    w = rng.integers(-128, 128, size=(8, 5)).astype(np.int8)
    y = int8_linear(x, 0, w, 0, None, 1e-3, -10, act_min=-10)
    assert y.shape == (2, 3, 5) and y.min() >= -10
    flat = int8_linear(x.reshape(6, 8), 0, w, 0, None, 1e-3, -10, act_min=-10)
    np.testing.assert_array_equal(y.reshape(6, 5), flat)


def test_int8_linear_validation():
    x = np.zeros((2, 4), dtype=np.int8)
    w = np.zeros((4, 3), dtype=np.int8)
    with pytest.raises(ValueError, match="do not match"):
        int8_linear(x, 0, np.zeros((5, 3), np.int8), 0, None, 0.1, 0)
    with pytest.raises(ValueError, match=r"x_q must lie in \[-128, 127\]"):
        int8_linear(np.full((2, 4), 200), 0, w, 0, None, 0.1, 0)
    with pytest.raises(ValueError, match=r"x_zp must lie in \[-128, 127\]"):
        int8_linear(x, 300, w, 0, None, 0.1, 0)
    with pytest.raises(ValueError, match=r"bias_i32 must have shape \(3,\)"):
        int8_linear(x, 0, w, 0, np.zeros(4, np.int32), 0.1, 0)
    with pytest.raises(ValueError, match=r"w_zp must be a scalar or shape \(3,\)"):
        int8_linear(x, 0, w, np.zeros(4, np.int64), None, 0.1, 0)
    with pytest.raises(ValueError, match="act_min <= act_max"):
        int8_linear(x, 0, w, 0, None, 0.1, 0, act_min=5, act_max=0)


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantized_linear_against_float_layer(per_channel):
    rng = np.random.default_rng(2)
    K, N = 64, 24
    w = rng.normal(0, 0.2, size=(K, N)) * rng.uniform(0.2, 2.0, size=N)  # channels differ
    b = rng.normal(0, 0.1, size=N)
    x = rng.normal(0.3, 1.0, size=(200, K))
    y = x @ w + b
    pad = 0.1 * (y.max() - y.min())
    layer = QuantizedLinear.from_float(w, b, (x.min(), x.max()), (y.min() - pad, y.max() + pad),
                                       per_channel=per_channel)
    x_q = quantize(x, layer.x_scale, layer.x_zp)
    y_hat = layer.forward(x)
    # 1) Against exact real arithmetic on the quantized operands, the only errors are the final
    #    rounding (half an output step), the int32 bias rounding and the Q31 multiplier.
    x_deq = dequantize(x_q, layer.x_scale, layer.x_zp)
    w_deq = dequantize(layer.w_q, layer.w_scale, layer.w_zp)
    exact = x_deq @ w_deq + dequantize(layer.bias_q, layer.x_scale * layer.w_scale, 0)
    M = layer.x_scale * layer.w_scale / layer.y_scale
    first_rounding = 0.5 * 2.0 ** layer.shift  # SRDHM rounds before the final shift
    bound = 0.5 + np.max(0.5 * M + first_rounding) + 1e-6  # in output steps
    assert np.max(np.abs(y_hat - exact)) / layer.y_scale <= bound
    assert bound < 0.52  # i.e. essentially the final rounding alone
    # 2) Against the float layer: a few output steps (input and weight rounding add up over K).
    err = np.max(np.abs(y_hat - y)) / layer.y_scale
    assert err <= 3.0, err
    assert layer(x_q).dtype == np.int8
