"""The `minillm` command line: tour, train, distill, generate, eval, compress, bench, roofline.

Errors a user can cause (a bad argument, a missing file, a missing optional dependency) print
one line, ``minillm: error: …``, and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError,
                                                 RuntimeError, KeyError, OSError, ArithmeticError)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (``minillm generate: error: …``), status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# Argument types: argparse reports their ValueError as "argument --x: invalid <name> value".
def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be an int >= {lo}, got {v}")
        return v

    return parse


def _float_in(lo: float, hi: float, lo_open: bool, hi_open: bool = True):
    allowed = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {allowed}, got {text!r}") from None
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(f"must be a number in {allowed}, got {text}")
        return v

    return parse


def _weights(text: str) -> str:
    from .compress.quantize import _GROUP_METHOD

    if text in ("fp32", "fp32-input-major", "int8", "q8_0", "q4_0") or _GROUP_METHOD.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(f"must be fp32, fp32-input-major, int8, q8_0, q4_0 or int<b>-g<G> (b in "
                                     f"2..8, e.g. int4-g32), got {text!r}")  # fmt: skip


def _load_model(name: str):
    from .io import load

    return load(name)


def _prepare_outputs(a: argparse.Namespace) -> None:
    """Check every JSON output path before any work, creating missing parent directories: a
    bad path found only at the end would throw away minutes of benchmarking or a whole tour."""
    for option in ("json", "suite", "tradeoffs"):
        path = getattr(a, option, None)
        if not path:
            continue
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"--{option} {path} is a directory; give a file path, e.g. {path / 'result.json'}")
        path.parent.mkdir(parents=True, exist_ok=True)  # fails here (an OSError) if it cannot be made


def _write_json(path: str | None, obj: Any) -> None:
    if path:
        from .io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")


def _bandwidth() -> float:
    """This CPU's memory bandwidth in GB/s, measured now (not the cached `cpu_spec` figure: on a
    shared machine it moves within seconds), then idle while BLAS's threads stop spinning."""
    import time

    from .bench import SETTLE_S
    from .hw.devices import bandwidth_probe

    gb_s = bandwidth_probe()() / 1e9
    time.sleep(SETTLE_S)
    return gb_s


# ------------------------------------------------------------------------------------------
def cmd_generate(a: argparse.Namespace) -> int:
    import numpy as np

    from .generate import stream

    model = _load_model(a.model)
    tok = model.tokenizer
    if tok is None:
        raise ValueError(f"model {a.model!r} has no tokenizer, so --prompt text cannot be encoded")
    ids = tok.encode(a.prompt)
    if not ids:
        raise ValueError("--prompt must not be empty")
    ids = ids[-model.config.block_size :]
    # stream() checks every argument when called: a bad one fails before the prompt is echoed.
    it = stream(model, np.asarray([ids]), a.tokens, temperature=a.temperature, top_k=a.top_k,
                top_p=a.top_p, seed=a.seed, backend=a.backend)  # fmt: skip
    sys.stdout.write(a.prompt)
    sys.stdout.flush()
    for nxt in it:
        sys.stdout.write(tok.decode([int(nxt[0])]))
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from . import data
    from .train import evaluate

    if a.format and a.backend != "numpy":
        raise ValueError(f"--format emulates {a.format} on the NumPy backend: leave out --backend {a.backend}")
    model = _load_model(a.model)
    if model.tokenizer is None:
        raise ValueError(f"model {a.model!r} has no tokenizer; eval needs one to encode the corpus")
    ids = data.encode_split(a.split, model.tokenizer)
    backend = a.backend
    if a.format:
        from .hw.emulate import FormatBackend

        backend = FormatBackend(a.format)  # weights and activations rounded to the format
    res = evaluate(model, ids, backend=backend, max_tokens=a.max_tokens, progress=True)
    res |= {"model": a.model, "split": a.split, "backend": getattr(backend, "name", backend), "format": a.format,
            "params": model.n_params, "bytes": model.nbytes}  # fmt: skip
    print(f"{a.model}: val loss {res['loss']:.4f} nats/token, ppl {res['ppl']:.3f} "
          f"over {res['tokens']:,} tokens; {res['params']:,} params, {res['bytes']:,} bytes")  # fmt: skip
    _write_json(a.json, res)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .train import train_preset

    cfg = _train_config(a.steps)
    log = train_preset(a.preset, a.out, cfg, resume=a.resume, command=" ".join(sys.argv))
    if "val" in log:
        print(f"saved {a.out}: val loss {log['val']['loss']:.4f} nats/char")
    return 0


def _train_config(steps: int | None):
    """The default TrainConfig, or one of `steps` steps (warmup shortened so that it fits)."""
    from .train import TrainConfig

    if steps is None:
        return TrainConfig()
    return TrainConfig(steps=steps, warmup=min(TrainConfig.warmup, steps - 1))


def cmd_distill(a: argparse.Namespace) -> int:
    from .train import distillation_step, train_preset

    teacher = _load_model(a.teacher)
    cfg = _train_config(a.steps)
    log = train_preset(a.preset, a.out, cfg, resume=a.resume, command=" ".join(sys.argv),
                       step_fn_factory=lambda m: distillation_step(m.config, teacher, a.alpha,
                                                                   a.temperature))  # fmt: skip
    if "val" in log:
        print(f"saved {a.out}: val loss {log['val']['loss']:.4f} nats/char")
    return 0


# `minillm bench` runs one of four jobs; the options each job would ignore, by their defaults.
# --repeat has a default per job (`_repeat`): None here means "not given".
BENCH_DEFAULTS = dict(model="gpt2", weights="fp32", prompt_tokens=16, tokens=32, repeat=None, json=None,
                      products=False, backend="numpy", bandwidth=True, peer_python=None, llamacpp_python=None)
PEER_OPTIONS = ("peer_python", "llamacpp_python")
BENCH_IGNORES = {"suite": ("model", "weights", "prompt_tokens", "tokens", "json", "products", "backend", "bandwidth"),
                 "train": ("weights", "prompt_tokens", "tokens", "products", "backend", "bandwidth", *PEER_OPTIONS),
                 "kv_cache": ("repeat", "products", *PEER_OPTIONS),
                 None: PEER_OPTIONS}  # fmt: skip


def _flag(dest: str) -> str:
    return "--no-bandwidth" if dest == "bandwidth" else "--" + dest.replace("_", "-")


def _check_bench_options(a: argparse.Namespace) -> None:
    """An option the chosen job would not use is an error, not a silent no-op."""
    jobs = [job for job in ("suite", "train", "kv_cache") if getattr(a, job)]
    if len(jobs) > 1:
        raise ValueError(f"{_flag(jobs[0])} and {_flag(jobs[1])} are separate runs: choose one")
    job = jobs[0] if jobs else None
    ignored = [_flag(o) for o in BENCH_IGNORES[job] if getattr(a, o) != BENCH_DEFAULTS[o]]
    if job is None and ignored:  # the peers run only in the suite
        raise ValueError(f"{ignored[0]} times a peer in the suite: use it with --suite PATH")
    if ignored:
        them = "them" if len(ignored) > 1 else "it"
        raise ValueError(f"{_flag(job)} does not use {', '.join(ignored)}: leave {them} out")


def _repeat(a: argparse.Namespace) -> int:
    """--repeat, or its default for the job: the suite's rounds, else the best of 3 runs."""
    from .bench import SUITE_ROUNDS

    return a.repeat if a.repeat is not None else SUITE_ROUNDS if a.suite else 3


def cmd_bench(a: argparse.Namespace) -> int:
    from . import backends
    from .bench import bench_decode, bench_products, bench_train, kv_cache_speedup, machine_info, with_weights
    from .config import GPTConfig
    from .nn.gpt import GPT

    backends.get(a.backend)  # an unknown or unavailable backend fails before any work
    _check_bench_options(a)
    repeat = _repeat(a)
    if a.suite:
        from .bench import bench_suite, plot_timeline

        res = bench_suite(rounds=repeat, peer_python=a.peer_python, llamacpp_python=a.llamacpp_python)
        print(json.dumps(res["ratios"], indent=2))
        _write_json(a.suite, res)
        print(f"wrote {a.suite} and {plot_timeline(res, Path(a.suite).with_suffix('.png'))}")
        return 0
    if a.train:
        res = bench_train("teacher" if a.model == "gpt2" else a.model, steps=repeat + 2)
        res["machine"] = machine_info()
        print(json.dumps(res, indent=2))
        _write_json(a.json, res)
        return 0

    if a.model == "gpt2":
        model = GPT(GPTConfig.preset("gpt2"), seed=0)  # random weights: speed does not need real ones
    else:
        model = _load_model(a.model)
    model = with_weights(model, a.weights)
    if a.kv_cache:
        from .hw.devices import get_device

        res = kv_cache_speedup(model, a.prompt_tokens, a.tokens, backend=a.backend,
                               device=get_device("cpu") if a.bandwidth else None)  # fmt: skip
    else:
        bandwidth = _bandwidth() if a.bandwidth else None
        res = bench_decode(model, a.backend, a.prompt_tokens, a.tokens, repeat=repeat, bandwidth_gb_s=bandwidth)
        if a.products:
            res |= bench_products(model, a.backend, steps=max(1, a.tokens - 1), repeat=repeat,
                                  bandwidth_gb_s=bandwidth)  # fmt: skip
    res = {"model": a.model, "weights": a.weights, **res, "machine": machine_info()}
    print(json.dumps(res, indent=2))
    _write_json(a.json, res)
    return 0


TOUR_OUT = "tour-out"  # the tour's plot directory by default


def cmd_tour(a: argparse.Namespace) -> int:
    from .tour import run_tour, run_tradeoffs, tradeoffs_markdown

    if a.tradeoffs:
        ignored = [flag for flag, given in (("--json", a.json), ("--out", a.out != TOUR_OUT),
                                            ("--backends", a.backends)) if given]  # fmt: skip
        if ignored:
            raise ValueError(f"--tradeoffs writes only its own JSON: leave out {', '.join(ignored)}")
        print(tradeoffs_markdown(run_tradeoffs(a.tradeoffs, quick=a.quick)))
        return 0
    run_tour(json_path=a.json, out_dir=a.out, backends=a.backends, quick=a.quick)
    return 0


def cmd_compress(a: argparse.Namespace) -> int:
    from .compress.recipe import apply_recipe, finetune, parse_recipe, structural_part
    from .io import save
    from .nn.gpt import GPT

    parse_recipe(a.recipe)  # a bad recipe fails before any loading
    if a.save_dense and not a.finetune:
        raise ValueError("--save-dense saves the fine-tuned dense weights: use it with --finetune STEPS")
    model = _load_model(a.model)
    if a.finetune:
        structural = structural_part(a.recipe)
        if not structural:
            raise ValueError(f"--finetune needs a structural step (prune:S, 2:4, lowrank:F) in {a.recipe!r}")
        model = finetune(model, structural, steps=a.finetune)
        if a.save_dense:
            save(model, a.save_dense)
            print(f"saved the fine-tuned dense weights to {a.save_dense}")
    params = apply_recipe(model.params, a.recipe)
    out = GPT(model.config, params=params, tokenizer=model.tokenizer)
    print(f"{a.recipe}: {out.n_params:,} stored values, {out.nbytes:,} bytes "
          f"(dense float32: {model.config.n_params * 4:,} bytes)")  # fmt: skip
    if a.out:
        save(out, a.out)
        print(f"saved {a.out}")
    return 0


def cmd_roofline(a: argparse.Namespace) -> int:
    from .hw.roofline import format_report, roofline_report

    if a.phase == "decode":
        rep = roofline_report(a.model, weights=a.weights, device=a.device, phase="decode", context=a.context,
                              batch=a.batch)  # fmt: skip
    else:
        rep = roofline_report(a.model, weights=a.weights, device=a.device, phase="prefill",
                              prompt_len=a.prompt_tokens, batch=a.batch)  # fmt: skip
    print(format_report(rep))
    _write_json(a.json, rep)
    return 0


# ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The `minillm` parser: one subparser per command, each handled by its ``cmd_*`` function."""
    from . import __version__
    from .hw.devices import DEVICES

    p = _Parser(prog="minillm", description="A from-scratch teaching engine for "
                                "fast LLM inference.")  # fmt: skip
    p.add_argument("--version", action="version", version=f"minillm {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def backend_arg(s: argparse.ArgumentParser) -> None:
        s.add_argument("--backend", default="numpy", help="numpy (default), numba, cupy, jax or jax:bfloat16")

    g = sub.add_parser("generate", help="stream text from a model")
    g.add_argument("--model", default="teacher", help="shipped name (teacher, student-scratch, "
                   "student-distilled) or a checkpoint directory (default: teacher)")  # fmt: skip
    g.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    g.add_argument("--tokens", type=_int_at_least(0), default=200, help="how many tokens to generate (default: 200)")
    g.add_argument("--temperature", type=_float_in(0, float("inf"), False), default=0.8,
                   help="0 = greedy (default: 0.8)")
    g.add_argument("--top-k", type=_int_at_least(1), default=None, help="sample only from the K likeliest tokens")
    g.add_argument("--top-p", type=_float_in(0, 1, True, False), default=None,
                   help="sample only from the likeliest tokens whose probabilities sum to P (nucleus)")
    g.add_argument("--seed", type=_int_at_least(0), default=None, help="random seed, for the same text again")
    backend_arg(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("eval", help="validation loss, parameters and bytes of a model")
    e.add_argument("--model", default="teacher", help="shipped name or checkpoint directory (default: teacher)")
    e.add_argument("--split", default="val", choices=["train", "val"], help="which part of the corpus (default: val)")
    e.add_argument("--max-tokens", type=_int_at_least(1), default=None, help="evaluate only the first N tokens")
    e.add_argument("--json", metavar="PATH", help="write the result as JSON")
    e.add_argument("--format", default=None, choices=["float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"],
                   help="emulate a number format: weights and activations rounded to it (NumPy)")
    backend_arg(e)
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="train a preset on the Shakespeare corpus")
    t.add_argument("--preset", default="teacher", choices=["tiny", "teacher", "student"],
                   help="model size and training schedule (default: teacher)")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--steps", type=_int_at_least(1), default=None, help="override the number of steps")
    t.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("distill", help="train a student from a teacher (knowledge distillation)")
    d.add_argument("--teacher", default="teacher", help="shipped name or checkpoint directory (default: teacher)")
    d.add_argument("--preset", default="student", choices=["tiny", "teacher", "student"],
                   help="the student's size and schedule (default: student)")
    d.add_argument("--out", required=True, help="output directory")
    d.add_argument("--steps", type=_int_at_least(1), default=None, help="override the number of steps")
    d.add_argument("--alpha", type=_float_in(0, 1, False, False), default=0.25,
                   help="weight of the hard-label loss (default: 0.25)")
    d.add_argument("--temperature", type=_float_in(0, float("inf"), True), default=1.0,
                   help="softening of both distributions in the soft loss (default: 1)")
    d.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    d.set_defaults(func=cmd_distill)

    b = sub.add_parser("bench", help="measure prefill/decode tokens/s (JSON)",
                       description="Decode and prefill speed of one model, backend and format (the default "
                       "job), or instead --kv-cache, --train or the whole --suite.")  # fmt: skip
    b.set_defaults(**BENCH_DEFAULTS)
    b.add_argument("--model", help="gpt2 (124M shape, random weights; the default) or a model; with --train, a "
                   "preset (tiny, teacher, student)")  # fmt: skip
    b.add_argument("--weights", type=_weights, help="fp32 (default), int8, q8_0, q4_0, int4-g32, or "
                   "fp32-input-major (float32 with (in, out) row-major matrices, to measure the layout)")
    b.add_argument("--prompt-tokens", type=_int_at_least(1), help="random prompt length (default: 16)")
    b.add_argument("--tokens", type=_int_at_least(1), help="tokens to generate (default: 32)")
    b.add_argument("--repeat", type=_int_at_least(1), help="runs, the best one reported (default: 3); with "
                   "--suite, rounds (default: 9); with --train, the best of REPEAT + 2 steps (default: 3)")  # fmt: skip
    b.add_argument("--json", metavar="PATH", help="also write the result to PATH")
    b.add_argument("--train", action="store_true", help="training tokens/s of minillm (and PyTorch if installed)")
    b.add_argument("--kv-cache", action="store_true", help="KV cache vs recomputing the prefix, with the "
                   "FLOP-count prediction")  # fmt: skip
    b.add_argument("--suite", metavar="PATH", help="every backend and format on gpt2 and the teacher, --repeat "
                   "rounds (default: 9) interleaved, plus the KV-cache speed-ups: JSON to PATH "
                   "(docs/results/bench.json) and its timeline plot next to it (.png)")
    b.add_argument("--peer-python", metavar="PYTHON", help="with --suite: an interpreter with torch and "
                   "transformers, to time transformers' generate in the same run")  # fmt: skip
    b.add_argument("--llamacpp-python", metavar="PYTHON", help="with --suite: an interpreter with "
                   "llama-cpp-python, gguf and numpy, to time llama.cpp on the gpt2 shape in fp32, q8_0 and q4_0 "
                   "in the same run")  # fmt: skip
    b.add_argument("--products", action="store_true", help="also time the step's matrix products alone "
                   "(products_ms, products_gb_s, products_frac: how much of the step the kernels are)")  # fmt: skip
    b.add_argument("--no-bandwidth", dest="bandwidth", action="store_false",
                   help="skip measuring this CPU's memory bandwidth just before the run "
                   "(no roofline fraction)")  # fmt: skip
    backend_arg(b)
    b.set_defaults(func=cmd_bench)
    tr = sub.add_parser("tour", help="the main job: every method on the shipped models, measured")
    tr.add_argument("--json", metavar="PATH", help="write all results as JSON")
    tr.add_argument("--out", default=TOUR_OUT, help=f"directory for the plots (default: {TOUR_OUT})")
    tr.add_argument("--backends", nargs="+", default=None, help="backends to measure (default: all available)")
    tr.add_argument("--quick", action="store_true", help="smaller validation slice and shorter timings")
    tr.add_argument("--tradeoffs", metavar="PATH", help="instead: every method at several strengths, JSON to PATH")
    tr.set_defaults(func=cmd_tour)

    c = sub.add_parser("compress", help="apply a compression recipe, e.g. prune:0.5+int8")
    c.add_argument("--model", default="teacher", help="shipped name or checkpoint directory (default: teacher)")
    c.add_argument("--recipe", required=True, help="steps joined by '+': prune:S, 2:4, lowrank:F, int8, q8_0, "
                   "q4_0, int4-g32")  # fmt: skip
    c.add_argument("--out", default=None, help="directory to save the compressed model")
    c.add_argument("--finetune", type=_int_at_least(0), default=0, metavar="STEPS",
                   help="fine-tune the pruned / low-rank model for STEPS steps first (default: 0, none)")  # fmt: skip
    c.add_argument("--save-dense", default=None, metavar="DIR", help="also save the fine-tuned dense weights")
    c.set_defaults(func=cmd_compress)

    r = sub.add_parser("roofline", help="predicted time per op on a device (roofline model)")
    r.add_argument("--model", default="gpt2", help="a preset name: tiny, teacher, student, gpt2 (default: gpt2)")
    r.add_argument("--weights", default="fp32", help="fp32, fp16, bf16, int8, q8_0, q4_0, int4-g32 (default: fp32)")
    r.add_argument("--device", default="cpu", help=f"cpu (measured), {', '.join(DEVICES)} (default: cpu)")
    r.add_argument("--phase", default="decode", choices=["decode", "prefill"],
                   help="one decode step, or the whole prompt at once (default: decode)")
    r.add_argument("--context", type=_int_at_least(1), default=512, help="context length for decode (default: 512)")
    r.add_argument("--prompt-tokens", type=_int_at_least(1), default=512,
                   help="prompt length for prefill (default: 512)")
    r.add_argument("--batch", type=_int_at_least(1), default=1, help="sequences decoded together (default: 1)")
    r.add_argument("--json", metavar="PATH", help="also write the result to PATH")
    r.set_defaults(func=cmd_roofline)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `minillm` console script."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        _prepare_outputs(a)
        return a.func(a)
    except KeyboardInterrupt:
        print("minillm: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if a.debug:
            raise
        msg = str(e).replace("\n", " ") or type(e).__name__
        print(f"minillm: error: {msg}", file=sys.stderr)
        return 2

