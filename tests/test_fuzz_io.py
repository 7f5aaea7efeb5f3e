"""Fuzzing the checkpoint loaders with random and mutated files.

The contract under test: `minillm.load`, `minillm.load_gpt2` and `minillm.train.load_checkpoint`
raise only `CheckpointError` (a ValueError) or `FileNotFoundError`, whatever the bytes — never
another exception type, never a wrong model silently. "Not silently wrong" is checked with an oracle
for each kind of damage:

- a file changed behind `config.json`'s back (bytes flipped, truncated, inserted, deleted) must be
  refused: its SHA-256 no longer matches;
- a file changed *and re-hashed* (as a buggy writer would leave it) must be refused by the parser,
  or load exactly the numbers that the reference `safetensors` library reads from it;
- a changed `config.json` must be refused, or load a model whose config is what the file now says
  and whose weights are the original ones.

Example counts are bounded so the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm
from minillm.compress import lowrank as LR
from minillm.compress import prune as P
from minillm.compress import quantize as Q
from minillm.io import CheckpointError, read_safetensors, write_safetensors
from minillm.kinds import LowRank, as_dense, is_kind
from minillm.tokenizer import CharTokenizer
from minillm.train import TrainConfig, load_checkpoint, train

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the reference safetensors reader")

FUZZ = settings(max_examples=60, deadline=None)
ALLOWED = (CheckpointError, FileNotFoundError)

CFG = minillm.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)
TOK = CharTokenizer.from_text("abcdefghij klmnopqrs")  # 20 characters


class Files(dict):
    """name -> bytes, with a short repr (hypothesis prints a failing example's arguments)."""

    def __repr__(self) -> str:
        return f"<{len(self)} files>"


class Blob(bytes):
    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


def sha(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def attempt(call) -> Any:
    """The result of `call`, or the documented error it raised; any other exception fails the test."""
    try:
        return call()
    except ALLOWED as e:
        return e


def kinds_params() -> dict[str, Any]:
    """A params dict holding one of each weight kind that `save` stores."""
    p = dict(minillm.GPT(CFG, seed=0).params)
    p["h.0.attn.c_attn.weight"] = Q.quantize_weight(p["h.0.attn.c_attn.weight"], "int8")
    p["h.0.attn.c_proj.weight"] = Q.quantize_weight(p["h.0.attn.c_proj.weight"], "int4-g4")
    p["h.0.mlp.c_fc.weight"] = P.nm_sparse(p["h.0.mlp.c_fc.weight"], 2, 4)
    p["h.0.mlp.c_proj.weight"] = LowRank(*LR.svd_factorize(p["h.0.mlp.c_proj.weight"], 3))
    return p


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The files of two good checkpoints: dense (with a tokenizer) and compressed (weight kinds)."""
    out = {}
    for name, model in (("dense", minillm.GPT(CFG, seed=0, tokenizer=TOK)),
                        ("kinds", minillm.GPT(CFG, params=kinds_params()))):  # fmt: skip
        d = minillm.save(model, tmp_path_factory.mktemp(name))
        out[name] = Files({p.name: p.read_bytes() for p in d.iterdir()})
    return Files(out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def write_dir(directory: Path, files: dict[str, bytes | None]) -> Path:
    """Make `directory` hold exactly `files` (None: the file is absent)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, raw in files.items():
        if raw is not None:
            (directory / name).write_bytes(raw)
    return directory


def rehashed(files: dict[str, bytes], changed: str) -> dict[str, bytes]:
    """`files` with config.json recording the SHA-256 of the (changed) file `changed`."""
    meta = json.loads(files["config.json"])
    meta["files"][changed] = sha(files[changed])
    return {**files, "config.json": json.dumps(meta).encode()}


def header_end(raw: bytes) -> int:
    return 8 + struct.unpack("<Q", raw[:8])[0]


@st.composite
def byte_edits(draw, raw: bytes, hot: int) -> bytes:
    """One random change to `raw`: positions favour the first `hot` bytes (the header)."""
    n = len(raw)
    pos = draw(st.one_of(st.integers(0, min(hot, n) - 1), st.integers(0, n - 1)))
    how = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete", "append"]))
    b = bytearray(raw)
    if how == "flip":
        b[pos] ^= 1 << draw(st.integers(0, 7))
    elif how == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=16))
        b[pos : pos + len(chunk)] = chunk
    elif how == "truncate":
        del b[pos:]
    elif how == "insert":
        b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif how == "delete":
        del b[pos : pos + draw(st.integers(1, 16))]
    else:
        b += draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        type(a[k]) is type(b[k]) and np.array_equal(as_dense(a[k]), as_dense(b[k])) for k in a
    )


@pytest.fixture(scope="module")
def originals(base, tmp_path_factory) -> dict[str, minillm.GPT]:
    """The two good checkpoints, loaded."""
    return {which: minillm.load(write_dir(tmp_path_factory.mktemp("orig") / which, files))
            for which, files in base.items()}  # fmt: skip


# ------------------------------------------------------------------------------------------------
@FUZZ
@given(st.data())
def test_any_change_behind_the_configs_back_is_refused(base, originals, workdir, data):
    which = data.draw(st.sampled_from(sorted(base)))
    files = dict(base[which])
    name = data.draw(st.sampled_from(sorted(n for n in files if n != "config.json")))
    raw = files[name]
    files[name] = data.draw(byte_edits(raw, header_end(raw) if name.endswith(".safetensors") else 64))
    d = write_dir(workdir / "behind", files)
    got = attempt(lambda: minillm.load(d))
    if files[name] == raw:  # the edit happened to change nothing
        assert same_weights(got.params, originals[which].params)
    else:
        assert isinstance(got, CheckpointError) and name in str(got) and "SHA-256" in str(got)


@FUZZ
@given(st.data())
def test_a_rehashed_damaged_weights_file_is_refused_or_read_as_safetensors_reads_it(base, workdir, data):
    which = data.draw(st.sampled_from(sorted(base)))
    raw = base[which]["model.safetensors"]
    files = rehashed({**base[which], "model.safetensors": data.draw(byte_edits(raw, header_end(raw)))},
                     "model.safetensors")  # fmt: skip
    d = write_dir(workdir / "rehashed", files)
    got = attempt(lambda: minillm.load(d))
    if isinstance(got, Exception):
        assert str(d / "model.safetensors") in str(got)
        return
    # Accepted: every number must be the one the reference reader finds in the file.
    reference = safetensors_numpy.load_file(str(d / "model.safetensors"))
    for name, w in got.params.items():
        if is_kind(w):
            for field, value in vars(w).items():
                if isinstance(value, np.ndarray):
                    np.testing.assert_array_equal(value, reference[f"{name}::{field}"])
        else:
            np.testing.assert_array_equal(w, reference[name])
            assert np.isfinite(w).all()


HEADER_EDITS = ["dtype", "shape", "offsets", "drop", "add", "rename", "metadata", "not-an-object", "deep", "huge-int"]


@FUZZ
@given(st.data())
def test_an_altered_header_is_refused_naming_the_file(base, originals, workdir, data):
    which = data.draw(st.sampled_from(sorted(base)))
    raw = base[which]["model.safetensors"]
    end = header_end(raw)
    header = json.loads(raw[8:end])
    pristine = json.loads(raw[8:end])
    names = sorted(k for k in header if k != "__metadata__")
    name = data.draw(st.sampled_from(names))
    how = data.draw(st.sampled_from(HEADER_EDITS))
    entry = header[name]
    if how == "dtype":
        entry["dtype"] = data.draw(st.sampled_from(["F16", "F64", "I32", "U8", "BF16", "BOOL", "X9", 7, None]))
    elif how == "shape":
        entry["shape"] = data.draw(st.sampled_from([[], [0], entry["shape"][::-1], entry["shape"] + [1],
                                                    [s + 1 for s in entry["shape"]], [-1], ["8"], 3.0]))  # fmt: skip
    elif how == "offsets":
        a, b = entry["data_offsets"]
        entry["data_offsets"] = data.draw(st.sampled_from([[a, b + 4], [a + 4, b + 4], [b, a], [a], [a, "b"],
                                                           [-4, b - a - 4], None]))  # fmt: skip
    elif how == "drop":
        del header[name]
    elif how == "add":
        header["extra.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    elif how == "rename":
        header[name + "x"] = header.pop(name)
    elif how == "metadata":
        header["__metadata__"] = data.draw(st.sampled_from([{"format": 1}, [1], "x", {"a": None}]))
    text = json.dumps(header)
    if how == "not-an-object":
        text = data.draw(st.sampled_from(["[]", "1", '"x"', "null", "true"]))
    elif how == "deep":
        text = "[" * 100_000 + "]" * 100_000
    elif how == "huge-int":
        text = text.replace('"data_offsets": [', '"data_offsets": [' + "9" * 5000 + ", ", 1)
    new = text.encode() + b" " * (-len(text) % 8)
    files = rehashed({**base[which], "model.safetensors": struct.pack("<Q", len(new)) + new + raw[end:]},
                     "model.safetensors")  # fmt: skip
    d = write_dir(workdir / "header", files)
    got = attempt(lambda: minillm.load(d))
    if how in ("shape", "dtype", "offsets", "metadata") and header == pristine:  # e.g. a square shape reversed
        assert same_weights(got.params, originals[which].params)
        return
    assert isinstance(got, CheckpointError), f"{how} on {name!r} loaded"
    assert "model.safetensors" in str(got)


@FUZZ
@given(st.data())
def test_missing_extra_or_reshaped_tensors_are_named(base, workdir, data):
    tensors, _, _ = read_safetensors_bytes(base["dense"]["model.safetensors"], workdir)
    name = data.draw(st.sampled_from(sorted(tensors)))
    how = data.draw(st.sampled_from(["missing", "extra", "float64", "float16", "int32", "shape", "nan", "inf"]))
    t = dict(tensors)
    if how == "missing":
        del t[name]
    elif how == "extra":
        t[name + ".extra"] = np.zeros(3, np.float32)
    elif how in ("float64", "float16", "int32"):
        t[name] = t[name].astype(how)
    elif how == "shape":
        t[name] = t[name].reshape(-1)[1:] if t[name].size > 1 else np.zeros((1, 1), np.float32)
    else:
        t[name] = t[name].copy()
        t[name].reshape(-1)[data.draw(st.integers(0, t[name].size - 1))] = np.nan if how == "nan" else -np.inf
    write_safetensors(workdir / "t.safetensors", t)
    files = rehashed({**base["dense"], "model.safetensors": (workdir / "t.safetensors").read_bytes()},
                     "model.safetensors")  # fmt: skip
    d = write_dir(workdir / "tensors", files)
    got = attempt(lambda: minillm.load(d))
    assert isinstance(got, CheckpointError)
    named = name + ".extra" if how == "extra" else name
    assert "model.safetensors" in str(got) and named in str(got), str(got)


def read_safetensors_bytes(raw: bytes, workdir: Path):
    (workdir / "r.safetensors").write_bytes(raw)
    return read_safetensors(workdir / "r.safetensors")


json_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
                        st.text(max_size=8), st.lists(st.integers(0, 99), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))  # fmt: skip


@FUZZ
@given(st.data())
def test_a_mutated_config_json_is_refused_or_loaded_faithfully(base, originals, workdir, data):
    which = data.draw(st.sampled_from(sorted(base)))
    files = dict(base[which])
    meta = json.loads(files["config.json"])
    how = data.draw(st.sampled_from(["field", "drop-field", "extra-field", "top", "files", "kinds", "bytes"]))
    if how == "field":
        key = data.draw(st.sampled_from(sorted(meta["config"])))
        meta["config"][key] = data.draw(st.one_of(json_values, st.integers(0, 40)))
    elif how == "drop-field":
        del meta["config"][data.draw(st.sampled_from(sorted(meta["config"])))]
    elif how == "extra-field":
        meta["config"][data.draw(st.text(min_size=1, max_size=6))] = 1
    elif how == "top":
        meta[data.draw(st.sampled_from(["minillm_format_version", "config", "files", "kinds", "other"]))] = \
            data.draw(json_values)  # fmt: skip
    elif how == "files":
        meta["files"] = data.draw(st.sampled_from([{}, {"model.safetensors": 5}, {"../model.safetensors": "x"},
                                                   {**meta["files"], "other.bin": "sha256:0"}]))  # fmt: skip
    elif how == "kinds" and "kinds" in meta:
        name = data.draw(st.sampled_from(sorted(meta["kinds"])))
        spec = meta["kinds"][name]
        edit = data.draw(st.sampled_from(["kind", "attrs", "attr-value", "drop", "rename"]))
        if edit == "kind":
            spec["kind"] = data.draw(st.sampled_from(["Int8PerChannel", "IntPerGroup", "Q8_0", "Q4_0", "LowRank",
                                                      "NMSparse", "Masked", "GPT", "__class__", 3]))  # fmt: skip
        elif edit == "attrs":
            spec["attrs"] = data.draw(json_values)
        elif edit == "attr-value" and spec["attrs"]:
            spec["attrs"][data.draw(st.sampled_from(sorted(spec["attrs"])))] = data.draw(json_values)
        elif edit == "drop":
            del meta["kinds"][name]
        else:
            meta["kinds"]["wte.weight"] = meta["kinds"].pop(name)
    text = json.dumps(meta).encode()
    if how == "bytes":
        text = data.draw(byte_edits(files["config.json"], 512))
    files["config.json"] = text
    d = write_dir(workdir / "config", files)
    got = attempt(lambda: minillm.load(d))
    if isinstance(got, Exception):
        assert str(d) in str(got)
        return
    # Accepted: the config is what the file says, and the weights are the original ones.
    assert got.config == minillm.GPTConfig.from_dict(json.loads(text)["config"])
    assert same_weights(got.params, originals[which].params)


@FUZZ
@given(st.data())
def test_random_files_in_place_of_a_checkpoint(base, originals, workdir, data):
    which = data.draw(st.sampled_from(sorted(base)))
    files: dict[str, bytes | None] = dict(base[which])
    name = data.draw(st.sampled_from(sorted(files) + ["tokenizer.json"]))
    junk = data.draw(st.one_of(st.binary(max_size=200), st.none(),
                               st.sampled_from([b"", b"{}", b"[]", b"\x00" * 8, struct.pack("<Q", 2**63) + b"{}",
                                                struct.pack("<Q", 2) + b"{}", b"{" * 10_000])))  # fmt: skip
    files[name] = junk
    if name != "config.json" and junk is not None and data.draw(st.booleans()):
        files = rehashed(files, name)  # type: ignore[arg-type]
    d = write_dir(workdir / "random", files)
    got = attempt(lambda: minillm.load(d))
    if not isinstance(got, Exception):  # only possible if the junk was not read at all
        assert name == "tokenizer.json" and which == "kinds"  # a stray file config.json does not list
        assert same_weights(got.params, originals[which].params)


def test_a_directory_in_place_of_a_file_and_missing_paths(base, workdir):
    d = write_dir(workdir / "dirs", base["dense"])
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()
    assert isinstance(attempt(lambda: minillm.load(d)), CheckpointError)
    assert isinstance(attempt(lambda: minillm.load(workdir / "nowhere")), FileNotFoundError)
    assert isinstance(attempt(lambda: minillm.load_gpt2(workdir / "nowhere")), FileNotFoundError)
    assert isinstance(attempt(lambda: load_checkpoint(workdir / "nowhere.safetensors")), FileNotFoundError)


# ------------------------------------------------------------------------------------------------
# Hugging Face directories: no hashes in that format, so damage must be caught by the parser,
# or the numbers read must be those the reference reader finds.
@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> dict[str, bytes]:
    d = minillm.save_gpt2(minillm.GPT(CFG, seed=0, tokenizer=TOK), tmp_path_factory.mktemp("hf"))
    return Files({p.name: p.read_bytes() for p in d.iterdir()})


@FUZZ
@given(st.data())
def test_load_gpt2_refuses_or_reads_what_safetensors_reads(gpt2_files, workdir, data):
    files = dict(gpt2_files)
    name = data.draw(st.sampled_from(sorted(files)))
    raw = files[name]
    files[name] = data.draw(byte_edits(raw, header_end(raw) if name.endswith(".safetensors") else 256))
    d = write_dir(workdir / "hf", files)
    got = attempt(lambda: minillm.load_gpt2(d))
    if isinstance(got, Exception) or name != "model.safetensors":
        return
    reference = safetensors_numpy.load_file(str(d / "model.safetensors"))
    for k, w in got.params.items():
        np.testing.assert_array_equal(w, reference["transformer." + k])


# ------------------------------------------------------------------------------------------------
# Training checkpoints: every damaged byte is caught (the tensors' SHA-256 is in the metadata).
@pytest.fixture(scope="module")
def train_state(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("train") / "state.safetensors"
    data = np.random.default_rng(0).integers(0, CFG.vocab_size, 100)
    tc = TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=2, eval_batches=1, ckpt_every=2)
    train(minillm.GPT(CFG, seed=0), data, None, tc, checkpoint=path, progress=False)
    return Blob(path.read_bytes())


@FUZZ
@given(st.data())
def test_a_damaged_training_checkpoint_is_refused(train_state, workdir, data):
    raw = train_state
    new = data.draw(byte_edits(raw, header_end(raw)))
    path = workdir / "state.safetensors"
    path.write_bytes(new)
    got = attempt(lambda: load_checkpoint(path))
    if new == raw:
        assert not isinstance(got, Exception)
    else:
        assert isinstance(got, CheckpointError) and str(path) in str(got), got


@FUZZ
@given(st.sampled_from(["step", "adam_t", "rng", "model_config", "train_config", "history", "ema", "extra",
                        "sha256"]), json_values, st.booleans(), st.booleans())  # fmt: skip
def test_damaged_training_metadata_is_refused(train_state, workdir, field, value, as_json, drop_hash):
    raw = train_state
    end = header_end(raw)
    header = json.loads(raw[8:end])
    meta = header["__metadata__"]
    before = dict(meta)
    meta[field] = json.dumps(value) if as_json else str(value)
    if drop_hash and field != "sha256":  # an old checkpoint without the hash: every field still checked
        del meta["sha256"]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = workdir / "meta.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[end:])
    got = attempt(lambda: load_checkpoint(path))
    if isinstance(got, Exception):
        assert str(path) in str(got)
    else:  # accepted: the hash was dropped and the new value is valid, or nothing changed
        assert (drop_hash and field != "sha256") or meta == before
