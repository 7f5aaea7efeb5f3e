"""Docstrings as Markdown: `>>>` sessions render as code, `$$` blocks stand alone.

Used twice: as a griffe extension for the API reference (registered in mkdocs.yml under the
mkdocstrings handler's `extensions:`), and by docs/hooks/annotate.py for module docstrings.

NumPy-style docstrings may show a doctest anywhere, not only under an `Examples` heading.
Outside that section griffe hands the text to Markdown as it is, where `>>>` becomes a nested
quote and an output such as `[0.0, 0.5]` looks like a reference link (which `mkdocs build
--strict` rejects). This extension wraps each such session in a ```python fence; `Examples`
sections are left to griffe, which already renders them as code.

A display formula is typeset only when its `$$ ... $$` is a paragraph of its own; docstrings
often stack several on consecutive lines, which arithmatex would read as one formula with `$$`
inside. `separate_display_math` puts a blank line around each.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PROMPT = re.compile(r"^\s*>>> ")
RULE = re.compile(r"^\s*-{3,}\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(text: str) -> str:
    """Wrap `>>>` sessions that are outside a fence and outside an `Examples` section."""
    lines = text.splitlines()
    out: list[str] = []
    section = indent = ""
    in_fence = in_session = False
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and RULE.match(lines[i + 1]) and line.strip():
            section = line.strip().lower()
        if FENCE.match(line) and not in_session:
            in_fence = not in_fence
        if in_session and not line.strip():
            out.append(indent + "```")
            in_session = False
        elif not in_fence and not in_session and section != "examples" and PROMPT.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            out += ["", indent + "```python"] if out and out[-1].strip() else [indent + "```python"]
            in_session = True
        out.append(line)
    if in_session:
        out.append(indent + "```")
    return "\n".join(out)


def separate_display_math(text: str) -> str:
    """Blank lines around every `$$ ... $$` block that starts a line (outside fences)."""
    out: list[str] = []
    in_fence = in_math = False
    for line in text.splitlines():
        if FENCE.match(line) and not in_math:
            in_fence = not in_fence
        starts_block = not in_fence and not in_math and line.lstrip().startswith("$$")
        if starts_block and out and out[-1].strip():
            out.append("")
        out.append(line)
        if not in_fence and (in_math or starts_block):
            in_math = (line.count("$$") % 2 == 1) != in_math
            if not in_math:
                out.append("")
    return "\n".join(out)


def prepare_markdown(text: str) -> str:
    return separate_display_math(fence_doctests(text))


class DocstringMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and (">>>" in obj.docstring.value or "$$" in obj.docstring.value):
            obj.docstring.value = prepare_markdown(obj.docstring.value)
