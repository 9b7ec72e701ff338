"""The exceptions a user of llama_cx can see. Every message is one line that names the file and the problem."""


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


def brief(value, limit: int = 60) -> str:
    """repr of a file- or user-provided value for a one-line message, cut to `limit` characters."""
    r = repr(value)
    if len(r) <= limit:
        return r
    return r[: limit - 4] + "..." + r[-1] if r[-1] in "'\"" else r[: limit - 3] + "..."


def show(name, limit: int = 80) -> str:
    """A file-provided name (a tensor, a shard) for a one-line message: as it is when short and printable, else
    its repr, cut to `limit` characters."""
    s = str(name)
    if s.isprintable() and 0 < len(s) <= limit:
        return s
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 5] + "...'"
