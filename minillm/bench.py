"""Benchmarks: measured prefill and decode speed, next to the memory-bandwidth limit.

Batch-1 decoding reads every weight once per token and does only two FLOPs per weight read,
so it is memory-bound:

$$\\text{tokens/s} \\le \\frac{\\text{bandwidth}}{\\text{bytes read per token}}, \\qquad
  \\text{bytes per token} \\approx \\text{weight bytes} + \\text{KV-cache bytes}.$$

`bench_decode` times prefill (the prompt at once) and decode (one token per step, through the
KV cache) separately, takes the best of a few repeats (the machine is shared and noisy; the
best run is the least disturbed one), and reports the achieved GB/s and, when a bandwidth is
known, the fraction of the limit reached. Results are plain dicts, written as JSON by the CLI.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import backends
from .config import GPTConfig
from .nn.gpt import GPT, KVCache, forward

# Idle this long before timing a backend: the previous measurement's thread pools (OpenBLAS,
# OpenMP, XLA) spin for a while after their last call and would compete with the next one's
# threads (teacher, int8, Numba, right after 30 BLAS 1024^2 matmuls: 3,451 tok/s median of 8;
# after 0.3 s idle: 4,814).
SETTLE_S = 0.3
# The suite's rounds by default. The interval it reports for a median is the k-th smallest to the
# k-th largest round (`median_interval`): with 3 rounds, the whole range at 75 % coverage; with
# 9, the 2nd to the 8th at 96 %. The committed table uses 21 (6th to 16th, 97 %).
SUITE_ROUNDS = 9


def decode_bytes_per_token(model: GPT, context: int, batch: int = 1) -> int:
    """Bytes a decode step at `context` positions reads: every block weight, the LM head (all of
    the tied embedding, in whatever format it is stored), one embedding row for the token (in
    that format: its bytes divided by V) and one float32 row for the position, and the float32
    KV cache. With `batch` sequences the weights are read once per step, the rows and the
    cache once per sequence."""
    cfg = model.config
    p = model.params
    total = sum(int(w.nbytes) for name, w in p.items() if name not in ("wte.weight", "wpe.weight"))
    head = int(p["wte.weight"].nbytes)
    total += head  # the tied LM head reads all of wte
    total += batch * (head // cfg.vocab_size + 4 * cfg.n_embd)  # token and position embedding rows
    return total + kv_cache_bytes(cfg, context, batch)


def kv_cache_bytes(config: GPTConfig, context: int, batch: int = 1) -> int:
    """Bytes of the float32 keys and values of `context` positions, every layer, `batch` sequences."""
    return batch * 2 * config.n_layer * context * config.n_embd * 4


def _against_limit(bandwidth_gb_s: float, bytes_per_token: int, achieved_gb_s: float, batch: int = 1) -> dict:
    """A measured decode against the bandwidth limit: the limit, the tokens/s it allows (B tokens
    per step) and the fraction of it reached."""
    return {"bandwidth_gb_s": round(bandwidth_gb_s, 2),
            "roofline_tok_s": round(batch * bandwidth_gb_s * 1e9 / bytes_per_token, 2),
            "roofline_frac": round(achieved_gb_s / bandwidth_gb_s, 3)}  # fmt: skip


def median_order(n: int, confidence: float = 0.95) -> tuple[int, float]:
    """The k of `median_interval` for n values, and that interval's coverage.

    Sorted, $x_{(1)} \\le \\ldots \\le x_{(n)}$: the interval $[x_{(k)}, x_{(n+1-k)}]$ misses the
    median only if fewer than $k$ of the values fall on one side of it, so for independent draws
    from any continuous distribution it holds the median with probability
    $1 - 2 \\sum_{j<k} \\binom{n}{j} 2^{-n}$. k is the largest (the interval the narrowest) that
    reaches `confidence`, or 1 (the whole range) if none does. For 9 values: k = 2, 96.1 %."""
    from math import comb

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * sum(comb(n, j) for j in range(k)) / 2.0**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return k, coverage(k)


def median_interval(values: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of the distribution that `values`
    were drawn from: $[x_{(k)}, x_{(n+1-k)}]$ with k from `median_order`. Returns (low, high,
    coverage). The suite's ratios get one each: whether a run settles a target or not."""
    x = np.sort(np.asarray(values, dtype=float).reshape(-1))
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite and not empty, got {values!r}")
    k, cover = median_order(x.size, confidence)
    return float(x[k - 1]), float(x[x.size - k]), cover


def _check_counts(**counts: Any) -> None:
    for name, v in counts.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _check_bandwidth(bandwidth_gb_s: Any) -> None:
    if bandwidth_gb_s is not None and (isinstance(bandwidth_gb_s, bool) or not isinstance(bandwidth_gb_s, (int, float))
                                       or not 0 < bandwidth_gb_s < float("inf")):  # fmt: skip
        raise ValueError(f"bandwidth_gb_s must be a finite number > 0 or None, got {bandwidth_gb_s!r}")


def bench_decode(model: GPT, backend: Any = "numpy", prompt_tokens: int = 16, new_tokens: int = 32,
                 repeat: int = 3, batch: int = 1, seed: int = 0,
                 bandwidth_gb_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Time greedy prefill + decode of `new_tokens` after a random prompt; best of `repeat`.

    Returns a dict with `prefill_tok_s`, `decode_tok_s`, `decode_ms_per_token` (per decode step),
    `bytes_per_token` (bytes one decode step reads: `decode_bytes_per_token` with `batch`),
    `achieved_gb_s` and, if `bandwidth_gb_s` is given, `bandwidth_gb_s`, `roofline_tok_s` and
    `roofline_frac`.
    """
    cfg = model.config
    _check_counts(prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeat=repeat, batch=batch)
    _check_bandwidth(bandwidth_gb_s)
    if prompt_tokens + new_tokens > cfg.block_size:
        raise ValueError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the "
                         f"context block_size={cfg.block_size}")  # fmt: skip
    be = backends.get(backend)
    t0 = time.perf_counter()
    params = be.prepare(model.params)
    prepare_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, cfg.vocab_size, size=(batch, prompt_tokens))

    def run() -> tuple[float, float, np.ndarray]:
        cache = KVCache.allocate(cfg, batch, be)
        t = time.perf_counter()
        logits = forward(params, cfg, prompt, cache, be, last_only=True)
        nxt = np.asarray(be.to_numpy(logits))[:, -1].argmax(-1)  # forces the work to finish
        t_prefill = time.perf_counter() - t
        out = [nxt]
        t = time.perf_counter()
        for _ in range(new_tokens - 1):
            logits = forward(params, cfg, nxt[:, None], cache, be, last_only=True)
            nxt = np.asarray(be.to_numpy(logits))[:, -1].argmax(-1)
            out.append(nxt)
        t_decode = time.perf_counter() - t
        return t_prefill, t_decode, np.stack(out, 1)

    t = time.perf_counter()
    run()  # warm-up: JIT compilation, caches, page faults
    warmup_s = time.perf_counter() - t
    best_prefill, best_decode = float("inf"), float("inf")
    for _ in range(repeat):
        tp, td, _ = run()
        best_prefill, best_decode = min(best_prefill, tp), min(best_decode, td)
    steps = max(1, new_tokens - 1)  # the first new token comes from the prefill
    per_token = best_decode / steps
    nbytes = decode_bytes_per_token(model, prompt_tokens + new_tokens // 2, batch)  # per step
    result: dict[str, Any] = {
        "backend": be.name,
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "prefill_tok_s": round(batch * prompt_tokens / best_prefill, 2),
        "decode_tok_s": round(batch / per_token, 2),
        "decode_ms_per_token": round(per_token * 1e3, 3),
        "bytes_per_token": nbytes,
        "achieved_gb_s": round(nbytes / per_token / 1e9, 2),
        "warmup_s": round(warmup_s, 3),
        "prepare_s": round(prepare_s, 3),
        "repeat": repeat,
    }
    if bandwidth_gb_s:
        result |= _against_limit(bandwidth_gb_s, nbytes, result["achieved_gb_s"], batch)
    return result


def machine_info() -> dict[str, Any]:
    """Where a measurement was taken: CPU, cores, Python, NumPy, date."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def kv_speedup_prediction(config: GPTConfig, prompt_tokens: int, new_tokens: int) -> float:
    """FLOP-count prediction of the KV cache's speed-up over recomputing the prefix (see docs).

    Recomputing at length $t$: $2P_{blk}t + 2LCt(t+1) + 2VC$; a cached step: $2P_{blk} + 4LCt + 2VC$,
    with $P_{blk} = 12LC^2$, summed over $t = P+1 \\ldots P+n$.
    """
    t = np.arange(prompt_tokens + 1, prompt_tokens + new_tokens + 1, dtype=np.float64)
    recompute, cached = _step_flops(config, t)
    return float(recompute.sum() / cached.sum())


def _step_flops(config: GPTConfig, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs of recomputing the prefix at length t, and of one cached step at length t."""
    L, C, V = config.n_layer, config.n_embd, config.vocab_size
    p_blk = 12 * L * C * C
    return 2 * p_blk * t + 2 * L * C * t * (t + 1) + 2 * V * C, 2 * p_blk + 4 * L * C * t + 2 * V * C


def kv_speedup_roofline(model: GPT, prompt_tokens: int, new_tokens: int, peak_flops: float,
                        bandwidth: float) -> float:  # fmt: skip
    """Roofline-time prediction of the KV cache's speed-up (see docs/generation.md).

    Each step takes the longer of its compute time and its memory time,
    $\\max(F/\\pi, \\text{bytes}/\\beta)$: a cached step reads every weight and the cache for
    two FLOPs per weight (memory-bound), a recompute step reads the weights once for $2t$ FLOPs
    per weight (compute-bound once $t$ passes the ridge point $\\pi / \\beta$ per byte)."""
    t = np.arange(prompt_tokens + 1, prompt_tokens + new_tokens + 1, dtype=np.float64)
    f_recompute, f_cached = _step_flops(model.config, t)
    weights = decode_bytes_per_token(model, 0)  # every weight once (no cache)
    cache_bytes = decode_bytes_per_token(model, 1) - weights  # per cached position
    recompute = np.maximum(f_recompute / peak_flops, weights / bandwidth).sum()
    cached = np.maximum(f_cached / peak_flops, (weights + cache_bytes * t) / bandwidth).sum()
    return float(recompute / cached)


def kv_cache_speedup(model: GPT, prompt_tokens: int = 16, new_tokens: int = 256, backend: Any = "numpy",
                     seed: int = 0, device: Any = None) -> dict[str, Any]:  # fmt: skip
    """Measured time to generate `new_tokens` greedily with the KV cache and by recomputing the
    whole prefix at every step, next to `kv_speedup_prediction` (FLOP counts) and, when a
    `device` with a peak and a bandwidth is given (``hw.devices.cpu_spec()`` for this CPU),
    `kv_speedup_roofline` (roofline times). Both loops produce the same tokens."""
    cfg = model.config
    if prompt_tokens + new_tokens > cfg.block_size:
        raise ValueError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds block_size="
                         f"{cfg.block_size}")  # fmt: skip
    be = backends.get(backend)
    params = be.prepare(model.params)
    prompt = np.random.default_rng(seed).integers(0, cfg.vocab_size, size=(1, prompt_tokens))

    t = time.perf_counter()
    cache = KVCache.allocate(cfg, 1, be)
    logits = forward(params, cfg, prompt, cache, be, last_only=True)
    cached_ids = []
    for _ in range(new_tokens):
        nxt = np.asarray(be.to_numpy(logits))[:, -1].argmax(-1)
        cached_ids.append(int(nxt[0]))
        logits = forward(params, cfg, nxt[:, None], cache, be, last_only=True)
    t_cached = time.perf_counter() - t

    t = time.perf_counter()
    ids = prompt
    recomputed_ids = []
    for _ in range(new_tokens):
        logits = forward(params, cfg, ids, None, be, last_only=True)  # the whole prefix, every step
        nxt = np.asarray(be.to_numpy(logits))[:, -1].argmax(-1)
        recomputed_ids.append(int(nxt[0]))
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
    t_recompute = time.perf_counter() - t
    result = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "backend": be.name,
            "cached_s": round(t_cached, 4), "recompute_s": round(t_recompute, 4),
            "measured_speedup": round(t_recompute / t_cached, 2),
            "predicted_speedup": round(kv_speedup_prediction(cfg, prompt_tokens, new_tokens), 2),
            "same_tokens": cached_ids == recomputed_ids}  # fmt: skip
    if device is not None:
        peak, bw = device.peak("fp32"), device.bandwidth
        roofline = kv_speedup_roofline(model, prompt_tokens, new_tokens, peak, bw)
        result |= {"roofline_predicted_speedup": round(roofline, 2),
                   "device": device.name, "peak_fp32_gflops": round(peak / 1e9, 1),
                   "bandwidth_gb_s": round(bw / 1e9, 2)}  # fmt: skip
    return result


def bench_train(preset: str = "teacher", steps: int = 10, batch_size: int = 32, vocab_size: int = 77,
                torch_too: bool = True, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Training tokens/s (forward + hand-written backward + AdamW) on random tokens, best step of
    `steps`; with PyTorch importable, the same shapes trained by `transformers.GPT2LMHeadModel`
    and `torch.optim.AdamW` in the same run, for the ratio."""
    from .train import AdamW, TrainConfig, clip_grads, cross_entropy_step

    cfg = GPTConfig.preset(preset, vocab_size=vocab_size)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg.vocab_size, (batch_size, cfg.block_size))
    y = rng.integers(0, cfg.vocab_size, (batch_size, cfg.block_size))
    model = GPT(cfg, seed=seed)
    step = cross_entropy_step(cfg)
    opt = AdamW(model.params, TrainConfig())
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        _, grads = step(model.params, x, y)
        clip_grads(grads, 1.0)
        opt.step(model.params, grads, 1e-3)
        times.append(time.perf_counter() - t)
    tokens = batch_size * cfg.block_size
    result: dict[str, Any] = {"preset": preset, "batch_size": batch_size, "block_size": cfg.block_size,
                              "minillm_tok_s": round(tokens / min(times[1:]), 1)}  # fmt: skip
    if torch_too:
        try:
            import torch
            from transformers import GPT2Config, GPT2LMHeadModel
        except ImportError as e:
            result["torch"] = f"not measured: {e}"
            return result
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0))  # fmt: skip
        topt = torch.optim.AdamW(hf.parameters(), lr=1e-3, weight_decay=0.1)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        ttimes = []
        for _ in range(steps + 1):
            t = time.perf_counter()
            logits = hf(tx).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), ty.reshape(-1))
            topt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            topt.step()
            ttimes.append(time.perf_counter() - t)
        result |= {"torch_tok_s": round(tokens / min(ttimes[1:]), 1), "torch": torch.__version__,
                   "torch_threads": torch.get_num_threads()}  # fmt: skip
        result["ratio"] = round(result["minillm_tok_s"] / result["torch_tok_s"], 3)
    return result


# ------------------------------------------------------------------------------------------
# The measured table in docs/backends.md: every backend and format, on both model shapes.
# "fp32-input-major" is float32 with the block weights in (in, out) row-major order instead of
# output-major (`minillm.nn.gpt.output_major`): the same numbers, the other memory layout.
SUITE_FORMATS = (("numpy", "fp32"), ("numpy", "fp32-input-major"), ("numba", "fp32"), ("numba", "int8"),
                 ("numba", "q8_0"), ("numba", "q4_0"), ("jax", "fp32"))
SUITE = [(model, backend, weights) for model in ("gpt2", "teacher") for backend, weights in SUITE_FORMATS]


def input_major(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with every array in C (row-major) order: dense (in, out) weights input-major."""
    return {name: np.ascontiguousarray(w) if isinstance(w, np.ndarray) else w for name, w in params.items()}


def with_weights(model: GPT, weights: str) -> GPT:
    """`model` with its weights as `bench --weights` names them: ``fp32`` (as stored),
    ``fp32-input-major`` (see `input_major`) or a `quantize_params` method."""
    if weights == "fp32":
        return model
    if weights == "fp32-input-major":
        return GPT(model.config, params=input_major(model.params), tokenizer=model.tokenizer)
    from .compress.quantize import quantize_params

    return GPT(model.config, params=quantize_params(model.params, weights), tokenizer=model.tokenizer)

# transformers' generate on the GPT-2 124M shape (random weights, greedy, batch 1): the peer the
# NumPy backend is compared with. Run by `peer_python` (an interpreter with torch + transformers).
HF_GENERATE = """
import json, sys, time, torch
from transformers import GPT2Config, GPT2LMHeadModel
prompt, new, repeat = map(int, sys.argv[1:4])
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config()).eval()
ids = torch.zeros((1, prompt), dtype=torch.long)
kw = dict(do_sample=False, pad_token_id=0)
best = 0.0
with torch.no_grad():
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
    for _ in range(repeat):
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
        best = max(best, new / (time.perf_counter() - t))
print(json.dumps({"decode_tok_s": round(best, 2), "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""


def hf_generate_tok_s(peer_python: str, prompt_tokens: int = 16, new_tokens: int = 32, repeat: int = 3) -> dict:
    """transformers' `generate` speed on the GPT-2 124M shape, run by another interpreter.

    Like the shared baseline script, it times whole `generate` calls (prefill included) and
    keeps the best of `repeat`."""
    return _run_peer(peer_python, HF_GENERATE, prompt_tokens, new_tokens, repeat)


# What each peer's interpreter must import, and how to make one.
PEERS = {"transformers": (("torch", "transformers"), "pip install torch transformers"),
         "llama.cpp": (("llama_cpp", "gguf", "numpy"), "pip install llama-cpp-python gguf numpy")}  # fmt: skip


def check_peer(python: str, peer: str) -> None:
    """Fail now, before a suite's minutes of work, if interpreter `python` cannot run `peer`
    ("transformers" or "llama.cpp"): it is missing, or one of the peer's modules does not import."""
    modules, install = PEERS[peer]
    try:
        _run_peer(python, f"import {', '.join(modules)}; print('{{}}')")
    except (OSError, RuntimeError) as e:
        raise RuntimeError(f"{python} cannot run the {peer} peer (it needs {', '.join(modules)}; in a venv: "
                           f"{install}): {str(e).splitlines()[-1]}") from e  # fmt: skip


def _run_peer(python: str, script: str, *args: Any) -> dict:
    """Run `script` in interpreter `python` with `args`; its last line of output, as JSON."""
    import json
    import subprocess

    out = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the peer run by {python} failed (exit {out.returncode}):\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# llama.cpp (through llama-cpp-python) on the same GPT-2 124M shape: the CPU peer for the
# quantized formats, with the same blocks (Q8_0, Q4_0: 32 weights and a float16 scale) and the
# same work: batch 1, greedy, 2 threads. The GGUF files are written by the peer's own `gguf`
# package from random weights (speed does not depend on their values), the LM head tied to the
# token embedding as in GPT-2. Both scripts run in `llamacpp_python`, an interpreter with
# `llama-cpp-python`, `gguf` and NumPy (how to make one: docs/backends.md).
LLAMACPP_FORMATS = {"fp32": "F32", "q8_0": "Q8_0", "q4_0": "Q4_0"}  # our weights name: GGUF's type
LLAMACPP_GGUF = """
import sys, numpy as np, gguf
from gguf import GGMLQuantizationType as T
path, kind = sys.argv[1], sys.argv[2]
L, H, C, V, N = map(int, sys.argv[3:8])  # blocks, heads, width, vocabulary, context
given = np.load(sys.argv[8], allow_pickle=False) if len(sys.argv) > 8 else None  # GGUF name: (rows, cols)
rng = np.random.default_rng(0)
w = gguf.GGUFWriter(path, "gpt2")
w.add_context_length(N); w.add_embedding_length(C); w.add_feed_forward_length(4 * C)
w.add_block_count(L); w.add_head_count(H); w.add_layer_norm_eps(1e-5)
w.add_file_type({"F32": 0, "Q8_0": 7, "Q4_0": 2}[kind])
w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default")
w.add_token_list([b"t%d" % i for i in range(V)]); w.add_token_types([1] * V); w.add_token_merges(["t 0"])
w.add_bos_token_id(0); w.add_eos_token_id(1)
def matrix(name, rows, cols):
    a = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32) if given is None else given[name]
    if kind == "F32":
        w.add_tensor(name, a)
    else:
        qt = getattr(T, kind)
        w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
def vector(name, n, value):
    w.add_tensor(name, np.full(n, value, np.float32) if given is None else given[name])
matrix("token_embd.weight", V, C)  # the tied head: no output.weight
w.add_tensor("position_embd.weight", (rng.standard_normal((N, C)) * 0.01).astype(np.float32) if given is None
             else given["position_embd.weight"])
for i in range(L):
    p = "blk.%d." % i
    for norm in ("attn_norm", "ffn_norm"):
        vector(p + norm + ".weight", C, 1.0); vector(p + norm + ".bias", C, 0.0)
    for name, rows, cols in (("attn_qkv", 3 * C, C), ("attn_output", C, C), ("ffn_up", 4 * C, C),
                             ("ffn_down", C, 4 * C)):
        matrix(p + name + ".weight", rows, cols); vector(p + name + ".bias", rows, 0.0)
vector("output_norm.weight", C, 1.0); vector("output_norm.bias", C, 0.0)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print('{"written": "%s"}' % kind)
"""
LLAMACPP_DECODE = """
import json, sys, time, numpy as np, llama_cpp
path, prompt_n, new, repeat = sys.argv[1], *map(int, sys.argv[2:5])
# flash attention on: llama.cpp's faster decode here (Q4_0 349 against 296 tok/s, medians of 6 rounds)
m = llama_cpp.Llama(model_path=path, n_ctx=128, n_batch=64, n_threads=2, n_threads_batch=2, flash_attn=True,
                    verbose=False)
prompt = list(range(2, 2 + prompt_n))
best_p = best_d = float("inf")
for r in range(repeat + 1):  # the first run warms up (the mapped file's pages, the thread pool)
    m.reset()
    t = time.perf_counter(); m.eval(prompt); tok = int(np.argmax(m.scores[m.n_tokens - 1]))
    t_p = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(new - 1):  # as minillm's bench: the first new token comes from the prefill
        m.eval([tok]); tok = int(np.argmax(m.scores[m.n_tokens - 1]))
    t_d = time.perf_counter() - t
    if r:
        best_p, best_d = min(best_p, t_p), min(best_d, t_d)
print(json.dumps({"prefill_tok_s": round(prompt_n / best_p, 2), "decode_tok_s": round((new - 1) / best_d, 2),
                  "llama_cpp": llama_cpp.__version__}))
"""


def gguf_tensors(params: dict[str, Any], config: GPTConfig) -> dict[str, np.ndarray]:
    """A float32 GPT's parameters under GGUF's "gpt2" names, matrices as (out, in) rows (ours
    are (in, out)); the head stays tied to `token_embd`."""
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}  # fmt: skip
    out = {"token_embd.weight": params["wte.weight"], "position_embd.weight": params["wpe.weight"],
           "output_norm.weight": params["ln_f.weight"], "output_norm.bias": params["ln_f.bias"]}  # fmt: skip
    for i in range(config.n_layer):
        for ours, theirs in names.items():
            w = params[f"h.{i}.{ours}.weight"]
            out[f"blk.{i}.{theirs}.weight"] = w if w.ndim == 1 else w.T  # a matrix: (in, out) -> (out, in)
            out[f"blk.{i}.{theirs}.bias"] = params[f"h.{i}.{ours}.bias"]
    if not all(isinstance(a, np.ndarray) for a in out.values()):
        raise TypeError("gguf_tensors takes dense float32 parameters (quantize in GGUF instead)")
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in out.items()}


def llamacpp_gguf(llamacpp_python: str, weights: str, directory: str | Path, config: GPTConfig | None = None,
                  params: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write a GGUF file in `weights` ("fp32", "q8_0" or "q4_0") into `directory`: the shape of
    `config` (default: the GPT-2 124M preset), GGUF's "gpt2" architecture, random weights or
    the float32 `params` of a model of that config (quantized by `gguf` for Q8_0 and Q4_0)."""
    if weights not in LLAMACPP_FORMATS:
        raise ValueError(f"llama.cpp peer formats are {sorted(LLAMACPP_FORMATS)}, got {weights!r}")
    c = config or GPTConfig.preset("gpt2")
    path = Path(directory) / f"gpt2-{weights}.gguf"
    args = [path, LLAMACPP_FORMATS[weights], c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size]
    if params is not None:
        args.append(Path(directory) / f"gpt2-{weights}.npz")
        np.savez(args[-1], **gguf_tensors(params, c))
    _run_peer(llamacpp_python, LLAMACPP_GGUF, *args)
    return path


def llamacpp_decode_tok_s(llamacpp_python: str, path: str | Path, prompt_tokens: int = 16, new_tokens: int = 32,
                          repeat: int = 3) -> dict:  # fmt: skip
    """llama.cpp's prefill and decode tokens/s on GGUF file `path`, timed as `bench_decode` times
    ours: a prompt of `prompt_tokens`, then `new_tokens` - 1 greedy steps; best of `repeat`
    runs after a warm-up run."""
    _check_counts(prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeat=repeat)
    return _run_peer(llamacpp_python, LLAMACPP_DECODE, path, prompt_tokens, new_tokens, repeat)


def bench_products(model: GPT, backend: Any = "numpy", steps: int = 31, repeat: int = 3,
                   bandwidth_gb_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The matrix products of one decode step, timed alone: every block's four and the LM head.

    A decode step is these products plus everything else (layer norms, attention, GELU, the
    Python or runtime between them); timing the products alone splits a step's distance from
    the bandwidth limit into the kernels' share and the rest's. They run as in the model, each
    product's input made from the previous one's output (so none can overlap another), in the
    backend's own `linear` and `lm_head` — one compiled program on a backend that compiles
    whole steps (JAX). Timed as `bench_decode` times a step: `repeat` runs of `steps` chains
    back to back (after a warm-up and `SETTLE_S` idle), the best run's time per chain. Returns
    ``products_ms``, the bytes they read, ``products_gb_s`` and, with a bandwidth,
    ``products_frac``."""
    from .nn.gpt import BLOCK_WEIGHTS

    _check_counts(steps=steps, repeat=repeat)
    _check_bandwidth(bandwidth_gb_s)
    be = backends.get(backend)
    cfg = model.config
    C = cfg.n_embd
    params = be.prepare(model.params)
    names = [f"h.{i}.{n}" for i in range(cfg.n_layer) for n in BLOCK_WEIGHTS]
    ws = [(params[n + ".weight"], params[n + ".bias"]) for n in names]
    head = params["wte.weight"]
    nbytes = sum(int(model.params[n + s].nbytes) for n in names for s in (".weight", ".bias"))
    nbytes += int(model.params["wte.weight"].nbytes)

    def chain(ws: list, head: Any, x: Any) -> Any:
        for w, b in ws:  # c_attn's output is (1, 3C): its first C values feed c_proj
            x = be.linear(x[:, :C] if x.shape[1] == 3 * C else x, w, b)
        return be.lm_head(x, head)

    x0 = be.asarray(np.random.default_rng(0).standard_normal((1, C)).astype(np.float32))
    if hasattr(be, "forward"):  # a compiling backend: the chain is one program, as its step is
        import jax

        compiled = jax.jit(chain)

        def run() -> Any:
            return compiled(ws, head, x0).block_until_ready()
    else:
        def run() -> Any:
            return be.to_numpy(chain(ws, head, x0))

    run()  # compile / warm up
    time.sleep(SETTLE_S)  # let other thread pools (BLAS after NumPy's work) stop spinning first
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(steps):
            run()
        best = min(best, (time.perf_counter() - t) / steps)
    out: dict[str, Any] = {"products_ms": round(best * 1e3, 3), "products_bytes": nbytes,
                           "products_gb_s": round(nbytes / best / 1e9, 2)}  # fmt: skip
    if bandwidth_gb_s:
        out["products_frac"] = round(out["products_gb_s"] / bandwidth_gb_s, 3)
    return out


def bench_suite(rounds: int = SUITE_ROUNDS, peer_python: str | None = None, kv_cache: bool = True,
                progress: bool = True, llamacpp_python: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Every `SUITE` entry, `rounds` times interleaved (so a noisy minute hits all of them), plus
    transformers' generate (if `peer_python` is given), llama.cpp on the GPT-2 shape in float32,
    Q8_0 and Q4_0 (if `llamacpp_python` is given: each right after Numba's entry of the same
    format, with its own limit) and the KV-cache speed-ups.

    Each round runs `bench_decode` (best of 3 runs of prompt 16 + 32 new tokens) per entry, and
    on the GPT-2 shape `bench_products` (the step's products alone); the result keeps every
    round and the median, and the ratios the backends targets are stated in,
    computed per round (a ratio of two numbers measured a few seconds apart) and summarised by
    their median. Each entry's bandwidth limit is measured right before it (`bandwidth_probe`):
    this machine's bandwidth moves between levels within seconds, so a limit measured once per
    round could belong to another level than the entry it divides. ``timeline`` keeps every
    entry's limit and achieved GB/s against the seconds since the start (`plot_timeline`)."""
    from tqdm import tqdm

    from .hw.devices import Device, bandwidth_probe, fp32_peak
    from .io import load

    for python, peer in ((peer_python, "transformers"), (llamacpp_python, "llama.cpp")):
        if python:
            check_peer(python, peer)

    gpt2 = GPTConfig.preset("gpt2")
    base = {"gpt2": GPT(gpt2, seed=0), "teacher": load("teacher")}
    models = {(name, weights): with_weights(base[name], weights) for name, _, weights in SUITE}
    ggufs: dict[str, Path] = {}
    if llamacpp_python:
        import tempfile

        gguf_dir = tempfile.TemporaryDirectory(prefix="minillm-gguf-")  # removed when the suite returns
        ggufs = {w: llamacpp_gguf(llamacpp_python, w, gguf_dir.name) for w in LLAMACPP_FORMATS}
    runs: dict[str, list[dict[str, Any]]] = {f"gpt2/{b}/{w}": [] for m, b, w in SUITE if m == "gpt2"}
    runs |= {f"gpt2/llama.cpp/{w}": [] for w in ggufs}  # the peer's rows after ours on the same shape
    runs |= {f"{m}/{b}/{w}": [] for m, b, w in SUITE if m != "gpt2"}
    peer: list[float] = []
    peaks: list[float] = []  # this CPU's float32 FLOP/s, every round (the limits: per entry, below)
    timeline: list[dict[str, Any]] = []
    probe, start = bandwidth_probe(), time.perf_counter()
    bar = tqdm(total=rounds * (len(SUITE) + (peer_python is not None) + len(ggufs)), desc="bench suite",
               disable=not progress)  # fmt: skip

    def measure(entry: str, run: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
        """One entry of a round: the limit now (its own), then `run(limit)`, kept with the limit."""
        t_s, bandwidth = time.perf_counter() - start, probe() / 1e9
        time.sleep(SETTLE_S)  # BLAS's threads spin after the probe (see SETTLE_S)
        res = run(bandwidth)
        runs[entry].append(res)
        timeline.append({"t_s": round(t_s, 1), "entry": entry, "limit_gb_s": round(bandwidth, 2),
                         "achieved_gb_s": res["achieved_gb_s"]})  # fmt: skip
        bar.update()
        return res

    def ours(name: str, backend: str, weights: str, bandwidth: float) -> dict[str, Any]:
        res = bench_decode(models[name, weights], backend, 16, 32, repeat=3, bandwidth_gb_s=bandwidth)
        if name == "gpt2":  # the products alone: how much of the step's distance is theirs
            res |= bench_products(models[name, weights], backend, 31, repeat=3, bandwidth_gb_s=bandwidth)
        return res

    def llamacpp(weights: str, nbytes: int, bandwidth: float) -> dict[str, Any]:
        res = llamacpp_decode_tok_s(llamacpp_python, ggufs[weights], 16, 32, repeat=3)
        gb_s = round(nbytes * res["decode_tok_s"] / 1e9, 2)
        return res | {"bytes_per_token": nbytes, "achieved_gb_s": gb_s} | _against_limit(bandwidth, nbytes, gb_s)

    for _ in range(rounds):
        peaks.append(fp32_peak())
        for name, backend, weights in SUITE:
            res = measure(f"{name}/{backend}/{weights}", partial(ours, name, backend, weights))
            if peer_python and (name, backend, weights) == ("gpt2", "numpy", "fp32"):
                peer.append(hf_generate_tok_s(peer_python)["decode_tok_s"])
                bar.update()
            if name == "gpt2" and backend == "numba" and weights in ggufs:
                # The same blocks as ours (res: Numba's entry of this format, just run), but llama.cpp
                # keeps its KV cache in float16: half our cache bytes, at bench_decode's mid-run context.
                nbytes = res["bytes_per_token"] - kv_cache_bytes(gpt2, 16 + 32 // 2) // 2
                measure(f"gpt2/llama.cpp/{weights}", partial(llamacpp, weights, nbytes))
    bar.close()
    rows = []
    for key, rs in runs.items():
        name, backend, weights = key.split("/")
        tok = [r["decode_tok_s"] for r in rs]
        rows.append({"model": name, "backend": backend, "weights": weights, "decode_tok_s": tok,
                     "median_tok_s": float(np.median(tok)),
                     "prefill_tok_s": float(np.median([r["prefill_tok_s"] for r in rs])),
                     "bytes_per_token": rs[0]["bytes_per_token"],
                     "median_gb_s": float(np.median([r["achieved_gb_s"] for r in rs])),
                     "bandwidth_gb_s": [r["bandwidth_gb_s"] for r in rs],  # its limit, each round
                     "roofline_tok_s": float(np.median([r["roofline_tok_s"] for r in rs])),
                     "roofline_frac": float(np.median([r["roofline_frac"] for r in rs]))})  # fmt: skip
        if backend == "llama.cpp":
            rows[-1] |= {"peer": True, "llama_cpp": rs[0]["llama_cpp"]}
        else:
            rows[-1]["warmup_s"] = float(np.median([r["warmup_s"] for r in rs]))
        if "products_frac" in rs[0]:
            rows[-1] |= {"products_ms": float(np.median([r["products_ms"] for r in rs])),
                         "products_frac": float(np.median([r["products_frac"] for r in rs]))}  # fmt: skip

    def ratio(a: str, b: str | list[float]) -> dict[str, Any]:
        num = [r["decode_tok_s"] for r in runs[a]]
        den = b if isinstance(b, list) else [r["decode_tok_s"] for r in runs[b]]
        per_round = [round(x / y, 3) for x, y in zip(num, den, strict=True)]
        return {"per_round": per_round, "median": float(np.median(per_round))}

    ratios = {"numpy fp32: output-major / input-major (gpt2)": ratio("gpt2/numpy/fp32", "gpt2/numpy/fp32-input-major"),
              "numba int8 / numpy fp32 (gpt2)": ratio("gpt2/numba/int8", "gpt2/numpy/fp32"),
              "numba q4_0 / numba int8 (gpt2)": ratio("gpt2/numba/q4_0", "gpt2/numba/int8"),
              "jax fp32 / numpy fp32 (gpt2)": ratio("gpt2/jax/fp32", "gpt2/numpy/fp32"),
              "jax fp32 / numpy fp32 (teacher)": ratio("teacher/jax/fp32", "teacher/numpy/fp32")}  # fmt: skip
    if peer:
        ratios = {"numpy fp32 / transformers generate (gpt2)": ratio("gpt2/numpy/fp32", peer)} | ratios
    for w in ggufs:  # no target: where our kernels stand against the formats' own implementation
        ratios[f"numba {w} / llama.cpp {w} (gpt2)"] = ratio(f"gpt2/numba/{w}", f"gpt2/llama.cpp/{w}")
    limits = [e["limit_gb_s"] for e in timeline]
    bw = float(np.median(limits)) * 1e9
    peak = float(np.median(peaks))
    cpu = Device("cpu", "this CPU (median of the suite)", {"fp32": peak}, bw, None, "measured in bench_suite")
    result: dict[str, Any] = {"machine": machine_info(), "threads": _thread_info(),
                              "bandwidth_gb_s": round(bw / 1e9, 2), "peak_fp32_gflops": round(peak / 1e9, 1),
                              "bandwidth_range_gb_s": [min(limits), max(limits)], "rounds": rounds,
                              "decode": rows, "transformers_tok_s": peer, "ratios": ratios,
                              "timeline": timeline}  # fmt: skip
    if kv_cache:
        result["kv_cache"] = [kv_cache_speedup(base["gpt2"], 16, 256, device=cpu),
                              kv_cache_speedup(base["teacher"], 16, 100, device=cpu)]  # fmt: skip
        result["kv_cache"][0]["model"], result["kv_cache"][1]["model"] = "gpt2", "teacher"
    return result


def plot_timeline(result: dict[str, Any], path: str | Path) -> Path:
    """The suite against time: each GPT-2 entry's achieved GB/s, and the bandwidth limit
    measured right before it (`bench_suite`'s ``timeline``). Shows what a table of medians
    hides: how far the limit itself moves during the run, and which formats follow it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result.get("timeline") or []
    gpt2 = [e for e in timeline if e["entry"].startswith("gpt2/")]
    if not gpt2:
        raise ValueError("the result has no GPT-2 entries in its timeline (a `bench_suite` result has them)")
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.step([e["t_s"] / 60 for e in timeline], [e["limit_gb_s"] for e in timeline], where="post", color="0.5",
            label="bandwidth limit, measured before each entry (the teacher's too)")  # fmt: skip
    for entry in dict.fromkeys(e["entry"] for e in gpt2):
        pts = [(e["t_s"] / 60, e["achieved_gb_s"]) for e in gpt2 if e["entry"] == entry]
        peer = "/llama.cpp/" in entry  # a peer's points: crosses, ours: dots
        ax.plot(*zip(*pts, strict=True), "x" if peer else "o", ms=5 if peer else 4,
                label=entry.removeprefix("gpt2/") + (" (peer)" if peer else ""))  # fmt: skip
    ax.set_xlabel("minutes since the suite started")
    ax.set_ylabel("GB/s")
    ax.set_ylim(bottom=0)
    ax.set_title("GPT-2 decode: achieved bandwidth against the limit at that moment")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no point hidden
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _thread_info() -> dict[str, Any]:
    """Thread pools in use: Numba's layer and thread count, and the environment that sets them."""
    import os

    info: dict[str, Any] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT",
                                                       "NUMBA_NUM_THREADS") if k in os.environ}  # fmt: skip
    try:
        be = backends.get("numba")
        info |= {"numba_layer": be.threading_layer, "numba_threads": be.threads}
    except backends.BackendUnavailable:
        pass
    return info
