"""The display formulas of docs/claims.md, each computed by the library and checked independently."""

import itertools
import math

import numpy as np
import pytest

import minillm
from minillm import claims as C
from minillm.bench import decode_bytes_per_token
from minillm.compress import distill
from minillm.compress.prune import magnitude_mask
from minillm.compress.quantize import quantize_params
from minillm.hw.devices import Device
from minillm.hw.roofline import roofline_report
from minillm.kinds import block_matmul_names
from minillm.nn.gpt import init_params

rng = np.random.default_rng(0)


# (a) soft-thresholding ---------------------------------------------------------------------


@pytest.mark.formula("claims.soft-threshold")
def test_soft_threshold_is_the_l1_proximal_operator():
    # argmin_z 1/2 (z - x)^2 + theta |z| by brute force on a fine grid
    grid = np.linspace(-4, 4, 800_001)  # step 1e-5
    for x, theta in [(-3.0, 1.0), (-0.5, 1.0), (0.3, 0.25), (2.0, 0.0), (1.7, 0.5), (0.1, 0.5)]:
        z = grid[np.argmin(0.5 * (grid - x) ** 2 + theta * np.abs(grid))]
        assert C.soft_threshold(np.array([x]), theta)[0] == pytest.approx(z, abs=1e-5)
    # and the closed form sign(x) max(0, |x| - theta), element by element
    x, theta = rng.normal(size=200), 0.4
    expected = [math.copysign(max(0.0, abs(v) - theta), v) for v in x]
    np.testing.assert_array_equal(C.soft_threshold(x, theta), expected)


@pytest.mark.formula("claims.shrinkage-bias")
def test_shrinkage_bias():
    x = rng.normal(size=1000)
    theta = rng.uniform(0, 1, size=1000)
    lhs = np.sign(x) * (C.soft_threshold(x, theta) - x)
    np.testing.assert_allclose(lhs, -np.minimum(np.abs(x), theta), atol=1e-15)
    # the mean over a weight matrix is what shrinkage_stats reports
    w = rng.normal(0, 0.02, size=(64, 32))
    s = C.int8_step(w) / 2
    stats = C.shrinkage_stats(w, C.soft_threshold(w, s))
    assert stats["bias_toward_zero"] == pytest.approx(-np.mean(np.minimum(np.abs(w), s)), rel=1e-12)


@pytest.mark.formula("claims.quantizer")
def test_int8_quantizer_error_and_levels():
    w = rng.normal(0, 0.02, size=(96, 48)).astype(np.float32)
    q = quantize_params({"h.0.mlp.c_fc.weight": w}, "int8")["h.0.mlp.c_fc.weight"]
    s = np.abs(w).max(axis=0) / 127  # per output column
    err = q.dequantize() - w
    assert np.all(np.abs(err) <= s / 2 * (1 + 1e-6))
    for o in range(w.shape[1]):  # at most 255 levels per column, all multiples of s_o
        levels = np.unique(q.dequantize()[:, o])
        assert levels.size <= 255
        np.testing.assert_allclose(levels / s[o], np.round(levels / s[o]), atol=1e-4)


# (b) overlap -------------------------------------------------------------------------------


@pytest.mark.formula("claims.flow-shop")
def test_flow_shop_recurrence_is_the_longest_staircase_path():
    # Independent: the makespan of a permutation flow shop (unlimited buffers) is the longest
    # monotone path from (0, 0) to (S-1, J-1) through the duration grid.
    for S, J in [(2, 5), (3, 4), (4, 3)]:
        d = rng.uniform(0, 1, size=(S, J))
        best = 0.0
        for downs in itertools.combinations(range(S + J - 2), S - 1):
            s = j = 0
            total = d[0, 0]
            for step in range(S + J - 2):
                if step in downs:
                    s += 1
                else:
                    j += 1
                total += d[s, j]
            best = max(best, total)
        assert C.flow_shop(d).makespan == pytest.approx(best, rel=1e-12)


@pytest.mark.formula("claims.overlap-bounds")
def test_overlap_bounds():
    for _ in range(20):
        t, c = rng.uniform(0, 1, size=(2, 8))
        d = np.stack([t, c])
        overlapped = C.flow_shop(d, max_in_flight=2).makespan
        assert max(t.sum(), c.sum()) <= overlapped + 1e-12
        assert C.flow_shop(d, max_in_flight=1).makespan == pytest.approx(t.sum() + c.sum(), rel=1e-12)
        assert overlapped <= t.sum() + c.sum() + 1e-12
        assert overlapped > min(t.sum(), c.sum())  # the "min" claim is never reached


@pytest.mark.formula("claims.overlap-equal")
def test_overlap_equal_chunks():
    for n, t, c in [(1, 2.0, 3.0), (5, 1.0, 2.0), (8, 3.0, 0.5), (4, 1.5, 1.5)]:
        d = np.array([[t] * n, [c] * n])
        for buffers in (2, None):
            assert C.flow_shop(d, max_in_flight=buffers).makespan == pytest.approx(t + c + (n - 1) * max(t, c))


@pytest.mark.formula("claims.pipeline-bubble")
def test_pipeline_bubble():
    for stages, micro in [(4, 1), (4, 8), (2, 3), (8, 32)]:
        tau = 0.7
        sched = C.flow_shop(np.full((stages, micro), tau))
        assert sched.makespan == pytest.approx((stages + micro - 1) * tau)
        idle = 1 - sched.busy_fraction
        np.testing.assert_allclose(idle, (stages - 1) / (micro + stages - 1), rtol=1e-12)


# (c) pruning -------------------------------------------------------------------------------


@pytest.mark.formula("claims.masked-gradient")
def test_masked_gradient_by_finite_differences():
    cfg = minillm.GPTConfig.preset("tiny")
    model = minillm.GPT(cfg, params=init_params(cfg, 0, dtype=np.float64))
    name = "h.1.attn.c_attn.weight"
    mask = magnitude_mask(model.params[name], 0.5)
    idx, targets = rng.integers(0, cfg.vocab_size, size=(2, 2, 12))
    _, grads = C.masked_loss_and_grads(model, {name: mask}, idx, targets)

    def J(w):  # J(w ⊙ M) computed without the function under test
        params = dict(model.params)
        params[name] = np.where(mask, w, 0.0)
        return minillm.GPT(cfg, params=params).loss_and_grads(idx, targets)[0]

    kept = [tuple(k) for k in np.argwhere(mask)[:6]]
    pruned = [tuple(k) for k in np.argwhere(~mask)[:6]]
    fd = C.finite_difference(J, model.params[name], kept + pruned, h=1e-5)
    an = np.array([grads[name][k] for k in kept + pruned])
    np.testing.assert_allclose(an, fd, rtol=1e-6, atol=1e-10)
    assert np.all(an[len(kept):] == 0)
    # the gradient at the dense weights, masked, is a different (wrong) vector
    _, dense = model.loss_and_grads(idx, targets)
    assert np.abs(dense[name] * mask - grads[name]).max() > 1e-6


# (d) batching ------------------------------------------------------------------------------


@pytest.mark.formula("claims.batch-bound")
def test_batch_bound():
    cfg = minillm.GPTConfig.preset("teacher")
    C_, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    W = 4 * (L * (12 * C_ * C_ + 13 * C_) + C_ * V + 2 * C_)  # fp32 weights read per step, by hand
    context = 64
    q1 = roofline_report(cfg, "fp32", "h100", phase="decode", context=context)["total"]["bytes"]
    X = q1 - W  # bytes per sequence
    assert X >= 2 * L * context * C_ * 4  # at least its KV cache
    for B in (1, 2, 8, 64):
        r = roofline_report(cfg, "fp32", "h100", phase="decode", context=context, batch=B)
        t = r["total"]
        assert t["bytes"] == W + B * X  # affine in B
        assert t["memory_bound_tokens_per_s"] == pytest.approx(B * r["bandwidth"] / (W + B * X))
        flops_per_token = t["flops"] / B
        assert t["compute_bound_tokens_per_s"] == pytest.approx(r["peak_flops"] / flops_per_token)


@pytest.mark.formula("claims.batch-speedup")
def test_batch_speedup():
    cfg = minillm.GPTConfig.preset("teacher")
    C_, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    W = 4 * (L * (12 * C_ * C_ + 13 * C_) + C_ * V + 2 * C_)
    bound = lambda B: roofline_report(cfg, "fp32", "h100", phase="decode", context=64,
                                      batch=B)["total"]["memory_bound_tokens_per_s"]
    X = roofline_report(cfg, "fp32", "h100", phase="decode", context=64)["total"]["bytes"] - W
    for B in (1, 2, 16, 256):
        speedup = bound(B) / bound(1)
        assert speedup == pytest.approx(B * (W + X) / (W + B * X), rel=1e-12)
        assert speedup <= B
    assert bound(10**7) / bound(1) == pytest.approx((W + X) / X, rel=1e-4)  # the limit B -> inf


# (e) quantization --------------------------------------------------------------------------


@pytest.mark.formula("claims.quant-bytes")
def test_quant_bytes_per_token():
    cfg = minillm.GPTConfig.preset("tiny", n_embd=32)  # inputs a multiple of llama.cpp's block of 32
    model = minillm.GPT(cfg, seed=0)
    names = block_matmul_names(model.params) + ["wte.weight"]  # the tied head is quantized too
    n_q = sum(model.params[n].size for n in names)
    n_other = sum(v.size for k, v in model.params.items() if k not in names and k != "wpe.weight")
    context = 10
    kv = 2 * cfg.n_layer * context * cfg.n_embd * 4
    per_weight = {"q8_0": 34 / 32, "q4_0": 18 / 32}
    fp32 = decode_bytes_per_token(model, context)
    assert fp32 == 4 * (n_q + n_other) + kv + 2 * 4 * cfg.n_embd  # + token and position rows
    for method, b in per_weight.items():
        q = minillm.GPT(cfg, params=quantize_params(model.params, method))
        rows = b * cfg.n_embd + 4 * cfg.n_embd  # the token's row is stored quantized too
        assert decode_bytes_per_token(q, context) == b * n_q + 4 * n_other + kv + rows
    # tokens/s_q <= beta / bytes_q, as quantized_speed reports it (prompt 6 + 8 new: context 10)
    dev = Device("fake", "a fake device", {"fp32": 1e12}, mem_bandwidth=5e10, mem_bytes=None, source="test")
    got = C.quantized_speed(model, ("fp32", "q4_0"), backends=["numpy"], prompt_tokens=6, new_tokens=8,
                            repeat=1, device=dev)
    for row, b in zip(got, (4, 18 / 32), strict=True):
        rows = b * cfg.n_embd + 4 * cfg.n_embd
        assert row["memory_bound_tok_s"] == pytest.approx(5e10 / (b * n_q + 4 * n_other + kv + rows))


# (f) the KD example ------------------------------------------------------------------------


@pytest.mark.formula("claims.kd-terms")
def test_kd_terms():
    ps, pt, y = [0.3, 0.5, 0.2], [0.1, 0.8, 0.1], 1
    r = C.kd_worked_example(ps, pt, y)["probabilities"]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    h_t = -sum(a * math.log(a) for a in pt)
    h_ts = -sum(a * math.log(b) for a, b in zip(pt, ps, strict=True))
    assert r["ce"] == pytest.approx(math.log(2), rel=1e-15)
    assert r["kl_teacher_student"] == pytest.approx(kl, rel=1e-14)
    assert r["cross_entropy_teacher_student"] == pytest.approx(h_t + kl, rel=1e-14)
    assert r["cross_entropy_teacher_student"] == pytest.approx(h_ts, rel=1e-14)
    # the same KL through the logits path: softmax(ln p) = p
    assert distill.kd_loss(np.log(ps), np.log(pt), 1.0) == pytest.approx(kl, rel=1e-12)
