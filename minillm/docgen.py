"""Generated documentation: numbers in the docs come from shipped artifacts, never typed by hand.

`python -m minillm.docgen` rewrites the marked sections

- ``training-logs`` in `docs/training.md`, from `minillm/weights/*/train_log.json`;
- ``tour-results`` in `docs/results.md` and ``tour-headline`` in `README.md`, from the tour
  results committed at `docs/results/tour.json` (made by ``minillm tour --json
  docs/results/tour.json --out docs/results``);
- ``tradeoffs`` in `docs/results.md`, from `docs/results/tradeoffs.json` (made by
  ``minillm tour --tradeoffs docs/results/tradeoffs.json``);
- ``bench`` in `docs/backends.md`, from `docs/results/bench.json` (made by
  ``minillm bench --suite docs/results/bench.json --repeat 21 --peer-python PYTHON_WITH_TORCH
  --llamacpp-python PYTHON_WITH_LLAMA_CPP``, the command on that page).

`tests/test_docgen.py` fails if a marked section differs from what this module renders, so a
stale or hand-edited number cannot slip in.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .io import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parent.parent
TOUR_JSON = ROOT / "docs" / "results" / "tour.json"
TRADEOFFS_JSON = ROOT / "docs" / "results" / "tradeoffs.json"
BENCH_JSON = ROOT / "docs" / "results" / "bench.json"
# The backends' speed targets: (ratio name in bench.json, at least)
SPEED_TARGETS = {"numpy fp32 / transformers generate (gpt2)": 2.5, "numba int8 / numpy fp32 (gpt2)": 3.0,
                 "numba q4_0 / numba int8 (gpt2)": 1.0, "jax fp32 / numpy fp32 (gpt2)": 1.0,
                 "jax fp32 / numpy fp32 (teacher)": 1.0}
ROOFLINE_TARGET = 0.75  # every format reaches this fraction of its bandwidth limit
MODELS = ["teacher", "student-scratch", "student-distilled", "teacher-prune50", "teacher-2of4", "teacher-lowrank50",
          "teacher-ft400"]


def _marked(text: str, name: str) -> re.Match | None:
    return re.search(rf"(<!-- generated:{name}:start -->\n)(.*?)(<!-- generated:{name}:end -->)", text, re.S)


def replace_section(text: str, name: str, body: str) -> str:
    """Replace the body between ``<!-- generated:NAME:start -->`` and ``...:end -->``."""
    m = _marked(text, name)
    if m is None:
        raise ValueError(f"no generated:{name} markers found")
    return text[: m.start(2)] + body.rstrip("\n") + "\n" + text[m.end(2) :]


def section(text: str, name: str) -> str:
    """The current body of a marked section."""
    m = _marked(text, name)
    if m is None:
        raise ValueError(f"no generated:{name} markers found")
    return m.group(2)


def load_logs() -> dict[str, dict[str, Any]]:
    """The shipped models' training logs that exist, by model name."""
    logs = {}
    for name in MODELS:
        path = WEIGHTS_DIR / name / "train_log.json"
        if path.is_file():
            logs[name] = json.loads(path.read_text())
    return logs


def render_training_logs(logs: dict[str, dict[str, Any]] | None = None) -> str:
    """Markdown for every shipped model's command, final validation loss and learning curve."""
    logs = load_logs() if logs is None else logs
    if not logs:
        return "(generated when the shipped models exist)\n"
    out = ["Wall time is that of the last run; a resumed run counts only the part after the restart.", "",
           "| model | command | steps | val loss (whole split) | wall time |", "|---|---|---|---|---|"]
    for name, log in logs.items():
        val = log.get("val", {}).get("loss")
        steps = log.get("train_config", {}).get("steps", log.get("steps", ""))
        wall = log.get("wall_s_this_session", log.get("wall_s"))
        val_s = "" if val is None else f"{val:.4f}"
        wall_s = "" if wall is None else f"{wall / 60:.1f} min"
        out.append(f"| `{name}` | `{log.get('command', '')}` | {steps} | {val_s} | {wall_s} |")
    out += [f"\n*{name}*: {log['note']}" for name, log in logs.items() if log.get("note")]
    for name, log in logs.items():
        hist = log.get("history") or []
        if not hist:
            continue
        out += ["", f"**{name}** — validation estimate during training (16 batches of 32 × 128 characters):", "",
                "| step | train loss (smoothed) | val loss | tokens/s |", "|---|---|---|---|"]  # fmt: skip
        out += [f"| {h['step']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h.get('tok_s', '')} |" for h in hist]
    return "\n".join(out) + "\n"


def render_results(result: dict[str, Any]) -> str:
    """The results page body from a tour run."""
    from .tour import markdown_table

    m = result["machine"]
    out = [markdown_table(result), "",
           f"Tour wall time {result['wall_s'] / 60:.1f} min; NumPy {m['numpy']}, Python {m['python']}.", "",
           "![Size vs quality](results/pareto.png)", "",
           "![Decode speed](results/decode_speed.png)", "",
           "![Roofline](results/roofline.png)", "",
           "How each variant was made:", ""]  # fmt: skip
    seen = set()
    for r in result["rows"]:
        if r["variant"] not in seen:
            seen.add(r["variant"])
            out.append(f"- `{r['variant']}`: {r['note']}; weights stored as {r['weights']}")
    return "\n".join(out) + "\n"


def render_headline(result: dict[str, Any]) -> str:
    """The README's "Measured" table: one row per tour variant."""
    from .tour import markdown_table

    return markdown_table(result) + "\n"


def _gb_range(result: dict[str, Any]) -> str:
    lo_hi = result.get("bandwidth_range_gb_s")
    return f", from {lo_hi[0]:g} to {lo_hi[1]:g} GB/s in this run (the plot below)" if lo_hi else ""


def _ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, 22nd."""
    return f"{k}th" if k % 100 in (11, 12, 13) else f"{k}" + {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")


def render_bench(result: dict[str, Any]) -> str:
    """The measured speed table of docs/backends.md, with every target met or missed."""
    from .bench import SETTLE_S, median_interval, median_order

    m, th = result["machine"], result.get("threads", {})
    out = [f"Measured on {m['cpu']} ({m['cores']} cores), {m['date']}; Python {m['python']}, NumPy {m['numpy']}; "
           f"Numba thread pool `{th.get('numba_layer', '?')}` with {th.get('numba_threads', '?')} threads. "
           f"This CPU's memory bandwidth (a float32 matrix-vector product over 128 MiB, "
           f"`minillm.hw.devices.bandwidth_probe`), measured right before every entry: median "
           f"{result['bandwidth_gb_s']} GB/s{_gb_range(result)}; each entry's bandwidth limit is its own "
           f"measurement. Float32 peak (`fp32_peak`, every round): {result['peak_fp32_gflops']} "
           f"GFLOP/s. Prompt 16 + 32 new "
           f"tokens, batch 1; each entry ran {result['rounds']} times, interleaved with the others (best of 3 "
           f"runs each time, after {SETTLE_S:g} s idle): the median, and the range. \"Its products alone\": the "
           f"step's 48 block products and LM head timed by themselves (`bench_products`: 31 back to back, "
           f"best of 3 runs each round, as the steps), as a fraction of the same limit — the kernels' "
           f"share of the distance; the rest of the step (layer norms, attention, GELU, the code between) "
           f"makes up the difference.", "",
           "| model | backend | weights | decode tok/s | (range) | prefill tok/s | bytes / token | GB/s "
           "| of the bandwidth limit | its products alone |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["decode"]:
        lo, hi = min(r["decode_tok_s"]), max(r["decode_tok_s"])
        alone = f"{100 * r['products_frac']:.1f} %" if "products_frac" in r else "–"
        backend = f"{r['backend']} (peer)" if r.get("peer") else r["backend"]
        out.append(f"| {r['model']} | {backend} | {r['weights']} | {r['median_tok_s']:.1f} | {lo:.0f}–{hi:.0f} "
                   f"| {r['prefill_tok_s']:.0f} | {r['bytes_per_token'] / 1e6:.1f} MB | {r['median_gb_s']:.1f} "
                   f"| {100 * r['roofline_frac']:.1f} % | {alone} |")  # fmt: skip
    if result.get("timeline"):
        out += ["", "![GPT-2 decode against the bandwidth limit over the suite's run](results/bench.png)"]
    if any(r.get("peer") for r in result["decode"]):
        version = next(r["llama_cpp"] for r in result["decode"] if r.get("peer"))
        out += ["", f"llama.cpp (peer): llama-cpp-python {version} (2 threads, flash attention on), run on GGUF files "
                    f"of the same shape "
                    f"(random weights, the head tied to the embedding), timed as ours (decode after a 16-token "
                    f"prompt, best of 3 runs after a warm-up), each right after Numba's entry of the same format; its "
                    f"bytes per token are ours less half the KV cache (llama.cpp keeps it in float16)."]  # fmt: skip
    if result.get("transformers_tok_s"):
        t = result["transformers_tok_s"]
        out += ["", f"transformers' `generate` (PyTorch, same shape and run, prefill included as in its usual "
                    f"benchmark): {', '.join(f'{v:.1f}' for v in t)} tok/s."]  # fmt: skip
    out += ["", "| target | measured (median) | interval of the median | each round | |", "|---|---|---|---|---|"]
    rounds = set()
    for name, r in result["ratios"].items():
        need = SPEED_TARGETS.get(name)
        lo, hi, _ = median_interval(r["per_round"])
        rounds.add(len(r["per_round"]))
        verdict = "" if need is None else ("met" if r["median"] >= need else "**missed**")
        if need is not None and lo < need <= hi:
            verdict += ", but the interval straddles the line"
        goal = f"≥ {need:g}×" if need is not None else ""
        shown = f"{r['median']:.2f}"
        if need is not None and (float(shown) >= need) != (r["median"] >= need):
            shown = f"{r['median']:.3f}"  # 2.497 is not 2.50: show the digit that decides
        out.append(f"| {name} {goal} | {shown}× | {lo:.2f}–{hi:.2f} | {', '.join(f'{v:.2f}' for v in r['per_round'])} "
                   f"| {verdict} |")  # fmt: skip
    orders = [(n, *median_order(n)) for n in sorted(rounds)]
    out += ["", "Interval of the median: " + "; ".join(
        f"with {n} round{'s' * (n != 1)}, from the {_ordinal(k)} smallest to the {_ordinal(k)} largest ratio, which "
        f"holds the median of the distribution the rounds come from with probability {100 * c:.1f} %"
        for n, k, c in orders)
        + " if the rounds are independent draws (order statistics, `bench.median_interval`). A target whose "
        "interval straddles its line is one this run cannot settle either way."]  # fmt: skip

    def fraction(r: dict[str, Any]) -> str:
        """The median fraction, and the interval of its median over the rounds (when they are kept)."""
        text = f"{100 * r['roofline_frac']:.1f} %"
        if len(r.get("bandwidth_gb_s") or []) == len(r["decode_tok_s"]):
            per_round = [t * r["bytes_per_token"] / 1e9 / bw for t, bw in zip(r["decode_tok_s"], r["bandwidth_gb_s"],
                                                                              strict=True)]  # fmt: skip
            lo, hi, _ = median_interval(per_round)
            text += f"; its median's interval {100 * lo:.0f}–{100 * hi:.0f} %"
        return text

    below = [f"{r['backend']} {r['weights']} ({fraction(r)})"
             for r in result["decode"]
             if r["model"] == "gpt2" and not r.get("peer") and r["roofline_frac"] < ROOFLINE_TARGET]  # fmt: skip
    out += ["", f"GPT-2 shape, every format at ≥ {100 * ROOFLINE_TARGET:.0f} % of its bandwidth limit: "
                + ("met." if not below else f"**missed** by {', '.join(below)}.")
                + " (The teacher's few MB fit in the CPU's caches, so main-memory bandwidth does not bound it; "
                  "its column shows how far per-step overheads keep it from that bound.)"]  # fmt: skip
    if result.get("kv_cache"):
        out += ["", "| KV cache vs recomputing | new tokens | cached | recomputed | measured speed-up "
                    "| FLOP-count prediction | roofline prediction |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for k in result["kv_cache"]:
            out.append(f"| {k['model']} ({k['backend']}) | {k['new_tokens']} after {k['prompt_tokens']} "
                       f"| {k['cached_s']:.2f} s | {k['recompute_s']:.2f} s | {k['measured_speedup']:.2f}× "
                       f"| {k['predicted_speedup']:.2f}× | {k['roofline_predicted_speedup']:.2f}× |")  # fmt: skip
    return "\n".join(out) + "\n"


def update(check: bool = False) -> list[str]:
    """Rewrite (or, with `check`, only compare) every generated section; returns the stale ones."""
    stale = []
    targets: list[tuple[Path, str, str]] = [(ROOT / "docs" / "training.md", "training-logs", render_training_logs())]
    if TOUR_JSON.is_file():
        result = json.loads(TOUR_JSON.read_text())
        targets += [(ROOT / "docs" / "results.md", "tour-results", render_results(result)),
                    (ROOT / "README.md", "tour-headline", render_headline(result))]  # fmt: skip
    if TRADEOFFS_JSON.is_file():
        from .tour import tradeoffs_markdown

        body = tradeoffs_markdown(json.loads(TRADEOFFS_JSON.read_text())) + "\n"
        targets.append((ROOT / "docs" / "results.md", "tradeoffs", body))
    if BENCH_JSON.is_file():
        targets.append((ROOT / "docs" / "backends.md", "bench", render_bench(json.loads(BENCH_JSON.read_text()))))
    for path, name, body in targets:
        text = path.read_text()
        if section(text, name) != body.rstrip("\n") + "\n":
            stale.append(f"{path.relative_to(ROOT)}:{name}")
            if not check:
                path.write_text(replace_section(text, name, body))
    return stale


if __name__ == "__main__":
    changed = update(check="--check" in sys.argv)
    print("\n".join(changed) if changed else "generated docs are up to date")
