"""Build lessons 06-11 from the cell sources in this file (the notebooks are generated, never edited).

    python lessons/_build/make_06_11.py            # writes lessons/06_*.ipynb ... 11_*.ipynb
    python lessons/_build/make_06_11.py 08 10      # only those

Each notebook is stored with outputs stripped (no outputs, execution_count null) and stable
cell ids, so rebuilding an unchanged lesson gives an identical file. A lesson is a list of
(kind, text) cells, kind "md" (Markdown with LaTeX) or "code".
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent.parent
NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}


def md(text: str) -> tuple[str, str]:
    return ("md", text)


def code(text: str) -> tuple[str, str]:
    return ("code", text)


def build(stem: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for n, (kind, text) in enumerate(cells):
        text = text.strip("\n")
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
            cell.outputs, cell.execution_count = [], None
        cell.id = f"l{stem[:2]}-{n:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> None:
    for stem, cells in NOTEBOOKS.items():
        if argv and stem[:2] not in argv:
            continue
        out = LESSONS / f"{stem}.ipynb"
        nbformat.write(build(stem, cells), out)
        print(f"wrote {out.relative_to(LESSONS.parent)}")


# The lessons. Prose and math sit directly above the code that computes them; every number a
# lesson states is printed by its code.

# ------------------------------------------------------------------------------------------
NOTEBOOKS["06_distillation"] = [
    md(r"""
# 06 · Distillation: learning from a teacher's soft targets

A trained language model does not just know the next character; it knows how *plausible*
every other character is. After `"ROMEO:\nBut soft, what light through yonder window b"` the
teacher puts most of its mass on `r`, but it also says that `e` and `l` are far likelier
than `Q`. Hinton, Vinyals & Dean (2015) call this the teacher's *dark knowledge*, and
**knowledge distillation** trains a small student to match the whole distribution instead of
the one-hot label.

This lesson

1. softens a real teacher distribution with a temperature and sees what that reveals;
2. derives why the soft loss is multiplied by $T^2$ and measures it;
3. checks `minillm.compress.distill.kd_loss` and its gradient by finite differences;
4. compares the shipped students trained *from scratch* and *by distillation*, from their
   training logs and on the same validation text.
"""),
    code(r"""
import json

import matplotlib.pyplot as plt
import numpy as np

import minillm
from minillm import data
from minillm.compress import distill
from minillm.io import WEIGHTS_DIR
from minillm.train import evaluate

rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
tok = teacher.tokenizer
V = teacher.config.vocab_size
print(teacher)
"""),
    md(r"""
## Temperature

The teacher's last layer gives logits $z \in \mathbb{R}^V$. Dividing them by a temperature $T$
before the softmax,

$$p^{(T)}_i = \frac{e^{z_i / T}}{\sum_j e^{z_j / T}},$$

keeps the ranking but changes the contrast: $T \to 0$ gives the one-hot argmax, $T = 1$ the
model's own distribution, $T \to \infty$ the uniform distribution. At moderate $T$ the small
probabilities — the dark knowledge — grow large enough to carry gradient.
"""),
    code(r"""
prompt = "ROMEO:\nBut soft, what light through yonder window b"
idx = np.array([tok.encode(prompt)])  # (1, T)
z = teacher.forward(idx)[0, -1].astype(np.float64)  # (V,) logits of the next character
top = np.argsort(-z)[:12]  # the 12 likeliest characters
labels = [repr(tok.decode([int(i)]))[1:-1] for i in top]

temperatures = [0.5, 1.0, 2.0, 4.0]
fig, ax = plt.subplots(figsize=(9, 3.5))
width = 0.2
for k, T in enumerate(temperatures):
    p = np.exp(distill.log_softmax(z / T))  # (V,)
    ax.bar(np.arange(12) + (k - 1.5) * width, p[top], width, label=f"T = {T:g}")
    entropy = -(p * np.log(p)).sum()
    print(f"T = {T:<4g} p({labels[0]!r}) = {p[top[0]]:.3f}   mass outside the top 3 = "
          f"{1 - p[top[:3]].sum():.3f}   entropy = {entropy:.2f} nats (uniform: {np.log(V):.2f})")
ax.set_xticks(range(12), labels)
ax.set_xlabel("next character (the teacher's 12 likeliest)")
ax.set_ylabel("$p^{(T)}$")
ax.set_title(f"Teacher's next-character distribution after {prompt[-12:]!r}")
ax.legend()
plt.show()
"""),
    md(r"""
## The loss, and why it is multiplied by $T^2$

With student logits $s$, teacher logits $t$ and label $y$, the distillation loss is

$$L = \alpha\,\mathrm{CE}\big(y, \operatorname{softmax}(s)\big)
    + (1 - \alpha)\,T^2\,\mathrm{KL}\big(p_t^{(T)} \,\big\|\, p_s^{(T)}\big).$$

Differentiating the KL through $s/T$ gives $\partial\,\mathrm{KL}/\partial s = (p_s^{(T)} -
p_t^{(T)})/T$. For large $T$, $p^{(T)} \approx \frac1V\big(1 + (z - \bar z)/T\big)$, so

$$\frac{\partial\,\mathrm{KL}}{\partial s} \approx \frac{(s - \bar s) - (t - \bar t)}{V\,T^2},
\qquad \frac{\partial\,(T^2\,\mathrm{KL})}{\partial s} = T\,(p_s^{(T)} - p_t^{(T)})
\;\to\; \frac{(s - \bar s) - (t - \bar t)}{V}.$$

Without the factor the soft term's gradient fades like $1/T^2$ and the hard term takes over
whenever $T$ is raised; with it, the balance set by $\alpha$ means the same thing at every
$T$. Below: the teacher against a freshly initialised student (the first step of
distillation), on 4 windows of validation text.
"""),
    code(r"""
val = data.encode_split("val", tok)
x, y = data.get_batch(val, 4, 64, rng)  # (4, 64) inputs and targets
t_logits = teacher.forward(x).astype(np.float64)  # (4, 64, V)
student0 = minillm.GPT(minillm.GPTConfig.preset("student", vocab_size=V), seed=0)
s_logits = student0.forward(x).astype(np.float64)  # (4, 64, V)
rows = x.size

Ts = np.geomspace(1, 64, 25)
with_t2 = np.array([np.linalg.norm(distill.kd_loss_grad(s_logits, t_logits, T)) * rows for T in Ts])
without = with_t2 / Ts**2  # the gradient of the plain KL is the same divided by T^2
limit = np.linalg.norm((s_logits - s_logits.mean(-1, keepdims=True))
                       - (t_logits - t_logits.mean(-1, keepdims=True))) / V
_, ce_grad = distill.cross_entropy(s_logits, y)
ce_norm = np.linalg.norm(ce_grad) * rows

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(Ts, with_t2, "o-", label=r"$\nabla_s\, T^2\,\mathrm{KL}$")
ax.loglog(Ts, without, "s-", label=r"$\nabla_s\, \mathrm{KL}$ (no $T^2$)")
ax.axhline(limit, color="gray", ls=":", label=r"limit $\|(s-\bar s)-(t-\bar t)\|/V$")
ax.axhline(ce_norm, color="black", ls="--", label=r"hard-label $\nabla_s\,\mathrm{CE}$")
ax.set_xlabel("temperature T")
ax.set_ylabel("gradient norm (summed over rows)")
ax.legend(fontsize=8)
plt.show()
slope = lambda g: np.polyfit(np.log(Ts[-8:]), np.log(g[-8:]), 1)[0]
print(f"log-log slope for large T: with T^2 {slope(with_t2):+.2f}, without {slope(without):+.2f}")
print(f"with T^2 at T = 64: {with_t2[-1]:.4f}; the large-T limit: {limit:.4f}")
"""),
    md(r"""
## Checking the gradient

`kd_loss` is the mean over rows of $T^2\,\mathrm{KL}$; `kd_loss_grad` returns
$T(p_s^{(T)} - p_t^{(T)})/N$. A central finite difference
$\big(L(s + h e_k) - L(s - h e_k)\big)/2h$ has error $O(h^2)$; in float64 with $h = 10^{-5}$
it should agree with the formula to about $10^{-10}$ relative — an independent check that
needs no formula at all.
"""),
    code(r"""
s8, t8 = s_logits[0, :8], t_logits[0, :8]  # 8 rows of (V,) logits, float64
for T in (1.0, 2.0, 5.0):
    g = distill.kd_loss_grad(s8, t8, T)
    coords = [tuple(c) for c in np.stack([rng.integers(0, 8, 6), rng.integers(0, V, 6)], 1)]
    fd = []
    for c in coords:
        e = np.zeros_like(s8)
        e[c] = 1e-5
        fd.append((distill.kd_loss(s8 + e, t8, T) - distill.kd_loss(s8 - e, t8, T)) / 2e-5)
    fd, an = np.array(fd), np.array([g[c] for c in coords])
    print(f"T = {T}: loss {distill.kd_loss(s8, t8, T):.5f}, max |finite diff - formula| = "
          f"{np.abs(fd - an).max():.2e} (largest gradient entry {np.abs(an).max():.2e})")

alpha, T = 0.25, 2.0
loss, grad = distill.combined_loss(s_logits, t_logits, y, alpha, T)
ce, _ = distill.cross_entropy(s_logits, y)
print(f"untrained student: CE = {ce:.3f} nats, T^2 KL at T=2 = "
      f"{distill.kd_loss(s_logits, t_logits, T):.3f}, combined (alpha={alpha}) = {loss:.3f}")
"""),
    md(r"""
## Distilled versus from scratch

Two students of the same shape (a quarter of the teacher's parameters) were trained for the
same number of steps on the same data: one on the labels alone, one with the distillation
loss above. Their training logs ship with the weights. The curves show the validation loss
measured during training; below them both students and the teacher are evaluated again, here,
on the same slice of held-out plays.
"""),
    code(r"""
logs = {}
for name in ("teacher", "student-scratch", "student-distilled"):
    path = WEIGHTS_DIR / name / "train_log.json"
    if path.is_file():
        logs[name] = json.loads(path.read_text())
    else:
        print(f"{name}: no training log at {path} in this installation; skipped")

if logs:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, log in logs.items():
        hist = [h for h in log.get("history", []) if "val_loss" in h]
        if not hist:
            print(f"{name}: its log has no validation history")
            continue
        steps = [h["step"] for h in hist]
        line, = ax.plot(steps, [h["val_loss"] for h in hist], label=f"{name} (val)")
        ax.plot(steps, [h["train_loss"] for h in hist], ls=":", color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title("Validation (solid) and smoothed training (dotted) loss")
    ax.legend()
    plt.show()
    for name, log in logs.items():
        final = log.get("val", {}).get("loss")
        final = f"{final:.4f}" if final is not None else "(not recorded)"
        cfg = log.get("train_config", {})
        extra = {k: log[k] for k in ("alpha", "temperature", "distill") if k in log}
        print(f"{name:18s} steps {cfg.get('steps', '?'):>6}  whole-split val loss {final}  {extra}")
"""),
    code(r"""
n_tokens = 20_000  # the first 20,000 characters of the validation plays
models = {}
for name in ("teacher", "student-scratch", "student-distilled"):
    try:
        models[name] = minillm.load(name)
    except FileNotFoundError as e:
        print(f"{name}: not shipped in this installation ({type(e).__name__}); skipped")

xs, _ = data.get_batch(val, 16, teacher.config.block_size, np.random.default_rng(1))
teacher_top1 = teacher.forward(xs).argmax(-1)  # (16, 128)
results = {}
for name, m in models.items():
    loss = evaluate(m, val, max_tokens=n_tokens)["loss"]
    agree = (m.forward(xs).argmax(-1) == teacher_top1).mean()
    results[name] = loss
    print(f"{name:18s} {m.n_params:>9,} params   val loss {loss:.4f}   "
          f"agrees with the teacher's top-1 on {agree:.1%} of positions")
if {"student-scratch", "student-distilled"} <= results.keys():
    gap = results["student-scratch"] - results["student-distilled"]
    print(f"distillation lowers the student's loss by {gap:+.4f} nats/char on this slice")
"""),
    md(r"""
## Exercises

1. Show that $\mathrm{KL}(p_t \,\|\, p_s) = H(p_t, p_s) - H(p_t)$, and explain why minimising the
   cross-entropy $H(p_t, p_s)$ or the KL gives the same gradient with respect to $s$ (check it
   numerically with `distill.loss_terms_from_probs`).
2. Redraw the gradient-norm plot with the *distilled* student instead of the untrained one.
   Which curve moves, and why does the large-$T$ limit shrink?
3. Write a training step with `minillm.train.distillation_step(config, teacher, alpha, T)`
   and run 100 steps of `minillm.train.train` at $T = 1$ and at $T = 4$ from the same seed.
   Does the loss after 100 steps differ more or less than the noise between two seeds?
"""),
]


if __name__ == "__main__":
    main(sys.argv[1:])
