"""Tokenizers: text to token ids and back.

A language model reads integers. A tokenizer is the pair of maps
$\\mathrm{encode}: \\text{str} \\to \\{0..V-1\\}^n$ and $\\mathrm{decode}$ back, with the round trip
$\\mathrm{decode}(\\mathrm{encode}(s)) = s$ for every text $s$ it accepts. Two are written here.

**CharTokenizer** — one id per character of a fixed alphabet (the sorted distinct characters of a
corpus): $\\mathrm{encode}(s)_i = \\mathrm{index}(s_i)$. Tiny vocabulary, long sequences; what the
shipped Shakespeare models use.

**GPT2Tokenizer** — GPT-2's byte-level byte-pair encoding (Radford et al. 2019), reading the
standard ``vocab.json`` + ``merges.txt``. Encoding a text takes four steps:

1. *pre-tokenize*: split the text with GPT-2's regular expression into words, numbers,
   punctuation runs and whitespace (a leading space sticks to the next word: ``" world"``);
2. *bytes*: UTF-8 encode each piece, so that any text, in any script, is a byte sequence;
3. *byte to unicode*: map each of the 256 byte values to a printable character (``' '`` becomes
   ``'Ġ'``), so that a byte sequence is a string of symbols that never contains a real space;
4. *merge*: start from one symbol per byte and repeatedly merge the adjacent pair $(a, b)$ of
   lowest rank $r(a, b)$ (its line number in ``merges.txt``) into the symbol $ab$, until no
   adjacent pair has a rank; each final symbol's id is ``vocab[symbol]``.

Decoding concatenates the symbols of the ids, maps each character back to its byte and decodes
the bytes as UTF-8 (invalid sequences, e.g. half a character, become U+FFFD as in GPT-2).

The pre-tokenization regex uses ``\\p{L}`` (letters) and ``\\p{N}`` (numbers), which the standard
library's ``re`` lacks. We build both classes from ``unicodedata`` (general categories ``L*`` and
``N*``) and spell ``\\s`` as Unicode's ``White_Space`` property, which is what the ``regex``
module matches. The shortcut ``[^\\W\\d_]`` for letters would be wrong: Python's ``\\w`` also
holds the non-decimal numbers (``'½'``, ``'²'``, ``'Ⅻ'``), which GPT-2 puts in ``\\p{N}``; and
Python's ``\\s`` also holds the separators U+001C..U+001F, which ``regex`` does not. The one
remaining difference is the Unicode version: code points unassigned in the running Python's
``unicodedata`` (Unicode 14.0 for Python 3.11) but assigned later (e.g. new CJK ideographs)
count as punctuation here and as letters/numbers for a ``regex`` built on a newer Unicode.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CharTokenizer",
    "GPT2Tokenizer",
    "GPT2_SPLIT_PATTERN",
    "bytes_to_unicode",
    "gpt2_pretokenize",
    "tokenizer_to_json",
    "tokenizer_from_json",
]

# GPT-2's pre-tokenization pattern, as OpenAI's encoder.py writes it for the `regex` module.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Unicode's White_Space property (PropList.txt), stable since Unicode 6.3: what `regex` calls \s.
_WHITE_SPACE = "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"

END_OF_TEXT = "<|endoftext|>"


def _describe(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_ids(ids: Any, is_valid: Callable[[int], bool], allowed: str) -> list[int]:
    """Validate a 1-D sequence of token ids; return it as a list of Python ints.

    `is_valid(i)` tells whether the int `i` is a token id; `allowed` describes the valid ids.
    """
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got an array of shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got an array of dtype {ids.dtype}")
        ids = ids.tolist()
    elif isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(f"ids must be a sequence of ints, got {type(ids).__name__}: {_describe(ids)}")
    out = []
    for pos, i in enumerate(ids):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ValueError(
                f"ids[{pos}] = {_describe(i)} ({type(i).__name__}) is not an integer token id; allowed: {allowed}"
            )
        i = int(i)
        if not is_valid(i):
            raise ValueError(f"ids[{pos}] = {i} is not a token id; allowed: {allowed}")
        out.append(i)
    return out


# ------------------------------------------------------------------------------------------
class CharTokenizer:
    """One token per character: id ``k`` is ``chars[k]``.

    Parameters
    ----------
    chars : str or sequence of str
        The alphabet, in id order: distinct single characters (at least one).

    Examples
    --------
    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.chars, tok.encode("hole")
    ('ehlo', [2, 3, 1, 0])
    """

    def __init__(self, chars: str | Sequence[str]) -> None:
        if isinstance(chars, (bytes, bytearray)) or not isinstance(chars, (str, Sequence)):
            raise TypeError(f"chars must be a str or a sequence of str, got {type(chars).__name__}")
        chars = list(chars)
        if not chars:
            raise ValueError("chars must hold at least one character, got an empty alphabet")
        for k, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars[{k}] = {_describe(c)} must be a single character")
        self.stoi: dict[str, int] = {}
        for k, c in enumerate(chars):
            if c in self.stoi:
                raise ValueError(f"chars must be distinct: {c!r} appears at positions {self.stoi[c]} and {k}")
            self.stoi[c] = k
        self.itos: list[str] = chars

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted distinct characters of `text`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must not be empty: it defines the alphabet")
        return cls(sorted(set(text)))

    @property
    def chars(self) -> str:
        """The alphabet as one string, in id order."""
        return "".join(self.itos)

    @property
    def vocab_size(self) -> int:
        """Number of ids $V$ (the alphabet's size)."""
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, chars={_describe(self.chars, 40)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.itos == other.itos

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of `text`; ValueError naming any character not in the alphabet."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        stoi = self.stoi
        ids = [stoi.get(c, -1) for c in text]
        if -1 in ids:
            bad = [(pos, text[pos]) for pos, i in enumerate(ids) if i < 0]
            shown = ", ".join(f"{c!r} at position {pos}" for pos, c in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise ValueError(
                f"text has {len(bad)} character(s) not in the tokenizer's alphabet: {shown}{more}; "
                f"allowed: the {self.vocab_size} characters {_describe(self.chars)}"
            )
        return ids

    def decode(self, ids: Any) -> str:
        """The text of token ids `ids` (a 1-D sequence of ints in ``[0, vocab_size)``)."""
        V = self.vocab_size
        ids = _check_ids(ids, lambda i: 0 <= i < V, f"integers in [0, {V})")
        itos = self.itos
        return "".join(itos[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"type": "char", "chars": [...]}``."""
        return {"type": "char", "chars": list(self.itos)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CharTokenizer:
        """Inverse of `to_dict`."""
        if not isinstance(d, Mapping) or d.get("type") != "char":
            raise ValueError(f"not a char tokenizer description: {_describe(d)}")
        if set(d) != {"type", "chars"}:
            raise ValueError(f"char tokenizer description must have keys type, chars; got {sorted(d)}")
        return cls(d["chars"])


# ------------------------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to themselves; the
    other 68 (controls, space, soft hyphen, ...) map in order to U+0100, U+0101, ..., so that space
    (byte 32) becomes ``'Ġ'`` (U+0120) and newline (byte 10) ``'Ċ'`` (U+010A).
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return dict(sorted(table.items()))  # a fresh dict: callers may change theirs


def _category_ranges() -> tuple[str, str]:
    """Regex class bodies for \\p{L} and \\p{N}, built from the running Python's unicodedata."""
    bodies: dict[str, list[str]] = {"L": [], "N": []}
    start, kind = 0, None
    for cp in range(sys.maxunicode + 2):
        k = unicodedata.category(chr(cp))[0] if cp <= sys.maxunicode else None
        k = k if k in bodies else None
        if k != kind:  # a run of one kind ends at cp - 1
            if kind is not None:
                a, b = start, cp - 1
                bodies[kind].append(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}")
            start, kind = cp, k
    return "".join(bodies["L"]), "".join(bodies["N"])


@functools.cache
def _gpt2_split_regex() -> re.Pattern[str]:
    """`GPT2_SPLIT_PATTERN` for the stdlib `re`: \\p{L}, \\p{N}, \\s spelled as explicit classes."""
    L, N = _category_ranges()
    S = _WHITE_SPACE
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


def gpt2_pretokenize(text: str) -> list[str]:
    """Split `text` into GPT-2's pre-tokens (step 1 of encoding); ``"".join`` gives `text` back.

    >>> gpt2_pretokenize("Hello world, it's 2024!")
    ['Hello', ' world', ',', ' it', "'s", ' 2024', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _gpt2_split_regex().findall(text)


def _merge(word: Sequence[str], a: str, b: str) -> list[str]:
    """`word` with every occurrence of the adjacent pair (a, b), left to right, merged into a+b."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class GPT2Tokenizer:
    """GPT-2's byte-level BPE tokenizer, written by hand.

    Parameters
    ----------
    vocab : mapping str -> int
        Token (a string of byte-to-unicode symbols, or a special token) to id; ids distinct, >= 0.
    merges : sequence of (str, str)
        Merge rules in rank order: ``merges[r]`` is the pair merged with rank ``r``.
    special_tokens : iterable of str, optional
        Tokens matched verbatim in the text before pre-tokenization (default: ``<|endoftext|>`` if
        the vocabulary holds it).
    """

    CACHE_SIZE = 100_000  # pre-token -> ids entries kept; cleared when full

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(vocab, Mapping) or not vocab:
            raise ValueError(f"vocab must be a non-empty mapping token -> id, got {_describe(vocab)}")
        self.encoder: dict[str, int] = {}
        self.decoder: dict[int, str] = {}
        for token, i in vocab.items():
            if not isinstance(token, str) or not token:
                raise ValueError(f"vocab keys must be non-empty strings, got {_describe(token)}")
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
                raise ValueError(f"vocab[{token!r}] = {_describe(i)} must be an int >= 0")
            i = int(i)
            if i in self.decoder:
                raise ValueError(f"vocab ids must be distinct: {i} is both {self.decoder[i]!r} and {token!r}")
            self.encoder[token] = i
            self.decoder[i] = token
        if special_tokens is None:
            special_tokens = [END_OF_TEXT] if END_OF_TEXT in self.encoder else []
        self.special_tokens: list[str] = list(special_tokens)
        for t in self.special_tokens:
            if t not in self.encoder:
                raise ValueError(f"special token {t!r} is not in the vocab")
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {s: b for b, s in self.byte_encoder.items()}
        for token in self.encoder:
            if token not in self.special_tokens:
                bad = [c for c in token if c not in self.byte_decoder]
                if bad:
                    raise ValueError(
                        f"vocab token {token!r} holds {bad[0]!r}, which is not a byte-to-unicode "
                        "symbol; allowed: the 256 symbols of bytes_to_unicode() (or declare it "
                        "in special_tokens)"
                    )
        self.merges: list[tuple[str, str]] = []
        self.ranks: dict[tuple[str, str], int] = {}
        for r, pair in enumerate(merges):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) and s for s in pair)):
                raise ValueError(f"merges[{r}] = {_describe(pair)} must be a pair of non-empty strings")
            a, b = pair
            for s in (a, b, a + b):
                if s not in self.encoder:
                    raise ValueError(f"merges[{r}] = ({a!r}, {b!r}): {s!r} is not in the vocab")
            if (a, b) in self.ranks:
                raise ValueError(f"merges[{r}] = ({a!r}, {b!r}) repeats merges[{self.ranks[a, b]}]")
            self.ranks[a, b] = r
            self.merges.append((a, b))
        self._special_split = (
            re.compile("(" + "|".join(re.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)) + ")")
            if self.special_tokens
            else None
        )
        self._cache: dict[str, tuple[int, ...]] = {}

    # --- construction from files ---------------------------------------------------------
    @classmethod
    def from_files(cls, vocab_path: str | Path, merges_path: str | Path) -> GPT2Tokenizer:
        """Read a GPT-2 ``vocab.json`` (token -> id) and ``merges.txt`` (one pair a line)."""
        vocab_path, merges_path = Path(vocab_path), Path(merges_path)
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{vocab_path}: not a valid UTF-8 JSON vocabulary ({e})") from None
        if not isinstance(vocab, dict):
            raise ValueError(f"{vocab_path}: must hold a JSON object token -> id, got {type(vocab).__name__}")
        try:
            lines = merges_path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"{merges_path}: not valid UTF-8 ({e})") from None
        merges = []
        for n, line in enumerate(lines, start=1):
            line = line.rstrip("\r")
            if not line or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{merges_path}, line {n}: {line!r} must be two tokens separated by one space")
            merges.append((parts[0], parts[1]))
        try:
            return cls(vocab, merges)
        except ValueError as e:
            raise ValueError(f"{vocab_path} + {merges_path}: {e}") from None

    @classmethod
    def train(cls, text: str, n_merges: int, special_tokens: Sequence[str] = (END_OF_TEXT,)
              ) -> GPT2Tokenizer:  # fmt: skip
        """Learn up to `n_merges` merges from `text`, the way GPT-2's merges were learned.

        The vocabulary starts with the 256 byte symbols (id = byte value). Each step counts the
        adjacent symbol pairs inside the pre-tokens of `text` (weighted by how often each
        pre-token occurs), merges the most frequent pair everywhere (ties: the smallest pair),
        and appends it to the merges (and its result to the vocabulary, if new). Special tokens
        get the ids after that. A teaching-sized trainer: fine for kilobytes, slow for gigabytes.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(n_merges, bool) or not isinstance(n_merges, int) or n_merges < 0:
            raise ValueError(f"n_merges must be an int >= 0, got {n_merges!r}")
        b2u = bytes_to_unicode()
        vocab = {s: b for b, s in b2u.items()}
        counts: dict[tuple[str, ...], int] = {}
        for piece in gpt2_pretokenize(text):
            word = tuple(b2u[b] for b in piece.encode("utf-8"))
            counts[word] = counts.get(word, 0) + 1
        merges: list[tuple[str, str]] = []
        for _ in range(n_merges):
            pairs: dict[tuple[str, str], int] = {}
            for word, c in counts.items():
                for pair in zip(word, word[1:], strict=False):
                    pairs[pair] = pairs.get(pair, 0) + c
            if not pairs:
                break  # every pre-token is a single symbol
            a, b = min(pairs, key=lambda p: (-pairs[p], p))
            merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))
            merged_counts: dict[tuple[str, ...], int] = {}
            for word, c in counts.items():
                out = tuple(_merge(word, a, b))
                merged_counts[out] = merged_counts.get(out, 0) + c
            counts = merged_counts
        for t in special_tokens:
            vocab.setdefault(t, len(vocab))
        return cls(vocab, merges, special_tokens)

    @classmethod
    def from_directory(cls, directory: str | Path) -> GPT2Tokenizer:
        """Read ``vocab.json`` and ``merges.txt`` from `directory`."""
        directory = Path(directory)
        paths = [directory / "vocab.json", directory / "merges.txt"]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{directory}: no {' or '.join(missing)}; a GPT-2 tokenizer needs both")
        return cls.from_files(*paths)

    def to_vocab_json(self) -> str:
        """The vocabulary as ``vocab.json`` text (ids in increasing order)."""
        items = sorted(self.encoder.items(), key=lambda kv: kv[1])
        return json.dumps(dict(items), ensure_ascii=False)

    def to_merges_txt(self) -> str:
        """The merges as ``merges.txt`` text, with GPT-2's ``#version: 0.2`` header line."""
        return "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``type``, ``vocab``, ``merges``, ``special_tokens``)."""
        return {
            "type": "gpt2-bpe",
            "vocab": dict(sorted(self.encoder.items(), key=lambda kv: kv[1])),
            "merges": [f"{a} {b}" for a, b in self.merges],
            "special_tokens": list(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPT2Tokenizer:
        """Inverse of `to_dict`."""
        if not isinstance(d, Mapping) or d.get("type") != "gpt2-bpe":
            raise ValueError(f"not a GPT-2 BPE tokenizer description: {_describe(d)}")
        keys = {"type", "vocab", "merges", "special_tokens"}
        if set(d) != keys:
            raise ValueError(f"GPT-2 tokenizer description must have keys {sorted(keys)}; got {sorted(d)}")
        merges = []
        for r, line in enumerate(d["merges"]):
            parts = line.split(" ") if isinstance(line, str) else []
            if len(parts) != 2:
                raise ValueError(f"merges[{r}] = {_describe(line)} must be 'a b' (two tokens, one space)")
            merges.append((parts[0], parts[1]))
        return cls(d["vocab"], merges, d["special_tokens"])

    # --- properties ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """One more than the largest id: the rows an embedding table needs."""
        return max(self.decoder) + 1

    def __len__(self) -> int:
        return len(self.encoder)

    def __repr__(self) -> str:
        return (
            f"GPT2Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={self.special_tokens})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GPT2Tokenizer)
            and self.encoder == other.encoder
            and self.merges == other.merges
            and self.special_tokens == other.special_tokens
        )

    # --- encoding -------------------------------------------------------------------------
    def bpe(self, symbols: str) -> list[str]:
        """Merge the byte symbols of one pre-token by rank (step 4); returns the final symbols.

        >>> tok = GPT2Tokenizer({**{s: b for b, s in bytes_to_unicode().items()}, "ab": 256,
        ...                      "abc": 257}, [("a", "b"), ("ab", "c")])
        >>> tok.bpe("abcab")
        ['abc', 'ab']
        """
        word = list(symbols)
        ranks = self.ranks
        while len(word) > 1:
            # The adjacent pair of lowest rank; pairs without a rank never merge.
            best, best_rank = None, None
            for pair in zip(word, word[1:], strict=False):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            word = _merge(word, *best)
        return word

    def _encode_piece(self, piece: str, pos: int) -> tuple[int, ...]:
        symbols = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
        ids = self._cache.get(symbols)
        if ids is None:
            tokens = self.bpe(symbols)
            missing = [t for t in tokens if t not in self.encoder]
            if missing:
                raise ValueError(
                    f"text piece {piece!r} at position {pos} needs the token {missing[0]!r} "
                    f"(bytes {bytes(self.byte_decoder[c] for c in missing[0])!r}), "
                    "which is not in the vocab"
                )
            ids = tuple(self.encoder[t] for t in tokens)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[symbols] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: special tokens verbatim; the rest pre-tokenized, mapped, merged."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"text[{e.start}] = {text[e.start]!r} cannot be encoded as UTF-8 (a lone "
                "surrogate); "
                "allowed: any text of Unicode scalar values"
            ) from None
        chunks = self._special_split.split(text) if self._special_split else [text]
        ids: list[int] = []
        pos = 0
        for k, chunk in enumerate(chunks):
            if k % 2:  # the split's captured separators are the special tokens
                ids.append(self.encoder[chunk])
            else:
                split = _gpt2_split_regex()
                for m in split.finditer(chunk):
                    ids.extend(self._encode_piece(m.group(), pos + m.start()))
            pos += len(chunk)
        return ids

    # --- decoding -------------------------------------------------------------------------
    def token_bytes(self, i: int) -> bytes:
        """The bytes of token id `i` (a special token: its UTF-8 text)."""
        token = self.decoder[i]
        if token in self.special_tokens:
            return token.encode("utf-8")
        return bytes(self.byte_decoder[c] for c in token)

    def decode(self, ids: Any) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 decode to U+FFFD, as in GPT-2."""
        decoder = self.decoder
        ids = _check_ids(
            ids,
            decoder.__contains__,
            f"ids of the vocab (integers in [0, {self.vocab_size}) present in it)",
        )
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------
def tokenizer_to_json(tok: CharTokenizer | GPT2Tokenizer) -> dict[str, Any]:
    """A JSON-ready dict describing `tok` (what a checkpoint's ``tokenizer.json`` holds)."""
    if isinstance(tok, (CharTokenizer, GPT2Tokenizer)):
        return {"format_version": 1, **tok.to_dict()}
    raise TypeError(f"tok must be a CharTokenizer or a GPT2Tokenizer, got {type(tok).__name__}")


def tokenizer_from_json(d: Mapping[str, Any]) -> CharTokenizer | GPT2Tokenizer:
    """Inverse of `tokenizer_to_json`."""
    if not isinstance(d, Mapping):
        raise ValueError(f"a tokenizer description must be a JSON object, got {type(d).__name__}")
    if d.get("format_version") != 1:
        raise ValueError(f"tokenizer format_version must be 1, got {_describe(d.get('format_version'))}")
    body = {k: v for k, v in d.items() if k != "format_version"}
    kinds = {"char": CharTokenizer, "gpt2-bpe": GPT2Tokenizer}
    kind = body.get("type")
    if kind not in kinds:
        raise ValueError(f"tokenizer type {_describe(kind)} is unknown; allowed: {sorted(kinds)}")
    return kinds[kind].from_dict(body)
