r"""A weight-stationary systolic array, simulated cycle by cycle (the TPU v1 matrix unit).

An $R \times C$ grid of multiply-accumulate cells (PEs). Before a matmul $Y = XW$
($X$: $M \times K$ int8, $W$: $K \times N$ int8, $K \le R$, $N \le C$) the weights are loaded and
stay put: PE $(i, j)$ holds $w_{ij}$. Then every clock cycle

- each PE passes its activation to the right neighbour and its partial sum to the one below;
- row $i$ of the input enters at the left edge **skewed** by $i$ cycles: at cycle $t$ the left PE
  of row $i$ receives $x_{t-i,\,i}$ (zero outside $0 \le t - i < M$);
- each PE computes $p_{\text{out}} = p_{\text{in}} + a \cdot w_{ij}$ with the partial sum from
  above (the top row receives 0, or an initial accumulator $c$).

So PE $(i, j)$ works on input row $m = t - i - j$ at cycle $t$, and row $m$ of the output
column $j$ leaves the bottom edge at cycle $t = m + (R - 1) + j$. The last one, $m = M-1$ in
column $N-1$, leaves at $M + R + N - 3$, so a single pass takes

$$T_{\text{pass}} = M + R + N - 2 \text{ cycles}$$

(the skew fills and drains the array: $R + N - 2$ cycles of latency for $M$ rows of work). Of the
$R C\, T$ cell-cycles only $MKN$ do useful multiply-accumulates:

$$\text{utilisation} = \frac{M K N}{R\, C\, T}.$$

Larger matmuls are **tiled**: $K$ in chunks of $R$ rows, $N$ in chunks of $C$ columns. For each
column tile the $K$ chunks run one after another, the partial sums of one pass entering the top
of the next (an int32 accumulator), so

$$T = \left\lceil \tfrac{K}{R} \right\rceil \left( \left\lceil \tfrac{N}{C} \right\rceil (M + R - 2)
      + N \right).$$

Weight loading is not counted: TPU v1 double-buffers the weights, shifting the next tile in while
the current one computes (Jouppi et al. 2017). The products are int8 x int8 (they fit in 16 bits)
and the partial sums are int32 registers that **wrap around** modulo $2^{32}$ on overflow, exactly
like NumPy's ``x.astype(np.int32) @ w.astype(np.int32)``.

TPU v1: $256 \times 256$ cells at 700 MHz, $2 \cdot 256^2 \cdot 7 \times 10^8 \approx 92$ TOPS.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["TPU_V1", "SystolicArray", "SystolicResult", "SystolicState"]


@dataclass(frozen=True)
class SystolicState:
    """The registers of the array at the end of cycle `t` (for drawing diagrams and animations).

    Attributes
    ----------
    t : int
        Cycle number (0-based).
    activations : np.ndarray, (R, C) int32
        The activation register of every PE.
    psums : np.ndarray, (R, C) int32
        The partial sum each PE passes down.
    row : np.ndarray, (R, C) int
        Which input row $m = t - i - j$ each PE works on (-1 when idle).
    active : np.ndarray, (R, C) bool
        PEs doing a useful multiply-accumulate this cycle.
    output : np.ndarray, (M, N) int32
        Outputs collected at the bottom edge so far (zeros where not yet out).
    done : np.ndarray, (M, N) bool
        Which outputs have left the array.
    """

    t: int
    activations: np.ndarray
    psums: np.ndarray
    row: np.ndarray
    active: np.ndarray
    output: np.ndarray
    done: np.ndarray


@dataclass(frozen=True)
class SystolicResult:
    """Output of a (possibly tiled) matmul on the array, with its cycle count."""

    output: np.ndarray  # (M, N) int32
    cycles: int
    useful_macs: int  # M * K * N
    rows: int
    cols: int
    passes: int  # number of (K-chunk, N-chunk) tiles

    @property
    def utilisation(self) -> float:
        """Useful MACs over cell-cycles, $MKN / (RCT)$."""
        return self.useful_macs / (self.rows * self.cols * self.cycles)


def _int8(a: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer (int8) array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError(f"{name} must hold int8 values in [-128, 127], got [{a.min()}, {a.max()}]")
    return a.astype(np.int32)


class SystolicArray:
    """A weight-stationary array of ``rows x cols`` int8 MAC cells with int32 partial sums.

    >>> sa = SystolicArray(4, 4)
    >>> x = np.arange(6, dtype=np.int8).reshape(3, 2); w = np.ones((2, 3), dtype=np.int8)
    >>> res = sa.matmul(x, w)
    >>> res.output.tolist(), res.cycles   # 3 + 4 + 3 - 2 cycles
    ([[1, 1, 1], [5, 5, 5], [9, 9, 9]], 8)
    """

    def __init__(self, rows: int, cols: int, clock_hz: float | None = None):
        for name, v in (("rows", rows), ("cols", cols)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if clock_hz is not None and not clock_hz > 0:
            raise ValueError(f"clock_hz must be positive, got {clock_hz!r}")
        self.rows, self.cols, self.clock_hz = rows, cols, clock_hz

    def __repr__(self) -> str:
        return f"SystolicArray(rows={self.rows}, cols={self.cols}, clock_hz={self.clock_hz})"

    # -- closed forms -------------------------------------------------------------------------

    def pass_cycles(self, M: int, N: int) -> int:
        """Cycles of one pass with M input rows and N used columns: $M + R + N - 2$."""
        return M + self.rows + N - 2

    def cycles(self, M: int, K: int, N: int) -> int:
        """Closed-form cycles of a tiled $M \\times K \\times N$ matmul (see module docstring)."""
        _check_sizes(M=M, K=K, N=N)
        k_tiles = math.ceil(K / self.rows)
        n_tiles = math.ceil(N / self.cols)
        return k_tiles * (n_tiles * (M + self.rows - 2) + N)

    def peak_ops_per_s(self) -> float:
        """$2 R C f$: two operations (multiply, add) per cell per cycle."""
        if self.clock_hz is None:
            raise ValueError("peak_ops_per_s needs clock_hz; construct the array with clock_hz=...")
        return 2.0 * self.rows * self.cols * self.clock_hz

    # -- the cycle-by-cycle simulation --------------------------------------------------------

    def _run(self, x: np.ndarray, w: np.ndarray, c_in: np.ndarray | None) -> Iterator[SystolicState]:
        """Step one pass (K <= rows, N <= cols); yields live (not copied) registers each cycle."""
        M, K = x.shape
        N = w.shape[1]
        R, C = self.rows, self.cols
        i = np.arange(R)[:, None]  # PE row index, (R, 1)
        j = np.arange(C)[None, :]  # PE column index, (1, C)
        weights = np.zeros((R, C), dtype=np.int32)
        weights[:K, :N] = w  # stationary: loaded once, unused cells hold 0
        useful = (i < K) & (j < N)
        a = np.zeros((R, C), dtype=np.int32)  # activation registers
        p = np.zeros((R, C), dtype=np.int32)  # partial-sum registers
        out = np.zeros((M, N), dtype=np.int32)
        done = np.zeros((M, N), dtype=bool)
        rows_i, cols_j = np.arange(R), np.arange(N)
        for t in range(self.pass_cycles(M, N)):
            # Activations move one cell right; the left edge takes the skewed input x[t - i, i].
            a[:, 1:] = a[:, :-1]
            m = t - rows_i
            feed = (m >= 0) & (m < M) & (rows_i < K)
            a[:, 0] = 0
            a[feed, 0] = x[m[feed], rows_i[feed]]
            # Partial sums move one cell down; the top edge takes c_in[t - j, j] (or 0).
            top = np.zeros(C, dtype=np.int32)
            if c_in is not None:
                m_top = t - cols_j
                ok = (m_top >= 0) & (m_top < M)
                top[:N][ok] = c_in[m_top[ok], cols_j[ok]]
            p[1:] = p[:-1]
            p[0] = top
            p += a * weights  # every cell's MAC in one vectorised step; int32 wraps
            # The bottom edge of column j delivers output row t - (R - 1) - j.
            m_out = t - (R - 1) - cols_j
            ok = (m_out >= 0) & (m_out < M)
            out[m_out[ok], cols_j[ok]] = p[R - 1, :N][ok]
            done[m_out[ok], cols_j[ok]] = True
            row = t - i - j
            busy = (row >= 0) & (row < M)
            yield SystolicState(t, a, p, np.where(busy, row, -1), busy & useful, out, done)

    def run(self, x: ArrayLike, w: ArrayLike, c_in: ArrayLike | None = None) -> SystolicResult:
        """One pass: ``c_in + x @ w`` with ``x`` (M, K), ``w`` (K, N), K <= rows, N <= cols.

        `c_in` (M, N) int32 is an optional initial accumulator fed in at the top edge.
        """
        x, w, c = self._check(x, w, c_in, single_pass=True)
        state = deque(self._run(x, w, c), maxlen=1)[0]  # step to the last cycle
        M, K = x.shape
        N = w.shape[1]
        return SystolicResult(state.output, state.t + 1, M * K * N, self.rows, self.cols, 1)

    def matmul(self, x: ArrayLike, w: ArrayLike, c_in: ArrayLike | None = None) -> SystolicResult:
        """``c_in + x @ w`` for any sizes, tiled onto the array; cycles summed over passes.

        K is cut in chunks of `rows` (partial sums chained through the top edge), N in chunks
        of `cols`; M streams through in one pass per tile.
        """
        x, w, c = self._check(x, w, c_in, single_pass=False)
        M, K = x.shape
        N = w.shape[1]
        out = np.zeros((M, N), dtype=np.int32) if c is None else c.copy()
        cycles = passes = 0
        for n0 in range(0, N, self.cols):
            cols = slice(n0, n0 + self.cols)
            acc = out[:, cols]
            for k0 in range(0, K, self.rows):
                ks = slice(k0, k0 + self.rows)
                res = self.run(x[:, ks], w[ks, cols], acc)
                acc = res.output
                cycles += res.cycles
                passes += 1
            out[:, cols] = acc
        return SystolicResult(out, cycles, M * K * N, self.rows, self.cols, passes)

    def frames(self, x: ArrayLike, w: ArrayLike, c_in: ArrayLike | None = None) -> Iterator[SystolicState]:
        """Yield a copy of the array's state after every cycle of one pass (for animations)."""
        x, w, c = self._check(x, w, c_in, single_pass=True)
        for s in self._run(x, w, c):
            yield SystolicState(s.t, s.activations.copy(), s.psums.copy(), s.row, s.active,
                                s.output.copy(), s.done.copy())

    def state_at(self, x: ArrayLike, w: ArrayLike, t: int, c_in: ArrayLike | None = None) -> SystolicState:
        """The state after cycle `t` of one pass (0 <= t < M + rows + N - 2)."""
        x, w, _ = self._check(x, w, c_in, single_pass=True)
        n = self.pass_cycles(x.shape[0], w.shape[1])
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n:
            raise ValueError(f"t must be an int in [0, {n}), got {t!r}")
        for s in self.frames(x, w, c_in):
            if s.t == t:
                return s
        raise AssertionError("unreachable")

    def _check(self, x: ArrayLike, w: ArrayLike, c_in: ArrayLike | None, single_pass: bool):
        x = _int8(x, "x")
        w = _int8(w, "w")
        if x.shape[1] != w.shape[0]:
            raise ValueError(f"x (M, K) and w (K, N) do not match: {x.shape} and {w.shape}")
        _check_sizes(M=x.shape[0], K=x.shape[1], N=w.shape[1])
        if single_pass and (w.shape[0] > self.rows or w.shape[1] > self.cols):
            raise ValueError(f"w of shape {w.shape} does not fit the {self.rows}x{self.cols} array; "
                             "use matmul() to tile it")
        c = None
        if c_in is not None:
            c = np.asarray(c_in)
            if c.dtype.kind not in "iu" or c.shape != (x.shape[0], w.shape[1]):
                raise ValueError(f"c_in must be an int32 array of shape {(x.shape[0], w.shape[1])}, "
                                 f"got {c.dtype} {c.shape}")
            if c.size and (c.min() < -(2**31) or c.max() > 2**31 - 1):
                raise ValueError("c_in values must fit in int32")
            c = c.astype(np.int32)
        return x, w, c


def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


# TPU v1's matrix unit (Jouppi et al. 2017): 256 x 256 int8 MACs at 700 MHz.
TPU_V1 = SystolicArray(256, 256, clock_hz=700e6)
