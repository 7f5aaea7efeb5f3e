r"""Claims checked: six statements about compression and speed, each computed instead of believed.

Every function here computes the numbers behind one claim of the "Claims checked" page
(`docs/claims.md`) and lesson 11, so that the page and the lesson call the same code.

**(a) Soft-thresholding is a shrinkage operator, not a quantizer.**

$$S_\theta(x) = \operatorname{sign}(x)\,\max(0, |x| - \theta)
  = \arg\min_z\ \tfrac12 (z - x)^2 + \theta |z|$$

is the proximal operator of $\theta\lVert\cdot\rVert_1$ (LASSO, ISTA): it zeroes $|x| \le \theta$ and
moves every other value $\theta$ toward zero. Its output takes as many distinct values as its
input (nothing gets cheaper to store) and its error is biased, $\operatorname{sign}(x)(S_\theta(x) -
x) = -\min(|x|, \theta)$. A quantizer $Q(x) = s\,\operatorname{round}(x/s)$ maps onto $2^b$ levels
with an error of either sign bounded by $s/2$. `soft_threshold`, `shrinkage_stats`,
`soft_threshold_params`.

**(b) Overlapping compute and communication gives the max, never the min.** A stream of
chunks, each transferred and then computed, on one link and one compute unit, takes

$$\max\Big(\sum_j t_j,\ \sum_j c_j\Big) \;\le\; T \;\le\; \sum_j (t_j + c_j),$$

the right end with no overlap, the left approached with overlap and many small chunks. With
$n$ equal chunks and overlap, $T = t + c + (n-1)\max(t, c)$. `flow_shop` simulates any number of
stages (a GPipe pipeline of devices is the same recurrence).

**(c) A pruned model's loss is $J(w \odot M)$**, a function of the dense weights $w$ with the mask
$M$ fixed, and its gradient by the chain rule is

$$\nabla_w\, J(w \odot M) = \nabla J(w \odot M) \odot M,$$

the gradient evaluated at the *pruned* weights and masked. (``J(w)·M`` is not even a number.)
`masked_loss_and_grads`, `finite_difference`.

**(d) $n$ sequences in parallel are not $n\times$ faster.** A decode step reads every weight once
for the whole batch, so while memory-bound, tokens/s grows with the batch $B$ — but each step
also reads $B$ KV caches and does $B$ times the FLOPs, so the gain saturates at the compute roof,
and every sequence waits for the whole step (per-token latency grows). `batch_sweep`.

**(e) "Quantization makes it 10× faster"** depends on the kernel: a backend that dequantizes
to float32 before multiplying reads *more* bytes than the float32 model; a fused kernel reads
the codes and can approach the ratio of bytes, at best. `quantized_speed`.

**(f) The KD worked example** (labels $[0,1,0]$, student $[.3,.5,.2]$, teacher $[.1,.8,.1]$, claimed
loss 0.21) recomputed under the standard definitions. `kd_worked_example`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kinds import block_matmul_names, check_array
from .nn.gpt import GPT

# ------------------------------------------------------------------------------------------
# (a) Soft-thresholding versus quantization.


def soft_threshold(x: Any, theta: Any) -> np.ndarray:
    """$S_\\theta(x) = \\operatorname{sign}(x)\\max(0, |x| - \\theta)$, elementwise.

    `theta` (>= 0) broadcasts against `x` (e.g. one threshold per output column).

    >>> soft_threshold(np.array([-3.0, -0.5, 0.0, 0.2, 2.0]), 1.0).tolist()
    [-2.0, 0.0, 0.0, 0.0, 1.0]
    """
    x = check_array("x", x)
    theta = check_array("theta", theta)
    if np.any(theta < 0):
        raise ValueError(f"theta must be >= 0, got a minimum of {theta.min()}")
    shrunk = np.abs(x) - theta
    return np.where(shrunk > 0, np.sign(x) * shrunk, 0.0)  # +0.0 where zeroed, never -0.0


def int8_step(w: Any) -> np.ndarray:
    """The step $s_o = \\max_i |W_{io}| / 127$ of symmetric per-column int8 (one per output column)."""
    w = check_array("w", w, ndim=2)
    return np.abs(w).max(axis=0) / 127


def shrinkage_stats(w: Any, w_hat: Any) -> dict[str, float]:
    """How an approximation `w_hat` of `w` differs from it.

    Returns ``distinct`` (number of distinct values of `w_hat`), ``distinct_input``,
    ``zero_fraction`` (fraction of exact zeros in `w_hat`), ``bias_toward_zero`` (the mean of
    $\\operatorname{sign}(w)(\\hat w - w)$: negative means values were pulled toward zero),
    ``mean_error`` (mean of $\\hat w - w$), ``max_abs_error`` and ``rel_error``
    ($\\lVert \\hat w - w\\rVert_F / \\lVert w \\rVert_F$).
    """
    w = check_array("w", w).astype(np.float64)
    w_hat = check_array("w_hat", w_hat).astype(np.float64)
    if w.shape != w_hat.shape:
        raise ValueError(f"w and w_hat must have the same shape, got {w.shape} and {w_hat.shape}")
    err = w_hat - w
    return {
        "distinct": int(np.unique(w_hat).size),
        "distinct_input": int(np.unique(w).size),
        "zero_fraction": float(np.mean(w_hat == 0)),
        "bias_toward_zero": float(np.mean(np.sign(w) * err)),
        "mean_error": float(np.mean(err)),
        "max_abs_error": float(np.max(np.abs(err))),
        "rel_error": float(np.linalg.norm(err) / np.linalg.norm(w)),
    }


def soft_threshold_params(params: dict[str, Any], fraction_of_step: float = 0.5) -> dict[str, Any]:
    """A new params dict whose block matmul weights are soft-thresholded.

    Each weight column $o$ gets $\\theta_o$ = `fraction_of_step` $\\cdot\\, s_o$, with $s_o$ the
    per-column int8 step (`int8_step`); 0.5 zeroes exactly the weights that int8 rounding
    sends to 0. Other entries are shared with `params`, not copied.
    """
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    if isinstance(fraction_of_step, bool) or not isinstance(fraction_of_step, (int, float)) \
            or not (0 <= fraction_of_step < np.inf):  # fmt: skip
        raise ValueError(f"fraction_of_step must be a finite number >= 0, got {fraction_of_step!r}")
    out = dict(params)
    for name in block_matmul_names(params):
        w = check_array(name, params[name], ndim=2)
        out[name] = soft_threshold(w, fraction_of_step * int8_step(w)).astype(w.dtype)
    return out


# ------------------------------------------------------------------------------------------
# (b) Overlap: a flow shop of stages (transfer -> compute, or device 0 -> device 1 -> ...).


@dataclass(frozen=True)
class FlowShop:
    """A simulated schedule: job $j$ runs on stage $s$ from ``start[s, j]`` to ``end[s, j]``."""

    start: np.ndarray  # (S, J)
    end: np.ndarray  # (S, J)

    @property
    def makespan(self) -> float:
        """Time until the last job leaves the last stage."""
        return float(self.end[-1, -1])

    @property
    def busy_fraction(self) -> np.ndarray:
        """Per stage: busy time / makespan (1 - bubble fraction)."""
        return (self.end - self.start).sum(axis=1) / self.makespan


def flow_shop(durations: Any, max_in_flight: int | None = None) -> FlowShop:
    """Simulate jobs passing through stages in order, one job per stage at a time.

    Job $j$ starts stage $s$ when it has left stage $s-1$ and stage $s$ has finished job $j-1$:

    $$e_{s,j} = \\max(e_{s-1,j},\\ e_{s,j-1}) + d_{s,j}.$$

    Parameters
    ----------
    durations : array_like, shape (S, J)
        Time of job $j$ on stage $s$ (>= 0). For claim (b): row 0 transfers, row 1 computes.
    max_in_flight : int, optional
        At most this many jobs between entering stage 0 and leaving the last stage (the number
        of buffers): job $j$ also waits for job $j - k$ to finish. 1 means no overlap at all
        (the sum of everything); None means unlimited.

    Examples
    --------
    >>> flow_shop([[1, 1, 1], [2, 2, 2]]).makespan   # t + c + (n-1) max(t, c)
    7.0
    >>> flow_shop([[1, 1, 1], [2, 2, 2]], max_in_flight=1).makespan   # no overlap: the sum
    9.0
    """
    d = check_array("durations", durations, ndim=2).astype(np.float64)
    if d.shape[0] < 1 or d.shape[1] < 1:
        raise ValueError(f"durations must have shape (stages, jobs) with both >= 1, got {d.shape}")
    if np.any(d < 0):
        raise ValueError("durations must be >= 0")
    if max_in_flight is not None and (isinstance(max_in_flight, bool) or not isinstance(
            max_in_flight, (int, np.integer)) or max_in_flight < 1):  # fmt: skip
        raise ValueError(f"max_in_flight must be a positive int or None, got {max_in_flight!r}")
    S, J = d.shape
    start, end = np.zeros((S, J)), np.zeros((S, J))
    for j in range(J):
        for s in range(S):
            ready = end[s - 1, j] if s else 0.0  # the job left the previous stage
            free = end[s, j - 1] if j else 0.0  # the stage finished the previous job
            if s == 0 and max_in_flight is not None and j >= max_in_flight:
                ready = max(ready, end[-1, j - max_in_flight])  # a buffer is free again
            start[s, j] = max(ready, free)
            end[s, j] = start[s, j] + d[s, j]
    return FlowShop(start, end)


def gantt(schedule: FlowShop, labels: Sequence[str] | None = None, ax: Any = None,
          title: str | None = None) -> Any:  # fmt: skip
    """Draw a schedule as a timing diagram (one row per stage, one colour per job)."""
    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 0.6 + 0.5 * schedule.start.shape[0]))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    S, J = schedule.start.shape
    labels = list(labels) if labels is not None else [f"stage {s}" for s in range(S)]
    colours = [f"C{j % 10}" for j in range(J)]
    for s in range(S):
        for j in range(J):
            w = schedule.end[s, j] - schedule.start[s, j]
            if w > 0:
                ax.barh(s, w, left=schedule.start[s, j], color=colours[j], edgecolor="black",
                        linewidth=0.5)
                ax.text(schedule.start[s, j] + w / 2, s, str(j), ha="center", va="center",
                        fontsize=7)
    ax.set_yticks(range(S), labels)
    ax.invert_yaxis()
    ax.set_xlabel("time")
    ax.set_title(title or f"makespan {schedule.makespan:g}")
    return ax.figure


# ------------------------------------------------------------------------------------------
# (c) The loss and gradient of a pruned model.


def masked_loss_and_grads(model: GPT, masks: dict[str, np.ndarray], idx: Any,
                          targets: Any) -> tuple[float, dict[str, np.ndarray]]:  # fmt: skip
    """$J(w \\odot M)$ and $\\nabla_w J(w \\odot M) = \\nabla J(w \\odot M) \\odot M$.

    `model` holds the dense weights $w$ (float64 for gradient checks); `masks` maps names to
    bool keep-masks. Entries without a mask are unmasked ($M = 1$).
    """
    params = dict(model.params)
    for name, m in masks.items():
        if name not in params:
            raise ValueError(f"mask {name!r} has no matching parameter")
        m = np.asarray(m)
        if m.dtype != np.bool_ or m.shape != params[name].shape:
            raise ValueError(f"mask {name!r} must be bool of shape {params[name].shape}, "
                             f"got {m.dtype} {m.shape}")
        params[name] = params[name] * m  # w ⊙ M
    pruned = GPT(model.config, params=params)
    loss, grads = pruned.loss_and_grads(idx, targets)  # ∇J evaluated at w ⊙ M
    for name, m in masks.items():
        grads[name] = grads[name] * m  # chain rule: d(w ⊙ M)/dw = M
    return loss, grads


def finite_difference(f: Callable[[np.ndarray], float], w: np.ndarray, coords: Sequence[tuple],
                      h: float = 1e-5) -> np.ndarray:  # fmt: skip
    """Central differences $(f(w + h e_k) - f(w - h e_k)) / 2h$ at the given coordinates of `w`.

    `f` takes an array shaped like `w` (a fresh copy per evaluation).
    """
    out = []
    for k in coords:
        plus, minus = w.copy(), w.copy()
        plus[k] += h
        minus[k] -= h
        out.append((f(plus) - f(minus)) / (2 * h))
    return np.array(out)


# ------------------------------------------------------------------------------------------
# (d) and (e): measured speed next to the roofline.


def _decode_prediction(model: GPT, batch: int, context: int, weights: str, device: Any) -> dict:
    from .hw.roofline import roofline_report

    r = roofline_report(model.config, weights=weights, device=device, phase="decode",
                        batch=batch, context=context, act_dtype="fp32")  # fmt: skip
    t = r["total"]
    return {"roofline_tok_s": t["tokens_per_s"], "memory_bound_tok_s": t["memory_bound_tokens_per_s"],
            "compute_bound_tok_s": t["compute_bound_tokens_per_s"], "bytes_per_step": t["bytes"],
            "flops_per_step": t["flops"]}  # fmt: skip


def batch_sweep(model: GPT, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16), backend: str = "numpy",
                prompt_tokens: int = 16, new_tokens: int = 32, repeat: int = 3,
                device: Any = "cpu") -> list[dict[str, Any]]:  # fmt: skip
    """Decode throughput and per-token latency for each batch size, next to the roofline.

    Each row: ``batch``, measured ``decode_tok_s`` (all sequences together), ``ms_per_step``
    (the latency every sequence sees per token), ``speedup`` over batch 1, and the roofline
    prediction for the dense float32 model on `device` (``roofline_tok_s``, the decode bound
    ``memory_bound_tok_s`` $= B\\beta/\\text{bytes per step}$, ``compute_bound_tok_s``
    $= \\pi / \\text{FLOPs per token}$, and ``bytes_per_step``, ``flops_per_step``).

    The step's bytes come from `minillm.hw.roofline` (weights once, KV cache and activations
    per sequence), not from `bench_decode`, whose ``bytes_per_token`` counts one sequence's
    KV cache whatever the batch.
    """
    from .bench import bench_decode
    from .hw.devices import get_device

    dev = get_device(device)
    rows = []
    for b in batch_sizes:
        r = bench_decode(model, backend=backend, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                         repeat=repeat, batch=int(b))  # fmt: skip
        row = {"batch": int(b), "decode_tok_s": r["decode_tok_s"],
               "ms_per_step": r["decode_ms_per_token"]}  # fmt: skip
        row |= _decode_prediction(model, int(b), prompt_tokens + new_tokens // 2, "fp32", dev)
        rows.append(row)
    for row in rows:
        row["speedup"] = row["decode_tok_s"] / rows[0]["decode_tok_s"]
    return rows


QUANT_METHODS = ("fp32", "int8", "q8_0", "q4_0")


def quantized_speed(model: GPT, methods: Sequence[str] = QUANT_METHODS,
                    backends: Sequence[str] | None = None, prompt_tokens: int = 8,
                    new_tokens: int = 16, repeat: int = 2,
                    device: Any = "cpu") -> list[dict[str, Any]]:  # fmt: skip
    """Batch-1 decode speed of `model` with its weights in each format, on each backend.

    `methods` are ``"fp32"`` (the model as given) and methods of
    `minillm.compress.quantize.quantize_params` (``"int8"``, ``"q8_0"``, ``"q4_0"``, ...).
    Each row: ``backend``, ``method``, ``bytes_per_token`` (the stored bytes a decode step must
    read: block weights and the tied embedding / LM head in their format, the float32 norms,
    biases and position row, the KV cache),
    measured ``decode_tok_s`` and ``ms_per_token``, ``speedup`` over the first method (fp32 by
    default) on the same backend, ``bytes_ratio`` (its bytes / these bytes: the most a
    memory-bound kernel can gain) and
    ``memory_bound_tok_s`` $= \beta / \text{bytes per token}$ with the bandwidth of `device`.
    """
    from . import backends as backends_mod
    from .bench import bench_decode
    from .compress.quantize import quantize_params
    from .hw.devices import get_device

    bandwidth = get_device(device).bandwidth
    backends = list(backends) if backends is not None else backends_mod.available()
    variants = {}
    for m in methods:
        params = model.params if m == "fp32" else quantize_params(model.params, m)
        variants[m] = GPT(model.config, params=params)
    rows = []
    for be in backends:
        first = None
        for m in methods:
            r = bench_decode(variants[m], backend=be, prompt_tokens=prompt_tokens,
                             new_tokens=new_tokens, repeat=repeat)  # fmt: skip
            first = first or r
            rows.append({"backend": be, "method": m, "bytes_per_token": r["bytes_per_token"],
                         "decode_tok_s": r["decode_tok_s"], "ms_per_token": r["decode_ms_per_token"],
                         "speedup": r["decode_tok_s"] / first["decode_tok_s"],
                         "bytes_ratio": first["bytes_per_token"] / r["bytes_per_token"],
                         "memory_bound_tok_s": bandwidth / r["bytes_per_token"]})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------
# (f) The knowledge-distillation worked example.


def kd_worked_example(student: Sequence[float] = (0.3, 0.5, 0.2),
                      teacher: Sequence[float] = (0.1, 0.8, 0.1), label: int = 1,
                      claimed: float = 0.21) -> dict[str, Any]:  # fmt: skip
    """Every standard loss of the example, read as probabilities and (a common slip) as logits.

    Returns ``{"probabilities": {...}, "logits": {...}, "claimed": claimed, "matches": [...]}``
    where ``matches`` lists the quantities that round to `claimed` at its number of decimals.
    As probabilities the keys are those of `minillm.compress.distill.loss_terms_from_probs`
    plus ``mean_of_both_kl``; as logits (softmax applied first, $T = 1$ and $T = 2$) they are
    ``ce``, ``kl_teacher_student``, ``t2_kl_T2`` ($T^2\\,\\mathrm{KL}$ at $T = 2$).
    """
    from .compress import distill

    probs = distill.loss_terms_from_probs(student, teacher, label)
    probs["mean_of_both_kl"] = (probs["kl_teacher_student"] + probs["kl_student_teacher"]) / 2
    s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    logits = {
        "ce": distill.cross_entropy(s, np.int64(label))[0],
        "kl_teacher_student": distill.kd_loss(s, t, 1.0),
        "t2_kl_T2": distill.kd_loss(s, t, 2.0),
    }
    text = repr(float(claimed))
    decimals = len(text.split(".")[1]) if "." in text else 0
    matches = [f"{where}.{k}" for where, d in (("probabilities", probs), ("logits", logits))
               for k, v in d.items() if round(v, decimals) == round(claimed, decimals)]  # fmt: skip
    return {"probabilities": probs, "logits": logits, "claimed": claimed, "matches": matches}
