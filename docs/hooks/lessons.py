"""Lessons: the notebooks in `lessons/` become site pages, executed at build time.

The notebooks live outside `docs/` (they are stored with outputs stripped and run by
`pytest --nbmake lessons/` too), so this hook shows them to mkdocs:

- `on_config` expands the nav entry `Lessons: lessons/` into one entry per notebook (titled by
  the notebook's first `# ` heading), or drops it when there are no notebooks; it also puts the
  repository root on the kernels' `PYTHONPATH`, so `import minillm` works in a lesson without
  installing the package;
- `on_files` adds each `lessons/*.ipynb` as a file at `lessons/<name>.ipynb`, before
  mkdocs-jupyter's own `on_files` (priority 100 > 0) wraps it as a notebook page and executes it;
- `on_page_content` removes what nbconvert's template would fetch from a CDN: a MathJax 2
  loader (`<script src="">`, our vendored MathJax 3 typesets `.jp-RenderedMarkdown` instead) and
  the Mermaid loader;
- `on_serve` makes `mkdocs serve` rebuild when a notebook changes.

`MINILLM_LESSONS_DIR` points the hook at another directory named `lessons` (the docs tests use
it to build a sample notebook).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "lessons"
SENTINEL = "lessons/"

# Script elements that nbconvert's lab template emits and that would load code from elsewhere.
CDN_SCRIPTS = [
    re.compile(r'<script src="[^"]*">\s*</script>'),  # MathJax 2 (empty url: mkdocs-jupyter's default)
    re.compile(r'<script type="text/x-mathjax-config">.*?</script>', re.S),  # its MathJax 2 config
    re.compile(r'<script type="module">(?:(?!</script>).)*?mermaid.*?</script>', re.S),  # Mermaid loader
]


def lessons_dir() -> Path:
    return Path(os.environ.get("MINILLM_LESSONS_DIR", ROOT / "lessons"))


def notebooks() -> list[Path]:
    d = lessons_dir()
    return sorted(d.glob("*.ipynb")) if d.is_dir() else []


def title(path: Path) -> str:
    """The first Markdown `# ` heading of the notebook, else its file name."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            for line in source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def expand_nav(nav: list, sentinel: str, entries: list) -> list:
    """Replace every `{title: sentinel}` in a nav by `{title: entries}` (dropped when empty)."""
    out = []
    for item in nav:
        if isinstance(item, dict):
            ((key, value),) = item.items()
            if value == sentinel:
                if entries:
                    out.append({key: entries})
                continue
            if isinstance(value, list):
                item = {key: expand_nav(value, sentinel, entries)}
        out.append(item)
    return out


def on_config(config):
    if config.nav:
        entries = [{title(p): f"{PREFIX}/{p.name}"} for p in notebooks()]
        config.nav = expand_nav(config.nav, SENTINEL, entries)
    # The kernels that execute the notebooks inherit this environment.
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return config


@event_priority(100)
def on_files(files: Files, config) -> Files:
    # A real File whose src_dir is the lessons' parent (not File.generated): mkdocs-jupyter's
    # wrapper recomputes the source path from src_dir and src_uri.
    for p in notebooks():
        if p.parent.name != PREFIX:
            raise ValueError(f"MINILLM_LESSONS_DIR must be a directory named {PREFIX!r}, got {str(p.parent)!r}")
        files.append(File(f"{PREFIX}/{p.name}", src_dir=str(p.parent.parent), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_content(html: str, page, config, files) -> str:
    if page.file.src_uri.startswith(f"{PREFIX}/") and page.file.src_uri.endswith(".ipynb"):
        for pattern in CDN_SCRIPTS:
            html = pattern.sub("", html)
    return html


def on_serve(server, config, builder):
    if lessons_dir().is_dir():
        server.watch(str(lessons_dir()))
    return server
