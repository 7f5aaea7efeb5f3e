r"""Roofline model of a GPT forward step: FLOPs and bytes per op, predicted time per device.

Notation: batch $B$, tokens per sequence in this step $T$ ($T = P$ for a prefill of $P$ prompt
tokens, $T = 1$ for one decode step), $N = BT$ rows, width $C$, vocabulary $V$, $L$ layers,
$a$ bytes per activation (and per KV-cache entry), $w(K, N)$ bytes of a $K \times N$ weight
matrix in the chosen weight format. A matmul of an $N \times K$ input by a $K \times N'$ weight
costs $2NKN'$ FLOPs (a multiply and an add per MAC).

Attention pairs per sequence and head: a causal prefill has $P(P+1)/2$ (query, key) pairs, a
decode step at context length $\ell$ (the new token included) has $\ell$; each pair costs $2C$
FLOPs summed over heads for the scores $QK^\top$ and again for the weighted values.

| op | FLOPs (per layer) | bytes (per layer) |
|---|---|---|
| qkv | $6NC^2$ | $w(C,3C) + 3Ca + NCa + 3NCa$ |
| attn_scores | $2B\,\text{pairs}\,C$ | $NCa + B S C a$ (read Q, read K) |
| attn_values | $2B\,\text{pairs}\,C$ | $BSCa + NCa$ (read V, write out) |
| attn_out | $2NC^2$ | $w(C,C) + Ca + 2NCa$ |
| mlp_fc | $8NC^2$ | $w(C,4C) + 4Ca + 5NCa$ |
| mlp_proj | $8NC^2$ | $w(4C,C) + Ca + 5NCa$ |
| layernorm | $2 \cdot 7NC$ | $2(2NCa + 2Ca)$ |

with $S$ the number of keys each sequence reads ($P$ in prefill, $\ell$ in decode), plus once per
step the final LayerNorm and the LM head on $N_{out}$ rows ($B$: only the last position's logits
are needed to generate; $BP$ with ``all_logits=True``): $2 N_{out} C V$ FLOPs and
$w(C, V) + N_{out} C a + N_{out} V a$ bytes. In decode the KV cache read per step is

$$\text{KV bytes} = 2 \, L \, B \, \ell \, C \, a.$$

**Predicted time.** Each op runs alone at its own roofline (Williams et al. 2009): compute and
memory traffic overlap perfectly within an op, not at all between ops, and peak FLOP/s and
bandwidth are reachable:

$$t = \sum_{\text{ops}} \max\!\left(\frac{\text{FLOPs}}{\pi}, \frac{\text{bytes}}{\beta}\right),
\qquad P(I) = \min(\pi, \beta I).$$

**Decode bound.** One decode step must read every weight once plus the KV cache, so

$$\text{tokens/s} \le \frac{B\,\beta}{\text{bytes read per step}}.$$

Other assumptions, stated once: attention is fused (FlashAttention style: scores never touch
memory, K and V are read once per layer); bias adds, GELU, softmax and residual adds are fused
into the neighbouring op (no FLOPs or bytes counted for them); embedding lookups are ignored;
LayerNorm costs 7 FLOPs per element; biases and LayerNorm parameters are stored in the
activation format; the LM head is the tied embedding stored in the weight format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from minillm.config import GPTConfig
from minillm.hw.devices import Device, get_device

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ACT_BYTES",
    "WEIGHT_FORMATS",
    "Op",
    "WeightFormat",
    "format_report",
    "kv_cache_bytes",
    "model_ops",
    "roofline_plot",
    "roofline_report",
    "weight_bytes",
]

# Bytes per activation / KV-cache element for each compute format.
ACT_BYTES: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}

LAYERNORM_FLOPS_PER_ELEMENT = 7  # mean (1), centre (1), variance (2), scale (1), gain (1), bias (1)


@dataclass(frozen=True)
class WeightFormat:
    """How a weight matrix is stored: `block` weights along the input dimension take
    `block_bytes` bytes; `per_output_bytes` extra bytes per output column (per-channel scales)."""

    name: str
    block: int
    block_bytes: float
    per_output_bytes: int
    description: str

    def matrix_bytes(self, n_in: int, n_out: int) -> int:
        """Bytes of an ``n_in x n_out`` matrix (ragged last block padded, as block formats do)."""
        blocks = math.ceil(n_in / self.block)
        return int(round(blocks * self.block_bytes * n_out)) + self.per_output_bytes * n_out

    @property
    def bytes_per_weight(self) -> float:
        return self.block_bytes / self.block


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat("fp32", 1, 4, 0, "float32"),
        WeightFormat("fp16", 1, 2, 0, "IEEE half precision"),
        WeightFormat("bf16", 1, 2, 0, "bfloat16"),
        WeightFormat("int8", 1, 1, 4, "int8, one float32 scale per output channel"),
        WeightFormat("q8_0", 32, 34, 0, "llama.cpp Q8_0: 32 int8 + fp16 scale = 34 B"),
        WeightFormat("q4_0", 32, 18, 0, "llama.cpp Q4_0: 32 x 4 bit + fp16 scale = 18 B"),
        # As minillm.kinds.IntPerGroup stores it: per 32 weights 16 B of codes, an fp16 scale and
        # a 4-bit zero point = 18.5 B, i.e. 37 B per 64 weights.
        WeightFormat("int4-g32", 64, 37, 0,
                     "4 bit, groups of 32 with an fp16 scale and a 4-bit zero point = 18.5 B"),
    )
}

OP_NAMES = ("qkv", "attn_scores", "attn_values", "attn_out", "mlp_fc", "mlp_proj",
            "layernorm", "lm_head")


@dataclass(frozen=True)
class Op:
    """One op summed over all layers: FLOPs and bytes moved (weights and KV cache included)."""

    name: str
    flops: int
    bytes: int
    weight_bytes: int = 0
    kv_bytes: int = 0

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte."""
        return self.flops / self.bytes


def _weight_format(weights: str) -> WeightFormat:
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {list(WEIGHT_FORMATS)}, got {weights!r}")
    return WEIGHT_FORMATS[weights]


def _act_bytes(act_dtype: str) -> int:
    if act_dtype not in ACT_BYTES:
        raise ValueError(f"act_dtype must be one of {list(ACT_BYTES)}, got {act_dtype!r}")
    return ACT_BYTES[act_dtype]


def _config(config: GPTConfig | str) -> GPTConfig:
    if isinstance(config, str):
        return GPTConfig.preset(config)
    if not isinstance(config, GPTConfig):
        raise ValueError(f"config must be a GPTConfig or a preset name, got {config!r}")
    return config


def _positive_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def weight_bytes(config: GPTConfig | str, weights: str = "fp32", act_dtype: str = "fp32") -> int:
    """Bytes of all weights read by one forward step: the $L$ blocks' matrices and vectors, and
    the tied LM head (position embeddings are not streamed: one row per token).

    $L\\,[w(C,3C) + w(C,C) + w(C,4C) + w(4C,C) + 13Ca] + w(C,V) + 2Ca$.
    """
    cfg = _config(config)
    fmt = _weight_format(weights)
    a = _act_bytes(act_dtype)
    C, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    per_layer = (fmt.matrix_bytes(C, 3 * C) + fmt.matrix_bytes(C, C) + fmt.matrix_bytes(C, 4 * C)
                 + fmt.matrix_bytes(4 * C, C) + 13 * C * a)  # biases 9C + two LayerNorms 4C
    return L * per_layer + fmt.matrix_bytes(C, V) + 2 * C * a


def kv_cache_bytes(config: GPTConfig | str, context: int, batch: int = 1,
                   act_dtype: str = "fp32") -> int:
    """KV-cache bytes for `batch` sequences of `context` tokens: $2 L B \\ell C a$."""
    cfg = _config(config)
    context = _positive_int("context", context)
    batch = _positive_int("batch", batch)
    return 2 * cfg.n_layer * batch * context * cfg.n_embd * _act_bytes(act_dtype)


def model_ops(config: GPTConfig | str, weights: str = "fp32", phase: str = "decode", *,
              batch: int = 1, prompt_len: int | None = None, context: int | None = None,
              act_dtype: str = "fp32", all_logits: bool = False) -> list[Op]:
    """FLOPs and bytes of each op of one forward step, summed over layers (table above).

    Parameters
    ----------
    config : GPTConfig or preset name
    weights : str
        A key of `WEIGHT_FORMATS`.
    phase : {"prefill", "decode"}
        Prefill of `prompt_len` tokens from an empty cache, or one decode step at context
        length `context` (the new token included). Both default to ``config.block_size``.
    batch : int
        Sequences processed together.
    act_dtype : str
        Format of activations and of the KV cache (a key of `ACT_BYTES`).
    all_logits : bool
        Prefill only: compute the LM head on every position instead of the last one.
    """
    cfg = _config(config)
    fmt = _weight_format(weights)
    a = _act_bytes(act_dtype)
    B = _positive_int("batch", batch)
    if phase == "prefill":
        T = S = _positive_int("prompt_len", cfg.block_size if prompt_len is None else prompt_len)
        if T > cfg.block_size:
            raise ValueError(f"prompt_len={T} exceeds block_size={cfg.block_size}")
        pairs = T * (T + 1) // 2  # causal: query i sees keys 0..i
        n_out = B * T if all_logits else B
    elif phase == "decode":
        S = _positive_int("context", cfg.block_size if context is None else context)
        if S > cfg.block_size:
            raise ValueError(f"context={S} exceeds block_size={cfg.block_size}")
        T, pairs, n_out = 1, S, B
    else:
        raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    C, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    N = B * T  # rows through every per-token op

    def linear(name: str, k: int, n: int) -> Op:
        """An (N, k) @ (k, n) + bias layer in every block."""
        wb = fmt.matrix_bytes(k, n) + n * a  # the bias is a weight too
        act = N * k * a + N * n * a  # read input, write output
        return Op(name, L * 2 * N * k * n, L * (wb + act), L * wb)

    kv = L * B * S * C * a  # K (or V) read by every layer
    ops = [
        linear("qkv", C, 3 * C),
        Op("attn_scores", L * 2 * B * pairs * C, L * N * C * a + kv, kv_bytes=kv),
        Op("attn_values", L * 2 * B * pairs * C, kv + L * N * C * a, kv_bytes=kv),
        linear("attn_out", C, C),
        linear("mlp_fc", C, 4 * C),
        linear("mlp_proj", 4 * C, C),
        Op("layernorm",
           LAYERNORM_FLOPS_PER_ELEMENT * C * (2 * L * N + n_out),
           2 * L * (2 * N * C * a + 2 * C * a) + 2 * n_out * C * a + 2 * C * a,
           weight_bytes=(2 * L + 1) * 2 * C * a),
    ]
    head_w = fmt.matrix_bytes(C, V)
    ops.append(Op("lm_head", 2 * n_out * C * V, head_w + n_out * C * a + n_out * V * a, head_w))
    return ops


def _resolve_dtypes(weights: str, device: Device, act_dtype: str | None) -> tuple[str, str]:
    """(activation format, format whose peak applies) for `weights` on `device`.

    Float weights compute in their own format (fp32 -> fp32). Quantized weights are expanded to
    the device's 16-bit float (fp16, else bf16), else fp32, else int8 (integer-only devices).
    When the device quotes no peak for the activation format it computes in fp32 (a CPU upcasts).
    """
    if act_dtype is None:
        if weights in ("fp32", "fp16", "bf16"):
            act_dtype = weights
        else:
            act_dtype = next((d for d in ("fp16", "bf16", "fp32", "int8")
                              if d in device.peak_flops), "fp32")
    _act_bytes(act_dtype)
    for compute in (act_dtype, "fp32"):
        if compute in device.peak_flops:
            return act_dtype, compute
    raise ValueError(
        f"device {device.name!r} quotes peaks only for {sorted(device.peak_flops)}, not for "
        f"act_dtype={act_dtype!r}; pass one of those as act_dtype")


def roofline_report(config: GPTConfig | str, weights: str = "fp32",
                    device: str | Device = "h100", phase: str = "decode", *, batch: int = 1,
                    prompt_len: int | None = None, context: int | None = None,
                    act_dtype: str | None = None, all_logits: bool = False) -> dict:
    """Predicted time of one forward step on a device, op by op (what ``minillm roofline`` prints).

    Parameters are those of `model_ops`, plus `device` (a name for `get_device` or a `Device`).
    `act_dtype` defaults to the weights' own float format, or for quantized weights to the
    device's 16-bit float (see `_resolve_dtypes`).

    Returns
    -------
    dict
        JSON-serialisable: ``model``, ``weights``, ``device``, ``phase``, the resolved dtypes,
        ``peak_flops``, ``bandwidth``, ``ridge_point``, per-op rows in ``ops`` (flops, bytes,
        intensity, attainable FLOP/s, time, bound), ``total`` and the stated ``assumptions``.
    """
    cfg = _config(config)
    dev = get_device(device)
    act, compute = _resolve_dtypes(weights, dev, act_dtype)
    prompt_len = cfg.block_size if prompt_len is None else prompt_len
    context = cfg.block_size if context is None else context
    ops = model_ops(cfg, weights, phase, batch=batch, prompt_len=prompt_len, context=context,
                    act_dtype=act, all_logits=all_logits)  # validates all of these
    tokens = batch * (prompt_len if phase == "prefill" else 1)
    peak, bw = dev.peak(compute), dev.bandwidth
    rows = []
    for op in ops:
        t_compute, t_memory = op.flops / peak, op.bytes / bw
        rows.append(dict(name=op.name, flops=op.flops, bytes=op.bytes,
                         weight_bytes=op.weight_bytes, kv_bytes=op.kv_bytes,
                         intensity=op.intensity, attainable_flops=min(peak, bw * op.intensity),
                         time_s=max(t_compute, t_memory),
                         bound="compute" if t_compute > t_memory else "memory"))
    flops = sum(op.flops for op in ops)
    nbytes = sum(op.bytes for op in ops)
    time_s = sum(r["time_s"] for r in rows)
    return dict(
        model=cfg.to_dict(), n_params=cfg.n_params, weights=weights,
        weight_bytes_per_param=WEIGHT_FORMATS[weights].bytes_per_weight,
        act_dtype=act, compute_dtype=compute,
        device=dev.name, device_description=dev.description, device_source=dev.source,
        peak_flops=peak, bandwidth=bw, ridge_point=peak / bw,
        phase=phase, batch=batch, tokens=tokens,
        prompt_len=prompt_len if phase == "prefill" else None,
        context=context if phase == "decode" else None,
        ops=rows,
        total=dict(
            flops=flops, bytes=nbytes, weight_bytes=sum(op.weight_bytes for op in ops),
            kv_bytes=sum(op.kv_bytes for op in ops), intensity=flops / nbytes, time_s=time_s,
            tokens_per_s=tokens / time_s,
            # Upper bounds from one resource alone (bandwidth: the decode bound B*beta/bytes).
            memory_bound_tokens_per_s=tokens * bw / nbytes,
            compute_bound_tokens_per_s=tokens * peak / flops,
        ),
        assumptions=[
            "time = sum over ops of max(flops/peak, bytes/bandwidth): each op alone at its "
            "roofline, no overlap between ops, peak and bandwidth fully reachable",
            "fused attention (scores stay on chip; K and V read once per layer); bias, GELU, "
            "softmax and residual adds fused (not counted); embeddings ignored",
            "every weight streamed from main memory once per step (no reuse across steps, "
            "even if the model would fit in on-chip memory)",
            f"weights {weights}; activations and KV cache {act}; matmuls at the {compute} peak",
        ],
    )


def _si(x: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _seconds(t: float) -> str:
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if t >= factor:
            return f"{t / factor:.4g} {unit}"
    return f"{t / 1e-9:.4g} ns"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def format_report(report: dict) -> str:
    """A plain-text table of a `roofline_report` dict."""
    m = report["model"]
    lines = [
        f"model    L={m['n_layer']} H={m['n_head']} C={m['n_embd']} V={m['vocab_size']} "
        f"T={m['block_size']} ({report['n_params'] / 1e6:.1f} M params)",
        f"weights  {report['weights']} ({report['weight_bytes_per_param']:.4g} B/weight), "
        f"activations and KV cache {report['act_dtype']}",
        f"device   {report['device']}: {report['device_description']}; "
        f"peak {_si(report['peak_flops'], 'FLOP/s')} ({report['compute_dtype']}), "
        f"bandwidth {_si(report['bandwidth'], 'B/s')}, ridge {report['ridge_point']:.3g} FLOP/B",
    ]
    if report["phase"] == "decode":
        lines.append(f"phase    decode, batch {report['batch']}, context {report['context']}")
    else:
        lines.append(f"phase    prefill, batch {report['batch']}, prompt {report['prompt_len']}")
    lines.append("")
    lines.append(f"{'op':<12}{'FLOPs':>12}{'bytes':>12}{'FLOP/B':>9}{'time':>12}  bound")
    for r in report["ops"]:
        lines.append(f"{r['name']:<12}{_si(r['flops'], ''):>12}{_si(r['bytes'], 'B'):>12}"
                     f"{r['intensity']:>9.3g}{_seconds(r['time_s']):>12}  {r['bound']}")
    t = report["total"]
    lines.append(f"{'total':<12}{_si(t['flops'], ''):>12}{_si(t['bytes'], 'B'):>12}"
                 f"{t['intensity']:>9.3g}{_seconds(t['time_s']):>12}")
    lines.append("")
    lines.append(f"predicted {_rate(t['tokens_per_s'])} tokens/s; memory alone allows "
                 f"<= {_rate(t['memory_bound_tokens_per_s'])}, compute alone "
                 f"<= {_rate(t['compute_bound_tokens_per_s'])} tokens/s")
    lines.append(f"bytes per step: weights {_si(t['weight_bytes'], 'B')}, "
                 f"KV cache {_si(t['kv_bytes'], 'B')}")
    lines.extend(f"assumes: {s}" for s in report["assumptions"])
    return "\n".join(lines)


def roofline_plot(devices: Iterable[str | Device] | str | Device = ("h100",), dtype: str | None = None,
                  points: Iterable[tuple[str, float, float]] | None = None, ax: Axes | None = None) -> Figure:
    """Draw rooflines $\\min(\\pi, \\beta I)$ on log-log axes, optionally with measured points.

    Parameters
    ----------
    devices : iterable of str or Device
        Devices to draw (``"cpu"`` measures this machine).
    dtype : str, optional
        Number format of the peak; default: each device's highest peak.
    points : iterable of (name, intensity, flops_per_s), optional
        Measured kernels to place on the plot.
    ax : matplotlib Axes, optional
        Draw into it instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(devices, (str, Device)):
        devices = [devices]
    devs = [get_device(d) for d in devices]
    if not devs:
        raise ValueError("devices must name at least one device")
    points = list(points or [])
    for p in points:
        if len(p) != 3 or not (p[1] > 0 and p[2] > 0):
            raise ValueError(f"points must be (name, intensity > 0, flops_per_s > 0), got {p!r}")
    if ax is None:
        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)  # headless (Agg) canvas, independent of pyplot's backend
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    lo = min([0.1] + [p[1] / 2 for p in points])
    hi = max([1e4] + [p[1] * 2 for p in points])
    intensity = np.logspace(np.log10(lo), np.log10(hi), 400)
    for d in devs:
        dt = dtype or max(d.peak_flops, key=d.peak_flops.get)
        line, = ax.loglog(intensity, d.attainable(intensity, dt),
                          label=f"{d.name} ({dt}, ridge {d.ridge_point(dt):.3g} FLOP/B)")
        ax.axvline(d.ridge_point(dt), color=line.get_color(), linestyle=":", linewidth=0.8)
    for name, i, f in points:
        ax.plot(i, f, "o", color="black")
        ax.annotate(name, (i, f), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.set_title("Roofline: min(peak, bandwidth x intensity)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
