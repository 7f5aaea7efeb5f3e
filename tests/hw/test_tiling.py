"""Blocked matmul: right result, traffic counts equal to the closed forms."""

import math

import numpy as np
import pytest

from minillm.hw.tiling import (
    blocked_matmul,
    global_reads,
    intensity,
    shared_bytes_per_block,
    shared_reads,
)


def int_valued(rng, shape):
    # small integers in float64: every summation order gives the exact same result
    return rng.integers(-8, 9, size=shape).astype(np.float64)


@pytest.mark.parametrize(("M", "N", "K", "BM", "BN", "BK", "TM", "TN"), [
    (64, 48, 32, 16, 16, 8, 1, 1),  # tiles divide
    (64, 64, 64, 32, 16, 16, 4, 2),
    (37, 29, 23, 8, 16, 5, 2, 4),  # nothing divides
    (5, 7, 3, 16, 16, 16, 1, 1),  # tiles larger than the matrix
    (1, 100, 40, 1, 32, 7, 1, 8),  # a matrix-vector product
])
def test_counts_equal_closed_forms(M, N, K, BM, BN, BK, TM, TN):
    rng = np.random.default_rng(M + N + K)
    A, B = int_valued(rng, (M, K)), int_valued(rng, (K, N))
    t = blocked_matmul(A, B, BM, BN, BK, TM, TN)
    np.testing.assert_array_equal(t.C, A @ B)
    # Independent count: A is re-read by each of the ceil(N/BN) block columns, B by each block row.
    assert t.global_reads == M * K * math.ceil(N / BN) + K * N * math.ceil(M / BM)
    assert t.global_reads == global_reads(M, N, K, BM, BN)
    assert t.global_writes == M * N
    assert t.shared_writes == t.global_reads
    assert t.shared_reads == shared_reads(M, N, K, TM, TN)
    assert t.flops == 2 * M * N * K
    assert t.arithmetic_intensity == pytest.approx(intensity(M, N, K, BM, BN, 8))
    if M % BM == 0 and N % BN == 0:
        assert t.global_reads == pytest.approx(M * N * K * (1 / BN + 1 / BM))


def test_global_traffic_does_not_depend_on_bk():
    rng = np.random.default_rng(0)
    A, B = int_valued(rng, (32, 24)), int_valued(rng, (24, 40))
    reads = {blocked_matmul(A, B, 8, 8, bk).global_reads for bk in (1, 3, 8, 24, 100)}
    assert len(reads) == 1


def test_intensity_rises_with_the_tile():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((64, 64)).astype(np.float32)
    B = rng.standard_normal((64, 64)).astype(np.float32)
    values = []
    for b in (1, 2, 4, 8, 16, 32, 64):
        t = blocked_matmul(A, B, b, b, 16)
        np.testing.assert_allclose(t.C, A @ B, rtol=1e-5, atol=1e-4)
        values.append(t.arithmetic_intensity)
        # square b x b tiles: 2MNK / (4 (2MNK/b + MN)) FLOP/B, about b/4 for float32
        assert t.arithmetic_intensity == pytest.approx(2 * 64**3 / (4 * (2 * 64**3 / b + 64**2)))
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert shared_bytes_per_block(64, 64, 16) == (64 * 16 + 16 * 64) * 4


def test_validation():
    A = np.ones((4, 3))
    with pytest.raises(ValueError, match="do not match"):
        blocked_matmul(A, np.ones((4, 3)), 2, 2, 2)
    with pytest.raises(ValueError, match="BK must be a positive int"):
        blocked_matmul(A, np.ones((3, 2)), 2, 2, 0)
    with pytest.raises(ValueError, match="TM must divide BM"):
        blocked_matmul(A, np.ones((3, 2)), 4, 4, 2, TM=3)
    with pytest.raises(ValueError, match="BN must be a positive int"):
        global_reads(4, 4, 4, 2, -1)
