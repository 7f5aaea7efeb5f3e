"""The documentation site: nav, offline assets, the hooks that generate pages, and the build.

Fast tests read mkdocs.yml and the files it names; `test_site_builds_strict` (marked slow) runs
`mkdocs build --strict` with a sample lesson and inspects the HTML it writes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ASSETS = DOCS / "assets"
MATHJAX = ASSETS / "mathjax"
HOOKS = DOCS / "hooks"
GENERATED_NAV = {"lessons/", "source/"}  # nav values that docs/hooks/ expand at build time

URL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'`)<>]*""", re.I)


def mkdocs_config() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads mkdocs.yml (pip install -e '.[docs]')")

    class Loader(yaml.SafeLoader):
        """SafeLoader that reads mkdocs' `!ENV [NAME, default]` tag as its default."""

    Loader.add_constructor("!ENV", lambda loader, node: loader.construct_sequence(node)[-1])
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506


def nav_values(nav) -> list[str]:
    """Every page or sentinel a nav names, depth first."""
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_values(value) if isinstance(value, list) else [value]
    return out


def load_hook(name: str):
    pytest.importorskip("mkdocs", reason="the docs hooks need mkdocs (pip install -e '.[docs]')")
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ## The nav


def test_every_docs_page_is_in_the_nav():
    listed = set(nav_values(mkdocs_config()["nav"]))
    pages = {p.name for p in DOCS.glob("*.md")}
    missing = sorted(pages - listed)
    assert not missing, f"docs pages missing from the nav in mkdocs.yml: {missing}"


def test_every_nav_entry_exists():
    values = nav_values(mkdocs_config()["nav"])
    absent = sorted(v for v in values if v not in GENERATED_NAV and not (DOCS / v).is_file())
    assert not absent, f"mkdocs.yml's nav names pages that do not exist in docs/: {absent}"
    assert len(values) == len(set(values)), f"a page is listed twice in the nav: {values}"


def test_generated_sections_are_wired():
    config = mkdocs_config()
    assert GENERATED_NAV <= set(nav_values(config["nav"]))
    assert {"docs/hooks/lessons.py", "docs/hooks/annotate.py"} <= set(config["hooks"])
    jupyter = next(p["mkdocs-jupyter"] for p in config["plugins"] if isinstance(p, dict) and "mkdocs-jupyter" in p)
    # Executed at build time, failing on errors, never from a stale cache, only real notebooks.
    assert jupyter["execute"] is True and jupyter["allow_errors"] is False and jupyter["cache"] is False
    assert jupyter["include"] == ["*.ipynb"]


def resolves(dotted: str) -> bool:
    """Whether `minillm.a.b.c` names something: the longest prefix that imports, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def test_api_page_names_modules_that_import():
    targets = re.findall(r"^:::\s*([\w.]+)", (DOCS / "api.md").read_text(encoding="utf-8"), re.M)
    assert targets, "docs/api.md has no ::: entries"
    broken = [target for target in targets if not resolves(target)]
    assert not broken, f"docs/api.md documents names that do not import: {broken}"


def test_prose_names_python_objects_that_exist():
    """Every `minillm.x.y` the README, the docs pages and the lesson sources mention imports."""
    assert resolves("minillm.bench.bench_decode") and not resolves("minillm.bench.bench_decoed")
    files = [ROOT / "README.md", *DOCS.glob("*.md"), *(ROOT / "lessons" / "_build").glob("*.py")]
    names = {(m[0], f.relative_to(ROOT)) for f in files
             for m in re.finditer(r"\bminillm(?:\.[A-Za-z_]\w*)+", f.read_text(encoding="utf-8"))}  # fmt: skip
    assert len(names) > 100, "the pattern no longer finds the names the prose mentions"
    broken = sorted(f"{where}: {name}" for name, where in names if not resolves(name))
    assert not broken, "names that do not exist:\n" + "\n".join(broken)


# ## Offline: nothing is fetched from another host


def test_config_and_own_assets_name_no_remote_url():
    config = mkdocs_config()
    assert config["theme"].get("font") is False, "theme.font must be false: Material loads Google Fonts otherwise"
    own = [ROOT / "mkdocs.yml"] + [
        p for p in ASSETS.rglob("*") if p.suffix in {".js", ".css", ".html"} and MATHJAX not in p.parents
    ]
    found = {p.relative_to(ROOT).as_posix(): URL.findall(p.read_text(encoding="utf-8")) for p in own}
    found = {k: v for k, v in found.items() if v}
    assert not found, f"remote URLs in the site's configuration or assets: {found}"
    # docs/assets/javascripts/mathjax.js typesets once, at page load: no instant navigation.
    assert "navigation.instant" not in config["theme"].get("features", [])
    scripts = list(config["extra_javascript"])
    assert scripts == ["assets/javascripts/mathjax.js", "assets/mathjax/tex-mml-chtml.js"], scripts
    for s in scripts + config["extra_css"]:
        assert (DOCS / s).is_file(), s


# The vendored bundle mentions a few hosts. MathJax replaces the speech-rule engine's jsdelivr
# defaults with "[mathjax]/sre/mathmaps", and only the accessibility explorer (not bundled, not
# enabled) would use them; the w3.org strings are XML namespaces. Anything else is new.
MATHJAX_KNOWN_URLS = {
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/2001/10/synthesis",
    "https://cdn.jsdelivr.net/npm/speech-rule-engine@",
    "https://cdn.jsdelivr.net/npm/sre-mathmaps-ie@",
    "https://cdn.jsdelivr.net/npm/wicked-good-xpath@1.3.0/dist/wgxpath.install.js",
    "https://www.mathjax.org",
}


def test_mathjax_is_vendored_whole():
    bundle = MATHJAX / "tex-mml-chtml.js"
    sha = re.search(r"sha256\(tex-mml-chtml.js\) = ([0-9a-f]{64})", (MATHJAX / "VENDORED.md").read_text())
    assert sha and hashlib.sha256(bundle.read_bytes()).hexdigest() == sha.group(1), "tex-mml-chtml.js was changed"
    urls = set(re.findall(r"https?://[a-zA-Z0-9./@_-]*", bundle.read_text(encoding="utf-8")))
    assert urls == MATHJAX_KNOWN_URLS, f"new URLs in the MathJax bundle: {sorted(urls - MATHJAX_KNOWN_URLS)}"
    fonts = {p.name for p in (MATHJAX / "output/chtml/fonts/woff-v2").glob("*.woff")}
    assert {"MathJax_Main-Regular.woff", "MathJax_Math-Italic.woff", "MathJax_Size1-Regular.woff"} <= fonts
    assert len(fonts) == 23
    config = (ASSETS / "javascripts/mathjax.js").read_text(encoding="utf-8")
    assert "jp-RenderedMarkdown" in config
    # MathJax finds its fonts next to its script; a fontURL set in the config is not resolved.
    assert not re.search(r"fontURL\s*:", config)


# ## The hooks


SAMPLE = '''"""A sample: $x$ is math.

>>> 1 + 1
2
"""

import numpy as np  # noqa: F401

# The first note,
# on two lines.
#
# A second paragraph of it.
x = 1  # a trailing comment stays in the code
s = "# not a comment"

y = 2
#
z = 3
# ------------------------------------------------
# After a ruler.
def f():
    # An indented note.
    return x
'''


def test_guarantees_page_names_tests_that_exist():
    """Every test the guarantees page cites is a test function in the file it names (a bare
    `test_...` after a `tests/...py::` reference is in that same file)."""
    rows = [line for line in (DOCS / "guarantees.md").read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    cited = 0
    for row in rows:
        path = None
        for ref in re.findall(r"`([^`]+)`", row.split("|")[-2] if row.count("|") >= 3 else ""):
            file, _, name = ref.rpartition("::")
            if file.startswith("tests/"):
                path = ROOT / file
            if name.startswith("test_") or ref.startswith("test_"):
                name = name or ref
                assert path is not None and path.exists(), f"{ref}: no tests/ file named before it in: {row[:80]}"
                assert re.search(rf"^def {re.escape(name)}\(", path.read_text(encoding="utf-8"), re.M), (
                    f"{name} is not a test in {path.relative_to(ROOT)}")
                cited += 1
    assert cited > 40


def test_annotate_splits_notes_from_code():
    annotate = load_hook("annotate")
    doc, sections = annotate.split(SAMPLE)
    assert doc.startswith("A sample: $x$ is math.")
    got = [("\n".join(s.note), [line.strip() for line in s.code if line.strip()]) for s in sections]
    assert got == [
        ("", ["import numpy as np  # noqa: F401"]),
        (
            "The first note,\non two lines.\n\nA second paragraph of it.",
            ["x = 1  # a trailing comment stays in the code", 's = "# not a comment"', "y = 2"],
        ),
        ("", ["z = 3"]),
        ("After a ruler.", ["def f():"]),
        ("An indented note.", ["return x"]),
    ]
    assert sections[1].first_line == 13


def test_annotate_page_renders_doctests_as_code(tmp_path):
    annotate = load_hook("annotate")
    module = tmp_path / "sample.py"
    module.write_text(SAMPLE, encoding="utf-8")
    annotate.ROOT = tmp_path  # render relative to the fixture's directory
    page = annotate.render_module(module)
    assert "# `sample.py`" in page
    assert "```python\n>>> 1 + 1\n2\n```" in page
    assert page.count('class="ann-row"') == 5
    assert '<span class="c1"># a trailing comment stays in the code</span>' in page


def test_annotate_covers_every_module():
    annotate = load_hook("annotate")
    modules = {p.relative_to(ROOT).as_posix() for p in annotate.modules()}
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "minillm").rglob("*.py")}
    assert modules == on_disk
    uris = [value for group in annotate.nav_entries(annotate.modules()) for value in nav_values([group])]
    assert uris[0] == "source/index.md" and "source/minillm/nn/gpt.md" in uris
    assert len(uris) == len(modules) + 1


def test_docstring_markdown():
    pytest.importorskip("griffe", reason="the API reference's docstring extension needs griffe (mkdocstrings)")
    docstrings = load_hook("docstrings")
    text = "Intro.\n>>> f(1)\n[0.5]\n\n$$a$$\n$$b$$\nEnd.\n\nExamples\n--------\n>>> g()\n1\n"
    assert docstrings.prepare_markdown(text) == (
        "Intro.\n\n```python\n>>> f(1)\n[0.5]\n```\n\n$$a$$\n\n$$b$$\n\nEnd.\n\nExamples\n--------\n>>> g()\n1"
    )


def test_lessons_hook_strips_remote_loaders():
    lessons = load_hook("lessons")

    class Page:
        class file:
            src_uri = "lessons/01_x.ipynb"

    html = (
        '<script src=""> </script>\n<script type="text/x-mathjax-config">MathJax.Hub.Config({});</script>\n'
        '<script type="module">\n  const m = (await import("https://cdnjs.cloudflare.com/mermaid.mjs"));\n</script>\n'
        '<script>document.addEventListener("clipboard-copy", f)</script><p>$x$</p>'
    )
    out = lessons.on_page_content(html, page=Page, config=None, files=None)
    assert "https://" not in out and "x-mathjax-config" not in out
    assert '<script>document.addEventListener("clipboard-copy", f)</script><p>$x$</p>' in out


# ## The build


SAMPLE_NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# A sample lesson\n\nMath: $e^{i\\pi} + 1 = 0$"},
        {
            "cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": "import minillm\nprint(2 * minillm.GPTConfig.preset('tiny').n_embd)",
        },
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}  # fmt: skip

REMOTE_LOAD = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\bsrc=["'](?:https?:)?//|<link\b[^>]*\bhref=["'](?:https?:)?//[^"']*["'][^>]*>"""
    r"""|@import\s+url\(["']?(?:https?:)?//|import\(["'](?:https?:)?//""",
    re.I,
)


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    for plugin in ("material", "mkdocs_jupyter", "mkdocstrings", "pymdownx"):
        pytest.importorskip(plugin, reason=f"{plugin} is not installed (pip install -e '.[docs]')")
    # A one-notebook lessons directory: the real lessons run under nbmake (they take minutes).
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    (lessons / "00_sample.ipynb").write_text(json.dumps(SAMPLE_NOTEBOOK), encoding="utf-8")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MINILLM_LESSONS_DIR": str(lessons)}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stderr[-6000:]}"

    # One annotated page per module, notes beside code.
    annotate = load_hook("annotate")
    for module in annotate.modules():
        rel = module.relative_to(ROOT).with_suffix("").as_posix()
        page = site / "source" / rel / "index.html"
        assert page.is_file(), f"no annotated page for {rel}"
    gpt = (site / "source/minillm/nn/gpt/index.html").read_text(encoding="utf-8")
    assert gpt.count('class="ann-row"') > 3 and 'class="ann-note"' in gpt and "arithmatex" in gpt
    assert (site / "source/index.html").is_file()

    # The lesson ran (its output is on the page) and its math is left for MathJax.
    import minillm

    lesson = (site / "lessons/00_sample/index.html").read_text(encoding="utf-8")
    assert f"<pre>{2 * minillm.GPTConfig.preset('tiny').n_embd}\n</pre>" in lesson
    assert "jp-RenderedMarkdown" in lesson and "$e^{i\\pi} + 1 = 0$" in lesson

    # Every docs page was built, and the API page has the model's reference.
    for md in DOCS.glob("*.md"):
        target = site / ("index.html" if md.stem == "index" else f"{md.stem}/index.html")
        assert target.is_file(), f"{md.name} was not built"
    assert "minillm.GPT" in (site / "api/index.html").read_text(encoding="utf-8")

    # Offline: no page loads a script, style, font or frame from another host; MathJax is local.
    remote = {}
    for html in site.rglob("*.html"):
        hits = REMOTE_LOAD.findall(html.read_text(encoding="utf-8"))
        if hits:
            remote[html.relative_to(site).as_posix()] = hits[:3]
    assert not remote, f"pages that load from another host: {remote}"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'src="assets/mathjax/tex-mml-chtml.js"' in index
    assert (site / "assets/mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()


def test_every_lesson_is_what_its_build_script_makes(tmp_path):
    """The notebooks are generated from `lessons/_build`: a cell edited in a notebook alone would
    be lost at the next rebuild (lesson 08 had drifted so), so each must equal its rebuild. The
    scripts run on a copy, writing next to it."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat builds the lessons (pip install -e '.[dev]')")
    build = tmp_path / "lessons" / "_build"
    build.mkdir(parents=True)
    for script in sorted((ROOT / "lessons" / "_build").glob("make_*.py")):
        (build / script.name).write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
        subprocess.run([sys.executable, str(build / script.name)], check=True, capture_output=True)
    committed = sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb"))
    assert sorted(p.name for p in (tmp_path / "lessons").glob("*.ipynb")) == committed
    for name in committed:
        ours, rebuilt = (nbformat.read(d / "lessons" / name, as_version=4) for d in (ROOT, tmp_path))
        assert [(c.cell_type, c.id, c.source) for c in ours.cells] == [
            (c.cell_type, c.id, c.source) for c in rebuilt.cells
        ], f"lessons/{name} differs from what lessons/_build makes: rebuild it"
