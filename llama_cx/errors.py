"""The exceptions a user of llama_cx can see. Every message is one line that names the file and the problem.

`fail` raises one; `brief` and `brief_name` show a file- or user-provided value inside one."""
import reprlib
from typing import NoReturn, Optional, Type


class LlamaCxError(Exception):
    """Base of every error llama_cx raises for bad input; the CLI prints these as one line."""


class FormatError(LlamaCxError, ValueError):
    """A model, checkpoint, tokenizer or config file is missing, malformed, truncated or hostile."""


class UnsafePickleError(FormatError):
    """A pickle asked for a global or an opcode outside the allowlist; nothing from it was executed."""


class TokenizerMissingError(LlamaCxError):
    """Text was given to a model loaded without a tokenizer."""


class ContextLengthError(LlamaCxError, ValueError):
    """A prompt or generation does not fit the context."""


class InvalidArgumentError(LlamaCxError, ValueError):
    """A generation, sampling or session argument is out of range (checked before any work is done)."""


class TokenizerError(LlamaCxError, ValueError):
    """Text or ids the tokenizer cannot take: a disallowed special token in the text, an id outside the vocabulary,
    an unknown special token name or chat role."""


def fail(where: Optional[str], msg: str, error: Type[LlamaCxError] = FormatError) -> NoReturn:
    """Raise `error` with the one-line message "where: msg" (just msg when where is None)."""
    raise error(msg if where is None else f"{where}: {msg}")


# repr bounded in depth and width: a file-provided value may be a million-level nested list, or contain itself
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 400, 400, 400


def brief(value, limit: int = 60) -> str:
    """A file- or user-provided value for a one-line message: its repr (bounded), cut to `limit` characters."""
    r = _REPR.repr(value)
    if len(r) <= limit:
        return r
    return r[: limit - 4] + "..." + r[-1] if r[-1] in "'\"" else r[: limit - 3] + "..."


def brief_name(s, limit: int = 80) -> str:
    """A file-provided name (tensor, key, module) for a one-line message: as it is when short, printable and
    without spaces, else brief(s)."""
    if isinstance(s, str) and s.isprintable() and " " not in s and 0 < len(s) <= limit:
        return s
    return brief(s, limit)
