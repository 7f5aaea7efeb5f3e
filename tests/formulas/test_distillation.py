"""The display formulas of docs/distillation.md, each computed by the library and by hand."""

import math

import numpy as np
import pytest

from minillm.compress import distill as D

rng = np.random.default_rng(0)


def softmax_by_hand(z, T):
    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


@pytest.mark.formula("distillation.temperature-softmax")
def test_temperature_softmax():
    z = [2.0, -1.0, 0.5, 0.0]
    for T in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(np.exp(D.log_softmax(np.array(z) / T)), softmax_by_hand(z, T), rtol=1e-14)


@pytest.mark.formula("distillation.loss")
def test_loss():
    s, t, y = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), np.array([4, 0, 2])
    alpha, T = 0.3, 2.5
    total = 0.0
    for row in range(3):
        p = softmax_by_hand(s[row], 1.0)
        ps, pt = softmax_by_hand(s[row], T), softmax_by_hand(t[row], T)
        ce = -math.log(p[y[row]])
        kl = sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
        total += alpha * ce + (1 - alpha) * T * T * kl
    assert D.combined_loss(s, t, y, alpha, T)[0] == pytest.approx(total / 3, rel=1e-13)


@pytest.mark.formula("distillation.kd-grad")
def test_kd_grad():
    s, t = rng.normal(size=6), rng.normal(size=6)
    for T in (0.7, 1.0, 4.0):
        ps, pt = np.array(softmax_by_hand(s, T)), np.array(softmax_by_hand(t, T))
        np.testing.assert_allclose(D.kd_loss_grad(s, t, T), T * (ps - pt), rtol=1e-12, atol=1e-16)
        h = 1e-6  # central differences of the loss itself, i = 2
        e = np.zeros(6)
        e[2] = h
        fd = (D.kd_loss(s + e, t, T) - D.kd_loss(s - e, t, T)) / (2 * h)
        assert fd == pytest.approx(T * (ps[2] - pt[2]), abs=1e-9)
    # large T: T (p_s - p_t) tends to ((s - mean s) - (t - mean t)) / V, independent of T
    limit = ((s - s.mean()) - (t - t.mean())) / 6
    np.testing.assert_allclose(D.kd_loss_grad(s, t, 1e4), limit, atol=1e-4)


@pytest.mark.formula("distillation.ce-grad")
def test_ce_grad():
    s, y = rng.normal(size=(4, 7)), np.array([0, 6, 3, 3])
    _, grad = D.cross_entropy(s, y)
    expected = np.array([softmax_by_hand(row, 1.0) for row in s])
    expected[np.arange(4), y] -= 1
    np.testing.assert_allclose(grad, expected / 4, rtol=1e-12, atol=1e-17)


@pytest.mark.formula("distillation.cross-entropy-decomposition")
def test_cross_entropy_decomposition():
    terms = D.loss_terms_from_probs([0.3, 0.5, 0.2], [0.1, 0.8, 0.1], 1)
    h_ts = -(0.1 * math.log(0.3) + 0.8 * math.log(0.5) + 0.1 * math.log(0.2))
    h_t = -(0.2 * math.log(0.1) + 0.8 * math.log(0.8))
    assert terms["cross_entropy_teacher_student"] == pytest.approx(h_ts, abs=1e-15)
    assert terms["teacher_entropy"] == pytest.approx(h_t, abs=1e-15)
    assert h_ts == pytest.approx(h_t + terms["kl_teacher_student"], abs=1e-15)
