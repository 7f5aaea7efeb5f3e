"""Compression: turn a params dict into a smaller one (params -> params).

- `quantize` — integer codes and scales (per tensor / channel / group; llama.cpp Q8_0, Q4_0);
- `prune` — masks: magnitude, global, N:M, heads, neurons, Wanda; gradual schedules;
- `distill` — the soft-target loss of Hinton et al. and its gradient;
- `lowrank` — truncated-SVD factorization $W \\approx AB$.

Compressed weights are the kinds of `minillm.kinds`, which every backend knows how to multiply.
"""

from . import distill, lowrank, prune, quantize

__all__ = ["distill", "lowrank", "prune", "quantize"]
