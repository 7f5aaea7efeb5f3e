"""One suite for every backend: each kernel and the whole model, against NumPy and float64.

Parametrised over every backend minillm knows; one that is unavailable here (no library, no
GPU) is *skipped with the reason*, never silently dropped. ``cupy[numpy]`` is the CuPy backend's
code path with NumPy standing in for CuPy, so its device-independent logic is tested on any
machine. Kernel tolerances are the classic float32 rounding-error bounds: a dot product of length
$n$ computed in any order is within $\\gamma_n \\sum_i |x_i w_i|$ of the exact value,
$\\gamma_n \\approx n\\,2^{-24}$ (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1).
"""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest

import minillm
from minillm import backends
from minillm import kinds as K
from minillm.backends import BackendUnavailable
from minillm.backends.cupy_ import CupyBackend
from minillm.backends.numpy_ import NumpyBackend, WeightCache
from minillm.compress.lowrank import svd_factorize
from minillm.compress.prune import magnitude_mask, nm_sparse
from minillm.compress.quantize import quantize, quantize_params, quantize_weight
from minillm.nn.gpt import KVCache, forward

EPS32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32, 2^-24
NAMES = [*backends.names(), "cupy[numpy]"]


def get_backend(name: str):
    if name == "cupy[numpy]":
        return CupyBackend(xp=np)
    try:
        return backends.get(name)
    except BackendUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(params=NAMES, scope="module")
def be(request):
    return get_backend(request.param)


def to_np(be, a) -> np.ndarray:
    return np.asarray(be.to_numpy(a))


# ------------------------------------------------------------------------------------------
# Weights of every kind, with the magnitude matrix M that bounds the rounding error of x @ W.
IN, OUT = 128, 96
RNG = np.random.default_rng(7)
W_DENSE = (RNG.standard_normal((IN, OUT)) * 0.1).astype(np.float32)
BIAS = (RNG.standard_normal(OUT) * 0.1).astype(np.float32)


def _group_symmetric(w):
    qt = quantize(w, bits=4, symmetric=True, group_size=32)
    return K.IntPerGroup(qt.q, qt.scale.astype(np.float32), None, 4, 32)


def _masked(w):
    return K.Masked(w, magnitude_mask(w, 0.5))


KINDS = {
    "dense": lambda w: w,
    "int8": lambda w: quantize_weight(w, "int8"),
    "int4-g32": lambda w: quantize_weight(w, "int4-g32"),
    "int4-g32-symmetric": _group_symmetric,
    "q8_0": lambda w: quantize_weight(w, "q8_0"),
    "q4_0": lambda w: quantize_weight(w, "q4_0"),
    "lowrank": lambda w: K.LowRank(*svd_factorize(w, 16)),
    "2:4": lambda w: nm_sparse(w, 2, 4),
    "3:8": lambda w: nm_sparse(w, 3, 8),  # m != 4: Numba's other way of picking the inputs
    "masked": _masked,
}


def magnitude(w) -> tuple[np.ndarray, int]:
    """(M, n): |x| @ M bounds the terms of each output's sum of n products (shifts included)."""
    if isinstance(w, K.LowRank):  # (xA)B: two sums, of r and of `in` terms
        return np.abs(w.a.astype(np.float64)) @ np.abs(w.b.astype(np.float64)), w.shape[0] + w.rank
    dense = np.abs(K.as_dense(w).astype(np.float64))
    if isinstance(w, K.Q4_0):  # the kernel subtracts 8 d sum(x) from sum(x q d)
        dense = dense + 16 * np.abs(np.repeat(w.d.astype(np.float64), 32, axis=0))
    if isinstance(w, K.IntPerGroup) and w.zero_point is not None:
        shift = np.abs(w.scale.astype(np.float64) * w.zero_point)
        dense = dense + 2 * np.repeat(shift, w.group_size, axis=0)
    return dense, w.shape[0]


# Rows: 1 (decode), 5 (a short prefill), 40 and 300 (Numba switches to dequantize + BLAS: at 32
# rows for dense weights, 256 for the tiled integer kinds; never for N:M and Q4_0 on VNNI).
@pytest.mark.parametrize("rows", [1, 5, 40, 300])
@pytest.mark.parametrize("kind", list(KINDS))
def test_linear_every_weight_kind(be, kind, rows):
    w = KINDS[kind](W_DENSE)
    x = RNG.standard_normal((rows, IN)).astype(np.float32)
    got = to_np(be, be.linear(be.asarray(x), be.prepare({"w": w})["w"], be.asarray(BIAS)))
    exact = x.astype(np.float64) @ K.as_dense(w).astype(np.float64) + BIAS
    M, n = magnitude(w)
    bound = (n + 4) * EPS32 * (np.abs(x) @ M + np.abs(BIAS)) + 1e-30
    assert got.shape == (rows, OUT) and got.dtype == np.float32
    assert np.all(np.abs(got - exact) <= bound), f"worst error / bound = {np.max(np.abs(got - exact) / bound):.2f}"
    # and the backend agrees with the reference kernel of the kind itself
    np.testing.assert_allclose(got, NumpyBackend().linear(x, w, BIAS), rtol=0, atol=2 * bound.max())


def test_linear_without_bias_and_unprepared_kind(be):
    w = quantize_weight(W_DENSE, "q4_0")  # a raw kind, not passed through prepare
    x = RNG.standard_normal((3, IN)).astype(np.float32)
    got = to_np(be, be.linear(be.asarray(x), w, None))
    np.testing.assert_allclose(got, x @ w.dequantize(), rtol=0, atol=1e-5)


def test_layer_norm(be):
    x = (RNG.standard_normal((7, 48)) * 3 + 1).astype(np.float32)
    g, b = RNG.standard_normal(48).astype(np.float32), RNG.standard_normal(48).astype(np.float32)
    got = to_np(be, be.layer_norm(be.asarray(x), be.asarray(g), be.asarray(b), 1e-5))
    x64 = x.astype(np.float64)
    xhat = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    exact = xhat * g + b
    # x-hat carries a relative error of a few units of roundoff per statistic: bound it by 64 u
    bound = 64 * EPS32 * (np.abs(xhat) * np.abs(g) + np.abs(b) + 1)
    assert np.all(np.abs(got - exact) <= bound)


def test_gelu(be):
    x = np.concatenate([np.linspace(-9, 9, 301), RNG.standard_normal(99) * 3]).astype(np.float32).reshape(4, 100)
    got = to_np(be, be.gelu(be.asarray(x)))
    x64 = x.astype(np.float64)
    exact = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    # tanh is good to a few ulp; 0.5 x (1 + t) then errs by about |x| u: bound 8 u (|x| + |y|)
    assert np.all(np.abs(got - exact) <= 8 * EPS32 * (np.abs(x64) + np.abs(exact)))


def test_softmax(be):
    x = (RNG.standard_normal((6, 50)) * 4).astype(np.float32)
    got = to_np(be, be.softmax(be.asarray(x)))
    z = np.exp(x - x.max(-1, keepdims=True).astype(np.float64))
    exact = z / z.sum(-1, keepdims=True)
    assert np.all(np.abs(got - exact) <= (50 + 8) * EPS32 * exact)


@pytest.mark.parametrize("T", [1, 5])
def test_attention_over_the_kv_cache(be, T):
    """Write T new keys/values after 7 cached ones with the backend's own kv_write, then attend."""
    B, H, D, S_max, pos0 = 2, 3, 16, 20, 7
    cache = be.kv_alloc(2, B, H, S_max, D, np.float32)
    k_all = RNG.standard_normal((B, H, pos0 + T, D)).astype(np.float32)
    v_all = RNG.standard_normal((B, H, pos0 + T, D)).astype(np.float32)
    q = RNG.standard_normal((B, H, T, D)).astype(np.float32)
    cache = be.kv_write(cache, 1, 0, be.asarray(k_all[:, :, :pos0]), be.asarray(v_all[:, :, :pos0]))
    cache = be.kv_write(cache, 1, pos0, be.asarray(k_all[:, :, pos0:]), be.asarray(v_all[:, :, pos0:]))
    S = pos0 + T
    got = to_np(be, be.attention(be.asarray(q), cache[0][1, :, :, :S], cache[1][1, :, :, :S]))
    np.testing.assert_array_equal(to_np(be, cache[0][1, :, :, :S]), k_all)  # the cache holds them
    # float64 oracle: query t sits at position pos0 + t and sees keys 0..pos0 + t
    s = q.astype(np.float64) @ k_all.transpose(0, 1, 3, 2) / np.sqrt(D)
    s[..., np.arange(S)[None, :] > pos0 + np.arange(T)[:, None]] = -np.inf
    p = np.exp(s - s.max(-1, keepdims=True))
    exact = (p / p.sum(-1, keepdims=True)) @ v_all
    # a convex combination of values whose weights err by (S + D + 8) u relatively
    assert np.all(np.abs(got - exact) <= (S + D + 8) * EPS32 * np.abs(v_all).max() * 4)
    # the whole cache with n_keys = S (how the model calls it): the same, unused positions ignored
    k_cache, v_cache = to_np(be, cache[0][1]).copy(), to_np(be, cache[1][1]).copy()
    k_cache[:, :, S:] = v_cache[:, :, S:] = np.nan
    k_cache, v_cache = be.asarray(k_cache), be.asarray(v_cache)
    whole = to_np(be, be.attention(be.asarray(q), k_cache, v_cache, n_keys=S))
    np.testing.assert_allclose(whole, got, rtol=0, atol=1e-6)
    for bad in (T - 1, S_max + 1, 2.0):
        with pytest.raises(ValueError, match="n_keys"):
            be.attention(be.asarray(q), k_cache, v_cache, n_keys=bad)


def test_lm_head(be):
    x = RNG.standard_normal((3, 32)).astype(np.float32)
    wte = RNG.standard_normal((50, 32)).astype(np.float32)
    got = to_np(be, be.lm_head(be.asarray(x), be.prepare({"w": wte})["w"]))
    exact = x.astype(np.float64) @ wte.T
    assert np.all(np.abs(got - exact) <= 36 * EPS32 * (np.abs(x) @ np.abs(wte).T))


@pytest.mark.parametrize("method", ["int8", "q8_0", "q4_0", "int4-g32"])
def test_embed_and_head_of_a_quantized_tied_embedding(be, method):
    wte = (RNG.standard_normal((50, 64)) * 0.1).astype(np.float32)
    tied = K.TiedEmbedding(quantize_weight(wte.T, method))
    dense = tied.dequantize()
    w = be.prepare({"wte.weight": tied})["wte.weight"]
    idx = np.array([[3, 49, 3], [0, 1, 2]])
    np.testing.assert_allclose(to_np(be, be.embed(w, be.asarray(idx))), dense[idx], rtol=0, atol=1e-7)
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    exact = x.astype(np.float64) @ dense.T.astype(np.float64)
    got = to_np(be, be.lm_head(be.asarray(x), w))
    assert np.all(np.abs(got - exact) <= 80 * EPS32 * (np.abs(x) @ np.abs(dense).T) + 1e-6)


def test_whole_model_with_input_major_weights(be, small_model):
    """The memory layout of dense weights changes speed, never the result — whichever it is."""
    from minillm.bench import input_major

    assert small_model.params["h.0.mlp.c_fc.weight"].flags.f_contiguous  # output-major by default
    c_order = minillm.GPT(SMALL, params=input_major(small_model.params))
    assert c_order.params["h.0.mlp.c_fc.weight"].flags.c_contiguous
    f_order = minillm.GPT(SMALL, params={k: np.asfortranarray(v) for k, v in small_model.params.items()})
    idx = np.random.default_rng(4).integers(0, SMALL.vocab_size, (2, 9))
    want = small_model.forward(idx)
    for model in (c_order, f_order):  # f_order: the embeddings too
        np.testing.assert_allclose(model.forward(idx, backend=be), want, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------
# The whole model: logits within 1e-4 of NumPy and identical greedy tokens for 32 steps.
SMALL = minillm.GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=4, n_embd=64)


@pytest.fixture(scope="module")
def small_model():
    return minillm.GPT(SMALL, seed=5)


@pytest.fixture(scope="module")
def tiny_model():
    return minillm.GPT(minillm.GPTConfig.preset("tiny"), seed=1)


def compressed(model, kind: str) -> minillm.GPT:
    if kind == "fp32":
        return model
    if kind in ("int8", "q8_0", "q4_0", "int4-g32"):
        params = quantize_params(model.params, kind)
    else:
        params = {k: (KINDS[kind](v) if k.endswith(K.BLOCK_MATMUL_SUFFIXES) else v) for k, v in model.params.items()}
    return minillm.GPT(model.config, params=params)


def test_whole_model_logits_and_greedy_tokens_tiny(be, tiny_model):
    """The tiny preset (block_size 32): 4 + 32 tokens also slides the context window once."""
    idx = np.random.default_rng(0).integers(0, 64, (2, 11))
    np.testing.assert_allclose(tiny_model.forward(idx, backend=be), tiny_model.forward(idx), rtol=0, atol=1e-4)
    want = minillm.generate(tiny_model, idx[:, :4], 32, temperature=0)
    np.testing.assert_array_equal(minillm.generate(tiny_model, idx[:, :4], 32, temperature=0, backend=be), want)


@pytest.mark.parametrize("kind", ["fp32", "int8", "q8_0", "q4_0", "int4-g32", "lowrank", "2:4", "masked"])
def test_whole_model_every_weight_kind(be, small_model, kind):
    model = compressed(small_model, kind)
    idx = np.random.default_rng(1).integers(0, SMALL.vocab_size, (2, 9))
    np.testing.assert_allclose(model.forward(idx, backend=be), model.forward(idx), rtol=0, atol=1e-4)
    if kind in ("fp32", "q4_0"):  # greedy decoding through the KV cache
        want = minillm.generate(model, idx[:, :8], 32, temperature=0)
        np.testing.assert_array_equal(minillm.generate(model, idx[:, :8], 32, temperature=0, backend=be), want)


def test_cached_steps_equal_one_prefill(be, small_model):
    """Prefill 6 tokens, then 5 one-token steps: the same logits as one 11-token forward."""
    cfg, idx = SMALL, np.random.default_rng(2).integers(0, SMALL.vocab_size, (1, 11))
    params = be.prepare(small_model.params)
    cache = KVCache.allocate(cfg, 1, be)
    parts = [to_np(be, forward(params, cfg, idx[:, :6], cache, be))]
    for t in range(6, 11):
        parts.append(to_np(be, forward(params, cfg, idx[:, t : t + 1], cache, be)))
    assert cache.pos == 11
    np.testing.assert_allclose(np.concatenate(parts, 1), small_model.forward(idx), rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------
# Registry.
def test_registry_names_and_errors():
    assert backends.names() == ["numpy", "numba", "cupy", "jax"]
    assert "numpy" in backends.available()
    assert set(backends.available()).isdisjoint(backends.unavailable())
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        backends.get("tpu")
    with pytest.raises(ValueError, match="takes no option"):
        backends.get("numpy:bfloat16")
    with pytest.raises(TypeError, match="backend must be a name"):
        backends.get(3)
    be = NumpyBackend()
    assert backends.get(be) is be
    with pytest.raises(TypeError, match="weight must be a numpy array or one of minillm.kinds"):
        be.linear(np.ones((1, 2), np.float32), [[1.0]], None)


def test_missing_library_names_the_extra(monkeypatch):
    real = backends.importlib.import_module

    def fake(name, *a, **kw):
        if name.endswith("numba_"):
            raise ModuleNotFoundError("No module named 'numba'", name="numba")
        return real(name, *a, **kw)

    monkeypatch.setattr(backends.importlib, "import_module", fake)
    monkeypatch.delitem(backends._CACHE, "numba", raising=False)
    with pytest.raises(BackendUnavailable, match=r"pip install 'minillm\[numba\]'"):
        backends.get("numba")
    assert "numba" in backends.unavailable()


def test_cupy_without_a_gpu_says_so():
    cupy = pytest.importorskip("cupy", reason="cupy-cuda12x is not installed")
    if cupy.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(BackendUnavailable, match="no CUDA GPU is present"):
        backends.get("cupy")
    assert "cupy" not in backends.available()


@pytest.mark.gpu
def test_cupy_weights_live_on_the_gpu_and_move_once():
    be = get_backend("cupy")
    import cupy

    model = compressed(minillm.GPT(SMALL, seed=5), "q4_0")
    p1, p2 = be.prepare(model.params), be.prepare(model.params)
    w = p1["h.0.attn.c_attn.weight"]
    assert isinstance(w.packed, cupy.ndarray) and w.packed.dtype == np.uint8  # codes, not floats
    assert all(p1[k] is p2[k] for k in p1)  # the second prepare copies nothing


# ------------------------------------------------------------------------------------------
# Backend-specific properties.
def test_weight_cache_forgets_freed_weights():
    cache, calls = WeightCache(), []
    w = np.ones(3)
    assert cache.get(w, lambda a: calls.append(1) or a * 2) is cache.get(w, lambda a: calls.append(1) or a * 2)
    assert len(calls) == 1 and len(cache) == 1
    del w
    gc.collect()
    assert len(cache) == 0


def test_numba_decode_product_makes_no_float32_copy_of_the_weight():
    """Fused dequantize-multiply: a one-row product with an int8 (512, 2048) weight allocates far
    less than the 4 MiB a float32 copy would take (NumPy's reference kernel does allocate it)."""
    nb = get_backend("numba")
    w = nb.kernel_weight(quantize_weight(RNG.standard_normal((512, 2048)).astype(np.float32), "q4_0"))
    x = RNG.standard_normal((1, 512)).astype(np.float32)
    nb.linear(x, w, None)  # compile outside the measurement

    def peak(fn) -> int:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    dense_bytes = 512 * 2048 * 4
    kind = quantize_weight(RNG.standard_normal((512, 2048)).astype(np.float32), "q4_0")
    assert peak(lambda: NumpyBackend().linear(x, kind, None)) >= dense_bytes  # the test can fail
    assert peak(lambda: nb.linear(x, w, None)) < dense_bytes / 50


def test_numba_cache_dir_defaults_when_the_package_is_read_only(monkeypatch, tmp_path):
    nb = pytest.importorskip("minillm.backends.numba_", reason="numba is not installed")
    monkeypatch.setattr(nb.os, "access", lambda path, mode: False)
    assert nb.default_cache_dir(str(tmp_path), {}) == os.path.expanduser("~/.cache/minillm/numba")
    assert nb.default_cache_dir(str(tmp_path), {"NUMBA_CACHE_DIR": "/x"}) is None  # the user's choice wins
    monkeypatch.setattr(nb.os, "access", lambda path, mode: True)
    assert nb.default_cache_dir(str(tmp_path), {}) is None


def test_numba_compile_reports_its_time():
    nb = get_backend("numba")
    assert nb.compile() >= 0 and nb.compile_s is not None


def test_jax_decode_does_not_recompile_per_position(small_model):
    jb = type(get_backend("jax"))()  # a fresh instance: nothing compiled by other tests
    assert jb.min_bucket == 32
    idx = np.random.default_rng(3).integers(0, SMALL.vocab_size, (2, 8))
    minillm.generate(small_model, idx, 3, temperature=0, backend=jb)  # prefill (T=8) and decode
    before = jb.compile_cache_size()
    minillm.generate(small_model, idx, 24, temperature=0, backend=jb)  # positions up to 31: same bucket
    assert jb.compile_cache_size() == before
    minillm.generate(small_model, idx, 40, temperature=0, backend=jb)  # up to 47: one more bucket (64)
    assert jb.compile_cache_size() == before + 1


def test_jax_cache_buffers_are_donated(small_model):
    jb = get_backend("jax")
    cache = KVCache.allocate(SMALL, 1, jb)
    old_k = cache.k
    forward(jb.prepare(small_model.params), SMALL, np.array([[1, 2, 3, 4, 5, 6]]), cache, jb)
    assert old_k.is_deleted() and not cache.k.is_deleted()  # updated in place, not copied


def test_jax_bfloat16_is_bfloat16_and_close(small_model):
    jb = get_backend("jax")
    bf = backends.get("jax:bfloat16")
    assert bf.name == "jax:bfloat16" and jb.with_dtype("bfloat16").dtype == bf.dtype
    with pytest.raises(ValueError, match="dtype must be one of"):
        jb.with_dtype("float64")
    idx = np.random.default_rng(4).integers(0, SMALL.vocab_size, (2, 9))
    ref = small_model.forward(idx)
    got = small_model.forward(idx, backend=bf)
    assert got.dtype == np.float32
    err, scale = np.abs(got - ref).max(), np.abs(ref).max()
    # bfloat16 keeps 8 significant bits (u = 2^-8): the error is a few u of the logits' scale,
    # and far above float32's (so the test fails if the option silently computed in float32)
    assert 2.0**-16 * scale < err < 8 * 2.0**-8 * scale


def test_jax_x64_is_off():
    pytest.importorskip("jax", reason="jax is not installed")
    import jax

    get_backend("jax")
    assert not jax.config.jax_enable_x64


def test_bench_decode_runs_on_every_backend(be, small_model):
    from minillm.bench import bench_decode

    res = bench_decode(small_model, be, prompt_tokens=8, new_tokens=4, repeat=1, batch=2)
    assert res["backend"] == be.name and res["decode_tok_s"] > 0


def test_bench_products_times_every_block_product_and_the_head(be, small_model):
    from minillm.bench import bench_products

    res = bench_products(small_model, be, steps=2, repeat=1, bandwidth_gb_s=10.0)
    cfg = small_model.config
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    # float32: per block C x 3C, C x C, C x 4C, 4C x C weights and their biases; the tied head V x C
    assert res["products_bytes"] == 4 * (L * (12 * C * C + 9 * C) + V * C)
    assert res["products_ms"] > 0
    # bytes / time, up to the rounding of both figures (ms to 0.001, GB/s to 0.01)
    ms, nbytes = res["products_ms"], res["products_bytes"]
    assert nbytes / ((ms + 0.0005) * 1e6) - 0.005 <= res["products_gb_s"] <= nbytes / ((ms - 0.0005) * 1e6) + 0.005
    assert res["products_frac"] == round(res["products_gb_s"] / 10.0, 3)



def test_bench_suite_divides_each_entry_by_the_limit_measured_just_before_it(fake_suite, tmp_path):
    """The suite measures the bandwidth before every entry and gives that entry that limit:
    here the fake probe's figure changes at every call, so any other pairing (one figure per
    round, the previous entry's) shows up as a wrong number."""
    from minillm import bench

    suite = bench.SUITE
    n = len(suite)
    res = bench.bench_suite(rounds=2, kv_cache=False, progress=False)
    assert [e["limit_gb_s"] for e in res["timeline"]] == [10 * (i + 1) for i in range(2 * n)]
    assert [e["entry"] for e in res["timeline"]] == [f"{m}/{b}/{w}" for m, b, w in suite] * 2
    rows = {(r["model"], r["backend"], r["weights"]): r for r in res["decode"]}
    i = suite.index(("gpt2", "numba", "int8"))  # its limits: the probe's (i+1)-th and (n+i+1)-th figures
    lo, hi = 10 * (i + 1), 10 * (n + i + 1)
    assert rows["gpt2", "numba", "int8"]["bandwidth_gb_s"] == [lo, hi]
    assert rows["gpt2", "numba", "int8"]["roofline_frac"] == float(np.median([round(1 / lo, 3), round(1 / hi, 3)]))
    assert res["bandwidth_range_gb_s"] == [10, 20 * n] and res["bandwidth_gb_s"] == 5 * (2 * n + 1)
    assert bench.plot_timeline(res, tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    teacher_only = dict(res, timeline=[e for e in res["timeline"] if e["entry"].startswith("teacher/")])
    for bad in (teacher_only, {"decode": res["decode"]}):  # the teacher alone; a result without a timeline
        with pytest.raises(ValueError, match="no GPT-2 entries"):
            bench.plot_timeline(bad, tmp_path / "u.png")


def test_bandwidth_probe_is_bytes_over_the_fastest_run(monkeypatch):
    from minillm.hw import devices

    def fastest_run(fn, *args, **kwargs):
        fn()  # the product runs (shapes fit), and "takes" 0.25 s
        return 0.25

    monkeypatch.setattr(devices, "_best_time", fastest_run)
    n = int(np.sqrt(2**20 / 4))
    assert devices.bandwidth_probe(2**20)() == 4 * n * n / 0.25


def test_numba_gelu_without_tanh_matches_everywhere():
    """x - x / (1 + e^{2u}) is GPT-2's tanh GELU; no overflow to inf or NaN at any float32 input."""
    nb = get_backend("numba")
    from minillm.nn.functional import gelu

    x = np.concatenate([np.linspace(-100, 100, 20001), [-3e38, -1e5, 1e5, 3e38, 0.0]]).astype(np.float32)
    got = nb.gelu(x)
    exact = gelu(x.astype(np.float64))[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, exact, rtol=2e-6, atol=1e-6)


def test_numba_exp_is_as_close_as_its_float32_argument_allows():
    r"""`exp_in_place` ($2^n$ from bits times a degree-7 Taylor series of $2^f$) against float64
    exp: the relative error stays under $(|x| + 4)\,2^{-23}$ — $|x|\,2^{-23}$ is what rounding
    $t = x \log_2 e$ to float32 may cost, the 4 covers the series and its arithmetic (a degree-5
    series, for one, errs by up to $2.4 \cdot 10^{-6}$ where $|f| = 1/2$, as at $x = 0.35$: far
    over). Clamped ends: $2^{-126}$ and $2^{60}$."""
    get_backend("numba")
    from minillm.backends import numba_ as nb_mod

    x = np.concatenate([np.linspace(-87, 41.5, 200001), [0.0, -1e-30, 1e-30]]).astype(np.float32)
    got = x.copy()
    nb_mod.exp_in_place(got, got.size, np.empty(got.size, np.int32))
    exact = np.exp(x.astype(np.float64))
    assert np.all(np.abs(got - exact) / exact <= (np.abs(x) + 4) * 2.0**-23)
    ends = np.array([-88.0, -1e30, 41.6, 1e30], np.float32)
    nb_mod.exp_in_place(ends, 4, np.empty(4, np.int32))
    assert ends.tolist() == [2.0**-126, 2.0**-126, 2.0**60, 2.0**60]


def test_numba_prefetch_is_only_a_hint():
    """`prefetch` (LLVM's `llvm.prefetch`, which the tile kernels issue `PREFETCH_BYTES` ahead of
    their reads) changes no value and never faults, even far past the end of an array — which
    the kernels rely on at their last tile, and attention past the last head's keys. Were it
    compiled to a load, this would crash."""
    get_backend("numba")
    from numba import njit

    from minillm.backends import numba_ as nb_mod

    @njit
    def touch(a, past):
        for i in range(a.size + past):
            nb_mod.prefetch(a, i)
        return a.sum()

    arrays = (np.arange(100, dtype=np.int8), np.arange(12, dtype=np.float32).reshape(3, 4), np.ones((2, 3, 64), "u4"))
    for a in arrays:
        before = a.copy()
        assert touch(a, 1 << 20) == before.sum()  # a million elements past the end
        np.testing.assert_array_equal(a, before)


def test_numba_abs_max_from_the_bits():
    """`abs_max_bits` (the row's largest magnitude for the VNNI kernel's scale, by an integer max
    over the bits) against NumPy's `abs().max()`, on rows with -0, subnormals, huge values and
    one element; and its finiteness answer on rows holding +-inf or nan anywhere."""
    get_backend("numba")
    from minillm.backends import numba_ as nb_mod

    tiny = np.float32(1e-45)  # the smallest subnormal
    rows = [RNG.standard_normal(3072).astype(np.float32), np.array([-0.0, 0.0], np.float32),
            np.array([tiny, -3 * tiny], np.float32), np.array([-3e38, 1.0], np.float32),
            np.array([-2.5], np.float32), np.zeros(7, np.float32)]  # fmt: skip
    for row in rows:
        top = np.array([nb_mod.abs_max_bits(row)], np.int32)
        assert top[0] < nb_mod.INF_BITS and top.view(np.float32)[0] == np.abs(row).max()
    for bad in (np.inf, -np.inf, np.nan, -np.nan):
        for i in (0, 500, 3071):
            row = rows[0].copy()
            row[i] = bad
            assert nb_mod.abs_max_bits(row) >= nb_mod.INF_BITS


def test_numba_q4_0_by_integer_dot_products():
    r"""Q4_0 through AVX-512 VNNI (`matmul_q4_0_vnni`) and through the float kernel, against
    float64. The row becomes $S m$ with $m_i$ three signed base-256 digits: checked directly (the
    digits rebuild $m$, lie in [-128, 127], $|x_i - S m_i| \le S$ and the block sums add up),
    then the products. The integer sums are exact, so the VNNI product errs only by the row's
    rounding to $S m$ ($\le S$ per input: half a step, plus float32's rounding of $x_i / S$;
    times $\sum_i |w_i|$) and a few float32 roundings;
    the float kernel by the usual float32 bound. Rows include a large outlier and all zeros; a
    row scaled by a power of two gives the product scaled by it, bit for bit, down to rows of
    1e-33 (where $1/S$ would overflow float32); a row with an inf or a nan gives nan."""
    get_backend("numba")
    from minillm.backends import numba_ as nb_mod

    if not nb_mod.HAS_VNNI:
        pytest.skip("this CPU has no AVX-512 VNNI: the float kernel serves Q4_0 (tested everywhere else)")
    x = (RNG.standard_normal((4, 96)) * 2).astype(np.float32)
    x[1, 7], x[2] = 300.0, 0.0  # an outlier; a row of zeros
    for row in x:
        xw, dsum = np.empty((3, 2, 12), np.int32), np.empty((3, 3), np.int32)
        S = nb_mod.x_digits(row, np.abs(row).max(), xw, dsum)
        d = xw.view(np.int8).reshape(3, 2, 48).transpose(0, 2, 1).reshape(3, 96).astype(np.int64)  # [k, i]
        m = d[0] + 256 * d[1] + 65536 * d[2]
        assert np.all(np.abs(row - S * m) <= S) and np.abs(m).max() <= nb_mod.DIGITS_MAX
        np.testing.assert_array_equal(dsum, d.reshape(3, 3, 32).sum(-1))
    vnni, floats = nb_mod.NumbaBackend(), nb_mod.NumbaBackend()
    floats.q4_0_vnni = False
    for shape, rows in [((96, 1), x), ((96, 64), x), ((96, 130), 300), ((3072, 70), 2)]:  # 300: a prefill
        kind = quantize_weight((RNG.standard_normal(shape) * 0.1).astype(np.float32), "q4_0")
        xs = rows if isinstance(rows, np.ndarray) else (RNG.standard_normal((rows, shape[0])) * 2).astype(np.float32)
        b = RNG.standard_normal(shape[1]).astype(np.float32)
        W = kind.dequantize().astype(np.float64)
        exact = xs.astype(np.float64) @ W + b
        S = np.abs(xs).max(1, keepdims=True) / nb_mod.DIGITS_MAX
        M, n = magnitude(kind)
        float_bound = (n + 4) * EPS32 * (np.abs(xs) @ M + np.abs(b)) + 1e-30
        assert np.all(np.abs(vnni.linear(xs, kind, b) - exact) <= S * np.abs(W).sum(0) + float_bound)
        assert np.all(np.abs(floats.linear(xs, kind, b) - exact) <= float_bound)
    kind = quantize_weight((RNG.standard_normal((96, 70)) * 0.1).astype(np.float32), "q4_0")
    for power in (-110, -60, 60):  # S scales with the row exactly, even where 1/S overflows float32
        scaled = vnni.linear(x * np.float32(2.0**power), kind, None)
        np.testing.assert_array_equal(scaled, vnni.linear(x, kind, None) * np.float32(2.0**power))
    bad = x.copy()
    bad[0, 3], bad[1, 5] = np.nan, np.inf  # no digits for these rows: nan out, not made-up numbers
    got = vnni.linear(bad, quantize_weight((RNG.standard_normal((96, 70)) * 0.1).astype(np.float32), "q4_0"), None)
    assert np.isnan(got[:2]).all() and np.isfinite(got[2:]).all()


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8), (1, 2)])
def test_numba_nm_by_its_fused_kernel_and_by_blas(n, m):
    """Both ways Numba multiplies N:M: the fused tile kernel (every prompt length, by default:
    selects for m = 4, one input at a time otherwise) and dequantize + BLAS (a lowered threshold),
    with a last tile only partly filled (70 outputs)."""
    nb_mod = pytest.importorskip("minillm.backends.numba_", exc_type=ImportError)
    kind = nm_sparse((RNG.standard_normal((96, 70)) * 0.1).astype(np.float32), n, m)
    x = RNG.standard_normal((9, 96)).astype(np.float32)
    b = RNG.standard_normal(70).astype(np.float32)
    exact = x.astype(np.float64) @ kind.dequantize().astype(np.float64) + b
    bound = (96 + 4) * EPS32 * (np.abs(x) @ np.abs(kind.dequantize()) + np.abs(b))  # sums of <= 96 terms
    fused, blas = nb_mod.NumbaBackend(), nb_mod.NumbaBackend()
    blas.prefill_rows_nm = 2
    for be_, rows in ((fused, 1), (fused, 9), (blas, 9)):
        got = be_.linear(x[:rows], kind, b)
        assert np.all(np.abs(got - exact[:rows]) <= bound[:rows])


def test_numba_widens_every_finite_half_exactly():
    """Tiles keep float16 scales as their bits (2 bytes read per scale, not 4); the kernels widen
    them with shifts and one multiply by $2^{112}$. Every finite half — zeros, subnormals, the
    largest — comes out as NumPy's float16 -> float32 conversion, compiled and in Python; inf
    and nan, which the widening would make finite, are refused by the weight kinds."""
    get_backend("numba")
    from numba import njit

    from minillm.backends import numba_ as nb_mod

    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    halves = halves[np.isfinite(halves.view(np.float16))]  # 63,488 patterns
    n_tiles = -(-halves.size // 64)
    scale = nb_mod.tile_scales(np.pad(halves, (0, 64 * n_tiles - halves.size)).view(np.float16)[None], n_tiles)
    assert scale.dtype == np.uint16 and scale.shape == (n_tiles, 1, 64)

    @njit
    def widen_all(scale, out):
        bits, sc = np.empty(64, np.int32), np.empty(64, np.float32)
        for t in range(scale.shape[0]):
            nb_mod.block_scales(scale, t, 0, bits, sc)
            out[t] = sc

    compiled, python = np.empty((n_tiles, 64), np.float32), np.empty((n_tiles, 64), np.float32)
    widen_all(scale, compiled)
    for t in range(n_tiles):
        nb_mod.block_scales(scale, t, 0, None, python[t])
    expected = halves.view(np.float16).astype(np.float32)
    for got in (compiled, python):
        assert np.array_equal(got.reshape(-1)[: halves.size].view(np.uint32), expected.view(np.uint32))  # -0 too
    d = np.ones((2, 64), np.float16)
    d[1, 3] = np.inf
    with pytest.raises(ValueError, match="finite"):  # what the widening cannot carry never gets there
        K.Q8_0(np.ones((64, 64), np.int8), d)


def test_numba_uses_a_cheap_to_start_thread_pool():
    nb = get_backend("numba")
    nb.gelu(np.ones(8, np.float32))  # start the pool
    assert nb.threading_layer in ("omp", "tbb", "workqueue")
    assert os.environ.get("GOMP_SPINCOUNT")  # a short spin unless the user chose otherwise


@pytest.mark.parametrize("method", ["q4_0", "q8_0", "int4-g32"])
@pytest.mark.parametrize("shape", [(32, 1), (96, 64), (128, 130), (64, 600)])
def test_numba_tiles_hold_the_same_codes(shape, method):
    """The tile layouts (`TilesQ4_0`: nibble k of word [t, c, l] = code of input 8c + k, output
    64t + l; `TilesInt`: q[t, i, l] = code of input i, output 64t + l) keep every code, scale and
    zero point: dequantizing them row by row gives the kind's own dequantization, and products
    over a partial last tile (padding outputs) are right, fused (2 rows) and through BLAS on
    dequantized columns (300 rows; 600 outputs take two chunks of `TILE`)."""
    get_backend("numba")
    from minillm.backends import numba_ as nb_mod

    w = (RNG.standard_normal(shape) * 0.1).astype(np.float32)
    kind = quantize_weight(w, method)
    tiles = nb_mod.rows_form(kind)
    n_tiles = -(-shape[1] // 64)
    if method == "q4_0":
        assert isinstance(tiles, nb_mod.TilesQ4_0) and tiles.words.shape == (n_tiles, shape[0] // 8, 64)
    else:
        assert isinstance(tiles, nb_mod.TilesInt) and tiles.q.shape == (n_tiles, shape[0], 64)
    assert tiles.n_out == shape[1]
    rows = np.empty((shape[1], shape[0]), np.float32)
    nb_mod._dequantize_rows(tiles, 0, rows)
    np.testing.assert_array_equal(rows, kind.dequantize().T)
    last = np.empty((1, shape[0]), np.float32)  # one row, as the embedding lookup reads it
    nb_mod._dequantize_rows(tiles, shape[1] - 1, last)
    np.testing.assert_array_equal(last[0], kind.dequantize()[:, -1])
    cols = np.empty((shape[0], 64 * n_tiles), np.float32)
    nb_mod._dequantize_cols(tiles, 0, cols)
    np.testing.assert_array_equal(cols[:, : shape[1]], kind.dequantize())
    be = nb_mod.NumbaBackend()
    be.q4_0_vnni = False  # the float kernel and BLAS (VNNI: test_numba_q4_0_by_integer_dot_products)
    assert 2 < be._blas_rows(tiles) <= 300  # both paths below are exercised
    for n_rows in (2, 300):
        x = RNG.standard_normal((n_rows, shape[0])).astype(np.float32)
        got = be.linear(x, tiles, None)
        exact = x.astype(np.float64) @ kind.dequantize().astype(np.float64)
        M, n = magnitude(kind)
        assert np.all(np.abs(got - exact) <= (n + 4) * EPS32 * (np.abs(x) @ M) + 1e-30)


@pytest.mark.parametrize("kind", ["fp32", "int8", "q8_0", "q4_0", "q4_0 float kernel", "int4-g32", "2:4", "3:8"])
def test_numba_block_in_one_call_is_the_same_to_the_bit(small_model, kind, monkeypatch):
    """`NumbaBackend.block` runs a whole block as one compiled call (`decode_block`): the same
    kernels the forward calls one by one, in the same order, so the logits and the KV cache are
    identical to the bit, through a prefill of two sequences and three decode steps. Counting
    the calls shows the fused path really ran (two layers, four forward calls)."""
    get_backend("numba")
    from minillm.backends import numba_ as nb_mod

    model = compressed(small_model, kind.split()[0])
    calls = []
    fused_block = nb_mod.decode_block
    monkeypatch.setattr(nb_mod, "decode_block", lambda *a: calls.append(1) or fused_block(*a))
    runs = []
    for fused in (True, False):
        be = nb_mod.NumbaBackend()
        be.fused_blocks, be.q4_0_vnni = fused, be.q4_0_vnni and kind != "q4_0 float kernel"
        params, cache = be.prepare(model.params), KVCache.allocate(SMALL, 2, be)
        logits = [forward(params, SMALL, np.array([[3, 1, 4, 1], [5, 9, 2, 6]]), cache, be)]
        for _ in range(3):
            logits.append(forward(params, SMALL, logits[-1][:, -1:].argmax(-1), cache, be))
        runs.append((logits, cache))
    assert len(calls) == SMALL.n_layer * 4
    (fused_logits, fused_cache), (plain_logits, plain_cache) = runs
    for a, b in zip(fused_logits, plain_logits, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fused_cache.k, plain_cache.k)
    np.testing.assert_array_equal(fused_cache.v, plain_cache.v)


@pytest.mark.parametrize("case", ["lowrank", "input-major", "prefill", "float16 cache"])
def test_numba_block_declines_what_it_does_not_fuse(small_model, case):
    """`NumbaBackend.block` returns None (and the forward runs the block kernel by kernel) for
    weight forms `decode_block` does not take, for prefill rows that go to BLAS, and for a KV
    cache that is not float32; the forward's answer is NumPy's either way."""
    from minillm.bench import input_major

    be = get_backend("numba")
    model = {"input-major": minillm.GPT(SMALL, params=input_major(small_model.params))}.get(
        case, compressed(small_model, case) if case in KINDS else small_model)  # fmt: skip
    rows = be.prefill_rows if case == "prefill" else 1
    cache = KVCache.allocate(SMALL, 1, be, dtype=np.float16 if case == "float16 cache" else np.float32)
    x = np.zeros((rows, SMALL.n_embd), np.float32)
    assert be.block(be.prepare(model.params), SMALL, 0, x, (cache.k, cache.v), 0, 1, rows) is None
    idx = np.random.default_rng(3).integers(0, SMALL.vocab_size, (1, rows))
    np.testing.assert_allclose(model.forward(idx, backend=be), model.forward(idx), rtol=0, atol=1e-4)


def test_numba_block_checks_every_shape_before_compiled_code(small_model):
    """The compiled block indexes without bounds checks, so `NumbaBackend.block` hands anything
    that does not fit (no room left in the cache, rows or widths that disagree, a bias of the
    wrong length, a config the weights were not made for) back to the forward, whose kernels
    check and report it: never an out-of-bounds read or write."""
    be = get_backend("numba")
    params, cache, C = be.prepare(small_model.params), KVCache.allocate(SMALL, 1, be), SMALL.n_embd
    kv, x = (cache.k, cache.v), np.zeros((1, C), np.float32)
    assert be.block(params, SMALL, 0, x, kv, cache.size - 1, 1, 1) is not None  # the last position: fits
    assert be.block(params, SMALL, 0, x, kv, cache.size, 1, 1) is None  # no room left
    assert be.block(params, SMALL, 0, x, kv, -1, 1, 1) is None
    assert be.block(params, SMALL, 0, x, kv, 0, 1, 2) is None  # B*T = 2 rows, x has 1
    wrong = dict(params, **{"h.0.mlp.c_fc.bias": np.zeros(C, np.float32)})  # should be 4C
    assert be.block(wrong, SMALL, 0, x, kv, 0, 1, 1) is None
    narrow = minillm.GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=4, n_embd=32)
    narrow_cache = KVCache.allocate(narrow, 1, be)
    assert be.block(params, narrow, 0, x[:, :32], (narrow_cache.k, narrow_cache.v), 0, 1, 1) is None


def test_numba_block_arguments_are_kept_until_the_params_change(small_model):
    """`prepare` returns a `PreparedParams`, which keeps each block's `decode_block` arguments
    after the first step; any change to an entry forgets them, and a change made in place to a
    kept array is seen (the kept arrays are the params' own). Each case against the forward run
    kernel by kernel on the same params, to the bit. A vector that had to be converted to float32
    is never kept (a change to the original would not reach the copy)."""
    get_backend("numba")
    from minillm.backends import numba_ as nb_mod

    fused, plain = nb_mod.NumbaBackend(), nb_mod.NumbaBackend()
    plain.fused_blocks = False
    params = fused.prepare(small_model.params)
    assert isinstance(params, nb_mod.PreparedParams)
    idx = np.array([[3, 1, 4, 1, 5]])

    def agree() -> None:
        want = forward(params, SMALL, idx, KVCache.allocate(SMALL, 1, plain), plain)
        np.testing.assert_array_equal(forward(params, SMALL, idx, KVCache.allocate(SMALL, 1, fused), fused), want)

    agree()
    assert len(params.block_args) == SMALL.n_layer
    params["h.0.attn.c_proj.bias"] = params["h.0.attn.c_proj.bias"] + np.float32(0.5)  # a new array
    assert not params.block_args
    agree()
    params["h.1.ln_1.bias"][:] += np.float32(0.25)  # in place, into a kept array
    agree()
    for change in (lambda d: d.update(x=1), lambda d: d.setdefault("y", 2), lambda d: d.pop("x"),
                   lambda d: d.__delitem__("y"), lambda d: d.__ior__({"z": 3}), lambda d: d.popitem()):  # fmt: skip
        agree()
        assert params.block_args
        change(params)
        assert not params.block_args
    agree()
    params["h.0.ln_2.weight"] = params["h.0.ln_2.weight"].astype(np.float64)  # converted at each call
    agree()
    assert (0, SMALL.n_embd, SMALL.layer_norm_epsilon) not in params.block_args
    params.clear()
    assert not params.block_args


def test_numba_compile_covers_what_decoding_runs():
    """After `NumbaBackend.compile()`, prefill and decoding with every quantized format compile
    nothing more (else the first step's time would hide a compilation). A fresh process, so no
    other test has compiled anything first."""
    get_backend("numba")
    code = """
import numpy as np, minillm
from minillm.backends import numba_ as nb
from minillm.compress.quantize import quantize_params
be = nb.NumbaBackend()
be.compile()
kernels = {n: f for n, f in vars(nb).items() if hasattr(f, "signatures") and hasattr(f, "py_func")}
before = {n: len(f.signatures) for n, f in kernels.items()}
model = minillm.GPT(minillm.GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=4, n_embd=64), seed=5)
for kind in (None, "int8", "q8_0", "q4_0", "int4-g32"):
    m = model if kind is None else minillm.GPT(model.config, params=quantize_params(model.params, kind))
    for prompt in (np.zeros((1, 5), int), np.zeros((1, 40), int), np.zeros((2, 3), int)):
        minillm.generate(m, prompt, 3, temperature=0, backend=be)
grown = {n: len(f.signatures) - before[n] for n, f in kernels.items() if len(f.signatures) != before[n]}
assert not grown, grown
print("ok")
"""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
