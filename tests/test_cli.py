"""The `minillm` command: subcommands exist, errors are one clear line without a traceback."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minillm.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minillm", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_help_lists_every_subcommand():
    out = run("--help").stdout
    for cmd in ("tour", "train", "distill", "generate", "eval", "compress", "bench", "roofline"):
        assert cmd in out


def subparsers() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_help_states_every_default():
    """`minillm SUB --help` tells the value an option takes when it is left out."""
    missing = []
    for name, sp in subparsers().items():
        for a in sp._actions:
            unset = a.default is None or isinstance(a.default, bool) or a.default == argparse.SUPPRESS  # flags
            if a.option_strings and not unset and "default" not in (a.help or ""):
                missing.append(f"{name} {a.option_strings[-1]} (default {a.default!r})")
    assert not missing, "options whose help does not say their default: " + ", ".join(missing)


# Every `minillm SUB --flag ...` that the README, the docs, the lesson sources and the package's
# docstrings show a reader must name flags SUB accepts: a renamed option fails here, not in a
# reader's terminal.
COMMAND = re.compile(r"minillm (\w+)([ \t][^`\n]*)?")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def subcommand_flags() -> dict[str, set[str]]:
    return {name: {o for act in sp._actions for o in act.option_strings} for name, sp in subparsers().items()}


def unknown_flags(text: str, flags: dict[str, set[str]]) -> list[str]:
    """`SUB --flag` pairs in `text` where SUB is a subcommand that has no such flag."""
    return [f"{m[1]} {flag}" for m in COMMAND.finditer(text) if m[1] in flags
            for flag in FLAG.findall(m[2] or "") if flag not in flags[m[1]]]  # fmt: skip


def test_documented_commands_use_flags_that_exist():
    flags = subcommand_flags()
    assert unknown_flags("`minillm bench --model gpt2 --wieghts q4_0`", flags) == ["bench --wieghts"]
    assert unknown_flags("python -m minillm.docgen --check", flags) == []  # not a subcommand
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "lessons" / "_build").glob("*.py"),
             *(ROOT / "minillm").rglob("*.py")]  # fmt: skip
    seen, bad = 0, []
    for f in files:
        text = f.read_text(encoding="utf-8")
        seen += sum(m[1] in flags for m in COMMAND.finditer(text))
        bad += [f"{f.relative_to(ROOT)}: minillm {pair}" for pair in unknown_flags(text, flags)]
    assert seen > 30, "the pattern no longer finds the documented commands"
    assert not bad, "flags the command does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--model", "no/such/dir"], "no/such/dir"),
        (["generate", "--model", "tiny-nonexistent"], "tiny-nonexistent"),
        (["bench", "--backend", "tpu9000", "--model", "gpt2"], "unknown backend"),
        (["compress", "--model", "teacher", "--recipe", "prune:2"], "fraction"),
        (["compress", "--model", "teacher", "--recipe", "magic"], "unknown recipe step"),
        (["roofline", "--device", "abacus"], "unknown device"),
        (["roofline", "--model", "huge"], "huge"),
        (["eval", "--format", "bfloat16", "--backend", "numba"], "leave out --backend numba"),
        (["compress", "--recipe", "int8", "--save-dense", "d"], "use it with --finetune STEPS"),
        (["tour", "--tradeoffs", "t.json", "--backends", "numpy"], "leave out --backends"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("minillm: error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_debug_flag_shows_the_traceback():
    with pytest.raises(ValueError, match="unknown device"):
        main(["--debug", "roofline", "--device", "abacus"])


def test_roofline_writes_json(tmp_path):
    path = tmp_path / "new" / "dir" / "r.json"  # missing parents are created
    assert main(["roofline", "--model", "gpt2", "--weights", "q4_0", "--device", "h100", "--json", str(path)]) == 0
    rep = json.loads(path.read_text())
    assert rep["total"]["weight_bytes"] > 0 and rep["weights"] == "q4_0" and rep["device"] == "h100"


def test_bench_writes_the_documented_keys(tmp_path, monkeypatch):
    import minillm.config as config

    # The gpt2 shape takes seconds to build; the same code path on a small shape is enough here.
    monkeypatch.setitem(config.PRESETS, "gpt2", dict(vocab_size=64, block_size=64, n_layer=1, n_head=2, n_embd=32))
    path = tmp_path / "b.json"
    assert main(["bench", "--model", "gpt2", "--backend", "numpy", "--weights", "fp32", "--tokens", "4",
                 "--no-bandwidth", "--repeat", "1", "--products", "--json", str(path)]) == 0  # fmt: skip
    res = json.loads(path.read_text())
    for key in ("model", "backend", "weights", "prompt_tokens", "new_tokens", "decode_tok_s", "prefill_tok_s",
                "achieved_gb_s", "products_ms", "products_gb_s"):  # fmt: skip
        assert key in res
    assert res["decode_tok_s"] > 0 and res["products_ms"] > 0
    assert "products_frac" not in res  # no bandwidth measured, no fraction


def test_bench_divides_by_the_bandwidth_measured_just_before_the_run(tmp_path, monkeypatch):
    """Not the cached figure of `cpu_spec`, which may be days old: the machine's bandwidth moves."""
    import minillm.bench as bench
    import minillm.config as config
    from minillm.hw import devices

    monkeypatch.setitem(config.PRESETS, "gpt2", dict(vocab_size=64, block_size=64, n_layer=1, n_head=2, n_embd=32))
    monkeypatch.setattr(devices, "cpu_spec", lambda *a, **k: pytest.fail("used the cached bandwidth"))
    monkeypatch.setattr(devices, "bandwidth_probe", lambda: lambda: 20e9)
    monkeypatch.setattr(bench, "SETTLE_S", 0.0)
    path = tmp_path / "b.json"
    assert main(["bench", "--model", "gpt2", "--backend", "numpy", "--tokens", "4", "--repeat", "1",
                 "--json", str(path)]) == 0  # fmt: skip
    res = json.loads(path.read_text())
    assert res["bandwidth_gb_s"] == 20.0 and res["roofline_frac"] == round(res["achieved_gb_s"] / 20.0, 3)


def test_a_bad_output_path_fails_before_the_work(tmp_path, monkeypatch, capsys):
    import minillm.tour as tour

    def must_not_run(*args, **kwargs):
        raise AssertionError("the tour started although its --json path is unusable")

    monkeypatch.setattr(tour, "run_tour", must_not_run)
    assert main(["tour", "--json", str(tmp_path)]) == 2  # a directory, not a file
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert main(["tour", "--json", str(tmp_path / "a_file" / "t.json")]) == 2  # parent is a file
    assert "minillm: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", "s.json", "--train"], "--suite and --train are separate runs: choose one"),
        (["--train", "--kv-cache"], "--train and --kv-cache are separate runs"),
        (["--suite", "s.json", "--weights", "q4_0"], "--suite does not use --weights: leave it out"),
        (["--suite", "s.json", "--backend", "numba", "--json", "j.json"], "--suite does not use --json, --backend"),
        (["--train", "--weights", "int8", "--no-bandwidth"],
         "--train does not use --weights, --no-bandwidth: leave them out"),
        (["--kv-cache", "--repeat", "5"], "--kv-cache does not use --repeat"),
        (["--kv-cache", "--products"], "--kv-cache does not use --products"),
        (["--train", "--llamacpp-python", sys.executable], "--train does not use --llamacpp-python"),
    ],
)
def test_bench_refuses_an_option_its_job_would_ignore(tmp_path, monkeypatch, capsys, args, message):
    """A bench job given an option it does not read says so, before any work or any output."""
    import minillm.bench as bench

    for job in ("bench_suite", "bench_train", "kv_cache_speedup", "bench_decode"):
        monkeypatch.setattr(bench, job, lambda *a, **k: pytest.fail("the bench ran despite the ignored option"))
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *args]) == 2
    assert f"minillm: error: {message}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bench_defaults_given_explicitly_are_accepted(monkeypatch, capsys):
    """The check compares with the defaults: spelling a default out is not an error."""
    import minillm.bench as bench

    def started(*a, **k):
        raise SystemExit(0)  # the suite would have run: the options were accepted

    monkeypatch.setattr(bench, "bench_suite", started)
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "s.json", "--model", "gpt2", "--weights", "fp32", "--backend", "numpy",
              "--prompt-tokens", "16", "--tokens", "32"])  # fmt: skip
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, job, expected",
    [
        (["--suite", "s.json"], "bench_suite", {"rounds": 9}),  # a median with an interval worth reading
        (["--suite", "s.json", "--repeat", "21"], "bench_suite", {"rounds": 21}),
        (["--train", "--model", "tiny"], "bench_train", {"steps": 5}),  # best of 3 + 2 steps
        (["--no-bandwidth"], "bench_decode", {"repeat": 3}),  # best of 3 runs
        (["--no-bandwidth", "--repeat", "7"], "bench_decode", {"repeat": 7}),
    ],
)
def test_bench_repeat_defaults_per_job(tmp_path, monkeypatch, args, job, expected):
    """--repeat counts rounds in the suite and runs elsewhere, each with its own default."""
    import minillm.bench as bench

    seen = {}

    def record(*a, **k):
        seen.update(k)
        raise SystemExit(0)  # stop before the job's output: only its arguments matter here

    monkeypatch.setattr(bench, job, record)
    monkeypatch.setattr(bench, "with_weights", lambda model, weights: model)
    monkeypatch.setattr("minillm.nn.gpt.GPT", lambda *a, **k: None)  # the gpt2 shape takes seconds to build
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["bench", *args])
    assert {key: seen[key] for key in expected} == expected
