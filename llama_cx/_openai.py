"""OpenAI-shaped response dicts and request checks, shared by `llama_cx.Llama` and the server.

The shapes follow the OpenAI API as llama-cpp-python 0.3.x returns them (its `Llama.create_completion` /
`create_chat_completion`), so code written against either reads the same keys:

    completion        {"id": "cmpl-...", "object": "text_completion", "created", "model",
                       "choices": [{"text", "index": 0, "logprobs": None, "finish_reason"}], "usage"}
    completion chunk  the same without "usage"; finish_reason None until the last chunk (text "")
    chat completion   {"id": "chatcmpl-...", "object": "chat.completion", ..., "choices": [{"index": 0,
                       "message": {"role": "assistant", "content"}, "logprobs": None, "finish_reason"}], "usage"}
    chat chunk        "object": "chat.completion.chunk", choices[0]["delta"]: {"role": "assistant"} first,
                       then {"content": text}, last {} with finish_reason
"""
from __future__ import annotations

import time
import uuid
from typing import List, Optional, Sequence

from .errors import InvalidArgumentError

# generate.STOP_REASONS -> OpenAI finish_reason ("interrupted" only happens when the caller stopped reading)
FINISH_REASON = {"stop_token": "stop", "stop_string": "stop", "max_tokens": "length", "context_full": "length",
                 "interrupted": "stop"}

# OpenAI's roles. "developer" is OpenAI's newer name for "system"; "tool" is Llama 3's "ipython".
ROLES = ("system", "developer", "user", "assistant", "tool")


def completion_id() -> str:
    return "cmpl-" + str(uuid.uuid4())


def chat_id() -> str:
    return "chatcmpl-" + str(uuid.uuid4())


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, created: int, model: str, text: str, finish_reason: Optional[str], use: dict) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            "usage": use}


def completion_chunk(cid: str, created: int, model: str, text: str, finish_reason: Optional[str] = None) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}


def chat_completion(cid: str, created: int, model: str, text: str, finish_reason: Optional[str], use: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": use}


def chat_chunk(cid: str, created: int, model: str, delta: dict, finish_reason: Optional[str] = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(cid: str, created: int, model: str, obj: str, use: dict) -> dict:
    """The extra last chunk OpenAI sends with stream_options={"include_usage": true}: no choices, the usage."""
    return {"id": cid, "object": obj, "created": created, "model": model, "choices": [], "usage": use}


def _content_text(content, i: int) -> str:
    """A message's content as text: a string, None (an assistant turn with no text), or OpenAI's list of parts
    [{"type": "text", "text": ...}, ...] (text parts only: this engine reads no images or audio)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidArgumentError(
                    f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported, "
                    f"got {part!r:.80}")
            out.append(part["text"])
        return "".join(out)
    raise InvalidArgumentError(f"messages[{i}].content must be a string or a list of text parts, "
                               f"got {type(content).__name__}")


def chat_messages(messages) -> List[dict]:
    """OpenAI messages -> [{"role", "content": str}] for a chat format; a bad message raises
    InvalidArgumentError naming it. "developer" becomes "system"."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidArgumentError("messages must be a non-empty list of {\"role\", \"content\"} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidArgumentError(f"messages[{i}] must be an object with role and content, got {m!r:.80}")
        role = m.get("role")
        if role not in ROLES:
            raise InvalidArgumentError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r:.40}")
        out.append({"role": "system" if role == "developer" else role, "content": _content_text(m.get("content"), i)})
    return out


def stop_list(stop) -> List[str]:
    """stop as OpenAI takes it: None, a string, or a list of strings (empty strings are dropped, as OpenAI does)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise InvalidArgumentError(f"stop must be a string or a list of strings, got {stop!r:.80}")
    return [s for s in stop if s]


def completion_tokens(tokens: Sequence[int], stop_ids) -> int:
    """Generated tokens as usage counts them: a final stop token (end of turn / text) is not part of the reply
    (llama-cpp-python does not count it either)."""
    n = len(tokens)
    return n - 1 if n and tokens[-1] in stop_ids else n
