"""GPT-2: the model as pure functions over a dict of parameters.

For token ids $\\mathrm{idx} \\in \\{0..V-1\\}^{B \\times T}$ the model computes

$$x^{(0)} = W_{te}[\\mathrm{idx}] + W_{pe}[0..T-1]$$
$$a^{(l)} = x^{(l-1)} + \\mathrm{Attn}(\\mathrm{LN}_1(x^{(l-1)})), \\qquad
  x^{(l)} = a^{(l)} + \\mathrm{MLP}(\\mathrm{LN}_2(a^{(l)}))$$
$$\\mathrm{logits} = \\mathrm{LN}_f(x^{(L)})\\, W_{te}^\\top$$

with pre-LayerNorm residual blocks, causal multi-head attention on a fused QKV projection,
an MLP $\\mathrm{gelu}(x W_{fc} + b_{fc}) W_{proj} + b_{proj}$ of width $4C$, and the LM head tied to
the token embedding. Parameter names and shapes are those of Hugging Face's GPT-2 state dict
without the ``transformer.`` prefix; matrices are in Conv1D layout ($y = xW + b$, W is (in, out)),
stored output-major in memory (see `output_major`).

Two paths run this math:

- `forward` — inference through a backend's kernels with a preallocated KV cache. Prefill runs
  $T$ tokens at once; each decode step runs one token and attends to the cached keys/values,
  which is the same arithmetic as re-running the whole prefix, up to the order of float sums
  inside BLAS (logits agree within $10^{-4}$ in float32, greedy tokens exactly; tested).
- `forward_train` / `backward` — dense float32/float64 NumPy with the hand-written
  forward/backward pairs of `minillm.nn.functional`, for training and gradient checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import GPTConfig
from . import functional as F

BLOCK_WEIGHTS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def block_param_shapes(C: int) -> dict[str, tuple[int, ...]]:
    """One block's parameters for width C: names (after the block's "h.{i}." prefix) and
    shapes, in Hugging Face GPT-2 order."""
    return {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
    }  # fmt: skip


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in Hugging Face GPT-2 order."""
    V, T, C = config.vocab_size, config.block_size, config.n_embd
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(config.n_layer):
        shapes |= {f"h.{i}.{name}": shape for name, shape in block_param_shapes(C).items()}
    shapes |= {"ln_f.weight": (C,), "ln_f.bias": (C,)}
    return shapes


MATMUL_WEIGHTS = tuple(name + ".weight" for name in BLOCK_WEIGHTS)


def output_major(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with every dense block matmul weight stored **output-major** (Fortran order).

    The values and shapes do not change — W is still (in, out), $y = xW + b$ — only the order
    of the bytes in memory: output column $o$, $W_{:,o}$, becomes one contiguous run (the layout
    PyTorch's ``nn.Linear`` uses, (out, in) row-major). A decode step multiplies one row $x$ by
    each matrix, $y_o = \\sum_i x_i W_{io}$; with this layout every $y_o$ streams its weights in
    order, which BLAS and the Numba kernels read faster (`minillm bench --weights fp32-input-major`
    measures the other layout; docs/backends.md lists both).
    Arrays already in that order are returned as they are, without a copy.
    """
    return {name: np.asfortranarray(w) if name.endswith(MATMUL_WEIGHTS) and isinstance(w, np.ndarray) else w
            for name, w in params.items()}  # fmt: skip


def init_params(config: GPTConfig, seed: int = 0, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """GPT-2 initialisation: weights ~ N(0, 0.02²), residual projections scaled by $1/\\sqrt{2L}$
    (so the residual stream's variance does not grow with depth), biases 0, LayerNorm gains 1."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            a = np.ones(shape)
        elif name.endswith(".bias"):
            a = np.zeros(shape)
        else:
            std = 0.01 if name == "wpe.weight" else 0.02
            if name.endswith("c_proj.weight"):
                std /= math.sqrt(2 * config.n_layer)
            a = rng.normal(0.0, std, size=shape)
        params[name] = np.ascontiguousarray(a, dtype=dtype)
    return output_major(params)


def check_idx(idx: Any, config: GPTConfig, name: str = "idx", max_len: int | None = None) -> np.ndarray:
    """Validate token ids: a 2-D integer array with every id in [0, V) and length within context.

    Negative ids are rejected (NumPy indexing would silently wrap them around)."""
    try:
        a = np.asarray(idx)
    except (ValueError, TypeError):  # ragged nested lists
        text = repr(idx) if len(repr(idx)) <= 60 else repr(idx)[:57] + "..."
        raise ValueError(f"{name} must be a rectangular (B, T) array of token ids, got the ragged {text}") from None
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        if a.size and np.issubdtype(a.dtype, np.floating) and np.all(np.mod(a, 1) == 0):
            raise TypeError(f"{name} must be an integer array, got dtype {a.dtype} (use .astype(int))")
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, T) with B, T >= 1, got {np.shape(idx)}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name} contains token id {bad}; allowed ids are 0..{config.vocab_size - 1}"
        )
    limit = config.block_size if max_len is None else max_len
    if a.shape[1] > limit:
        raise ValueError(
            f"{name} has length {a.shape[1]}, longer than the context block_size={limit}"
        )
    return a.astype(np.int64, copy=False)


# ------------------------------------------------------------------------------------------
# Inference: one forward over a backend's kernels, with a preallocated KV cache.
@dataclass
class KVCache:
    """Keys and values of every layer for up to `size` positions: two (L, B, H, size, D) arrays.

    `pos` is how many positions are filled. Preallocating once means a decode step only writes
    one new column per layer instead of concatenating (and copying) the whole history."""

    k: Any
    v: Any
    pos: int = 0

    @property
    def size(self) -> int:
        return self.k.shape[3]

    @classmethod
    def allocate(cls, config: GPTConfig, batch: int, backend: Any, size: int | None = None,
                 dtype: Any = np.float32) -> KVCache:  # fmt: skip
        size = config.block_size if size is None else size
        k, v = backend.kv_alloc(config.n_layer, batch, config.n_head, size, config.head_size, dtype)
        return cls(k, v, 0)


def forward(params: dict[str, Any], config: GPTConfig, idx: np.ndarray, cache: KVCache | None,
            backend: Any, last_only: bool = False) -> Any:  # fmt: skip
    """Logits for `idx` (B, T) placed after the `cache.pos` positions already in `cache`.

    With ``cache=None`` the whole sequence is computed from scratch (a temporary cache).
    With ``last_only`` only the last position's logits are computed (B, 1, V) — all that
    sampling needs, and it skips the large (T, C) × (C, V) head product during prefill.
    The cache is advanced by T positions.

    A backend with a ``forward(params, config, idx, k, v, pos0, last_only) -> (logits, k, v)``
    method (JAX, which compiles this whole loop into one program) computes the step itself. One
    with a ``block(params, config, i, x, kv, pos0, B, T)`` method (Numba) may run block i in one
    call — the kernels below, in their order, without Python between them — or return None to
    let this loop run it.
    """
    B, T = idx.shape
    C, H, eps = config.n_embd, config.n_head, config.layer_norm_epsilon
    D = C // H
    if cache is None:
        cache = KVCache.allocate(config, B, backend, size=T)
    pos0 = cache.pos
    if pos0 + T > cache.size:
        raise ValueError(f"KV cache full: {pos0} + {T} positions > size {cache.size}")
    if hasattr(backend, "forward"):  # a compiling backend (JAX) runs the whole step as one program
        logits, cache.k, cache.v = backend.forward(params, config, idx, cache.k, cache.v, pos0, last_only)
        cache.pos = pos0 + T
        return logits
    kv = (cache.k, cache.v)

    x = backend.embed(params["wte.weight"], backend.asarray(idx)) + params["wpe.weight"][pos0 : pos0 + T]  # (B,T,C)
    x = x.reshape(B * T, C)  # (BT, C): every matmul below is a 2-D product
    block = getattr(backend, "block", None)  # a backend that runs a whole block in one call (Numba)
    for i in range(config.n_layer):
        if block is not None and (out := block(params, config, i, x, kv, pos0, B, T)) is not None:
            x = out  # the same kernels as below, in the same order, without Python between them
            continue
        p = f"h.{i}."
        h = backend.layer_norm(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"], eps)
        qkv = backend.linear(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"])
        # (BT, 3C) -> three (B, H, T, D) tensors
        qkv = qkv.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]
        kv = backend.kv_write(kv, i, pos0, k, v)
        y = backend.attention(q, kv[0][i], kv[1][i], n_keys=pos0 + T)  # (B, H, T, D)
        y = y.transpose(0, 2, 1, 3).reshape(B * T, C)  # (BT, C)
        x = x + backend.linear(y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"])
        h = backend.layer_norm(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"], eps)
        h = backend.gelu(backend.linear(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"]))  # (BT, 4C)
        x = x + backend.linear(h, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"])  # (BT, C)
    cache.k, cache.v, cache.pos = kv[0], kv[1], pos0 + T

    if last_only:
        x = x.reshape(B, T, C)[:, -1]  # (B, C)
        T = 1
    x = backend.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"], eps)
    logits = backend.lm_head(x, params["wte.weight"])  # (B*T, V)
    return logits.reshape(B, T, -1)  # (B, T, V)


# ------------------------------------------------------------------------------------------
# Training: forward that keeps what backward needs, and the backward pass written by hand.
def forward_train(params: dict[str, np.ndarray], config: GPTConfig, idx: np.ndarray,
                  targets: np.ndarray | None = None) -> tuple[np.ndarray, float | None, list]:  # fmt: skip
    """Dense NumPy forward that records each layer's cache; returns (logits, loss, caches)."""
    eps, H = config.layer_norm_epsilon, config.n_head
    caches: list = []
    x, c = F.embedding(params["wte.weight"], params["wpe.weight"], idx)  # (B, T, C)
    caches.append(c)
    for i in range(config.n_layer):
        p = f"h.{i}."
        h, c_ln1 = F.layer_norm(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"], eps)
        qkv, c_qkv = F.linear(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"])  # (B,T,3C)
        y, c_att = F.attention(qkv, H)  # (B, T, C)
        o, c_o = F.linear(y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"])
        x = x + o
        h, c_ln2 = F.layer_norm(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"], eps)
        f, c_fc = F.linear(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"])  # (B,T,4C)
        g, c_gelu = F.gelu(f)
        m, c_mp = F.linear(g, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"])  # (B,T,C)
        x = x + m
        caches.append((c_ln1, c_qkv, c_att, c_o, c_ln2, c_fc, c_gelu, c_mp))
    h, c_lnf = F.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"], eps)
    logits = h @ params["wte.weight"].T  # (B, T, V): the tied LM head
    caches.append((c_lnf, h))
    loss = None
    if targets is not None:
        loss, c_ce = F.cross_entropy(logits, targets)
        caches.append(c_ce)
    return logits, loss, caches


def backward(params: dict[str, np.ndarray], config: GPTConfig, caches: list,
             dlogits: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Gradients of every parameter, calling each layer's backward in reverse order.

    `dlogits` defaults to the gradient of the mean cross-entropy recorded by `forward_train`;
    pass another (e.g. a distillation loss's) to backpropagate that instead."""
    grads: dict[str, np.ndarray] = {}
    if dlogits is None:
        dlogits = F.cross_entropy_backward(caches[-1])
    c_lnf, h = caches[config.n_layer + 1]
    C = h.shape[-1]
    V = dlogits.shape[-1]
    # Tied head: logits = h @ wte.T, so wte receives a gradient from here *and* the embedding.
    dwte_head = dlogits.reshape(-1, V).T @ h.reshape(-1, C)  # (V, C)
    dh = dlogits @ params["wte.weight"]  # (B, T, C)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = F.layer_norm_backward(dh, c_lnf)
    for i in reversed(range(config.n_layer)):
        p = f"h.{i}."
        c_ln1, c_qkv, c_att, c_o, c_ln2, c_fc, c_gelu, c_mp = caches[1 + i]
        # MLP branch: x = a + mlp(ln_2(a)); the residual passes dx straight through.
        dg, grads[p + "mlp.c_proj.weight"], grads[p + "mlp.c_proj.bias"] = F.linear_backward(dx, c_mp)
        df = F.gelu_backward(dg, c_gelu)
        dh, grads[p + "mlp.c_fc.weight"], grads[p + "mlp.c_fc.bias"] = F.linear_backward(df, c_fc)
        dh, grads[p + "ln_2.weight"], grads[p + "ln_2.bias"] = F.layer_norm_backward(dh, c_ln2)
        dx = dx + dh
        # Attention branch.
        dy, grads[p + "attn.c_proj.weight"], grads[p + "attn.c_proj.bias"] = F.linear_backward(dx, c_o)
        dqkv = F.attention_backward(dy, c_att)  # (B, T, 3C)
        dh, grads[p + "attn.c_attn.weight"], grads[p + "attn.c_attn.bias"] = F.linear_backward(dqkv, c_qkv)
        dh, grads[p + "ln_1.weight"], grads[p + "ln_1.bias"] = F.layer_norm_backward(dh, c_ln1)
        dx = dx + dh
    dwte, grads["wpe.weight"] = F.embedding_backward(dx, caches[0])
    grads["wte.weight"] = dwte + dwte_head
    return {name: grads[name] for name in params}  # the same order as params


# ------------------------------------------------------------------------------------------
class GPT:
    """A GPT-2-style language model: a config, a params dict and (optionally) a tokenizer.

    Parameters
    ----------
    config : GPTConfig
        The model's shape.
    seed : int
        Seed of the GPT-2-style random initialisation (ignored when `params` is given).
    params : dict, optional
        Existing parameters (names and shapes as `param_shapes(config)`); checked, not copied.
    tokenizer : object, optional
        Anything with ``encode(str) -> list[int]`` and ``decode(ids) -> str``.
    """

    def __init__(self, config: GPTConfig, seed: int = 0, params: dict[str, Any] | None = None,
                 tokenizer: Any = None) -> None:  # fmt: skip
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be an int >= 0 (or None), got {seed!r}")
        check_tokenizer(tokenizer, config)
        self.config = config
        self.params = init_params(config, seed) if params is None else params
        if params is not None:
            check_params(self.params, config)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        c = self.config
        return (f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"vocab_size={c.vocab_size}, block_size={c.block_size}, params={c.n_params:,})")  # fmt: skip

    @property
    def n_params(self) -> int:
        """Number of stored weight values (a compressed weight counts what it stores)."""
        return sum(int(getattr(w, "n_params", getattr(w, "size", 0))) for w in self.params.values())

    @property
    def nbytes(self) -> int:
        """Bytes the parameters occupy as stored (honest for compressed weight kinds)."""
        return sum(int(w.nbytes) for w in self.params.values())

    def forward(self, idx: Any, backend: Any = "numpy") -> np.ndarray:
        """Logits (B, T, V) float32 for token ids `idx` (B, T), computed by `backend`."""
        from .. import backends

        be = backends.get(backend)
        idx = check_idx(idx, self.config)
        logits = forward(be.prepare(self.params), self.config, idx, None, be)
        return np.asarray(be.to_numpy(logits))

    __call__ = forward

    def loss_and_grads(self, idx: Any, targets: Any) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy over all positions and its gradient for every parameter."""
        idx = check_idx(idx, self.config)
        targets = check_idx(targets, self.config, name="targets")
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {targets.shape} must equal idx shape {idx.shape}")
        for name, w in self.params.items():
            if not isinstance(w, np.ndarray):
                raise TypeError(f"loss_and_grads needs dense parameters; {name} is {type(w).__name__}")
        _, loss, caches = forward_train(self.params, self.config, idx, targets)
        return loss, backward(self.params, self.config, caches)


def check_params(params: dict[str, Any], config: GPTConfig) -> None:
    """Raise ValueError unless `params` has exactly the names and shapes that `config` implies."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    expected = param_shapes(config)
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing or extra:
        raise ValueError(f"params do not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, shape in expected.items():
        w = params[name]
        if not hasattr(w, "shape"):
            raise TypeError(f"parameter {name} is a {type(w).__name__}; allowed: a numpy array or a weight kind")
        got = tuple(w.shape)
        if got != shape:
            raise ValueError(f"parameter {name} has shape {got}, config implies {shape}")
        # A single NaN/inf weight would turn every logit into NaN: refuse it here, by name.
        if isinstance(w, np.ndarray) and w.dtype.kind == "f" and not np.isfinite(w).all():
            bad = w[~np.isfinite(w)].ravel()[0]
            raise ValueError(f"parameter {name} holds a non-finite value {bad}; allowed: finite values")


def check_tokenizer(tokenizer: Any, config: GPTConfig) -> None:
    """Raise unless `tokenizer` is None or has encode/decode and no more ids than the model has rows."""
    if tokenizer is None:
        return
    if not (callable(getattr(tokenizer, "encode", None)) and callable(getattr(tokenizer, "decode", None))):
        raise TypeError(f"tokenizer must have encode() and decode() (or be None), got {type(tokenizer).__name__}")
    n = getattr(tokenizer, "vocab_size", None)
    if isinstance(n, int) and n > config.vocab_size:
        raise ValueError(
            f"tokenizer has vocab_size={n} ids, more than the model's vocab_size={config.vocab_size}; "
            f"allowed: a tokenizer with at most {config.vocab_size} ids"
        )
