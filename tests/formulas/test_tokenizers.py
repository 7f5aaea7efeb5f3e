"""Formulas of docs/tokenizers.md, each recomputed independently of minillm.tokenizer."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.tokenizer import GPT2Tokenizer, bytes_to_unicode


@pytest.mark.formula("tokenizers.bytes-to-unicode")
def test_bytes_to_unicode_formula():
    P = [*range(33, 127), *range(161, 173), *range(174, 256)]
    by_formula = {b: chr(b) if b in P else chr(256 + sum(1 for b2 in range(b) if b2 not in P)) for b in range(256)}
    assert bytes_to_unicode() == by_formula
    # P is exactly the bytes whose Latin-1 character is visible: printable and not a space.
    assert P == [b for b in range(256) if chr(b).isprintable() and not chr(b).isspace()]


def merge_by_formula(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """The doc's rule: argmin-rank adjacent pair, every occurrence replaced left to right.

    The replacement is a regex substitution over the symbols joined by NUL, a mechanism
    unrelated to the tokenizer's list walk.
    """
    while True:
        pairs = [(ranks[p], p) for p in zip(word, word[1:], strict=False) if p in ranks]
        if not pairs:
            return word
        _, (a, b) = min(pairs)
        s = "\0" + "\0".join(word) + "\0"
        s = re.sub(f"(?<=\0){re.escape(a)}\0{re.escape(b)}(?=\0)", a + b, s)
        word = s.strip("\0").split("\0")


CORPORA = st.text(alphabet="abc de", min_size=1, max_size=80)


@pytest.mark.formula("tokenizers.bpe-merge")
@settings(max_examples=100, deadline=None)
@given(CORPORA, st.integers(0, 25), st.text(alphabet="abcde", min_size=1, max_size=20))
def test_bpe_merge_formula(corpus, n_merges, word):
    tok = GPT2Tokenizer.train(corpus, n_merges, special_tokens=())
    ranks = {pair: r for r, pair in enumerate(tok.merges)}
    assert tok.bpe(word) == merge_by_formula(list(word), ranks)


@pytest.mark.formula("tokenizers.bpe-merge")
def test_bpe_merge_formula_hand_worked():
    # ranks: (a,a)=0, (aa,a)=1. "aaaaa": (a,a) everywhere -> aa aa a; then (aa,a) -> aa aaa.
    vocab = {**{s: b for b, s in bytes_to_unicode().items()}, "aa": 256, "aaa": 257}
    tok = GPT2Tokenizer(vocab, [("a", "a"), ("aa", "a")])
    assert tok.bpe("aaaaa") == ["aa", "aaa"] == merge_by_formula(list("aaaaa"), tok.ranks)
