"""KV-cache decoding equals recomputation; sampling is correct and reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm
from minillm import backends
from minillm.generate import sample
from minillm.nn.gpt import KVCache, forward


@pytest.fixture
def model64ctx():
    cfg = minillm.GPTConfig(vocab_size=50, block_size=80, n_layer=2, n_head=4, n_embd=32)
    return minillm.GPT(cfg, seed=3)


def test_cached_decoding_equals_recomputing_the_prefix_for_64_steps(model64ctx):
    model, be = model64ctx, backends.get("numpy")
    cfg = model.config
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 8))
    out = minillm.generate(model, prompt, 64, temperature=0)
    assert out.shape == (2, 72)
    cache = KVCache.allocate(cfg, 2, be)
    logits = forward(model.params, cfg, out[:, :8], cache, be, last_only=True)
    worst = 0.0
    for t in range(8, 72):
        full = model.forward(out[:, :t])[:, -1]  # recompute everything from scratch
        worst = max(worst, float(np.abs(full - logits[:, -1]).max()))
        np.testing.assert_array_equal(full.argmax(-1), out[:, t])  # identical greedy tokens
        logits = forward(model.params, cfg, out[:, t : t + 1], cache, be, last_only=True)
    assert worst <= 1e-4


def test_prefill_in_pieces_equals_prefill_at_once(model64ctx):
    model, be = model64ctx, backends.get("numpy")
    idx = np.arange(30)[None] % model.config.vocab_size
    whole = model.forward(idx)
    cache = KVCache.allocate(model.config, 1, be)
    parts = [forward(model.params, model.config, idx[:, a:b], cache, be) for a, b in ((0, 7), (7, 8), (8, 30))]
    np.testing.assert_allclose(np.concatenate(parts, 1), whole, atol=1e-5, rtol=0)


def test_greedy_is_argmax_and_temperature_zero_ignores_seed(model64ctx):
    a = minillm.generate(model64ctx, [[1, 2, 3]], 10, temperature=0, seed=1)
    b = minillm.generate(model64ctx, [[1, 2, 3]], 10, temperature=0, seed=2)
    np.testing.assert_array_equal(a, b)


def test_seeded_sampling_is_reproducible_and_seeds_differ(model64ctx):
    kw = dict(temperature=1.0, top_k=20, top_p=0.9)
    a = minillm.generate(model64ctx, [[1, 2, 3]], 30, seed=7, **kw)
    b = minillm.generate(model64ctx, [[1, 2, 3]], 30, seed=7, **kw)
    c = minillm.generate(model64ctx, [[1, 2, 3]], 30, seed=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stream_yields_the_same_tokens_as_generate(model64ctx):
    out = minillm.generate(model64ctx, [[4, 5]], 12, seed=3)
    streamed = np.stack(list(minillm.stream(model64ctx, [[4, 5]], 12, seed=3)), 1)
    np.testing.assert_array_equal(out[:, 2:], streamed)


def test_batched_generation_equals_one_sequence_at_a_time(model64ctx):
    prompts = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    both = minillm.generate(model64ctx, prompts, 16, temperature=0)
    for b in range(2):
        np.testing.assert_array_equal(both[b], minillm.generate(model64ctx, prompts[b : b + 1], 16, temperature=0)[0])


def test_generation_continues_past_the_context_window():
    cfg = minillm.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = minillm.GPT(cfg, seed=0)
    out = minillm.generate(model, [[1, 2, 3]], 20, temperature=0)
    assert out.shape == (1, 23)
    # Token 8 still sees the full window 0..7; then the cache is full and generation slides
    # to the last block_size/2 tokens, exactly as recomputing on that window would.
    assert model.forward(out[:, 0:8])[0, -1].argmax() == out[0, 8]
    assert model.forward(out[:, 5:9])[0, -1].argmax() == out[0, 9]
    assert model.forward(out[:, 5:10])[0, -1].argmax() == out[0, 10]


def test_sample_top_k_only_draws_the_k_most_likely():
    logits = np.log(np.array([[0.05, 0.4, 0.3, 0.2, 0.05]]))
    rng = np.random.default_rng(0)
    draws = {int(sample(logits, rng, 1.0, top_k=2)[0]) for _ in range(300)}
    assert draws == {1, 2}


def test_sample_top_p_keeps_the_smallest_nucleus():
    # sorted probs .4 .3 .2 .05 .05: mass before each = 0, .4, .7, .9, .95 -> top_p=0.7 keeps {1, 2}
    logits = np.log(np.array([[0.05, 0.4, 0.3, 0.2, 0.05]]))
    rng = np.random.default_rng(0)
    draws = [int(sample(logits, rng, 1.0, top_p=0.7)[0]) for _ in range(4000)]
    assert set(draws) == {1, 2}
    assert np.mean(np.array(draws) == 1) == pytest.approx(0.4 / 0.7, abs=0.03)


def test_sample_frequencies_follow_the_softmax_with_temperature():
    logits = np.array([[1.0, 2.0, 0.5]])
    rng = np.random.default_rng(1)
    draws = np.array([int(sample(logits, rng, 0.5)[0]) for _ in range(20000)])
    p = np.exp(logits[0] / 0.5) / np.exp(logits[0] / 0.5).sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / draws.size, p, atol=0.015)


@settings(max_examples=15, deadline=None)
@given(prompt=st.lists(st.integers(0, 49), min_size=1, max_size=10), n=st.integers(1, 12))
def test_property_cached_greedy_equals_uncached_argmax(prompt, n):
    model = minillm.GPT(minillm.GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16), seed=4)
    out = minillm.generate(model, [prompt], n, temperature=0)
    for t in range(len(prompt), out.shape[1]):
        assert model.forward(out[:, :t])[0, -1].argmax() == out[0, t]


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(seed=1.5), "seed"),
        (dict(backend="tpu9000"), "unknown backend"),
    ],
)
def test_bad_generation_arguments_raise(model64ctx, kwargs, err):
    kw = dict(max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=err):
        minillm.generate(model64ctx, [[1, 2]], **kw)
