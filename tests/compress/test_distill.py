"""Distillation loss: REFERENCES.md values, gradients by finite differences, stability."""

import numpy as np
import pytest

from minillm.compress import distill as D

S, T_, Y = [0.3, 0.5, 0.2], [0.1, 0.8, 0.1], 1

# Exact values of the REFERENCES.md example (logits), from mpmath at 50 digits. The
# REFERENCES.md numbers are PyTorch float64 results (F.kl_div with probability targets);
# the T = 2 one is 6.6e-16 from the exact value, so they are compared at 1e-15.
KL_T1_EXACT = 0.025875359044237189645
T2KL_T2_EXACT = 0.025020663522196337655


def test_reference_values():
    assert D.cross_entropy(S, Y)[0] == pytest.approx(0.93983106084446, abs=1e-15)
    assert D.kd_loss(S, T_, 1.0) == pytest.approx(0.02587535904423721, abs=1e-15)
    assert D.kd_loss(S, T_, 2.0) == pytest.approx(0.025020663522195674, abs=1e-15)
    assert D.kd_loss(S, T_, 1.0) == pytest.approx(KL_T1_EXACT, abs=2e-16)
    assert D.kd_loss(S, T_, 2.0) == pytest.approx(T2KL_T2_EXACT, abs=2e-16)


def test_kl_by_definition():
    s = np.array(S)
    t = np.array(T_)
    for T in (0.5, 1.0, 3.0):
        ps = np.exp(s / T) / np.exp(s / T).sum()
        pt = np.exp(t / T) / np.exp(t / T).sum()
        assert D.kd_loss(s, t, T) == pytest.approx(T * T * np.sum(pt * np.log(pt / ps)), rel=1e-13)
        assert D.kd_loss(t, t, T) == 0.0


def test_probabilities_version():
    """[.3,.5,.2] / [.1,.8,.1] read as *probabilities*, label 1: the standard quantities."""
    terms = D.loss_terms_from_probs(S, T_, Y)
    assert terms["ce"] == pytest.approx(np.log(2), abs=1e-16)  # -ln 0.5
    kl = 0.1 * np.log(0.1 / 0.3) + 0.8 * np.log(0.8 / 0.5) + 0.1 * np.log(0.1 / 0.2)
    assert terms["kl_teacher_student"] == pytest.approx(kl, abs=1e-16)
    assert terms["kl_teacher_student"] == pytest.approx(0.196826956473783, abs=1e-15)
    assert terms["kl_student_teacher"] == pytest.approx(0.233211308089554, abs=1e-15)
    assert terms["cross_entropy_teacher_student"] == pytest.approx(
        terms["teacher_entropy"] + terms["kl_teacher_student"], abs=1e-15
    )
    # softmax(log p) = p: the logits API gives the same KL from log-probabilities
    assert D.kd_loss(np.log(S), np.log(T_), 1.0) == pytest.approx(kl, abs=1e-15)
    # alpha = 0.5 at T = 1 is 0.4450, and no standard quantity here is 0.21
    loss, _ = D.combined_loss(np.log(S), np.log(T_), Y, alpha=0.5, temperature=1.0)
    assert loss == pytest.approx(0.5 * np.log(2) + 0.5 * kl, abs=1e-15)
    assert all(abs(v - 0.21) > 0.01 for v in [*terms.values(), loss])


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
def test_kd_grad_by_finite_differences(T):
    r = np.random.default_rng(1)
    s, t = r.normal(size=(2, 3, 5)), r.normal(size=(2, 3, 5)) * 2
    g = D.kd_loss_grad(s, t, T)
    assert g.shape == s.shape
    # central differences: error O(h^2 f''') ~ 1e-11 plus rounding eps/h ~ 1e-10
    np.testing.assert_allclose(g, _fd_grad(lambda z: D.kd_loss(z, t, T), s), atol=1e-9)
    ps = np.exp(s / T) / np.exp(s / T).sum(-1, keepdims=True)
    pt = np.exp(t / T) / np.exp(t / T).sum(-1, keepdims=True)
    np.testing.assert_allclose(g, T * (ps - pt) / 6, rtol=1e-12, atol=1e-17)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_combined_loss_and_grad(alpha):
    r = np.random.default_rng(2)
    s, t = r.normal(size=(4, 6)), r.normal(size=(4, 6))
    y = r.integers(0, 6, size=4)
    loss, d = D.combined_loss(s, t, y, alpha, 2.0)
    ce = -np.mean(np.log(np.exp(s) / np.exp(s).sum(-1, keepdims=True))[np.arange(4), y])
    assert loss == pytest.approx(alpha * ce + (1 - alpha) * D.kd_loss(s, t, 2.0), rel=1e-14)
    fd = _fd_grad(lambda z: D.combined_loss(z, t, y, alpha, 2.0)[0], s)
    np.testing.assert_allclose(d, fd, atol=1e-9)


def test_extreme_logits_are_finite():
    s = np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]], np.float32)
    t = np.array([[-1e4, 1e4, 0.0], [3e4, 0.0, 0.0]], np.float32)
    # row 0: p_t = e_1, p_s = e_0, KL = log p_t[1] - log p_s[1] = 0 - (-1e4); row 1: log 3
    loss = D.kd_loss(s, t, 1.0)
    assert np.isfinite(loss) and loss == pytest.approx((1e4 + np.log(3)) / 2, rel=1e-6)
    g = D.kd_loss_grad(s, t, 1.0)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[0], [0.5, -0.5, 0], atol=1e-7)
    ce, dce = D.cross_entropy(s, np.array([2, 0]))
    assert np.isfinite(ce) and ce == pytest.approx((2e4 + np.log(3)) / 2, rel=1e-6)
    assert np.all(np.isfinite(dce))


def test_float32_stays_float32():
    s = np.zeros((2, 3), np.float32)
    assert D.kd_loss_grad(s, s + 1, 2.0).dtype == np.float32
    assert D.combined_loss(s, s, np.zeros(2, int), 0.5, 1.0)[1].dtype == np.float32


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: D.kd_loss(S, T_, 0.0), "temperature must be a finite number > 0, got 0.0"),
        (lambda: D.kd_loss(S, T_, -1), "temperature must be a finite number > 0, got -1"),
        (lambda: D.kd_loss(S, T_, float("inf")), "temperature must be a finite number > 0"),
        (lambda: D.kd_loss(S, [0.1, 0.9], 1.0), "must have the same shape"),
        (lambda: D.kd_loss([np.nan, 0, 0], T_, 1.0), "student_logits must be finite"),
        (lambda: D.kd_loss_grad(S, [np.inf, 0, 0], 1.0), "teacher_logits must be finite"),
        (lambda: D.combined_loss(S, T_, Y, 1.5, 1.0), r"alpha must be in \[0, 1\], got 1.5"),
        (lambda: D.cross_entropy(S, 3), r"class ids in 0..2, got 3"),
        (lambda: D.cross_entropy(S, 1.0), "targets must be integer class ids"),
        (
            lambda: D.cross_entropy(np.zeros((2, 3)), np.zeros(3, int)),
            r"targets must have shape \(2,\)",
        ),
        (lambda: D.loss_terms_from_probs([0.5, 0.6], [0.5, 0.5], 0), "sum to 1"),
    ],
)
def test_validation(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.reference
def test_matches_torch_kl_div():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for this test")
    F = torch.nn.functional
    r = np.random.default_rng(3)
    s, t = r.normal(size=(7, 11)) * 3, r.normal(size=(7, 11)) * 3
    for T in (1.0, 2.5):
        ts = torch.tensor(s, requires_grad=True)
        ref = (
            T
            * T
            * F.kl_div(
                F.log_softmax(ts / T, -1),
                F.log_softmax(torch.tensor(t) / T, -1),
                reduction="batchmean",
                log_target=True,
            )
        )
        ref.backward()
        assert D.kd_loss(s, t, T) == pytest.approx(ref.item(), rel=1e-13)
        np.testing.assert_allclose(D.kd_loss_grad(s, t, T), ts.grad.numpy(), rtol=1e-12, atol=1e-16)
