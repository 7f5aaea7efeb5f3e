"""Parallelism: one model over several devices — tensor parallel and data parallel.

**Tensor parallelism** (Megatron-LM, Shoeybi et al. 2019) splits every block's weights across
$n$ devices so each holds $1/n$ of them. An MLP $\\mathrm{gelu}(h W_1) W_2$ splits $W_1$ by
*columns* and $W_2$ by *rows*: device $s$ computes $\\mathrm{gelu}(h W_1^{(s)}) W_2^{(s)}$ with no
communication (GELU acts column by column), and the block's output is the sum of the $n$
partial products — one **all-reduce**:

$$\\mathrm{gelu}(h W_1) W_2 = \\sum_{s=1}^{n} \\mathrm{gelu}(h W_1^{(s)})\\, W_2^{(s)}.$$

Attention splits the same way by heads: device $s$ takes the Q, K, V columns of its $H/n$ heads
from `c_attn` (columns) and the matching rows of `c_proj`, computes its heads' attention
locally, and the projections are summed by a second all-reduce. So a block costs two
all-reduces of a (B·T, C) activation, one per half; biases of the row-split products are added
once, after the sum. Embeddings, layer norms and the LM head stay replicated here (Megatron also
splits the vocabulary; not done here).

**Data parallelism** gives each device its own slice of the batch and a full copy of the weights;
no communication at all during inference.

The same forward runs two ways, written once (`tensor_parallel_forward_with`):

- a **NumPy simulation**: the shards are a list of dicts, the all-reduce is a Python `sum` over
  the per-shard partial results (`tensor_parallel_forward_numpy`, `data_parallel_forward_numpy`)
  — readable and testable without JAX or several devices;
- **JAX**: `jax.shard_map` over a device mesh with axes ``("data", "model")``; each device sees
  its shard and its slice of the batch, and the all-reduce is ``lax.psum(..., "model")``
  (`tensor_parallel_forward`). `data_parallel_backend(mesh)` is a JAX backend whose batch and KV
  cache are split over the "data" axis and whose weights are replicated; `minillm.generate`
  runs on it unchanged and XLA partitions the compiled step.

On one machine, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX is first
imported) gives 8 CPU devices to try this on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import GPTConfig
from ..nn.gpt import check_idx
from .numpy_ import NumpyBackend

SPLIT = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "mlp.c_fc.weight",
         "mlp.c_fc.bias", "mlp.c_proj.weight")  # fmt: skip


def _check_shards(config: GPTConfig, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n_shards must be a positive int, got {n!r}")
    if config.n_head % n:
        raise ValueError(f"n_shards={n} must divide n_head={config.n_head} (attention splits by heads)")
    return int(n)


def shard_params(params: dict[str, Any], config: GPTConfig, n_shards: int) -> list[dict[str, np.ndarray]]:
    """Split every block's weights Megatron-style into `n_shards` dicts.

    Shard $s$ holds, for each layer, the Q, K and V columns of heads $sH/n \\ldots (s+1)H/n - 1$
    of `c_attn` (weight and bias; (C, 3C/n)), the matching rows of `attn.c_proj` (C/n, C),
    columns $s \\cdot 4C/n \\ldots$ of `mlp.c_fc` (weight and bias), and the matching rows of
    `mlp.c_proj`. Every other parameter is replicated and not part of a shard.
    """
    n = _check_shards(config, n_shards)
    C, L = config.n_embd, config.n_layer
    hs = C // n  # columns of Q (or K, or V) per shard: H/n heads of D
    fs = 4 * C // n
    shards: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    for i in range(L):
        p = f"h.{i}."
        for name in SPLIT:
            if not isinstance(params[p + name], np.ndarray):
                raise TypeError(f"tensor parallelism here needs dense weights; {p + name} is a "
                                f"{type(params[p + name]).__name__} (use kinds.as_dense first)")  # fmt: skip
        w_qkv, b_qkv = params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"]
        for s, shard in enumerate(shards):
            cols = np.concatenate([np.arange(j * C + s * hs, j * C + (s + 1) * hs) for j in range(3)])
            shard[p + "attn.c_attn.weight"] = w_qkv[:, cols]  # (C, 3C/n): [Q_s | K_s | V_s]
            shard[p + "attn.c_attn.bias"] = b_qkv[cols]
            shard[p + "attn.c_proj.weight"] = params[p + "attn.c_proj.weight"][s * hs : (s + 1) * hs]  # (C/n, C)
            shard[p + "mlp.c_fc.weight"] = params[p + "mlp.c_fc.weight"][:, s * fs : (s + 1) * fs]  # (C, 4C/n)
            shard[p + "mlp.c_fc.bias"] = params[p + "mlp.c_fc.bias"][s * fs : (s + 1) * fs]
            shard[p + "mlp.c_proj.weight"] = params[p + "mlp.c_proj.weight"][s * fs : (s + 1) * fs]  # (4C/n, C)
    return shards


def replicated_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters every device holds whole: all but the split ones."""
    return {k: v for k, v in params.items() if not k.endswith(SPLIT)}


# ------------------------------------------------------------------------------------------
# One forward, written once; `over_shards(f)` runs f on every shard and all-reduces the results.
def attention_partial(be: Any, h: Any, shard: dict[str, Any], i: int, B: int, T: int, D: int) -> Any:
    """This shard's heads: $\\mathrm{Attn}_s(h) W_{o}^{(s)}$, a (B·T, C) partial sum (no bias)."""
    p = f"h.{i}."
    qkv = be.linear(h, shard[p + "attn.c_attn.weight"], shard[p + "attn.c_attn.bias"])  # (BT, 3C/n)
    Hs = qkv.shape[-1] // (3 * D)
    qkv = qkv.reshape(B, T, 3, Hs, D).transpose(2, 0, 3, 1, 4)  # (3, B, Hs, T, D)
    y = be.attention(qkv[0], qkv[1], qkv[2])  # (B, Hs, T, D)
    y = y.transpose(0, 2, 1, 3).reshape(B * T, Hs * D)  # (BT, C/n)
    return be.linear(y, shard[p + "attn.c_proj.weight"], None)  # (BT, C)


def mlp_partial(be: Any, h: Any, shard: dict[str, Any], i: int) -> Any:
    """This shard's MLP columns: $\\mathrm{gelu}(h W_1^{(s)} + b_1^{(s)}) W_2^{(s)}$, (B·T, C)."""
    p = f"h.{i}."
    f = be.gelu(be.linear(h, shard[p + "mlp.c_fc.weight"], shard[p + "mlp.c_fc.bias"]))  # (BT, 4C/n)
    return be.linear(f, shard[p + "mlp.c_proj.weight"], None)  # (BT, C)


def tensor_parallel_forward_with(be: Any, rep: dict[str, Any], config: GPTConfig, idx: Any,
                                 over_shards: Callable[[Callable[[Any], Any]], Any]) -> Any:  # fmt: skip
    """Logits (B, T, V) of `idx` computed block by block with split weights.

    `rep` holds the replicated parameters; ``over_shards(f)`` must return $\\sum_s f(\\mathrm{shard}_s)$
    (a loop and a sum in the simulation, ``psum(f(local shard))`` on devices)."""
    B, T = idx.shape
    C, eps = config.n_embd, config.layer_norm_epsilon
    D = config.head_size
    x = (be.embed(rep["wte.weight"], idx) + rep["wpe.weight"][:T]).reshape(B * T, C)  # (BT, C)
    for i in range(config.n_layer):
        p = f"h.{i}."
        h = be.layer_norm(x, rep[p + "ln_1.weight"], rep[p + "ln_1.bias"], eps)
        x = x + over_shards(lambda s, h=h, i=i: attention_partial(be, h, s, i, B, T, D)) + rep[p + "attn.c_proj.bias"]
        h = be.layer_norm(x, rep[p + "ln_2.weight"], rep[p + "ln_2.bias"], eps)
        x = x + over_shards(lambda s, h=h, i=i: mlp_partial(be, h, s, i)) + rep[p + "mlp.c_proj.bias"]
    x = be.layer_norm(x, rep["ln_f.weight"], rep["ln_f.bias"], eps)
    return be.lm_head(x, rep["wte.weight"]).reshape(B, T, -1)  # (B, T, V)


def tensor_parallel_forward_numpy(params: dict[str, Any], config: GPTConfig, idx: Any, n_shards: int,
                                  all_reduce: Callable[[list], Any] = sum) -> np.ndarray:  # fmt: skip
    """The NumPy simulation: `n_shards` shards in a list, the all-reduce a sum over their partials.

    Pass a counting `all_reduce` to see that a forward does exactly two per layer."""
    idx = check_idx(idx, config)
    shards = shard_params(params, config, n_shards)
    be = NumpyBackend()

    def over_shards(f: Callable[[Any], Any]) -> Any:
        return all_reduce([f(s) for s in shards])  # every "device" computes, then one all-reduce

    return tensor_parallel_forward_with(be, replicated_params(params), config, idx, over_shards)


def data_parallel_forward_numpy(params: dict[str, Any], config: GPTConfig, idx: Any, n_shards: int) -> np.ndarray:
    """The NumPy simulation of data parallelism: the batch split in `n_shards` pieces, each run
    by its own (full) copy of the model, the logits concatenated."""
    from ..nn.gpt import forward

    idx = check_idx(idx, config)
    if idx.shape[0] % n_shards:
        raise ValueError(f"batch {idx.shape[0]} must be divisible by n_shards={n_shards}")
    be = NumpyBackend()
    parts = [forward(params, config, piece, None, be) for piece in np.split(idx, n_shards)]
    return np.concatenate(parts, axis=0)


# ------------------------------------------------------------------------------------------
# JAX: a device mesh, shard_map for tensor parallelism, shardings for data parallelism.
def make_mesh(data: int = 1, model: int = 1, devices: Any = None) -> Any:
    """A (data, model) device mesh over the first data·model JAX devices."""
    import jax

    devs = list(jax.devices() if devices is None else devices)
    if data * model > len(devs):
        raise ValueError(f"a ({data}, {model}) mesh needs {data * model} devices, JAX has {len(devs)}")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), ("data", "model"), axis_types=auto, devices=devs[: data * model])


def tensor_parallel_forward(params: dict[str, Any], config: GPTConfig, idx: Any, mesh: Any,
                            dtype: str = "float32") -> np.ndarray:  # fmt: skip
    """Logits (B, T, V) with weights split over the mesh's "model" axis and the batch over "data".

    Each device runs `tensor_parallel_forward_with` on its shard inside `jax.shard_map`; the
    two all-reduces per block are ``lax.psum(partial, "model")``."""
    fn = _tp_function(config, mesh, dtype)
    idx = check_idx(idx, config)
    n_data = mesh.shape["data"]
    if idx.shape[0] % n_data:
        raise ValueError(f"batch {idx.shape[0]} must be divisible by the mesh's data axis ({n_data})")
    stacked, rep = _place_tp_params(params, config, mesh, dtype)
    return np.asarray(fn(stacked, rep, _put(idx.astype(np.int32), mesh, "data")))


def tensor_parallel_generate(params: dict[str, Any], config: GPTConfig, idx: Any, max_new_tokens: int,
                             mesh: Any) -> np.ndarray:  # fmt: skip
    """Greedy tokens from the tensor-parallel forward (no KV cache: the whole sequence is
    recomputed each step, padded to one length so the step compiles once)."""
    idx = check_idx(idx, config)
    B, T0 = idx.shape
    L = T0 + max_new_tokens
    if L > config.block_size:
        raise ValueError(f"prompt + max_new_tokens = {L} exceeds block_size={config.block_size}")
    fn = _tp_function(config, mesh, "float32")
    stacked, rep = _place_tp_params(params, config, mesh, "float32")
    seq = np.zeros((B, L), np.int32)
    seq[:, :T0] = idx
    for t in range(T0, L):  # causal: the padding after position t-1 cannot change its logits
        logits = np.asarray(fn(stacked, rep, _put(seq, mesh, "data")))
        seq[:, t] = logits[:, t - 1].argmax(-1)
    return seq.astype(np.int64)


def _put(a: Any, mesh: Any, axis: str | None) -> Any:
    import jax

    spec = jax.P(axis) if axis else jax.P()
    return jax.device_put(a, jax.sharding.NamedSharding(mesh, spec))


_TP_CACHE: dict[tuple, Any] = {}  # the last placement of a model's weights on a mesh
_TP_FN: dict[tuple, Any] = {}  # compiled tensor-parallel forwards, per (config, mesh, dtype)


def _place_tp_params(params: dict[str, Any], config: GPTConfig, mesh: Any, dtype: str) -> tuple[Any, Any]:
    """Shards stacked on a leading axis and split over "model"; the rest replicated."""
    import jax.numpy as jnp

    n = mesh.shape["model"]
    key = ("params", id(params), n, dtype, tuple(mesh.devices.flat))
    hit = _TP_CACHE.get(key)
    if hit is not None and hit[0] is params:
        return hit[1]
    dt = jnp.dtype(dtype)
    shards = shard_params(params, config, n)
    stacked = {k: _put(np.stack([s[k] for s in shards]).astype(dt), mesh, "model") for k in shards[0]}
    rep = {k: _put(np.asarray(v).astype(dt), mesh, None) for k, v in replicated_params(params).items()}
    _TP_CACHE.clear()  # keep one placement: a model's weights, not every model ever seen
    _TP_CACHE[key] = (params, (stacked, rep))
    return stacked, rep


def _tp_function(config: GPTConfig, mesh: Any, dtype: str) -> Any:
    """The jitted shard_map'ed forward for this config and mesh (built once)."""
    import jax
    from jax import lax

    from .jax_ import JaxBackend

    key = ("fn", config, id(mesh), dtype)
    if key in _TP_FN:
        return _TP_FN[key]
    be = JaxBackend(dtype)

    def local(stacked: dict, rep: dict, idx: Any) -> Any:
        shard = {k: v[0] for k, v in stacked.items()}  # this device's (1, ...) slice -> (...)

        def over_shards(f: Callable[[Any], Any]) -> Any:
            return lax.psum(f(shard), "model")  # the all-reduce

        return tensor_parallel_forward_with(be, rep, config, idx, over_shards)

    P = jax.P
    fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("model"), P(), P("data")), out_specs=P("data")))
    _TP_FN[key] = fn
    return fn


def data_parallel_backend(mesh: Any, dtype: str = "float32") -> Any:
    """A JAX backend that splits the batch (and the KV cache) over the mesh's "data" axis.

    Weights are replicated on every device; `minillm.generate(model, idx, n, backend=...)` then
    runs unchanged, and XLA partitions the compiled step along the batch. The batch must be
    divisible by the number of devices on the "data" axis."""
    import jax

    from .jax_ import JaxBackend

    NamedSharding, P = jax.sharding.NamedSharding, jax.P

    class DataParallelJaxBackend(JaxBackend):
        def __init__(self) -> None:
            super().__init__(dtype)
            self.mesh = mesh
            self.name = f"jax-data-parallel[{mesh.shape['data']}]"
            self._replicated = NamedSharding(mesh, P())
            self._batch = NamedSharding(mesh, P("data"))
            self._cache_batch = NamedSharding(mesh, P(None, "data"))  # (L, B, H, S, D)

        def asarray(self, a: Any) -> Any:  # weights: one full copy per device
            return jax.device_put(a, self._replicated)

        def kv_alloc(self, n_layer: int, B: int, H: int, T: int, D: int, dtype: Any = None) -> tuple:
            self._check_batch(B)
            shape = (n_layer, B, H, T, D)
            zeros = np.zeros(shape, self.dtype)
            return jax.device_put(zeros, self._cache_batch), jax.device_put(zeros, self._cache_batch)

        def forward(self, params: dict[str, Any], config: Any, idx: Any, k: Any, v: Any, pos0: int,
                    last_only: bool = False) -> tuple[Any, Any, Any]:  # fmt: skip
            self._check_batch(idx.shape[0])
            T = idx.shape[1]
            kv_len = min(k.shape[3], max(self.min_bucket, 1 << (pos0 + T - 1).bit_length()))
            idx = jax.device_put(np.asarray(idx, np.int32), self._batch)
            return self._step(dict(self.prepare(params)), idx, k, v, np.int32(pos0), config=config,
                              kv_len=kv_len, last_only=bool(last_only))  # fmt: skip

        def _check_batch(self, B: int) -> None:
            n = mesh.shape["data"]
            if B % n:
                raise ValueError(f"batch {B} must be divisible by the mesh's data axis ({n})")

    return DataParallelJaxBackend()
