"""Running a model in a narrow number format: emulated on the CPU by rounding.

A GPU or TPU computing in bfloat16 or float8 stores weights and activations in that format.
We emulate it with `FormatBackend(fmt)`: the NumPy backend with every weight rounded to `fmt`
once (`prepare`) and the output of every kernel — linear layers, LayerNorm, GELU, attention,
the LM head — rounded to `fmt` as it is produced (`minillm.hw.floats.round_to`). The arithmetic
*inside* a kernel stays float32, as on real hardware where products accumulate in a wider
register (float32 for bf16/fp8 tensor cores), so

$$y = \\mathrm{round}_{fmt}\\big(\\textstyle\\sum_k \\mathrm{round}_{fmt}(x_k)\\,\\mathrm{round}_{fmt}(w_k)\\big).$$

float8 formats on real hardware also carry a per-tensor *scale* so that values use the
format's range; this emulation applies none, which is what makes plain float8 costly here —
see `validation_loss_by_format` and lesson 09.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.numpy_ import NumpyBackend
from ..kinds import is_kind
from .floats import FORMATS, round_to


class FormatBackend(NumpyBackend):
    """The NumPy backend with weights and activations rounded to `fmt` (see module docstring)."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
        self.fmt = fmt
        self.name = f"numpy:{fmt}"

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        if any(is_kind(w) for w in params.values()):
            raise ValueError("FormatBackend rounds dense float weights; dequantize weight kinds first")
        return {k: round_to(w, self.fmt) for k, w in params.items()}

    def linear(self, x: np.ndarray, w: Any, b: np.ndarray | None) -> np.ndarray:
        return round_to(super().linear(x, w, b), self.fmt)

    def layer_norm(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
        return round_to(super().layer_norm(x, w, b, eps), self.fmt)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return round_to(super().gelu(x), self.fmt)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, n_keys: int | None = None) -> np.ndarray:
        return round_to(super().attention(q, k, v, n_keys), self.fmt)

    def lm_head(self, x: np.ndarray, wte: Any) -> np.ndarray:
        return round_to(super().lm_head(x, wte), self.fmt)


def validation_loss_by_format(model: Any, data: np.ndarray, formats: tuple[str, ...] = (
        "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"),
        max_tokens: int | None = 20_000) -> dict[str, float]:  # fmt: skip
    """Validation loss of `model` with weights and activations in each format."""
    from ..train import evaluate

    return {fmt: evaluate(model, data, backend=FormatBackend(fmt), max_tokens=max_tokens)["loss"] for fmt in formats}
