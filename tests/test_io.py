"""Checkpoint files: round trips, atomic saves, clear errors on bad files, never pickle."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import minillm
from minillm import io as mio
from minillm.io import CheckpointError, read_safetensors, write_safetensors
from minillm.tokenizer import CharTokenizer, GPT2Tokenizer

CFG = minillm.GPTConfig.preset("tiny")  # V=64, T=32, L=2, H=2, C=16
IDX = np.array([[1, 5, 9, 2, 63, 0, 7], [3, 3, 3, 60, 61, 62, 4]])


def make_model(seed: int = 0, tokenizer=None, config=CFG) -> minillm.GPT:
    model = minillm.GPT(config, seed=seed, tokenizer=tokenizer)
    rng = np.random.default_rng(seed + 100)
    for w in model.params.values():  # LayerNorm gains 1 and biases 0 would hide a swap
        w += rng.normal(0.0, 0.1, w.shape).astype(np.float32)
    return model


def assert_same_model(a: minillm.GPT, b: minillm.GPT) -> None:
    assert a.config == b.config
    assert list(a.params) == list(b.params)
    for name in a.params:
        assert b.params[name].dtype == np.float32, name
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
    np.testing.assert_array_equal(a.forward(IDX), b.forward(IDX))


def rehash(directory: Path) -> None:
    """Make config.json agree with the files again (as if another tool wrote them)."""
    meta = json.loads((directory / "config.json").read_text())
    for name in meta["files"]:
        digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        meta["files"][name] = "sha256:" + digest
    (directory / "config.json").write_text(json.dumps(meta))


def raw_safetensors(entries: dict[str, tuple[str, list[int], bytes]], metadata=None) -> bytes:
    """A safetensors file built by hand from (dtype, shape, bytes), independent of minillm.io."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.fixture
def bpe() -> GPT2Tokenizer:
    return GPT2Tokenizer.train("the cat sat on the mat, café 日本 🙂 " * 4, 20)


# ------------------------------------------------------------------------------------------
# Round trips
@pytest.mark.parametrize("kind", [None, "char", "bpe"])
def test_save_load_round_trip(tmp_path, kind, bpe):
    model = make_model(0, CharTokenizer.from_text("abc é日\n") if kind == "char" else None)
    if kind == "bpe":
        model = make_model(0, bpe, CFG.preset("tiny", vocab_size=bpe.vocab_size))
    out = minillm.save(model, tmp_path / "ckpt")
    names = ["config.json", "model.safetensors"] + (["tokenizer.json"] if kind else [])
    assert sorted(p.name for p in out.iterdir()) == names
    back = minillm.load(tmp_path / "ckpt")
    assert_same_model(model, back)
    assert back.tokenizer == model.tokenizer and type(back.tokenizer) is type(model.tokenizer)
    meta = json.loads((out / "config.json").read_text())
    assert meta["minillm_format_version"] == 1 and meta["config"] == model.config.to_dict()


def test_load_accepts_str_path_and_save_overwrites(tmp_path):
    minillm.save(make_model(0, CharTokenizer("ab")), tmp_path)
    minillm.save(make_model(1), str(tmp_path))  # no tokenizer now: the old one is removed
    assert not (tmp_path / "tokenizer.json").exists()
    back = minillm.load(str(tmp_path))
    assert back.tokenizer is None
    assert_same_model(make_model(1), back)


def test_float64_params_are_saved_as_float32(tmp_path):
    model = make_model()
    model64 = minillm.GPT(CFG, params={k: v.astype(np.float64) for k, v in model.params.items()})
    minillm.save(model64, tmp_path)
    assert_same_model(model, minillm.load(tmp_path))


def test_safetensors_files_agree_with_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is the oracle")
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "f64": rng.normal(size=(2,)),
        "f16": rng.normal(size=(4, 1, 2)).astype(np.float16),
        "i64": np.arange(-3, 3),
        "u8": np.arange(7, dtype=np.uint8),
        "b": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5, np.float32),
    }
    write_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "np"})
    theirs = st.load_file(tmp_path / "ours.safetensors")
    assert list(theirs) == sorted(tensors) or set(theirs) == set(tensors)
    for k, v in tensors.items():
        assert theirs[k].dtype == v.dtype and theirs[k].shape == v.shape, k
        np.testing.assert_array_equal(theirs[k], v)
    st.save_file(tensors, tmp_path / "theirs.safetensors", metadata={"who": "them"})
    back, dtypes, meta = read_safetensors(tmp_path / "theirs.safetensors")
    assert meta == {"who": "them"} and dtypes["f16"] == "F16" and dtypes["b"] == "BOOL"
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype, k
        np.testing.assert_array_equal(back[k], v)


def test_bf16_is_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3, 65280.0], np.float32)
    words = (values.view(np.uint32) >> 16).astype("<u2")  # bf16 = the top 16 bits
    expected = (words.astype(np.uint32) << 16).view(np.float32)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(raw_safetensors({"x": ("BF16", [5], words.tobytes())}))
    tensors, dtypes, _ = read_safetensors(path)
    assert dtypes == {"x": "BF16"} and tensors["x"].dtype == np.float32
    np.testing.assert_array_equal(tensors["x"], expected)
    assert tensors["x"][2] == 3.140625 and tensors["x"][0] == 1.0


# ------------------------------------------------------------------------------------------
# Atomic saves
def test_failure_while_writing_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    old = make_model(0, CharTokenizer("xyz"))
    minillm.save(old, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    calls = {"n": 0}
    real = mio._tensor_bytes

    def failing(a):  # the disk fills up while the third tensor is written
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(a)

    monkeypatch.setattr(mio, "_tensor_bytes", failing)
    with pytest.raises(OSError, match="No space left"):
        minillm.save(make_model(1, CharTokenizer("q")), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files either
    back = minillm.load(tmp_path)
    assert_same_model(old, back)
    assert back.tokenizer == CharTokenizer("xyz")


def test_interrupt_while_writing_config_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    old = make_model(0)
    minillm.save(old, tmp_path)
    real = mio._json_bytes

    def interrupted(obj):
        yield b'{"minillm_format'
        raise KeyboardInterrupt

    monkeypatch.setattr(mio, "_json_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        minillm.save(make_model(1), tmp_path)
    monkeypatch.setattr(mio, "_json_bytes", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_model(old, minillm.load(tmp_path))


def test_crash_between_renames_is_detected(tmp_path, monkeypatch):
    minillm.save(make_model(0), tmp_path)
    real = os.replace
    done = []

    def crash_after_first(src, dst):
        if done:
            raise OSError("power cut")
        done.append(dst)
        real(src, dst)

    monkeypatch.setattr(mio.os, "replace", crash_after_first)
    with pytest.raises(OSError, match="power cut"):
        minillm.save(make_model(1), tmp_path)
    monkeypatch.setattr(mio.os, "replace", real)
    # New weights beside the old config.json: the recorded hash catches the mixture.
    assert [Path(d).name for d in done] == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(CheckpointError, match=r"model.safetensors: its SHA-256 differs"):
        minillm.load(tmp_path)


# ------------------------------------------------------------------------------------------
# Bad files
@pytest.fixture
def ckpt(tmp_path) -> Path:
    minillm.save(make_model(0, CharTokenizer.from_text("hello")), tmp_path)
    return tmp_path


def rewrite_weights(directory: Path, change) -> None:
    tensors, _, _ = read_safetensors(directory / "model.safetensors")
    change(tensors)
    write_safetensors(directory / "model.safetensors", tensors)
    rehash(directory)


def test_modified_file_is_detected(ckpt):
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0x40
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: its SHA-256 differs"):
        minillm.load(ckpt)


def test_truncated_weights_name_file_and_tensor(ckpt):
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'ln_f.bias': truncated"):
        minillm.load(ckpt)
    path.write_bytes(path.read_bytes()[:100])
    rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated: the header needs"):
        minillm.load(ckpt)
    path.write_bytes(b"\x01\x02")
    rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"truncated: 2 bytes"):
        minillm.load(ckpt)


@pytest.mark.parametrize(
    "raw, match",
    [
        (struct.pack("<Q", 4) + b"{]  ", "the header is not UTF-8 JSON"),
        (struct.pack("<Q", 2**40) + b"{}", "header length 1099511627776 is over"),
        (
            raw_safetensors({"x": ("F32", [3], b"\0" * 8)}),
            r"tensor 'x': corrupt: F32 \(3,\) needs 12 bytes",
        ),
        (raw_safetensors({"x": ("Q4", [2], b"\0" * 2)}), r"tensor 'x': unknown dtype 'Q4'"),
        (raw_safetensors({"x": ("F32", [-1], b"")}), r"tensor 'x': corrupt shape \[-1\]"),
        (
            raw_safetensors({"x": ("F32", [1], b"\0" * 4)}) + b"junk",
            "4 bytes after the last tensor",
        ),
        (
            raw_safetensors({"x": ("F32", [1], b"\0" * 4)}, metadata={"a": 1}),
            "__metadata__ must map",
        ),
    ],
)
def test_corrupt_safetensors(tmp_path, raw, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=match) as e:
        read_safetensors(path)
    assert "bad.safetensors" in str(e.value)


def test_overlapping_and_holey_data_are_corrupt(tmp_path):
    header = {
        "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
        "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
    }
    h = json.dumps(header).encode()
    (tmp_path / "o.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"xyz")
    with pytest.raises(CheckpointError, match="tensor 'b': corrupt: its data overlaps"):
        read_safetensors(tmp_path / "o.safetensors")
    header["b"]["data_offsets"] = [3, 5]
    h = json.dumps(header).encode()
    (tmp_path / "h.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"xyzzy")
    with pytest.raises(CheckpointError, match=r"tensor 'b': corrupt: its data leaves a hole at bytes 2..3"):
        read_safetensors(tmp_path / "h.safetensors")


def test_missing_tensor_is_named(ckpt):
    rewrite_weights(ckpt, lambda t: t.pop("h.1.mlp.c_fc.bias"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: missing tensor\(s\) \['h.1.mlp.c_fc.bias'\]"):
        minillm.load(ckpt)


def test_extra_tensor_is_named(ckpt):
    rewrite_weights(ckpt, lambda t: t.update({"h.2.ln_1.weight": np.ones(16, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['h.2.ln_1.weight'\]"):
        minillm.load(ckpt)


def test_wrong_shape_names_tensor_and_config(ckpt):
    rewrite_weights(ckpt, lambda t: t.update({"h.0.attn.c_attn.weight": np.zeros((48, 16), np.float32)}))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'h.0.attn.c_attn.weight' has shape \(48, 16\).*implies \(16, 48\)",
    ):
        minillm.load(ckpt)


def test_config_that_does_not_match_the_tensors(ckpt):
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["n_embd"] = 32
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'wte.weight' has shape \(64, 16\), but .*config.json.*implies \(64, 32\)",
    ):
        minillm.load(ckpt)


def test_wrong_dtype_is_named(ckpt):
    rewrite_weights(ckpt, lambda t: t.update({"ln_f.weight": t["ln_f.weight"].astype(np.float64)}))
    with pytest.raises(CheckpointError, match=r"tensor 'ln_f.weight' is stored as F64; allowed: \['F32'\]"):
        minillm.load(ckpt)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_named(ckpt, bad):
    def poison(t):
        t["h.1.attn.c_proj.weight"][3, 7] = bad

    rewrite_weights(ckpt, poison)
    with pytest.raises(CheckpointError, match=r"tensor 'h.1.attn.c_proj.weight' holds 1 non-finite.*index \(3, 7\)"):
        minillm.load(ckpt)


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda m: m["config"].update(n_head=3),
            r"config.json: bad config: .*divisible by n_head=3",
        ),
        (
            lambda m: m["config"].update(dropout=0.1),
            r"config.json: bad config: .*unknown fields \['dropout'\]",
        ),
        (lambda m: m.update(minillm_format_version=7), "minillm_format_version 7 is not supported"),
        (lambda m: m.pop("minillm_format_version"), "not a minillm checkpoint config"),
        (lambda m: m["files"].pop("model.safetensors"), "'files' must list model.safetensors"),
    ],
)
def test_bad_config_json(ckpt, edit, match):
    meta = json.loads((ckpt / "config.json").read_text())
    edit(meta)
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=match):
        minillm.load(ckpt)


def test_missing_and_corrupt_json_files(ckpt):
    (ckpt / "tokenizer.json").write_text('{"format_version": 1, "type": "char", "chars": ["a", "a"]}')
    rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"tokenizer.json: bad tokenizer: chars must be distinct"):
        minillm.load(ckpt)
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer.json: missing, but config.json lists it"):
        minillm.load(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: corrupt: not UTF-8 JSON"):
        minillm.load(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json: missing"):
        minillm.load(ckpt)


def test_tokenizer_bigger_than_the_model_is_refused(ckpt):
    tok = CharTokenizer([chr(0x100 + k) for k in range(65)])  # 65 ids > vocab_size 64
    (ckpt / "tokenizer.json").write_text(json.dumps({"format_version": 1, **tok.to_dict()}))
    rehash(ckpt)
    with pytest.raises(CheckpointError, match="tokenizer has 65 ids but the model's vocab_size is 64"):
        minillm.load(ckpt)


def test_hf_directory_given_to_load_gets_a_hint(tmp_path):
    minillm.save_gpt2(make_model(), tmp_path)
    with pytest.raises(CheckpointError, match="use minillm.load_gpt2"):
        minillm.load(tmp_path)


# ------------------------------------------------------------------------------------------
# What save refuses
class FakeQuantized:
    shape = (16, 48)
    nbytes = 16 * 48


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda p: p.update({"h.0.attn.c_attn.weight": FakeQuantized()}), TypeError,
         r"params\['h.0.attn.c_attn.weight'\] is a FakeQuantized, not a numpy array.*dequantize"),
        (lambda p: p["h.0.ln_1.bias"].__setitem__(2, np.nan), ValueError,
         r"params\['h.0.ln_1.bias'\] holds 1 non-finite"),
        (lambda p: p.update({"wpe.weight": p["wpe.weight"].astype(np.int32)}), TypeError,
         r"params\['wpe.weight'\] has dtype int32; allowed: a float dtype"),
        (lambda p: p.update({"wpe.weight": p["wpe.weight"][:-1]}), ValueError,
         r"params\['wpe.weight'\] has shape \(31, 16\), the config implies \(32, 16\)"),
        (lambda p: p.pop("ln_f.bias"), ValueError, r"missing \['ln_f.bias'\]"),
    ],
)  # fmt: skip
def test_save_validates_params(tmp_path, change, error, match):
    model = make_model()
    change(model.params)
    with pytest.raises(error, match=match):
        minillm.save(model, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()


def test_save_validates_path_and_model(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        minillm.save(make_model(), tmp_path / "file")
    with pytest.raises(TypeError, match="path must be a str or path-like, got int"):
        minillm.save(make_model(), 3)
    with pytest.raises(TypeError, match="model must be a minillm GPT"):
        minillm.save(object(), tmp_path / "x")


# ------------------------------------------------------------------------------------------
# Shipped names
def test_missing_shipped_model_lists_names(tmp_path, monkeypatch):
    monkeypatch.setattr(mio, "WEIGHTS_DIR", tmp_path)
    minillm.save(make_model(), tmp_path / "student-scratch")
    with pytest.raises(
        FileNotFoundError,
        match=r"'teacher' is not in this installation.*present: \['student-scratch'\]",
    ):
        minillm.load("teacher")
    assert_same_model(make_model(), minillm.load("student-scratch"))


def test_shipped_models_load_when_present():
    for name in mio.SHIPPED_MODELS:
        if (mio.WEIGHTS_DIR / name / "config.json").is_file():
            model = minillm.load(name)
            assert model.tokenizer is not None, name


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint directory .*nope.*one of \['teacher'"):
        minillm.load(str(tmp_path / "nope"))
    with pytest.raises(TypeError, match="path_or_name must be a directory path or one of"):
        minillm.load(42)


# ------------------------------------------------------------------------------------------
# Never pickle
def test_io_module_does_not_import_pickle_or_torch():
    tree = ast.parse(Path(mio.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"pickle", "torch", "dill", "joblib", "cloudpickle", "_pickle"}


def test_loading_never_unpickles(tmp_path, monkeypatch, bpe):
    minillm.save(make_model(0, CharTokenizer("ab")), tmp_path / "a")
    model = minillm.GPT(minillm.GPTConfig.preset("tiny", vocab_size=bpe.vocab_size), tokenizer=bpe)
    minillm.save_gpt2(model, tmp_path / "b")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    assert_same_model(make_model(0), minillm.load(tmp_path / "a"))
    assert minillm.load_gpt2(tmp_path / "b").tokenizer == bpe


def test_pickle_only_directory_is_refused(tmp_path):
    minillm.save_gpt2(make_model(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(CheckpointError, match=r"holds only \['pytorch_model.bin'\].*never unpickles"):
        minillm.load_gpt2(tmp_path)


# ------------------------------------------------------------------------------------------
# Hugging Face GPT-2 directories (without transformers; tests/test_hf_reference.py uses it)
def test_save_gpt2_layout_and_round_trip(tmp_path, bpe):
    model = make_model()
    minillm.save_gpt2(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (
        cfg["n_embd"],
        cfg["n_layer"],
        cfg["n_head"],
        cfg["n_positions"],
        cfg["vocab_size"],
    ) == (16, 2, 2, 32, 64)
    tensors, dtypes, meta = read_safetensors(tmp_path / "model.safetensors")
    assert meta == {"format": "pt"} and set(dtypes.values()) == {"F32"}
    assert list(tensors) == ["transformer." + n for n in model.params]  # no lm_head: it is tied
    assert_same_model(model, minillm.load_gpt2(tmp_path))


def test_save_gpt2_tokenizers(tmp_path, bpe):
    model = minillm.GPT(minillm.GPTConfig.preset("tiny", vocab_size=bpe.vocab_size), tokenizer=bpe)
    minillm.save_gpt2(model, tmp_path)
    assert GPT2Tokenizer.from_directory(tmp_path) == bpe
    eot = bpe.encoder["<|endoftext|>"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == eot
    assert minillm.load_gpt2(tmp_path).tokenizer == bpe
    # A char tokenizer has no HF format: it goes to minillm_tokenizer.json, the BPE files go.
    char = CharTokenizer("abc")
    (tmp_path / "tokenizer.json").write_text("{}")  # as if from an earlier save_pretrained
    minillm.save_gpt2(make_model(0, char), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "minillm_tokenizer.json", "model.safetensors"]
    assert minillm.load_gpt2(tmp_path).tokenizer == char
    minillm.save_gpt2(make_model(0), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def hf_tokenizer_json(tok: GPT2Tokenizer, **changes) -> dict:
    """The parts of a Hugging Face tokenizer.json (as transformers 5 writes it) that matter here."""
    eot = tok.encoder["<|endoftext|>"]
    d = {
        "version": "1.0",
        "added_tokens": [{"id": eot, "content": "<|endoftext|>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "model": {
            "type": "BPE",
            "dropout": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "vocab": {t: i for t, i in tok.encoder.items() if i != eot},
            "merges": [list(m) for m in tok.merges],
        },
    }
    for key, value in changes.items():
        d["model" if key in d["model"] else "pre_tokenizer"][key] = value
    return d


def test_load_gpt2_reads_hf_tokenizer_json(tmp_path, bpe):
    model = make_model(0, None, CFG.preset("tiny", vocab_size=bpe.vocab_size))
    minillm.save_gpt2(model, tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps(hf_tokenizer_json(bpe)), encoding="utf-8")
    assert minillm.load_gpt2(tmp_path).tokenizer == bpe
    # Older files write each merge as one "a b" string.
    d = hf_tokenizer_json(bpe)
    d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(d), encoding="utf-8")
    assert minillm.load_gpt2(tmp_path).tokenizer == bpe
    # Not GPT-2's tokenizer: the weights load, without a tokenizer, and a warning says why.
    (tmp_path / "tokenizer.json").write_text(json.dumps(hf_tokenizer_json(bpe, add_prefix_space=True)))
    with pytest.warns(UserWarning, match="add_prefix_space"):
        assert minillm.load_gpt2(tmp_path).tokenizer is None


def test_load_gpt2_variants(tmp_path):
    """Unprefixed names, a tied lm_head, mask buffers, F16 weights, an n_ctx-only config."""
    model = make_model()
    entries = {}
    for name, w in model.params.items():
        entries[name] = ("F16", list(w.shape), w.astype("<f2").tobytes())
    wte = model.params["wte.weight"].astype("<f2")
    entries["lm_head.weight"] = ("F16", list(wte.shape), wte.tobytes())
    for i in range(CFG.n_layer):
        entries[f"h.{i}.attn.bias"] = (
            "U8",
            [1, 1, 4, 4],
            np.tril(np.ones((4, 4), np.uint8)).tobytes(),
        )
        entries[f"h.{i}.attn.masked_bias"] = ("F32", [], np.float32(-1e4).tobytes())
    (tmp_path / "model.safetensors").write_bytes(raw_safetensors(entries, {"format": "pt"}))
    (tmp_path / "config.json").write_text(
        json.dumps({"n_embd": 16, "n_layer": 2, "n_head": 2, "n_ctx": 32, "vocab_size": 64})
    )
    back = minillm.load_gpt2(tmp_path)
    assert back.config == CFG and back.tokenizer is None
    for name, w in model.params.items():
        np.testing.assert_array_equal(back.params[name], w.astype(np.float16).astype(np.float32))

    # An lm_head that differs from wte is an untied model: refused.
    entries["lm_head.weight"] = ("F16", list(wte.shape), (wte + np.float16(1)).tobytes())
    (tmp_path / "model.safetensors").write_bytes(raw_safetensors(entries))
    with pytest.raises(CheckpointError, match="'lm_head.weight' differs from 'wte.weight'"):
        minillm.load_gpt2(tmp_path)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"activation_function": "relu"},
            r"activation_function='relu' is not supported.*'gelu_new'",
        ),
        ({"n_inner": 20}, r"n_inner=20 is not supported"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings=False"),
        ({"model_type": "llama"}, "model_type 'llama' is not supported"),
        ({"n_head": 3}, r"config.json: .*divisible by n_head=3"),
    ],
)
def test_load_gpt2_refuses_unsupported_configs(tmp_path, change, match):
    minillm.save_gpt2(make_model(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        minillm.load_gpt2(tmp_path)


def test_load_gpt2_errors(tmp_path):
    minillm.save_gpt2(make_model(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["n_embd"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing GPT-2 config field\(s\) \['n_embd'\]"):
        minillm.load_gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    minillm.save_gpt2(make_model(), tmp_path / "sub")
    (tmp_path / "sub" / "model.safetensors").unlink()
    (tmp_path / "sub" / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded safetensors checkpoints are not supported"):
        minillm.load_gpt2(tmp_path / "sub")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        minillm.load_gpt2(tmp_path / "nope")
