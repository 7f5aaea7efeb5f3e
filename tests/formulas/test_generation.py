"""Formulas on docs/generation.md."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm import backends
from minillm.bench import kv_speedup_prediction, kv_speedup_roofline
from minillm.generate import sample
from minillm.nn.gpt import KVCache


@pytest.mark.formula("generation.kv-bytes")
def test_kv_cache_bytes():
    cfg = minillm.GPTConfig.preset("teacher")
    cache = KVCache.allocate(cfg, batch=3, backend=backends.get("numpy"))
    assert cache.k.nbytes + cache.v.nbytes == 2 * cfg.n_layer * 3 * cfg.block_size * cfg.n_embd * 4


@pytest.mark.formula("generation.kv-speedup")
def test_kv_speedup_prediction_by_direct_summation():
    cfg = minillm.GPTConfig.preset("gpt2")
    L, C, V = cfg.n_layer, cfg.n_embd, cfg.vocab_size
    P, n = 16, 256
    blk = 12 * L * C * C
    recompute = sum(2 * blk * t + 4 * L * C * sum(range(1, t + 1)) + 2 * V * C for t in range(P + 1, P + n + 1))
    cached = sum(2 * blk + 4 * L * C * t + 2 * V * C for t in range(P + 1, P + n + 1))
    assert kv_speedup_prediction(cfg, P, n) == pytest.approx(recompute / cached, rel=1e-12)


@pytest.mark.formula("generation.kv-speedup-roofline")
def test_kv_speedup_roofline_by_direct_summation():
    cfg = minillm.GPTConfig.preset("teacher")
    model = minillm.GPT(cfg, seed=0)
    L, C, V = cfg.n_layer, cfg.n_embd, cfg.vocab_size
    W = 4 * sum(w.size for name, w in model.params.items() if name != "wpe.weight") + 8 * C  # + 2 rows
    K = 2 * L * C * 4  # one position's keys and values, float32
    blk = 12 * L * C * C
    P, n, peak, bw = 16, 100, 2e11, 5e10
    recompute = sum(max((2 * blk * t + 4 * L * C * sum(range(1, t + 1)) + 2 * V * C) / peak, W / bw)
                    for t in range(P + 1, P + n + 1))
    cached = sum(max((2 * blk + 4 * L * C * t + 2 * V * C) / peak, (W + K * t) / bw) for t in range(P + 1, P + n + 1))
    got = kv_speedup_roofline(model, P, n, peak, bw)
    assert got == pytest.approx(recompute / cached, rel=1e-12)
    assert 1 < got < kv_speedup_prediction(cfg, P, n)  # the memory-bound cached steps gain less
    # with unlimited bandwidth the roofline prediction is the FLOP-count prediction
    assert kv_speedup_roofline(model, P, n, peak, 1e30) == pytest.approx(kv_speedup_prediction(cfg, P, n), rel=1e-12)


@pytest.mark.formula("generation.temperature")
def test_temperature_sampling_frequencies():
    z = np.array([[0.2, 1.0, -0.5, 0.7]])
    rng = np.random.default_rng(0)
    for tau in (0.5, 2.0):
        draws = np.array([sample(z, rng, tau)[0] for _ in range(20000)])
        p = np.exp(z[0] / tau) / np.exp(z[0] / tau).sum()
        np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, p, atol=0.015)
    assert sample(z, None, 0)[0] == 1  # tau = 0: greedy


@pytest.mark.formula("generation.top-p")
def test_top_p_keeps_tokens_whose_preceding_mass_is_below_p():
    p = np.array([0.1, 0.35, 0.05, 0.3, 0.2])
    rng = np.random.default_rng(1)
    cases = ((0.3, {1}), (0.34, {1}), (0.36, {1, 3}), (0.64, {1, 3}), (0.66, {1, 3, 4}), (1.0, set(range(5))))
    for top_p, kept in cases:
        draws = {int(sample(np.log(p)[None], rng, 1.0, top_p=top_p)[0]) for _ in range(400)}
        assert draws == kept, top_p
