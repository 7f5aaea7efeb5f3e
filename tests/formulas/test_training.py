"""Formulas on docs/training.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minillm
from minillm.train import AdamW, TrainConfig, clip_grads, evaluate, lr_at


@pytest.mark.formula("training.adamw")
def test_adamw_single_step_closed_form():
    # At t = 1 the bias-corrected update is lr * g / (|g| + eps): a step of size lr per entry.
    cfg = TrainConfig(weight_decay=0.1)
    params = {"w": np.array([[1.0, -1.0, 0.5]]), "b": np.array([2.0])}
    grads = {"w": np.array([[3.0, -0.2, 0.0]]), "b": np.array([-4.0])}
    AdamW(params, cfg).step(params, grads, lr=0.01)
    w_expected = np.array([[1.0, -1.0, 0.5]]) * (1 - 0.01 * 0.1) - 0.01 * np.array([3.0, -0.2, 0.0]) / (
        np.abs([3.0, -0.2, 0.0]) + 1e-8)
    np.testing.assert_allclose(params["w"], w_expected, rtol=1e-12)
    assert params["b"][0] == pytest.approx(2.0 + 0.01 * 4 / (4 + 1e-8))  # 1-D: no decay


@pytest.mark.formula("training.cosine")
def test_cosine_schedule_values():
    cfg = TrainConfig(steps=1000, warmup=100, lr=2e-3, min_lr=2e-4)
    for t in (100, 325, 550, 775, 1000):
        expected = 2e-4 + 0.5 * (2e-3 - 2e-4) * (1 + math.cos(math.pi * (t - 100) / 900))
        assert lr_at(t, cfg) == pytest.approx(expected, rel=1e-12)


@pytest.mark.formula("training.clip")
def test_clipping_formula():
    g = {"a": np.array([1.0, 2.0]), "b": np.array([[2.0]])}  # norm 3
    clip_grads(g, 1.5)
    np.testing.assert_allclose(g["a"], np.array([1.0, 2.0]) * 1.5 / 3, rtol=1e-6)


@pytest.mark.formula("training.perplexity")
def test_perplexity_is_exp_of_mean_nll():
    cfg = minillm.GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4)
    model = minillm.GPT(cfg, seed=0)
    data = np.random.default_rng(0).integers(0, 7, 13)
    res = evaluate(model, data)
    nll = []
    for s in range(0, 12, 4):
        x = data[s : s + 4][None]
        logits = model.forward(x)[0].astype(np.float64)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll += [-logp[i, data[s + i + 1]] for i in range(x.shape[1])]
    assert res["tokens"] == 12
    assert res["ppl"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)
