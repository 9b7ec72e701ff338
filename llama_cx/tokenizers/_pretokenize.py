"""Pre-tokenization: cutting text into the pieces that byte-pair merging then works on, without a regex engine.

The reference tokenizers cut text with regexes that use Unicode classes Python's `re` cannot express
(`\\p{L}`, `\\p{N}`). This module implements each supported pattern by hand as a scanner over code point classes,
one function per pattern. They are the readable twin of (and the test oracle for) the compiled scanners in
`_bpe.pyx`, and the fallback when that module is not built.

Supported patterns (name -> the regex it is exactly equivalent to, leftmost-first alternation as in the regex
crate / fancy-regex / Oniguruma):

  "llama3" (Meta's Llama 3 tokenizer.py, tiktoken; llama.cpp and HF "llama-bpe"):
      (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+
  "gpt2" (GPT-2; HF ByteLevel(use_regex=True); llama.cpp "gpt2"):
      's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
  "smollm" (llama.cpp "smollm"/"starcoder"; HF Digits(individual_digits=True) then ByteLevel):
      every \\p{N} character is a piece of its own; the text between them is cut with "gpt2".

Classes: \\p{L} = Lu|Ll|Lt|Lm|Lo, \\p{N} = Nd|Nl|No, \\s = the White_Space property, all at the Unicode version of
`_unicode_data` (the version tiktoken's regex crate uses), not the running Python's. Under (?i) the regex crate
folds 's' to {s, S, U+017F LATIN SMALL LETTER LONG S} and the other contraction letters to their ASCII pair only
(checked against tiktoken for every code point up to U+1FFFF).
"""
from __future__ import annotations

from typing import Iterator, List

from . import _unicode_data

OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3

PATTERNS = ("llama3", "gpt2", "smollm")

# Meta's llama3/tokenizer.py: tiktoken panics past ~400k chars, and long runs of (non-)whitespace are quadratic
# in its regex, so Meta encodes such text in slices; the slicing changes the ids, so we slice the same way.
TIKTOKEN_MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACES_CHARS = 25_000

# What str.isspace() accepts (bidi class WS/B/S or category Zs); Meta's slicing uses it, not White_Space.
# No code point above U+3000 is a space in any Unicode version; tests check this list against str.isspace.
PY_SPACES = frozenset(c for c in map(chr, range(0x3001)) if c.isspace())

_TABLE = None


def class_table() -> bytes:
    """One class byte (OTHER/LETTER/NUMBER/SPACE) per code point, 0x110000 entries (1.1 MB, built once)."""
    global _TABLE
    if _TABLE is None:
        t = bytearray(0x110000)
        for cls, ranges in ((LETTER, _unicode_data.LETTER), (NUMBER, _unicode_data.NUMBER),
                            (SPACE, _unicode_data.WHITE_SPACE)):
            for k in range(0, len(ranges), 2):
                a, b = ranges[k], ranges[k + 1]
                t[a:b + 1] = bytes([cls]) * (b + 1 - a)
        _TABLE = bytes(t)
    return _TABLE


def split(text: str, pattern: str) -> List[str]:
    """The pieces of `text` under `pattern` (one of PATTERNS); ''.join(result) == text."""
    if pattern == "llama3":
        return _split_llama3(text)
    if pattern == "gpt2":
        return _split_gpt2(text, 0, len(text), [])
    if pattern == "smollm":
        return _split_smollm(text)
    raise ValueError(f"unknown pre-tokenizer pattern {pattern!r}")


def _run(text: str, cls: bytes, i: int, end: int, k: int) -> int:
    """End of the run of class k starting at i."""
    while i < end and cls[ord(text[i])] == k:
        i += 1
    return i


def _space_run(text: str, cls: bytes, i: int, end: int) -> int:
    """The piece `\\s+(?!\\S)|\\s+` takes at i (text[i] is whitespace)."""
    j = _run(text, cls, i, end, SPACE)
    if j < end and j - 1 > i:
        return j - 1  # (?!\S) fails at j: give the last space back to the next piece
    return j


_CONTRACTION_1 = frozenset("stmd")
_CONTRACTION_2 = frozenset(("re", "ve", "ll"))


def _fold(c: str) -> str:
    return "s" if c == "\u017f" else c.lower() if c < "\x80" else c


def _split_llama3(text: str) -> List[str]:
    cls = class_table()
    out = []
    i, end = 0, len(text)
    while i < end:
        c = text[i]
        k = cls[ord(c)]
        j = -1
        # (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == "'" and i + 1 < end:
            a = _fold(text[i + 1])
            if a in _CONTRACTION_1:
                j = i + 2
            elif i + 2 < end and a + _fold(text[i + 2]) in _CONTRACTION_2:
                j = i + 3
        if j < 0:
            if k == LETTER:  # \p{L}+
                j = _run(text, cls, i + 1, end, LETTER)
            elif k != NUMBER and c not in "\r\n" and i + 1 < end and cls[ord(text[i + 1])] == LETTER:
                j = _run(text, cls, i + 2, end, LETTER)  # [^\r\n\p{L}\p{N}]\p{L}+
            elif k == NUMBER:  # \p{N}{1,3}
                j = i + 1
                while j < end and j < i + 3 and cls[ord(text[j])] == NUMBER:
                    j += 1
            elif k == OTHER or (c == " " and i + 1 < end and cls[ord(text[i + 1])] == OTHER):
                j = _run(text, cls, i + 1, end, OTHER)  # ` ?[^\s\p{L}\p{N}]+[\r\n]*`
                while j < end and text[j] in "\r\n":
                    j += 1
            else:  # whitespace
                run_end = _run(text, cls, i, end, SPACE)
                last_nl = -1
                for p in range(run_end - 1, i - 1, -1):
                    if text[p] in "\r\n":
                        last_nl = p
                        break
                if last_nl >= 0:
                    j = last_nl + 1  # \s*[\r\n]+
                else:
                    j = _space_run(text, cls, i, end)  # \s+(?!\S)|\s+
        out.append(text[i:j])
        i = j
    return out


def _split_gpt2(text: str, i: int, end: int, out: List[str]) -> List[str]:
    cls = class_table()
    while i < end:
        c = text[i]
        k = cls[ord(c)]
        j = -1
        if c == "'" and i + 1 < end:  # 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
            if text[i + 1] in _CONTRACTION_1:
                j = i + 2
            elif text[i + 1:i + 3] in _CONTRACTION_2:
                j = i + 3
        if j < 0:
            start = i
            if c == " " and i + 1 < end and cls[ord(text[i + 1])] != SPACE:
                start, k = i + 1, cls[ord(text[i + 1])]
            if k != SPACE:  # ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
                j = _run(text, cls, start + 1, end, k)
            else:
                j = _space_run(text, cls, i, end)
        out.append(text[i:j])
        i = j
    return out


def _split_smollm(text: str) -> List[str]:
    cls = class_table()
    out: List[str] = []
    start = 0
    for i, c in enumerate(text):
        if cls[ord(c)] == NUMBER:
            _split_gpt2(text, start, i, out)
            out.append(c)
            start = i + 1
    return _split_gpt2(text, start, len(text), out)


def meta_slices(text: str) -> Iterator[str]:
    """Meta's slicing of long input (llama3/tokenizer.py encode): 400k-char windows, each cut so that no slice
    holds more than 25k consecutive whitespace or non-whitespace chars (str.isspace)."""
    if len(text) <= MAX_NO_WHITESPACES_CHARS:  # nothing to cut (the usual case): skip the per-char loop
        if text:
            yield text
        return
    for w in range(0, len(text), TIKTOKEN_MAX_ENCODE_CHARS):
        yield from _split_whitespaces_or_nonwhitespaces(text[w:w + TIKTOKEN_MAX_ENCODE_CHARS],
                                                        MAX_NO_WHITESPACES_CHARS)


def _split_whitespaces_or_nonwhitespaces(s: str, max_len: int) -> Iterator[str]:
    # Mirrors Meta's Tokenizer._split_whitespaces_or_nonwhitespaces line for line.
    cur_len = 0
    cur_space = s[0] in PY_SPACES if s else False
    start = 0
    for i in range(len(s)):
        now_space = s[i] in PY_SPACES
        if cur_space ^ now_space:
            cur_len = 1
            cur_space = now_space
        else:
            cur_len += 1
            if cur_len > max_len:
                yield s[start:i]
                start = i
                cur_len = 1
    yield s[start:]
