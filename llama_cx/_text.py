"""Where text crosses a boundary (a terminal, a pipe, a file name, a string inside a model file), one policy:

- text coming in (stdin, a prompt in argv) that is not valid UTF-8 is read with U+FFFD for the bad bytes
  (errors="replace", as the tokenizer's decode and tiktoken do): a prompt is never refused for its bytes;
- a name going out (a path, a GGUF general.name or tensor name, a pickle string) keeps what can be shown and
  escapes the rest: a byte that is not UTF-8 (a surrogate from os.fsdecode's surrogateescape) as \\xNN, any
  other lone surrogate as \\uDxxx, control characters as \\x.. -- so a message stays one line and says which
  bytes were there;
- writing to stdout/stderr never raises: a character the stream's encoding lacks becomes '?' (LANG=C,
  latin-1 terminals).
"""
from __future__ import annotations

import re
import sys

_UNSHOWABLE = re.compile(r"[\ud800-\udfff\x00-\x08\x0a-\x1f\x7f]")


def _escape(m: "re.Match") -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:  # surrogateescape: the byte c - 0xDC00 was not UTF-8
        return f"\\x{c - 0xDC00:02x}"
    return f"\\u{c:04x}" if c > 0xFF else f"\\x{c:02x}"


def show(s) -> str:
    """`s` (a str, or a path) as one printable line that never fails to encode as UTF-8."""
    s = s if isinstance(s, str) else str(s)
    return _UNSHOWABLE.sub(_escape, s)


def from_user(s: str) -> str:
    """Text a user typed (argv, stdin): lone surrogates -- bytes that were not UTF-8 -- become U+FFFD."""
    if not any("\ud800" <= c <= "\udfff" for c in s):
        return s
    try:  # back to the bytes os.fsdecode saw, so each bad byte is one U+FFFD, as stdin gives it
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates (a Python caller's str)
        raw = s.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def setup_streams() -> None:
    """The CLI's standard streams under the policy above (idempotent; streams without reconfigure are left)."""
    if hasattr(sys.stdin, "reconfigure"):
        try:
            sys.stdin.reconfigure(errors="replace")
        except (ValueError, OSError):  # closed, or already read from in a way that forbids it
            pass
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
