"""Model configuration: the handful of numbers that fix a GPT's shape.

A GPT-2-style model is fully described by five integers and one float:

- $V$ `vocab_size`   — number of token ids the model reads and predicts;
- $T$ `block_size`   — the longest context (number of learned positions);
- $L$ `n_layer`      — number of transformer blocks;
- $H$ `n_head`       — attention heads per block, each of width $C/H$;
- $C$ `n_embd`       — the residual stream width;
- $\\epsilon$ `layer_norm_epsilon` — added to the variance inside LayerNorm.

Its parameter count follows from them (tied LM head, biases included):

$$N = VC + TC + L\\,(12C^2 + 13C) + 2C,$$

since each block holds $W_{qkv}$ ($3C^2$), $W_o$ ($C^2$), $W_{fc}$ ($4C^2$), $W_{proj}$ ($4C^2$),
their biases ($3C + C + 4C + C$) and two LayerNorms ($4C$).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

# Named shapes. `teacher` and `student` are character-level Shakespeare models: their
# vocab_size is a placeholder that training replaces with the tokenizer's size.
PRESETS: dict[str, dict[str, Any]] = {
    # Small enough for gradient checks in float64 and millisecond tests.
    "tiny": dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=16),
    # The shipped Shakespeare teacher (about 1.8 M parameters).
    "teacher": dict(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=192),
    # About a quarter of the teacher's parameters: half the width, same depth.
    "student": dict(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=96),
    # The GPT-2 124M shape (Radford et al. 2019, "small").
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT-2-style model.

    Parameters
    ----------
    vocab_size : int
        Number of token ids ($V$).
    block_size : int
        Maximum context length ($T$), i.e. rows of the position embedding.
    n_layer : int
        Number of transformer blocks ($L$).
    n_head : int
        Attention heads per block ($H$); must divide `n_embd`.
    n_embd : int
        Width of the residual stream ($C$).
    layer_norm_epsilon : float
        The $\\epsilon$ inside every LayerNorm (GPT-2 uses 1e-5).
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        eps = self.layer_norm_epsilon
        if not isinstance(eps, (int, float)) or not (0 < eps < 1):
            raise ValueError(f"GPTConfig.layer_norm_epsilon must be in (0, 1), got {eps!r}")

    @property
    def head_size(self) -> int:
        """Width of one attention head, $C/H$."""
        return self.n_embd // self.n_head

    @property
    def n_params(self) -> int:
        """Parameter count $VC + TC + L(12C^2 + 13C) + 2C$ (tied LM head counted once)."""
        V, T, L, C = self.vocab_size, self.block_size, self.n_layer, self.n_embd
        return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named shape: ``tiny``, ``teacher``, ``student`` or ``gpt2``.

        Keyword arguments override single fields, e.g. ``preset("teacher", vocab_size=83)``.
        """
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"preset overrides {unknown} are not GPTConfig fields; allowed: {fields}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (what is stored in a checkpoint's JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Build from a dict, rejecting unknown or missing fields with a clear message."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"config has unknown fields {sorted(unknown)}; allowed: {sorted(fields)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise ValueError(f"config is missing fields {missing}; required: {required}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
