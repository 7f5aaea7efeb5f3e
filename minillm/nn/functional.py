"""The layers of a GPT as forward/backward pairs, written by hand in NumPy.

Every layer is a pair of pure functions in the style of llm.c: the forward returns its output
and a *cache* holding exactly what the backward needs; the backward takes the upstream gradient
$\\partial L/\\partial y$ and the cache and returns the gradients of the inputs and parameters.
Shapes use B (batch), T (time), C (channels), V (vocabulary), H (heads), D = C/H (head size).

Linear (Conv1D layout, as GPT-2 stores it): $y = xW + b$, so
$\\partial L/\\partial x = \\delta W^\\top$, $\\partial L/\\partial W = x^\\top \\delta$,
$\\partial L/\\partial b = \\sum \\delta$.

LayerNorm over the last axis: $\\hat x = (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon}$,
$y = \\gamma \\odot \\hat x + \\beta$; its input gradient is
$$\\frac{\\partial L}{\\partial x} = \\frac{1}{\\sqrt{\\sigma^2+\\epsilon}}
\\Big(g - \\overline{g} - \\hat x\\, \\overline{g \\odot \\hat x}\\Big),
\\qquad g = \\gamma \\odot \\delta,$$
where the bars are means over the normalised axis.

GELU, GPT-2's tanh approximation: $\\mathrm{gelu}(x) = \\tfrac12 x\\,(1 + \\tanh u)$ with
$u = \\sqrt{2/\\pi}\\,(x + 0.044715\\,x^3)$.

Causal self-attention per head: $A = \\mathrm{softmax}(QK^\\top/\\sqrt{D} + M)$ with $M_{ij} = -\\infty$
for $j > i$, and $Y = AV$. Softmax backward: $\\partial L/\\partial S = A \\odot (G - \\mathrm{rowsum}(G \\odot A))$
with $G = \\partial L/\\partial A$.

Cross-entropy over the vocabulary, averaged over the $N$ positions:
$\\ell = -\\frac1N \\sum_n \\log p_{n, y_n}$ with $p = \\mathrm{softmax}(z)$, and
$\\partial \\ell/\\partial z = (p - \\mathrm{onehot}(y))/N$.
"""

from __future__ import annotations

import math

import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)


# Softmax family: subtract the row maximum so exp never overflows.
def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax $e^{x_i - \\max x} / \\sum_j e^{x_j - \\max x}$."""
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable $\\log\\mathrm{softmax}(x) = (x - m) - \\log\\sum e^{x - m}$."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


#
# Embedding: token rows plus position rows.
def embedding(wte: np.ndarray, wpe: np.ndarray, idx: np.ndarray, pos0: int = 0) -> tuple[np.ndarray, tuple]:
    """$x_{b,t} = W_{te}[\\mathrm{idx}_{b,t}] + W_{pe}[t_0 + t]$; returns (x, cache)."""
    B, T = idx.shape
    x = wte[idx] + wpe[pos0 : pos0 + T]  # (B, T, C)
    return x, (idx, pos0, wte.shape[0], wpe.shape[0])


def embedding_backward(dx: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Scatter-add the gradient back into the rows that were read."""
    idx, pos0, V, Tmax = cache
    B, T, C = dx.shape
    dwte = np.zeros((V, C), dtype=dx.dtype)
    # np.add.at accumulates repeated ids correctly (plain fancy-index += would not).
    np.add.at(dwte, idx.reshape(-1), dx.reshape(-1, C))  # (V, C)
    dwpe = np.zeros((Tmax, C), dtype=dx.dtype)
    dwpe[pos0 : pos0 + T] = dx.sum(axis=0)  # (T, C)
    return dwte, dwpe


#
# LayerNorm normalises each position's C features, then scales and shifts.
def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """$y = \\gamma (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon} + \\beta$; returns (y, cache)."""
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    return xhat * w + b, (xhat, rstd, w)


def layer_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of LayerNorm."""
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    dw = (dy * xhat).reshape(-1, C).sum(axis=0)  # (C,)
    db = dy.reshape(-1, C).sum(axis=0)  # (C,)
    g = dy * w
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db


#
# Linear in Conv1D layout: W is (in, out), so a row vector x maps to x @ W.
def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """$y = xW + b$; returns (y, cache)."""
    return x @ w + b, (x, w)  # (..., out)


def linear_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of $y = xW + b$."""
    x, w = cache
    n_in, n_out = w.shape
    dx = dy @ w.T  # (..., in)
    x2, dy2 = x.reshape(-1, n_in), dy.reshape(-1, n_out)
    # dW in W's memory order (see nn.gpt.output_major), so optimizer updates run on matching strides
    dw = (dy2.T @ x2).T if w.flags.f_contiguous and not w.flags.c_contiguous else x2.T @ dy2  # (in, out)
    db = dy2.sum(axis=0)  # (out,)
    return dx, dw, db


#
# GELU with GPT-2's tanh approximation.
def gelu(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """$\\tfrac12 x (1 + \\tanh(\\sqrt{2/\\pi}(x + 0.044715 x^3)))$; returns (y, cache)."""
    t = np.tanh(GELU_C * (x + 0.044715 * x * x * x))
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """$\\mathrm{gelu}'(x) = \\tfrac12(1+t) + \\tfrac12 x (1-t^2)\\sqrt{2/\\pi}(1 + 3 \\cdot 0.044715 x^2)$."""
    x, t = cache
    du = GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


#
# Causal multi-head self-attention on the fused QKV projection.
def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, H, T, D)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, H, T, D) -> (B, T, C)."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def causal_mask(T: int, S: int | None = None) -> np.ndarray:
    """Boolean (T, S) mask, True where query $i$ may *not* see key $j$ (future positions).

    With a cache of $S - T$ earlier positions, query $i$ sits at absolute position $S - T + i$.
    """
    S = T if S is None else S
    return np.arange(S)[None, :] > (np.arange(T)[:, None] + (S - T))


def attention(qkv: np.ndarray, n_head: int) -> tuple[np.ndarray, tuple]:
    """Causal self-attention of a (B, T, 3C) QKV tensor; returns (y (B, T, C), cache)."""
    B, T, C3 = qkv.shape
    q, k, v = np.split(qkv, 3, axis=-1)  # 3 x (B, T, C)
    q, k, v = (split_heads(a, n_head) for a in (q, k, v))  # (B, H, T, D)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, H, T, T)
    s = np.where(causal_mask(T), -np.inf, s)
    a = softmax(s)  # (B, H, T, T)
    y = merge_heads(a @ v)  # (B, T, C)
    return y, (q, k, v, a, scale)


def attention_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient of the (B, T, 3C) QKV input of `attention`."""
    q, k, v, a, scale = cache
    H = q.shape[1]
    dyh = split_heads(dy, H)  # (B, H, T, D)
    dv = a.transpose(0, 1, 3, 2) @ dyh  # (B, H, T, D)
    da = dyh @ v.transpose(0, 1, 3, 2)  # (B, H, T, T)
    # Softmax backward; masked entries have a = 0 so they get no gradient.
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale  # (B, H, T, T)
    dq = ds @ k  # (B, H, T, D)
    dk = ds.transpose(0, 1, 3, 2) @ q  # (B, H, T, D)
    return np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)


#
# Cross-entropy, averaged over every position.
def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, tuple]:
    """Mean $-\\log \\mathrm{softmax}(z)_{y}$ over all positions; returns (loss, cache)."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)  # (N, V)
    y = targets.reshape(-1)  # (N,)
    logp = log_softmax(z)  # (N, V)
    loss = -logp[np.arange(y.size), y].mean()
    return float(loss), (logp, y, logits.shape)


def cross_entropy_backward(cache: tuple, dloss: float = 1.0) -> np.ndarray:
    """$\\partial \\ell / \\partial z = (\\mathrm{softmax}(z) - \\mathrm{onehot}(y)) / N$."""
    logp, y, shape = cache
    dz = np.exp(logp)  # (N, V) probabilities
    dz[np.arange(y.size), y] -= 1.0
    dz *= dloss / y.size
    return dz.reshape(shape)
