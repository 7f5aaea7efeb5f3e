"""Every display formula of docs/backends.md, computed with minillm and checked independently."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm import backends
from minillm.bench import bench_decode, decode_bytes_per_token
from minillm.compress.quantize import quantize_params, quantize_weight

RNG = np.random.default_rng(11)


def _closed_form_bytes(cfg: minillm.GPTConfig, context: int, bytes_per_weight: float) -> float:
    """Bytes one decode step reads, counted from the shape alone (no model needed)."""
    V, L, C = cfg.vocab_size, cfg.n_layer, cfg.n_embd
    matmul = 12 * C * C * bytes_per_weight  # c_attn 3C², attn c_proj C², c_fc 4C², mlp c_proj 4C²
    small = (3 * C + C + 4 * C + C + 4 * C) * 4  # four biases, two layer norms (float32)
    head = V * C * bytes_per_weight  # the tied head, quantized like the blocks
    rows = C * bytes_per_weight + C * 4  # one token row (quantized) and one position row
    return L * (matmul + small) + 2 * C * 4 + head + rows + 2 * L * context * C * 4
    #       blocks                ln_f                       keys and values


@pytest.mark.formula("backends.decode-bound")
def test_decode_bound():
    cfg = minillm.GPTConfig.preset("teacher")  # C = 192, divisible by Q8_0's blocks of 32
    model = minillm.GPT(cfg, params=quantize_params(minillm.GPT(cfg, seed=0).params, "q8_0"))
    for context in (1, 17, 128):
        # Q8_0 stores 32 int8 codes and one float16 scale per block: 34 / 32 bytes per weight
        assert decode_bytes_per_token(model, context) == _closed_form_bytes(cfg, context, 34 / 32)
    res = bench_decode(model, "numpy", prompt_tokens=4, new_tokens=2, repeat=1, bandwidth_gb_s=10.0)
    context = 4 + 2 // 2  # bench_decode counts the cache at the middle of the decode
    assert res["roofline_tok_s"] == round(10e9 / _closed_form_bytes(cfg, context, 34 / 32), 2)
    # batch 3: the weights are read once per step, the rows and the cache once per sequence
    C = cfg.n_embd
    per_sequence = C * 34 / 32 + 4 * C + 2 * cfg.n_layer * context * C * 4
    res = bench_decode(model, "numpy", prompt_tokens=4, new_tokens=2, repeat=1, batch=3, bandwidth_gb_s=10.0)
    step = _closed_form_bytes(cfg, context, 34 / 32) + 2 * per_sequence
    assert res["bytes_per_token"] == step and res["roofline_tok_s"] == round(3 * 10e9 / step, 2)


def _fused_sum(x: np.ndarray, codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, g: int) -> np.ndarray:
    """The formula term by term in float64: per block, the raw-code sum minus z times the x sum."""
    n_in, n_out = codes.shape
    y = np.zeros((x.shape[0], n_out))
    for k in range(n_in // g):
        rows = slice(k * g, (k + 1) * g)
        y += scale[k] * (x[:, rows] @ codes[rows] - zero[k] * x[:, rows].sum(1, keepdims=True))
    return y


@pytest.mark.formula("backends.fused-dequant-matmul")
@pytest.mark.parametrize("method", ["q8_0", "q4_0", "int4-g32"])
def test_fused_dequant_matmul(method):
    w = quantize_weight(RNG.standard_normal((128, 40)).astype(np.float32) * 0.1, method)
    x = RNG.standard_normal((3, 128))
    if method == "q8_0":
        codes, scale, zero = w.qs, w.d, np.zeros(w.d.shape)
    elif method == "q4_0":  # unsigned nibbles 0..15 with z = 8
        codes, scale, zero = w.codes(), w.d, np.full(w.d.shape, 8.0)
    else:  # affine per group: its own zero points
        codes, scale, zero = w.q, w.scale, w.zero_point
    got = _fused_sum(x, codes.astype(np.float64), scale.astype(np.float64), zero.astype(np.float64), 32)
    exact = x @ w.dequantize().astype(np.float64)  # dequantize first, then multiply
    np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-12)
    try:  # and the Numba kernels that compute it this way, where Numba is installed
        nb = backends.get("numba")
    except backends.BackendUnavailable:
        return
    y = nb.linear(x.astype(np.float32), w, None)
    bound = (128 + 4) * 2.0**-24 * (np.abs(x) @ (np.abs(w.dequantize()) + 16 * np.abs(np.repeat(scale, 32, 0))))
    assert np.all(np.abs(y - exact) <= bound)


@pytest.mark.formula("backends.median-interval")
def test_median_interval_coverage():
    """The coverage of $[x_{(k)}, x_{(n+1-k)}]$, checked two ways: by enumerating which of the n
    values fall below the median (each does with probability 1/2; the interval holds the median
    exactly when at least k fall on each side), and by drawing from a skewed distribution."""
    from itertools import product

    from minillm.bench import median_interval, median_order

    for n in range(1, 13):
        k, cover = median_order(n)
        for kk in range(1, (n + 1) // 2 + 1):
            hits = sum(kk <= sum(below) <= n - kk for below in product((0, 1), repeat=n))
            enumerated = hits / 2**n
            if kk == k:
                assert cover == pytest.approx(enumerated, abs=1e-15)
            if kk == k + 1:
                assert enumerated < 0.95  # k is the narrowest interval that still reaches 95 %
        assert cover >= 0.95 or k == 1
    assert median_order(9) == (2, 1 - 2 * (1 + 9) / 512)  # the suite's 9 rounds: 2nd and 8th, 96.1 %
    # 40,000 samples of 9 draws from an exponential distribution (median ln 2, far from its mean)
    draws = np.random.default_rng(5).exponential(size=(40_000, 9))
    held = np.mean([lo <= np.log(2) <= hi for lo, hi, _ in map(median_interval, draws)])
    assert held == pytest.approx(1 - 2 * 10 / 512, abs=0.005)  # 5 standard errors
    for bad in ([], [1.0, np.nan]):
        with pytest.raises(ValueError, match="finite and not empty"):
            median_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        median_interval([1.0, 2.0], confidence=1.0)
