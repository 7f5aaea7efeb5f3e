"""The display formulas of docs/quantization.md, each computed by the library and by hand."""

import math

import numpy as np
import pytest

from minillm.compress import quantize as Q

rng = np.random.default_rng(0)


@pytest.mark.formula("quantization.affine")
def test_affine_map():
    # s = 1/4 and z = 3 keep every product exact, so the ties below are real ties.
    x = np.array([-3.0, -0.125, 0.125, 0.375, 1.0, 5.0])
    # x/s = [-12, -.5, .5, 1.5, 4, 20] -> half-even [-12, 0, 0, 2, 4, 20] -> +3 -> clamp [-8, 7]
    expected_q = [-8, 3, 3, 5, 7, 7]
    qt = Q.quantize_with(x, 0.25, 3, bits=4)
    np.testing.assert_array_equal(qt.q, expected_q)
    np.testing.assert_array_equal(Q.dequantize(qt), 0.25 * (np.array(expected_q) - 3))


@pytest.mark.formula("quantization.affine-params")
def test_affine_params():
    for lo, hi, bits in [(-1.0, 3.0, 8), (0.5, 2.0, 8), (-7.0, -2.0, 4), (-0.3, 0.9, 3)]:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
        s = (hi0 - lo0) / (qmax - qmin)
        z = min(max(qmin - round(lo0 / s), qmin), qmax)  # Python round: half to even
        scale, zero_point = Q.qparams(lo, hi, bits, symmetric=False)
        assert scale == pytest.approx(s, rel=2**-23) and zero_point == z
    qt = Q.quantize(np.array([-1.0, 0.0, 3.0]), symmetric=False)
    assert qt.scale == np.float32(4 / 255) and qt.zero_point == -64


@pytest.mark.formula("quantization.symmetric-scale")
def test_symmetric_scales():
    x = rng.normal(size=100).astype(np.float32)
    amax = np.abs(x).max()
    for bits in (2, 4, 8):
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        assert Q.quantize(x, bits).scale == amax / np.float32(qmax)
        assert Q.quantize(x, bits, convention="torch").scale == amax / np.float32((qmax - qmin) / 2)
    assert Q.quantize(np.array([-1, -0.5, 0, 0.3, 2]), convention="torch").scale == np.float32(2 / 127.5)


@pytest.mark.formula("quantization.error-bound")
def test_error_bound():
    x = (rng.standard_t(3, size=(64, 8))).astype(np.float32)
    for bits in range(2, 9):
        for symmetric in (True, False):
            for layout in ({}, {"axis": 1}, {"group_size": 16}):
                qt = Q.quantize(x, bits, symmetric, **layout)
                s = qt.scale_per_element()
                err = np.abs(x.astype(np.float64) - Q.dequantize(qt))
                # float32 rounding of x * (1/s) and of s * q: 2^-23 |x| + 2^-24 |x_hat|
                assert np.all(err <= s / 2 + 2.0**-22 * np.abs(x))
                assert err.max() > 0.3 * s.max() / 2  # and the bound is nearly reached


@pytest.mark.formula("quantization.per-channel-matmul")
def test_per_channel_scale_factors_out():
    w = rng.normal(size=(32, 6)).astype(np.float32)
    kind = Q.quantize_weight(w, "int8")
    x = rng.normal(size=(5, 32))
    per_term = np.einsum("ti,io->to", x, kind.q.astype(np.float64) * kind.scale.astype(np.float64))
    factored = kind.scale.astype(np.float64) * (x @ kind.q.astype(np.float64))
    np.testing.assert_allclose(per_term, factored, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kind.matmul(x), factored, rtol=1e-5, atol=1e-5)


def _roundf(v):
    return math.copysign(math.floor(abs(v) + 0.5), v)


@pytest.mark.formula("quantization.q8-0")
def test_q8_0_formula():
    x = (rng.normal(size=(64, 3)) * 0.02).astype(np.float32)
    qs, d = Q.q8_0(x)
    deq = Q.dequantize_q8_0(qs, d)
    for b in range(2):
        for o in range(3):
            blk = x[32 * b : 32 * b + 32, o]
            d32 = np.float32(np.abs(blk).max()) / np.float32(127)
            inv = np.float32(1) / d32
            ref = [_roundf(float(np.float32(v * inv))) for v in blk]
            assert qs[32 * b : 32 * b + 32, o].tolist() == ref
            assert d[b, o] == np.float16(d32)
            np.testing.assert_array_equal(
                deq[32 * b : 32 * b + 32, o], np.float32(d[b, o]) * qs[32 * b : 32 * b + 32, o]
            )


@pytest.mark.formula("quantization.q4-0")
def test_q4_0_formula():
    x = (rng.normal(size=(64, 3)) * 0.02).astype(np.float32)
    qs, d = Q.q4_0(x)
    deq = Q.dequantize_q4_0(qs, d)
    for b in range(2):
        for o in range(3):
            blk = x[32 * b : 32 * b + 32, o]
            m = blk[np.argmax(np.abs(blk))]
            d32 = np.float32(m) / np.float32(-8)
            inv = np.float32(1) / d32
            ref = [min(15, math.floor(float(np.float32(v * inv) + np.float32(8.5)))) for v in blk]
            got = qs[32 * b : 32 * b + 32, o]
            assert got.tolist() == ref
            np.testing.assert_array_equal(
                deq[32 * b : 32 * b + 32, o], (got.astype(np.float32) - 8) * np.float32(d[b, o])
            )


@pytest.mark.formula("quantization.bits-per-weight")
def test_bits_per_weight():
    w = rng.normal(size=(128, 8)).astype(np.float32)
    expected = {
        "q8_0": (32 * 8 + 16) / 32,
        "q4_0": (32 * 4 + 16) / 32,
        "int4-g32": 4 + (16 + 4) / 32,
    }
    assert expected == {"q8_0": 8.5, "q4_0": 4.5, "int4-g32": 4.625}
    for method, bits in expected.items():
        assert Q.quantize_weight(w, method).nbytes * 8 / w.size == bits
