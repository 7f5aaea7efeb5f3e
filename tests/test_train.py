"""AdamW, the schedule, clipping, checkpoints and exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minillm
from minillm.train import (
    AdamW,
    TrainConfig,
    clip_grads,
    evaluate,
    load_checkpoint,
    lr_at,
    save_checkpoint,
    train,
)


def test_adamw_matches_the_formula_written_out_for_two_steps():
    cfg = TrainConfig(weight_decay=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    w = np.array([[1.0, -2.0]])
    b = np.array([0.5])
    params = {"w": w.copy(), "b": b.copy()}
    opt = AdamW(params, cfg)
    g1 = {"w": np.array([[0.1, 0.2]]), "b": np.array([-0.3])}
    g2 = {"w": np.array([[-0.4, 0.0]]), "b": np.array([0.1])}
    opt.step(params, g1, 0.01)
    opt.step(params, g2, 0.02)
    # by hand, for w (decayed) and b (not decayed)
    for name, x0, decay in (("w", w, True), ("b", b, False)):
        x, m, v = x0.copy(), 0.0, 0.0
        for t, (g, lr) in enumerate(((g1[name], 0.01), (g2[name], 0.02)), start=1):
            m = 0.9 * m + 0.1 * g
            v = 0.99 * v + 0.01 * g * g
            if decay:
                x = x * (1 - lr * 0.1)
            x = x - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
        np.testing.assert_allclose(params[name], x, rtol=1e-12)


def test_schedule_warms_up_linearly_then_follows_the_cosine():
    cfg = TrainConfig(steps=110, warmup=10, lr=1e-3, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway: cos(pi/2) = 0
    assert lr_at(110, cfg) == pytest.approx(1e-4)


def test_clipping_scales_to_the_global_norm():
    g = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    norm = clip_grads(g, 1.0)
    assert norm == pytest.approx(5.0)
    assert math.hypot(g["a"][0], g["b"][0, 0]) == pytest.approx(1.0, rel=1e-5)
    small = {"a": np.array([0.3])}
    clip_grads(small, 1.0)
    assert small["a"][0] == 0.3


def _tiny_run():
    cfg = minillm.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)
    data = np.random.default_rng(0).integers(0, 16, 400)
    tc = TrainConfig(steps=12, batch_size=4, warmup=2, eval_every=5, eval_batches=2, ckpt_every=3)
    return cfg, data, tc


def test_training_lowers_the_loss():
    cfg, _, tc = _tiny_run()
    data = np.tile(np.arange(16), 30)  # a perfectly predictable sequence
    model = minillm.GPT(cfg, seed=0)
    tc = TrainConfig(steps=60, batch_size=8, warmup=5, lr=1e-2, min_lr=1e-3, eval_every=60)
    before = evaluate(model, data)["loss"]
    train(model, data, data, tc, progress=False)
    assert evaluate(model, data)["loss"] < 0.5 * before


def test_resume_is_bit_for_bit_identical_to_an_uninterrupted_run(tmp_path):
    cfg, data, tc = _tiny_run()
    straight = minillm.GPT(cfg, seed=0)
    hist_a = train(straight, data, data, tc, checkpoint=tmp_path / "a.safetensors", progress=False)
    interrupted = minillm.GPT(cfg, seed=0)
    train(interrupted, data, data, tc, checkpoint=tmp_path / "b.safetensors", progress=False, stop_after=7)
    resumed = minillm.GPT(cfg, seed=0)  # a fresh process would start from fresh weights
    hist_b = train(resumed, data, data, tc, checkpoint=tmp_path / "b.safetensors", resume=True, progress=False)
    for name in straight.params:
        np.testing.assert_array_equal(straight.params[name], resumed.params[name])
    untimed = lambda h: [{k: v for k, v in row.items() if k != "tok_s"} for row in h]
    assert untimed(hist_a) == untimed(hist_b)
    state, *_ = load_checkpoint(tmp_path / "b.safetensors")
    assert state.step == tc.steps


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    cfg, data, tc = _tiny_run()
    model = minillm.GPT(cfg, seed=0)
    path = tmp_path / "ck.safetensors"
    train(model, data, None, tc, checkpoint=path, progress=False, stop_after=3)
    before = path.read_bytes()
    state, *_ = load_checkpoint(path)
    from minillm import io

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io, "_safetensors_chunks", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, state, cfg, tc)
    assert path.read_bytes() == before  # the old checkpoint is intact


def test_resume_refuses_a_checkpoint_from_another_run(tmp_path):
    cfg, data, tc = _tiny_run()
    train(minillm.GPT(cfg), data, None, tc, checkpoint=tmp_path / "c.safetensors", progress=False, stop_after=3)
    other = TrainConfig(steps=13, batch_size=4, warmup=2, eval_every=5, eval_batches=2, ckpt_every=3)
    with pytest.raises(ValueError, match="trained with"):
        train(minillm.GPT(cfg), data, None, other, checkpoint=tmp_path / "c.safetensors", resume=True, progress=False)
    with pytest.raises(FileNotFoundError):
        train(minillm.GPT(cfg), data, None, tc, checkpoint=tmp_path / "none.safetensors", resume=True)


def test_masked_weights_stay_exactly_zero_through_every_step():
    cfg, data, tc = _tiny_run()
    model = minillm.GPT(cfg, seed=0)
    name = "h.0.mlp.c_fc.weight"
    mask = np.random.default_rng(1).random(model.params[name].shape) > 0.5
    seen = []

    from minillm.train import cross_entropy_step

    base = cross_entropy_step(cfg)

    def step(params, x, y):
        seen.append(np.count_nonzero(params[name][~mask]))
        return base(params, x, y)

    train(model, data, None, tc, step_fn=step, masks={name: mask}, progress=False)
    assert seen and max(seen) == 0
    assert np.count_nonzero(model.params[name][~mask]) == 0
    assert np.count_nonzero(model.params[name][mask]) == mask.sum()


def test_evaluate_counts_every_token_once():
    cfg = minillm.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = minillm.GPT(cfg)
    data = np.random.default_rng(0).integers(0, 16, 45)
    res = evaluate(model, data, batch_size=2)
    assert res["tokens"] == 44
    # the same number from per-window cross-entropy by hand
    from minillm.nn.gpt import forward_train

    total = 0.0
    for s in range(0, 44, 8):
        n = min(8, 44 - s)
        total += forward_train(model.params, cfg, data[None, s : s + n], data[None, s + 1 : s + n + 1])[1] * n
    assert res["loss"] == pytest.approx(total / 44, rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(res["loss"]))


@pytest.mark.parametrize("kw, err", [(dict(steps=0), "steps"), (dict(warmup=5000), "warmup"),
                                     (dict(lr=1e-3, min_lr=1e-2), "min_lr"), (dict(beta2=1.0), "betas")])
def test_bad_train_config_raises(kw, err):
    with pytest.raises(ValueError, match=err):
        TrainConfig(**kw)
