"""The display formulas of docs/lowrank.md, each computed by the library and by hand."""

import numpy as np
import pytest

from minillm.compress import lowrank as LR

rng = np.random.default_rng(0)


def known_svd(m, n, sigma):
    """W = U diag(sigma) V^T with orthonormal U, V from QR: the singular values are given."""
    u, _ = np.linalg.qr(rng.normal(size=(m, len(sigma))))
    v, _ = np.linalg.qr(rng.normal(size=(n, len(sigma))))
    return u, v, (u * sigma) @ v.T


@pytest.mark.formula("lowrank.truncated-svd")
def test_truncated_svd():
    sigma = np.array([9.0, 4.0, 1.0, 0.25])
    u, v, w = known_svd(10, 7, sigma)
    a, b = LR.svd_factorize(w, 2)
    np.testing.assert_allclose(a @ b, (u[:, :2] * sigma[:2]) @ v[:, :2].T, atol=1e-12)
    # A = U_r sqrt(S_r): its columns have norms sqrt(sigma); B's rows likewise
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.sqrt(sigma[:2]), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), np.sqrt(sigma[:2]), rtol=1e-12)


@pytest.mark.formula("lowrank.eckart-young")
def test_eckart_young():
    sigma = np.array([5.0, 3.0, 2.0, 0.5, 0.1])
    _, _, w = known_svd(9, 12, sigma)
    for r in range(1, 5):
        a, b = LR.svd_factorize(w, r)
        err = w - a @ b
        assert np.linalg.norm(err, "fro") == pytest.approx(np.sqrt(np.sum(sigma[r:] ** 2)), abs=1e-12)
        assert np.linalg.norm(err, 2) == pytest.approx(sigma[r], abs=1e-12)
        # and no other rank-r matrix we try does better
        x = rng.normal(size=(9, r)) @ rng.normal(size=(r, 12))
        assert np.linalg.norm(w - x, "fro") > np.linalg.norm(err, "fro")


@pytest.mark.formula("lowrank.break-even")
def test_break_even():
    for m, n in ((768, 3072), (192, 768), (7, 5)):
        t = LR.break_even_rank(m, n)
        assert t == m * n / (m + n)
        for r in range(1, min(m, n) + 1):
            assert (r * (m + n) < m * n) == (r < t)
    assert LR.break_even_rank(768, 3072) == 614.4


@pytest.mark.formula("lowrank.energy")
def test_energy():
    sigma = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    for energy in (0.1, 16 / 22, 0.75, 20 / 22, 0.93, 0.99, 1.0):
        by_hand = min(r for r in range(1, 5) if np.sum(sigma[:r] ** 2) >= energy * 22)
        assert LR.rank_for_energy(sigma, energy) == by_hand
