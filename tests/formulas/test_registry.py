"""Every display formula in the docs is named, and every name has a test.

The convention (CONTRACT): each `$$ ... $$` block on a page `docs/*.md` is preceded by a line

    <!-- formula: some-id -->

(ids: lowercase letters, digits, dots and dashes, unique across the docs; blank lines between
the marker and the formula are tolerated), and some test in `tests/formulas/` carries
`@pytest.mark.formula("some-id")` and checks the formula against an independent computation.

This file reads the pages and the tests as text (Markdown lines, Python AST), so it needs
nothing but the standard library and fails with the page and line of each problem.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FORMULA_TESTS = Path(__file__).resolve().parent

MARKER = re.compile(r"^\s*<!--\s*formula:\s*(.*?)\s*-->\s*$")
VALID_ID = re.compile(r"[a-z0-9][a-z0-9.-]*")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+).+?\1")


@dataclass(frozen=True)
class Formula:
    page: str  # e.g. "docs/quantization.md"
    line: int  # 1-based line of the opening $$
    id: str | None  # None when no marker precedes it

    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Marker:
    page: str
    line: int
    id: str


def scan_page(path: Path, root: Path = ROOT) -> tuple[list[Formula], list[Marker]]:
    """The display formulas of one Markdown page, and the markers that name none (orphans)."""
    page = path.relative_to(root).as_posix()
    formulas: list[Formula] = []
    pending: Marker | None = None  # the last marker, until the next non-blank line
    orphans: list[Marker] = []
    fence: str | None = None
    in_math = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = FENCE.match(line)
        if fence is not None:  # inside a code block: nothing is math
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if in_math:
            in_math = CODE_SPAN.sub("", line).count("$$") % 2 == 0
            continue
        if m:
            fence = m.group(1)
            if pending:
                orphans.append(pending)
                pending = None
            continue
        if not line.strip():
            continue
        marker = MARKER.match(line)
        if marker:
            if pending:
                orphans.append(pending)
            pending = Marker(page, number, marker.group(1))
            continue
        n_dollars = CODE_SPAN.sub("", line).count("$$")
        if n_dollars:
            # Each $$ pair on the line is one display formula; only the first can carry the marker.
            for k in range((n_dollars + 1) // 2):
                formulas.append(Formula(page, number, pending.id if (pending and k == 0) else None))
            pending = None
            in_math = n_dollars % 2 == 1
            continue
        if pending:
            orphans.append(pending)
            pending = None
    if pending:
        orphans.append(pending)
    return formulas, orphans


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def all_formulas() -> tuple[list[Formula], list[Marker]]:
    formulas, orphans = [], []
    for path in doc_pages():
        f, o = scan_page(path)
        formulas += f
        orphans += o
    return formulas, orphans


def formula_marks() -> dict[str, list[str]]:
    """Formula id -> the tests (`file::function`) that carry `pytest.mark.formula(id)`.

    Any call `<...>.mark.formula("id")` counts: as a decorator, in `pytestmark`, or in
    `pytest.param(..., marks=...)`; the enclosing function (if any) names the test.
    """
    marks: dict[str, list[str]] = {}
    for path in sorted(FORMULA_TESTS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        owner: dict[ast.AST, str] = {}
        for node in ast.walk(tree):  # breadth first: the outermost function names a node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for child in ast.walk(node):
                    owner.setdefault(child, node.name)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            func = node.func
            if func.attr == "formula" and isinstance(func.value, ast.Attribute) and func.value.attr == "mark":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        name = owner.get(node, "<module>")
                        marks.setdefault(arg.value, []).append(f"{path.relative_to(ROOT).as_posix()}::{name}")
    return marks


# ## The checks


def test_the_scanner_reads_formulas_and_markers(tmp_path):
    # Fixture: a page with every case the scanner must tell apart.
    page = tmp_path / "page.md"
    page.write_text(
        "Inline $x$ and `$$code$$` are not display math.\n"
        "<!-- formula: a.one -->\n"
        "$$x = 1$$\n"
        "\n"
        "<!-- formula: a.two -->\n"
        "\n"
        "$$\n"
        "y = 2\n"
        "$$\n"
        "```python\n"
        "$$ in code\n"
        "```\n"
        "$$z = 3$$\n"
        "<!-- formula: a.orphan -->\n"
        "Some prose.\n",
        encoding="utf-8",
    )
    formulas, orphans = scan_page(page, root=tmp_path)
    assert [(f.line, f.id) for f in formulas] == [(3, "a.one"), (7, "a.two"), (13, None)]
    assert [(o.line, o.id) for o in orphans] == [(14, "a.orphan")]


def test_every_display_formula_has_an_id():
    formulas, _ = all_formulas()
    missing = [f.where() for f in formulas if f.id is None]
    assert not missing, (
        "display formulas ($$ blocks) without a `<!-- formula: id -->` line just above them: "
        + ", ".join(missing)
    )


def test_every_marker_names_a_formula():
    _, orphans = all_formulas()
    assert not orphans, "formula markers not followed by a $$ block: " + ", ".join(
        f"{o.page}:{o.line} ({o.id})" for o in orphans
    )


def test_formula_ids_are_well_formed_and_unique():
    formulas, _ = all_formulas()
    bad = [f"{f.where()} {f.id!r}" for f in formulas if f.id is not None and not VALID_ID.fullmatch(f.id)]
    assert not bad, "formula ids must be lowercase letters, digits, dots and dashes: " + ", ".join(bad)
    counts = Counter(f.id for f in formulas if f.id is not None)
    duplicated = {
        i: [f.where() for f in formulas if f.id == i] for i, n in counts.items() if n > 1
    }
    assert not duplicated, f"formula ids used more than once: {duplicated}"


def test_every_formula_has_a_test():
    formulas, _ = all_formulas()
    marks = formula_marks()
    untested = [f"{f.id} ({f.where()})" for f in formulas if f.id is not None and f.id not in marks]
    assert not untested, (
        "formulas with no test carrying @pytest.mark.formula(id) in tests/formulas/: " + ", ".join(untested)
    )


def test_every_formula_test_names_a_documented_formula():
    formulas, _ = all_formulas()
    documented = {f.id for f in formulas}
    stale = {i: tests for i, tests in formula_marks().items() if i not in documented}
    assert not stale, f"tests name formula ids that no docs page uses (renamed or removed?): {stale}"
