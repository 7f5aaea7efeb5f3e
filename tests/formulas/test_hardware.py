"""Every display formula of docs/hardware.md, computed with minillm.hw and checked independently."""

import math
from fractions import Fraction

import numpy as np
import pytest

from minillm.config import GPTConfig
from minillm.hw.devices import get_device
from minillm.hw.fixedpoint import (
    QuantizedLinear,
    dequantize,
    int8_linear,
    quantize,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from minillm.hw.floats import FORMATS, decode_bits, machine_epsilon, round_to
from minillm.hw.roofline import kv_cache_bytes, model_ops, roofline_report, weight_bytes
from minillm.hw.systolic import TPU_V1, SystolicArray
from minillm.hw.tiling import blocked_matmul

RNG = np.random.default_rng(2024)


# --- devices and roofline ---------------------------------------------------------------------


@pytest.mark.formula("hw-roofline")
def test_roofline():
    d = get_device("a100")
    intensity = np.exp(RNG.uniform(np.log(0.01), np.log(1e5), 1000))
    got = d.attainable(intensity, "fp16")
    # piecewise: the sloped memory roof below the ridge, the flat compute roof above it
    want = np.where(intensity * 2.039e12 < 312e12, intensity * 2.039e12, 312e12)
    np.testing.assert_array_equal(got, want)


@pytest.mark.formula("hw-ridge-point")
def test_ridge_point():
    for name in ("h100", "a100", "tpu-v1", "tpu-v4", "m2"):
        d = get_device(name)
        for dtype, peak in d.peak_flops.items():
            ridge = d.ridge_point(dtype)
            assert ridge == peak / d.mem_bandwidth
            assert d.attainable(ridge * 0.999, dtype) < peak  # memory-bound just below
            assert d.attainable(ridge * 1.001, dtype) == peak  # compute-bound just above


@pytest.mark.formula("hw-kv-cache-bytes")
def test_kv_cache_bytes():
    cfg = GPTConfig.preset("teacher")  # L=4, C=192
    # count the cache entry by entry: per layer, per sequence, per position, a K and a V row
    B, ell, a = 3, 100, 2
    entries = sum(2 * cfg.n_embd for _layer in range(4) for _b in range(B) for _pos in range(ell))
    assert kv_cache_bytes(cfg, ell, B, "fp16") == entries * a
    ops = model_ops(cfg, "fp32", "decode", batch=B, context=ell, act_dtype="fp16")
    assert sum(op.kv_bytes for op in ops) == entries * a


@pytest.mark.formula("hw-predicted-time")
def test_predicted_time():
    r = roofline_report("gpt2", "fp16", "h100", "prefill", prompt_len=256, batch=4)
    peak, bw = 989.4e12, 3.35e12
    times = []
    for row in r["ops"]:
        t_c, t_m = row["flops"] / peak, row["bytes"] / bw
        assert row["time_s"] == max(t_c, t_m)
        times.append(t_c if t_c > t_m else t_m)
    assert r["total"]["time_s"] == pytest.approx(math.fsum(times), rel=1e-12)
    assert r["total"]["tokens_per_s"] == pytest.approx(4 * 256 / math.fsum(times), rel=1e-12)


@pytest.mark.formula("hw-decode-bound")
def test_decode_bound():
    cfg = GPTConfig.preset("gpt2")
    B, ell = 2, 512
    r = roofline_report(cfg, "fp32", "a100", "decode", batch=B, context=ell)
    # bytes per step from first principles: every parameter but the position table (4 B each),
    # the KV cache, and the activations each op reads and writes
    weights = 4 * (cfg.n_params - cfg.block_size * cfg.n_embd)
    kv = 2 * cfg.n_layer * B * ell * cfg.n_embd * 4
    assert r["total"]["weight_bytes"] == weights == weight_bytes(cfg, "fp32")
    assert r["total"]["kv_bytes"] == kv
    activations = r["total"]["bytes"] - weights - kv
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    # qkv reads x, writes q,k,v | scores read q | values write out | attn_out read, write |
    # mlp_fc read C, write 4C | mlp_proj read 4C, write C | two LayerNorms read and write
    per_layer = (4 * C + C + C + 2 * C + 5 * C + 5 * C + 2 * 2 * C) * B * 4
    assert activations == L * per_layer + (C + V) * B * 4 + 2 * C * B * 4
    bound = B * 2.039e12 / (weights + kv + activations)
    assert r["total"]["memory_bound_tokens_per_s"] == pytest.approx(bound, rel=1e-12)
    assert r["total"]["tokens_per_s"] <= bound


# --- systolic array ---------------------------------------------------------------------------


@pytest.mark.formula("hw-systolic-pass-cycles")
def test_systolic_pass_cycles():
    for R, C, M, K, N in [(6, 5, 9, 4, 5), (3, 8, 1, 3, 2), (10, 10, 20, 10, 10)]:
        x = RNG.integers(-128, 128, (M, K)).astype(np.int8)
        w = RNG.integers(-128, 128, (K, N)).astype(np.int8)
        frames = list(SystolicArray(R, C).frames(x, w))
        # the last output (row M-1, column N-1) appears in the final frame and not before
        assert frames[-1].done.all() and not frames[-2].done[M - 1, N - 1]
        assert len(frames) == M + R + N - 2


@pytest.mark.formula("hw-systolic-utilisation")
def test_systolic_utilisation():
    R, C, M, K, N = 8, 8, 12, 5, 7
    x = RNG.integers(-128, 128, (M, K)).astype(np.int8)
    w = RNG.integers(-128, 128, (K, N)).astype(np.int8)
    sa = SystolicArray(R, C)
    busy_cell_cycles = sum(int(s.active.sum()) for s in sa.frames(x, w))
    res = sa.run(x, w)
    assert busy_cell_cycles == M * K * N
    assert res.utilisation == busy_cell_cycles / (R * C * res.cycles)
    assert TPU_V1.cycles(1, 256, 256) * 256 * 256 * 0.002 > 256 * 256  # batch 1: under 0.2 %


@pytest.mark.formula("hw-systolic-tiled-cycles")
def test_systolic_tiled_cycles():
    R, C, M, K, N = 4, 3, 6, 10, 8
    x = RNG.integers(-128, 128, (M, K)).astype(np.int8)
    w = RNG.integers(-128, 128, (K, N)).astype(np.int8)
    sa = SystolicArray(R, C)
    res = sa.matmul(x, w)
    np.testing.assert_array_equal(res.output, x.astype(np.int32) @ w.astype(np.int32))
    closed = math.ceil(K / R) * (math.ceil(N / C) * (M + R - 2) + N)
    assert res.cycles == closed == sa.cycles(M, K, N)


@pytest.mark.formula("hw-systolic-peak")
def test_systolic_peak():
    assert TPU_V1.peak_ops_per_s() == 2 * 256 * 256 * 700e6
    assert round(TPU_V1.peak_ops_per_s() / 1e12) == 92  # Jouppi et al. 2017
    assert TPU_V1.peak_ops_per_s() == get_device("tpu-v1").peak("int8")


# --- tiling -----------------------------------------------------------------------------------


@pytest.mark.formula("hw-tiling-global-reads")
def test_tiling_global_reads():
    for M, N, K, BM, BN in [(64, 32, 16, 16, 8), (30, 50, 7, 8, 16)]:
        A = RNG.integers(-4, 5, (M, K)).astype(np.float64)
        B = RNG.integers(-4, 5, (K, N)).astype(np.float64)
        t = blocked_matmul(A, B, BM, BN, 4)
        np.testing.assert_array_equal(t.C, A @ B)
        assert t.global_reads == M * K * math.ceil(N / BN) + K * N * math.ceil(M / BM)
        if M % BM == 0 and N % BN == 0:
            assert t.global_reads == M * N * K * (Fraction(1, BN) + Fraction(1, BM))


@pytest.mark.formula("hw-tiling-intensity")
def test_tiling_intensity():
    M = N = K = 96
    A = np.ones((M, K), np.float32)
    B = np.ones((K, N), np.float32)
    for b in (2, 6, 24, 96):
        t = blocked_matmul(A, B, b, b, 8)
        exact = 2 * M * N * K / (4 * (t.global_reads + M * N))
        assert t.arithmetic_intensity == pytest.approx(exact, rel=1e-12)
        approx = 2 / (4 * (1 / b + 1 / b))  # ignoring the output writes
        assert exact <= approx and exact == pytest.approx(approx, rel=b / K)


# --- fixed point ------------------------------------------------------------------------------


@pytest.mark.formula("hw-affine-quantization")
def test_affine_quantization():
    scale, zp = 0.05, -20
    r = RNG.uniform(-5, 7, 1000)
    q = quantize(r, scale, zp)
    want = np.clip(np.rint(r / scale) + zp, -128, 127)
    np.testing.assert_array_equal(q, want)
    inside = (want > -128) & (want < 127)
    assert np.all(np.abs(dequantize(q, scale, zp) - r)[inside] <= scale / 2 + 1e-12)


@pytest.mark.formula("hw-int8-linear")
def test_int8_linear():
    K, N = 32, 6
    xq = RNG.integers(-128, 128, (10, K)).astype(np.int8)
    wq = RNG.integers(-127, 128, (K, N)).astype(np.int8)
    bq = RNG.integers(-5000, 5000, N).astype(np.int32)
    zx, zw, zy, M = -3, 2, 5, 1.7e-3
    got = int8_linear(xq, zx, wq, zw, bq, M, zy)
    # the formula in exact rationals, rounded to nearest: equal up to the last half step
    acc = (xq.astype(np.int64) - zx) @ (wq.astype(np.int64) - zw) + bq
    real = zy + acc * M
    want = np.clip(np.floor(real + 0.5), -128, 127)
    m0, shift = quantize_multiplier(M)
    m_err = abs(m0 * 2.0 ** (shift - 31) - M) * np.abs(acc).max()
    near_tie = np.abs(real - np.floor(real) - 0.5) < m_err + 2.0 ** shift
    np.testing.assert_array_equal(got[~near_tie], want[~near_tie])
    assert np.all(np.abs(got - want) <= 1)
    # and a float layer via QuantizedLinear stays within a few output steps
    w = RNG.normal(size=(K, N))
    x = RNG.normal(size=(50, K))
    y = x @ w
    layer = QuantizedLinear.from_float(w, None, (x.min(), x.max()), (1.1 * y.min(), 1.1 * y.max()))
    assert np.max(np.abs(layer.forward(x) - y)) <= 3 * layer.y_scale


@pytest.mark.formula("hw-quantized-multiplier")
def test_quantized_multiplier():
    for M in np.exp(RNG.uniform(np.log(1e-8), np.log(1e3), 500)):
        m0, shift = quantize_multiplier(float(M))
        assert 2**30 <= m0 < 2**31
        approx = Fraction(m0) * Fraction(2) ** (shift - 31)
        assert abs(approx - Fraction(float(M))) <= Fraction(2) ** (shift - 32)  # half a Q31 step
    assert quantize_multiplier(0.001) == (1099511628, -9)  # REFERENCES.md


@pytest.mark.formula("hw-srdhm")
def test_srdhm():
    a = RNG.integers(-(2**31), 2**31, 5000)
    b = RNG.integers(-(2**31), 2**31, 5000)
    a[:4] = [2**30, -(2**30), 3 * 2**29, -3 * 2**29]  # exact ties: +0.5, -0.5, +0.75*2, ...
    b[:4] = [1, 1, 2, 2]
    got = saturating_rounding_doubling_high_mul(a.astype(np.int32), b.astype(np.int32))
    want = [math.floor(Fraction(int(x) * int(y), 2**31) + Fraction(1, 2)) for x, y in zip(a, b,
                                                                                        strict=True)]
    assert got.tolist() == want
    assert got[:4].tolist() == [1, 0, 2, -1]  # ties go up
    assert saturating_rounding_doubling_high_mul(-(2**31), -(2**31)) == 2**31 - 1


@pytest.mark.formula("hw-rounding-divide-by-pot")
def test_rounding_divide_by_pot():
    x = RNG.integers(-(2**31), 2**31, 3000)
    n = RNG.integers(0, 32, 3000)
    got = rounding_divide_by_pot(x.astype(np.int32), n)
    want = [int(np.sign(v)) * math.floor(Fraction(abs(int(v)), 2 ** int(k)) + Fraction(1, 2))
            for v, k in zip(x, n, strict=True)]
    assert got.tolist() == want


# --- number formats ---------------------------------------------------------------------------


@pytest.mark.formula("hw-float-value")
def test_float_value():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes decodes the float8 formats")
    for fmt, view in [("float8_e4m3fn", np.uint8), ("float8_e5m2", np.uint8),
                      ("float16", np.uint16), ("bfloat16", np.uint16)]:
        f = FORMATS[fmt]
        codes = np.arange(2**f.bits)
        dtype = np.float16 if fmt == "float16" else getattr(ml_dtypes, fmt)
        with np.errstate(invalid="ignore"):
            want = codes.astype(view).view(dtype).astype(np.float64)
        got = decode_bits(codes, fmt)
        np.testing.assert_array_equal(got, want)  # NaN positions must agree too
        finite = np.isfinite(got)
        assert np.max(np.abs(got[finite])) == f.max
        assert np.min(np.abs(got[finite & (got != 0)])) == f.min_subnormal


@pytest.mark.formula("hw-machine-epsilon")
def test_machine_epsilon():
    for fmt, m in [("bfloat16", 7), ("float16", 10), ("float8_e4m3fn", 3), ("float8_e5m2", 2)]:
        eps = machine_epsilon(fmt)
        assert eps == 2.0**-m
        values = decode_bits(np.arange(2 ** FORMATS[fmt].bits), fmt)
        assert eps == np.min(values[values > 1]) - 1  # the gap above 1, from the value table
        assert round_to(1 + eps, fmt) == 1 + eps  # the next number above 1 ...
        assert round_to(1 + 0.49 * eps, fmt) == 1  # ... and nothing in between
        assert round_to(1 + 0.51 * eps, fmt) == 1 + eps


@pytest.mark.formula("hw-round-to-nearest-even")
def test_round_to_nearest_even_bits():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is the bfloat16 oracle")
    u = RNG.integers(0, 0x7F80_0000, 100_000, dtype=np.uint32)  # finite, positive
    x = u.view(np.float32)
    for fmt, m in [("bfloat16", 7), ("float8_e4m3fn", 3)]:
        k = 23 - m
        rounded = (u.astype(np.uint64) + (1 << (k - 1)) - 1 + ((u >> k) & 1)) & ~np.uint64(2**k - 1)
        got = round_to(x, fmt).view(np.uint32)
        # the formula is the conversion wherever the result is a finite normal number
        normal = ((rounded >> 23) > 127 - FORMATS[fmt].bias) & (
            rounded <= np.float32(FORMATS[fmt].max).view(np.uint32))
        np.testing.assert_array_equal(got[normal], rounded[normal].astype(np.uint32))
        with np.errstate(over="ignore"):
            oracle = x.astype(getattr(ml_dtypes, fmt)).astype(np.float32).view(np.uint32)
        np.testing.assert_array_equal(got[normal], oracle[normal])
    # for bfloat16 it is the whole conversion of finite inputs, subnormals included
    k = 16
    rounded = ((u.astype(np.uint64) + (1 << (k - 1)) - 1 + ((u >> k) & 1)) >> k) << k
    np.testing.assert_array_equal(round_to(x, "bfloat16").view(np.uint32),
                                  rounded.astype(np.uint32))
