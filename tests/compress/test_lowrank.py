"""Low rank: Eckart–Young errors, factor splits, budgets, factorizing a params dict."""

import numpy as np
import pytest

from minillm.compress import lowrank as LR
from minillm.kinds import LowRank

rng = np.random.default_rng(0)


def matrix(m, n, sigma):
    """W = U diag(sigma) V^T with random orthonormal U, V: singular values known exactly."""
    u, _ = np.linalg.qr(rng.normal(size=(m, len(sigma))))
    v, _ = np.linalg.qr(rng.normal(size=(n, len(sigma))))
    return (u * sigma) @ v.T


SIGMA = np.array([10.0, 5.0, 3.0, 1.0, 0.5, 0.1])


@pytest.mark.parametrize("r", range(1, 7))
def test_eckart_young_errors(r):
    w = matrix(12, 9, SIGMA)
    a, b = LR.svd_factorize(w, r)
    assert a.shape == (12, r) and b.shape == (r, 9)
    err = w - a @ b
    tail = np.sqrt(np.sum(SIGMA[r:] ** 2))
    assert np.linalg.norm(err, "fro") == pytest.approx(tail, abs=1e-12)
    spectral = SIGMA[r] if r < len(SIGMA) else 0.0
    assert np.linalg.norm(err, 2) == pytest.approx(spectral, abs=1e-12)


def test_full_rank_is_exact_and_rank_one_by_hand():
    w = rng.normal(size=(5, 4))
    a, b = LR.svd_factorize(w, 4)
    np.testing.assert_allclose(a @ b, w, atol=1e-13)
    # rank 1 of diag(3, 1) keeps the 3
    a, b = LR.svd_factorize(np.diag([3.0, 1.0]), 1)
    np.testing.assert_allclose(a @ b, [[3.0, 0.0], [0.0, 0.0]], atol=1e-15)


def test_splits_give_the_same_product():
    w = rng.normal(size=(8, 6)).astype(np.float32)
    a, b = LR.svd_factorize(w, 3)
    assert a.dtype == b.dtype == np.float32
    # balanced split: both factors carry sqrt(sigma), so their column / row norms agree
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1), rtol=1e-5)
    for split in ("left", "right"):
        a2, b2 = LR.svd_factorize(w, 3, split=split)
        np.testing.assert_allclose(a2 @ b2, a @ b, rtol=1e-5, atol=1e-6)
    a2, b2 = LR.svd_factorize(w, 3, split="left")  # b = V^T: orthonormal rows
    np.testing.assert_allclose(b2 @ b2.T, np.eye(3), atol=1e-6)


def test_break_even_and_budgets():
    assert LR.break_even_rank(768, 3072) == 614.4
    assert LR.rank_for_budget((768, 3072), 0.5) == 307  # floor(0.5 * 614.4)
    for m, n, f in ((768, 3072, 0.5), (192, 768, 0.25), (10, 7, 0.9)):
        r = LR.rank_for_budget((m, n), f)
        assert r * (m + n) <= f * m * n < (r + 1) * (m + n)
    assert LR.rank_for_budget((10, 7), 100.0) == 7  # capped at full rank
    assert LR.rank_for_budget((768, 3072), 1.0) == 614  # the break-even, rounded down


def test_rank_for_energy():
    sigma = np.array([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert LR.rank_for_energy(sigma, 9 / 14) == 1
    assert LR.rank_for_energy(sigma, 0.65) == 2
    assert LR.rank_for_energy(sigma, 13 / 14) == 2
    assert LR.rank_for_energy(sigma, 1.0) == 3  # the zero singular value is not needed
    assert LR.rank_for_energy(np.zeros(3), 0.5) == 1


def test_factorize_params():
    params = {
        "wte.weight": rng.normal(size=(10, 16)).astype(np.float32),
        "h.0.attn.c_attn.weight": rng.normal(size=(16, 48)).astype(np.float32),
        "h.0.attn.c_proj.weight": rng.normal(size=(16, 16)).astype(np.float32),
        "h.0.mlp.c_fc.weight": rng.normal(size=(16, 64)).astype(np.float32),
        "h.0.mlp.c_fc.bias": np.zeros(64, np.float32),
        "h.0.mlp.c_proj.weight": rng.normal(size=(64, 16)).astype(np.float32),
    }
    out = LR.factorize_params(params, "mlp", fraction=0.5)
    for name in ("h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"):
        k = out[name]
        assert isinstance(k, LowRank) and k.shape == params[name].shape
        assert k.rank == 6  # floor(0.5 * 16 * 64 / 80) = 6
        assert k.n_params <= 0.5 * 16 * 64
        a, b = LR.svd_factorize(params[name], 6)
        np.testing.assert_array_equal(k.a, a)
    for name in ("wte.weight", "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.bias"):
        assert out[name] is params[name]
    out = LR.factorize_params(params, "all", rank=2)
    assert all(out[n].rank == 2 for n in params if n.endswith("weight") and n != "wte.weight")
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn\.weight: rank must be an int in 1..16"):
        LR.factorize_params(params, "attn", rank=17)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: LR.svd_factorize(np.ones((4, 3)), 0), r"rank must be an int in 1..3 for a 4x3"),
        (
            lambda: LR.svd_factorize(np.ones((4, 3)), 4),
            r"rank must be an int in 1..3 for a 4x3 matrix, got 4",
        ),
        (lambda: LR.svd_factorize(np.ones((4, 3)), 2.0), "rank must be an int"),
        (lambda: LR.svd_factorize(np.ones(4), 1), "w must be 2-D"),
        (lambda: LR.svd_factorize(np.full((2, 2), np.nan), 1), "w must be finite"),
        (lambda: LR.svd_factorize(np.ones((2, 2)), 1, split="half"), "split must be one of"),
        (lambda: LR.rank_for_budget((768, 3072), 0.0), "fraction_of_params must be a finite"),
        (lambda: LR.rank_for_budget((768, 3072), 1e-4), "below one rank-1 factorization"),
        (lambda: LR.rank_for_energy([1.0, 2.0], 0.5), "decreasing"),
        (lambda: LR.rank_for_energy([2.0, 1.0], 1.5), r"energy must be in \(0, 1\]"),
        (lambda: LR.break_even_rank(0, 3), "m must be a positive int"),
        (lambda: LR.factorize_params({}, which="emb"), "which must be one of"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()
