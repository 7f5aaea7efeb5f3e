"""Pruning masks: exact counts, REFERENCES.md examples, structured masks, masked training."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.compress import prune as P
from minillm.config import GPTConfig
from minillm.kinds import Masked

rng = np.random.default_rng(0)


def distinct(shape):
    """Weights with distinct magnitudes, so that which ones are pruned is unambiguous."""
    n = int(np.prod(shape))
    mags = (rng.permutation(n) + 1) / n
    return (mags * rng.choice([-1, 1], n)).reshape(shape).astype(np.float32)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.floats(0, 1))
def test_magnitude_count_is_round_half_even(n, s):
    w = distinct((n,))
    mask = P.magnitude_mask(w, s)
    k = round(s * n)  # Python round: half to even, PyTorch's count
    assert np.count_nonzero(~mask) == k
    if 0 < k < n:  # every pruned |w| is below every kept |w|
        assert np.abs(w[~mask]).max() < np.abs(w[mask]).min()


def test_magnitude_half_even_ties_and_edges():
    w = distinct((10,))
    assert np.count_nonzero(~P.magnitude_mask(w, 0.25)) == 2  # 2.5 -> 2
    assert np.count_nonzero(~P.magnitude_mask(w, 0.35)) == 4  # 3.5 -> 4
    assert P.magnitude_mask(w, 0).all() and not P.magnitude_mask(w, 1).any()
    np.testing.assert_array_equal(P.magnitude_mask(np.array([0.5, -2.0, 0.1, 3.0]), 0.5), [False, True, False, True])


def test_global_masks_rank_all_weights_together():
    weights = {"a": np.array([[0.1, 5.0]]), "b": np.array([0.2, 0.3, 4.0])}
    masks = P.global_magnitude_masks(weights, 0.6)  # prune 3 of 5: 0.1, 0.2, 0.3
    np.testing.assert_array_equal(masks["a"], [[False, True]])
    np.testing.assert_array_equal(masks["b"], [False, False, True])
    params = {
        "h.0.mlp.c_fc.weight": distinct((8, 4)),
        "wte.weight": distinct((3, 8)),
        "h.0.attn.c_proj.weight": distinct((4, 4)),
    }
    masks = P.global_magnitude_masks(params, 0.5)
    assert set(masks) == {"h.0.mlp.c_fc.weight", "h.0.attn.c_proj.weight"}  # not wte
    assert P.report(masks)["total"]["pruned"] == 24
    with pytest.raises(ValueError, match="names not in weights"):
        P.global_magnitude_masks(params, 0.5, names=["nope"])


def test_n_m_reference_example():
    mask = P.n_m_mask(np.array([0.1, -0.9, 0.3, 0.05, 2, -1, 0.5, 0]))
    np.testing.assert_array_equal(mask.astype(int), [0, 1, 1, 0, 1, 1, 0, 0])


def test_n_m_groups_run_along_inputs():
    w = distinct((16, 6))  # Conv1D (in, out): groups of 4 consecutive rows of each column
    mask = P.n_m_mask(w, 2, 4)
    groups = mask.reshape(4, 4, 6)
    assert np.all(groups.sum(axis=1) == 2)
    for g in range(4):
        for o in range(6):
            col = np.abs(w[4 * g : 4 * g + 4, o])
            assert set(np.flatnonzero(groups[g, :, o])) == set(np.argsort(col)[-2:])
    assert P.n_m_mask(w, 1, 8).sum() == 2 * 6
    assert P.n_m_mask(np.ones(4), 2, 4).tolist() == [True, True, False, False]  # ties: earlier


def test_wanda_prunes_within_each_output():
    w = np.array([[1.0, -4.0], [2.0, 1.0], [-3.0, 0.5], [0.1, 2.0]])  # (in=4, out=2)
    x_norm = np.array([1.0, 0.1, 1.0, 10.0])
    # scores: col 0 = [1, .2, 3, 1], col 1 = [4, .1, .5, 20] -> prune the 2 lowest in each
    mask = P.wanda_mask(w, x_norm, 0.5)
    np.testing.assert_array_equal(mask, [[False, True], [False, False], [True, False], [True, True]])
    assert np.all(mask.sum(axis=0) == 2)
    # plain magnitude would choose differently: the activation norm matters
    assert not np.array_equal(mask, P.magnitude_mask(w, 0.5))
    x = rng.normal(size=(3, 5, 4))
    np.testing.assert_allclose(P.wanda_norms(x), np.linalg.norm(x.reshape(15, 4), axis=0))


def test_cubic_schedule_reference_values():
    values = [P.cubic_sparsity(t, 0.0, 0.8, t0=0, n=100) for t in (25, 50, 75)]
    assert values == pytest.approx([0.4625, 0.7, 0.7875], abs=1e-15)
    assert P.cubic_sparsity(-5, 0.0, 0.8, 0, 100) == 0.0  # before t0: s_i
    assert P.cubic_sparsity(500, 0.0, 0.8, 0, 100) == 0.8  # after the end: s_f
    assert P.cubic_sparsity(60, 0.1, 0.9, t0=10, n=10, dt=10) == pytest.approx(0.9 - 0.8 * 0.5**3, abs=1e-15)


def _tiny_params(L=2, C=8, H=2, seed=0):
    r = np.random.default_rng(seed)
    p = {"wte.weight": r.normal(size=(11, C)).astype(np.float32)}
    for i in range(L):
        h = f"h.{i}."
        p[h + "attn.c_attn.weight"] = r.normal(size=(C, 3 * C)).astype(np.float32)
        p[h + "attn.c_attn.bias"] = r.normal(size=3 * C).astype(np.float32)
        p[h + "attn.c_proj.weight"] = r.normal(size=(C, C)).astype(np.float32)
        p[h + "attn.c_proj.bias"] = r.normal(size=C).astype(np.float32)
        p[h + "mlp.c_fc.weight"] = r.normal(size=(C, 4 * C)).astype(np.float32)
        p[h + "mlp.c_fc.bias"] = r.normal(size=4 * C).astype(np.float32)
        p[h + "mlp.c_proj.weight"] = r.normal(size=(4 * C, C)).astype(np.float32)
    return p


def test_head_scores_by_hand_and_masks():
    C, H = 8, 2
    p = _tiny_params(C=C, H=H)
    w_qkv, w_o = p["h.0.attn.c_attn.weight"], p["h.0.attn.c_proj.weight"]
    for h in range(H):
        cols = [part * C + h * 4 + j for part in range(3) for j in range(4)]  # q, k, v of head h
        ref = np.sqrt(
            (w_qkv[:, cols].astype(np.float64) ** 2).sum() + (w_o[4 * h : 4 * h + 4].astype(np.float64) ** 2).sum()
        )
        assert P.head_scores(p, 0, H)[h] == pytest.approx(ref, rel=1e-12)
    keep = P.head_mask(p, GPTConfig.preset("tiny", n_embd=C, n_head=H), 0.5)
    assert set(keep) == {0, 1} and all(k.sum() == 1 for k in keep.values())
    masks = P.prune_heads(p, H, 0.5)
    for layer, k in keep.items():
        gone = int(np.flatnonzero(~k)[0])
        a = f"h.{layer}.attn."
        m_qkv, m_b, m_o = (
            masks[a + "c_attn.weight"],
            masks[a + "c_attn.bias"],
            masks[a + "c_proj.weight"],
        )
        for part in range(3):
            sl = slice(part * C + gone * 4, part * C + gone * 4 + 4)
            assert not m_qkv[:, sl].any() and not m_b[sl].any()
        assert not m_o[gone * 4 : gone * 4 + 4].any()
        assert m_qkv.sum() == C * 3 * C // 2 and m_o.sum() == C * C // 2


def test_pruned_head_contributes_nothing():
    # attention output projected by c_proj: the rows of a removed head are zero
    C, H = 8, 2
    p = P.apply_masks(_tiny_params(C=C, H=H), P.prune_heads(_tiny_params(C=C, H=H), H, 0.5))
    heads = rng.normal(size=(5, C))  # concatenated head outputs (T, C)
    keep = P.head_mask(_tiny_params(C=C, H=H), H, 0.5)[0]
    gone = int(np.flatnonzero(~keep)[0])
    changed = heads.copy()
    changed[:, gone * 4 : gone * 4 + 4] = 123.0
    w_o = p["h.0.attn.c_proj.weight"]
    np.testing.assert_array_equal(heads @ w_o, changed @ w_o)


def test_neuron_mask():
    p = _tiny_params()
    masks = P.neuron_mask(p, 0.25)
    for layer in (0, 1):
        m = f"h.{layer}.mlp."
        scores = np.sqrt(
            (p[m + "c_fc.weight"].astype(np.float64) ** 2).sum(0)
            + (p[m + "c_proj.weight"].astype(np.float64) ** 2).sum(1)
        )
        gone = np.sort(np.argsort(scores)[:8])  # round(0.25 * 32) = 8 lowest
        np.testing.assert_array_equal(np.flatnonzero(~masks[m + "c_fc.bias"]), gone)
        assert not masks[m + "c_fc.weight"][:, gone].any()
        assert not masks[m + "c_proj.weight"][gone].any()
        assert P.sparsity(masks[m + "c_proj.weight"]) == 0.25
    pruned = P.apply_masks(p, masks)
    h = rng.normal(size=(3, 8)).astype(np.float32)
    pre = h @ pruned["h.0.mlp.c_fc.weight"] + pruned["h.0.mlp.c_fc.bias"]
    assert np.all(pre[:, ~masks["h.0.mlp.c_fc.bias"]] == 0)  # GELU(0) = 0: the neuron is off


def test_sparsity_report_apply_and_masks_at_edges():
    w = distinct((4, 5))
    m = P.magnitude_mask(w, 0.3)
    assert P.sparsity(m) == 0.3
    r = P.report({"w": m, "v": np.ones(5, bool)})
    assert r["w"] == {"pruned": 6, "total": 20, "sparsity": 0.3}
    assert r["total"] == {"pruned": 6, "total": 25, "sparsity": 6 / 25}
    out = P.apply_masks({"w": w, "b": np.ones(2)}, {"w": m})
    assert np.all(out["w"][~m] == 0) and np.all(out["w"][m] == w[m])
    assert not np.signbit(out["w"][~m]).any()  # +0.0
    assert out["w"].dtype == np.float32
    for s in (0.0, 1.0):
        for mask in (
            P.magnitude_mask(w, s),
            P.wanda_mask(w, np.ones(4), s),
            P.global_magnitude_masks({"w": w}, s)["w"],
        ):
            assert P.sparsity(mask) == s


def test_masked_adamw_keeps_pruned_weights_at_zero():
    """A hand-written AdamW step: masked grads + fresh moments keep zeros exactly."""
    w = distinct((8, 6)).astype(np.float64)
    masks = {"w": P.magnitude_mask(w, 0.5)}
    params = P.apply_masks({"w": w}, masks)
    m, v = np.zeros_like(w), np.zeros_like(w)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
    for t in range(1, 6):
        g = P.mask_grads({"w": rng.normal(size=w.shape)}, masks)["w"]
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        params = {"w": params["w"] - lr * (step + wd * params["w"])}
    assert np.all(params["w"][~masks["w"]] == 0)
    assert np.all(params["w"][masks["w"]] != w[masks["w"]])  # the kept weights did train


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: P.magnitude_mask(np.ones(4), 1.5), r"sparsity must be in \[0, 1\], got 1.5"),
        (lambda: P.magnitude_mask(np.ones(4), -0.1), r"sparsity must be in \[0, 1\]"),
        (lambda: P.magnitude_mask(np.ones(4), float("nan")), r"sparsity must be in \[0, 1\]"),
        (lambda: P.magnitude_mask(np.array([1.0, np.nan]), 0.5), "w must be finite"),
        (lambda: P.n_m_mask(np.ones(6)), "multiple of m=4"),
        (lambda: P.n_m_mask(np.ones(8), 3, 2), "n must be <= m"),
        (lambda: P.wanda_mask(np.ones((4, 2)), np.ones(3), 0.5), r"x_norm must have one entry"),
        (lambda: P.wanda_mask(np.ones((4, 2)), -np.ones(4), 0.5), "non-negative"),
        (lambda: P.cubic_sparsity(1, 0, 0.8, 0, 0), "n must be a positive int"),
        (lambda: P.cubic_sparsity(1, 0, 1.8, 0, 10), r"s_f must be in \[0, 1\]"),
        (lambda: P.head_mask(_tiny_params(), 3, 0.5), "divisible by n_head=3"),
        (lambda: P.head_mask({"wte.weight": np.ones(2)}, 2, 0.5), "no transformer blocks"),
        (lambda: P.apply_masks({"w": np.ones(3)}, {"w": np.ones(3)}), "must be bool"),
        (lambda: P.apply_masks({"w": np.ones(3)}, {"x": np.ones(3, bool)}), "no matching entry"),
        (lambda: P.sparsity(np.ones(3)), "mask must be a bool array"),
    ],
)
def test_validation(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.reference
def test_magnitude_matches_torch_l1_unstructured():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for this test")
    from torch.nn.utils import prune as tprune

    w = distinct((12, 7))
    for amount in (0.0, 0.25, 0.5, 0.83, 1.0):
        lin = torch.nn.Linear(12, 7, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T))
        tprune.l1_unstructured(lin, "weight", amount=amount)
        np.testing.assert_array_equal(P.magnitude_mask(w, amount), lin.weight_mask.numpy().T == 1)


def test_nm_sparse_and_masked_params_kinds():
    w = distinct((16, 6))
    k = P.nm_sparse(w)
    np.testing.assert_array_equal(k.dequantize(), np.where(P.n_m_mask(w), w, 0))
    assert k.values.shape == (8, 6) and k.n_params == 48
    assert k.nbytes == 8 * 6 * 4 + 8 * 6 * 2 // 8
    k18 = P.nm_sparse(w, 1, 8)
    np.testing.assert_array_equal(k18.dequantize(), np.where(P.n_m_mask(w, 1, 8), w, 0))
    p = _tiny_params()
    masks = P.neuron_mask(p, 0.5)
    out = P.masked_params(p, masks)
    assert isinstance(out["h.0.mlp.c_fc.weight"], Masked)
    assert isinstance(out["h.0.mlp.c_fc.bias"], np.ndarray)
    assert out["h.0.attn.c_attn.weight"] is p["h.0.attn.c_attn.weight"]
    np.testing.assert_array_equal(
        out["h.1.mlp.c_proj.weight"].dequantize(),
        P.apply_masks(p, masks)["h.1.mlp.c_proj.weight"],
    )
