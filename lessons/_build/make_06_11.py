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
teacher spreads its probability over several characters that could follow (the plot below
shows which), and ranks every other character too: the vowels far above, say, a `Q`.
Hinton, Vinyals & Dean (2015) call this the teacher's *dark knowledge*, and
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
loss above. Their training logs ship with the weights. The curves show the validation
cross-entropy measured during training (the distilled student's *training* loss is the
combined distillation loss, a different quantity, so it is not drawn); below them both students
and the teacher are evaluated again, here, on the same slice of held-out plays.
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
        if "distill" not in log.get("command", ""):  # a distilled run logs its combined loss
            ax.plot(steps, [h["train_loss"] for h in hist], ls=":", color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_title("Validation (solid) and smoothed training (dotted) cross-entropy")
    ax.legend()
    plt.show()
    for name, log in logs.items():
        final = log.get("val", {}).get("loss")
        final = f"{final:.4f}" if final is not None else "(not recorded)"
        steps = log.get("train_config", {}).get("steps", "?")
        print(f"{name:18s} {steps:>5} steps, whole-split val loss {final}   `{log.get('command', '')}`")
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
then store them as factors again and measure. Fine-tuning is also *more training*: the shipped
control `teacher-ft400` is the dense teacher fine-tuned with the same steps and schedule, so the
gain of training longer is not mistaken for a gain of compression.
"""),
    code(r"""
r50 = lowrank.rank_for_budget(mlp_shape, 0.5)
truncated = minillm.GPT(cfg, params=apply_recipe(teacher.params, "lowrank:0.5"))
loss_truncated = evaluate(truncated, val, max_tokens=n_tokens)["loss"]
print(f"{'teacher, dense':44s} val loss {dense_loss:.4f}")
print(f"{f'lowrank:0.5 (r = {r50}), no fine-tuning':44s} val loss {loss_truncated:.4f}")
try:
    tuned = minillm.load("teacher-lowrank50")
except FileNotFoundError as e:
    print(f"the fine-tuned model is not shipped in this installation: {e}")
else:
    w = tuned.params["h.0.mlp.c_fc.weight"].astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    print(f"  its h.0.mlp.c_fc.weight: sigma_{r50} / sigma_1 = {s[r50 - 1] / s[0]:.2e}, "
          f"sigma_{r50 + 1} / sigma_1 = {s[r50] / s[0]:.2e} (numerically rank {r50})")
    compact = minillm.GPT(cfg, params=apply_recipe(tuned.params, "lowrank:0.5"))
    loss = evaluate(compact, val, max_tokens=n_tokens)["loss"]
    print(f"{'lowrank:0.5, fine-tuned, stored as factors':44s} val loss {loss:.4f} ({compact.nbytes / 1e6:.2f} MB)")
    try:  # the control: the same fine-tuning steps on the dense teacher
        control = minillm.load("teacher-ft400")
        print(f"{'control: dense teacher, same fine-tuning':44s} val loss "
              f"{evaluate(control, val, max_tokens=n_tokens)['loss']:.4f} ({control.nbytes / 1e6:.2f} MB)")
    except FileNotFoundError:
        print("the control model teacher-ft400 is not shipped in this installation")
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
from minillm.hw import floats, systolic
from minillm.kinds import block_matmul_names
from minillm.train import evaluate

rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
cfg = teacher.config
cpu = hw.cpu_spec(refresh=True)  # measure now (about half a second): a shared machine's speed varies
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

fig, ax = plt.subplots(figsize=(8, 5))
hw.roofline_plot(["h100", "a100", "m2", cpu], points=points, ax=ax)
plt.show()
"""),
    md(r"""
Where the measured points land relative to the CPU's line depends on two things the roofline
model leaves out. A decode step is about a hundred small NumPy calls, and their fixed cost
(Python, dispatch, thread wake-ups) pushes the point *below* the line. But the line assumes
every weight comes from main memory each step (the bandwidth was measured on a 128 MiB matrix),
while the teacher's 7 MB of weights can stay in the CPU's caches between steps, which are much
faster — that can put the point *above* the DRAM roofline. The percentages printed above say
which effect won on this run. For a model far larger than the caches the assumption holds; the
same arithmetic for GPT-2 (124 M parameters), on every device, gives the bounds below (batch 1,
context 512):
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
    ax.set_xlabel("PE column j", fontsize=8)
    ax.set_ylabel("PE row i", fontsize=8)
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

# ------------------------------------------------------------------------------------------
NOTEBOOKS["11_claims_checked"] = [
    md(r"""
# 11 · Claims checked

Write-ups about making language models small and fast are full of confident statements. This
lesson takes six of them and checks each one with code: the formulas on the "Claims checked"
docs page, and the measurements on the shipped teacher and on this machine. The functions live
in `minillm.claims`, so the page, the tests and this lesson compute the same thing.

| | the claim | what we do |
|---|---|---|
| (a) | soft-thresholding $\operatorname{sign}(x)\max(0, \lvert x\rvert-\theta)$ quantizes | vs. int8 |
| (b) | overlapped distributed time is $\min(\text{compute}, \text{transfer})$ | simulate a stream of chunks |
| (c) | a pruned model's loss is $J(w) \cdot M$ | finite differences of $J(w \odot M)$ |
| (d) | $n$ sequences in parallel run $n\times$ faster | measure throughput and latency vs batch |
| (e) | quantization makes inference $10\times$ faster | measure every format on every backend |
| (f) | the KD example's loss is 0.21 | recompute it under the standard definitions |

The machine running this is shared: treat measured speeds as noisy and compare rows with each
other rather than trusting any single number.
"""),
    code(r"""
import matplotlib.pyplot as plt
import numpy as np

import minillm
from minillm import backends, claims, data
from minillm.compress.prune import magnitude_mask
from minillm.compress.quantize import quantize_params
from minillm.nn.gpt import init_params
from minillm.train import evaluate

rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
cfg = teacher.config
val = data.encode_split("val", teacher.tokenizer)
n_tokens = 4_000  # validation slice: the first 4,000 characters of the held-out plays
print(teacher)
"""),
    md(r"""
## (a) Soft-thresholding is shrinkage, not quantization

$$S_\theta(x) = \operatorname{sign}(x)\max(0, |x| - \theta) = \arg\min_z \tfrac12(z - x)^2 + \theta|z|$$

is the proximal operator of the $\ell_1$ norm (LASSO, ISTA). It zeroes $|x| \le \theta$ and moves
everything else $\theta$ toward zero: $\operatorname{sign}(x)(S_\theta(x) - x) = -\min(|x|, \theta)$. A
quantizer instead rounds to a grid, $Q(w) = s\,\operatorname{round}(w/s)$, with error at most $s/2$
of either sign. We compare them on one teacher weight, with $\theta$ = half the int8 step of each
column — so both send exactly the same weights to zero.
"""),
    code(r"""
name = "h.1.mlp.c_fc.weight"
W = teacher.params[name]
step = claims.int8_step(W)  # (out,) one step per output column
soft = claims.soft_threshold(W, step / 2)
int8 = quantize_params({name: W}, "int8")[name].dequantize()
print(f"{name} {W.shape}: {W.size:,} weights")
print(f"{'':14s} {'distinct':>9s} {'zeros':>7s} {'bias toward 0':>14s} {'mean error':>11s} "
      f"{'max |error|':>11s} {'rel. error':>10s}")
for label, approx in (("soft-threshold", soft), ("int8", int8)):
    s = claims.shrinkage_stats(W, approx)
    print(f"{label:14s} {s['distinct']:9,d} {s['zero_fraction']:7.2%} {s['bias_toward_zero']:14.2e} "
          f"{s['mean_error']:11.2e} {s['max_abs_error']:11.2e} {s['rel_error']:10.2e}")
print(f"most distinct values int8 stores in one column: "
      f"{max(np.unique(int8[:, o]).size for o in range(W.shape[1]))} (at most 255)")

o = int(np.argmax(step))  # the column with the coarsest int8 grid
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
axes[0].plot(W[:, o], soft[:, o] - W[:, o], ".", ms=3, label="soft-threshold")
axes[0].plot(W[:, o], int8[:, o] - W[:, o], ".", ms=3, label="int8")
axes[0].set_xlabel("w")
axes[0].set_ylabel("approximation - w")
axes[0].set_title(f"errors in column {o}: shrinkage is biased, rounding is not")
axes[0].legend()
grid = np.linspace(-5 * step[o], 5 * step[o], 2001)  # a zoom on +-5 int8 steps around 0
axes[1].plot(grid, np.round(grid / step[o]) * step[o], label="int8: a staircase (a grid)")
axes[1].plot(grid, claims.soft_threshold(grid, step[o] / 2), label="soft-threshold: shifted lines")
axes[1].plot(grid, grid, "k:", lw=0.8, label="identity")
axes[1].set_xlabel("w (zoom: +-5 int8 steps)")
axes[1].set_ylabel("stored value")
axes[1].legend(fontsize=8)
plt.show()
"""),
    md(r"""
What each does to the model: the bytes it takes to store and the validation loss, with every
block weight soft-thresholded ($\theta$ = 0.5 to 32 int8 steps) or quantized to int8.
Soft-thresholded weights are still arbitrary float32 numbers: nothing gets smaller (short of
storing the zeros sparsely, which pays only once most weights are zero).
"""),
    code(r"""
base = evaluate(teacher, val, max_tokens=n_tokens)["loss"]
print(f"{'teacher, float32':34s} stored {teacher.nbytes / 1e6:5.2f} MB   val loss {base:.4f}")
variants = {f"soft-threshold, theta = {f:g} steps": claims.soft_threshold_params(teacher.params, f)
            for f in (0.5, 2.0, 8.0, 32.0)}
variants["int8 per column (a quantizer)"] = quantize_params(teacher.params, "int8")
for label, params in variants.items():
    model = minillm.GPT(cfg, params=params)
    loss = evaluate(model, val, max_tokens=n_tokens)["loss"]
    print(f"{label:34s} stored {model.nbytes / 1e6:5.2f} MB   val loss {loss:.4f} ({loss - base:+.4f})")
"""),
    md(r"""
## (b) Overlap gives the maximum, never the minimum

Chunks are transferred (time $t_j$) and then computed ($c_j$), on one link and one compute unit.
`claims.flow_shop` simulates $e_{s,j} = \max(e_{s-1,j}, e_{s,j-1}) + d_{s,j}$, with at most `max_in_flight`
chunks between arrival and completion (1: no overlap; 2: double buffering). Each resource must
do all of its work, so

$$\max\Big(\sum_j t_j, \sum_j c_j\Big) \le T_{\text{overlap}} \le \sum_j (t_j + c_j).$$
"""),
    code(r"""
t, c, n = 1.0, 2.0, 6
d = np.array([[t] * n, [c] * n])
fig, axes = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True)
for ax, k in zip(axes, (1, 2)):
    s = claims.flow_shop(d, max_in_flight=k)
    claims.gantt(s, ["transfer", "compute"], ax=ax,
                 title=f"max_in_flight={k}: makespan {s.makespan:g}")
plt.tight_layout()
plt.show()
print(f"no overlap: {claims.flow_shop(d, max_in_flight=1).makespan:g} = sum {n * (t + c):g}")
print(f"overlap:    {claims.flow_shop(d, max_in_flight=2).makespan:g} = t + c + (n-1) max(t, c) = "
      f"{t + c + (n - 1) * max(t, c):g}; the claimed min(sum t, sum c) = {min(n * t, n * c):g}")

ratios = []
for _ in range(2000):  # random chunk sizes
    d = rng.exponential(1.0, size=(2, 8))
    T = claims.flow_shop(d, max_in_flight=2).makespan
    ratios.append((T / d.sum(1).max(), T / d.sum(), T / d.sum(1).min()))
ratios = np.array(ratios)
print(f"over 2000 random streams: T / max(sums) in [{ratios[:, 0].min():.3f}, {ratios[:, 0].max():.3f}], "
      f"T / total in [{ratios[:, 1].min():.3f}, {ratios[:, 1].max():.3f}], "
      f"T / min(sums) >= {ratios[:, 2].min():.3f}")
"""),
    md(r"""
## (c) The loss and gradient of a pruned model

With a fixed keep-mask $M$ the pruned model computes with $w \odot M$: its loss is $J(w \odot M)$
(whereas $J(w)\cdot M$ is a scalar times a matrix), and by the chain rule

$$\nabla_w\, J(w \odot M) = \nabla J(w \odot M) \odot M.$$

We check it by central finite differences on the `tiny` preset in float64, on weights that are
kept and weights that are pruned, against two tempting mistakes: the dense gradient masked,
$\nabla J(w) \odot M$, and the pruned-point gradient left unmasked.
"""),
    code(r"""
tiny = minillm.GPTConfig.preset("tiny")
model = minillm.GPT(tiny, params=init_params(tiny, 0, dtype=np.float64))
name = "h.0.mlp.c_fc.weight"
M = magnitude_mask(model.params[name], 0.5)
idx, targets = rng.integers(0, tiny.vocab_size, size=(2, 4, 16))

def J(w):  # the pruned model's loss as a function of the dense weight w
    params = dict(model.params)
    params[name] = w * M
    return minillm.GPT(tiny, params=params).loss_and_grads(idx, targets)[0]

loss, grads = claims.masked_loss_and_grads(model, {name: M}, idx, targets)
dense_loss, dense_grads = model.loss_and_grads(idx, targets)
pruned_params = dict(model.params)
pruned_params[name] = model.params[name] * M
_, unmasked = minillm.GPT(tiny, params=pruned_params).loss_and_grads(idx, targets)

kept = [tuple(k) for k in np.argwhere(M)[:8]]
pruned = [tuple(k) for k in np.argwhere(~M)[:8]]
fd = claims.finite_difference(J, model.params[name], kept + pruned, h=1e-5)
print(f"J(w) = {dense_loss:.6f}, J(w * M) = {loss:.6f}; J(w) * M would have shape {(dense_loss * M).shape}")
for label, g in (("grad J(w*M) * M   (correct)", grads[name]),
                 ("grad J(w) * M     (dense point)", dense_grads[name] * M),
                 ("grad J(w*M)       (unmasked)", unmasked[name])):
    an = np.array([g[k] for k in kept + pruned])
    err = np.abs(an - fd)
    print(f"{label:32s} max |error| on kept {err[:8].max():.1e}, on pruned {err[8:].max():.1e} "
          f"(gradient scale {np.abs(fd).max():.1e})")
"""),
    md(r"""
## (d) $n$ sequences in parallel are not $n\times$ faster

A decode step reads the weights ($W$ bytes) once for all $B$ sequences, plus each sequence's KV
cache and activations ($X$ bytes each), and does $F$ FLOPs per token:

$$\text{tokens/s}(B) \le \min\left(\frac{B\beta}{W + BX}, \frac{\pi}{F}\right), \qquad
\frac{\text{tokens/s}(B)}{\text{tokens/s}(1)} \le \frac{B(W + X)}{W + BX} < B.$$

And each sequence waits for the whole step, so the latency per token grows with $B$.
`claims.batch_sweep` measures the teacher with the NumPy backend next to the roofline bounds of
this CPU (lesson 10 looks at this in more detail).
"""),
    code(r"""
rows = claims.batch_sweep(teacher, (1, 2, 4, 8, 16), new_tokens=24, repeat=3)
print(f"{'B':>3s} {'tokens/s':>9s} {'speed-up':>9s} {'ms/step':>8s} {'memory bound':>13s} {'compute bound':>14s}")
for r in rows:
    print(f"{r['batch']:3d} {r['decode_tok_s']:9.0f} {r['speedup']:8.2f}x {r['ms_per_step']:8.2f} "
          f"{r['memory_bound_tok_s']:13,.0f} {r['compute_bound_tok_s']:14,.0f}")
B = np.array([r["batch"] for r in rows])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
axes[0].loglog(B, [r["decode_tok_s"] for r in rows], "o-", base=2, label="measured")
axes[0].loglog(B, rows[0]["decode_tok_s"] * B, "k:", base=2, label="n x (the claim)")
axes[0].loglog(B, [min(r["memory_bound_tok_s"], r["compute_bound_tok_s"]) for r in rows], "s--",
               base=2, label="roofline bound")
axes[0].set_xlabel("batch B")
axes[0].set_ylabel("tokens/s (all sequences)")
axes[0].legend()
axes[1].plot(B, [r["ms_per_step"] for r in rows], "o-")
axes[1].set_xlabel("batch B")
axes[1].set_ylabel("ms per token, per sequence")
axes[1].set_title("latency grows with the batch")
plt.show()
"""),
    md(r"""
## (e) "Quantization makes it 10× faster"

A memory-bound decode step can gain at most the ratio of bytes it reads,
$\text{bytes}_{\text{fp32}} / \text{bytes}_q$ — and only with a kernel that multiplies by the stored codes.
A kernel that first dequantizes to float32 reads the codes, writes a float32 copy and reads it
back: more traffic than the float32 model, so it has no reason to gain anything. (And the
bound is on tokens/s, $\beta/\text{bytes}_q$: a speed-up over float32 can exceed the bytes
ratio only when the float32 run itself was far from its own memory bound.) We measure four
formats on the CPU backends available here (NumPy and Numba; JAX in lesson 08), on four layers
of GPT-2's width ($C = 768$: 113 MB of block weights in float32, more than the caches hold)
with a 96-symbol vocabulary, so that the block weights, which quantization compresses,
dominate the bytes.
"""),
    code(r"""
cpu_backends = [b for b in backends.available() if b in ("numpy", "numba")]  # JAX: lesson 08
print("backends measured:", cpu_backends)
wide = minillm.GPT(minillm.GPTConfig.preset("gpt2", n_layer=4, vocab_size=96), seed=0)
rows = claims.quantized_speed(wide, ("fp32", "int8", "q8_0", "q4_0"), backends=cpu_backends,
                              prompt_tokens=4, new_tokens=10, repeat=2)
print(f"{'backend':8s} {'format':6s} {'MB/token':>9s} {'tokens/s':>9s} {'speed-up':>9s} "
      f"{'bytes ratio':>12s} {'memory bound':>13s}")
for r in rows:
    print(f"{r['backend']:8s} {r['method']:6s} {r['bytes_per_token'] / 1e6:9.1f} {r['decode_tok_s']:9.1f} "
          f"{r['speedup']:8.2f}x {r['bytes_ratio']:11.2f}x {r['memory_bound_tok_s']:13.0f}")

names = list(dict.fromkeys(r["backend"] for r in rows))
methods = list(dict.fromkeys(r["method"] for r in rows))
fig, ax = plt.subplots(figsize=(8, 3.6))
width = 0.8 / len(names)
for k, be in enumerate(names):
    ax.bar(np.arange(len(methods)) + k * width, [r["speedup"] for r in rows if r["backend"] == be],
           width, label=be)
ax.plot(np.arange(len(methods)) + 0.4 - width / 2, [r["bytes_ratio"] for r in rows if r["backend"] == names[0]],
        "k_", ms=30, mew=2, label="bytes ratio")
ax.axhline(1, color="gray", lw=0.8)
ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods)
ax.set_ylabel("speed-up over fp32, same backend")
ax.legend()
plt.show()
"""),
    md(r"""
## (f) The knowledge-distillation worked example

Labels $[0, 1, 0]$, student probabilities $[0.3, 0.5, 0.2]$, teacher $[0.1, 0.8, 0.1]$; claimed loss
0.21. The standard quantities are $\mathrm{CE} = -\ln p_s[y]$, $\mathrm{KL}(p_t\|p_s) = \sum_i p_t[i]\ln(p_t[i]/p_s[i])$
(what distillation minimizes), the reverse KL, and $H(p_t, p_s) = H(p_t) + \mathrm{KL}(p_t\|p_s)$.
`kd_worked_example` computes them all — and also what one gets by mistaking the probabilities for
logits — and lists which round to the claimed value.
"""),
    code(r"""
r = claims.kd_worked_example(student=(0.3, 0.5, 0.2), teacher=(0.1, 0.8, 0.1), label=1, claimed=0.21)
for reading, terms in (("as probabilities", r["probabilities"]), ("misread as logits", r["logits"])):
    print(reading)
    for k, v in terms.items():
        print(f"    {k:32s} {v:.4f}")
print(f"quantities that round to {r['claimed']}: {r['matches'] or 'none'}")
for alpha in (0.5, 0.1):
    mixed = alpha * r["probabilities"]["ce"] + (1 - alpha) * r["probabilities"]["kl_teacher_student"]
    print(f"alpha = {alpha}: alpha CE + (1 - alpha) KL(t||s) = {mixed:.4f}")
"""),
    md(r"""
## Exercises

1. (a) For which $\theta$ does soft-thresholding the teacher's block weights lose as much
   validation loss as int4 per-group quantization (`quantize_params(params, "int4-g32")`)? How
   many distinct values does each keep?
2. (b) With `max_in_flight=2` and a fixed total $\sum t = \sum c$, how should the stream be cut
   into chunks to bring the makespan closest to $\max(\sum t, \sum c)$? What is the overhang
   with $n$ equal chunks?
3. (d, e) Using the roofline, predict the batch size at which the teacher's decode becomes
   compute-bound on this CPU, then extend `batch_sweep` to it. Which backend in (e) comes
   closest to its bytes-ratio bound, and what limits the others?
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["10_parallelism"] = [
    md(r"""
# 10 · Parallelism: data, tensor and pipeline

One device is not always enough: the weights may not fit, or one device may be too slow. There
are three basic ways to spread a model over $n$ devices:

- **data parallel**: every device holds all the weights and takes $1/n$ of the batch;
- **tensor parallel**: every device holds $1/n$ of every weight matrix, and the devices
  exchange partial results (an *all-reduce*) twice per block;
- **pipeline parallel**: every device holds $1/n$ of the *layers*, and micro-batches flow from
  device to device.

We try the first two for real with JAX on 8 emulated CPU devices (`minillm.backends.parallel`),
simulate the third, and finish with the cheapest parallelism of all — batching several
sequences on one device — measured against the roofline.

JAX decides how many CPU devices to emulate when it is first imported, so the flag must be set
before anything imports it:
"""),
    code(r"""
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"  # before JAX is imported

import jax
import matplotlib.pyplot as plt
import numpy as np

import minillm
from minillm import claims
from minillm.backends import parallel
from minillm.nn import functional as F

print(f"JAX sees {jax.device_count()} devices: {jax.devices()}")
rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
cfg = teacher.config
print(teacher)
"""),
    md(r"""
## Data parallelism

Split the batch of $B$ sequences into $n$ pieces; device $s$ runs the full model on piece $s$.
Nothing is exchanged during inference (training adds one all-reduce of the gradients per step).
The NumPy simulation runs the pieces one after another; the JAX backend
`parallel.data_parallel_backend(mesh)` places the batch and the KV cache split over the mesh's
`"data"` axis and the weights replicated, and `minillm.generate` runs on it unchanged.
"""),
    code(r"""
prompts = np.array([teacher.tokenizer.encode(s) for s in
                    ["ROMEO:\nOh", "JULIET:\nA", "HAMLET:\nT", "KING:\nWha"]])  # (4, 9)
ref = teacher.forward(prompts)
sim = parallel.data_parallel_forward_numpy(teacher.params, cfg, prompts, n_shards=4)
print(f"NumPy simulation, 4 shards: max |logits - single device| = {np.abs(sim - ref).max():.1e}")

mesh = parallel.make_mesh(data=4, model=1)
dp = parallel.data_parallel_backend(mesh)
k, _ = dp.kv_alloc(cfg.n_layer, 4, cfg.n_head, cfg.block_size, cfg.head_size)
for shard in k.addressable_shards:
    print(f"  KV cache piece on {shard.device}: shape {shard.data.shape} (L, B/4, H, T, D)")
out_dp = minillm.generate(teacher, prompts, 24, temperature=0, backend=dp)
out_np = minillm.generate(teacher, prompts, 24, temperature=0)
print("greedy tokens identical to NumPy on one device:", np.array_equal(out_dp, out_np))
for row in out_dp[:2]:
    print(repr(teacher.tokenizer.decode(row.tolist())))
"""),
    md(r"""
## Tensor parallelism

Megatron-LM (Shoeybi et al. 2019) splits the MLP's first weight by **columns** and its second by
**rows**. GELU acts on each column separately, so each device can finish its own columns, and
one sum combines the devices' outputs:

$$\mathrm{gelu}(h W_1)\, W_2 = \sum_{s=1}^{n} \mathrm{gelu}\big(h W_1^{(s)}\big)\, W_2^{(s)}.$$

Attention splits the same way by heads. First the identity itself, on the teacher's first MLP:
"""),
    code(r"""
h = rng.normal(size=(5, cfg.n_embd)).astype(np.float32)  # 5 rows of activations
W1, b1 = teacher.params["h.0.mlp.c_fc.weight"], teacher.params["h.0.mlp.c_fc.bias"]
W2 = teacher.params["h.0.mlp.c_proj.weight"]
full = F.gelu(h @ W1 + b1)[0] @ W2  # (5, C)
n = 4
cols = np.split(np.arange(W1.shape[1]), n)  # each device: a quarter of the 4C hidden columns
parts = [F.gelu(h @ W1[:, c] + b1[c])[0] @ W2[c] for c in cols]
print(f"sum of {n} partial products vs the full MLP: max |difference| = {np.abs(sum(parts) - full).max():.1e}")
print(f"each device holds {W1[:, cols[0]].shape} of W1 and {W2[cols[0]].shape} of W2")

shards = parallel.shard_params(teacher.params, cfg, n)
for name, w in shards[0].items():
    if name.startswith("h.0.") and name.endswith("weight"):
        print(f"  shard 0 {name:24s} {str(w.shape):12s} (full {teacher.params[name].shape})")
"""),
    md(r"""
The whole forward pass with split weights: the NumPy simulation loops over the shards and sums
(we count the all-reduces), and the JAX version runs each shard on its own device with
`jax.shard_map`, the sum being `lax.psum` over the mesh's `"model"` axis. A $(2, 4)$ mesh uses all
8 devices: the batch split in 2, every weight in 4.
"""),
    code(r"""
calls = []

def counting_sum(partials):
    calls.append(partials[0].shape)
    return sum(partials)

sim = parallel.tensor_parallel_forward_numpy(teacher.params, cfg, prompts, n, all_reduce=counting_sum)
print(f"NumPy simulation: {len(calls)} all-reduces for {cfg.n_layer} layers, each of a {calls[0]} "
      f"activation; max |logits - single device| = {np.abs(sim - ref).max():.1e}")
mesh = parallel.make_mesh(data=2, model=4)
tp = parallel.tensor_parallel_forward(teacher.params, cfg, prompts, mesh)
print(f"JAX on a {dict(mesh.shape)} mesh: max |logits - single device| = {np.abs(tp - ref).max():.1e}")
tokens = parallel.tensor_parallel_generate(teacher.params, cfg, prompts, 12, mesh)
print("greedy tokens identical:", np.array_equal(tokens, minillm.generate(teacher, prompts, 12, temperature=0)))
"""),
    md(r"""
### Is it worth it? Communication against computation

Per block and per token, the matmuls cost $24C^2$ FLOPs, split over $n$ devices; the two
all-reduces move a $C$-vector each. A ring all-reduce sends and receives $2\frac{n-1}{n}$ times the
data per device. With peak $\pi$ per device, link bandwidth $\beta_{\text{link}}$ and $a$ bytes per
value:

$$t_{\text{compute}} = \frac{24 C^2}{n\pi}, \qquad
  t_{\text{comm}} = 2 \cdot 2\frac{n-1}{n}\cdot\frac{C a}{\beta_{\text{link}}}, \qquad
  \frac{t_{\text{comm}}}{t_{\text{compute}}} = \frac{(n-1)\, a}{6C} \cdot \frac{\pi}{\beta_{\text{link}}}.$$

The ratio does not depend on the batch, grows linearly with $n$ and shrinks with the width $C$:
tensor parallelism suits wide models on devices with fast links. And even with perfect overlap
a block takes $\max(t_{\text{compute}}, t_{\text{comm}})$, never less (lesson 11, claim (b)). Below,
for $\pi/\beta_{\text{link}} = 2000$ FLOP/byte (the order of a modern GPU's 16-bit peak over its
fastest link) and $a = 2$:
"""),
    code(r"""
ratio_pi_beta, a = 2000.0, 2
ns = np.array([1, 2, 4, 8, 16, 32, 64])
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for C in (768, 4096, 12288):
    ratio = (ns - 1) * a / (6 * C) * ratio_pi_beta
    ax.plot(ns, ratio, "o-", label=f"C = {C}")
    print(f"C = {C:5d}: communication = computation at n = {1 + 6 * C / (a * ratio_pi_beta):.0f} devices")
ax.axhline(1, color="black", lw=0.8)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("devices n")
ax.set_ylabel("t_comm / t_compute")
ax.legend()
plt.show()
"""),
    md(r"""
## Pipeline parallelism

Give device $s$ the layers $sL/S \ldots (s+1)L/S - 1$. A batch must pass through the devices in
order, so with one batch only one device works at a time. GPipe (Huang et al. 2019) cuts the
batch into $m$ micro-batches that follow each other through the pipeline. Micro-batch $j$ starts
on device $s$ when it has left device $s-1$ and device $s$ is free — the flow-shop recurrence
$e_{s,j} = \max(e_{s-1,j}, e_{s,j-1}) + d_{s,j}$ of `claims.flow_shop`. With equal stage times
$\tau$ it takes $(S + m - 1)\tau$, and each device idles for the **bubble** fraction

$$\frac{S - 1}{m + S - 1}.$$
"""),
    code(r"""
S = 4
fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True)
for ax, m in zip(axes, (1, 4, 8)):
    sched = claims.flow_shop(np.ones((S, m)) * 8 / m)  # the same total work, cut in m pieces
    claims.gantt(sched, [f"device {s}" for s in range(S)], ax=ax,
                 title=f"m = {m} micro-batches: makespan {sched.makespan:g}, "
                       f"bubble {1 - sched.busy_fraction[0]:.1%} (formula {(S - 1) / (m + S - 1):.1%})")
plt.tight_layout()
plt.show()

# Unequal stages: the slowest one sets the pace.
d = np.array([1.0, 1.5, 1.0, 1.0])[:, None] * np.ones((S, 16))
sched = claims.flow_shop(d)
print(f"stage times {d[:, 0].tolist()}, 16 micro-batches: makespan {sched.makespan:g} = "
      f"sum of stages + 15 x slowest = {d[:, 0].sum() + 15 * d[:, 0].max():g}; "
      f"busy fractions {np.round(sched.busy_fraction, 3).tolist()}")
"""),
    md(r"""
## Batching on one device

The cheapest parallelism: decode $B$ sequences together on one device. A decode step reads all
$W$ bytes of weights once, whatever $B$, plus $X$ bytes per sequence (its KV cache and
activations), and does $F$ FLOPs per token, so

$$\text{tokens/s}(B) \le \min\left(\frac{B\,\beta}{W + B X},\ \frac{\pi}{F}\right).$$

While memory-bound, throughput grows almost linearly with $B$; the compute roof caps it; and
every sequence waits for the whole step. `claims.batch_sweep` measures the teacher (NumPy
backend) at $B$ = 1 … 16 next to the roofline of this CPU. `roofline_tok_s` is the roofline
model's prediction summing each op's own bound.
"""),
    code(r"""
rows = claims.batch_sweep(teacher, (1, 2, 4, 8, 16), prompt_tokens=16, new_tokens=32, repeat=5)
print(f"{'B':>3s} {'tokens/s':>9s} {'x batch 1':>10s} {'ms/step':>8s} {'roofline':>9s} {'memory':>9s} {'compute':>9s}")
for r in rows:
    print(f"{r['batch']:3d} {r['decode_tok_s']:9.0f} {r['speedup']:9.2f}x {r['ms_per_step']:8.2f} "
          f"{r['roofline_tok_s']:9.0f} {r['memory_bound_tok_s']:9.0f} {r['compute_bound_tok_s']:9.0f}")
B = np.array([r["batch"] for r in rows])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
ax = axes[0]
ax.loglog(B, [r["decode_tok_s"] for r in rows], "o-", base=2, label="measured (NumPy)")
ax.loglog(B, [r["roofline_tok_s"] for r in rows], "s--", base=2, label="roofline prediction")
ax.loglog(B, [r["compute_bound_tok_s"] for r in rows], ":", base=2, label="compute roof")
ax.loglog(B, rows[0]["decode_tok_s"] * B, "k:", base=2, lw=0.8, label="B x batch 1")
ax.set_xlabel("batch B")
ax.set_ylabel("tokens/s, all sequences")
ax.legend(fontsize=8)
axes[1].plot(B, [r["ms_per_step"] for r in rows], "o-")
axes[1].set_xlabel("batch B")
axes[1].set_ylabel("ms per token (each sequence)")
plt.show()
print(f"measured speed-up at B = {B[-1]}: {rows[-1]['speedup']:.1f}x; latency per token x"
      f"{rows[-1]['ms_per_step'] / rows[0]['ms_per_step']:.1f}; measured / roofline at B = 1: "
      f"{rows[0]['decode_tok_s'] / rows[0]['roofline_tok_s']:.0%}")
"""),
    md(r"""
Two effects the roofline leaves out shape the measured curve. A decode step is about a
hundred small NumPy calls whose fixed cost does not depend on $B$, which favours batching (the
overhead is shared by more tokens). And the teacher's 7 MB of weights may stay in the CPU's
caches between steps, so the main-memory bound need not bind at all. Either way, the measured
speed-up should stay below $B$, and every sequence's per-token latency grows with the batch.

## Exercises

1. Data parallelism needs the batch to divide evenly. What does `data_parallel_backend` do with
   $B = 6$ on 4 devices, and how would you serve 6 sequences anyway?
2. Count the bytes each device receives in one tensor-parallel forward of the teacher on 4
   devices with a prompt of 9 tokens (use the all-reduce count printed above). How does it scale
   with the prompt length?
3. In the pipeline simulation, give the stages the real per-layer-group cost of the teacher
   (`minillm.hw.roofline_report(..., phase="prefill")` op times, summed per layer) and find the
   number of micro-batches that brings the bubble below 10%.
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["08_backends"] = [
    md(r"""
# 08 · Backends: one forward pass, several engines

The GPT forward pass in `minillm.nn.gpt.forward` is written once, against a *backend*: an array
namespace `xp` and a handful of kernels — `linear(x, W, b)`, `layer_norm`, `gelu`, `attention`,
`lm_head` and the KV cache's `kv_alloc` / `kv_write`. Swapping the backend swaps the engine:

| backend | what it is | why |
|---|---|---|
| `numpy` | the reference kernels | the living definition every other backend is tested against |
| `numba` | compiled CPU kernels | **fused** dequantize-and-multiply: reads the stored codes, never a float32 copy |
| `jax` | the whole step compiled by XLA | one call per token instead of a hundred; CPU, GPU or TPU |
| `cupy` | the NumPy kernels on an NVIDIA GPU | the same code with `xp = cupy` |

This lesson checks that they agree, measures how fast they decode, looks inside the fused
kernel, and explains what CuPy does on a GPU.
"""),
    code(r"""
import time

import matplotlib.pyplot as plt
import numpy as np

import minillm
from minillm import backends
from minillm.bench import bench_decode
from minillm.compress.quantize import quantize_params, quantize_weight
from minillm.hw.devices import bandwidth_probe

rng = np.random.default_rng(0)
teacher = minillm.load("teacher")
cfg = teacher.config
names = backends.available()
print("known backends:    ", backends.names())
print("available here:    ", names)
for name, why in backends.unavailable().items():
    print(f"unavailable {name!r}: {why}")
if "numba" in names:
    t = time.perf_counter()
    backends.get("numba").compile()  # compile every kernel (or load them from the on-disk cache)
    print(f"numba kernels ready in {time.perf_counter() - t:.1f} s")
"""),
    md(r"""
## Do they agree?

Every backend computes the same function in float32, but not in the same order: BLAS, Numba's
loops and XLA each sum in their own order, and float addition is not associative. So logits
agree to about $10^{-5}$ relative, not bit for bit — and greedy decoding, which only compares
logits, should give the same tokens unless two candidates are closer than that. We also try
JAX in bfloat16 (`"jax:bfloat16"`): 8 bits of mantissa, so visibly different logits.
"""),
    code(r"""
prompt = np.array([teacher.tokenizer.encode("KING RICHARD III:\nNow is the winter of our")])
ref_logits = teacher.forward(prompt)  # numpy, (1, T, V)
ref_tokens = minillm.generate(teacher, prompt, 60, temperature=0)
extra = ["jax:bfloat16"] if "jax" in names else []
for name in names + extra:
    logits = teacher.forward(prompt, backend=name)
    tokens = minillm.generate(teacher, prompt, 60, temperature=0, backend=name)
    rel = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
    same = int((tokens[0, prompt.shape[1]:] == ref_tokens[0, prompt.shape[1]:]).sum())
    print(f"{name:13s} max |logits - numpy| / max |logits| = {rel:.1e};  greedy tokens equal to numpy: {same}/60")
print(repr(teacher.tokenizer.decode(ref_tokens[0].tolist())))
"""),
    md(r"""
## How fast do they decode?

`bench_decode` times greedy decoding through the KV cache, best of 3 runs after a warm-up run
(which includes JIT compilation: reported separately as `warmup_s`). We measure the teacher
(7 MB of weights, small enough to stay in the CPU's caches) and a *slice* of GPT-2: four blocks
of its width ($C = 768$, 113 MB of block weights in float32) with a small vocabulary, in float32
and Q8_0. On this shared 2-core machine, compare backends with each
other rather than trusting absolute numbers.
"""),
    code(r"""
slice_fp32 = minillm.GPT(minillm.GPTConfig.preset("gpt2", n_layer=4, vocab_size=96), seed=0)
slice_q8 = minillm.GPT(slice_fp32.config, params=quantize_params(slice_fp32.params, "q8_0"))
models = {"teacher fp32": teacher, "GPT-2 slice fp32": slice_fp32, "GPT-2 slice q8_0": slice_q8}
speed, step_ms = {}, {}
print(f"{'model':18s} {'backend':8s} {'MB/token':>9s} {'tokens/s':>9s} {'ms/token':>9s} {'GB/s':>6s} "
      f"{'warm-up s':>10s}")
for label, model in models.items():
    for name in names:
        r = bench_decode(model, backend=name, prompt_tokens=8, new_tokens=24, repeat=3)
        speed[label, name], step_ms[label, name] = r["decode_tok_s"], r["decode_ms_per_token"]
        print(f"{label:18s} {name:8s} {r['bytes_per_token'] / 1e6:9.2f} {r['decode_tok_s']:9.1f} "
              f"{r['decode_ms_per_token']:9.3f} {r['achieved_gb_s']:6.2f} {r['warmup_s']:10.2f}")

fig, ax = plt.subplots(figsize=(8, 3.6))
width = 0.8 / len(names)
for k, name in enumerate(names):
    ax.bar(np.arange(len(models)) + k * width, [speed[label, name] for label in models], width, label=name)
ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, list(models))
ax.set_yscale("log")
ax.set_ylabel("decode tokens/s (batch 1)")
ax.legend()
plt.show()
"""),
    md(r"""
## Where does a step's time go?

A decode step is its matrix products plus everything else: layer norms, attention over the
cache, GELU, the cache writes and the code between them. `bench_products` times the products
alone — every block's four and the LM head, one after another in the backend's own `linear` —
so the step minus the products is the rest (`steps=8`: best of 3 runs of 8 chains, to keep the
lesson quick). Where the rest is most of the step, a faster kernel
cannot help much; where the products dominate, the kernel is what pays. (Both are best-of-a-few
timings taken seconds apart on a shared machine: differences of a few percent are noise.)
"""),
    code(r"""
from minillm.bench import bench_products

print(f"{'model':18s} {'backend':8s} {'step ms':>8s} {'products ms':>12s} {'rest ms':>8s} {'rest':>5s}")
for label, model in models.items():
    for name in names:
        step = step_ms[label, name]
        products = bench_products(model, backend=name, steps=8)["products_ms"]
        print(f"{label:18s} {name:8s} {step:8.3f} {products:12.3f} {step - products:8.3f} "
              f"{(step - products) / step:5.0%}")
"""),
    md(r"""
## One block, one call

The rest of a step is partly Python: the forward's reshapes and residual adds, each kernel's
wrapper, and Numba's dispatch of each call. `NumbaBackend.block` removes it: the forward hands
it a whole transformer block, which `decode_block` runs as one compiled call — the same kernels
in the same order, so the answer is the same to the bit. Switch it off (`fused_blocks = False`)
and the forward calls the kernels one by one. The gain is largest where the calls' overhead is a
large part of the step: on the teacher, whose 7 MB of weights sit in the CPU's caches, more than
on the GPT-2 slice, whose products move four times the bytes (the MB/token column above). Three
alternating pairs of `bench_decode` runs:
"""),
    code(r"""
if "numba" in names:
    from minillm.backends.numba_ import NumbaBackend

    fused, one_by_one = NumbaBackend(), NumbaBackend()
    one_by_one.fused_blocks = False
    same = np.array_equal(teacher.forward(prompt, backend=fused), teacher.forward(prompt, backend=one_by_one))
    print("logits identical to the bit:", same)
    for label, model in (("teacher fp32", teacher), ("GPT-2 slice q8_0", slice_q8)):
        tok = {"fused": [], "one by one": []}
        for _ in range(3):
            for key, be in (("fused", fused), ("one by one", one_by_one)):
                tok[key].append(bench_decode(model, backend=be, prompt_tokens=8, new_tokens=24)["decode_tok_s"])
        ratio = np.median(np.array(tok["fused"]) / np.array(tok["one by one"]))
        print(f"{label:18s} fused {np.median(tok['fused']):8.1f} tok/s, one by one "
              f"{np.median(tok['one by one']):8.1f} tok/s: {ratio:.2f}x (median of 3 pairs)")
"""),
    md(r"""
## Inside the fused kernel

Q8_0 stores a weight column in blocks of 32 inputs: 32 int8 codes $q$ and one float16 scale
$d$ per block. NumPy must build the float32 matrix before it can call BLAS: it reads the codes
($mn$ bytes), writes $4mn$ bytes of float32, and reads them back — about $9mn$ bytes, more than
the $4mn$ of the float32 weight it replaces. The Numba kernel never builds it. Because the scale is
constant within a block, it factors out of the block's sum:

$$(xW)_o = \sum_{g} d_{go} \sum_{i \in g} x_i\, q_{io},$$

so the inner loop runs on the int8 codes and the whole product reads $\frac{34}{32}mn$ bytes. For
one row $x$ (a decode step) the work is memory-bound, so bytes should be time. On GPT-2 MLP
weights ($768 \times 3072$), per weight:
"""),
    code(r"""
# Eight different GPT-2 MLP weights: 75 MB in float32, more than the CPU's caches hold, so each
# pass streams them from main memory as a real decode step does (one weight would stay cached).
Ws = [rng.normal(0, 0.02, size=(768, 3072)).astype(np.float32) for _ in range(8)]
qs = [quantize_weight(W, "q8_0") for W in Ws]  # minillm.kinds.Q8_0
x = rng.normal(size=(1, 768)).astype(np.float32)
m, n = Ws[0].shape

def best_ms(fn, repeat=10):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)

np_be = backends.get("numpy")
cases = {"float32 dense, x @ W": ([lambda W=W: x @ W for W in Ws], 4 * m * n),
         "q8_0, numpy (dequantize, then BLAS)": ([lambda q=q: np_be.linear(x, q, None) for q in qs],
                                                 qs[0].nbytes + 8 * m * n)}
if "numba" in names:
    nb = backends.get("numba")
    kws = [nb.kernel_weight(q) for q in qs]  # converted once, as prepare() does for a model
    cases["q8_0, numba (fused)"] = ([lambda w=w: nb.linear(x, w, None) for w in kws], qs[0].nbytes)
exact = x @ qs[0].dequantize()
for label, (fns, nbytes) in cases.items():
    err = np.abs(fns[0]() - (x @ Ws[0] if label.startswith("float32") else exact)).max()
    ms = best_ms(lambda fns=fns: [f() for f in fns]) / len(fns)  # per weight
    print(f"{label:38s} {ms:7.3f} ms per weight   {nbytes / 1e6:6.2f} MB moved -> {nbytes / ms / 1e6:6.2f} GB/s"
          f"   max |error| {err:.1e}")
probe = bandwidth_probe()  # a 128 MiB matrix, allocated once; each call measures again
print(f"this CPU's main-memory bandwidth, measured just now: {probe() / 1e9:.1f} GB/s")
"""),
    md(r"""
The dense product is the baseline to beat. Whether the fused kernel beats it on *this* machine
depends on how well the compiled loop streams memory compared with a tuned BLAS, and on what
else the two shared cores are doing — which is why every speed claim in these lessons is a
measurement printed by code, never a number typed in the text.

The kernel reads the float16 scales as they are stored, 2 bytes each, though Numba has no
float16 arithmetic on the CPU. It widens them by moving bits: a half is a sign bit, 5 exponent
bits (bias 15) and 10 mantissa bits; float32 has 8 exponent bits (bias 127) and 23 mantissa bits.
Put the sign at bit 31 and the other 15 bits 13 places up, read the 32 bits as a float32, and you
get $h \cdot 2^{15 - 127} = h \cdot 2^{-112}$, so one multiply by $2^{112}$ restores $h$ exactly.
Integer shifts and one multiply: operations SIMD lanes do 16 at a time. In NumPy, on every finite
half there is:
"""),
    code(r"""
halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
halves = halves[np.isfinite(halves.view(np.float16))]  # all 63,488 finite float16 bit patterns
h = halves.astype(np.int32)
bits = ((h & 0x7FFF) << 13) | ((h & 0x8000) << 16)  # sign to bit 31, exponent and mantissa up 13
widened = bits.view(np.float32) * np.float32(2.0**112)
exact = halves.view(np.float16).astype(np.float32)
print("every finite half widened exactly:", np.array_equal(widened.view(np.uint32), exact.view(np.uint32)))
for v in (np.float16(0.0123), np.float16(-2.5), np.float16(6e-8)):  # 6e-8: a subnormal half
    i = int(np.flatnonzero(halves == v.view(np.uint16))[0])
    print(f"{float(v):>12.6g}: bits {int(h[i]):016b} -> {int(bits[i]) & 0xFFFFFFFF:032b} -> {widened[i]:.6g}")
"""),
    md(r"""
## The limit moves

"Fraction of the bandwidth limit" divides by a measurement too: `bandwidth_probe()` times one
float32 matrix–vector product over 128 MiB (each weight read once, as in decoding) and keeps
the fastest of about 0.15 s of runs. On a machine shared with others that limit is not a
constant. Probe it back to back for a few seconds and look:
"""),
    code(r"""
t0, series = time.perf_counter(), []
while time.perf_counter() - t0 < 6:
    series.append((time.perf_counter() - t0, probe() / 1e9))
seconds, gb_s = np.array(series).T
print(f"{len(gb_s)} probes in 6 s: {gb_s.min():.1f} to {gb_s.max():.1f} GB/s, median {np.median(gb_s):.1f}")
fig, ax = plt.subplots(figsize=(7, 2.5))
ax.plot(seconds, gb_s, ".-")
ax.set(xlabel="seconds", ylabel="GB/s", title="the same product, measured again and again")
ax.set_ylim(bottom=0)
plt.show()
"""),
    md(r"""
On the machine these lessons were written on, the probe sat at one level for a second or ten
and then jumped between about 40, 50 and 70 GB/s, as whatever else shares the host came and
went. A limit measured once and cached would divide today's steps by another moment's
bandwidth, so `minillm bench` measures it just before its run and `minillm bench --suite` just
before every entry, and plots them over the run (the measured table on the backends page).
That table also times two peers in the same rounds, each with its own limit: Hugging Face
transformers' `generate` (`--peer-python`) and llama.cpp on the same formats, float32, Q8_0 and
Q4_0 (`--llamacpp-python`). Given a model's own weights as GGUF, llama.cpp computes our logits
(a reference test in `tests/test_peers.py`), so its speeds and ours measure the same work.
"""),
    md(r"""
## CuPy: the same kernels on a GPU

`CupyBackend` is `ArrayBackend(xp)` with `xp = cupy`: the NumPy kernels written against an array
namespace, so `x @ W`, `xp.exp`, `xp.where` run as CUDA kernels on device arrays. `prepare()`
copies every weight to GPU memory once, in its stored form (int8 codes, packed nibbles, float16
scales), cached per weight object so later `generate` calls copy nothing. A quantized weight is
dequantized on the GPU by elementwise array operations just before its product — which writes
the dequantized tile to device memory and reads it back; a fused CUDA kernel (what the Numba
backend does on the CPU) would save that traffic. On a machine without a GPU the backend is
unavailable, with a message that says why:
"""),
    code(r"""
try:
    gpu = backends.get("cupy")
    logits = teacher.forward(prompt, backend=gpu)
    print(f"CuPy on {gpu}: max |logits - numpy| = {np.abs(logits - ref_logits).max():.1e}")
except backends.BackendUnavailable as e:
    print(f"BackendUnavailable: {e}")
"""),
    md(r"""
Because the kernels are written against `xp`, the very same code path runs with NumPy standing
in for CuPy (`CupyBackend(xp=numpy)`), which is how it is tested on machines without a GPU:
"""),
    code(r"""
from minillm.backends.cupy_ import CupyBackend

double = CupyBackend(xp=np)
for label, model in (("fp32", teacher), ("q8_0", minillm.GPT(cfg, params=quantize_params(teacher.params, "q8_0")))):
    a = model.forward(prompt, backend=double)
    b = model.forward(prompt)
    print(f"{double.name} {label}: max |logits - numpy backend| = {np.abs(a - b).max():.1e}")
"""),
    md(r"""
## Exercises

1. Add a backend: subclass `minillm.backends.numpy_.NumpyBackend`, override `gelu` with the
   exact erf-based GELU, and measure how much the teacher's logits and greedy tokens change.
2. The JAX backend compiles one step per (batch, tokens, attention length) shape. From the
   `warmup_s` column, estimate its compile time, and count compiled variants with
   `backends.get("jax").compile_cache_size()` after generating 200 tokens.
3. Repeat the fused-kernel measurement with Q4_0 (`quantize_weight(W, "q4_0")`). How many bytes
   does each path move now, and does the time follow?
4. On a CPU with AVX-512 VNNI (`minillm.backends.numba_.HAS_VNNI`), Numba multiplies Q4_0 with
   integer dot products on the row written in block floating point (docs: Backends). Time the
   Q4_0 product with `nb.q4_0_vnni = True` and `False`, and compare both with the float64
   product `x.astype(np.float64) @ q.dequantize().astype(np.float64)`: which errs more? Compare
   with the bound $S \sum_i |w_i|$, $S \approx 1.2 \cdot 10^{-7} \max_i |x_i|$, and try a row with
   one large outlier.
"""),
]


if __name__ == "__main__":
    main(sys.argv[1:])
