"""Numbers in the docs and README are generated from shipped artifacts and must be up to date."""

from __future__ import annotations

import pytest

from minillm import docgen


def test_generated_sections_match_the_shipped_artifacts():
    stale = docgen.update(check=True)
    assert not stale, f"run `python -m minillm.docgen` to refresh: {stale}"


def test_replace_section_round_trip():
    text = "a\n<!-- generated:x:start -->\nold\n<!-- generated:x:end -->\nb\n"
    new = docgen.replace_section(text, "x", "new body")
    assert docgen.section(new, "x") == "new body\n"
    assert new.startswith("a\n") and new.endswith("b\n")
    with pytest.raises(ValueError, match="generated:y"):
        docgen.section(text, "y")
