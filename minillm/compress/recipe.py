"""Recipes: compression methods chained into one model transformation.

A recipe is a ``+``-separated list of steps applied in order to a model's params:

| step | what it does |
|---|---|
| ``prune:S`` | magnitude pruning of every block matmul weight to sparsity S (per layer) |
| ``2:4`` | N:M structured sparsity: keep the 2 largest of every 4 inputs (stored as `NMSparse`) |
| ``lowrank:F`` | truncated SVD of the MLP weights, keeping a fraction F of their parameters |
| ``int8``, ``q8_0``, ``q4_0``, ``int<b>-g<G>`` | weight-only quantization of the remaining dense block weights |

Pruning and low rank change *which* values exist and can be followed by fine-tuning
(`finetune`); quantization then changes *how* the survivors are stored. For example
``prune:0.5+int8`` or ``lowrank:0.5``. Quantization also covers the tied token embedding (it is
the LM head; see `minillm.kinds.TiedEmbedding`); position embeddings, LayerNorms and biases stay
float32.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from ..kinds import LowRank, block_matmul_names, is_kind
from ..nn.gpt import GPT, output_major
from . import lowrank, prune, quantize

_QUANT = re.compile(r"int8|q8_0|q4_0|int[2-8]-g\d+")


def parse_recipe(recipe: str) -> list[tuple[str, float | None]]:
    """Split ``"prune:0.5+q8_0"`` into ``[("prune", 0.5), ("q8_0", None)]``, validating each step."""
    if not isinstance(recipe, str) or not recipe.strip():
        raise ValueError(f"recipe must be a non-empty string such as 'prune:0.5+int8', got {recipe!r}")
    steps: list[tuple[str, float | None]] = []
    for part in recipe.split("+"):
        part = part.strip()
        name, _, arg = part.partition(":")
        if name in ("prune", "lowrank"):
            try:
                value = float(arg)
            except ValueError:
                raise ValueError(f"recipe step {part!r} needs a number, e.g. '{name}:0.5'") from None
            if not 0 <= value <= 1:
                raise ValueError(f"recipe step {part!r}: the fraction must be in [0, 1], got {value}")
            if name == "lowrank" and value == 0:  # rank 0 would delete the weight
                raise ValueError(f"recipe step {part!r}: the fraction of parameters must be in (0, 1], got {value}")
            steps.append((name, value))
        elif part == "2:4" or re.fullmatch(r"\d+:\d+", part):
            n, m = (int(v) for v in part.split(":"))
            if not 0 < n <= m:
                raise ValueError(f"recipe step {part!r}: N:M needs 0 < N <= M")
            steps.append((f"nm:{n}:{m}", None))
        elif _QUANT.fullmatch(part):
            steps.append((part, None))
        else:
            raise ValueError(f"unknown recipe step {part!r}; allowed: prune:S, 2:4, lowrank:F, int8, q8_0, "
                             "q4_0, int<b>-g<G> (e.g. int4-g32), joined with '+'")
    return steps


def structural_part(recipe: str) -> str:
    """The steps of `recipe` that change which weights exist (``prune:S``, ``N:M``, ``lowrank:F``),
    joined with ``+``; ``""`` if there are none. Quantization steps are dropped."""
    parts = [p.strip() for p in recipe.split("+")]
    steps = parse_recipe(recipe)  # validates every step
    return "+".join(p for p, (s, _) in zip(parts, steps, strict=True) if not _QUANT.fullmatch(s))


def masks_for(params: dict[str, Any], steps: list[tuple[str, float | None]]) -> dict[str, np.ndarray]:
    """The pruning masks a recipe implies (for masked fine-tuning)."""
    masks: dict[str, np.ndarray] = {}
    for step, value in steps:
        for name in block_matmul_names(params):
            w = params[name]
            if is_kind(w):
                continue
            if step == "prune":
                mask = prune.magnitude_mask(w, value)
            elif step.startswith("nm:"):
                _, n, m = step.split(":")
                mask = prune.n_m_mask(w, int(n), int(m))
            else:
                continue
            masks[name] = masks[name] & mask if name in masks else mask
    return masks


def apply_recipe(params: dict[str, Any], recipe: str) -> dict[str, Any]:
    """A new params dict with every step of `recipe` applied (no fine-tuning)."""
    steps = parse_recipe(recipe)
    out = dict(params)
    for step, value in steps:
        names = [n for n in block_matmul_names(out) if not is_kind(out[n])]
        if step == "prune":
            for name in names:
                out[name] = out[name] * prune.magnitude_mask(out[name], value)
        elif step.startswith("nm:"):
            _, n, m = step.split(":")
            for name in names:
                out[name] = prune.nm_sparse(out[name], int(n), int(m))
        elif step == "lowrank":
            out = lowrank.factorize_params(out, which="mlp", fraction=value)
        else:
            if any(is_kind(out[n]) for n in block_matmul_names(out)):
                kinds = sorted({type(out[n]).__name__ for n in block_matmul_names(out) if is_kind(out[n])})
                raise ValueError(f"recipe {recipe!r}: {step} quantizes dense weights only, but some are "
                                 f"already {kinds}; put quantization last and after prune:S only")
            out = quantize.quantize_params(out, step)
    return output_major(out)  # masked products come out row-major; keep the decode-friendly layout


def finetune(model: GPT, recipe: str, steps: int = 300, lr: float = 3e-4, seed: int = 0,
             progress: bool = True) -> GPT:  # fmt: skip
    """Apply the structural part of `recipe` (pruning / N:M / low rank) and fine-tune on Shakespeare.

    Pruned weights stay exactly zero (masked AdamW). Low-rank weights are trained as their
    factors: with $W = AB$ the backward gives $\\partial L/\\partial W$, and the chain rule gives
    $\\partial L/\\partial A = \\frac{\\partial L}{\\partial W} B^\\top$,
    $\\partial L/\\partial B = A^\\top \\frac{\\partial L}{\\partial W}$. Returns a dense model whose
    weights already have the recipe's structure (apply the recipe again to store it compactly).
    """
    from .. import data
    from ..nn.gpt import backward, forward_train
    from ..train import TrainConfig, train

    parsed = parse_recipe(recipe)
    if any(_QUANT.fullmatch(s) for s, _ in parsed):
        raise ValueError("finetune takes the structural steps only (prune:S, 2:4, lowrank:F); quantize afterwards")
    tok = model.tokenizer
    train_ids = data.encode_split("train", tok)
    val_ids = data.encode_split("val", tok)
    cfg = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup=min(20, steps - 1), eval_every=max(1, steps // 4),
                      ckpt_every=steps, seed=seed)  # fmt: skip
    params = {k: np.array(v, dtype=np.float32, copy=True) for k, v in model.params.items()}
    student = GPT(model.config, params=params, tokenizer=tok)
    masks = masks_for(params, parsed)
    lowrank_steps = [v for s, v in parsed if s == "lowrank"]
    if not lowrank_steps:
        train(student, train_ids, val_ids, cfg, masks=masks, progress=progress, desc=f"finetune {recipe}")
        return student

    # Low rank: the trainable tensors are the factors (plus every other parameter).
    factored = lowrank.factorize_params(params, which="mlp", fraction=lowrank_steps[-1])
    trainable = {}
    for name, w in factored.items():
        if isinstance(w, LowRank):
            trainable[name + ".A"] = np.array(w.a, np.float32)
            trainable[name + ".B"] = np.array(w.b, np.float32)
        else:
            trainable[name] = w

    def dense(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        d = {k: v for k, v in t.items() if not k.endswith((".A", ".B"))}
        for k in t:
            if k.endswith(".A"):
                d[k[:-2]] = t[k] @ t[k[:-2] + ".B"]  # W = A B, (in, r) @ (r, out)
        return d

    def step_fn(t: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
        w = dense(t)
        _, loss, caches = forward_train(w, model.config, x, y)
        g = backward(w, model.config, caches)
        grads = {k: g[k] for k in t if k in g}
        for k in t:
            if k.endswith(".A"):
                base = k[:-2]
                grads[k] = g[base] @ t[base + ".B"].T  # dL/dA = dL/dW B^T
                grads[base + ".B"] = t[k].T @ g[base]  # dL/dB = A^T dL/dW
        return loss, grads

    holder = GPT.__new__(GPT)  # train() needs .config and .params only
    holder.config, holder.params, holder.tokenizer = model.config, trainable, tok
    train(holder, train_ids, None, dataclasses.replace(cfg), step_fn=step_fn, progress=progress,
          desc=f"finetune {recipe}")  # fmt: skip
    return GPT(model.config, params={k: np.ascontiguousarray(v, np.float32) for k, v in dense(trainable).items()},
               tokenizer=tok)  # fmt: skip
