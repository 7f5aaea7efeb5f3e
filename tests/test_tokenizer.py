"""Tokenizers: hand-worked examples, round trips, errors, and oracles (`regex`, transformers)."""

from __future__ import annotations

import json
import re
import sys
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.tokenizer import (
    GPT2_SPLIT_PATTERN,
    CharTokenizer,
    GPT2Tokenizer,
    bytes_to_unicode,
    gpt2_pretokenize,
    tokenizer_from_json,
    tokenizer_to_json,
)

CORPUS = (
    "the cat sat on the mat. The café served crème brûlée; 日本語 and 日本 again. "
    "🙂🙂 Hello hello, it's 1234 numbers 12 34.\n\nI'm sure they're here, we've seen it.\n"
) * 3

# Characters around which GPT-2's pre-tokenizer has decisions to make.
TRICKY = list("aZ sS tT'1 \n\t!?._-½²Ⅻé日🙂\x1c\x1f\xa0\u2003\u0301\u200b") + ["'s", "'ll", "  "]


def byte_vocab() -> dict[str, int]:
    """The 256 byte symbols with id = byte value."""
    return {s: b for b, s in bytes_to_unicode().items()}


@pytest.fixture(scope="module")
def bpe() -> GPT2Tokenizer:
    return GPT2Tokenizer.train(CORPUS, 80)


def write_files(tok: GPT2Tokenizer, directory) -> None:
    (directory / "vocab.json").write_text(tok.to_vocab_json(), encoding="utf-8")
    (directory / "merges.txt").write_text(tok.to_merges_txt(), encoding="utf-8")


# ------------------------------------------------------------------------------------------
# CharTokenizer
def test_char_from_text_is_sorted_unique_and_encodes_by_index():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw" and tok.vocab_size == 8 == len(tok)
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([3, 2, 4, 4, 5]) == "hello"
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_char_decode_accepts_numpy_integers():
    tok = CharTokenizer("abc")
    assert tok.decode(np.array([2, 0, 1], dtype=np.int64)) == "cab"
    assert tok.decode(np.array([2, 0], dtype=np.uint8)) == "ca"
    assert tok.decode([np.int32(1), 2]) == "bc"


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=30), st.data())
def test_char_round_trip(alphabet, data):
    tok = CharTokenizer.from_text(alphabet)
    text = data.draw(st.text(alphabet=sorted(set(alphabet)), max_size=50))
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_characters_are_named_with_position():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError, match=r"2 character\(s\).*'é' at position 1, '日' at position 4"):
        tok.encode("aé b日")


@pytest.mark.parametrize(
    "ids, match",
    [
        ([0, 3], r"ids\[1\] = 3 is not a token id; allowed: integers in \[0, 3\)"),
        ([-1], r"ids\[0\] = -1 is not a token id"),
        ([1.0], r"ids\[0\] = 1.0 \(float\) is not an integer"),
        ([True], r"ids\[0\] = True \(bool\) is not an integer"),
        ("ab", r"ids must be a sequence of ints, got str"),
        (5, r"ids must be a sequence of ints, got int"),
        (np.array([[0, 1]]), r"ids must be 1-D, got an array of shape \(1, 2\)"),
        (np.array([0.0, 1.0]), r"ids must be integers, got an array of dtype float64"),
    ],
)
def test_char_decode_rejects_bad_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer("abc").decode(ids)


@pytest.mark.parametrize(
    "chars, error, match",
    [
        ("", ValueError, "at least one character"),
        ("aba", ValueError, r"distinct: 'a' appears at positions 0 and 2"),
        (["a", "bc"], ValueError, r"chars\[1\] = 'bc' must be a single character"),
        (b"ab", TypeError, "chars must be a str"),
    ],
)
def test_char_constructor_validates(chars, error, match):
    with pytest.raises(error, match=match):
        CharTokenizer(chars)


def test_char_json_round_trip():
    tok = CharTokenizer.from_text("To be, or not to be: 日本 🙂\n")
    back = tokenizer_from_json(json.loads(json.dumps(tokenizer_to_json(tok))))
    assert isinstance(back, CharTokenizer) and back == tok
    with pytest.raises(ValueError, match="keys type, chars"):
        CharTokenizer.from_dict({"type": "char", "chars": ["a"], "extra": 1})


# ------------------------------------------------------------------------------------------
# bytes_to_unicode
def test_bytes_to_unicode_table():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    # Printable Latin-1 bytes map to themselves, the 68 others to U+0100.. in byte order.
    same = [b for b in range(256) if table[b] == chr(b)]
    moved = [b for b in range(256) if table[b] != chr(b)]
    assert len(same) == 188 and len(moved) == 68
    assert [table[b] for b in moved] == [chr(256 + k) for k in range(68)]
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert table[0xAD] == "Ń"  # the soft hyphen is not visible, so it moves too
    # Every symbol is visible: no whitespace, no control characters.
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    table[0] = "x"  # the caller's copy only
    assert bytes_to_unicode()[0] == "Ā"


# ------------------------------------------------------------------------------------------
# Pre-tokenization
@pytest.mark.parametrize(
    "text, pieces",
    [
        ("Hello world", ["Hello", " world"]),
        ("Hello world, it's 2024!", ["Hello", " world", ",", " it", "'s", " 2024", "!"]),
        # A run of spaces gives all but the last, which sticks to the next word.
        ("a   b", ["a", "  ", " b"]),
        ("a \n\n b", ["a", " \n\n", " b"]),
        ("end  ", ["end", "  "]),
        # Contractions are lowercase-only in GPT-2.
        ("I'M they're we'll", ["I", "'", "M", " they", "'re", " we", "'ll"]),
        # \p{N} holds other numerics that \d lacks: '½', '²', 'Ⅻ' group with digits.
        ("x½ 1½ ²Ⅻ", ["x", "½", " 1½", " ²Ⅻ"]),
        # A combining accent (Mn) is neither letter nor number: decomposed é splits.
        ("cafe\u0301", ["cafe", "\u0301"]),
        # U+001C is not White_Space for `regex` (Python's \s says it is).
        ("\x1c!", ["\x1c!"]),
        ("日本語 🙂🙂", ["日本語", " 🙂🙂"]),
    ],
)
def test_pretokenize_examples(text, pieces):
    assert gpt2_pretokenize(text) == pieces
    assert "".join(pieces) == text


def test_naive_letter_class_would_be_wrong():
    # Why we build \p{L} from unicodedata: Python's [^\W\d_] also matches non-decimal numbers.
    assert re.fullmatch(r"[^\W\d_]", "½") and unicodedata.category("½") == "No"
    assert re.fullmatch(r"\s", "\x1c")


def _all_assigned() -> str:
    return "".join(chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) not in ("Cn", "Cs"))


def test_unicode_classes_match_regex_module_on_every_assigned_code_point():
    regex = pytest.importorskip("regex", reason="the `regex` module is the oracle for \\p{L}")
    from minillm.tokenizer import _WHITE_SPACE, _category_ranges

    L, N = _category_ranges()
    text = _all_assigned()
    for ours, theirs in [(f"[{L}]", r"\p{L}"), (f"[{N}]", r"\p{N}"), (f"[{_WHITE_SPACE}]", r"\s")]:
        assert re.findall(ours, text) == regex.findall(theirs, text), theirs


def _assigned(c: str) -> bool:
    # Code points unassigned in this Python's Unicode may be letters in `regex`'s newer one.
    return unicodedata.category(c) not in ("Cn", "Cs")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(TRICKY), st.characters().filter(_assigned)), max_size=40).map("".join))
def test_pretokenize_matches_regex_module(text):
    regex = pytest.importorskip("regex", reason="the `regex` module is the oracle")
    assert gpt2_pretokenize(text) == regex.findall(GPT2_SPLIT_PATTERN, text)


# ------------------------------------------------------------------------------------------
# BPE merges
def test_bpe_merges_lowest_rank_first():
    vocab = {**byte_vocab(), "ab": 256, "bc": 257}
    assert GPT2Tokenizer(vocab, [("b", "c"), ("a", "b")]).bpe("abc") == ["a", "bc"]
    assert GPT2Tokenizer(vocab, [("a", "b"), ("b", "c")]).bpe("abc") == ["ab", "c"]


def test_bpe_merges_every_occurrence_left_to_right():
    tok = GPT2Tokenizer({**byte_vocab(), "aa": 256, "aaaa": 257}, [("a", "a"), ("aa", "aa")])
    assert tok.bpe("aaa") == ["aa", "a"]
    assert tok.bpe("aaaa") == ["aaaa"]
    assert tok.bpe("aaaaa") == ["aaaa", "a"]
    assert tok.bpe("ab") == ["a", "b"]  # no rank: nothing merges


def test_encode_hand_worked(bpe):
    tok = GPT2Tokenizer({**byte_vocab(), "Ġw": 256, "or": 257, "Ġwor": 258, "Ã©": 259},
                        [("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ã", "©")])  # fmt: skip
    # " world": bytes Ġ w o r l d -> Ġw, or -> Ġwor ; then l, d stay bytes.
    assert tok.encode(" world") == [258, ord("l"), ord("d")]
    # "é" is the two UTF-8 bytes C3 A9, shown as 'Ã' '©', merged into one token.
    assert tok.encode("é") == [259]
    # An emoji without merges is its four UTF-8 bytes.
    assert tok.encode("🙂") == list("🙂".encode())
    assert tok.decode([258, 259]) == " woré"


def test_train_learns_the_most_frequent_pair():
    tok = GPT2Tokenizer.train("ab ab ab cd", 2, special_tokens=())
    # Pre-tokens: 'ab', ' ab' x2, ' cd'; pair counts: (a,b) 3, (Ġ,a) 2, (Ġ,c) 1, (c,d) 1.
    assert tok.merges == [("a", "b"), ("Ġ", "ab")]
    assert tok.encoder["ab"] == 256 and tok.encoder["Ġab"] == 257
    assert tok.encode("ab ab cd") == [256, 257, ord(" "), ord("c"), ord("d")]


def test_special_tokens_are_matched_verbatim(bpe):
    eot = bpe.encoder["<|endoftext|>"]
    ids = bpe.encode("the end<|endoftext|>the")
    assert ids.count(eot) == 1 and bpe.decode(ids) == "the end<|endoftext|>the"
    assert bpe.encode("<|endoftext|>") == [eot]
    assert bpe.vocab_size == len(bpe) == eot + 1  # ids are contiguous, the special one last


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_arbitrary_text(text):
    tok = GPT2Tokenizer.train(CORPUS, 40)
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", ["café crème", "日本語と日本", "🙂 🙂🙂", "tab\there\n", "x½ ²"])
def test_round_trip_non_ascii(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)


def test_encode_is_cached_and_repeatable(bpe):
    first = bpe.encode("the cat sat on the mat")
    assert bpe._cache and bpe.encode("the cat sat on the mat") == first


def test_decode_partial_utf8_gives_replacement_character():
    tok = GPT2Tokenizer(byte_vocab(), [])
    assert tok.decode([0xC3]) == "\ufffd"
    assert tok.decode([0xC3, 0xA9]) == "é"


# ------------------------------------------------------------------------------------------
# Errors
def test_missing_byte_symbol_is_named():
    vocab = byte_vocab()
    del vocab["Ã"]
    tok = GPT2Tokenizer(vocab, [])
    with pytest.raises(ValueError, match=r"piece ' é' at position 1 needs the token 'Ã'.*not in the vocab"):
        tok.encode("a é")


def test_lone_surrogate_is_rejected():
    with pytest.raises(ValueError, match=r"text\[1\] = '\\ud800' cannot be encoded as UTF-8"):
        GPT2Tokenizer(byte_vocab(), []).encode("a\ud800")


@pytest.mark.parametrize(
    "vocab, merges, match",
    [
        ({"a": 0, "b": 0}, [], "ids must be distinct: 0 is both 'a' and 'b'"),
        ({"a": -1}, [], r"vocab\['a'\] = -1 must be an int >= 0"),
        ({"a b": 0}, [], "holds ' ', which is not a byte-to-unicode symbol"),
        ({"a": 0, "b": 1}, [("a", "b")], r"merges\[0\] = \('a', 'b'\): 'ab' is not in the vocab"),
        ({"a": 0, "ab": 1}, [("a", "b")], r"merges\[0\] = \('a', 'b'\): 'b' is not in the vocab"),
        ({"a": 0, "aa": 1}, [("a", "a"), ("a", "a")], r"merges\[1\].*repeats merges\[0\]"),
        ({"a": 0}, [("a",)], r"merges\[0\] = \('a',\) must be a pair"),
        ({}, [], "vocab must be a non-empty mapping"),
    ],
)
def test_constructor_validates(vocab, merges, match):
    with pytest.raises(ValueError, match=match):
        GPT2Tokenizer(vocab, merges)


def test_decode_rejects_ids_not_in_vocab():
    tok = GPT2Tokenizer({"a": 0, "b": 5}, [])
    assert tok.vocab_size == 6 and tok.decode([5, 0]) == "ba"
    with pytest.raises(ValueError, match=r"ids\[1\] = 3 is not a token id; allowed: ids of the vocab"):
        tok.decode([0, 3])


def test_files_round_trip_and_errors(bpe, tmp_path):
    write_files(bpe, tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    assert GPT2Tokenizer.from_directory(tmp_path) == bpe
    assert GPT2Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt") == bpe

    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nbad\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt, line 3: 'bad' must be two tokens"):
        GPT2Tokenizer.from_directory(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json: must hold a JSON object"):
        GPT2Tokenizer.from_directory(tmp_path)
    (tmp_path / "vocab.json").write_bytes(b'{"a": 0')
    with pytest.raises(ValueError, match="vocab.json: not a valid UTF-8 JSON"):
        GPT2Tokenizer.from_directory(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no merges.txt"):
        GPT2Tokenizer.from_directory(tmp_path)


def test_gpt2_json_round_trip(bpe):
    back = tokenizer_from_json(json.loads(json.dumps(tokenizer_to_json(bpe))))
    assert isinstance(back, GPT2Tokenizer) and back == bpe
    assert back.encode(CORPUS) == bpe.encode(CORPUS)


@pytest.mark.parametrize(
    "d, match",
    [
        ({"format_version": 2, "type": "char", "chars": ["a"]}, "format_version must be 1"),
        ({"format_version": 1, "type": "sentencepiece"}, "type 'sentencepiece' is unknown"),
        ([1], "must be a JSON object"),
    ],
)
def test_tokenizer_from_json_errors(d, match):
    with pytest.raises(ValueError, match=match):
        tokenizer_from_json(d)


def test_tokenizer_to_json_rejects_other_objects():
    with pytest.raises(TypeError, match="CharTokenizer or a GPT2Tokenizer, got dict"):
        tokenizer_to_json({})


# ------------------------------------------------------------------------------------------
# Oracle: Hugging Face transformers' GPT2Tokenizer on the same vocab.json + merges.txt
REFERENCE_TEXTS = [
    "the cat sat on the mat",
    "Hello world, it's 2024! They're here; we'll see.",
    "café crème brûlée, 日本語 and 日本, 🙂🙂 🙂",
    "  spaces   \n\n x\t\ttabs  ",
    "<|endoftext|>the end<|endoftext|>",
    "x½ 1½ ²Ⅻ numbers 12 34 1234",
    "cafe\u0301 \x1c! I'M IT'S",
    "",
]


@pytest.mark.reference
def test_matches_transformers_gpt2_tokenizer(bpe, tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="transformers is the oracle (run with /work/refenv/bin/python)"
    )
    write_files(bpe, tmp_path)
    hf = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    for text in REFERENCE_TEXTS + [CORPUS]:
        ids = bpe.encode(text)
        assert ids == hf.encode(text), text
        assert bpe.decode(ids) == hf.decode(ids, clean_up_tokenization_spaces=False) == text
