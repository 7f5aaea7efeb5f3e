"""The tour: every idea of minillm, measured end to end on the shipped models, in minutes.

1. Load the teacher, print a sample and its validation loss.
2. Apply each compression method (quantization, pruning, 2:4, low rank) and load the two
   students (distilled and from scratch).
3. For every variant measure parameters, stored bytes, validation loss on a fixed slice of the
   validation split, and decode/prefill tokens/s on every available backend next to the
   memory-bandwidth limit $\\text{tokens/s} \\le \\text{bandwidth} / \\text{bytes per token}$.
4. Print one table, write JSON, and save plots (bytes vs loss Pareto front, tokens/s against the
   limit, the roofline).

The validation slice is the first 100,000 characters of the held-out plays: the standard error
of a mean per-token loss of spread $\\sigma \\approx 1.5$ nats over $N$ tokens is $\\sigma/\\sqrt N$,
about 0.005 nats at $N = 10^5$ (and differences *between* variants on the same slice are far
more precise than that, since the same tokens are hard for all of them).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import backends as backends_mod
from .bench import SETTLE_S, bench_decode, machine_info
from .io import WEIGHTS_DIR, load
from .nn.gpt import GPT

VAL_TOKENS, VAL_TOKENS_QUICK = 100_000, 20_000

# (variant, base model, recipe applied at load, shipped fine-tuned model that replaces the base)
VARIANTS: list[tuple[str, str, str | None, str | None]] = [
    ("fp32", "teacher", None, None),
    ("int8", "teacher", "int8", None),
    ("q8_0", "teacher", "q8_0", None),
    ("q4_0", "teacher", "q4_0", None),
    ("int4-g32", "teacher", "int4-g32", None),
    ("prune-50%", "teacher", "prune:0.5", "teacher-prune50"),
    ("2:4", "teacher", "2:4", "teacher-2of4"),
    ("lowrank", "teacher", "lowrank:0.5", "teacher-lowrank50"),
    ("student-distilled", "student-distilled", None, None),
    ("student-scratch", "student-scratch", None, None),
]


def build_variant(name: str, cache: dict[str, GPT]) -> tuple[GPT, str]:
    """The model for one variant and a note on how it was made."""
    from .compress.recipe import apply_recipe

    _, base, recipe, finetuned = next(v for v in VARIANTS if v[0] == name)
    note = "shipped"
    if finetuned and (WEIGHTS_DIR / finetuned).is_dir():
        src, note = finetuned, f"{recipe}, fine-tuned (shipped {finetuned})"
    else:
        src = base
        if recipe:
            note = recipe + (", no fine-tuning (shipped fine-tuned weights missing)" if finetuned else "")
    if src not in cache:
        cache[src] = load(src)
    model = cache[src]
    if recipe:
        model = GPT(model.config, params=apply_recipe(model.params, recipe), tokenizer=model.tokenizer)
    return model, note


def _weights_label(model: GPT) -> str:
    kinds = sorted({type(w).__name__ for w in model.params.values() if not isinstance(w, np.ndarray)})
    return "+".join(kinds) if kinds else "fp32"


def run_tour(json_path: str | None = None, out_dir: str | None = "tour-out", backends: list[str] | None = None,
             quick: bool = False, progress: bool = True,
             print_fn: Callable[..., None] = print) -> dict[str, Any]:  # fmt: skip
    """Run the tour; returns the JSON-able results (see the module docstring)."""
    from tqdm import tqdm

    from . import data
    from .generate import generate
    from .hw.devices import cpu_spec
    from .train import evaluate

    t_start = time.time()
    names = backends or backends_mod.available()
    for b in names:
        backends_mod.get(b)  # fail early, naming the extra to install
    cpu = cpu_spec(measure=True, refresh=True)  # a tour is a measurement: measure this machine now
    bandwidth = cpu.bandwidth / 1e9
    cache: dict[str, GPT] = {}
    teacher, _ = build_variant("fp32", cache)
    tok = teacher.tokenizer
    val_ids = data.encode_split("val", tok)[: (VAL_TOKENS_QUICK if quick else VAL_TOKENS) + 1]

    print_fn("== minillm tour")
    print_fn(f"this CPU: measured memory bandwidth {bandwidth:.1f} GB/s, float32 matmul "
             f"{cpu.peak('fp32') / 1e9:.0f} GFLOP/s; backends: {', '.join(names)}")
    prompt = "ROMEO:\n"
    out = generate(teacher, [tok.encode(prompt)], 160, temperature=0.8, top_k=40, seed=0)
    print_fn("\n-- the teacher writes (temperature 0.8, top-k 40, seed 0):\n" + tok.decode(out[0].tolist()) + "\n")

    variants = [v[0] for v in VARIANTS]
    new_tokens, prompt_tokens = (16, 8) if quick else (32, 16)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(variants) * (1 + len(names)), desc="tour", disable=not progress)
    for name in variants:
        try:
            model, note = build_variant(name, cache)
        except FileNotFoundError as e:  # a shipped model deleted or not yet trained
            bar.write(f"skipping {name}: {e}")
            bar.update(1 + len(names))
            continue
        bar.set_postfix_str(f"{name}: eval")
        val = evaluate(model, val_ids)["loss"]
        bar.update(1)
        for b in names:
            bar.set_postfix_str(f"{name}: {b}")
            time.sleep(SETTLE_S)  # let the previous step's thread pools stop spinning
            res = bench_decode(model, b, prompt_tokens, new_tokens, repeat=1 if quick else 2,
                               bandwidth_gb_s=bandwidth)  # fmt: skip
            rows.append({"variant": name, "backend": b, "weights": _weights_label(model), "note": note,
                         "params": model.n_params, "bytes": model.nbytes, "val_loss": round(val, 4),
                         "decode_tok_s": res["decode_tok_s"], "prefill_tok_s": res["prefill_tok_s"],
                         "bytes_per_token": res["bytes_per_token"], "roofline_tok_s": res["roofline_tok_s"],
                         "roofline_frac": res["roofline_frac"], "warmup_s": res["warmup_s"]})  # fmt: skip
            bar.update(1)
    bar.close()
    result = {"machine": machine_info() | {"bandwidth_gb_s": round(bandwidth, 2),
                                           "peak_gflops_fp32": round(cpu.peak("fp32") / 1e9, 1)},
              "quick": quick, "val_tokens": int(len(val_ids) - 1), "wall_s": round(time.time() - t_start, 1),
              "rows": rows}  # fmt: skip
    print_fn(format_table(result))
    if json_path:
        from .io import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")
        print_fn(f"wrote {json_path}")
    if out_dir:
        for path in save_plots(result, Path(out_dir)):
            print_fn(f"wrote {path}")
    print_fn(f"tour finished in {result['wall_s']:.0f} s")
    return result


def _by_variant(result: dict[str, Any]) -> tuple[list[str], list[tuple[str, dict[str, dict[str, Any]]]]]:
    """(backend names, [(variant, {backend: row})]) in the order the tour measured them."""
    rows = result["rows"]
    names = list(dict.fromkeys(r["backend"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    return names, [(v, {r["backend"]: r for r in rows if r["variant"] == v}) for v in variants]


def format_table(result: dict[str, Any]) -> str:
    """One plain-text table: a row per variant, a decode tokens/s column per backend."""
    names, groups = _by_variant(result)
    head = ["variant", "params", "bytes", "val loss"] + [f"{b} tok/s (limit)" for b in names]
    lines = []
    for v, rs in groups:
        r0 = next(iter(rs.values()))
        cells = [v, f"{r0['params']:,}", f"{r0['bytes']:,}", f"{r0['val_loss']:.4f}"]
        cells += [f"{rs[b]['decode_tok_s']:,.0f} ({rs[b]['roofline_tok_s']:,.0f})" for b in names]
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # fmt: skip
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), sep, *map(fmt, lines)])


def markdown_table(result: dict[str, Any]) -> str:
    """The same table as Markdown, for the docs' results page and the README."""
    names, groups = _by_variant(result)
    head = ["variant", "params", "stored bytes", "val loss (nats/char)"] + [f"{b} decode tok/s" for b in names]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, rs in groups:
        r0 = next(iter(rs.values()))
        cells = [f"`{v}`", f"{r0['params']:,}", f"{r0['bytes']:,}", f"{r0['val_loss']:.4f}"]
        cells += [f"{rs[b]['decode_tok_s']:,.0f}" for b in names]
        out.append("| " + " | ".join(cells) + " |")
    m = result["machine"]
    out.append("")
    out.append(f"Measured by `minillm tour` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
               f"{m['bandwidth_gb_s']} GB/s measured bandwidth; validation loss over the first "
               f"{result['val_tokens']:,} characters of the held-out plays.")  # fmt: skip
    return "\n".join(out)


def save_plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Bytes-vs-loss Pareto front, tokens/s per variant and backend against the limit, roofline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    first = {v: next(r for r in rows if r["variant"] == v) for v in variants}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = sorted((first[v]["bytes"], first[v]["val_loss"], v) for v in variants)
    front, best = [], math.inf
    for b, loss, _ in pts:
        if loss < best:
            front.append((b, loss))
            best = loss
    ax.plot(*zip(*front, strict=True), "--", color="0.6", label="Pareto front")
    for b, loss, v in pts:
        ax.scatter(b, loss)
        ax.annotate(v, (b, loss), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("Size vs quality")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "pareto.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    names = list(dict.fromkeys(r["backend"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(names)
    x = np.arange(len(variants))
    for i, b in enumerate(names):
        vals = [next(r["decode_tok_s"] for r in rows if r["variant"] == v and r["backend"] == b) for v in variants]
        ax.bar(x + i * width, vals, width, label=b)
    limits = [first[v]["roofline_tok_s"] for v in variants]
    ax.plot(x + 0.4 - width / 2, limits, "k_", markersize=20, label="bandwidth limit")
    ax.set_xticks(x + 0.4 - width / 2, variants, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("decode tokens/s (batch 1)")
    ax.set_title("Decode speed per variant and backend")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "decode_speed.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    from .hw.roofline import roofline_plot

    pts = []
    for r in rows:
        if r["variant"] == "fp32":
            flops = 2 * r["params"] * r["decode_tok_s"]
            pts.append((f"teacher fp32 decode ({r['backend']})", 2 * r["params"] / r["bytes_per_token"], flops))
    fig = roofline_plot(devices=("cpu",), dtype="fp32", points=pts)
    paths.append(out_dir / "roofline.png")
    fig.savefig(paths[-1], dpi=120)
    return paths


# ------------------------------------------------------------------------------------------
# Trade-offs: each method at several strengths on the teacher (issue targets alongside).
TRADEOFFS: list[tuple[str, str, str | None]] = [
    # (method, recipe applied to the teacher, shipped fine-tuned model the recipe is applied to)
    # The control: the dense teacher trained for the same 400 extra steps as the fine-tuned
    # variants, so that what fine-tuning alone buys is not credited to compression.
    ("control", "prune:0", "teacher-ft400"),
    ("quantization", "int8", None),
    ("quantization", "q8_0", None),
    ("quantization", "int6-g32", None),
    ("quantization", "q4_0", None),
    ("quantization", "int4-g32", None),
    ("quantization", "int3-g32", None),
    ("quantization", "int2-g32", None),
    ("pruning", "prune:0.25", None),
    ("pruning", "prune:0.5", None),
    ("pruning", "prune:0.75", None),
    ("pruning", "prune:0.5", "teacher-prune50"),
    ("pruning", "2:4", None),
    ("pruning", "2:4", "teacher-2of4"),
    ("low rank", "lowrank:0.75", None),
    ("low rank", "lowrank:0.5", None),
    ("low rank", "lowrank:0.25", None),
    ("low rank", "lowrank:0.5", "teacher-lowrank50"),
]
# The compression issue's targets: allowed increase of validation loss over the teacher (nats).
TARGETS = {("int8", None): 0.01, ("q8_0", None): 0.01, ("q4_0", None): 0.10, ("int4-g32", None): 0.10,
           ("prune:0.5", "teacher-prune50"): 0.05, ("2:4", "teacher-2of4"): 0.10,
           ("lowrank:0.5", "teacher-lowrank50"): 0.10}  # fmt: skip


def run_tradeoffs(json_path: str | None = None, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Validation loss and stored bytes of every `TRADEOFFS` entry on the same validation slice."""
    from tqdm import tqdm

    from . import data
    from .compress.recipe import apply_recipe
    from .train import evaluate

    teacher = load("teacher")
    val_ids = data.encode_split("val", teacher.tokenizer)[: (VAL_TOKENS_QUICK if quick else VAL_TOKENS) + 1]
    base = evaluate(teacher, val_ids)["loss"]
    rows = [{"method": "none", "recipe": "fp32", "finetuned": None, "params": teacher.n_params,
             "bytes": teacher.nbytes, "val_loss": round(base, 4), "delta": 0.0, "target": None}]  # fmt: skip
    for method, recipe, finetuned in tqdm(TRADEOFFS, desc="trade-offs", disable=not progress):
        if finetuned and not (WEIGHTS_DIR / finetuned).is_dir():
            continue
        src = load(finetuned) if finetuned else teacher
        model = GPT(src.config, params=apply_recipe(src.params, recipe), tokenizer=src.tokenizer)
        loss = evaluate(model, val_ids)["loss"]
        rows.append({"method": method, "recipe": recipe, "finetuned": finetuned, "params": model.n_params,
                     "bytes": model.nbytes, "val_loss": round(loss, 4), "delta": round(loss - base, 4),
                     "target": TARGETS.get((recipe, finetuned))})  # fmt: skip
    result = {"machine": machine_info(), "val_tokens": int(len(val_ids) - 1), "rows": rows}
    if json_path:
        from .io import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")
    return result


def tradeoffs_markdown(result: dict[str, Any]) -> str:
    """The trade-off table as Markdown, with each target met or missed (and by how much)."""
    control = next((r["val_loss"] for r in result["rows"] if r["method"] == "control"), None)
    out = ["| method | recipe | fine-tuned | stored values | stored bytes | val loss | Δ vs teacher | "
           "Δ vs control | target (Δ vs teacher) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        if r["target"] is None:
            verdict = ""
        elif r["delta"] <= r["target"]:
            verdict = f"≤ {r['target']}: met"
        else:
            verdict = f"≤ {r['target']}: **missed by {r['delta'] - r['target']:.3f}**"
        ft = "400 steps" if r["finetuned"] else "no"
        vs_control = f"{r['val_loss'] - control:+.4f}" if control is not None and r["finetuned"] else ""
        out.append(f"| {r['method']} | `{r['recipe']}` | {ft} | {r['params']:,} | {r['bytes']:,} | "
                   f"{r['val_loss']:.4f} | {r['delta']:+.4f} | {vs_control} | {verdict} |")  # fmt: skip
    out += ["", f"Validation loss in nats per character over the first {result['val_tokens']:,} characters of "
            f"the held-out plays; measured {result['machine']['date']}. Fine-tuned rows were trained 400 more "
            "steps (AdamW, lr 5e-4 with warmup and cosine decay) with their compression held fixed; the control "
            "row is the dense teacher given the same 400 steps, so *Δ vs control* is what the compression costs "
            "once training time is equal."]  # fmt: skip
    return "\n".join(out)
