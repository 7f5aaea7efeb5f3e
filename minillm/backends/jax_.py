"""The JAX backend: the whole forward step compiled by XLA, on CPU, GPU or TPU unchanged.

The kernels are `ArrayBackend`'s (see `cupy_.py`) with ``xp = jax.numpy``. What JAX adds is
compilation of the *whole* step — embedding, every block, the head — into one XLA program, so a
decode step is one call instead of a hundred small ones. XLA compiles for static shapes, which
shapes the design:

- the KV cache is a pair of fixed-size arrays passed *into* the step and returned updated
  (a functional cache). ``donate_argnums`` lets XLA write the new keys/values into the input
  buffers in place instead of copying the whole cache every step;
- the position $t_0$ is a traced integer, not a Python constant: new keys go in with
  ``lax.dynamic_update_slice`` at $t_0$, and attention masks the keys that are not yet filled,
  $s > t_0 + t$. One compiled step serves every position;
- attention reads the first $S' = \\min(S, \\max(32, 2^{\\lceil \\log_2(t_0 + T) \\rceil}))$ cache
  positions (a static length), so early steps do not pay for the whole context window and there
  are at most $\\log_2$ (context) + 1 compiled variants per (batch, T).

Matrix products run at ``precision=HIGHEST`` in float32 (on GPUs and TPUs the default would
drop to TF32/bfloat16 inputs), so logits match NumPy's to about $10^{-6}$.
``JaxBackend("bfloat16")`` (or ``get("jax").with_dtype("bfloat16")``, or the name
``"jax:bfloat16"``) stores weights, activations and the cache in bfloat16, with float32
accumulation, layer-norm statistics, softmax and logits. 64-bit mode (``jax_enable_x64``)
is not needed and not turned on; token ids are int32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .cupy_ import ArrayBackend
from .numpy_ import DenseRows, GroupArrays, Int8Arrays, LowRankArrays, NMArrays, Q4Arrays, Q8Arrays, TiedArrays

# The kernel forms are JAX pytrees, so a params dict holding quantized weights can be passed to
# a jitted function: arrays are traced leaves, N:M's n and m are static.
for _cls, _data, _meta in (
    (Int8Arrays, ["q", "scale"], []),
    (GroupArrays, ["q", "scale", "zero"], []),
    (Q8Arrays, ["qs", "d"], []),
    (Q4Arrays, ["packed", "d"], []),
    (LowRankArrays, ["a", "b"], []),
    (NMArrays, ["values", "indices"], ["n", "m"]),
    (TiedArrays, ["head"], []),
    (DenseRows, ["wt"], []),
):
    jax.tree_util.register_dataclass(_cls, data_fields=_data, meta_fields=_meta)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class JaxBackend(ArrayBackend):
    """XLA-compiled prefill and decode steps with a donated, functional KV cache.

    Parameters
    ----------
    dtype : {"float32", "bfloat16"}
        Storage and compute type of weights, activations and the KV cache.
    """

    min_bucket = 32  # smallest attention length compiled (see the module docstring)

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        name = "jax" if dtype == "float32" else f"jax:{dtype}"
        super().__init__(jnp, name=name, dtype=DTYPES[dtype])
        self.dtype_name = dtype
        self._precision = lax.Precision.HIGHEST if dtype == "float32" else lax.Precision.DEFAULT
        self._step = jax.jit(self._step_impl, static_argnames=("config", "kv_len", "last_only"),
                             donate_argnames=("k", "v"))  # fmt: skip

    def with_dtype(self, dtype: str) -> JaxBackend:
        """The same backend computing in `dtype` ("float32" or "bfloat16")."""
        return type(self)(dtype)

    @property
    def devices(self) -> list:
        return jax.devices()

    # --- arrays ------------------------------------------------------------------------------
    def asarray(self, a: Any) -> Any:
        return jnp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(jax.device_get(a))

    def mm(self, a: Any, b: Any) -> Any:
        y = jnp.matmul(a, b, precision=self._precision, preferred_element_type=jnp.float32)
        return y.astype(self.dtype)

    def mm_t(self, a: Any, bt: Any) -> Any:
        """$a B$ with bt = $B^\\top$: one `dot_general` contracting both last axes, so XLA reads bt
        in place (``a @ bt.T`` made XLA copy the transposed weight at every step here, and
        attention's keys at every layer). A 2-D bt is shared by all rows of `a`; a batched one
        (B, H, S, D) pairs with a's leading axes."""
        batch = tuple(range(bt.ndim - 2))
        dims = (((a.ndim - 1,), (bt.ndim - 1,)), (batch, batch))
        y = lax.dot_general(a, bt, dims, precision=self._precision, preferred_element_type=jnp.float32)
        return y.astype(self.dtype)

    def kv_write(self, cache: tuple, layer: int, pos0: Any, k: Any, v: Any) -> tuple:
        """Functional write: new (k, v) arrays with positions pos0.. of `layer` replaced."""
        at = (layer, 0, 0, pos0, 0)
        return (lax.dynamic_update_slice(cache[0], k[None].astype(cache[0].dtype), at),
                lax.dynamic_update_slice(cache[1], v[None].astype(cache[1].dtype), at))  # fmt: skip

    # --- the compiled step -------------------------------------------------------------------
    def forward(self, params: dict[str, Any], config: Any, idx: Any, k: Any, v: Any, pos0: int,
                last_only: bool = False) -> tuple[Any, Any, Any]:  # fmt: skip
        """Logits for `idx` (B, T) at positions pos0.., and the updated cache (k, v).

        Called by `minillm.nn.gpt.forward` in place of its own loop; the k, v passed in are
        donated (invalid afterwards)."""
        T = idx.shape[1]
        S = k.shape[3]
        kv_len = min(S, max(self.min_bucket, 1 << (pos0 + T - 1).bit_length()))
        idx = jnp.asarray(np.asarray(idx, dtype=np.int32))
        return self._step(dict(self.prepare(params)), idx, k, v, np.int32(pos0), config=config,
                          kv_len=kv_len, last_only=bool(last_only))  # fmt: skip

    def _step_impl(self, params: dict[str, Any], idx: Any, k: Any, v: Any, pos0: Any, *,
                   config: Any, kv_len: int, last_only: bool) -> tuple[Any, Any, Any]:  # fmt: skip
        """`minillm.nn.gpt.forward`'s loop, traced once per (shapes, kv_len, last_only)."""
        B, T = idx.shape
        C, H, eps = config.n_embd, config.n_head, config.layer_norm_epsilon
        D = C // H
        wpe = lax.dynamic_slice_in_dim(params["wpe.weight"], pos0, T, axis=0)  # (T, C)
        x = (self.embed(params["wte.weight"], idx) + wpe).reshape(B * T, C)  # (BT, C)
        for i in range(config.n_layer):
            p = f"h.{i}."
            h = self.layer_norm(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"], eps)
            qkv = self.linear(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"])
            qkv = qkv.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
            k, v = self.kv_write((k, v), i, pos0, qkv[1], qkv[2])
            y = self.attention_at(qkv[0], k[i, :, :, :kv_len], v[i, :, :, :kv_len], pos0)  # (B,H,T,D)
            y = y.transpose(0, 2, 1, 3).reshape(B * T, C)
            x = x + self.linear(y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"])
            h = self.layer_norm(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"], eps)
            h = self.gelu(self.linear(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"]))
            x = x + self.linear(h, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"])
        if last_only:
            x = x.reshape(B, T, C)[:, -1]
            T = 1
        x = self.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"], eps)
        logits = self.lm_head(x, params["wte.weight"])
        return logits.reshape(B, T, -1), k, v

    def compile_cache_size(self) -> int:
        """How many step variants have been compiled (a check that decoding does not recompile)."""
        return self._step._cache_size()
