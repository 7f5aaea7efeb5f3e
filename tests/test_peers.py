"""The speed peers the bench suite times in the same run: the scripts they run and the glue."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from minillm import bench, docgen
from minillm.config import GPTConfig

FAKE_LLAMA_CPP = '''
import json, os
import numpy as np
__version__ = "fake"
LOG = os.environ["FAKE_LLAMA_LOG"]

class Llama:
    def __init__(self, model_path, n_ctx, n_batch, n_threads, n_threads_batch, flash_attn, verbose):
        self.n_tokens, self.scores = 0, np.zeros((n_ctx, 50), np.float32)
        self.log("init", model_path, n_threads, flash_attn)

    def log(self, *event):
        with open(LOG, "a") as f:
            f.write(json.dumps(event) + "\\n")

    def reset(self):
        self.n_tokens = 0
        self.log("reset")

    def eval(self, tokens):
        self.log("eval", tokens)
        for t in tokens:  # the next token is always this one + 1: a chain the script must follow
            self.scores[self.n_tokens] = 0.0
            self.scores[self.n_tokens, (t + 1) % 50] = 1.0
            self.n_tokens += 1
'''


def test_llamacpp_decode_script_runs_prompt_then_greedy_steps(tmp_path, monkeypatch):
    """The timing script in a stand-in `llama_cpp`: a warm-up and `repeat` runs, each from an
    empty cache (reset), the prompt in one eval, then new - 1 single-token evals, each feeding
    back the argmax of the last logits — the work `bench_decode` times for our backends."""
    (tmp_path / "llama_cpp.py").write_text(FAKE_LLAMA_CPP)
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("FAKE_LLAMA_LOG", str(log))
    res = bench.llamacpp_decode_tok_s(sys.executable, "model.gguf", prompt_tokens=5, new_tokens=4, repeat=2)
    assert res["llama_cpp"] == "fake" and res["decode_tok_s"] > 0 and res["prefill_tok_s"] > 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0] == ["init", "model.gguf", 2, True]  # two threads, its faster attention
    one_run = [["reset"], ["eval", [2, 3, 4, 5, 6]], ["eval", [7]], ["eval", [8]], ["eval", [9]]]
    assert events[1:] == one_run * 3  # warm-up + 2 timed runs
    with pytest.raises(ValueError, match="repeat"):
        bench.llamacpp_decode_tok_s(sys.executable, "model.gguf", repeat=0)


def test_a_failing_peer_reports_its_error():
    with pytest.raises(RuntimeError, match=r"(?s)exit 3.*no llama here"):
        bench._run_peer(sys.executable, "import sys; sys.stderr.write('no llama here'); sys.exit(3)")
    with pytest.raises(ValueError, match="peer formats"):
        bench.llamacpp_gguf(sys.executable, "int8", ".")


def test_llamacpp_gguf_has_gguf_gpt2_layout(tmp_path):
    """The peer's model file, written by `gguf` and read back by it: GGUF's "gpt2" tensor names
    and shapes for the config, matrices in the asked type (Q4_0 / Q8_0 blocks of 32), vectors
    in float32, and no separate output matrix (the head is tied to the token embedding)."""
    gguf = pytest.importorskip("gguf", reason="the GGUF files are written by llama.cpp's gguf package")
    cfg = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=64)
    C = cfg.n_embd
    matrices = {"token_embd.weight": (cfg.vocab_size, C)}
    vectors = {"output_norm.weight": C, "output_norm.bias": C}
    for i in range(cfg.n_layer):
        for name, rows, cols in (("attn_qkv", 3 * C, C), ("attn_output", C, C), ("ffn_up", 4 * C, C),
                                 ("ffn_down", C, 4 * C)):  # fmt: skip
            matrices[f"blk.{i}.{name}.weight"] = (rows, cols)
            vectors[f"blk.{i}.{name}.bias"] = rows
        for norm in ("attn_norm", "ffn_norm"):
            vectors |= {f"blk.{i}.{norm}.weight": C, f"blk.{i}.{norm}.bias": C}
    for weights, kind in bench.LLAMACPP_FORMATS.items():
        reader = gguf.GGUFReader(bench.llamacpp_gguf(sys.executable, weights, tmp_path, cfg))
        arch = reader.fields["general.architecture"]
        assert bytes(arch.parts[arch.data[0]]).decode() == "gpt2"
        tensors = {t.name: t for t in reader.tensors}
        assert set(tensors) == set(matrices) | set(vectors) | {"position_embd.weight"}
        for name, (rows, cols) in matrices.items():
            t = tensors[name]
            assert t.tensor_type.name == kind and tuple(int(n) for n in t.shape) == (cols, rows)  # GGUF: fastest first
            w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rows, cols)
            assert 0.015 < float(np.std(w)) < 0.025  # the N(0, 0.02) weights, through the format
        for name, n in vectors.items():
            assert tensors[name].tensor_type.name == "F32" and tensors[name].data.shape == (n,)
        assert tensors["position_embd.weight"].data.shape == (cfg.block_size, C)


def test_bench_suite_times_llamacpp_after_numbas_entry_with_its_own_limit(fake_suite, monkeypatch, tmp_path):
    """Each llama.cpp format runs right after Numba's entry of the same format, with the
    bandwidth measured just before it; its bytes per token are ours less half the KV cache
    (float16 there), and the ratios numba / llama.cpp are per round."""
    probes = fake_suite
    written = []
    monkeypatch.setattr(bench, "check_peer", lambda python, peer: written.append((python, peer)))
    monkeypatch.setattr(bench, "llamacpp_gguf", lambda py, w, d: written.append(w) or tmp_path / f"{w}.gguf")
    monkeypatch.setattr(bench, "llamacpp_decode_tok_s",
                        lambda py, path, p, n, repeat: {"decode_tok_s": 50.0 + len(probes), "prefill_tok_s": 9.0,
                                                        "llama_cpp": "0.x"})  # fmt: skip
    res = bench.bench_suite(rounds=2, kv_cache=False, progress=False, llamacpp_python="peer-python")
    assert written == [("peer-python", "llama.cpp"), "fp32", "q8_0", "q4_0"]
    entries = [e["entry"] for e in res["timeline"]]
    for w in ("fp32", "q8_0", "q4_0"):
        i = entries.index(f"gpt2/numba/{w}")
        assert entries[i + 1] == f"gpt2/llama.cpp/{w}"
    per_round = len(bench.SUITE) + 3
    assert len(entries) == 2 * per_round
    rows = {(r["backend"], r["weights"]): r for r in res["decode"]}
    q4 = rows["llama.cpp", "q4_0"]
    k = entries.index("gpt2/llama.cpp/q4_0")  # its limits: the probe figures k+1 and per_round+k+1
    assert q4["bandwidth_gb_s"] == [10 * (k + 1), 10 * (per_round + k + 1)]
    assert q4["decode_tok_s"] == [50.0 + k + 1, 50.0 + per_round + k + 1]
    cache = 2 * 12 * 32 * 768 * 4  # GPT-2: keys and values of 12 layers at 32 positions, float32
    assert q4["bytes_per_token"] == 10**9 - cache // 2 and q4["peer"] and q4["llama_cpp"] == "0.x"
    gb_s = [round((10**9 - cache // 2) * t / 1e9, 2) for t in q4["decode_tok_s"]]
    fracs = [round(g / b, 3) for g, b in zip(gb_s, q4["bandwidth_gb_s"], strict=True)]
    assert q4["roofline_frac"] == float(np.median(fracs))
    assert "warmup_s" not in q4 and "warmup_s" in rows["numba", "q4_0"]
    keys = [f"{r['model']}/{r['backend']}/{r['weights']}" for r in res["decode"]]
    assert keys.index("gpt2/llama.cpp/q4_0") < keys.index("teacher/numpy/fp32")  # peers next to gpt2 rows
    ratio = res["ratios"]["numba q4_0 / llama.cpp q4_0 (gpt2)"]
    numba_q4 = next(r for r in res["decode"] if (r["model"], r["backend"], r["weights"]) == ("gpt2", "numba", "q4_0"))
    ours = numba_q4["decode_tok_s"]  # the fake's 1 + the probes so far: entry k - 1 saw k of them
    assert ours == [k + 1.0, per_round + k + 1.0]
    assert ratio["per_round"] == [round(o / t, 3) for o, t in zip(ours, q4["decode_tok_s"], strict=True)]


def test_render_bench_labels_peers_and_holds_only_our_formats_to_the_limit():
    row = {"model": "gpt2", "backend": "numba", "weights": "q4_0", "decode_tok_s": [500.0], "median_tok_s": 500.0,
           "prefill_tok_s": 1200.0, "bytes_per_token": 72_000_000, "median_gb_s": 36.0, "roofline_tok_s": 600.0,
           "roofline_frac": 0.8, "warmup_s": 0.4}  # fmt: skip
    peer = dict(row, backend="llama.cpp", decode_tok_s=[200.0], median_tok_s=200.0, roofline_frac=0.3, peer=True,
                llama_cpp="0.3.36")  # fmt: skip
    del peer["warmup_s"]
    result = {"machine": {"cpu": "X", "cores": 2, "date": "today", "python": "3.11", "numpy": "2"},
              "threads": {}, "bandwidth_gb_s": 50.0, "peak_fp32_gflops": 200.0, "rounds": 1, "decode": [row, peer],
              "ratios": {"numba q4_0 / llama.cpp q4_0 (gpt2)": {"per_round": [2.5], "median": 2.5}}}  # fmt: skip
    text = docgen.render_bench(result)
    assert "| gpt2 | llama.cpp (peer) | q4_0 | 200.0 |" in text and "llama-cpp-python 0.3.36" in text
    assert "every format at ≥ 75 % of its bandwidth limit: met." in text  # the peer's 30 % is not ours
    assert "| numba q4_0 / llama.cpp q4_0 (gpt2)  | 2.50× | 2.50–2.50 | 2.50 |  |" in text  # no target: no verdict


def test_a_peer_interpreter_that_cannot_run_fails_before_any_work(monkeypatch, tmp_path, capsys):
    """A missing interpreter, or one without the peer's modules, stops the suite at once with
    one line that says what it needs — not after minutes of benchmarks."""
    from minillm.cli import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the suite measured something although its peer cannot run")

    monkeypatch.setattr(bench, "bench_decode", must_not_run)
    monkeypatch.setattr(bench, "GPT", must_not_run)
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", str(out), "--llamacpp-python", str(tmp_path / "no-python")]) == 2
    err = capsys.readouterr().err
    assert "cannot run the llama.cpp peer" in err and "llama-cpp-python" in err and len(err.strip().splitlines()) == 1
    # this interpreter runs but has no torch: the transformers peer is refused the same way
    monkeypatch.setitem(bench.PEERS, "transformers", (("no_such_module_here",), "pip install it"))
    assert main(["bench", "--suite", str(out), "--peer-python", sys.executable]) == 2
    assert "No module named 'no_such_module_here'" in capsys.readouterr().err and not out.exists()


def test_peer_options_need_the_suite(capsys):
    """Without --suite the peers would not run: say so instead of ignoring the option."""
    from minillm.cli import main

    for option in ("--peer-python", "--llamacpp-python"):
        assert main(["bench", "--model", "teacher", option, sys.executable]) == 2
        assert f"{option} times a peer in the suite" in capsys.readouterr().err


LLAMACPP_LOGITS = """
import json, sys, numpy as np, llama_cpp
m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[3]), n_threads=1, logits_all=True, verbose=False)
tokens = json.loads(sys.argv[2])
m.eval(tokens)
print(json.dumps(np.asarray(m.scores[: len(tokens)], dtype=float).tolist()))
"""


@pytest.mark.reference
def test_llamacpp_runs_our_model_when_given_its_weights(tmp_path):
    """The peer computes what we compute: a small GPT's own weights written as GGUF
    (`bench.gguf_tensors`), run by llama.cpp over 20 tokens, give our logits — within 1e-3 in
    float32, and in Q4_0 far closer to our Q4_0 logits than those are to float32 (llama.cpp
    quantizes the activations too, to Q8_0 blocks; gguf's Q4_0 codes are bit-exact with ours)."""
    import os

    python = os.environ.get("MINILLM_LLAMACPP_PYTHON")
    if not python:
        pytest.skip("set MINILLM_LLAMACPP_PYTHON to an interpreter with llama-cpp-python, gguf and numpy")
    from minillm import GPT, backends
    from minillm.compress.quantize import quantize_params
    from minillm.nn.gpt import forward

    cfg = GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=4, n_embd=128)
    model = GPT(cfg, seed=3)
    tokens = [int(t) for t in np.random.default_rng(1).integers(0, cfg.vocab_size, size=20)]
    numpy_ = backends.get("numpy")

    def ours(params):
        return forward(params, cfg, np.array([tokens]), None, numpy_)[0]

    def theirs(weights):
        path = bench.llamacpp_gguf(python, weights, tmp_path, cfg, params=model.params)
        return np.array(bench._run_peer(python, LLAMACPP_LOGITS, path, json.dumps(tokens), cfg.block_size))

    fp32 = ours(model.params)
    got = theirs("fp32")
    assert np.abs(got - fp32).max() < 1e-3 * np.abs(fp32).max()  # 2.6e-4 of a 1.42 scale here
    assert (got.argmax(-1) == fp32.argmax(-1)).all()
    for weights in ("q8_0", "q4_0"):
        mine, got = ours(quantize_params(model.params, weights)), theirs(weights)
        assert np.abs(got - mine).max() < 0.01 * np.abs(mine).max()
        assert (got.argmax(-1) == mine.argmax(-1)).all()
    # Q4_0 moves the logits 0.13 from float32 here; llama.cpp's Q4_0 lies within 0.008 of ours
    assert np.abs(got - mine).max() < 0.2 * np.abs(mine - fp32).max()
