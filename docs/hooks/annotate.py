"""Annotated source: one page per module of `minillm/`, comments beside the code they explain.

The habit is labml's annotated implementations. A module reads as a short essay:

- the **module docstring** is rendered as Markdown at the top of the page (math allowed);
- every block of full-line `#` comments becomes a **note** in the left column, and the code it
  precedes (up to the next comment block) sits in the right column;
- a bare `#` line after code starts a new section (a new row with an empty note); inside a
  comment block it is a paragraph break; a ruler line such as `# -----` also starts a section.

Trailing comments (`x = a @ w  # (B, T, C)`), pragmas (`# noqa`, `# type:`, `# fmt:`) and
docstrings of functions stay in the code. Comments are found with `tokenize`, so a `#` inside a
string is never mistaken for one.

mkdocs calls three functions of this file (it is registered under `hooks:` in mkdocs.yml):

- `on_config` expands the nav entry `Annotated source: source/` into one entry per module;
- `on_files` adds the generated pages `source/index.md` and `source/minillm/<module>.md` as
  in-memory files, so nothing is written into `docs/`;
- `on_serve` makes `mkdocs serve` rebuild when a module changes.

The pages are ordinary Markdown (the `md_in_html` extension renders the notes), so they keep
the theme, search and MathJax.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "minillm"
PREFIX = "source"  # URL prefix of the generated pages
SENTINEL = "source/"  # the nav value that on_config replaces by the generated entries

PRAGMA = re.compile(r"#\s*(noqa|type:|fmt:|pragma|ruff:|pyright:|mypy:|isort:)")
RULER = re.compile(r"[-=#*~_ ]{3,}")


# ## Splitting a module into sections


@dataclass
class Section:
    note: list[str] = field(default_factory=list)  # Markdown lines
    code: list[str] = field(default_factory=list)  # source lines
    first_line: int = 0  # 1-based line number of the first code line

    def has_code(self) -> bool:
        return any(line.strip() for line in self.code)


def full_line_comments(source: str) -> set[int]:
    """Line numbers (1-based) whose only token is a comment (pragmas excluded)."""
    lines = source.splitlines()
    found = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        row, col = tok.start
        line = lines[row - 1]
        if line[:col].strip() or PRAGMA.match(tok.string) or (row == 1 and tok.string.startswith("#!")):
            continue
        found.add(row)
    return found


def module_docstring(source: str) -> tuple[str | None, int]:
    """The module docstring (its value, as Python sees it) and the last line it occupies."""
    tree = ast.parse(source)
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
        node = tree.body[0]
        if isinstance(node.value.value, str):
            return ast.get_docstring(tree, clean=True), node.end_lineno or node.lineno
    return None, 0


def split(source: str) -> tuple[str | None, list[Section]]:
    """The module docstring and the (note, code) sections of everything after it."""
    doc, doc_end = module_docstring(source)
    comments = full_line_comments(source)
    lines = source.splitlines()
    sections = [Section()]

    def new_section() -> Section:
        sections.append(Section())
        return sections[-1]

    for number, line in enumerate(lines, start=1):
        if number <= doc_end:
            continue
        cur = sections[-1]
        if number not in comments:
            if not cur.code and not line.strip():
                continue  # blank lines before any code: a gap between notes, handled below
            if not cur.code:
                cur.first_line = number
            cur.code.append(line)
            continue
        text = line.strip()[1:]
        text = text[1:] if text.startswith(" ") else text
        if not text.strip():  # a bare "#"
            if cur.has_code():
                new_section()
            elif cur.note:
                cur.note.append("")
        elif RULER.fullmatch(text.strip()):  # "# -------": a section break, not a Markdown rule
            if cur.has_code() or cur.note:
                new_section()
        else:
            if cur.has_code():
                cur = new_section()
            elif cur.code:  # only blank lines since the last comment: a paragraph break
                cur.code.clear()
                cur.note.append("")
            cur.note.append(text)

    for s in sections:
        while s.code and not s.code[-1].strip():
            s.code.pop()
        while s.note and not s.note[-1].strip():
            s.note.pop()
        while s.note and not s.note[0].strip():
            s.note.pop(0)
    return doc, [s for s in sections if s.note or s.has_code()]


# ## Rendering a page

FORMATTER = HtmlFormatter(cssclass="highlight", wrapcode=True)
LEXER = PythonLexer()


def _sibling(name: str):
    # Hooks are loaded by path, not as a package: import a sibling file the same way.
    spec = importlib.util.spec_from_file_location(f"minillm_docs_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# The same rules as the API reference: `>>>` sessions become ```python blocks, not nested quotes,
# and each `$$` block is a paragraph of its own.
prepare_markdown = _sibling("docstrings").prepare_markdown


def code_html(lines: list[str]) -> str:
    # Pygments' classes are the ones pymdownx.highlight emits, so the theme colours them.
    return highlight("\n".join(lines) + "\n", LEXER, FORMATTER).strip()


def render_module(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    source = path.read_text(encoding="utf-8")
    doc, sections = split(source)
    n_lines = len(source.splitlines())
    parts = [
        "---\nhide:\n  - toc\n---\n",
        f"# `{rel}`\n",
        f'<div class="annotated" markdown="1">\n\n<p class="ann-meta">{n_lines} lines · '
        f"generated from the source at build time · comments on the left, code on the right</p>\n",
    ]
    if doc:
        parts.append(f'<div class="ann-doc" markdown="1">\n\n{prepare_markdown(doc)}\n\n</div>\n')
    for s in sections:
        note = "\n".join(s.note)
        anchor = f"L{s.first_line}" if s.first_line else ""
        parts.append(
            f'<div class="ann-row" markdown="1"{f" id={anchor!r}" if anchor else ""}>\n'
            f'<div class="ann-note" markdown="1">\n\n{prepare_markdown(note)}\n\n</div>\n'
            f'<div class="ann-code" markdown="0">{code_html(s.code) if s.has_code() else ""}</div>\n'
            "</div>\n"
        )
    parts.append("</div>\n")
    return "\n".join(parts)


def summary(path: Path) -> str:
    doc, _ = module_docstring(path.read_text(encoding="utf-8"))
    first = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    return first.replace("|", r"\|")


# ## Which modules, under which names


def modules() -> list[Path]:
    """Every module of the package: top-level ones first, then each subpackage."""
    found = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(found, key=lambda p: (len(p.relative_to(PACKAGE).parts) > 1, p.relative_to(PACKAGE).parts))


def page_uri(path: Path) -> str:
    return f"{PREFIX}/{path.relative_to(ROOT).with_suffix('.md').as_posix()}"


def render_index(paths: list[Path]) -> str:
    rows = [
        f"| [`{p.relative_to(ROOT).as_posix()}`]({Path(page_uri(p)).relative_to(PREFIX).as_posix()}) "
        f"| {summary(p)} |"
        for p in paths
    ]
    return (
        "# Annotated source\n\n"
        "Every module of `minillm/`, generated from the source at build time: the module docstring "
        "on top, then each block of comments beside the code it explains (labml style). "
        "The comments are the explanation; the code on the right is exactly what runs.\n\n"
        "| module | idea |\n|---|---|\n" + "\n".join(rows) + "\n"
    )


def nav_entries(paths: list[Path]) -> list:
    groups: dict[str, list] = {}
    for p in paths:
        package = ".".join(p.relative_to(ROOT).parts[:-1])
        groups.setdefault(package, []).append({p.name: page_uri(p)})
    return [{"Overview": f"{PREFIX}/index.md"}] + [{name: items} for name, items in groups.items()]


def expand_nav(nav: list, sentinel: str, entries: list) -> list:
    """Replace every `{title: sentinel}` in a nav by `{title: entries}` (dropped when empty)."""
    out = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if value == sentinel:
                if entries:
                    out.append({title: entries})
                continue
            if isinstance(value, list):
                item = {title: expand_nav(value, sentinel, entries)}
        out.append(item)
    return out


# ## mkdocs events


def on_config(config):
    if config.nav:
        config.nav = expand_nav(config.nav, SENTINEL, nav_entries(modules()))
    return config


@event_priority(50)
def on_files(files: Files, config) -> Files:
    paths = modules()
    files.append(File.generated(config, f"{PREFIX}/index.md", content=render_index(paths)))
    for p in paths:
        files.append(File.generated(config, page_uri(p), content=render_module(p)))
    return files


def on_serve(server, config, builder):
    server.watch(str(PACKAGE))
    return server


if __name__ == "__main__":  # preview one page: python docs/hooks/annotate.py minillm/nn/gpt.py
    print(render_module(ROOT / sys.argv[1]))
