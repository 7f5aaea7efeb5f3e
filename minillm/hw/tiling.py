r"""The GPU memory hierarchy: a blocked matmul that counts its memory traffic.

A GPU kernel for $C = AB$ ($A$: $M \times K$, $B$: $K \times N$) gives each thread block one
$B_M \times B_N$ tile of $C$. The block walks along $K$ in steps of $B_K$: it copies an
$A$ tile ($B_M \times B_K$) and a $B$ tile ($B_K \times B_N$) from slow global memory (HBM) into
fast on-chip shared memory, multiplies them there, and finally writes its $C$ tile once.

Every element of $A$ is therefore read once per block *column* and every element of $B$ once
per block *row*. With bounds-checked loads at the ragged edges (elements outside the matrix are
never fetched), the global-memory reads are exactly

$$R_{\text{global}} = M K \left\lceil \frac{N}{B_N} \right\rceil + K N \left\lceil \frac{M}{B_M}
  \right\rceil \;=\; M N K \left( \frac{1}{B_N} + \frac{1}{B_M} \right) \text{ when the tiles divide,}$$

independent of $B_K$ (which only sets the shared-memory footprint $(B_M + B_N) B_K$ elements),
plus $W_{\text{global}} = MN$ writes. The arithmetic intensity against global memory,

$$I = \frac{2 M N K}{s\,(R_{\text{global}} + W_{\text{global}})} \approx
  \frac{2}{s\,(1/B_M + 1/B_N)} \;\text{FLOP/byte}$$

for $s$-byte elements, grows linearly with the tile: square $b \times b$ tiles give $b/s$.
That is how a kernel climbs the roofline from the memory-bound slope to the compute roof.

One level down the same argument repeats: if each thread keeps a $T_M \times T_N$ micro-tile of
$C$ in registers, the shared-memory reads are $M K \lceil N/T_N \rceil + K N \lceil M/T_M \rceil$
(with $T_M \mid B_M$, $T_N \mid B_N$); shared-memory writes equal the global reads (each loaded
element is stored once). Counts are in elements; multiply by the element size for bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "TiledMatmul",
    "blocked_matmul",
    "global_reads",
    "intensity",
    "shared_bytes_per_block",
    "shared_reads",
]


def _positive(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def global_reads(M: int, N: int, K: int, BM: int, BN: int) -> int:
    """Closed form: elements read from global memory, $MK\\lceil N/B_N\\rceil + KN\\lceil M/B_M\\rceil$."""
    _positive(M=M, N=N, K=K, BM=BM, BN=BN)
    return M * K * math.ceil(N / BN) + K * N * math.ceil(M / BM)


def shared_reads(M: int, N: int, K: int, TM: int = 1, TN: int = 1) -> int:
    """Closed form: shared-memory reads with $T_M \\times T_N$ register micro-tiles."""
    _positive(M=M, N=N, K=K, TM=TM, TN=TN)
    return M * K * math.ceil(N / TN) + K * N * math.ceil(M / TM)


def intensity(M: int, N: int, K: int, BM: int, BN: int, itemsize: int = 4) -> float:
    """Closed form: FLOPs per byte of global traffic, $2MNK / (s(R_{global} + MN))$."""
    _positive(itemsize=itemsize)
    return 2 * M * N * K / (itemsize * (global_reads(M, N, K, BM, BN) + M * N))


def shared_bytes_per_block(BM: int, BN: int, BK: int, itemsize: int = 4) -> int:
    """Shared memory one block needs for its two tiles, $(B_M B_K + B_K B_N) s$ bytes."""
    _positive(BM=BM, BN=BN, BK=BK, itemsize=itemsize)
    return (BM * BK + BK * BN) * itemsize


@dataclass(frozen=True)
class TiledMatmul:
    """Result and traffic counts (in elements) of `blocked_matmul`."""

    C: np.ndarray
    flops: int  # 2 M N K
    global_reads: int
    global_writes: int
    shared_reads: int
    shared_writes: int
    itemsize: int

    @property
    def global_bytes(self) -> int:
        return (self.global_reads + self.global_writes) * self.itemsize

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved to or from global memory."""
        return self.flops / self.global_bytes


def blocked_matmul(A: ArrayLike, B: ArrayLike, BM: int, BN: int, BK: int, TM: int = 1, TN: int = 1) -> TiledMatmul:
    """Emulate a shared-memory tiled GPU matmul ``C = A @ B`` and count its memory traffic.

    Parameters
    ----------
    A, B : array_like, shapes (M, K) and (K, N)
        Same dtype family; ``C`` has NumPy's result dtype.
    BM, BN, BK : int
        Block tile sizes (need not divide M, N, K: edge tiles are smaller).
    TM, TN : int
        Per-thread register micro-tile; must divide BM and BN.

    Returns
    -------
    TiledMatmul

    >>> A = np.ones((64, 32), np.float32); B = np.ones((32, 48), np.float32)
    >>> t = blocked_matmul(A, B, BM=16, BN=16, BK=8)
    >>> t.global_reads == 64 * 48 * 32 * (1/16 + 1/16), bool((t.C == A @ B).all())
    (True, True)
    """
    A = np.asarray(A)
    B = np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"A (M, K) and B (K, N) do not match: {A.shape} and {B.shape}")
    M, K = A.shape
    N = B.shape[1]
    _positive(M=M, N=N, K=K, BM=BM, BN=BN, BK=BK, TM=TM, TN=TN)
    if BM % TM or BN % TN:
        raise ValueError(f"TM must divide BM and TN must divide BN, got TM={TM}, BM={BM}, "
                         f"TN={TN}, BN={BN}")
    C = np.zeros((M, N), dtype=np.result_type(A, B))
    g_reads = s_reads = 0
    for i0 in range(0, M, BM):
        for j0 in range(0, N, BN):
            acc = np.zeros((min(BM, M - i0), min(BN, N - j0)), dtype=C.dtype)  # registers
            bm, bn = acc.shape
            for k0 in range(0, K, BK):
                # global -> shared: bounds-checked tile loads (nothing outside the matrix)
                As = A[i0:i0 + BM, k0:k0 + BK].copy()
                Bs = B[k0:k0 + BK, j0:j0 + BN].copy()
                g_reads += As.size + Bs.size
                # shared -> registers: each TM x TN micro-tile reads its TM rows of As and TN
                # columns of Bs for every k, i.e. As once per micro-tile column and vice versa.
                bk = As.shape[1]
                s_reads += bk * (bm * math.ceil(bn / TN) + bn * math.ceil(bm / TM))
                acc += As @ Bs
            C[i0:i0 + bm, j0:j0 + bn] = acc  # registers -> global, once
    return TiledMatmul(C, 2 * M * N * K, g_reads, M * N, s_reads, g_reads, C.dtype.itemsize)
