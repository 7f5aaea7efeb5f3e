"""Narrow-format emulation: weights and every kernel output rounded to the format."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm.hw.emulate import FormatBackend, validation_loss_by_format
from minillm.hw.floats import round_to


@pytest.fixture
def model():
    return minillm.GPT(minillm.GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16), seed=0)


def test_float32_format_is_the_numpy_backend(model):
    idx = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(model.forward(idx, backend=FormatBackend("float32")), model.forward(idx))


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"])
def test_logits_are_representable_in_the_format_and_close(model, fmt):
    idx = np.arange(12).reshape(2, 6)
    logits = model.forward(idx, backend=FormatBackend(fmt))
    np.testing.assert_array_equal(round_to(logits, fmt), logits)  # the head's output was rounded
    ref = model.forward(idx)
    assert 0 < np.abs(logits - ref).max() < (0.5 if "float8" in fmt else 0.05)


def test_validation_loss_by_format_orders_precision(model):
    data = np.random.default_rng(0).integers(0, 30, 200)
    losses = validation_loss_by_format(model, data, max_tokens=None)
    assert set(losses) == {"float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"}
    assert abs(losses["float16"] - losses["float32"]) < abs(losses["float8_e5m2"] - losses["float32"])


def test_unknown_format_and_weight_kinds_are_refused(model):
    with pytest.raises(ValueError, match="fmt must be one of"):
        FormatBackend("float4")
    from minillm.compress.recipe import apply_recipe

    cfg = minillm.GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=32)
    q = minillm.GPT(cfg, params=apply_recipe(minillm.GPT(cfg).params, "int8"))
    with pytest.raises(ValueError, match="dequantize"):
        q.forward([[1, 2]], backend=FormatBackend("bfloat16"))
