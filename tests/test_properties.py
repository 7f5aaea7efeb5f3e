"""Property-based tests (hypothesis) that the rest of the suite does not already hold.

Already elsewhere: tokenizer round trips (test_tokenizer), quantize/dequantize within half a step
and constant blocks (compress/test_quantize), magnitude-mask counts on 1-D weights
(compress/test_prune), greedy cached decoding equal to the uncached argmax (test_generate). Here:

- the llama.cpp formats and the weight kinds dequantize within their stated error bounds;
- N:M and magnitude masks have the exact structure they promise on arbitrary shapes;
- low-rank error is Eckart–Young's, checked against eigenvalues of $W^\\top W$ (another algorithm);
- KV-cache decoding: chunked prefill equals one pass, and *sampled* streaming (top-k, top-p, the
  sliding window) draws exactly the tokens of an uncached reference sampler;
- tokenizers survive their JSON description, and decoding is total on valid ids.

Example counts are bounded so the file runs in a few seconds.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minillm
from minillm import backends
from minillm.compress import lowrank as LR
from minillm.compress import prune as P
from minillm.compress import quantize as Q
from minillm.generate import sample
from minillm.nn.gpt import KVCache, forward, init_params
from minillm.tokenizer import GPT2Tokenizer, tokenizer_from_json, tokenizer_to_json

FAST = settings(max_examples=40, deadline=None)

# Finite float32 values over a wide dynamic range (subnormal block scales included).
values = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def blocks(max_blocks: int = 3, max_cols: int = 3):
    """Arrays (32 k, n): whole llama.cpp blocks of 32 inputs."""
    return st.tuples(st.integers(1, max_blocks), st.integers(1, max_cols)).flatmap(
        lambda kn: hnp.arrays(np.float32, (32 * kn[0], kn[1]), elements=values)
    )


def fp16_error(d: np.ndarray) -> np.ndarray:
    """Bound on |d - float16(d)|: half an ulp, 2^-11 relative, or 2^-25 absolute among subnormals."""
    return 2.0**-11 * np.abs(d) + 2.0**-25


# ------------------------------------------------------------------------------------------------
# Quantization bounds.
@FAST
@given(blocks())
def test_q8_0_error_is_half_a_step_plus_the_fp16_scale(x):
    qs, d16 = Q.q8_0(x)
    deq = Q.dequantize_q8_0(qs, d16).astype(np.float64)
    d = np.abs(x.astype(np.float64)).reshape(-1, 32, x.shape[1]).max(axis=1) / 127  # exact step
    d_el = np.repeat(d, 32, axis=0)
    bound = d_el / 2 + 127 * fp16_error(d_el) + 2.0**-20 * d_el
    assert np.all(np.abs(x - deq) <= bound)


@FAST
@given(blocks())
def test_q4_0_error_is_half_a_step_except_one_clipped_level(x):
    qs, d16 = Q.q4_0(x)
    deq = Q.dequantize_q4_0(qs, d16).astype(np.float64)
    b = x.astype(np.float64).reshape(-1, 32, x.shape[1])
    first = np.abs(b).argmax(axis=1)[:, None]
    d = np.take_along_axis(b, first, axis=1)[:, 0] / -8  # signed step, largest magnitude -> -8 d
    d_el = np.abs(np.repeat(d, 32, axis=0))
    ratio = np.divide(x, np.repeat(d, 32, axis=0), out=np.zeros(x.shape), where=d_el > 0)
    # Codes run -8..7: values beyond 7.5 steps on the other side clip to 7, one step off at most.
    step = np.where(ratio > 7.5, d_el, d_el / 2)
    bound = step + 8 * fp16_error(d_el) + 2.0**-20 * d_el
    assert np.all(np.abs(x - deq) <= bound)
    assert qs.dtype == np.uint8 and qs.max() <= 15


@FAST
@given(blocks(max_blocks=4), st.integers(2, 8), st.sampled_from([8, 16, 32]))
def test_int_per_group_rounds_scales_up_so_nothing_clips(x, bits, g):
    kind = Q.quantize_weight(x, f"int{bits}-g{g}")
    deq = kind.dequantize().astype(np.float64)
    s = np.repeat(kind.scale.astype(np.float64), g, axis=0)
    assert np.all(np.abs(x - deq) <= s / 2 * (1 + 2.0**-20) + 2.0**-22 * np.abs(x))


@FAST
@given(blocks())
def test_int8_per_channel_error_is_half_a_step(x):
    kind = Q.quantize_weight(x, "int8")
    step = np.abs(x.astype(np.float64)).max(axis=0) / 127
    s = kind.scale.astype(np.float64)  # max|x|/127, floored at EPS (PyTorch's) so it is never 0
    assert np.all(s >= step * (1 - 2.0**-22)) and np.all(s <= np.maximum(step * (1 + 2.0**-22), Q.EPS))
    assert np.all(np.abs(x - kind.dequantize()) <= s / 2 * (1 + 2.0**-20) + 2.0**-22 * np.abs(x))


# ------------------------------------------------------------------------------------------------
# Pruning masks.
def distinct_weights(shape, seed):
    """Distinct magnitudes, so the kept set is unambiguous."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return ((rng.permutation(n) + 1.0) * rng.choice([-1.0, 1.0], n)).reshape(shape)


@FAST
@given(st.integers(1, 8), st.integers(1, 4), st.data())
def test_n_m_mask_keeps_the_n_largest_of_every_group(groups, cols, data):
    m = data.draw(st.integers(1, 8))
    n = data.draw(st.integers(1, m))
    w = distinct_weights((groups * m, cols), data.draw(st.integers(0, 2**16)))
    mask = P.n_m_mask(w, n, m)
    assert mask.dtype == bool and mask.shape == w.shape
    g = mask.reshape(groups, m, cols)
    a = np.abs(w).reshape(groups, m, cols)
    assert np.all(g.sum(axis=1) == n)  # exactly n kept per group of m inputs, per output
    kept_min = np.where(g, a, np.inf).min(axis=1)
    pruned_max = np.where(g, -np.inf, a).max(axis=1)
    assert np.all(kept_min > pruned_max)
    np.testing.assert_array_equal(P.nm_sparse(w, n, m).dequantize(), w * mask)  # the compact kind agrees


@FAST
@given(st.integers(1, 12), st.integers(1, 12), st.floats(0, 1), st.integers(0, 2**16))
def test_magnitude_mask_on_matrices_prunes_round_half_even_of_the_smallest(rows, cols, s, seed):
    w = distinct_weights((rows, cols), seed)
    mask = P.magnitude_mask(w, s)
    k = round(s * w.size)
    assert np.count_nonzero(~mask) == k
    assert P.sparsity(mask) == k / w.size
    if 0 < k < w.size:
        assert np.abs(w[~mask]).max() < np.abs(w[mask]).min()


@FAST
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4), st.floats(0, 1),
       st.integers(0, 2**16))  # fmt: skip
def test_global_masks_prune_the_globally_smallest(shapes, s, seed):
    flat = distinct_weights((sum(r * c for r, c in shapes),), seed)
    weights, at = {}, 0
    for i, (r, c) in enumerate(shapes):
        weights[f"w{i}"] = flat[at : at + r * c].reshape(r, c)
        at += r * c
    masks = P.global_magnitude_masks(weights, s)
    kept = np.concatenate([np.abs(weights[k])[masks[k]] for k in weights])
    pruned = np.concatenate([np.abs(weights[k])[~masks[k]] for k in weights])
    assert pruned.size == round(s * flat.size)
    if kept.size and pruned.size:
        assert pruned.max() < kept.min()


# ------------------------------------------------------------------------------------------------
# Low rank.
@FAST
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**16), st.data())
def test_low_rank_error_is_eckart_young(m, n, seed, data):
    rank = data.draw(st.integers(1, min(m, n)))
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(m, n)) * rng.uniform(0.1, 10)
    a, b = LR.svd_factorize(w, rank)
    err = w - a @ b
    # ||W - W_r||_F^2 is the sum of the n - r smallest eigenvalues of W^T W (or W W^T).
    gram = w.T @ w if n <= m else w @ w.T
    eig = np.sort(np.clip(np.linalg.eigvalsh(gram), 0, None))
    tail = eig[: len(eig) - rank].sum()
    scale = eig.sum() + 1e-300
    assert abs(np.sum(err**2) - tail) <= 1e-9 * scale
    assert np.linalg.matrix_rank(a @ b, tol=1e-9 * np.sqrt(scale)) <= rank
    # No other rank-r matrix does better, e.g. W projected on a random r-dimensional subspace.
    q, _ = np.linalg.qr(rng.normal(size=(n, rank)))
    assert np.sum(err**2) <= np.sum((w - w @ q @ q.T) ** 2) + 1e-9 * scale
    if rank == min(m, n):  # full rank is exact
        np.testing.assert_allclose(a @ b, w, atol=1e-10 * np.sqrt(scale))


# ------------------------------------------------------------------------------------------------
# Cached vs uncached decoding.
configs = st.builds(
    lambda layers, heads, width, vocab: minillm.GPTConfig(vocab, 24, layers, heads, heads * width),
    st.integers(1, 2), st.integers(1, 3), st.sampled_from([4, 8]), st.integers(5, 40),
)  # fmt: skip


def sharp_model(cfg: minillm.GPTConfig, seed: int) -> minillm.GPT:
    """Weights 5x GPT-2's init, so attention is peaked and logits spread (a harder test)."""
    params = {k: (v * 5 if v.ndim == 2 else v) for k, v in init_params(cfg, seed).items()}
    return minillm.GPT(cfg, params=params)


@FAST
@given(configs, st.integers(0, 2**16), st.lists(st.integers(1, 8), min_size=1, max_size=4))
def test_prefill_in_random_chunks_equals_one_pass(cfg, seed, chunks):
    model, be = sharp_model(cfg, seed), backends.get("numpy")
    T = min(sum(chunks), cfg.block_size)
    idx = np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, T))
    whole = model.forward(idx)
    cache, parts, at = KVCache.allocate(cfg, 2, be), [], 0
    for c in chunks:
        if at < T:
            parts.append(forward(model.params, cfg, idx[:, at : at + c], cache, be))
            at += c
    assert np.abs(np.concatenate(parts, axis=1) - whole).max() <= 1e-4


@settings(max_examples=25, deadline=None)
@given(configs, st.integers(0, 2**16), st.integers(1, 24), st.integers(1, 40), st.floats(0.3, 2.0),
       st.one_of(st.none(), st.integers(1, 6)), st.one_of(st.none(), st.floats(0.2, 1.0)))  # fmt: skip
def test_sampled_stream_draws_the_tokens_of_an_uncached_sampler(cfg, seed, prompt_len, n, temp, top_k, top_p):
    model = sharp_model(cfg, seed)
    prompt = np.random.default_rng(seed + 1).integers(0, cfg.vocab_size, (1, prompt_len))
    got = [int(t[0]) for t in minillm.stream(model, prompt, n, temp, top_k, top_p, seed=seed)]
    # Reference: recompute the whole window each step; when it overflows the context, keep the
    # last block_size // 2 tokens (the documented sliding window). Same generator, same draws.
    rng, window, want = np.random.default_rng(seed), list(prompt[0]), []
    for _ in range(n):
        logits = model.forward(np.array([window]))[:, -1]
        tok = int(sample(logits, rng, temp, top_k, top_p)[0])
        want.append(tok)
        window.append(tok)
        if len(window) > cfg.block_size:
            window = window[-(cfg.block_size // 2) :]
    assert got == want


# ------------------------------------------------------------------------------------------------
# Tokenizers.
corpora = st.text(alphabet="ab c\nde", min_size=1, max_size=60)


@FAST
@given(corpora, st.integers(0, 20), st.text(max_size=40))
def test_bpe_json_description_encodes_identically(corpus, n_merges, text):
    tok = GPT2Tokenizer.train(corpus, n_merges)
    again = tokenizer_from_json(json.loads(json.dumps(tokenizer_to_json(tok))))
    assert again == tok
    ids = tok.encode(text)
    assert again.encode(text) == ids and again.decode(ids) == text


@FAST
@given(corpora, st.integers(0, 20), st.data())
def test_bpe_decode_is_total_on_valid_ids(corpus, n_merges, data):
    tok = GPT2Tokenizer.train(corpus, n_merges)
    ids = data.draw(st.lists(st.sampled_from(sorted(tok.decoder)), max_size=30))
    text = tok.decode(ids)  # invalid UTF-8 becomes U+FFFD, never an exception
    assert isinstance(text, str)
    if "\ufffd" in text:
        return
    # When the bytes are valid UTF-8, re-encoding gives the same bytes (maybe other ids).
    assert b"".join(tok.token_bytes(i) for i in tok.encode(text)) == text.encode("utf-8")
