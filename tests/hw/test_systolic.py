"""The cycle-by-cycle systolic array against NumPy's int32 matmul and the closed-form cycle counts."""

import math
import time

import numpy as np
import pytest

from minillm.hw.devices import get_device
from minillm.hw.systolic import TPU_V1, SystolicArray


def int8(rng, shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def numpy_int32(x, w, c=None):
    """NumPy's own int32 matmul (wraps modulo 2^32)."""
    y = x.astype(np.int32) @ w.astype(np.int32)
    return y if c is None else c.astype(np.int32) + y


@pytest.mark.parametrize(("R", "C", "M", "K", "N"), [
    (16, 16, 64, 16, 16),  # fits exactly
    (8, 6, 5, 3, 4),  # smaller than the array: unused rows still pass partial sums down
    (4, 4, 1, 4, 4),  # a single input row (batch-1 decode)
    (1, 1, 7, 1, 1),
])
def test_single_pass_matches_numpy_and_closed_form(R, C, M, K, N):
    rng = np.random.default_rng(R * 100 + M)
    x, w = int8(rng, (M, K)), int8(rng, (K, N))
    res = SystolicArray(R, C).run(x, w)
    assert res.output.dtype == np.int32
    np.testing.assert_array_equal(res.output, numpy_int32(x, w))
    assert res.cycles == M + R + N - 2 == SystolicArray(R, C).pass_cycles(M, N)
    assert res.useful_macs == M * K * N
    assert res.utilisation == pytest.approx(M * K * N / (R * C * (M + R + N - 2)))


def test_16x16_array_on_64x16x16_is_fast():
    rng = np.random.default_rng(0)
    x, w = int8(rng, (64, 16)), int8(rng, (16, 16))
    t0 = time.perf_counter()
    res = SystolicArray(16, 16).run(x, w)
    assert time.perf_counter() - t0 < 0.5
    np.testing.assert_array_equal(res.output, numpy_int32(x, w))


@pytest.mark.parametrize(("R", "C", "M", "K", "N"), [
    (4, 4, 9, 13, 10),  # ragged tiles in K and N
    (8, 5, 37, 50, 23),
    (3, 7, 2, 3, 7),  # exactly one tile
    (16, 16, 32, 64, 48),  # tiles divide evenly
])
def test_tiled_matmul_matches_numpy_and_closed_form(R, C, M, K, N):
    rng = np.random.default_rng(K)
    x, w = int8(rng, (M, K)), int8(rng, (K, N))
    sa = SystolicArray(R, C)
    res = sa.matmul(x, w)
    np.testing.assert_array_equal(res.output, numpy_int32(x, w))
    assert res.passes == math.ceil(K / R) * math.ceil(N / C)
    # independent sum over the tiles, each a pass of M + R + n_cols - 2 cycles
    per_tile = sum(M + R + min(C, N - n0) - 2 for n0 in range(0, N, C)) * math.ceil(K / R)
    assert res.cycles == per_tile == sa.cycles(M, K, N)


def test_int32_partial_sums_wrap_like_numpy():
    rng = np.random.default_rng(3)
    x = np.full((5, 6), 127, dtype=np.int8)
    w = np.full((6, 4), 127, dtype=np.int8)
    c = np.full((5, 4), 2**31 - 1000, dtype=np.int32)  # initial accumulator near INT32_MAX
    res = SystolicArray(6, 4).run(x, w, c)
    want = numpy_int32(x, w, c)
    assert (want < 0).all()  # it really wrapped
    np.testing.assert_array_equal(res.output, want)
    # and through tiling (partial sums chained through the top edge), on the negative side
    x_neg = (-rng.integers(1, 128, size=(3, 20))).astype(np.int8)
    w_pos = rng.integers(1, 128, size=(20, 5)).astype(np.int8)
    c = np.full((3, 5), -(2**31) + 5, dtype=np.int32)
    res = SystolicArray(4, 2).matmul(x_neg, w_pos, c)
    want = numpy_int32(x_neg, w_pos, c)
    assert (want > 0).all()  # wrapped past INT32_MIN
    np.testing.assert_array_equal(res.output, want)


def test_frames_show_skewed_dataflow():
    rng = np.random.default_rng(4)
    R, C, M, K, N = 5, 4, 6, 4, 3
    x, w = int8(rng, (M, K)), int8(rng, (K, N))
    sa = SystolicArray(R, C)
    frames = list(sa.frames(x, w))
    assert len(frames) == M + R + N - 2
    active_total = 0
    for s in frames:
        t = s.t
        for i in range(R):
            for j in range(C):
                m = t - i - j
                live = 0 <= m < M
                # activations: x[m, i] in row i, travelling right one cell per cycle
                want_a = int(x[m, i]) if live and i < K else 0
                assert s.activations[i, j] == want_a
                assert s.row[i, j] == (m if live else -1)
                # partial sums: the dot product of x[m, :i+1] with column j so far
                if live and j < N:
                    want_p = int(x[m, :min(i + 1, K)].astype(np.int64) @ w[:min(i + 1, K), j])
                    assert s.psums[i, j] == want_p
                assert s.active[i, j] == (live and i < K and j < N)
        active_total += int(s.active.sum())
        # output (m, j) leaves the bottom edge at cycle m + (R - 1) + j
        mm, jj = np.meshgrid(np.arange(M), np.arange(N), indexing="ij")
        np.testing.assert_array_equal(s.done, mm + (R - 1) + jj <= t)
    assert active_total == M * K * N  # utilisation's numerator, counted cell by cell
    np.testing.assert_array_equal(frames[-1].output, numpy_int32(x, w))
    mid = sa.state_at(x, w, 7)
    np.testing.assert_array_equal(mid.psums, frames[7].psums)
    np.testing.assert_array_equal(mid.output, frames[7].output)


def test_tpu_v1_peak_matches_device_table():
    assert TPU_V1.rows == TPU_V1.cols == 256
    assert TPU_V1.peak_ops_per_s() == 2 * 256 * 256 * 700e6 == get_device("tpu-v1").peak("int8")
    assert round(TPU_V1.peak_ops_per_s() / 1e12) == 92
    # a batch-1 matrix-vector product uses a sliver of the array
    assert TPU_V1.cycles(1, 256, 256) == 1 + 256 + 256 - 2


def test_validation():
    sa = SystolicArray(4, 4)
    x = np.zeros((2, 3), dtype=np.int8)
    w = np.zeros((3, 2), dtype=np.int8)
    with pytest.raises(ValueError, match="rows must be a positive int"):
        SystolicArray(0, 4)
    with pytest.raises(ValueError, match="cols must be a positive int"):
        SystolicArray(4, 2.5)
    with pytest.raises(TypeError, match="x must be an integer"):
        sa.run(x.astype(np.float32), w)
    with pytest.raises(ValueError, match=r"w must hold int8 values in \[-128, 127\]"):
        sa.run(x, np.full((3, 2), 300))
    with pytest.raises(ValueError, match="do not match"):
        sa.run(x, np.zeros((4, 2), dtype=np.int8))
    with pytest.raises(ValueError, match="does not fit the 4x4 array; use matmul"):
        sa.run(np.zeros((2, 5), np.int8), np.zeros((5, 2), np.int8))
    with pytest.raises(ValueError, match=r"c_in must be an int32 array of shape \(2, 2\)"):
        sa.run(x, w, np.zeros((3, 3), dtype=np.int32))
    with pytest.raises(ValueError, match=r"t must be an int in \[0, 6\)"):
        sa.state_at(x, w, 6)
    with pytest.raises(ValueError, match="M must be a positive int"):
        sa.cycles(0, 3, 3)
    with pytest.raises(ValueError, match="needs clock_hz"):
        sa.peak_ops_per_s()
