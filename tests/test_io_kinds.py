"""Compressed models (weight kinds) save and load back exactly; bad kind entries are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minillm
from minillm.compress.recipe import apply_recipe
from minillm.io import CheckpointError
from minillm.nn.gpt import GPT

CFG = minillm.GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.parametrize("recipe", ["int8", "q8_0", "q4_0", "int4-g32", "2:4", "lowrank:0.5", "prune:0.5+int8"])
def test_compressed_models_round_trip_exactly(tmp_path, recipe):
    model = GPT(CFG, params=apply_recipe(minillm.GPT(CFG, seed=0).params, recipe))
    minillm.save(model, tmp_path)
    back = minillm.load(tmp_path)
    assert list(back.params) == list(model.params)
    for name, w in model.params.items():
        assert type(back.params[name]) is type(w), name
    x = np.arange(20).reshape(2, 10) % CFG.vocab_size
    np.testing.assert_array_equal(back.forward(x), model.forward(x))
    assert back.nbytes == model.nbytes


def test_a_kind_entry_that_does_not_match_its_tensors_is_refused(tmp_path):
    model = GPT(CFG, params=apply_recipe(minillm.GPT(CFG, seed=0).params, "q8_0"))
    minillm.save(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["kinds"]["h.0.mlp.c_fc.weight"]["kind"] = "Q4_0"  # wrong class for the stored arrays
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="h.0.mlp.c_fc.weight"):
        minillm.load(tmp_path)
    meta["kinds"]["h.0.mlp.c_fc.weight"]["kind"] = "Pickle"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="kinds allowed"):
        minillm.load(tmp_path)


def test_the_tied_head_is_stored_as_a_nested_kind_and_checked(tmp_path):
    model = GPT(CFG, params=apply_recipe(minillm.GPT(CFG, seed=0).params, "q4_0"))
    minillm.save(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    spec = meta["kinds"]["wte.weight"]
    assert spec["kind"] == "TiedEmbedding" and spec["fields"]["head"]["kind"] == "Q4_0"
    back = minillm.load(tmp_path)
    np.testing.assert_array_equal(back.params["wte.weight"].dequantize(), model.params["wte.weight"].dequantize())
    for bad, match in ((dict(spec, fields={"head": {"kind": "Pickle"}}), "kinds allowed"),
                       (dict(spec, fields=[]), "must be JSON objects"),
                       (dict(spec, fields={}), "do not match its fields")):  # fmt: skip
        meta["kinds"]["wte.weight"] = bad
        (tmp_path / "config.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=match):
            minillm.load(tmp_path)
