"""Small JSON files (config.json, an index, tokenizer.json, tokenizer_config.json) read with a size bound, so a
huge or hostile file is refused before it is parsed; every failure is one FormatError line naming the file."""
from __future__ import annotations

import json

from .errors import FormatError


def read_json(path: str, limit: int, what: str):
    """The parsed JSON of `path`, a file of at most `limit` bytes (`what` names it in the error when it is larger)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) > limit:
        raise FormatError(f"{path}: {what} is over {limit >> 20} MiB; refusing to parse it")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 (byte {e.start})") from None
    except ValueError as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply") from None
