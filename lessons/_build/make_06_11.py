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

# ------------------------------------------------------------------------------------------
NOTEBOOKS["07_low_rank"] = [
    md(r"""
# 07 · Low rank: storing a matrix as two thin ones

A weight $W$ of shape $m \times n$ costs $mn$ numbers. If it is close to a matrix of rank $r$, it
can be stored as $W \approx AB$ with $A$ ($m \times r$) and $B$ ($r \times n$): $r(m+n)$ numbers, and
$x \mapsto (xA)B$ costs $r(m+n)$ multiply-adds instead of $mn$. Whether that pays depends on
the *spectrum* of $W$ — how fast its singular values decay. This lesson

1. looks at the singular values of the trained teacher's weights;
2. checks the Eckart–Young–Mirsky theorem numerically on one of them;
3. works out the break-even rank;
4. measures the validation loss as the rank shrinks, and the shipped fine-tuned low-rank model.
"""),
    code(r"""
import matplotlib.pyplot as plt
import numpy as np

import minillm
from minillm import data
from minillm.bench import bench_decode
from minillm.compress import lowrank
from minillm.compress.recipe import apply_recipe
from minillm.io import WEIGHTS_DIR
from minillm.train import evaluate

rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
cfg = teacher.config
val = data.encode_split("val", teacher.tokenizer)
print(teacher)
"""),
    md(r"""
## Singular values of trained weights

Every real matrix factors as $W = U \Sigma V^\top$ with orthonormal columns in $U$, $V$ and
$\sigma_1 \ge \sigma_2 \ge \dots \ge 0$ on the diagonal of $\Sigma$. The squared singular values
split the matrix's energy, $\lVert W\rVert_F^2 = \sum_i \sigma_i^2$, among orthogonal directions.
A fast decay means a few directions carry most of $W$.

For comparison each panel also shows a Gaussian random matrix of the same shape (dotted): its
spectrum follows the Marchenko–Pastur law and has no "important few" directions. Training
puts structure into the weights; how much is what the plots show.
"""),
    code(r"""
kinds = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
spectra = {}
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), sharey=True)
for ax, kind in zip(axes, kinds):
    for i in range(cfg.n_layer):
        w = teacher.params[f"h.{i}.{kind}"]
        sigma = np.linalg.svd(w.astype(np.float64), compute_uv=False)
        spectra[f"h.{i}.{kind}"] = sigma
        ax.semilogy(sigma / sigma[0], label=f"layer {i}")
    g = np.linalg.svd(rng.normal(size=w.shape), compute_uv=False)
    ax.semilogy(g / g[0], "k:", label="Gaussian")
    ax.set_title(f"{kind}  {w.shape[0]}x{w.shape[1]}", fontsize=9)
    ax.set_xlabel("index i")
axes[0].set_ylabel(r"$\sigma_i / \sigma_1$")
axes[0].legend(fontsize=7)
plt.show()

print(f"{'weight':26s} {'shape':>9s} {'full':>5s} {'r(90%)':>7s} {'r(99%)':>7s} {'break-even':>10s}")
for name, sigma in spectra.items():
    m, n = teacher.params[name].shape
    print(f"{name:26s} {f'{m}x{n}':>9s} {min(m, n):5d} {lowrank.rank_for_energy(sigma, 0.9):7d} "
          f"{lowrank.rank_for_energy(sigma, 0.99):7d} {lowrank.break_even_rank(m, n):10.1f}")
"""),
    md(r"""
`r(90%)` is the smallest rank that keeps 90% of the energy $\sum_i \sigma_i^2$. Compare it with
the break-even rank in the last column (next section): a factorization only saves memory below
it.

## Eckart–Young–Mirsky, checked

Keeping the $r$ largest singular values, $W_r = U_r \Sigma_r V_r^\top$, gives the best rank-$r$
approximation in both the Frobenius and the spectral norm, and the errors are exactly what was
thrown away:

$$\lVert W - W_r \rVert_F = \sqrt{\textstyle\sum_{i > r} \sigma_i^2}, \qquad
  \lVert W - W_r \rVert_2 = \sigma_{r+1}.$$

`lowrank.svd_factorize(w, r)` returns $A = U_r\Sigma_r^{1/2}$ and $B = \Sigma_r^{1/2}V_r^\top$.
We check both identities, and that another rank-$r$ approximation — projecting $W$ onto $r$
random directions, $W Q Q^\top$ — is worse.
"""),
    code(r"""
name = "h.1.mlp.c_fc.weight"
W = teacher.params[name].astype(np.float64)
sigma = spectra[name]
print(f"{name} {W.shape}: ||W||_F = {np.linalg.norm(W):.4f}")
print(f"{'r':>4s} {'||W-AB||_F':>11s} {'sqrt(tail)':>11s} {'||W-AB||_2':>11s} {'sigma_r+1':>10s} "
      f"{'random WQQ^T':>13s}")
ranks = [1, 4, 16, 32, 64, 128, 191]
fro, tail = [], []
for r in ranks:
    a, b = lowrank.svd_factorize(W, r)
    err = W - a @ b
    q, _ = np.linalg.qr(rng.normal(size=(W.shape[1], r)))  # (n, r) random orthonormal columns
    fro.append(np.linalg.norm(err))
    tail.append(np.sqrt(np.sum(sigma[r:] ** 2)))
    print(f"{r:4d} {fro[-1]:11.6f} {tail[-1]:11.6f} {np.linalg.norm(err, 2):11.6f} {sigma[r]:10.6f} "
          f"{np.linalg.norm(W - W @ q @ q.T):13.6f}")
print(f"largest relative difference between ||W - AB||_F and sqrt(tail): "
      f"{np.max(np.abs(np.array(fro) - tail) / np.array(tail)):.1e}")
"""),
    md(r"""
## When does it pay? The break-even rank

The factors store $r(m+n)$ values instead of $mn$, so

$$r(m+n) < mn \iff r < \frac{mn}{m+n}.$$

For a square matrix that is $r < m/2$: a rank-$m/2$ "compression" stores exactly as much as the
original. The same holds for the multiply-adds of $(xA)B$. The plot shows the ratio
$r(m+n)/mn$ for the teacher's MLP shape and GPT-2's.
"""),
    code(r"""
shapes = {"teacher MLP 192x768": (192, 768), "teacher attn.c_proj 192x192": (192, 192),
          "GPT-2 MLP 768x3072": (768, 3072)}
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for label, (m, n) in shapes.items():
    r = np.arange(1, min(m, n) + 1)
    ax.plot(r / min(m, n), r * (m + n) / (m * n), label=label)
    be = lowrank.break_even_rank(m, n)
    print(f"{label:28s} break-even r < {be:7.1f} ({be / min(m, n):.0%} of full rank); "
          f"half the values: r = {lowrank.rank_for_budget((m, n), 0.5)}")
ax.axhline(1, color="black", lw=0.8)
ax.set_xlabel("rank / full rank")
ax.set_ylabel("stored values / mn")
ax.legend(fontsize=8)
plt.show()
"""),
    md(r"""
## Loss versus rank

Factorizing the MLP weights of every block (`lowrank.factorize_params(params, "mlp", rank=r)`
turns them into `LowRank` weight kinds, which the forward pass multiplies as $(xA)B$) and
measuring the validation loss on the first 8,000 characters of the held-out plays:
"""),
    code(r"""
n_tokens = 8_000
dense_loss = evaluate(teacher, val, max_tokens=n_tokens)["loss"]
mlp_shape = teacher.params["h.0.mlp.c_fc.weight"].shape
ranks = [8, 16, 32, 64, 96, 128, 153]
losses, fractions = [], []
for r in ranks:
    params = lowrank.factorize_params(teacher.params, which="mlp", rank=r)
    model = minillm.GPT(cfg, params=params)
    losses.append(evaluate(model, val, max_tokens=n_tokens)["loss"])
    fractions.append(r * sum(mlp_shape) / (mlp_shape[0] * mlp_shape[1]))
    print(f"rank {r:4d}: MLP values kept {fractions[-1]:6.1%}, model bytes {model.nbytes / 1e6:5.2f} MB "
          f"(dense {teacher.nbytes / 1e6:.2f} MB), val loss {losses[-1]:.4f} "
          f"({losses[-1] - dense_loss:+.4f})")

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(fractions, losses, "o-", label="MLP weights at rank r (no fine-tuning)")
for r, f, l in zip(ranks, fractions, losses):
    ax.annotate(f"r={r}", (f, l), textcoords="offset points", xytext=(4, 4), fontsize=8)
ax.axhline(dense_loss, color="black", ls="--", label="dense teacher")
ax.set_xlabel("fraction of the MLP's values stored")
ax.set_ylabel("val loss (nats/char)")
ax.legend()
plt.show()
"""),
    md(r"""
## Fine-tuning the factors

Truncating without training throws the discarded directions away for good. Training the factors
$A$ and $B$ afterwards (`minillm.compress.recipe.finetune(model, "lowrank:0.5")`: the gradient
of $W = AB$ gives $\partial L/\partial A = \frac{\partial L}{\partial W}B^\top$ and
$\partial L/\partial B = A^\top \frac{\partial L}{\partial W}$) lets the rest of the network adapt.
The shipped `teacher-lowrank50` is the teacher with half of each MLP weight's values, fine-tuned
this way; it is stored densely, so we first check that its MLP weights really have rank $r$,
then store them as factors again and measure.
"""),
    code(r"""
path = WEIGHTS_DIR / "teacher-lowrank50"
r50 = lowrank.rank_for_budget(mlp_shape, 0.5)
truncated = minillm.GPT(cfg, params=apply_recipe(teacher.params, "lowrank:0.5"))
loss_truncated = evaluate(truncated, val, max_tokens=n_tokens)["loss"]
print(f"teacher, dense:                       val loss {dense_loss:.4f}")
print(f"lowrank:0.5 (r = {r50}), no fine-tuning:  val loss {loss_truncated:.4f}")
if path.is_dir():
    tuned = minillm.load(path)
    w = tuned.params["h.0.mlp.c_fc.weight"].astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    print(f"shipped fine-tuned h.0.mlp.c_fc.weight: sigma_{r50} / sigma_1 = {s[r50 - 1] / s[0]:.2e}, "
          f"sigma_{r50 + 1} / sigma_1 = {s[r50] / s[0]:.2e} (numerically rank {r50})")
    compact = minillm.GPT(cfg, params=apply_recipe(tuned.params, "lowrank:0.5"))
    print(f"lowrank:0.5 fine-tuned, as factors:   val loss "
          f"{evaluate(compact, val, max_tokens=n_tokens)['loss']:.4f}, {compact.nbytes / 1e6:.2f} MB")
else:
    print(f"the fine-tuned model is not shipped in this installation ({path}); skipped")
"""),
    md(r"""
Fewer values and fewer multiply-adds should make decoding faster, but a low-rank layer runs
*two* matrix products instead of one, and a batch-1 step of a model this small is dominated by
fixed per-operation costs. Measured on this machine with the NumPy backend (the machine is
shared and noisy: compare the two rows, not the absolute numbers):
"""),
    code(r"""
for label, m in (("dense", teacher), ("lowrank:0.5", truncated)):
    r = bench_decode(m, new_tokens=32, repeat=3)
    print(f"{label:12s} {m.nbytes / 1e6:5.2f} MB  decode {r['decode_tok_s']:8.1f} tokens/s "
          f"({r['decode_ms_per_token']:.3f} ms/token)")
"""),
    md(r"""
## Exercises

1. Prove the break-even condition for the multiply-adds of $(xA)B$ versus $xW$ for a batch of
   $N$ rows. Does $N$ change it?
2. Factorize the attention weights instead (`which="attn"`) at the same fraction of values.
   Which hurts the loss more, and does the spectrum plot predict it?
3. The spectral-norm error is $\sigma_{r+1}$. For the MLP weight above, find the smallest rank
   whose *relative* spectral error $\sigma_{r+1}/\sigma_1$ is below 0.1, and compare its loss with
   the energy criterion `rank_for_energy(sigma, 0.9)`.
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["09_hardware"] = [
    md(r"""
# 09 · Hardware: rooflines, systolic arrays and number formats

Three questions about the silicon a model runs on, each answered with code:

1. **How fast can it possibly go?** The roofline model bounds a kernel's speed by the device's
   peak arithmetic rate and its memory bandwidth — and we place this machine's *measured*
   decoding speed on it.
2. **What does a matrix unit do, cycle by cycle?** We run a weight-stationary systolic array
   (the TPU v1's design) on a tiny matmul, draw it, and check its cycle count against the
   closed form.
3. **What do narrow number formats cost?** We round the teacher's weights to bfloat16, float16
   and the two float8 formats, and measure the error and the validation loss.
"""),
    code(r"""
import matplotlib.pyplot as plt
import numpy as np

import minillm
import minillm.hw as hw
from minillm import data
from minillm.bench import bench_decode
from minillm.hw import floats, roofline, systolic
from minillm.kinds import block_matmul_names
from minillm.train import evaluate

rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
cfg = teacher.config
cpu = hw.get_device("cpu")  # measured on first use (about half a second), then cached
print(cpu.description, "|", cpu.source)
print(f"this CPU: peak {cpu.peak('fp32') / 1e9:.1f} GFLOP/s (fp32), bandwidth {cpu.bandwidth / 1e9:.1f} GB/s")
"""),
    md(r"""
## The roofline

A kernel that does $F$ floating-point operations and moves $Q$ bytes has *arithmetic
intensity* $I = F/Q$. A device with peak rate $\pi$ and bandwidth $\beta$ can at best run it at

$$P(I) = \min(\pi,\ \beta I),$$

and the *ridge point* $I^* = \pi/\beta$ separates memory-bound kernels from compute-bound ones.
A batch-1 decoding step multiplies one row by every weight matrix: two FLOPs per weight read,
$I \approx 2/(\text{bytes per weight})$, far left of every ridge point. So

$$\text{tokens/s} \le \frac{\beta}{\text{bytes read per token}}.$$

`hw.roofline_report` counts the FLOPs and bytes of every op of a GPT step. Here is the teacher
decoding one token on this CPU, as the model predicts it:
"""),
    code(r"""
prompt_tokens, new_tokens = 16, 32
context = prompt_tokens + new_tokens // 2  # the average context during the measured decode
report = hw.roofline_report(cfg, "fp32", cpu, phase="decode", context=context)
print(hw.format_report(report))
"""),
    md(r"""
Now the measurement: `bench_decode` times greedy decoding through the KV cache (best of 3), and
we turn tokens/s into achieved FLOP/s with the report's FLOPs per token. Prefill (the prompt in
one pass, 64 rows per matmul) has a much higher intensity; we measure it too.
"""),
    code(r"""
dec = bench_decode(teacher, prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeat=3)
pre = bench_decode(teacher, prompt_tokens=64, new_tokens=2, repeat=3)
pre_report = hw.roofline_report(cfg, "fp32", cpu, phase="prefill", prompt_len=64)
points = []
for label, tok_s, rep in (("teacher decode", dec["decode_tok_s"], report),
                          ("teacher prefill (64)", pre["prefill_tok_s"], pre_report)):
    t = rep["total"]
    flops_per_token = t["flops"] / rep["tokens"]
    achieved = flops_per_token * tok_s
    points.append((label, t["intensity"], achieved))
    print(f"{label:22s} {tok_s:10,.0f} tokens/s measured, roofline {t['tokens_per_s']:10,.0f} "
          f"(memory alone {t['memory_bound_tokens_per_s']:10,.0f}); intensity {t['intensity']:5.2f} "
          f"FLOP/B; {achieved / 1e9:6.2f} GFLOP/s = {achieved / rep['peak_flops']:.1%} of peak")

fig = hw.roofline_plot(["h100", "a100", "m2", cpu], points=points)
fig
"""),
    md(r"""
The decode point sits below the CPU's roofline: this model (7 MB of float32 weights) is small
enough that Python's fixed cost per operation, not the memory bus, sets the pace. The same
arithmetic for GPT-2 (124 M parameters), on every device, gives the upper bounds below
(batch 1, context 512):
"""),
    code(r"""
print(f"{'device':8s} {'weights':8s} {'bytes/token':>12s} {'memory bound':>13s} {'compute bound':>14s}  (tokens/s)")
for dev in ("h100", "a100", "tpu-v4", "m2", cpu):
    for weights in ("fp32", "bf16", "q4_0"):
        if weights == "fp32" and "fp32" not in hw.get_device(dev).peak_flops:
            continue  # the TPU v4 quotes no float32 rate
        t = hw.roofline_report("gpt2", weights, dev, phase="decode", context=512)["total"]
        print(f"{hw.get_device(dev).name:8s} {weights:8s} {t['bytes'] / 1e6:9.1f} MB "
              f"{t['memory_bound_tokens_per_s']:13,.0f} {t['compute_bound_tokens_per_s']:14,.0f}")
"""),
    md(r"""
## A systolic array, cycle by cycle

The TPU v1 multiplies with a $256 \times 256$ grid of multiply-accumulate cells. It is
*weight-stationary*: cell $(i, j)$ holds $w_{ij}$; activations enter from the left, row $i$ of
the input skewed by $i$ cycles, and move one cell right per cycle; partial sums move one cell
down. Cell $(i, j)$ works on input row $m = t - i - j$ at cycle $t$, and computes
$p_{\text{out}} = p_{\text{in}} + a\,w_{ij}$. One pass of an $M$-row input through an $R \times C$
array with $N$ used columns takes

$$T_{\text{pass}} = M + R + N - 2 \text{ cycles}.$$

Below: a $3 \times 3$ array multiplying a $4 \times 3$ int8 input by a $3 \times 3$ weight. Each
panel is one cycle; a cell is coloured by the input row it is working on (white: idle) and
shows its activation $a$ and the partial sum $p$ it passes down.
"""),
    code(r"""
sa = systolic.SystolicArray(3, 3)
x = rng.integers(-3, 4, size=(4, 3)).astype(np.int8)  # (M, K)
w = rng.integers(-3, 4, size=(3, 3)).astype(np.int8)  # (K, N)
frames = list(sa.frames(x, w))
print(f"{len(frames)} cycles; closed form M + R + N - 2 = {sa.pass_cycles(4, 3)}")

cols = 4
fig, axes = plt.subplots(2, cols, figsize=(13, 6.5))
cmap = plt.get_cmap("Pastel1")
for ax, s in zip(axes.ravel(), frames):
    colour = np.ones((3, 3, 4))  # white = idle
    for i in range(3):
        for j in range(3):
            if s.active[i, j]:
                colour[i, j] = cmap(s.row[i, j])
            ax.text(j, i, f"m={s.row[i, j]}\na={s.activations[i, j]}\np={s.psums[i, j]}"
                    if s.active[i, j] else "", ha="center", va="center", fontsize=7)
    ax.imshow(colour)
    ax.set_xticks(range(3))
    ax.set_yticks(range(3))
    ax.set_title(f"cycle {s.t}: {int(s.done.sum())}/12 outputs out", fontsize=9)
for ax in axes.ravel()[len(frames):]:
    ax.axis("off")
fig.suptitle("weight-stationary 3x3 array: activations move right, partial sums move down")
plt.tight_layout()
plt.show()

result = sa.matmul(x, w)
exact = x.astype(np.int32) @ w.astype(np.int32)
print("array output == x @ w:", np.array_equal(result.output, exact))
print(result.output)
"""),
    md(r"""
Larger matmuls are tiled: $K$ in chunks of $R$ (partial sums chained from pass to pass), $N$ in
chunks of $C$, so

$$T = \left\lceil \tfrac{K}{R} \right\rceil \left( \left\lceil \tfrac{N}{C} \right\rceil (M + R - 2)
      + N \right), \qquad \text{utilisation} = \frac{MKN}{RC\,T}.$$

We check the simulated cycles against the closed form on an $8 \times 8$ array, then use the
closed form for the TPU v1's $256 \times 256$: utilisation as a function of the number of rows $M$
(the batch, in decoding).
"""),
    code(r"""
sa8 = systolic.SystolicArray(8, 8)
print(f"{'M x K x N':>12s} {'simulated':>10s} {'closed form':>12s} {'utilisation':>12s} {'exact':>6s}")
for M, K, N in [(1, 8, 8), (16, 8, 8), (5, 20, 3), (12, 17, 30), (64, 24, 16)]:
    a = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
    b = rng.integers(-128, 128, size=(K, N)).astype(np.int8)
    res = sa8.matmul(a, b)
    ok = np.array_equal(res.output, a.astype(np.int32) @ b.astype(np.int32))
    print(f"{f'{M}x{K}x{N}':>12s} {res.cycles:10d} {sa8.cycles(M, K, N):12d} {res.utilisation:12.1%} {ok!s:>6s}")

tpu = systolic.TPU_V1
Ms = 2 ** np.arange(0, 15)
util = [M * 768 * 3072 / (tpu.rows * tpu.cols * tpu.cycles(int(M), 768, 3072)) for M in Ms]
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.semilogx(Ms, util, "o-", base=2)
ax.set_xlabel("rows M (batch x tokens)")
ax.set_ylabel("utilisation")
ax.set_title("TPU v1 (256x256) on GPT-2's 768x3072 MLP weight")
plt.show()
print(f"TPU v1 peak: {tpu.peak_ops_per_s() / 1e12:.1f} TOPS; utilisation at M = 1: {util[0]:.2%}, "
      f"at M = {Ms[-1]}: {util[-1]:.1%}")
"""),
    md(r"""
## Number formats

A float with $E$ exponent bits, $m$ mantissa bits and bias $b$ stores
$x = (-1)^s\, 2^{e-b}(1 + f/2^m)$: relative spacing $2^{-m}$, smallest normal $2^{1-b}$, smallest
subnormal $2^{1-b-m}$. `hw.floats.round_to(x, fmt)` rounds float32 to each format bit by bit
(nearest, ties to even) and returns float32 holding exactly representable values.
"""),
    code(r"""
formats = ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]
print(f"{'format':14s} {'E':>2s} {'m':>2s} {'eps':>9s} {'max':>9s} {'min normal':>11s} {'min subnormal':>14s}")
for f in formats:
    r = floats.FORMATS[f].row()
    print(f"{f:14s} {r['exponent_bits']:2d} {r['mantissa_bits']:2d} {r['eps']:9.2e} {r['max']:9.3g} "
          f"{r['min_normal']:11.2e} {r['min_subnormal']:14.2e}")
"""),
    md(r"""
The teacher's weights are small numbers (most $|w| < 0.1$). The histogram shows where they fall
relative to each format's smallest normal number: below it precision drops (subnormals), and
below half the smallest subnormal a weight rounds to zero. float8 is therefore used with a
**scale**: store $w / s$ with $s = \max|w| / 448$ (e4m3's largest value), and multiply by $s$
after the matmul.
"""),
    code(r"""
matrices = block_matmul_names(teacher.params) + ["wte.weight", "wpe.weight"]
all_w = np.concatenate([teacher.params[n].ravel() for n in matrices])
nonzero = np.abs(all_w[all_w != 0])
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.hist(np.log10(nonzero), bins=120, color="gray")
for k, f in enumerate(formats):
    ax.axvline(np.log10(floats.FORMATS[f].min_normal), color=f"C{k}", ls="--", label=f"{f} min normal")
ax.set_xlabel("log10 |w| (all teacher matrices)")
ax.legend(fontsize=7)
plt.show()

def scaled_e4m3(w):
    # Per-tensor scale so that max|w| maps to e4m3's largest value, 448.
    s = np.abs(w).max() / floats.FORMATS["float8_e4m3fn"].max
    return floats.round_to(w / s, "float8_e4m3fn") * s

rounders = {f: (lambda w, f=f: floats.round_to(w, f)) for f in formats}
rounders["float8_e4m3fn, scaled"] = scaled_e4m3
print(f"{'format':22s} {'rel. error':>10s} {'flushed to 0':>13s} {'NaN/inf':>8s}")
for f, fn in rounders.items():
    r = fn(all_w)
    err = np.linalg.norm(r - all_w) / np.linalg.norm(all_w)
    print(f"{f:22s} {err:10.2e} {np.mean((r == 0) & (all_w != 0)):13.2%} {np.sum(~np.isfinite(r)):8d}")
"""),
    md(r"""
Relative weight error is a proxy; what matters is the model. Rounding every weight matrix
(embeddings included) and measuring the validation loss on the first 8,000 characters of the
held-out plays:
"""),
    code(r"""
n_tokens = 8_000
val = data.encode_split("val", teacher.tokenizer)
losses = {"float32": evaluate(teacher, val, max_tokens=n_tokens)["loss"]}
for f, fn in rounders.items():
    params = dict(teacher.params)
    for n in matrices:
        params[n] = fn(teacher.params[n])
    losses[f] = evaluate(minillm.GPT(cfg, params=params), val, max_tokens=n_tokens)["loss"]
for f, l in losses.items():
    print(f"{f:22s} val loss {l:.4f} ({l - losses['float32']:+.4f})")
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.barh(list(losses), [l - losses["float32"] for l in losses.values()])
ax.set_xlabel("val loss - float32 loss (nats/char)")
ax.invert_yaxis()
plt.show()
"""),
    md(r"""
## Exercises

1. From the roofline report, which op of the teacher's decode step has the highest arithmetic
   intensity, and why? At what batch size does the teacher's decode step cross the CPU's ridge
   point (`roofline_report(..., batch=B)`)?
2. Change the systolic array to $4 \times 2$ and predict the number of cycles for the same
   $4 \times 3 \times 3$ matmul before running it (it needs two column tiles).
3. Give float8_e4m3fn one scale per *output column* instead of one per tensor. How much of the
   remaining loss gap closes?
"""),
]


if __name__ == "__main__":
    main(sys.argv[1:])
