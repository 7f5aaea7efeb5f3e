"""pytest plugins for the whole repository: the `>>>` examples in the docs run as tests.

sybil collects `docs/*.md` and `README.md` (pytest's `testpaths` names both) and runs every
```python fenced block that starts with `>>>` as a doctest, top to bottom, in one namespace
per page. Fenced blocks without `>>>` are illustrations and are not run; an example that must
not run can be preceded by `<!-- skip: next -->`.

Without sybil installed (it is in the `dev` extra) the pages are simply not collected.

Tests marked `slow` (minutes: the docs build, long training runs) are skipped, saying so, unless
a `-m` expression names them: `pytest -m slow` runs them.
"""

from __future__ import annotations

import doctest

import pytest

try:
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser
except ImportError:  # pragma: no cover - only without the dev extra
    Sybil = None


if Sybil is not None:

    class DoctestBlockParser(PythonCodeBlockParser):
        """Only the ```python blocks that are `>>>` sessions; plain code blocks are not run."""

        def __call__(self, document):
            for region in super().__call__(document):
                if isinstance(region.parsed, doctest.Example):
                    yield region

    pytest_collect_file = Sybil(
        parsers=[
            DoctestBlockParser(doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE),
            SkipParser(),
        ],
        patterns=["docs/*.md", "README.md"],
    ).pytest()


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only when a `-m` expression names them (`-m slow`, `-m "slow or not slow"`)."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
