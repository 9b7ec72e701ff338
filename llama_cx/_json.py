"""Small JSON files (config.json, an index, tokenizer.json, tokenizer_config.json) read with a size bound, so a
huge or hostile file is refused before it is read; every failure is one FormatError line naming the file."""
from __future__ import annotations

import json

from ._limits import read_regular
from .errors import FormatError


def read_json(path: str, limit: int):
    """The parsed JSON of `path`, a regular file of at most `limit` bytes (llama_cx._limits: refused before it is
    read when larger, or when it is a FIFO or a device)."""
    raw = read_regular(path, "file", limit)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 (byte {e.start})") from None
    except ValueError as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply") from None
