"""Build lessons 00-05 from this file: the notebooks are generated artifacts, never edited by hand.

    python lessons/_build/make_00_05.py            # writes lessons/00_tour.ipynb ... 05_pruning.ipynb

Each lesson is a list of cells, ``md(...)`` for prose and math, ``code(...)`` for code that calls
the public API of `minillm`. Notebooks are written with outputs stripped (no outputs,
``execution_count`` null) and deterministic cell ids, so that rebuilding an unchanged lesson
gives a byte-identical file. CI executes them with ``pytest --nbmake lessons/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parents[1]


def md(text: str) -> tuple[str, str]:
    return ("markdown", text.strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", text.strip("\n"))


# The first code cell of every lesson. A source checkout has `minillm` one directory up; an
# installed package is found as is.
SETUP = code(r'''
import importlib.util
import pathlib
import sys

if importlib.util.find_spec("minillm") is None:  # running from a source checkout
    sys.path.insert(0, str(pathlib.Path.cwd().parent))

import matplotlib.pyplot as plt
import numpy as np

import minillm

np.set_printoptions(precision=4, suppress=True, linewidth=110)
print("minillm", minillm.__version__)
''')


def write(name: str, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    stem = name.split("_")[0]
    for i, (kind, src) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell(src)
            cell.outputs, cell.execution_count = [], None
        cell.id = f"l{stem}-{i:02d}"
        nb.cells.append(cell)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "execution": {"timeout": 300},  # seconds per cell (nbmake, mkdocs-jupyter)
    }
    nbformat.validate(nb)
    path = LESSONS / name
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return path


# ==============================================================================================
# 00 — the tour
# ==============================================================================================
L00 = [
    md(r'''
# 00 · The tour: what minillm is

**minillm** is a from-scratch teaching engine for *fast LLM inference*, written in NumPy. It
holds a complete GPT-2 — forward pass, hand-written backward pass, training loop — and then
spends most of its code on the question this course is about: **how do you make a trained
language model smaller and faster without making it worse, and how do you measure that
honestly?**

```
corpus ──► tokenizer ──► GPT (NumPy forward + hand-written backward) ──► train / distill
                              │ params: dict name -> weight
                              ▼
            compress: quantize · prune · low-rank · distill   (params -> params)
                              │ a weight is Dense | Quantized | LowRank | Masked/N:M
                              ▼
     backends: numpy (reference) · numba · cupy · jax  — backend.linear(x, W, b) per weight kind
                              ▼
     generate (KV cache, sampling, streaming) · eval · bench ──► tour
```

A model is a plain `dict` of named arrays. Compression never edits the forward pass: it turns
one params dict into another whose weights are of another *kind* (int8 codes and scales, 4-bit
blocks, sparse values and indices, low-rank factors), and the backend knows how to multiply by
each kind.

The command `minillm tour` runs every idea end to end on the shipped models: it loads a small
character-level Shakespeare **teacher**, compresses it in every way the library knows, and
measures each variant's size, validation loss and decoding speed next to the memory-bandwidth
limit. This lesson runs a slice of that tour by hand, so you can see every number being made.

| lesson | topic |
|---|---|
| 00 | the tour (this page) |
| 01 | a transformer forward pass from scratch |
| 02 | backprop by hand, and training |
| 03 | KV cache, sampling and streaming |
| 04 | quantization |
| 05 | pruning |
| 06–11 | distillation, low rank, backends, hardware, parallelism, the claims checked |
'''),
    SETUP,
    code(r'''
import time

from minillm import data, tour
from minillm.bench import bench_decode
from minillm.hw.devices import get_device
from minillm.train import evaluate
'''),
    md(r'''
## The teacher

`minillm.load("teacher")` loads the shipped model: `model.safetensors` (the weights),
`config.json` (the shape and a SHA-256 of every file) and `tokenizer.json` (one token per
character). Its shape is fixed by five integers — vocabulary $V$, context $T$, layers $L$,
heads $H$ and width $C$ — and its parameter count follows from them (the LM head is tied to the
token embedding, so it is counted once):

$$N = VC + TC + L\,(12C^2 + 13C) + 2C .$$

Each block holds $W_{qkv}$ ($3C^2$), $W_o$ ($C^2$), $W_{fc}$ ($4C^2$) and $W_{proj}$ ($4C^2$),
their biases ($9C$) and two LayerNorms ($4C$). The cell checks the formula against the arrays.
'''),
    code(r'''
teacher = minillm.load("teacher")
tok = teacher.tokenizer
cfg = teacher.config
print(teacher)
print(tok)

V, T, L, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
by_formula = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
counted = sum(w.size for w in teacher.params.values())
print(f"N by the formula: {by_formula:,}   counted in the params dict: {counted:,}")
assert by_formula == counted == cfg.n_params
print(f"stored as float32: {teacher.nbytes:,} bytes")
'''),
    md(r'''
It writes Shakespeare-shaped text one character at a time. `minillm.generate` runs the prompt
through the model once, then samples one character per step, reusing the keys and values of
earlier positions from a KV cache (lesson 03). A seed makes the sample reproducible.
'''),
    code(r'''
prompt = "ROMEO:\n"
out = minillm.generate(teacher, [tok.encode(prompt)], max_new_tokens=300,
                       temperature=0.8, top_k=40, seed=0)  # (1, len(prompt) + 300)
print(tok.decode(out[0].tolist()))
'''),
    md(r'''
## How good is it? Validation loss

The model's quality is its average surprise on text it has never seen: the mean negative
log-probability of each next character,

$$\ell = -\frac1N \sum_{n=1}^{N} \log p_\theta(x_n \mid x_{<n}) \quad\text{(nats per character)},
\qquad \mathrm{ppl} = e^{\ell}.$$

The validation text is four whole plays held out of training (`minillm.data.split_plays`). A
model that knows nothing and guesses uniformly scores $\ln V$; perplexity $e^\ell$ is the
number of characters it is, on average, "choosing between". The tour uses the first
`tour.VAL_TOKENS_QUICK` characters in quick mode; so do we.
'''),
    code(r'''
train_plays, val_plays = data.split_plays()
print("validation plays:", ", ".join(val_plays))
val_ids = data.encode_split("val", tok)[: tour.VAL_TOKENS_QUICK + 1]

t0 = time.perf_counter()
fp32 = evaluate(teacher, val_ids)
print(f"validation loss {fp32['loss']:.4f} nats/char, perplexity {fp32['ppl']:.3f}, "
      f"over {fp32['tokens']:,} characters ({time.perf_counter() - t0:.1f} s)")
print(f"uniform guessing over V = {V} characters: ln V = {np.log(V):.4f} nats/char")
'''),
    md(r'''
## The variants

The tour's list of variants: each is the teacher with a compression *recipe* applied at load
time (or a shipped model fine-tuned after compression, when present), plus two students that are a
quarter of the teacher's size — one trained from scratch, one distilled from the teacher.
'''),
    code(r'''
for name, base, recipe, finetuned in tour.VARIANTS:
    print(f"{name:18s} from {base:18s} recipe {str(recipe):12s} shipped fine-tuned: {finetuned}")
'''),
    md(r'''
### The speed limit

Generating one token at batch size 1 multiplies a single activation vector by every weight
matrix: two FLOPs per weight read, far too few to keep the arithmetic units busy. The time goes
into *reading the weights from memory*, so

$$\text{tokens/s} \;\le\; \frac{\text{memory bandwidth}}{\text{bytes read per token}},
\qquad \text{bytes per token} \approx \text{weight bytes} + \text{KV-cache bytes}.$$

That is why compression is about *bytes*: a model stored in 4 bits per weight instead of 32 can,
at best, decode up to 8× faster. `get_device("cpu")` measures this machine's bandwidth once
(a large matrix–vector product) and caches it; `bench_decode` times prefill and decode and
reports the limit next to the measurement.

The full tour evaluates all ten variants on every installed backend, which takes minutes. Here
we take four of them on the NumPy backend; add names to `SUBSET` to see more.
'''),
    code(r'''
cpu = get_device("cpu")
bandwidth = cpu.bandwidth / 1e9  # GB/s
print(f"{cpu.name}: measured memory bandwidth {bandwidth:.1f} GB/s")

SUBSET = ["fp32", "int8", "q4_0", "2:4"]
cache = {}  # models already loaded, shared between variants
rows = []
for name in SUBSET:
    model, note = tour.build_variant(name, cache)
    val = evaluate(model, val_ids)["loss"]
    res = bench_decode(model, "numpy", prompt_tokens=8, new_tokens=16, repeat=3,
                       bandwidth_gb_s=bandwidth)
    rows.append({"variant": name, "backend": "numpy", "note": note, "params": model.n_params,
                 "bytes": model.nbytes, "val_loss": val, **res})
    print(f"{name:6s} {note}")

print()
print(tour.format_table({"rows": rows}))
'''),
    md(r'''
Read the table from left to right: **params** counts the weight values each variant stores
(2:4 sparsity stores half of each block matrix), **bytes** what they occupy (4-bit blocks take
about an eighth of float32, plus their scales), **val loss** what the compression cost in
quality, and the last column the measured decoding speed with the bandwidth limit in brackets.
A variant whose note says *fine-tuned* was trained for a few hundred more steps after it was
compressed, and that extra training alone lowers the loss: compare it with the dense teacher
fine-tuned the same way (`teacher-ft400`, lesson 05), not only with fp32.

The cell below prints, for each variant, the bytes a decode step reads and the fraction of the
limit reached. Two things in it deserve a second look.

- The float32 model may come out *above* 100 %. Our bandwidth was measured on a 128 MiB matrix,
  which must stream from DRAM, while a model of a few megabytes can stay in the CPU's
  last-level cache, which is faster. The bound holds for the memory level the weights really
  come from.
- The compressed variants read fewer bytes, yet on this backend they may decode *slower* than
  float32. The NumPy reference kernels of the weight kinds (`minillm.kinds`) rebuild the dense
  float32 matrix at every call, which costs more memory traffic and arithmetic than the float32
  product itself. Fewer bytes turn into more tokens/s only with kernels that multiply straight
  from the codes — the job of the compiled backends (`numba`, `cupy`, `jax`, lesson 08).
  Lesson 03 takes the decoding loop itself apart.
'''),
    code(r'''
for r in rows:
    print(f"{r['variant']:6s} {r['bytes_per_token']:>10,} bytes/token  "
          f"{r['decode_ms_per_token']:6.2f} ms/token  achieved {r['achieved_gb_s']:5.2f} GB/s "
          f"= {100 * r['roofline_frac']:5.1f} % of the limit")
'''),
    code(r'''
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for r in rows:
    ax1.scatter(r["bytes"], r["val_loss"])
    ax1.annotate(r["variant"], (r["bytes"], r["val_loss"]), textcoords="offset points",
                 xytext=(5, 5))
ax1.set_xscale("log")
ax1.set_xlabel("stored bytes")
ax1.set_ylabel("validation loss (nats/char)")
ax1.set_title("Size vs quality")

x = np.arange(len(rows))
ax2.bar(x, [r["decode_tok_s"] for r in rows], color="C0", label="measured (numpy)")
ax2.plot(x, [r["roofline_tok_s"] for r in rows], "k_", markersize=30, mew=2,
         label="bandwidth limit")
ax2.set_xticks(x, [r["variant"] for r in rows])
ax2.set_yscale("log")
ax2.set_ylabel("decode tokens/s (batch 1)")
ax2.set_title("Decode speed vs the memory-bandwidth limit")
ax2.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Running the whole tour

The same measurements for every variant and backend, a table, a JSON file and three plots
(the size–quality Pareto front, decode speed against the limit, and the roofline):

```bash
minillm tour --quick --json tour.json        # quick: 20,000 validation characters
minillm tour                                 # the full run behind the docs' results page
```

or from Python, `minillm.tour.run_tour(json_path="tour.json", out_dir="tour-out", quick=True)`.

## Exercises

1. Add `"q8_0"`, `"int4-g32"` and `"lowrank"` to `SUBSET`. Which variants lie on the Pareto
   front of the size–quality plot — no other variant is both smaller and better? Then run
   `bench_decode` with `backend="numba"` (if `minillm.backends.available()` lists it): how do
   the compressed variants' speeds change?
2. Compute the bytes read per decode token of the float32 teacher by hand from `cfg` (every
   block matrix, the tied head $V \times C$, and the KV cache $2LSC$ floats at context $S$) and
   compare with `minillm.bench.decode_bytes_per_token(teacher, S)`.
3. Generate from the same prompt with `temperature=0.3` and `temperature=1.5` (same seed).
   Score each sample with the teacher itself (`evaluate(teacher, np.array(ids))`): which
   temperature writes text the teacher finds least surprising, and is that the better text?
'''),
]


# ==============================================================================================
# 01 — forward pass
# ==============================================================================================
L01 = [
    md(r'''
# 01 · A transformer forward pass from scratch

A GPT maps a sequence of token ids to, at every position, a score (logit) for each possible
next token. In this lesson we rebuild the shipped teacher's forward pass one layer at a time
from the functions of `minillm.nn.functional`, look inside it (what does attention attend
to?), and check that our reconstruction agrees with `model.forward`.

The whole model in four lines (pre-LayerNorm GPT-2):

$$x^{(0)} = W_{te}[\mathrm{idx}] + W_{pe}[0..T-1]$$
$$a^{(l)} = x^{(l-1)} + \mathrm{Attn}\big(\mathrm{LN}_1(x^{(l-1)})\big), \qquad
  x^{(l)} = a^{(l)} + \mathrm{MLP}\big(\mathrm{LN}_2(a^{(l)})\big)$$
$$\mathrm{logits} = \mathrm{LN}_f(x^{(L)})\, W_{te}^\top$$

Shapes use B (batch), T (time), C (channels), V (vocabulary), H (heads), D = C/H (head size).
'''),
    SETUP,
    code(r'''
import math

from minillm.nn import functional as F

teacher = minillm.load("teacher")
tok, cfg, P = teacher.tokenizer, teacher.config, teacher.params
print(cfg)
print("the 'teacher' preset before the vocabulary is fixed:", minillm.GPTConfig.preset("teacher"))
'''),
    md(r'''
## The parameters: a dict of named arrays

The names and shapes are those of Hugging Face's GPT-2 state dict (without the `transformer.`
prefix), so a real GPT-2 checkpoint loads into the same code (`minillm.load_gpt2`). Matrices
are stored in Conv1D layout, $(\text{in}, \text{out})$, so a linear layer is $y = xW + b$ with
$x$ a row vector.
'''),
    code(r'''
for name, w in P.items():
    if name.startswith("h.") and not name.startswith("h.0."):
        continue  # blocks 1.. repeat block 0's names
    print(f"{name:26s} {str(w.shape):12s} {w.dtype}  {w.size:>8,}")
print(f"... and the same 12 tensors for blocks 1..{cfg.n_layer - 1}")
print(f"total {sum(w.size for w in P.values()):,} = cfg.n_params {cfg.n_params:,}")
'''),
    md(r'''
## Tokens and embeddings

The tokenizer maps each character to an id. The embedding adds a learned vector for the token
to a learned vector for its position:

$$x^{(0)}_{t} = W_{te}[\mathrm{idx}_t] + W_{pe}[t] \in \mathbb{R}^C .$$
'''),
    code(r'''
line = "ROMEO:\nBut, soft! what light through yonder window breaks?"
idx = np.array([tok.encode(line)])  # (B, T) = (1, T)
B, T = idx.shape
C, H, D = cfg.n_embd, cfg.n_head, cfg.head_size
eps = cfg.layer_norm_epsilon
print("ids:", idx[0, :12], "...", "shape", idx.shape)

x, _ = F.embedding(P["wte.weight"], P["wpe.weight"], idx)  # (B, T, C)
by_hand = P["wte.weight"][idx[0]] + P["wpe.weight"][:T]  # (T, C)
print("x:", x.shape, " max |F.embedding - by hand| =", np.abs(x[0] - by_hand).max())
'''),
    md(r'''
## LayerNorm

Each position's $C$ features are normalised to mean 0 and variance 1, then scaled and shifted
by learned vectors $\gamma, \beta$:

$$\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta, \qquad
\mu = \frac1C\sum_c x_c,\quad \sigma^2 = \frac1C\sum_c (x_c - \mu)^2 .$$

`F.layer_norm` returns the output and a *cache* — what its backward pass will need (lesson 02);
here we use the cache's $\hat x$ to check the normalisation, and re-derive the formula in NumPy.
'''),
    code(r'''
w1, b1 = P["h.0.ln_1.weight"], P["h.0.ln_1.bias"]
h, (xhat, rstd, _) = F.layer_norm(x, w1, b1, eps)  # (B, T, C)

mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
mine = w1 * (x - mu) / np.sqrt(var + eps) + b1
print("max |F.layer_norm - formula| =", np.abs(h - mine).max())
print(f"x-hat per position: |mean| <= {np.abs(xhat.mean(-1)).max():.1e}, "
      f"std between {xhat.std(-1).min():.5f} and {xhat.std(-1).max():.5f} (epsilon keeps it below 1)")
'''),
    md(r'''
## Causal self-attention

One matrix $W_{qkv}$ ($C \times 3C$) projects each position to a query, a key and a value, split
into $H$ heads of width $D = C/H$. Head by head,

$$A = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt D} + M\Big), \qquad Y = AV, \qquad
M_{ij} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases}$$

Row $i$ of $A$ is a probability distribution over the positions $j \le i$: how much position
$i$ reads from each earlier position. The mask $M$ makes the model *causal* — position $i$
cannot see the future, which is what lets us train on every position of a sequence at once
and later generate one token at a time. The heads' outputs are concatenated back to width $C$
and projected by $W_o$.

We call `F.attention` and re-derive $A$ in NumPy to check it.
'''),
    code(r'''
qkv, _ = F.linear(h, P["h.0.attn.c_attn.weight"], P["h.0.attn.c_attn.bias"])  # (B, T, 3C)
y, (q, k, v, A, scale) = F.attention(qkv, H)  # y (B, T, C); A (B, H, T, T)
print("qkv", qkv.shape, "-> q, k, v", q.shape, "-> A", A.shape, "-> y", y.shape)

# The same by hand: split, scale, mask, softmax.
q_, k_, _ = np.split(qkv, 3, axis=-1)  # 3 x (B, T, C)
heads = lambda a: a.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
S = heads(q_) @ heads(k_).transpose(0, 1, 3, 2) / math.sqrt(D)  # (B, H, T, T)
future = np.triu(np.ones((T, T), dtype=bool), k=1)  # True above the diagonal: j > i
S = np.where(future, -np.inf, S)
A_mine = np.exp(S - S.max(-1, keepdims=True))
A_mine /= A_mine.sum(-1, keepdims=True)
print("max |A - A by hand| =", np.abs(A - A_mine).max())
print("attention to the future, max:", A[0][:, future].max(), "  rows sum to 1:",
      np.allclose(A.sum(-1), 1))
'''),
    md(r'''
## MLP and GELU

Each position then goes through a two-layer MLP of width $4C$ with GPT-2's tanh approximation of
the GELU, $\mathrm{gelu}(u) = \tfrac12 u\,(1 + \tanh(\sqrt{2/\pi}\,(u + 0.044715\,u^3)))$, a
smooth version of $\max(u, 0)$ that approximates the exact $u\,\Phi(u)$:

$$\mathrm{MLP}(h) = \mathrm{gelu}(h W_{fc} + b_{fc})\, W_{proj} + b_{proj} .$$
'''),
    code(r'''
u = np.linspace(-4, 4, 401)
g_tanh, _ = F.gelu(u)
g_exact = u * 0.5 * (1 + np.vectorize(math.erf)(u / math.sqrt(2)))  # u * Phi(u)
print("max |tanh approximation - exact GELU| on [-4, 4]:", np.abs(g_tanh - g_exact).max())

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(u, np.maximum(u, 0), "--", color="0.6", label="ReLU")
ax.plot(u, g_tanh, label="GELU (tanh, GPT-2)")
ax.set_xlabel("u")
ax.legend()
ax.set_title("GELU")
fig.tight_layout()
plt.show()
'''),
    md(r'''
## The whole stack, layer by layer

A block is: LayerNorm → attention → add back (the *residual*), LayerNorm → MLP → add back. We
run all $L$ blocks, keeping each layer's attention pattern, then the final LayerNorm and the
*tied* head: the logits reuse the token embedding, $\mathrm{logits} = h\,W_{te}^\top$, so a
position's output is compared with every token's input vector.
'''),
    code(r'''
def block(x, i):
    """One pre-LayerNorm transformer block from minillm.nn.functional; returns (x, A)."""
    p = f"h.{i}."
    h, _ = F.layer_norm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
    qkv, _ = F.linear(h, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])  # (B, T, 3C)
    y, (_, _, _, A, _) = F.attention(qkv, H)  # (B, T, C)
    o, _ = F.linear(y, P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])
    x = x + o  # residual
    h, _ = F.layer_norm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
    f, _ = F.linear(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"])  # (B, T, 4C)
    g, _ = F.gelu(f)
    m, _ = F.linear(g, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])  # (B, T, C)
    return x + m, A


x, _ = F.embedding(P["wte.weight"], P["wpe.weight"], idx)  # (B, T, C)
patterns = []
for i in range(cfg.n_layer):
    x, A = block(x, i)
    patterns.append(A[0])  # (H, T, T)
h, _ = F.layer_norm(x, P["ln_f.weight"], P["ln_f.bias"], eps)
logits = h @ P["wte.weight"].T  # (B, T, V): the tied LM head

reference = teacher.forward(idx)  # (B, T, V)
print("logits", logits.shape, " max |ours - model.forward| =", np.abs(logits - reference).max())
print("largest |logit|:", np.abs(reference).max(), " float32 eps:", np.finfo(np.float32).eps)
'''),
    md(r'''
`model.forward` runs the same math through a backend's kernels (2-D matrix products over
$B \cdot T$ rows, a preallocated KV cache). The cell prints how far apart the two results are,
with float32's machine epsilon and the size of the logits for scale: any difference must be of
the order of rounding (sums taken in another order), never of the order of the logits.

## What do the heads look at?

Each heat map is one head's matrix $A$ on our line: row $i$ (the reading position) against
column $j$ (the position read). Everything above the diagonal is exactly zero — the causal mask.
'''),
    code(r'''
chars = [{"\n": "⏎", " ": "·"}.get(c, c) for c in line]
layer = cfg.n_layer - 1
fig, axes = plt.subplots(1, H, figsize=(4 * H, 4.3))
for hd, ax in enumerate(axes):
    ax.imshow(patterns[layer][hd], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"layer {layer}, head {hd}")
    ax.set_xticks(range(T), chars, fontsize=5)
    ax.set_yticks(range(T), chars, fontsize=5)
fig.tight_layout()
plt.show()
'''),
    md(r'''
A summary of every head: the average distance back it looks, $\bar d = \frac1T\sum_i \sum_{j \le i}
A_{ij}\,(i - j)$. Heads near 0 attend to the current character; larger values read further back
(to the start of the word, the previous line, the speaker's name).
'''),
    code(r'''
dist = np.subtract.outer(np.arange(T), np.arange(T))  # (T, T): i - j
look_back = np.array([[(A_h * dist).sum(-1).mean() for A_h in pat] for pat in patterns])  # (L, H)
print("mean look-back distance (characters), rows = layers, columns = heads:")
print(look_back)

fig, ax = plt.subplots(figsize=(5, 3))
im = ax.imshow(look_back, cmap="magma")
ax.set_xlabel("head")
ax.set_ylabel("layer")
ax.set_xticks(range(H))
ax.set_yticks(range(cfg.n_layer))
fig.colorbar(im, ax=ax, label="mean look-back (chars)")
fig.tight_layout()
plt.show()
'''),
    md(r'''
## From logits to predictions

The softmax of the logits at position $t$ is the model's distribution over the character at
$t + 1$. Its surprise $-\log p(x_{t+1})$ at each position shows what the model finds easy (the
rest of a word it has recognised) and hard (the start of a new word).
'''),
    code(r'''
logp = F.log_softmax(reference[0].astype(np.float64))  # (T, V)
surprise = -logp[np.arange(T - 1), idx[0, 1:]]  # (T-1,) nats for each next character
print(f"mean surprise on this line: {surprise.mean():.3f} nats/char")

top = np.argsort(-logp[-1])[:5]
print("after the whole line, the most likely next characters:",
      [(tok.decode([int(t)]), round(float(np.exp(logp[-1, t])), 3)) for t in top])

fig, ax = plt.subplots(figsize=(11, 2.8))
ax.bar(range(T - 1), surprise)
ax.set_xticks(range(T - 1), chars[1:], fontsize=7)
ax.set_ylabel("-log p (nats)")
ax.set_title("How surprised the teacher is by each next character")
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Exercises

1. **The mask matters.** Recompute block 0's attention without the mask (`S` before
   `np.where`). Which positions' outputs change, and why would a model trained without the
   mask be useless for generation?
2. **FLOPs per token.** A forward pass costs about $2$ FLOPs per weight per token, plus
   attention's $4\,t\,C$ per layer at position $t$. Write the total for our line from `cfg` and
   compare the share of the head ($2CV$ per position) with the blocks'.
3. **Knock out a head.** Zero the rows of `h.{l}.attn.c_proj.weight` that belong to head $h$
   (rows $hD \ldots (h+1)D - 1$), re-run `block`, and measure the mean surprise on the line.
   Which head matters most? (Lesson 05 does this systematically.)
'''),
]


# ==============================================================================================
# 02 — backprop and training
# ==============================================================================================
L02 = [
    md(r'''
# 02 · Backprop by hand, and training

minillm trains without an autograd library. Every layer in `minillm.nn.functional` is a pair
of pure functions in the style of llm.c: the *forward* returns its output and a cache of exactly
what the backward needs; the *backward* takes the upstream gradient $\delta = \partial L /
\partial y$ and the cache, and returns the gradients of the inputs and parameters.
`minillm.nn.gpt.backward` calls the pairs in reverse order.

In this lesson we check a backward pass against finite differences, check AdamW against its
formula, look at the learning-rate schedule and the shipped teacher's training log, and train
a tiny model for a few seconds.
'''),
    SETUP,
    code(r'''
import json

import time

from minillm import data
from minillm.io import WEIGHTS_DIR
from minillm.nn import functional as F
from minillm.nn.gpt import init_params
from minillm.train import AdamW, TrainConfig, estimate_loss, evaluate, lr_at, train

pairs = [n for n in dir(F) if n + "_backward" in dir(F)]
print("forward/backward pairs:", pairs)
'''),
    md(r'''
## The pairs

Linear, in Conv1D layout $y = xW + b$:

$$\frac{\partial L}{\partial x} = \delta\,W^\top, \qquad \frac{\partial L}{\partial W} = x^\top \delta,
\qquad \frac{\partial L}{\partial b} = \textstyle\sum_{\text{rows}} \delta .$$

LayerNorm, with $\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}$ and $g = \gamma \odot \delta$
(bars are means over the $C$ features):

$$\frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma^2+\epsilon}}
\Big(g - \overline{g} - \hat x\,\overline{g \odot \hat x}\Big).$$

Cross-entropy over $N$ positions with $p = \mathrm{softmax}(z)$: $\partial \ell / \partial z =
(p - \mathrm{onehot}(y)) / N$.

## Checking a gradient with finite differences

For any scalar function $f$, the central difference approximates a partial derivative with
error $O(h^2)$:

$$\frac{\partial f}{\partial \theta_i} \approx \frac{f(\theta + h e_i) - f(\theta - h e_i)}{2h}.$$

To check a layer's backward, pick a random upstream gradient $\delta$ and let
$f(x) = \sum y(x) \odot \delta$ — then $\partial f / \partial x$ is exactly what the backward
returns for $\delta$. We do it in float64 for LayerNorm, sweeping $h$: too large and the $h^2$
truncation error dominates, too small and floating-point cancellation ($\approx
\epsilon_{64} / h$) does.
'''),
    code(r'''
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 5, 8))  # (B, T, C), float64
w, b = rng.normal(size=8), rng.normal(size=8)
delta = rng.normal(size=(2, 5, 8))  # an arbitrary upstream gradient

y, cache = F.layer_norm(x, w, b)
dx, dw, db = F.layer_norm_backward(delta, cache)
f = lambda x: np.sum(F.layer_norm(x, w, b)[0] * delta)

i = (1, 3, 2)  # one entry of x
hs = np.logspace(-13, -1, 25)
errors = []
for step in hs:
    xp, xm = x.copy(), x.copy()
    xp[i] += step
    xm[i] -= step
    errors.append(abs((f(xp) - f(xm)) / (2 * step) - dx[i]))
errors = np.array(errors)
print(f"analytic dL/dx{i} = {dx[i]:.12f}")
print(f"best agreement {errors.min():.2e} at h = {hs[errors.argmin()]:.0e}")

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.loglog(hs, errors, "o-")
ax.loglog(hs, hs**2, "--", color="0.6", label="$h^2$ (truncation)")
ax.loglog(hs, 1e-16 / hs, ":", color="0.6", label=r"$\epsilon/h$ (rounding)")
ax.set_ylim(1e-14, 1)
ax.set_xlabel("h")
ax.set_ylabel("|finite difference - backward|")
ax.set_title("LayerNorm gradient check (float64)")
ax.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
At a good step size, every entry of all three gradients at once: the cell prints the largest
relative error over $\partial L/\partial x$, $\partial L/\partial \gamma$ and $\partial L/\partial\beta$.
'''),
    code(r'''
def numeric_grad(f, a, step=1e-6):
    """Central differences of scalar f() with respect to every entry of array a (in place)."""
    g = np.zeros_like(a)
    for j in np.ndindex(a.shape):
        old = a[j]
        a[j] = old + step
        fp = f()
        a[j] = old - step
        fm = f()
        a[j] = old
        g[j] = (fp - fm) / (2 * step)
    return g


loss = lambda: np.sum(F.layer_norm(x, w, b)[0] * delta)
for name, analytic, arr in (("dx", dx, x), ("dgamma", dw, w), ("dbeta", db, b)):
    num = numeric_grad(loss, arr)
    rel = np.abs(num - analytic).max() / np.abs(analytic).max()
    print(f"{name:7s} max relative error {rel:.1e}")
'''),
    md(r'''
## The whole model

The same check on a complete GPT: the `tiny` preset in float64, its mean cross-entropy and
`loss_and_grads`. We test a few entries of different tensors, including `wte.weight`, which
receives gradient twice — from the embedding lookup *and* from the tied LM head.
'''),
    code(r'''
tiny = minillm.GPTConfig.preset("tiny")
params64 = init_params(tiny, seed=0, dtype=np.float64)
model64 = minillm.GPT(tiny, params=params64)
idx = rng.integers(0, tiny.vocab_size, size=(2, 8))
targets = rng.integers(0, tiny.vocab_size, size=(2, 8))
loss, grads = model64.loss_and_grads(idx, targets)
print(f"loss {loss:.6f}  (ln V = {np.log(tiny.vocab_size):.6f} for a model that knows nothing)")

checks = [("wte.weight", (int(idx[0, 0]), 3)), ("wpe.weight", (2, 5)),
          ("h.0.attn.c_attn.weight", (4, 20)), ("h.1.ln_2.weight", (7,)),
          ("h.1.mlp.c_fc.bias", (11,)), ("ln_f.bias", (1,))]
step = 1e-6
for name, j in checks:
    a = params64[name]
    old = a[j]
    a[j] = old + step
    lp = model64.loss_and_grads(idx, targets)[0]
    a[j] = old - step
    lm = model64.loss_and_grads(idx, targets)[0]
    a[j] = old
    num = (lp - lm) / (2 * step)
    print(f"{name:24s}{str(j):9s} backward {grads[name][j]: .10f}  finite diff {num: .10f}")
'''),
    md(r'''
## AdamW

AdamW keeps running means of each gradient and of its square, corrects their bias towards 0 in
the first steps, and decays the weights separately from the gradient step ("decoupled"):

$$m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,$$
$$\theta_t = \theta_{t-1} - \eta_t \Big(\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}
+ \lambda\, \theta_{t-1}\Big).$$

Only matrices decay; biases and LayerNorm gains do not. On the first step $m_1/(1-\beta_1) = g$
and $\sqrt{v_1/(1-\beta_2)} = |g|$, so every weight moves by almost exactly $\eta$ in the
direction of $-\mathrm{sign}(g)$, whatever the gradient's size. We check one step of
`minillm.train.AdamW` against the formula.
'''),
    code(r'''
tc = TrainConfig()
theta = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
g = {"W": rng.normal(size=(3, 4)) * 1e-3, "b": rng.normal(size=4) * 10}
theta0 = {k: v.copy() for k, v in theta.items()}
lr = 1e-2

opt = AdamW(theta, tc)
opt.step(theta, g, lr)

for k in theta:
    m = (1 - tc.beta1) * g[k]
    v = (1 - tc.beta2) * g[k] ** 2
    update = (m / (1 - tc.beta1)) / (np.sqrt(v / (1 - tc.beta2)) + tc.eps)
    decay = tc.weight_decay if theta0[k].ndim == 2 else 0.0
    expected = theta0[k] - lr * (update + decay * theta0[k])
    print(f"{k}: max |AdamW - formula| = {np.abs(theta[k] - expected).max():.1e};  "
          f"step / lr = {np.round((theta0[k] - theta[k]) / lr, 4).ravel()[:4]}")
'''),
    md(r'''
## The learning-rate schedule

Linear warmup for $w$ steps (large early steps on random weights would be unstable), then
cosine decay from $\eta_{max}$ to $\eta_{min}$ over the remaining steps:

$$\eta_t = \eta_{min} + \tfrac12(\eta_{max} - \eta_{min})\Big(1 + \cos\big(\pi\,\tfrac{t - w}{n - w}\big)\Big).$$
'''),
    code(r'''
steps = np.arange(tc.steps)
lrs = np.array([lr_at(int(s), tc) for s in steps])
print(f"TrainConfig defaults: steps={tc.steps}, warmup={tc.warmup}, lr={tc.lr}, min_lr={tc.min_lr}")
print(f"peak {lrs.max():.2e} at step {lrs.argmax()}, last {lrs[-1]:.2e}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(steps, lrs)
ax.axvline(tc.warmup, color="0.6", ls="--", label="end of warmup")
ax.set_xlabel("optimizer step")
ax.set_ylabel("learning rate")
ax.set_title("lr_at: warmup + cosine")
ax.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## How the teacher was trained

The shipped teacher comes with its training log: the exact command, the hyper-parameters, the
training and validation loss every `eval_every` steps, and the validation loss over the whole
held-out split at the end.
'''),
    code(r'''
teacher = minillm.load("teacher")
tok = teacher.tokenizer
log = json.loads((WEIGHTS_DIR / "teacher" / "train_log.json").read_text())
print("command:", log["command"])
print("train config:", log["train_config"])
print("final validation (whole split):", log.get("val"))
hist = log["history"]

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([r["step"] for r in hist], [r["train_loss"] for r in hist], "o-", label="train (EMA)")
ax.plot([r["step"] for r in hist], [r["val_loss"] for r in hist], "s-", label="validation")
ax.set_xlabel("step")
ax.set_ylabel("loss (nats/char)")
ax.set_title("The shipped teacher's training log")
ax.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Training a tiny model, live

The same loop on a model small enough to train in seconds on a CPU: the `tiny` preset with the
Shakespeare alphabet, context 32. `minillm.train.train` draws random windows from the
training plays, computes the loss and gradients with the hand-written backward, clips the
global gradient norm, and takes an AdamW step with the scheduled learning rate; every
`eval_every` steps it prints the smoothed training loss and the loss on fixed validation
windows. At
initialisation the loss should be close to $\ln V$: the random model spreads its probability
almost evenly.
'''),
    code(r'''
train_ids = data.encode_split("train", tok)
val_ids = data.encode_split("val", tok)
small_cfg = minillm.GPTConfig.preset("tiny", vocab_size=tok.vocab_size, n_embd=32)
small = minillm.GPT(small_cfg, seed=0, tokenizer=tok)
print(small)
print(f"loss at init {estimate_loss(small.params, small_cfg, val_ids, 4, 32):.4f}"
      f"  vs ln V = {np.log(tok.vocab_size):.4f}")

prompt = [tok.encode("ROMEO:\n")]
before = tok.decode(minillm.generate(small, prompt, 120, temperature=0.8, seed=0)[0].tolist())

run = TrainConfig(steps=400, batch_size=16, lr=1e-2, min_lr=1e-3, warmup=20, eval_every=40,
                  eval_batches=4, ckpt_every=400, seed=0)
t0 = time.perf_counter()
history = train(small, train_ids, val_ids, run, progress=False)
print(f"{run.steps} steps in {time.perf_counter() - t0:.1f} s")
'''),
    code(r'''
# Both models scored on the same 4,096 validation characters, each with its own context length.
teacher_val = evaluate(teacher, val_ids, max_tokens=4096)["loss"]
small_val = evaluate(small, val_ids, max_tokens=4096)["loss"]
print(f"on the same 4,096 validation characters: tiny model {small_val:.4f}, teacher {teacher_val:.4f} "
      f"nats/char")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([r["step"] for r in history], [r["train_loss"] for r in history], "o-", label="train (EMA)")
ax.plot([r["step"] for r in history], [r["val_loss"] for r in history], "s-", label="validation")
ax.axhline(np.log(tok.vocab_size), color="0.6", ls="--", label="ln V (uniform)")
ax.axhline(teacher_val, color="C3", ls=":", label="the teacher")
ax.set_xlabel("step")
ax.set_ylabel("loss (nats/char)")
ax.set_title("A tiny model learning Shakespeare")
ax.legend()
fig.tight_layout()
plt.show()

after = tok.decode(minillm.generate(small, prompt, 120, temperature=0.8, seed=0)[0].tolist())
print("--- before training:\n" + before)
print("--- after training:\n" + after)
'''),
    md(r'''
## Exercises

1. **Attention's backward.** Repeat the finite-difference check of the first section for
   `F.attention` / `F.attention_backward` on a random (B, T, 3C) input. Which entries of the
   gradient are exactly zero, and why?
2. **Warmup.** Train the tiny model again with `warmup=0` (allowed) and with `lr=3e-2`. Plot
   the three loss curves together. What does warmup protect against?
3. **Decay.** Weight decay pulls every matrix towards 0 by a factor $1 - \eta\lambda$ per step.
   Why would decaying LayerNorm gains (initialised at 1) be harmful? Check `AdamW.step` for how
   the library decides what to decay.
'''),
]


# ==============================================================================================
# 03 — KV cache, sampling, streaming
# ==============================================================================================
L03 = [
    md(r'''
# 03 · KV cache, sampling and streaming

A language model generates one token at a time: run the model on the text so far, turn the
last position's logits into a distribution, draw a token, append it, repeat. Done naively, step
$t$ recomputes all $t$ positions, although the keys and values of the first $t - 1$ have not
changed (attention is causal). A **KV cache** stores them: after one *prefill* over the prompt,
each *decode* step runs the model on a single token and attends to the cached keys and values.

In this lesson we check that the cache changes nothing but the cost (up to float32 rounding,
which we measure), measure the speed-up next to a FLOP-count prediction, compare decoding
strategies, and stream tokens as they come.
'''),
    SETUP,
    code(r'''
import time

from minillm import backends
from minillm.generate import sample
from minillm.nn import functional as F
from minillm.nn.gpt import KVCache, forward

teacher = minillm.load("teacher")
tok, cfg, params = teacher.tokenizer, teacher.config, teacher.params
be = backends.get("numpy")
L, C, V = cfg.n_layer, cfg.n_embd, cfg.vocab_size
print(teacher)
'''),
    md(r'''
## Same logits, with or without the cache

`minillm.nn.gpt.forward(params, config, idx, cache, backend)` computes the logits of `idx`
placed after the `cache.pos` positions already in the cache, and appends their keys and values.
We prefill 20 characters, then feed the rest of a line one character at a time, and compare
with a single forward pass over the whole line. The prefill multiplies a (20, C) block of
activations by each weight matrix, a decode step a single row: the same arithmetic, but BLAS may
sum in another order, so we print the largest difference next to the size of the logits.
'''),
    code(r'''
text = "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;"
ids = np.array([tok.encode(text)])  # (1, T)
T, P = ids.shape[1], 20

cache = KVCache.allocate(cfg, batch=1, backend=be)
pieces = [forward(params, cfg, ids[:, :P], cache, be)]  # prefill: (1, P, V)
for t in range(P, T):
    pieces.append(forward(params, cfg, ids[:, t : t + 1], cache, be))  # decode: (1, 1, V)
cached = np.concatenate(pieces, axis=1)  # (1, T, V)
full = teacher.forward(ids)  # (1, T, V), no cache reuse

print(f"cache: k, v {cache.k.shape} (L, B, H, size, D), {cache.pos} positions filled")
print("max |cached - recomputed| logits:", np.abs(cached - full).max(),
      "  (largest |logit|", np.abs(full).max(), ")")
print("same argmax at every position:", bool((cached.argmax(-1) == full.argmax(-1)).all()))
'''),
    md(r'''
## What the cache saves: a FLOP count

Per token, the block matrices cost two FLOPs per weight, $2P_{\text{blk}}$ with
$P_{\text{blk}} = 12LC^2$ weights in all $L$ layers; attention over $t$ keys costs $4tC$ per
layer ($QK^\top$ and $AV$, $2tC$ each); the head costs $2VC$, for the last position only (all
that sampling needs). Producing the token that makes the text $t$ long costs

$$F_{\text{cache}}(t) = 2P_{\text{blk}} + 4LCt + 2VC
\qquad\text{vs}\qquad
F_{\text{recompute}}(t) = 2P_{\text{blk}}\,t + 2LC\,t(t+1) + 2VC,$$

since recomputing runs all $t$ positions, position $i$ attending to $i$ keys
($4LC \sum_{i \le t} i = 2LC\,t(t+1)$). For $n$ new tokens after a prompt of $P$ the predicted
speed-up is

$$S = \frac{\sum_{t=P+1}^{P+n} F_{\text{recompute}}(t)}{\sum_{t=P+1}^{P+n} F_{\text{cache}}(t)} .$$

We compute it here and check it against `minillm.bench.kv_speedup_prediction`; then
`minillm.bench.kv_cache_speedup` times both loops on the teacher (greedy decoding after a
random prompt) and checks that they produce the same tokens.
'''),
    code(r'''
from minillm.bench import kv_cache_speedup, kv_speedup_prediction, kv_speedup_roofline
from minillm.hw.devices import get_device

P_blk = 12 * L * C * C


def flops_cache(t):
    return 2 * P_blk + 4 * L * C * t + 2 * V * C


def flops_recompute(t):
    return 2 * P_blk * t + 2 * L * C * t * (t + 1) + 2 * V * C


P, n_new = 20, 100
ts = np.arange(P + 1, P + n_new + 1)
predicted = sum(flops_recompute(t) for t in ts) / sum(flops_cache(t) for t in ts)
print(f"{n_new} tokens after a {P}-token prompt: {sum(flops_cache(t) for t in ts) / 1e6:.1f} MFLOP "
      f"with the cache, {sum(flops_recompute(t) for t in ts) / 1e6:.1f} MFLOP recomputing")
print(f"predicted speed-up {predicted:.2f}x  (kv_speedup_prediction: "
      f"{kv_speedup_prediction(cfg, P, n_new):.2f}x)")

res = kv_cache_speedup(teacher, prompt_tokens=P, new_tokens=n_new)
print(f"measured: cache {res['cached_s'] * 1e3:.0f} ms, recompute {res['recompute_s'] * 1e3:.0f} ms "
      f"-> speed-up {res['measured_speedup']:.1f}x; same tokens: {res['same_tokens']}")

# The roofline model charges each step max(FLOPs / peak, bytes / bandwidth) instead of FLOPs alone
cpu = get_device("cpu")  # this CPU's measured float32 peak and memory bandwidth
print(f"roofline prediction: {kv_speedup_roofline(teacher, P, n_new, cpu.peak('fp32'), cpu.bandwidth):.2f}x "
      f"(peak {cpu.peak('fp32') / 1e9:.0f} GFLOP/s, bandwidth {cpu.bandwidth / 1e9:.0f} GB/s)")
'''),
    md(r'''
Measured and predicted differ. To see why, we time every step of both loops ourselves, on
a real prompt this time, and plot the time per token against the text length. (The cheap cached
loop runs three times and we keep each step's fastest time: on a shared machine the fastest run
is the least disturbed one.)
'''),
    code(r'''
def decode_cached(prompt, n):
    cache = KVCache.allocate(cfg, prompt.shape[0], be)
    logits = forward(params, cfg, prompt, cache, be, last_only=True)  # prefill
    out, times = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        nxt = logits[:, -1].argmax(-1)  # (B,)
        out.append(nxt)
        logits = forward(params, cfg, nxt[:, None], cache, be, last_only=True)  # one token
        times.append(time.perf_counter() - t0)
    return np.stack(out, 1), np.array(times[:-1])


def decode_recompute(prompt, n):
    context = prompt
    logits = forward(params, cfg, context, None, be, last_only=True)
    out, times = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        nxt = logits[:, -1].argmax(-1)
        out.append(nxt)
        context = np.concatenate([context, nxt[:, None]], axis=1)
        logits = forward(params, cfg, context, None, be, last_only=True)  # everything again
        times.append(time.perf_counter() - t0)
    return np.stack(out, 1), np.array(times[:-1])


prompt = ids[:, :P]
runs_c = [decode_cached(prompt, n_new) for _ in range(3)]
tokens_r, t_recompute = decode_recompute(prompt, n_new)  # (B, n), (n-1,) seconds per step
t_cache = np.min([r[1] for r in runs_c], axis=0)  # (n-1,) best time of each step
ctx = np.arange(P + 1, P + n_new)  # text length after each timed step
greedy = minillm.generate(teacher, prompt, n_new, temperature=0)[:, P:]
print("identical tokens (cache / recompute / minillm.generate):",
      bool((runs_c[0][0] == tokens_r).all() and (runs_c[0][0] == greedy).all()))
print(f"{n_new - 1} decode steps: cache {t_cache.sum() * 1e3:.0f} ms, recompute "
      f"{t_recompute.sum() * 1e3:.0f} ms, speed-up {t_recompute.sum() / t_cache.sum():.1f}x")
'''),
    md(r'''
The recompute steps grow with the context as the FLOP count says. A cached step does so
little arithmetic that its time is mostly fixed cost: dozens of NumPy calls, each with
microseconds of Python and dispatch overhead whatever the size of its arrays. We fit one FLOP
rate to the recompute steps and draw both predictions with it; the gap between the cached
prediction and the cached measurement is that overhead. Closing it is the job of compiled
backends.
'''),
    code(r'''
rate = np.median([flops_recompute(t) / dt for t, dt in zip(ctx, t_recompute, strict=True)])  # FLOP/s
print(f"fitted throughput of the recompute steps: {rate / 1e9:.2f} GFLOP/s")
print(f"a cached step: {np.median(t_cache) * 1e6:.0f} us measured, "
      f"{np.median([flops_cache(t) for t in ctx]) / rate * 1e6:.0f} us if it ran at that rate")

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(ctx, t_recompute * 1e3, ".", color="C1", label="recompute (measured)")
ax.plot(ctx, [flops_recompute(t) / rate * 1e3 for t in ctx], "-", color="C1", alpha=0.6,
        label="recompute (FLOPs / fitted rate)")
ax.plot(ctx, t_cache * 1e3, ".", color="C0", label="KV cache (measured)")
ax.plot(ctx, [flops_cache(t) / rate * 1e3 for t in ctx], "-", color="C0", alpha=0.6,
        label="KV cache (FLOPs / fitted rate)")
ax.set_yscale("log")
ax.set_xlabel("text length t")
ax.set_ylabel("time per generated token (ms)")
ax.set_title("Decoding the teacher: cache vs recompute")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Sampling: greedy, temperature, top-k, top-p

From the last logits $z$, the next token is drawn from $p_i \propto \exp(z_i / \tau)$:

- **greedy** ($\tau = 0$): always $\arg\max_i z_i$ — deterministic, and prone to loops;
- **temperature** $\tau$: $\tau < 1$ sharpens the distribution, $\tau > 1$ flattens it;
- **top-k**: keep the $k$ largest logits, renormalise;
- **top-p** (nucleus): keep the smallest set of most likely tokens whose mass reaches $p$,
  renormalise — a cut that adapts to how confident the model is.

The same prompt and seed under each rule:
'''),
    code(r'''
prompt_ids = [tok.encode("KING HENRY:\n")]
settings = {
    "greedy": dict(temperature=0),
    "temperature 0.5": dict(temperature=0.5),
    "temperature 1.0": dict(temperature=1.0),
    "temperature 1.6": dict(temperature=1.6),
    "top-k 5": dict(temperature=1.0, top_k=5),
    "top-p 0.9": dict(temperature=1.0, top_p=0.9),
}
for label, kw in settings.items():
    out = minillm.generate(teacher, prompt_ids, 160, seed=0, **kw)
    print(f"===== {label}\n{tok.decode(out[0].tolist())}\n")
'''),
    md(r'''
## One distribution, up close

At the start of a new speech the model must guess who speaks next: a wide distribution, a good
place to see the rules at work. We compute the nucleus by hand — sort, accumulate, keep a token
while the mass *before* it is below $p$ — and check `minillm.generate.sample` against it by
drawing many samples: none may fall outside the nucleus, and the frequencies must match the
renormalised probabilities.
'''),
    code(r'''
context = "KING HENRY:\nOnce more unto the breach, dear friends, once more;\n\n"
z = teacher.forward([tok.encode(context)])[0, -1].astype(np.float64)  # (V,) logits
p = F.softmax(z)
order = np.argsort(-p)
sorted_p = p[order]
top_p = 0.9
keep_sorted = np.cumsum(sorted_p) - sorted_p < top_p  # mass before each token < p
nucleus = order[keep_sorted]
print(f"entropy {-(p * np.log(p)).sum():.3f} nats; the nucleus of mass {top_p} holds "
      f"{nucleus.size} of {V} characters: {[tok.decode([int(i)]) for i in nucleus]}")

n_draws = 20000
draws = sample(np.tile(z, (n_draws, 1)), np.random.default_rng(0), temperature=1.0, top_p=top_p)
freq = np.bincount(draws, minlength=V) / n_draws
q = np.where(np.isin(np.arange(V), nucleus), p, 0)
q /= q.sum()
z_scores = (freq - q)[nucleus] / np.sqrt(q[nucleus] * (1 - q[nucleus]) / n_draws)
print("draws outside the nucleus:", int((~np.isin(draws, nucleus)).sum()),
      f"  largest |frequency - renormalised p| = {np.abs(freq - q).max():.4f}, "
      f"i.e. {np.abs(z_scores).max():.1f} standard errors of a {n_draws}-draw frequency")
'''),
    code(r'''
show = 25
labels = [repr(tok.decode([int(i)]))[1:-1] for i in order[:show]]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
colors = ["C0" if k else "0.75" for k in keep_sorted[:show]]
ax1.bar(range(show), sorted_p[:show], color=colors)
ax1b = ax1.twinx()
ax1b.plot(range(show), np.cumsum(sorted_p)[:show], "k.-", lw=1)
ax1b.axhline(top_p, color="C3", ls="--")
ax1b.set_ylim(0, 1.05)
ax1b.set_ylabel("cumulative mass")
ax1.set_xticks(range(show), labels)
ax1.set_ylabel("p (temperature 1)")
ax1.set_title(f"next character: top-p {top_p} keeps the blue bars")

for tau in (0.5, 1.0, 2.0):
    ax2.plot(range(show), np.sort(F.softmax(z / tau))[::-1][:show], "o-", ms=3, label=f"τ = {tau}")
ax2.set_xlabel("rank")
ax2.set_ylabel("probability")
ax2.set_yscale("log")
ax2.set_title("temperature reshapes the same logits")
ax2.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Streaming

`minillm.stream` is the generator behind `minillm.generate`: it yields each step's token ids
(one per batch row) as soon as they are sampled, so an interface can print text while the
model is still writing. The time to the first token includes the prefill; after that each
token costs one decode step. Past the context window (`block_size`) generation slides to the
last half of the text and prefills again.
'''),
    code(r'''
prompt_ids = [tok.encode("ROMEO:\n")]
t0 = time.perf_counter()
stamps, streamed = [], []
for ids_t in minillm.stream(teacher, prompt_ids, 300, temperature=0.8, top_k=40, seed=1):
    stamps.append(time.perf_counter() - t0)
    streamed.append(int(ids_t[0]))
    print(tok.decode(ids_t.tolist()), end="", flush=True)
print()

stamps = np.array(stamps)
print(f"\ntime to first token {stamps[0] * 1e3:.1f} ms, then {np.diff(stamps).mean() * 1e3:.2f} ms "
      f"per token on average ({len(stamps)} tokens, context window {cfg.block_size})")
same = minillm.generate(teacher, prompt_ids, 300, temperature=0.8, top_k=40, seed=1)
same = same[0, len(prompt_ids[0]) :]  # the new tokens only
print("identical to minillm.generate with the same seed:", same.tolist() == streamed)
'''),
    md(r'''
## Exercises

1. **Cache memory.** The cache holds $2 \cdot L \cdot B \cdot T \cdot C$ floats. Compute its size
   for the teacher and for `GPTConfig.preset("gpt2")` at $T = 1024$ and batch 1 and 32, and
   compare with the weights' size. When does the cache dominate?
2. **Prompt length.** Re-run the measurement with prompts of 5 and 100 characters (keep
   prompt + new tokens $\le$ `block_size`). How do the predicted and measured speed-ups move?
3. **Batching.** `decode_cached` works for $B > 1$. Time 100 steps for $B = 1, 4, 16$. How does
   the time per step grow, and what does that say about where the time goes?
'''),
]


# ==============================================================================================
# 04 — quantization
# ==============================================================================================
L04 = [
    md(r'''
# 04 · Quantization

Decoding one token reads every weight once (lesson 00), so the bytes per weight set the speed
limit. **Quantization** stores each weight as a small integer code $q$ and shares one real
scale $s$ (and a zero point $z$) among many weights:

$$q = \operatorname{clamp}\!\big(z + \operatorname{round}(x / s),\; q_{\min},\; q_{\max}\big),
\qquad \hat x = s\,(q - z).$$

With $b$ bits the codes are $q \in [-2^{b-1}, 2^{b-1} - 1]$, and inside the range the error is at
most half a step, $|x - \hat x| \le s/2$. Everything in this lesson is done on the shipped
teacher's real weights and activations.
'''),
    SETUP,
    code(r'''
import time

from minillm import data
from minillm.compress import quantize as Q
from minillm.data import get_batch
from minillm.hw import fixedpoint
from minillm.kinds import block_matmul_names
from minillm.nn.gpt import forward_train
from minillm.train import evaluate

teacher = minillm.load("teacher")
tok, cfg, P = teacher.tokenizer, teacher.config, teacher.params
W = P["h.1.mlp.c_fc.weight"]  # (C, 4C) a real weight, Conv1D layout (in, out)
print("W:", W.shape, W.dtype, f" range [{W.min():.4f}, {W.max():.4f}]")
'''),
    md(r'''
## Scales and zero points by hand

**Symmetric** (zero point 0): $s = \max|x| / q_{\max}$, so $\pm\max|x|$ land exactly on
$\pm q_{\max}$ (the "absmax" convention of llama.cpp and LLM.int8()).

**Affine**: use all $2^b$ codes for the range $[x_{\min}, x_{\max}]$ widened to contain 0 (so
that 0 is exact):

$$s = \frac{\max(x_{\max}, 0) - \min(x_{\min}, 0)}{q_{\max} - q_{\min}}, \qquad
z = \operatorname{clamp}\!\Big(q_{\min} - \operatorname{round}\big(\min(x_{\min},0)/s\big)\Big).$$

Rounding is half-to-even (`np.rint`) and, as in PyTorch, the code is computed as $x \cdot (1/s)$
in float32 — we do the same by hand, so the codes must agree with
`minillm.compress.quantize.quantize` exactly.
'''),
    code(r'''
bits = 8
qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
f32 = np.float32

# symmetric, one scale for the tensor
s_sym = np.abs(W).max() / f32(qmax)
q_sym = np.clip(np.rint(W * (f32(1) / s_sym)), qmin, qmax).astype(np.int8)
qt = Q.quantize(W, bits=8, symmetric=True)
print(f"symmetric: s = {s_sym:.6g} (library {float(qt.scale):.6g}), z = {int(qt.zero_point)}, "
      f"codes equal: {np.array_equal(q_sym, qt.q)}")

# affine, one scale and zero point for the tensor
lo, hi = min(W.min(), 0), max(W.max(), 0)
s_aff = (hi - lo) / f32(qmax - qmin)
z_aff = int(np.clip(qmin - np.rint(lo / s_aff), qmin, qmax))
q_aff = np.clip(np.rint(W * (f32(1) / s_aff)) + z_aff, qmin, qmax).astype(np.int8)
qa = Q.quantize(W, bits=8, symmetric=False)
print(f"affine:    s = {s_aff:.6g} (library {float(qa.scale):.6g}), z = {z_aff} "
      f"(library {int(qa.zero_point)}), codes equal: {np.array_equal(q_aff, qa.q)}")

err = W - Q.dequantize(qt)
print(f"max |x - x_hat| = {np.abs(err).max():.3g} <= s/2 = {s_sym / 2:.3g}: {np.abs(err).max() <= s_sym / 2}")
'''),
    md(r'''
## Granularity: per tensor, per channel, per group

One scale for a whole matrix must cover its single largest weight, so every other weight gets a
coarse grid. Finer granularity pays a few more scales for a better fit:

- **per tensor**: one $s$;
- **per channel** (`axis=1`): one $s$ per output column;
- **per group** (`group_size=32`): one $s$ per 32 consecutive inputs of each column.

At 4 bits the difference is large. The cost of the scales (float32 here) in bits per weight is
$b + 32 \cdot n_{\text{scales}} / n_{\text{weights}}$.
'''),
    code(r'''
bits = 4
layouts = {"per tensor": {}, "per channel": {"axis": 1}, "per group of 32": {"group_size": 32}}
errors = {}
for label, kw in layouts.items():
    qt = Q.quantize(W, bits=bits, **kw)
    errors[label] = (W - Q.dequantize(qt)).ravel()
    cost = bits + 32 * qt.scale.size / W.size
    rel = np.linalg.norm(errors[label]) / np.linalg.norm(W)
    print(f"{label:16s} {qt.scale.size:6d} scales  {cost:6.3f} bits/weight  "
          f"relative error {rel:.4f}  max |error| {np.abs(errors[label]).max():.4f}")

fig, ax = plt.subplots(figsize=(7, 3.8))
edges = np.linspace(-0.6, 0.6, 121) * np.abs(W).max() / 7
for label, e in errors.items():
    ax.hist(e, bins=edges, histtype="step", lw=1.5, label=label)
ax.set_yscale("log")
ax.set_xlabel("x - x_hat")
ax.set_ylabel("count")
ax.set_title("4-bit quantization error of h.1.mlp.c_fc.weight")
ax.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
The same comparison over every block matrix of the teacher (relative Frobenius error
$\lVert W - \hat W\rVert / \lVert W \rVert$ at 4 bits):
'''),
    code(r'''
names = block_matmul_names(P)
table = {label: [] for label in layouts}
for name in names:
    for label, kw in layouts.items():
        w = P[name]
        table[label].append(np.linalg.norm(w - Q.dequantize(Q.quantize(w, bits=4, **kw)))
                            / np.linalg.norm(w))
print(f"{'weight':24s}" + "".join(f"{label:>17s}" for label in layouts))
for k, name in enumerate(names):
    print(f"{name:24s}" + "".join(f"{table[label][k]:17.4f}" for label in layouts))
'''),
    md(r'''
## llama.cpp blocks: Q8_0 and Q4_0

llama.cpp stores weights in blocks of 32 consecutive inputs with one float16 scale $d$ each:

- **Q8_0**: $d = \max|x|/127$, $q = \mathrm{roundf}(x/d)$ (ties away from zero), 32 int8 codes +
  2 bytes: $(32 \cdot 8 + 16)/32 = 8.5$ bits per weight;
- **Q4_0**: $d = m/(-8)$ with $m$ the signed value of largest magnitude, codes $0..15$ stored
  as $q - 8$, two per byte: $(32 \cdot 4 + 16)/32 = 4.5$ bits per weight.

Here is one Q4_0 block of our weight, and the bits per weight of each *weight kind* — the object
that replaces the matrix in the params dict — computed from its `nbytes` (the bytes its storage
format really occupies).
'''),
    code(r'''
qs4, d4 = Q.q4_0(W)  # codes 0..15 (C, 4C) and float16 scales (C/32, 4C)
block = W[:32, 0]
print("one block (first column, inputs 0..31):")
print("  x     ", block[:8], "...")
print("  codes ", qs4[:32, 0][:8], "...   d =", d4[0, 0])
print("  x_hat ", Q.dequantize_q4_0(qs4, d4)[:8, 0], "...")
print("  packed into", Q.pack_q4_0(qs4)[:16, 0].nbytes, "bytes + 2 for d")

print()
for method in ("int8", "q8_0", "q4_0", "int4-g32", "int3-g32"):
    kind = Q.quantize_weight(W, method)
    rel = np.linalg.norm(W - kind.dequantize()) / np.linalg.norm(W)
    print(f"{method:9s} -> {type(kind).__name__:14s} {kind.nbytes:7,} bytes = "
          f"{8 * kind.nbytes / W.size:6.3f} bits/weight, relative error {rel:.4f}")
print(f"float32   -> {W.nbytes:,} bytes = {8 * W.nbytes / W.size:.3f} bits/weight")
'''),
    md(r'''
## Integer-only arithmetic: an int8 layer

Weight-only quantization dequantizes the weights and multiplies in float. An int8 accelerator
instead runs the whole layer in integers (Jacob et al. 2018). With input $(S_1, Z_1)$, weight
$(S_2, 0)$ and output $(S_3, Z_3)$ parameters, $y = xW + b$ becomes

$$q_3 = Z_3 + M \Big(\sum_k (q_{1,k} - Z_1)\, q_{2,k} + q_b\Big), \qquad M = \frac{S_1 S_2}{S_3},$$

where the int8 products accumulate in int32, the bias is stored in int32 with scale $S_1 S_2$,
and the one real number left, $M$, is applied as a fixed-point multiply $M \approx m_0\,
2^{\text{shift} - 31}$ with a 31-bit integer $m_0$ (TensorFlow Lite's semantics,
`minillm.hw.fixedpoint`).

The ranges $S_1, Z_1, S_3, Z_3$ come from **calibration**: run the float model on some training
text and record the min and max of the layer's input and output. We take the teacher's block-1
MLP input layer, calibrate on training text and test on held-out text.
'''),
    code(r'''
train_ids = data.encode_split("train", tok)
val_ids = data.encode_split("val", tok)
rng = np.random.default_rng(0)


def layer_inputs(idx, layer, position):
    """Inputs of one linear layer: forward_train records each block's caches as
    (ln_1, c_attn, attn, attn.c_proj, ln_2, c_fc, gelu, mlp.c_proj); a linear's cache is (x, W)."""
    _, _, caches = forward_train(P, cfg, idx)
    x = caches[1 + layer][position][0]  # (B, T, in)
    return x.reshape(-1, x.shape[-1])  # (B*T, in)


x_cal = layer_inputs(get_batch(train_ids, 8, cfg.block_size, rng)[0], 1, 5)  # c_fc input
x_test = layer_inputs(get_batch(val_ids, 8, cfg.block_size, rng)[0], 1, 5)
W, b = P["h.1.mlp.c_fc.weight"], P["h.1.mlp.c_fc.bias"]
layer = Q.calibrated_int8_linear(W, b, x_cal)
print(f"calibrated on {x_cal.shape[0]} positions: input S1={layer.x_scale:.4g} Z1={layer.x_zp}, "
      f"output S3={layer.y_scale:.4g} Z3={layer.y_zp}")

x_q = fixedpoint.quantize(x_test, layer.x_scale, layer.x_zp)  # int8 (N, C)
y_q = layer(x_q)  # int8 (N, 4C): integers only
y_int8 = fixedpoint.dequantize(y_q, layer.y_scale, layer.y_zp)
y_float = x_test.astype(np.float64) @ W + b
y_wonly = Q.quantize_weight(W, "int8").matmul(x_test) + b  # weight-only int8, float activations
print("dtypes in/out of the integer layer:", x_q.dtype, y_q.dtype)
rel = lambda y: np.linalg.norm(y - y_float) / np.linalg.norm(y_float)
print(f"relative output error: integer-only {rel(y_int8):.4f}, weight-only int8 {rel(y_wonly):.4f}")
y_lo, y_hi = layer.y_scale * (-128 - layer.y_zp), layer.y_scale * (127 - layer.y_zp)
outside = (y_float < y_lo) | (y_float > y_hi)
print(f"calibrated output range [{y_lo:.3f}, {y_hi:.3f}]: {outside.sum()} of {outside.size:,} held-out "
      f"outputs fall outside it and are clamped; their largest error "
      f"{np.abs(y_int8 - y_float)[outside].max(initial=0):.3f}, the others' "
      f"{np.abs(y_int8 - y_float)[~outside].max():.3f}")
'''),
    md(r'''
The fixed-point multiplier reproduces $M$ to about 31 significant bits, and one output can be
recomputed by hand with integer arithmetic only:
'''),
    code(r'''
M = layer.x_scale * layer.w_scale / layer.y_scale  # (4C,) per output channel
M_fixed = layer.m0.astype(np.float64) * 2.0 ** (layer.shift.astype(np.float64) - 31)
print(f"max relative error of m0 * 2^(shift-31) vs M: {np.abs(M_fixed / M - 1).max():.1e}")

n, j = 0, 7  # one position, one output channel
acc = int(((x_q[n].astype(np.int64) - layer.x_zp) * layer.w_q[:, j].astype(np.int64)).sum()
          + layer.bias_q[j])  # int32 accumulator
scaled = int(fixedpoint.multiply_by_quantized_multiplier(acc, int(layer.m0[j]), int(layer.shift[j])))
y_hand = min(max(layer.y_zp + scaled, -128), 127)
print(f"accumulator {acc}, scaled {scaled}, output code by hand {y_hand}, by the layer {y_q[n, j]}")
'''),
    md(r'''
Min–max calibration lets one extreme value stretch the grid for everyone. The MLP's second
layer reads GELU outputs, which have rare large values; clipping the range at a percentile
trades a large error on a few outliers for a finer grid for all the rest. Which side of the
trade wins depends on how heavy the tail is: the cell measures it on held-out activations. The
plot shows the integer-only c_fc layer's outputs against the float ones, and both layers' error
distributions.
'''),
    code(r'''
W2, b2 = P["h.1.mlp.c_proj.weight"], P["h.1.mlp.c_proj.bias"]
g_cal = layer_inputs(get_batch(train_ids, 8, cfg.block_size, np.random.default_rng(1))[0], 1, 7)
g_test = layer_inputs(get_batch(val_ids, 8, cfg.block_size, np.random.default_rng(2))[0], 1, 7)
y2 = g_test.astype(np.float64) @ W2 + b2
for pct in (None, 99.99, 99.9):
    lay = Q.calibrated_int8_linear(W2, b2, g_cal, percentile=pct)
    e = np.linalg.norm(lay.forward(g_test) - y2) / np.linalg.norm(y2)
    print(f"calibration {'min-max' if pct is None else f'percentile {pct}':17s} input range "
          f"[{lay.x_scale * (-128 - lay.x_zp):7.3f}, {lay.x_scale * (127 - lay.x_zp):7.3f}]  "
          f"relative error {e:.4f}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
sel = rng.choice(y_float.size, 4000, replace=False)
ax1.plot(y_float.ravel()[sel], y_int8.ravel()[sel], ".", ms=2)
lim = np.abs(y_float).max()
ax1.plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
ax1.set_xlabel("float layer output")
ax1.set_ylabel("integer-only layer output")
ax1.set_title("c_fc of block 1 on held-out text")
bins = np.linspace(-1, 1, 201) * np.abs(y_int8 - y_float).max()
ax2.hist((y_int8 - y_float).ravel(), bins=bins, histtype="step", label="integer-only")
ax2.hist((y_wonly - y_float).ravel(), bins=bins, histtype="step", label="weight-only int8")
ax2.set_yscale("log")
ax2.set_xlabel("output error")
ax2.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## What it costs in quality

Finally the whole teacher, every block matrix and the tied embedding / LM head quantized with
each method (`quantize_params`; position embeddings, LayerNorms and biases stay float32), evaluated on the first
20,000 characters of the validation plays. The table gives the total stored bytes, the bits per
weight of the quantized matrices, and the validation loss with its change from float32.
'''),
    code(r'''
methods = ["fp32", "int8", "q8_0", "int4-g32", "q4_0", "int3-g32"]
results = []
t0 = time.perf_counter()
for method in methods:
    params = P if method == "fp32" else Q.quantize_params(P, method)
    model = minillm.GPT(cfg, params=params, tokenizer=tok)
    loss = evaluate(model, val_ids, max_tokens=20000)["loss"]
    block_bytes = sum(params[n].nbytes for n in names)
    block_weights = sum(int(np.prod(params[n].shape)) for n in names)
    results.append((method, model.nbytes, 8 * block_bytes / block_weights, loss))
print(f"({time.perf_counter() - t0:.0f} s)")
base = results[0][3]
print(f"{'method':9s} {'bytes':>10s} {'bits/weight':>12s} {'val loss':>9s} {'change':>8s}")
for method, nbytes, bpw, loss in results:
    print(f"{method:9s} {nbytes:10,} {bpw:12.3f} {loss:9.4f} {loss - base:+8.4f}")
'''),
    code(r'''
fig, ax = plt.subplots(figsize=(6.5, 4))
for method, nbytes, _, loss in results:
    ax.scatter(nbytes, loss)
    ax.annotate(method, (nbytes, loss), textcoords="offset points", xytext=(5, 4))
ax.set_xscale("log")
ax.set_xlabel("stored bytes (whole model)")
ax.set_ylabel("validation loss (nats/char)")
ax.set_title("Quantizing the teacher: size vs quality")
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Exercises

1. **Symmetric or affine at 4 bits?** Compare `quantize(W, bits=4, group_size=32)` with
   `symmetric=False` on every block matrix. Which wins, and why does the library's `int4-g32`
   method choose affine groups?
2. **Skip the first block.** `quantize_params(P, "q4_0", skip=("h.0.*",))` keeps block 0 in
   float32. Does the loss recover more per byte than quantizing everything at `q8_0`?
3. **Calibration set size.** Calibrate the integer-only c_fc layer on 1, 8 and 64 windows of
   training text. How does the held-out error change with min–max and with percentile
   calibration?
'''),
]


# ==============================================================================================
# 05 — pruning
# ==============================================================================================
L05 = [
    md(r'''
# 05 · Pruning

Many weights of a trained network are small, and setting them *exactly* to zero barely changes
its output. A pruning method chooses a **keep-mask** $M$ (True = keep) and replaces $W$ by
$W \odot M$. Which weights to remove is decided by a *score*; whether the zeros make the model
smaller or faster depends on their *pattern*:

| pattern | example | saves bytes / time when |
|---|---|---|
| unstructured | magnitude, Wanda | stored sparsely (CSR) at high sparsity, or with sparse kernels |
| semi-structured | 2:4 | sparse tensor cores: half the values + 2-bit indices |
| structured | whole heads, whole MLP neurons | always: the matrices shrink |

Everything here is measured on the shipped teacher.
'''),
    SETUP,
    code(r'''
import time

from minillm import data
from minillm.compress import prune
from minillm.data import get_batch
from minillm.io import WEIGHTS_DIR
from minillm.kinds import block_matmul_names
from minillm.nn.gpt import forward_train
from minillm.train import TrainConfig, evaluate, train

teacher = minillm.load("teacher")
tok, cfg, P = teacher.tokenizer, teacher.config, teacher.params
names = block_matmul_names(P)  # the 4 matrices of every block: what pruning touches
train_ids, val_ids = data.encode_split("train", tok), data.encode_split("val", tok)
VAL_TOKENS = 8192  # a slice of the validation plays, for speed


def val_loss(params):
    return evaluate(minillm.GPT(cfg, params=params), val_ids, max_tokens=VAL_TOKENS)["loss"]


dense_loss = val_loss(P)
print(f"dense teacher: validation loss {dense_loss:.4f} on {VAL_TOKENS:,} characters")
'''),
    md(r'''
## Magnitude pruning

Remove the $k = \mathrm{round}(s\,n)$ weights of smallest $|W_{ij}|$ ($s$ the sparsity, $n$ the
weight count). Per layer, each matrix loses the same fraction; **globally**, all block matrices
are ranked together against one threshold, so layers with smaller weights lose more.
'''),
    code(r'''
W = P["h.1.mlp.c_fc.weight"]
mask = prune.magnitude_mask(W, 0.5)
kept, dropped = np.abs(W[mask]), np.abs(W[~mask])
print(f"sparsity {prune.sparsity(mask):.3f}; smallest kept |w| {kept.min():.5f} "
      f">= largest pruned |w| {dropped.max():.5f}: {kept.min() >= dropped.max()}")

fig, ax = plt.subplots(figsize=(6, 3.3))
ax.hist(np.abs(W).ravel(), bins=100, color="C0")
ax.axvline(dropped.max(), color="C3", ls="--", label="50 % threshold")
ax.set_xlabel("|w|")
ax.set_ylabel("count")
ax.set_title("h.1.mlp.c_fc.weight: magnitudes")
ax.legend()
fig.tight_layout()
plt.show()

global_masks = prune.global_magnitude_masks(P, 0.5)
rep = prune.report(global_masks)
print(f"global 50 %: total sparsity {rep['total']['sparsity']:.3f}; per matrix:")
for name in names:
    print(f"  {name:24s} {rep[name]['sparsity']:.3f}   (mean |w| {np.abs(P[name]).mean():.4f})")
'''),
    md(r'''
## 2:4 sparsity

In every group of 4 consecutive inputs (axis 0 of a Conv1D weight), keep the 2 largest. The
pattern is regular enough for hardware: NVIDIA's sparse tensor cores store the 2 values and
two 2-bit positions per group and skip the zeros. `prune.nm_sparse` stores a weight this way
(the `NMSparse` kind); the plot compares the zero patterns of a 16 × 16 corner.
'''),
    code(r'''
nm = prune.n_m_mask(W, 2, 4)
groups = nm.reshape(W.shape[0] // 4, 4, W.shape[1])
print("kept per group of 4: always 2 ->", bool((groups.sum(axis=1) == 2).all()))

kind = prune.nm_sparse(W)
print(f"NMSparse: {kind.nbytes:,} bytes = {8 * kind.nbytes / W.size:.2f} bits/weight "
      f"(float32 dense: {8 * W.nbytes / W.size:.0f}); dequantize == W * mask: "
      f"{np.array_equal(kind.dequantize(), W * nm)}")

fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
for ax, (title, m) in zip(axes, [("magnitude 50 %", mask), ("2:4", nm)], strict=True):
    ax.imshow(m[:16, :16], cmap="gray_r", vmin=0, vmax=1.5)
    ax.set_title(title)
    ax.set_xlabel("output")
    ax.set_ylabel("input")
fig.suptitle("kept weights (dark) in a 16 x 16 corner")
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Structured: heads and neurons

A head owns its $q$, $k$, $v$ columns of `c_attn` and its rows of `attn.c_proj`; an MLP neuron
owns its column of `c_fc` and its row of `mlp.c_proj`. Each is scored by the L2 norm of all the
weights it owns, and the weakest are removed whole — after which the matrices could be sliced
smaller for a real speed-up with ordinary dense kernels.
'''),
    code(r'''
scores = np.array([prune.head_scores(P, layer, cfg) for layer in range(cfg.n_layer)])  # (L, H)
print("head scores (rows = layers):")
print(scores)
head_masks = prune.prune_heads(P, cfg, 0.25)
neuron_masks = prune.neuron_mask(P, 0.25)
print(f"25 % of heads removed: {prune.report(head_masks)['total']['sparsity']:.3f} of the "
      f"attention weights; 25 % of neurons: {prune.report(neuron_masks)['total']['sparsity']:.3f} "
      f"of the MLP weights")
'''),
    md(r'''
## Wanda: weights and activations

Magnitude ignores the inputs a weight multiplies. **Wanda** (Sun et al. 2023) scores
$|W_{io}|\,\lVert X_i \rVert_2$, with $\lVert X_i\rVert_2$ the norm of input feature $i$ over
calibration tokens, and prunes the lowest scores *within each output column*. A weight that is
small but always multiplied by a large activation is kept.

We take the inputs of every block matrix from a forward pass over training text, build Wanda
masks at 50 %, and compare each layer's output error on *held-out* text with magnitude pruning
at the same sparsity: $\lVert X W - X (W \odot M) \rVert / \lVert X W \rVert$.
'''),
    code(r'''
CACHE_POSITION = {"attn.c_attn": 1, "attn.c_proj": 3, "mlp.c_fc": 5, "mlp.c_proj": 7}


def matmul_inputs(idx):
    """The input of every block matrix, from forward_train's per-block caches
    (ln_1, c_attn, attn, attn.c_proj, ln_2, c_fc, gelu, mlp.c_proj); a linear's cache is (x, W)."""
    _, _, caches = forward_train(P, cfg, idx)
    out = {}
    for name in names:
        layer, part = int(name.split(".")[1]), name.split(".", 2)[2].removesuffix(".weight")
        x = caches[1 + layer][CACHE_POSITION[part]][0]
        out[name] = x.reshape(-1, x.shape[-1])  # (tokens, in)
    return out


rng = np.random.default_rng(0)
X_cal = matmul_inputs(get_batch(train_ids, 8, cfg.block_size, rng)[0])
X_test = matmul_inputs(get_batch(val_ids, 8, cfg.block_size, rng)[0])

target = 0.5
wanda_masks = {n: prune.wanda_mask(P[n], prune.wanda_norms(X_cal[n]), target) for n in names}
mag_masks = {n: prune.magnitude_mask(P[n], target) for n in names}


def output_error(name, m):
    y = X_test[name] @ P[name]
    return np.linalg.norm(y - X_test[name] @ (P[name] * m)) / np.linalg.norm(y)


err_mag = [output_error(n, mag_masks[n]) for n in names]
err_wanda = [output_error(n, wanda_masks[n]) for n in names]
for n, a, w in zip(names, err_mag, err_wanda, strict=True):
    print(f"{n:24s} magnitude {a:.4f}   wanda {w:.4f}")

fig, ax = plt.subplots(figsize=(9, 3.5))
xs = np.arange(len(names))
ax.bar(xs - 0.2, err_mag, 0.4, label="magnitude")
ax.bar(xs + 0.2, err_wanda, 0.4, label="Wanda")
ax.set_xticks(xs, [n.removesuffix(".weight") for n in names], rotation=60, ha="right", fontsize=8)
ax.set_ylabel("relative output error")
ax.set_title("50 % sparsity, held-out activations")
ax.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Gradual pruning: the cubic schedule

Pruning a lot at once is a shock; Zhu & Gupta (2017) raise the sparsity while fine-tuning,
fast at first (when many weights are redundant) and slowly at the end:

$$s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{n\,\Delta t}\right)^3
\quad\text{for } t_0 \le t \le t_0 + n\Delta t .$$

The masks are recomputed every $\Delta t$ steps ($n$ times in all). We check
`prune.cubic_sparsity` against the formula and plot it.
'''),
    code(r'''
s_i, s_f, t0, n, dt = 0.0, 0.8, 100, 10, 50
ts = np.arange(0, 800)
sched = np.array([prune.cubic_sparsity(t, s_i, s_f, t0, n, dt) for t in ts])
inside = (ts >= t0) & (ts <= t0 + n * dt)
by_hand = s_f + (s_i - s_f) * (1 - (ts[inside] - t0) / (n * dt)) ** 3
print("max |library - formula| inside the ramp:", np.abs(sched[inside] - by_hand).max())

prune_steps = t0 + dt * np.arange(n + 1)
fig, ax = plt.subplots(figsize=(6, 3.3))
ax.plot(ts, sched, label="$s_t$")
ax.step(prune_steps, [prune.cubic_sparsity(t, s_i, s_f, t0, n, dt) for t in prune_steps],
        where="post", color="C1", label="masks updated every Δt")
ax.set_xlabel("training step t")
ax.set_ylabel("sparsity")
ax.set_title("Zhu & Gupta cubic sparsity schedule")
ax.legend()
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Loss against sparsity

No fine-tuning yet: the teacher's validation loss on the slice after pruning all block
matrices to each sparsity, with per-layer magnitude, global magnitude and Wanda masks, plus
2:4 and the structured methods (at the fraction of their own weights they remove).
'''),
    code(r'''
sparsities = [0.1, 0.3, 0.5, 0.7]
methods = {
    "magnitude (per layer)": lambda s: {n: prune.magnitude_mask(P[n], s) for n in names},
    "magnitude (global)": lambda s: prune.global_magnitude_masks(P, s),
    "Wanda": lambda s: {n: prune.wanda_mask(P[n], prune.wanda_norms(X_cal[n]), s) for n in names},
}
t_start = time.perf_counter()
curves = {}
for label, make in methods.items():
    curves[label] = [val_loss(prune.apply_masks(P, make(s))) for s in sparsities]
    print(f"{label:22s}", "  ".join(f"{s:.0%}: {l:.4f}" for s, l in zip(sparsities, curves[label], strict=True)))
points = {
    "2:4": (0.5, val_loss(prune.apply_masks(P, {n: prune.n_m_mask(P[n]) for n in names}))),
    "heads 25 %": (0.25, val_loss(prune.apply_masks(P, head_masks))),
    "neurons 25 %": (0.25, val_loss(prune.apply_masks(P, neuron_masks))),
}
for label, (s, l) in points.items():
    print(f"{label:22s} {s:.0%}: {l:.4f}")
print(f"({time.perf_counter() - t_start:.0f} s)")
'''),
    code(r'''
fig, ax = plt.subplots(figsize=(7, 4.2))
for label, losses in curves.items():
    ax.plot([0] + sparsities, [dense_loss] + losses, "o-", label=label)
for (label, (s, l)), marker in zip(points.items(), ["*", "s", "D"], strict=True):
    ax.plot(s, l, marker, ms=10, label=label)
ax.set_xlabel("sparsity of the pruned matrices")
ax.set_ylabel("validation loss (nats/char)")
ax.set_title("Pruning the teacher without fine-tuning")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
'''),
    md(r'''
## Fine-tuning with the mask held fixed

Pruned weights must *stay* zero while the others adapt. `train(..., masks=masks)` zeroes the
gradients of pruned weights before each AdamW update; with fresh optimizer moments their update
is then exactly $0/(0 + \epsilon) = 0$, and weight decay keeps a 0 at 0. A few steps only here
(seconds on a CPU), on 50 % per-layer magnitude masks:
'''),
    code(r'''
masks50 = {n: prune.magnitude_mask(P[n], 0.5) for n in names}
pruned = {k: np.array(v, copy=True) for k, v in prune.apply_masks(P, masks50).items()}
student = minillm.GPT(cfg, params=pruned, tokenizer=tok)
before = val_loss(student.params)

ft = TrainConfig(steps=20, batch_size=8, lr=3e-4, min_lr=3e-5, warmup=2, eval_every=20,
                 ckpt_every=20, seed=0)
t_ft = time.perf_counter()
train(student, train_ids, None, ft, masks=masks50, progress=False)
after = val_loss(student.params)
still_zero = all(np.all(student.params[n][~m] == 0) for n, m in masks50.items())
print(f"{ft.steps} steps of {ft.batch_size} x {cfg.block_size} characters "
      f"in {time.perf_counter() - t_ft:.1f} s")
print(f"loss after pruning {before:.4f} -> after {ft.steps} steps {after:.4f} "
      f"(dense {dense_loss:.4f}); pruned weights still exactly zero: {still_zero}")
'''),
    md(r'''
## The shipped fine-tuned model

`teacher-prune50` is the teacher pruned to 50 % per layer and fine-tuned for longer with the
mask held fixed (its `train_log.json` records the command). Fine-tuning also simply *trains the
teacher more*, so the fair baseline is the dense teacher fine-tuned with the same steps and
schedule, shipped as the control `teacher-ft400`: the pruning cost is the difference between
those two. If these models are present in your installation the next cell loads and compares
them; if not, it says so and skips the comparison.
'''),
    code(r'''
path = WEIGHTS_DIR / "teacher-prune50"
control = WEIGHTS_DIR / "teacher-ft400"
if path.exists():
    shipped = minillm.load(path)
    zeros = np.mean([np.mean(shipped.params[n] == 0) for n in names])
    print(f"shipped {path.name}: mean sparsity of the block matrices {zeros:.3f}, "
          f"validation loss {val_loss(shipped.params):.4f}")
    print(f"  dense teacher {dense_loss:.4f}, pruned without fine-tuning {before:.4f}, "
          f"after {ft.steps} steps here {after:.4f}")
    if control.exists():
        print(f"  control {control.name} (dense, same fine-tuning): "
              f"{val_loss(minillm.load(control).params):.4f}")
else:
    print(f"{path} is not in this installation: skipping the comparison with the shipped "
          "fine-tuned model.")
'''),
    md(r'''
## Exercises

1. **Where does it hurt?** Prune one block matrix at a time to 70 % (magnitude) and measure the
   loss. Which of the 16 matrices is most sensitive? Compare with the per-layer sparsities that
   global magnitude chose above.
2. **Bytes, honestly.** A `Masked` weight (`prune.masked_params`) stores the dense matrix;
   `Masked.nbytes_csr` gives its size in CSR. At which sparsity does CSR become smaller than
   dense float32, and how does that compare with `NMSparse` at 2:4?
3. **Wanda's calibration.** Build Wanda masks from calibration windows of the *validation*
   text instead, or from a single window. How much does the loss at 50 % depend on the
   calibration data?
'''),
]


def main(argv: list[str]) -> int:
    lessons = {
        "00_tour.ipynb": L00,
        "01_forward_pass.ipynb": L01,
        "02_backprop_and_training.ipynb": L02,
        "03_kv_cache_and_sampling.ipynb": L03,
        "04_quantization.ipynb": L04,
        "05_pruning.ipynb": L05,
    }
    wanted = argv or list(lessons)
    for name in wanted:
        print("wrote", write(name, lessons[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
