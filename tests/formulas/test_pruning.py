"""The display formulas of docs/pruning.md, each computed by the library and by hand."""

import numpy as np
import pytest

from minillm.compress import prune as P
from minillm.kinds import Masked, NMSparse

rng = np.random.default_rng(0)


@pytest.mark.formula("pruning.magnitude-count")
def test_magnitude_count():
    w = rng.permutation(40).astype(np.float64) + 1  # distinct magnitudes 1..40
    for s in (0.0, 0.0125, 0.0375, 0.1, 0.5125, 0.9, 1.0):
        k = round(s * 40)  # Python's round is half to even: 0.5 -> 0, 1.5 -> 2, 20.5 -> 20
        mask = P.magnitude_mask(w, s)
        assert np.count_nonzero(~mask) == k
        np.testing.assert_array_equal(np.sort(w[~mask]), np.arange(1, k + 1))


@pytest.mark.formula("pruning.n-m")
def test_n_m():
    w = rng.normal(size=(16, 5))
    mask = P.n_m_mask(w, 2, 4)
    for g in range(4):
        for o in range(5):
            group = np.abs(w[4 * g : 4 * g + 4, o])
            top2 = sorted(range(4), key=lambda i: -group[i])[:2]
            assert sorted(np.flatnonzero(mask[4 * g : 4 * g + 4, o])) == sorted(top2)


@pytest.mark.formula("pruning.head-score")
def test_head_score():
    C, H = 12, 3
    D = C // H
    params = {
        "h.0.attn.c_attn.weight": rng.normal(size=(C, 3 * C)),
        "h.0.attn.c_proj.weight": rng.normal(size=(C, C)),
    }
    w_attn, w_proj = params["h.0.attn.c_attn.weight"], params["h.0.attn.c_proj.weight"]
    for h in range(H):
        total = sum(np.linalg.norm(w_attn[:, p * C + h * D : p * C + (h + 1) * D]) ** 2 for p in range(3))
        total += np.linalg.norm(w_proj[h * D : (h + 1) * D, :]) ** 2
        assert P.head_scores(params, 0, H)[h] == pytest.approx(np.sqrt(total), rel=1e-13)


@pytest.mark.formula("pruning.wanda-score")
def test_wanda_score():
    w = rng.normal(size=(10, 4))
    x = rng.normal(size=(50, 10)) * rng.uniform(0.1, 5, size=10)  # inputs of different sizes
    x_norm = np.sqrt((x**2).sum(axis=0))
    mask = P.wanda_mask(w, P.wanda_norms(x), 0.3)  # round(3.0) = 3 pruned per output
    for o in range(4):
        score = [abs(w[i, o]) * x_norm[i] for i in range(10)]
        lowest = sorted(range(10), key=lambda i: score[i])[:3]
        assert sorted(np.flatnonzero(~mask[:, o])) == sorted(lowest)


@pytest.mark.formula("pruning.cubic")
def test_cubic():
    for t, expected in ((25, 0.4625), (50, 0.7), (75, 0.7875)):
        assert P.cubic_sparsity(t, 0.0, 0.8, 0, 100) == pytest.approx(expected, abs=1e-15)
    s_i, s_f, t0, n, dt = 0.2, 0.9, 30, 8, 5
    for t in range(30, 71, 5):
        by_hand = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3
        assert P.cubic_sparsity(t, s_i, s_f, t0, n, dt) == pytest.approx(by_hand, abs=1e-15)


@pytest.mark.formula("pruning.csr-bytes")
def test_csr_bytes():
    m, n = 48, 20
    w = rng.normal(size=(m, n)).astype(np.float32)
    threshold = 0.5 + (m + 1) / (2 * m * n)
    for s in np.linspace(0, 1, 41):
        k = Masked(w, P.magnitude_mask(w, s))
        nnz = k.n_params
        assert k.nbytes_csr == 8 * nnz + 4 * (m + 1) and k.nbytes == 4 * m * n
        actual = 1 - nnz / (m * n)  # the sparsity after rounding the count
        assert (k.nbytes_csr < k.nbytes) == (actual > threshold)
    # 2:4 with float32 values: 16 + 1 bits per weight
    values = rng.normal(size=(m // 2, n)).astype(np.float32)
    idx = np.tile(np.array([[0], [2]], np.uint8), (m // 4, n))
    assert NMSparse(values, idx).nbytes * 8 / (m * n) == 17
    assert NMSparse(values.astype(np.float16), idx).nbytes * 8 / (m * n) == 9  # float16
