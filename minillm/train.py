"""Training by hand: AdamW, a warmup + cosine schedule, clipping, checkpoints that resume exactly.

**AdamW** (Loshchilov & Hutter 2019) keeps running moments of each gradient $g_t$:

$$m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,$$
$$\\theta_t = \\theta_{t-1} - \\eta_t \\Big(\\frac{m_t/(1-\\beta_1^t)}{\\sqrt{v_t/(1-\\beta_2^t)} + \\epsilon}
  + \\lambda\\, \\theta_{t-1}\\Big).$$

The weight decay $\\lambda$ is *decoupled* (applied to the weights, not added to the gradient) and
only 2-D weights decay; biases and LayerNorm gains do not.

**Schedule.** Linear warmup for $w$ steps, then cosine decay from $\\eta_{max}$ to $\\eta_{min}$:
$\\eta_t = \\eta_{min} + \\tfrac12(\\eta_{max} - \\eta_{min})(1 + \\cos(\\pi\\,\\frac{t - w}{n - w}))$.

**Clipping.** If the global norm $\\|g\\| = \\sqrt{\\sum_i \\|g_i\\|^2}$ exceeds $c$, every gradient is
scaled by $c/\\|g\\|$.

**Checkpoints** hold the parameters, both Adam moments, the step and the state of the batch
sampler's random generator in one safetensors file, written to a temporary file and renamed
into place, so an interrupted write never damages the previous checkpoint, and `resume`
continues bit-for-bit as if training had never stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # text bars everywhere: tqdm.auto warns in notebooks without ipywidgets

from . import backends
from .config import GPTConfig
from .data import get_batch
from .nn.functional import log_softmax
from .nn.gpt import GPT, backward, forward, forward_train, output_major


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (the teacher's defaults)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 16
    ckpt_every: int = 250
    seed: int = 1337

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "ckpt_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {v!r}")
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or not 0 <= self.warmup < self.steps:
            raise ValueError(f"TrainConfig.warmup must be an int in [0, steps={self.steps}), got {self.warmup!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be an int >= 0, got {self.seed!r}")
        # The real-valued fields: numbers first, so the comparisons below cannot raise a TypeError.
        for name, lo, inclusive in (("lr", 0, False), ("min_lr", 0, False), ("weight_decay", 0, True),
                                    ("beta1", 0, True), ("beta2", 0, True), ("eps", 0, False),
                                    ("grad_clip", 0, False)):  # fmt: skip
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
            ok = ok and (v >= lo if inclusive else v > lo) and (math.isfinite(v) or name == "grad_clip")
            if not ok:
                allowed = f"a finite number {'>=' if inclusive else '>'} {lo}"
                allowed += " (or inf: no clipping)" if name == "grad_clip" else ""
                raise ValueError(f"TrainConfig.{name} must be {allowed}, got {v!r}")
        if not (0 < self.min_lr <= self.lr):
            raise ValueError(f"TrainConfig needs 0 < min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"TrainConfig betas must be in [0, 1), got {self.beta1}, {self.beta2}")


def check_tokens(data: Any, vocab_size: int, name: str = "data", min_len: int = 2) -> np.ndarray:
    """`data` as a 1-D integer array of token ids in [0, vocab_size) holding at least `min_len` of them.

    NumPy would wrap a negative id around to the end of the embedding table: a silent wrong
    answer, so every id is checked once here (a min and a max over the corpus)."""
    a = np.asarray(data)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of token ids, got shape {a.shape}")
    if len(a) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} tokens, got {len(a)}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} contains token id {lo if lo < 0 else hi}; allowed ids are 0..{vocab_size - 1}")
    return a


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def clip_grads(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale `grads` in place so their global L2 norm is at most `max_norm`; return the norm before."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


class AdamW:
    """AdamW over a params dict; `masks` (name -> bool array) keep pruned weights at exactly 0.

    A masked weight's gradient is zeroed before the update, so its moments stay 0, its Adam
    step is 0 / (0 + eps) = 0 and decay multiplies 0: it never leaves zero.
    """

    def __init__(self, params: dict[str, np.ndarray], cfg: TrainConfig,
                 masks: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0
        self.masks = masks or {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        """One in-place update of every parameter."""
        c = self.cfg
        self.t += 1
        bc1, bc2 = 1 - c.beta1**self.t, 1 - c.beta2**self.t
        for name, w in params.items():
            g = grads[name]
            if name in self.masks:
                g = g * self.masks[name]
            m, v = self.m[name], self.v[name]
            m *= c.beta1
            m += (1 - c.beta1) * g
            v *= c.beta2
            v += (1 - c.beta2) * (g * g)
            if w.ndim == 2 and c.weight_decay:  # decoupled decay, matrices only
                w *= 1 - lr * c.weight_decay
            w -= lr * (m / bc1) / (np.sqrt(v / bc2) + c.eps)


# ------------------------------------------------------------------------------------------
def cross_entropy_step(config: GPTConfig) -> Callable:
    """The ordinary language-modelling loss and gradients, as a `train` step function."""

    def step(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
        _, loss, caches = forward_train(params, config, x, y)
        return loss, backward(params, config, caches)

    return step


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    params: dict[str, np.ndarray]
    opt: AdamW
    step: int
    rng: np.random.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    ema: float | None = None  # smoothed training loss shown on the progress bar


def _state_sha256(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> str:
    """SHA-256 of the metadata strings and of every tensor's name, dtype, shape and little-endian
    bytes, in name order.

    Stored in the checkpoint's metadata, it turns a flipped bit in the data or a changed step
    count, which the file's structure cannot reveal, into a clear error on load."""
    sha = hashlib.sha256()
    for key in sorted(meta):
        if key != "sha256":
            sha.update(f"{key}\0{meta[key]}\0".encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        sha.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        sha.update(a.tobytes())
    return "sha256:" + sha.hexdigest()


def save_checkpoint(path: str | Path, state: TrainState, model_config: GPTConfig,
                    train_config: TrainConfig, extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write the whole training state to one safetensors file, atomically (`minillm.io`'s writer:
    temporary file, fsync, rename)."""
    from .io import write_safetensors

    path = Path(path)
    tensors = {f"param/{k}": v for k, v in state.params.items()}
    tensors |= {f"adam_m/{k}": v for k, v in state.opt.m.items()}
    tensors |= {f"adam_v/{k}": v for k, v in state.opt.v.items()}
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {
        "step": str(state.step),
        "adam_t": str(state.opt.t),
        "rng": json.dumps(state.rng.bit_generator.state),
        "model_config": json.dumps(model_config.to_dict()),
        "train_config": json.dumps(dataclasses.asdict(train_config)),
        "history": json.dumps(state.history),
        "ema": json.dumps(state.ema),
        "extra": json.dumps(extra or {}),
    }
    meta["sha256"] = _state_sha256(tensors, meta)
    write_safetensors(path, tensors, meta)


def load_checkpoint(path: str | Path) -> tuple[TrainState, GPTConfig, TrainConfig, dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint` (no pickle: safetensors + JSON).

    Raises
    ------
    FileNotFoundError
        There is no file at `path`.
    CheckpointError
        (a ValueError) The file is truncated, corrupt, or inconsistent; the message names the file
        and, where one is to blame, the tensor or metadata field.
    """
    from .io import CheckpointError, read_safetensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    tensors, _, meta = read_safetensors(path, dtypes={"F32", "F64"})
    for k, a in tensors.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: tensor {k!r} holds non-finite values (NaN or inf)")
    known = {"step", "adam_t", "rng", "model_config", "train_config", "history", "ema", "extra", "sha256"}
    if set(meta) - known:
        raise CheckpointError(f"{path}: unexpected metadata field(s) {sorted(set(meta) - known)}; "
                              f"allowed: {sorted(known)}")
    field_ = "?"
    try:
        field_ = "sha256"  # absent from checkpoints written before it was introduced
        if field_ in meta and meta[field_] != _state_sha256(tensors, meta):
            raise CheckpointError(f"{path}: its tensors or metadata differ from the SHA-256 recorded in it "
                                  "(the file was corrupted or modified); resume from another checkpoint")
        field_ = "model_config"
        model_config = GPTConfig.from_dict(json.loads(meta[field_]))
        field_ = "train_config"
        tc = json.loads(meta[field_])
        if not isinstance(tc, dict):
            raise ValueError(f"must be a JSON object, got {tc!r}")
        train_config = TrainConfig(**tc)
        field_ = "rng"
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(meta[field_])
        field_ = "step"
        step = int(meta[field_])
        field_ = "adam_t"
        adam_t = int(meta[field_])
        if step < 0 or adam_t < 0:
            raise ValueError(f"step and adam_t must be >= 0, got {step}, {adam_t}")
        field_ = "history"
        history = json.loads(meta[field_])
        field_ = "extra"
        extra = json.loads(meta.get(field_, "{}"))
        field_ = "ema"
        ema = json.loads(meta.get(field_, "null"))
        if not isinstance(history, list) or not isinstance(extra, dict) or not (
                ema is None or isinstance(ema, (int, float))):  # fmt: skip
            raise ValueError("history must be a list, extra an object and ema a number or null")
    except CheckpointError:
        raise
    except KeyError as e:
        raise CheckpointError(f"{path}: not a minillm training checkpoint: metadata field {field_!r} "
                              f"is missing or incomplete (no {e})") from None
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: metadata field {field_!r} is invalid ({e})") from None
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param/")}
    moments = {}
    for prefix in ("adam_m/", "adam_v/"):
        moments[prefix] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    unknown = sorted(k for k in tensors if not k.startswith(("param/", "adam_m/", "adam_v/")))
    if unknown:
        raise CheckpointError(f"{path}: unexpected tensor(s) {unknown[:5]}; allowed: param/*, adam_m/*, adam_v/*")
    for prefix, named in moments.items():
        for name, w in params.items():
            if name not in named:
                raise CheckpointError(f"{path}: tensor {prefix + name!r} is missing (param/{name} has no moment)")
            if named[name].shape != w.shape or named[name].dtype != w.dtype:
                raise CheckpointError(f"{path}: tensor {prefix + name!r} is {named[name].dtype} "
                                      f"{named[name].shape}, but param/{name} is {w.dtype} {w.shape}")
        extra_m = sorted(set(named) - set(params))
        if extra_m:
            raise CheckpointError(f"{path}: tensor(s) {[prefix + k for k in extra_m[:5]]} have no param/ tensor")
    params = output_major(params)  # the layout training ran in, so resuming repeats it bit for bit
    opt = AdamW(params, train_config)
    opt.m, opt.v = output_major(moments["adam_m/"]), output_major(moments["adam_v/"])
    opt.t = adam_t
    return TrainState(params, opt, step, rng, history, ema), model_config, train_config, extra


def estimate_loss(params: dict[str, Any], config: GPTConfig, data: np.ndarray, n_batches: int,
                  batch_size: int, seed: int = 0) -> float:  # fmt: skip
    """Mean loss on `n_batches` fixed random windows (the same windows at every call)."""
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, config.block_size, rng)
        losses.append(forward_train(params, config, x, y)[1])
    return float(np.mean(losses))


def train(model: GPT, train_data: np.ndarray, val_data: np.ndarray | None, cfg: TrainConfig,
          checkpoint: str | Path | None = None, resume: bool = False, step_fn: Callable | None = None,
          masks: dict[str, np.ndarray] | None = None, progress: bool = True,
          stop_after: int | None = None, desc: str = "train") -> list[dict[str, float]]:  # fmt: skip
    """Train `model.params` in place; returns the history of logged metrics.

    Parameters
    ----------
    model : GPT
        The model to train (dense float32 params).
    train_data, val_data : np.ndarray
        Token ids of the training and validation text (val may be None).
    cfg : TrainConfig
        Hyper-parameters.
    checkpoint : path, optional
        Where to write the training state every `cfg.ckpt_every` steps and at the end.
    resume : bool
        Continue from `checkpoint` (bit-for-bit the same as an uninterrupted run).
    step_fn : callable, optional
        ``step_fn(params, x, y) -> (loss, grads)``; defaults to cross-entropy. Distillation
        passes its own.
    masks : dict, optional
        Pruning masks: masked weights stay exactly zero.
    stop_after : int, optional
        Stop (after checkpointing) once this many steps are done — to simulate an interruption.
    """
    config = model.config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    # Windows of block_size + 1 tokens (inputs and shifted targets) must fit in the data.
    train_data = check_tokens(train_data, config.vocab_size, "train_data", config.block_size + 1)
    if val_data is not None:
        val_data = check_tokens(val_data, config.vocab_size, "val_data", config.block_size + 1)
    step_fn = step_fn or cross_entropy_step(config)
    if resume:
        if checkpoint is None or not Path(checkpoint).is_file():
            raise FileNotFoundError(f"--resume needs an existing checkpoint, none at {checkpoint}")
        state, ck_config, ck_train, _ = load_checkpoint(checkpoint)
        if ck_config != config:
            raise ValueError(f"checkpoint {checkpoint} is for {ck_config}, not {config}")
        if dataclasses.asdict(ck_train) != dataclasses.asdict(cfg):
            raise ValueError(f"checkpoint {checkpoint} was trained with {ck_train}, not {cfg}")
        # Copy in place only if names and shapes agree exactly (a (1, C) array would broadcast).
        theirs = {k: v.shape for k, v in state.params.items()}
        ours = {k: np.shape(v) for k, v in model.params.items()}
        if theirs != ours:
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise ValueError(f"checkpoint {checkpoint}: tensors {diff[:5]} do not match the model's parameters "
                             "(names and shapes must be equal)")
        for k, v in state.params.items():
            model.params[k][...] = v
        state.params = model.params
        state.opt.masks = masks or {}
    else:
        state = TrainState(model.params, AdamW(model.params, cfg, masks), 0,
                           np.random.default_rng(cfg.seed))  # fmt: skip
    if masks:
        for name, mask in masks.items():
            model.params[name] *= mask
    tokens_per_step = cfg.batch_size * config.block_size
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=state.step, desc=desc, disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    t0 = time.perf_counter()
    while state.step < last:
        x, y = get_batch(train_data, cfg.batch_size, config.block_size, state.rng)
        loss, grads = step_fn(state.params, x, y)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {state.step}; lower the learning rate")
        norm = clip_grads(grads, cfg.grad_clip)
        lr = lr_at(state.step, cfg)
        state.opt.step(state.params, grads, lr)
        state.step += 1
        ema = state.ema = loss if state.ema is None else 0.95 * state.ema + 0.05 * loss
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}", lr=f"{lr:.1e}")
        done = state.step == cfg.steps
        if val_data is not None and (state.step % cfg.eval_every == 0 or done):
            val = estimate_loss(state.params, config, val_data, cfg.eval_batches, cfg.batch_size)
            state.history.append({"step": state.step, "train_loss": round(ema, 4),
                                  "val_loss": round(val, 4), "lr": lr, "grad_norm": round(norm, 4),
                                  "tok_s": round(tokens_per_step / dt)})  # fmt: skip
            bar.write(f"step {state.step}: train {ema:.4f}  val {val:.4f}")
            t0 = time.perf_counter()
        if checkpoint is not None and (state.step % cfg.ckpt_every == 0 or state.step == last):
            save_checkpoint(checkpoint, state, config, cfg)
            t0 = time.perf_counter()
    bar.close()
    return state.history


# ------------------------------------------------------------------------------------------
def evaluate(model: GPT, data: np.ndarray, backend: Any = "numpy", batch_size: int = 32,
             max_tokens: int | None = None, progress: bool = False) -> dict[str, float]:  # fmt: skip
    """Mean cross-entropy (nats/token) over `data` cut into non-overlapping `block_size` windows.

    Every token after the first is predicted exactly once, from the tokens before it in its
    window (the last window may be shorter). Runs through `backend`, so compressed weight kinds
    are evaluated exactly as they generate. Returns ``{"loss", "ppl", "tokens"}``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer))
                                   or max_tokens < 1):  # fmt: skip
        raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
    data = check_tokens(data, model.config.vocab_size)
    if max_tokens is not None:
        data = data[: max_tokens + 1]
    be = backends.get(backend)
    params = be.prepare(model.params)
    T = model.config.block_size
    starts = list(range(0, len(data) - 1, T))
    total, count = 0.0, 0
    full = [s for s in starts if s + T + 1 <= len(data)]
    tail = [s for s in starts if s + T + 1 > len(data)]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)] + [[s] for s in tail]
    for group in tqdm(batches, desc="eval", disable=not progress, leave=False):
        n = min(T, len(data) - 1 - group[0])
        x = np.stack([data[s : s + n] for s in group]).astype(np.int64)  # (b, n)
        y = np.stack([data[s + 1 : s + n + 1] for s in group]).astype(np.int64)
        logits = np.asarray(be.to_numpy(forward(params, model.config, x, None, be)), np.float64)
        logp = log_softmax(logits)  # (b, n, V)
        total -= float(np.take_along_axis(logp, y[..., None], axis=-1).sum())
        count += y.size
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss), "tokens": count}


# ------------------------------------------------------------------------------------------
def train_preset(preset: str, out: str | Path, cfg: TrainConfig | None = None, resume: bool = False,
                 step_fn_factory: Callable | None = None, progress: bool = True,
                 command: str = "", stop_after: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train a named preset on the Shakespeare corpus and save the model in `out`.

    Writes `out/train_state.safetensors` (the resumable checkpoint) during training, then the
    model (`minillm.save`) and `out/train_log.json` (command, hyper-parameters, history, the
    validation loss over the whole split, wall time). `step_fn_factory(model)` may supply
    another loss (distillation does).
    """
    from . import data

    cfg = cfg or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = data.shakespeare_tokenizer()
    train_ids, val_ids = data.encode_split("train", tok), data.encode_split("val", tok)
    config = GPTConfig.preset(preset, vocab_size=tok.vocab_size)
    model = GPT(config, seed=cfg.seed, tokenizer=tok)
    step_fn = step_fn_factory(model) if step_fn_factory else None
    t0 = time.time()
    history = train(model, train_ids, val_ids, cfg, checkpoint=out / "train_state.safetensors",
                    resume=resume, step_fn=step_fn, progress=progress, stop_after=stop_after,
                    desc=f"train {preset}")  # fmt: skip
    log: dict[str, Any] = {"preset": preset, "command": command, "model_config": config.to_dict(),
                           "train_config": dataclasses.asdict(cfg), "history": history,
                           "wall_s_this_session": round(time.time() - t0, 1)}  # fmt: skip
    if stop_after is not None and stop_after < cfg.steps:
        return log
    log["val"] = evaluate(model, val_ids, progress=progress)
    from .io import save  # imported late: io is a sibling face of this function

    save(model, out)
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    return log


def distillation_step(config: GPTConfig, teacher: GPT, alpha: float = 0.25,
                      temperature: float = 1.0) -> Callable:  # fmt: skip
    """A `train` step function for knowledge distillation from `teacher`.

    Loss $\\alpha\\,\\mathrm{CE}(y, s) + (1-\\alpha)\\,T^2\\,\\mathrm{KL}(\\mathrm{softmax}(t/T)\\,\\|\\,
    \\mathrm{softmax}(s/T))$ (see `minillm.compress.distill`); the teacher's logits come from its
    inference forward, the student's gradient from the hand-written backward.
    """
    from .compress.distill import combined_loss

    if teacher.config.vocab_size != config.vocab_size:
        raise ValueError(f"teacher vocab_size {teacher.config.vocab_size} != student {config.vocab_size}")
    be = backends.get("numpy")

    def step(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
        t_logits = forward(teacher.params, teacher.config, x, None, be)  # (B, T, V)
        s_logits, _, caches = forward_train(params, config, x)
        loss, dlogits = combined_loss(s_logits, t_logits, y, alpha, temperature)
        return loss, backward(params, config, caches, np.asarray(dlogits, dtype=s_logits.dtype))

    return step
