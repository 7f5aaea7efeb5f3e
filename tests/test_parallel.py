"""Tensor and data parallelism: the split model computes what the whole model computes.

The NumPy simulation runs in this process. The JAX checks need 8 devices, which JAX only
creates if ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` is set before it is first
imported — so they run in a subprocess, leaving this process's JAX (one CPU device) untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minillm
from minillm.backends import parallel as par
from minillm.compress.quantize import quantize_params

CFG = minillm.GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=8, n_embd=64)


@pytest.fixture(scope="module")
def model():
    return minillm.GPT(CFG, seed=0)


@pytest.fixture(scope="module")
def idx():
    return np.random.default_rng(0).integers(0, CFG.vocab_size, (8, 12))


def test_shards_partition_every_split_weight_exactly_once(model):
    shards = par.shard_params(model.params, CFG, 4)
    C = CFG.n_embd
    for i in range(CFG.n_layer):
        p = f"h.{i}."
        # c_attn: each shard holds [Q_s | K_s | V_s]; Q, K and V reassemble column by column
        qkv = model.params[p + "attn.c_attn.weight"]
        for j in range(3):  # Q, K, V
            parts = [s[p + "attn.c_attn.weight"][:, j * C // 4 : (j + 1) * C // 4] for s in shards]
            np.testing.assert_array_equal(np.concatenate(parts, 1), qkv[:, j * C : (j + 1) * C])
        np.testing.assert_array_equal(np.concatenate([s[p + "attn.c_proj.weight"] for s in shards], 0),
                                      model.params[p + "attn.c_proj.weight"])  # fmt: skip
        np.testing.assert_array_equal(np.concatenate([s[p + "mlp.c_fc.weight"] for s in shards], 1),
                                      model.params[p + "mlp.c_fc.weight"])  # fmt: skip
        np.testing.assert_array_equal(np.concatenate([s[p + "mlp.c_proj.weight"] for s in shards], 0),
                                      model.params[p + "mlp.c_proj.weight"])  # fmt: skip
    split = sum(model.params[k].nbytes for k in model.params if k.endswith(par.SPLIT))
    assert sum(a.nbytes for s in shards for a in s.values()) == split  # each device holds 1/n
    assert all(a.nbytes * 4 == model.params[k].nbytes for k, a in shards[0].items())
    assert set(par.replicated_params(model.params)).isdisjoint(shards[0])


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_numpy_tensor_parallel_equals_the_whole_model_with_two_all_reduces_per_block(model, idx, n):
    calls = []

    def all_reduce(parts):
        assert len(parts) == n  # one partial result per device
        calls.append(parts[0].shape)
        return sum(parts)

    got = par.tensor_parallel_forward_numpy(model.params, CFG, idx, n, all_reduce)
    np.testing.assert_allclose(got, model.forward(idx), rtol=0, atol=1e-5)
    assert calls == [(idx.size, CFG.n_embd)] * (2 * CFG.n_layer)  # a (B*T, C) activation each


def test_numpy_data_parallel_equals_the_whole_model(model, idx):
    np.testing.assert_allclose(par.data_parallel_forward_numpy(model.params, CFG, idx, 4), model.forward(idx),
                               rtol=0, atol=1e-6)  # fmt: skip


def test_bad_splits_are_rejected(model, idx):
    with pytest.raises(ValueError, match="n_shards=3 must divide n_head=8"):
        par.shard_params(model.params, CFG, 3)
    with pytest.raises(ValueError, match="n_shards must be a positive int"):
        par.shard_params(model.params, CFG, 0)
    with pytest.raises(TypeError, match="needs dense weights"):
        par.shard_params(quantize_params(model.params, "int8"), CFG, 2)
    with pytest.raises(ValueError, match="batch 8 must be divisible by n_shards=3"):
        par.data_parallel_forward_numpy(model.params, CFG, idx, 3)


SCRIPT = r"""
import json, os
import numpy as np
import jax
import minillm
from minillm.backends import parallel as par
from minillm.nn.gpt import KVCache, forward

cfg = minillm.GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=8, n_embd=64)
model = minillm.GPT(cfg, seed=0)
idx = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 12))
ref = model.forward(idx)
out = {"devices": jax.device_count(), "platform": jax.devices()[0].platform, "tp_err": {}}
for data, mdl in [(1, 8), (2, 4), (8, 1)]:
    got = par.tensor_parallel_forward(model.params, cfg, idx, par.make_mesh(data, mdl))
    out["tp_err"][f"{data}x{mdl}"] = float(np.abs(got - ref).max())
greedy = minillm.generate(model, idx[:, :4], 16, temperature=0)
tp_tokens = par.tensor_parallel_generate(model.params, cfg, idx[:, :4], 16, par.make_mesh(1, 8))
out["tp_generate_equal"] = bool(np.array_equal(tp_tokens, greedy))
be = par.data_parallel_backend(par.make_mesh(8, 1))
dp_tokens = minillm.generate(model, idx[:, :4], 16, temperature=0, backend=be)
out["dp_generate_equal"] = bool(np.array_equal(dp_tokens, greedy))
cache = KVCache.allocate(cfg, 8, be)
logits = forward(be.prepare(model.params), cfg, idx, cache, be)
out["dp_err"] = float(np.abs(np.asarray(logits) - ref).max())
out["dp_logits_devices"] = len(logits.sharding.device_set)
out["dp_cache_shard_shape"] = list(cache.k.addressable_shards[0].data.shape)
try:
    be.kv_alloc(2, 6, 8, 4, 8)
except ValueError as e:
    out["bad_batch"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def eight_devices():
    pytest.importorskip("jax", reason="jax is not installed (pip install 'minillm[jax]')")
    root = Path(minillm.__file__).resolve().parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_jax_sees_eight_emulated_devices(eight_devices):
    assert eight_devices["devices"] == 8 and eight_devices["platform"] == "cpu"


@pytest.mark.parametrize("mesh", ["1x8", "2x4", "8x1"])
def test_jax_tensor_parallel_forward_equals_one_device(eight_devices, mesh):
    """(data, model) meshes: 8-way tensor parallel, 2-way data x 4-way tensor, 8-way data."""
    assert eight_devices["tp_err"][mesh] <= 1e-4


def test_jax_tensor_parallel_greedy_tokens_equal_one_device(eight_devices):
    assert eight_devices["tp_generate_equal"]


def test_jax_data_parallel_generation_equals_one_device(eight_devices):
    assert eight_devices["dp_generate_equal"]
    assert eight_devices["dp_err"] <= 1e-4
    assert eight_devices["dp_logits_devices"] == 8  # the batch really was split over 8 devices
    assert eight_devices["dp_cache_shard_shape"] == [2, 1, 8, 32, 8]  # each holds 1 of 8 sequences
    assert "batch 6 must be divisible by the mesh's data axis (8)" in eight_devices["bad_batch"]
