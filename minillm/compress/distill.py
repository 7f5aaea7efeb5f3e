r"""Knowledge distillation: train a small student on a large teacher's soft targets.

Hinton et al. (2015) soften both distributions with a temperature $T$,
$p^{(T)} = \operatorname{softmax}(z / T)$, and add the KL divergence from the teacher's to the
student's to the ordinary cross-entropy on the labels:

$$L = \alpha\,\mathrm{CE}\big(y, \operatorname{softmax}(s)\big)
    + (1 - \alpha)\,T^2\,\mathrm{KL}\big(p_t^{(T)} \,\big\|\, p_s^{(T)}\big).$$

The gradient of the soft term is $\partial (T^2\,\mathrm{KL}) / \partial s = T\,(p_s^{(T)} -
p_t^{(T)})$: the $T^2$ factor keeps its size comparable to the hard term's as $T$ grows.

Everything is computed from log-softmax with the row maximum subtracted, so logits of any
size (1e4 and beyond) give finite losses; a teacher probability that underflows to 0
contributes $0 \cdot \log 0 = 0$. Losses are means over rows (every leading axis is a row:
(B, T, V) logits are B·T rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kinds import check_array, check_fraction


def log_softmax(z: np.ndarray) -> np.ndarray:
    """$\\log\\operatorname{softmax}(z)$ over the last axis, computed stably as
    $z - m - \\log\\sum e^{z - m}$ with $m$ the row maximum."""
    shifted = z - np.max(z, axis=-1, keepdims=True)  # <= 0, so exp never overflows
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _rows(name: str, z: Any) -> np.ndarray:
    z = check_array(name, z)
    if z.ndim < 1 or z.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., V) with V >= 1, got {z.shape}")
    z = z.reshape(-1, z.shape[-1])
    return z.astype(np.result_type(z.dtype, np.float32), copy=False)  # float64 stays float64


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float, np.integer, np.floating)
    ) or not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _pair(student_logits: Any, teacher_logits: Any) -> tuple[np.ndarray, np.ndarray]:
    s, t = _rows("student_logits", student_logits), _rows("teacher_logits", teacher_logits)
    if np.shape(student_logits) != np.shape(teacher_logits):
        raise ValueError(f"student_logits and teacher_logits must have the same shape, "
                         f"got {np.shape(student_logits)} and {np.shape(teacher_logits)}")
    dtype = np.result_type(s, t)
    return s.astype(dtype, copy=False), t.astype(dtype, copy=False)


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float = 1.0) -> float:
    """Mean over rows of $T^2\\,\\mathrm{KL}(\\operatorname{softmax}(t/T) \\,\\|\\,
    \\operatorname{softmax}(s/T))$.

    >>> round(kd_loss([.3, .5, .2], [.1, .8, .1], temperature=2.0), 12)
    0.025020663522
    """
    s, t = _pair(student_logits, teacher_logits)
    T = _check_temperature(temperature)
    log_ps, log_pt = log_softmax(s / T), log_softmax(t / T)
    p_t = np.exp(log_pt)
    kl = np.sum(p_t * (log_pt - log_ps), axis=-1)  # (rows,); p_t = 0 gives 0 * finite = 0
    return float(T * T * np.mean(kl))


def kd_loss_grad(student_logits: Any, teacher_logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Gradient of `kd_loss` w.r.t. the student logits: $T\\,(p_s - p_t) / N_{\\text{rows}}$.

    Shaped like `student_logits`.
    """
    s, t = _pair(student_logits, teacher_logits)
    T = _check_temperature(temperature)
    p_s, p_t = np.exp(log_softmax(s / T)), np.exp(log_softmax(t / T))
    return (T * (p_s - p_t) / s.shape[0]).reshape(np.shape(student_logits))


def cross_entropy(logits: Any, targets: Any) -> tuple[float, np.ndarray]:
    """Mean cross-entropy $-\\log \\operatorname{softmax}(s)_y$ over rows, and its gradient
    $(\\operatorname{softmax}(s) - \\text{onehot}(y)) / N$.

    >>> round(cross_entropy([.3, .5, .2], 1)[0], 14)
    0.93983106084446
    """
    z = _rows("logits", logits)
    y = np.asarray(targets)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"targets must be integer class ids, got dtype {y.dtype}")
    if y.shape != np.shape(logits)[:-1]:
        raise ValueError(f"targets must have shape {np.shape(logits)[:-1]} (logits without the "
                         f"last axis), got {y.shape}")
    y = y.reshape(-1)
    V = z.shape[-1]
    if y.size and (y.min() < 0 or y.max() >= V):
        bad = y[(y < 0) | (y >= V)][0]
        raise ValueError(f"targets must be class ids in 0..{V - 1}, got {bad}")
    log_p = log_softmax(z)
    rows = np.arange(z.shape[0])
    loss = float(-np.mean(log_p[rows, y]))
    grad = np.exp(log_p)
    grad[rows, y] -= 1
    return loss, (grad / z.shape[0]).reshape(np.shape(logits))


def combined_loss(
    student_logits: Any,
    teacher_logits: Any,
    targets: Any,
    alpha: float,
    temperature: float,
) -> tuple[float, np.ndarray]:
    """$\\alpha\\,\\mathrm{CE} + (1-\\alpha)\\,T^2\\mathrm{KL}$ and its gradient w.r.t. the
    student logits (same shape as `student_logits`).

    `alpha` = 1 is plain training on labels; `alpha` = 0 is pure distillation.
    """
    a = check_fraction("alpha", alpha)
    ce, d_ce = cross_entropy(student_logits, targets)
    kd = kd_loss(student_logits, teacher_logits, temperature)
    d_kd = kd_loss_grad(student_logits, teacher_logits, temperature)
    return a * ce + (1 - a) * kd, a * d_ce + (1 - a) * d_kd


def loss_terms_from_probs(student_probs: Any, teacher_probs: Any, label: int) -> dict[str, float]:
    """The standard quantities for one example given as *probabilities* (not logits).

    Returns CE $= -\\ln p_s[y]$, KL$(p_t\\|p_s)$ (what distillation minimizes), KL$(p_s\\|p_t)$,
    the cross-entropy $H(p_t, p_s)$ and the teacher's entropy $H(p_t)$; note
    $H(p_t, p_s) = H(p_t) + \\mathrm{KL}(p_t\\|p_s)$. Since $\\operatorname{softmax}(\\ln p) = p$,
    `kd_loss(np.log(ps), np.log(pt), 1.0)` gives the same KL.
    """
    ps = check_array("student_probs", student_probs, ndim=1).astype(np.float64)
    pt = check_array("teacher_probs", teacher_probs, ndim=1).astype(np.float64)
    for name, p in (("student_probs", ps), ("teacher_probs", pt)):
        if np.any(p <= 0) or abs(p.sum() - 1) > 1e-9:
            raise ValueError(f"{name} must be positive and sum to 1, got {p.tolist()}")
    if ps.shape != pt.shape:
        raise ValueError(f"student_probs and teacher_probs differ in shape: {ps.shape}, {pt.shape}")
    if not (isinstance(label, (int, np.integer)) and 0 <= label < ps.size):
        raise ValueError(f"label must be a class id in 0..{ps.size - 1}, got {label!r}")
    return {
        "ce": float(-np.log(ps[label])),
        "kl_teacher_student": float(np.sum(pt * np.log(pt / ps))),
        "kl_student_teacher": float(np.sum(ps * np.log(ps / pt))),
        "cross_entropy_teacher_student": float(-np.sum(pt * np.log(ps))),
        "teacher_entropy": float(-np.sum(pt * np.log(pt))),
    }
