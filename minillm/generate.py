"""Autoregressive generation: prefill once, then one cheap decode step per token.

Generating token $t+1$ needs the keys and values of every earlier position. Recomputing them
costs a forward over the whole prefix each step ($O(t)$ work per token, $O(n^2)$ in all); a **KV
cache** keeps them, so each decode step runs the model on *one* token:

1. **prefill**: run the prompt's $P$ tokens at once, filling the cache;
2. **decode**: repeat — sample from the last logits, feed that one token, append its k/v.

Sampling from the next-token distribution $p_i \\propto \\exp(z_i/\\tau)$:

- `temperature` $\\tau$: $\\tau = 0$ means greedy ($\\arg\\max_i z_i$); $\\tau < 1$ sharpens, $> 1$ flattens;
- `top_k`: keep the $k$ largest logits, renormalise;
- `top_p` (nucleus): keep the smallest set of most likely tokens whose probability sums to
  at least $p$, renormalise.

Draws use `numpy.random.default_rng(seed)` and inverse-CDF sampling, so a seed reproduces
a generation exactly. When the context window ($T_{max}$ = `block_size`) fills up, generation
continues on the last $T_{max}/2$ tokens (they are prefilled again, once every $T_{max}/2$ steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import backends
from .config import GPTConfig
from .nn.functional import softmax
from .nn.gpt import GPT, KVCache, check_idx, forward


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_sampling(temperature: float, top_k: int | None, top_p: float | None,
                   vocab_size: int) -> None:  # fmt: skip
    """Validate sampling parameters with messages that name the argument and the allowed range."""
    if not _is_real(temperature) or not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and (not _is_real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def sample(logits: np.ndarray, rng: np.random.Generator | None, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None) -> np.ndarray:  # fmt: skip
    """Draw one token id per row of `logits` (B, V); returns int64 (B,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    # Shift by the row max first: z <= 0, so even a vanishing temperature gives -inf, never inf - inf.
    with np.errstate(over="ignore"):
        z = (logits - logits.max(axis=-1, keepdims=True)) / temperature  # (B, V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]  # (B, 1) the k-th largest
        z = np.where(z < kth, -np.inf, z)
    p = softmax(z)  # (B, V)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")  # most likely first
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # Keep a token if the mass *before* it is still short of top_p (so the first is always kept).
        keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    assert rng is not None
    u = rng.random(p.shape[0])[:, None]  # (B, 1)
    # Inverse CDF; min() guards the case where float rounding leaves cumsum[-1] < u.
    ids = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(ids, p.shape[-1] - 1)


def stream(model: GPT, idx: Any, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           backend: Any = "numpy") -> Iterator[np.ndarray]:  # fmt: skip
    """Yield the next token ids (an int64 array of shape (B,)) one step at a time.

    Parameters are those of `generate`. Only the last position's logits are computed at each
    step, and the KV cache is allocated once for the whole context window. Every argument is
    checked when `stream` is called, before the first token is asked for.
    """
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, GPTConfig) or not isinstance(getattr(model, "params", None), dict):
        raise TypeError(f"model must be a minillm.GPT (with .config and .params), got {type(model).__name__}")
    idx = check_idx(idx, cfg)
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p, cfg.vocab_size)
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
    be = backends.get(backend)
    return _stream(model, idx, int(max_new_tokens), temperature, top_k, top_p, seed, be)


def _stream(model: GPT, idx: np.ndarray, max_new_tokens: int, temperature: float, top_k: int | None,
            top_p: float | None, seed: int | None, be: Any) -> Iterator[np.ndarray]:  # fmt: skip
    """The generator behind `stream`, on validated arguments."""
    cfg = model.config
    params = be.prepare(model.params)
    rng = np.random.default_rng(seed)
    B = idx.shape[0]
    cache = KVCache.allocate(cfg, B, be)
    context = idx  # tokens whose k/v are (or will be) in the cache
    logits = forward(params, cfg, context, cache, be, last_only=True)  # prefill
    for step in range(max_new_tokens):
        nxt = sample(np.asarray(be.to_numpy(logits))[:, -1], rng, temperature, top_k, top_p)  # (B,)
        yield nxt
        if step == max_new_tokens - 1:
            break  # the last token's logits are never needed
        context = np.concatenate([context, nxt[:, None]], axis=1)
        if cache.pos == cache.size:  # window full: slide to the last half and prefill again
            context = context[:, -(cfg.block_size // 2) :]
            cache.pos = 0
            logits = forward(params, cfg, context, cache, be, last_only=True)
        else:
            logits = forward(params, cfg, nxt[:, None], cache, be, last_only=True)  # decode


def generate(model: GPT, idx: Any, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             backend: Any = "numpy") -> np.ndarray:  # fmt: skip
    """Extend `idx` (B, T) by `max_new_tokens` sampled tokens; returns int64 (B, T + new).

    Parameters
    ----------
    model : GPT
        The model (any weight kinds its backend can multiply by).
    idx : array_like of int, shape (B, T) or (T,)
        The prompt's token ids; at most `block_size` long.
    max_new_tokens : int
        How many tokens to add.
    temperature : float
        0 for greedy decoding, otherwise the softmax temperature.
    top_k, top_p : optional
        Restrict sampling to the k most likely tokens / the nucleus of mass p.
    seed : int, optional
        Seed for `numpy.random.default_rng`; the same seed gives the same tokens.
    backend : str
        Backend name (see `minillm.backends.available()`).
    """
    tokens = stream(model, idx, max_new_tokens, temperature, top_k, top_p, seed, backend)  # checks all
    idx = check_idx(idx, model.config)
    new = list(tokens)
    if not new:
        return idx.copy()
    return np.concatenate([idx, np.stack(new, axis=1)], axis=1)
