"""The forward pass, the hand-written backward and their gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm.nn import functional as F
from minillm.nn.gpt import forward_train, param_shapes


def numerical_grad(f, x: np.ndarray, index: tuple, h: float = 1e-3) -> float:
    """Fourth-order central difference: error O(h^4), so h = 1e-3 leaves ~1e-12 truncation."""
    old = x[index]
    vals = []
    for step in (2 * h, h, -h, -2 * h):
        x[index] = old + step
        vals.append(f())
    x[index] = old
    f2, f1, m1, m2 = vals
    return (8 * (f1 - m1) - (f2 - m2)) / (12 * h)


def rel_err(a: float, b: float, floor: float = 1e-9) -> float:
    return abs(a - b) / max(abs(a), abs(b), floor)


def test_param_names_and_shapes_follow_hf_gpt2(tiny_config):
    shapes = param_shapes(tiny_config)
    C = tiny_config.n_embd
    assert shapes["wte.weight"] == (tiny_config.vocab_size, C)
    assert shapes["h.1.attn.c_attn.weight"] == (C, 3 * C)
    assert shapes["h.0.mlp.c_proj.weight"] == (4 * C, C)
    assert list(shapes)[-2:] == ["ln_f.weight", "ln_f.bias"]
    assert sum(int(np.prod(s)) for s in shapes.values()) == tiny_config.n_params


def test_gpt2_preset_is_the_124m_shape():
    cfg = minillm.GPTConfig.preset("gpt2")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (12, 12, 768, 1024, 50257)
    assert cfg.n_params == 124_439_808  # GPT-2 small with tied head, as Hugging Face counts it


def test_inference_forward_equals_training_forward(tiny_model, rng):
    idx = rng.integers(0, tiny_model.config.vocab_size, (3, 17))
    logits = tiny_model.forward(idx)
    ref, _, _ = forward_train(tiny_model.params, tiny_model.config, idx)
    assert logits.dtype == np.float32 and logits.shape == (3, 17, tiny_model.config.vocab_size)
    np.testing.assert_allclose(logits, ref, atol=1e-5, rtol=0)


def test_forward_matches_a_naive_loop_implementation(tiny_model, rng):
    """An independent per-position, per-head computation of the same math in float64."""
    cfg, p = tiny_model.config, {k: v.astype(np.float64) for k, v in tiny_model.params.items()}
    T = 6
    idx = rng.integers(0, cfg.vocab_size, T)
    C, H = cfg.n_embd, cfg.n_head
    D = C // H

    def ln(v, w, b):
        return (v - v.mean()) / np.sqrt(v.var() + cfg.layer_norm_epsilon) * w + b

    def gelu(v):
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))

    xs = [p["wte.weight"][idx[t]] + p["wpe.weight"][t] for t in range(T)]
    for i in range(cfg.n_layer):
        q_, k_, v_ = [], [], []
        for t in range(T):
            qkv = ln(xs[t], p[f"h.{i}.ln_1.weight"], p[f"h.{i}.ln_1.bias"]) @ p[f"h.{i}.attn.c_attn.weight"]
            qkv = qkv + p[f"h.{i}.attn.c_attn.bias"]
            q_.append(qkv[:C]); k_.append(qkv[C:2 * C]); v_.append(qkv[2 * C:])  # noqa: E702
        new = []
        for t in range(T):
            heads = []
            for h in range(H):
                s = slice(h * D, (h + 1) * D)
                scores = np.array([q_[t][s] @ k_[j][s] / np.sqrt(D) for j in range(t + 1)])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                heads.append(sum(w[j] * v_[j][s] for j in range(t + 1)))
            a = xs[t] + np.concatenate(heads) @ p[f"h.{i}.attn.c_proj.weight"] + p[f"h.{i}.attn.c_proj.bias"]
            m = gelu(ln(a, p[f"h.{i}.ln_2.weight"], p[f"h.{i}.ln_2.bias"]) @ p[f"h.{i}.mlp.c_fc.weight"]
                     + p[f"h.{i}.mlp.c_fc.bias"])
            new.append(a + m @ p[f"h.{i}.mlp.c_proj.weight"] + p[f"h.{i}.mlp.c_proj.bias"])
        xs = new
    ref = np.stack([ln(x, p["ln_f.weight"], p["ln_f.bias"]) @ p["wte.weight"].T for x in xs])
    np.testing.assert_allclose(tiny_model.forward(idx[None])[0], ref, atol=2e-5, rtol=0)


@pytest.fixture
def model64(tiny_config):
    m = minillm.GPT(tiny_config, seed=2)
    m.params = {k: v.astype(np.float64) for k, v in m.params.items()}
    # Non-trivial LayerNorm gains/biases so their gradients are not degenerate.
    r = np.random.default_rng(5)
    for v in m.params.values():
        if v.ndim == 1:
            v += r.normal(0, 0.1, v.shape)
    return m


def test_every_parameter_gradient_matches_finite_differences(model64, rng):
    cfg = model64.config
    idx = rng.integers(0, cfg.vocab_size, (2, 9))
    tgt = rng.integers(0, cfg.vocab_size, (2, 9))
    loss, grads = model64.loss_and_grads(idx, tgt)
    assert set(grads) == set(model64.params)
    worst = 0.0
    for name, w in model64.params.items():
        assert grads[name].shape == w.shape and grads[name].dtype == np.float64
        flat = np.argsort(-np.abs(grads[name]).ravel())[:2]  # the largest entries: meaningful
        picks = [np.unravel_index(i, w.shape) for i in flat]
        picks.append(tuple(int(rng.integers(0, s)) for s in w.shape))  # and a random one
        for j in picks:
            num = numerical_grad(lambda: model64.loss_and_grads(idx, tgt)[0], w, j)
            err = rel_err(num, grads[name][j], floor=1e-6)
            worst = max(worst, err)
            assert err <= 1e-6, f"{name}{j}: numerical {num:.10g} vs analytic {grads[name][j]:.10g}"
    assert worst <= 1e-6


def test_tied_embedding_gradient_has_both_contributions(model64, rng):
    """wte gets gradient from the LM head even for ids that never appear in the input."""
    idx = np.zeros((1, 5), dtype=int)  # only token 0 is read
    tgt = np.ones((1, 5), dtype=int)
    _, grads = model64.loss_and_grads(idx, tgt)
    assert np.abs(grads["wte.weight"][7]).sum() > 0  # row 7: from the head only


@pytest.mark.parametrize("op", ["layer_norm", "gelu", "linear", "attention", "cross_entropy"])
def test_each_op_backward_matches_finite_differences(op, rng):
    x = rng.normal(size=(2, 5, 6))
    dy = rng.normal(size=(2, 5, 6))
    if op == "layer_norm":
        w, b = rng.normal(size=6), rng.normal(size=6)
        f = lambda: float((F.layer_norm(x, w, b)[0] * dy).sum())
        dx, dw, db = F.layer_norm_backward(dy, F.layer_norm(x, w, b)[1])
        pairs = [(x, dx), (w, dw), (b, db)]
    elif op == "gelu":
        f = lambda: float((F.gelu(x)[0] * dy).sum())
        pairs = [(x, F.gelu_backward(dy, F.gelu(x)[1]))]
    elif op == "linear":
        w, b = rng.normal(size=(6, 4)), rng.normal(size=4)
        dy = rng.normal(size=(2, 5, 4))
        f = lambda: float((F.linear(x, w, b)[0] * dy).sum())
        dx, dw, db = F.linear_backward(dy, F.linear(x, w, b)[1])
        pairs = [(x, dx), (w, dw), (b, db)]
    elif op == "attention":
        dy = rng.normal(size=(2, 5, 2))
        f = lambda: float((F.attention(x, 2)[0] * dy).sum())
        pairs = [(x, F.attention_backward(dy, F.attention(x, 2)[1]))]
    else:
        t = rng.integers(0, 6, (2, 5))
        f = lambda: F.cross_entropy(x, t)[0]
        pairs = [(x, F.cross_entropy_backward(F.cross_entropy(x, t)[1]))]
    for arr, grad in pairs:
        for _ in range(4):
            j = tuple(int(rng.integers(0, s)) for s in arr.shape)
            assert rel_err(numerical_grad(f, arr, j), grad[j], floor=1e-8) <= 1e-7


def test_attention_is_causal(tiny_model, rng):
    """Changing a later token never changes earlier logits."""
    idx = rng.integers(0, tiny_model.config.vocab_size, (1, 12))
    a = tiny_model.forward(idx)
    idx2 = idx.copy()
    idx2[0, 8] = (idx2[0, 8] + 1) % tiny_model.config.vocab_size
    b = tiny_model.forward(idx2)
    np.testing.assert_array_equal(a[0, :8], b[0, :8])
    assert np.abs(a[0, 8:] - b[0, 8:]).max() > 0


def test_softmax_and_log_softmax_are_stable_on_extreme_logits():
    z = np.array([[1e4, 0.0, -1e4], [-1e30, -1e30, -1e30]])
    p = F.softmax(z)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(-1), 1)
    ls = F.log_softmax(z)
    assert np.all(np.isfinite(ls)) and ls[0, 0] == 0.0
    np.testing.assert_allclose(ls[1], np.log(1 / 3))
    loss, cache = F.cross_entropy(np.array([[[1e4, -1e4]]]), np.array([[1]]))
    assert loss == pytest.approx(2e4) and np.all(np.isfinite(F.cross_entropy_backward(cache)))


@pytest.mark.parametrize(
    "idx, err",
    [
        ([[1, -1]], "token id -1"),
        ([[1, 64]], "token id 64"),
        ([[1.0, 2.0]], "integer"),
        (np.zeros((1, 33), int), "longer than the context"),
        (np.zeros((2, 0), int), "shape"),
        ([[True, False]], "integer"),
    ],
)
def test_bad_token_ids_raise_clear_errors(tiny_model, idx, err):
    with pytest.raises((ValueError, TypeError), match=err):
        tiny_model.forward(idx)


def test_bad_config_and_params_raise():
    with pytest.raises(ValueError, match="divisible"):
        minillm.GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=3, n_embd=16)
    with pytest.raises(ValueError, match="n_layer"):
        minillm.GPTConfig(vocab_size=10, block_size=8, n_layer=0, n_head=1, n_embd=16)
    with pytest.raises(ValueError, match="unknown preset"):
        minillm.GPTConfig.preset("huge")
    cfg = minillm.GPTConfig.preset("tiny")
    params = minillm.GPT(cfg).params
    params["wte.weight"] = params["wte.weight"][:3]
    with pytest.raises(ValueError, match="wte.weight"):
        minillm.GPT(cfg, params=params)


def test_dense_block_weights_are_output_major_and_stay_so(tmp_path, rng):
    """init, load and training keep every block matmul weight Fortran-ordered (column o contiguous);
    the embeddings, vectors and everything else stay C-ordered."""
    from minillm.nn.gpt import MATMUL_WEIGHTS, output_major

    cfg = minillm.GPTConfig.preset("tiny")
    model = minillm.GPT(cfg, seed=0)

    def layouts(params):
        return {name: ("F" if w.flags.f_contiguous and w.ndim == 2 else "C") for name, w in params.items()}

    want = {name: ("F" if name.endswith(MATMUL_WEIGHTS) else "C") for name in model.params}
    assert layouts(model.params) == want
    minillm.save(model, tmp_path)
    assert layouts(minillm.load(tmp_path).params) == want
    same = output_major(model.params)  # already output-major: no copy
    assert all(same[name] is w for name, w in model.params.items())
    # a gradient comes back in its weight's layout, so optimizer updates run on matching strides
    idx = rng.integers(0, cfg.vocab_size, (2, 8))
    _, grads = model.loss_and_grads(idx, np.roll(idx, -1, 1))
    assert layouts(grads) == want
