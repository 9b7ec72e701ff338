"""Target `tiktoken`: Tokenizer.from_file on mutated tiktoken-format files (`base64(token) rank` lines), then
an encode/decode round trip with whatever loaded.

Seeds: Meta's Llama 3 tokenizer.model (128000 lines; slow to load, so drawn rarely) and prefixes of it
(the first 256, 300 and 2000 ranks: valid byte-level vocabularies), one with CRLF line ends.
"""
import base64
import os

from hypothesis import strategies as st

from llama_cx.tokenizers import Tokenizer

from ._corpus import llama3_tokenizer_path, scratch_dir, write_atomic
from ._engine import BOUNDARY, Input, Seed, mutations

NAME = "tiktoken"
TIMEOUT = 20.0  # the full 128k-line file takes ~1 s to load on a busy CI core
_TEXT = "Hello, world! 123 4567 héllo 日本語 \n\n  <|begin_of_text|> ok"


def seeds():
    real = open(llama3_tokenizer_path(), "rb").read()
    lines = real.split(b"\n")
    out = [Seed("llama3-tokenizer.model", real, weight=1)]
    for n in (256, 300, 2000):
        out.append(Seed(f"llama3-first-{n}", b"\n".join(lines[:n]) + b"\n", weight=10))
    out.append(Seed("llama3-first-300-crlf", b"\r\n".join(lines[:300]) + b"\r\n", weight=5))
    return out


# line-level edits of the small seeds: what byte flips rarely produce
_RANK = st.one_of(st.sampled_from(BOUNDARY).map(str), st.integers(1, 6000).map(lambda n: "9" * n),
                  st.sampled_from(["-1", "+5", "0x10", "1e3", "\u0663", "\uff11", "", " ", "1 2"]))
_TOKEN = st.one_of(st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
                   st.sampled_from(["====", "A", "AA=", "!!!!", "QQ==QQ==", "\u00e9", "QQ"]))
_EDIT = st.one_of(
    st.tuples(st.just("rank"), st.integers(0, 2**16), _RANK),
    st.tuples(st.just("token"), st.integers(0, 2**16), _TOKEN),
    st.tuples(st.just("dup"), st.integers(0, 2**16), st.integers(0, 2**16)),
    st.tuples(st.just("drop"), st.integers(0, 2**16)),
    st.tuples(st.just("swap_ranks"), st.integers(0, 2**16), st.integers(0, 2**16)),
)


def _edit_lines(data: bytes, edits) -> bytes:
    lines = data.split(b"\n")
    n = len(lines) - 1  # the last element is the empty string after the final newline
    for e in edits:
        i = e[1] % n
        parts = lines[i].split(b" ")
        if e[0] == "rank" and len(parts) == 2:
            lines[i] = parts[0] + b" " + e[2].encode()
        elif e[0] == "token" and len(parts) == 2:
            lines[i] = e[2].encode() + b" " + parts[1]
        elif e[0] == "dup":
            lines.insert(e[2] % n, lines[i])
        elif e[0] == "drop" and n > 1:
            del lines[i]
            n -= 1
        elif e[0] == "swap_ranks":
            j = e[2] % n
            a, b = lines[i].split(b" "), lines[j].split(b" ")
            if len(a) == 2 and len(b) == 2:
                lines[i], lines[j] = a[0] + b" " + b[1], b[0] + b" " + a[1]
    return b"\n".join(lines)


def inputs(seed_list):
    small = [s for s in seed_list if s.name.startswith("llama3-first")]
    lines = st.tuples(st.sampled_from(small), st.lists(_EDIT, min_size=1, max_size=4)).map(
        lambda t: Input(_edit_lines(t[0].data, t[1]), f"seed {t[0].name!r} with line edits {t[1]!r}"))
    return st.one_of(mutations(seed_list), lines)


def execute(data: bytes):
    path = os.path.join(scratch_dir(), "tokenizer.model")
    write_atomic(path, data)
    tok = Tokenizer.from_file(path)
    ids = tok.encode(_TEXT, bos=True, allowed_special="all")
    assert tok.decode(ids[1:]) == _TEXT, (ids, tok.decode(ids[1:]))
