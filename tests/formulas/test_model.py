"""Formulas on docs/model.md, each computed by the library and checked independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minillm
from minillm.nn import functional as F
from minillm.nn.gpt import forward_train, init_params, param_shapes

rng = np.random.default_rng(0)


@pytest.mark.formula("model.n-params")
@pytest.mark.parametrize("preset", ["tiny", "teacher", "student", "gpt2"])
def test_parameter_count(preset):
    cfg = minillm.GPTConfig.preset(preset)
    counted = sum(math.prod(s) for s in param_shapes(cfg).values())
    V, T, L, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    assert cfg.n_params == counted == V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C


@pytest.mark.formula("model.embedding")
def test_embedding_is_row_lookup_plus_position():
    cfg = minillm.GPTConfig.preset("tiny")
    p = init_params(cfg, 0)
    idx = np.array([[3, 3, 7]])
    x, _ = F.embedding(p["wte.weight"], p["wpe.weight"], idx)
    for t, i in enumerate(idx[0]):
        np.testing.assert_array_equal(x[0, t], p["wte.weight"][i] + p["wpe.weight"][t])


@pytest.mark.formula("model.block")
def test_block_is_two_residual_branches():
    cfg = minillm.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    p = init_params(cfg, 1, dtype=np.float64)
    idx = rng.integers(0, 11, (1, 5))
    x0, _ = F.embedding(p["wte.weight"], p["wpe.weight"], idx)
    ln1 = F.layer_norm(x0, p["h.0.ln_1.weight"], p["h.0.ln_1.bias"])[0]
    attn = F.attention(ln1 @ p["h.0.attn.c_attn.weight"] + p["h.0.attn.c_attn.bias"], 2)[0]
    a = x0 + attn @ p["h.0.attn.c_proj.weight"] + p["h.0.attn.c_proj.bias"]
    h = F.gelu(F.layer_norm(a, p["h.0.ln_2.weight"], p["h.0.ln_2.bias"])[0] @ p["h.0.mlp.c_fc.weight"]
               + p["h.0.mlp.c_fc.bias"])[0]
    x1 = a + h @ p["h.0.mlp.c_proj.weight"] + p["h.0.mlp.c_proj.bias"]
    logits = F.layer_norm(x1, p["ln_f.weight"], p["ln_f.bias"])[0] @ p["wte.weight"].T
    np.testing.assert_allclose(forward_train(p, cfg, idx)[0], logits, rtol=1e-12)


@pytest.mark.formula("model.layernorm")
def test_layernorm_matches_the_definition():
    x = rng.normal(size=(4, 10))
    w, b = rng.normal(size=10), rng.normal(size=10)
    y = F.layer_norm(x, w, b, eps=1e-5)[0]
    ref = np.stack([(r - r.mean()) / math.sqrt(r.var() + 1e-5) for r in x]) * w + b
    np.testing.assert_allclose(y, ref, rtol=1e-12)


@pytest.mark.formula("model.attention")
def test_attention_matches_per_head_loops():
    qkv = rng.normal(size=(1, 4, 12))
    y = F.attention(qkv, n_head=2)[0]
    q, k, v = qkv[0, :, :4], qkv[0, :, 4:8], qkv[0, :, 8:]
    for h in range(2):
        s = slice(2 * h, 2 * h + 2)
        for i in range(4):
            scores = np.array([q[i, s] @ k[j, s] / math.sqrt(2) for j in range(i + 1)])
            w = np.exp(scores) / np.exp(scores).sum()
            np.testing.assert_allclose(y[0, i, s], w @ v[: i + 1, s], rtol=1e-12)


@pytest.mark.formula("model.gelu")
def test_gelu_matches_tanh_formula_and_is_close_to_exact_gelu():
    x = np.linspace(-5, 5, 101)
    y = F.gelu(x)[0]
    ref = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-15)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]  # the approximation is good to ~1e-3
    assert np.abs(y - exact).max() < 1e-3


def _fd(f, x, h=1e-5):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.formula("model.cross-entropy-grad")
def test_cross_entropy_gradient_is_p_minus_onehot_over_n():
    z = rng.normal(size=(1, 3, 5))
    y = np.array([[0, 4, 2]])
    _, cache = F.cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    closed = (p - np.eye(5)[y]) / 3
    np.testing.assert_allclose(F.cross_entropy_backward(cache), closed, rtol=1e-12)
    np.testing.assert_allclose(closed, _fd(lambda: F.cross_entropy(z, y)[0], z), atol=1e-9)


@pytest.mark.formula("model.layernorm-grad")
def test_layernorm_gradient_formula_against_finite_differences():
    x = rng.normal(size=(2, 6))
    w, b = rng.normal(size=6), rng.normal(size=6)
    d = rng.normal(size=(2, 6))
    dx, _, _ = F.layer_norm_backward(d, F.layer_norm(x, w, b)[1])
    np.testing.assert_allclose(dx, _fd(lambda: float((F.layer_norm(x, w, b)[0] * d).sum()), x), atol=1e-8)


@pytest.mark.formula("model.softmax-grad")
def test_softmax_gradient_formula():
    s = rng.normal(size=(3, 4))
    G = rng.normal(size=(3, 4))
    A = F.softmax(s)
    closed = A * (G - (G * A).sum(-1, keepdims=True))
    np.testing.assert_allclose(closed, _fd(lambda: float((F.softmax(s) * G).sum()), s), atol=1e-9)


@pytest.mark.formula("model.tied-grad")
def test_tied_gradient_is_head_plus_embedding_contributions():
    """Untie the head by hand: loss(E, H) with embedding E and head H; the tied gradient must be
    dL/dH + dL/dE at E = H = W_te, each computed by finite differences."""
    cfg = minillm.GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=1, n_embd=4)
    model = minillm.GPT(cfg, params=init_params(cfg, 3, dtype=np.float64))
    idx, tgt = rng.integers(0, 9, (2, 5)), rng.integers(0, 9, (2, 5))
    _, grads = model.loss_and_grads(idx, tgt)
    E = model.params["wte.weight"].copy()
    H = E.copy()

    def loss_untied():
        p = dict(model.params, **{"wte.weight": E})
        _, _, caches = forward_train(p, cfg, idx)
        h = caches[cfg.n_layer + 1][1]  # LN_f output (B, T, C)
        return F.cross_entropy(h @ H.T, tgt)[0]

    d_head, d_embedding = _fd(loss_untied, H), _fd(loss_untied, E)
    unread = sorted(set(range(9)) - set(idx.ravel().tolist()))
    np.testing.assert_allclose(d_embedding[unread], 0, atol=1e-12)  # rows never looked up
    np.testing.assert_allclose(grads["wte.weight"], d_head + d_embedding, atol=1e-8)
