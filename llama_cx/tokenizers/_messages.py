"""One reading of a chat message, for every chat format: a dict {"role", "content"} or an object with .role and
.content (Meta's Message dataclass; its Role enum is read by value)."""
from __future__ import annotations

from typing import Tuple, Union

from ..errors import TokenizerError

Message = Union[dict, object]


def role_content(message: Message) -> Tuple[str, str]:
    if isinstance(message, dict):
        role, content = message.get("role"), message.get("content")
    else:
        role, content = getattr(message, "role", None), getattr(message, "content", None)
    role = getattr(role, "value", role)  # an Enum like Meta's Role
    if not isinstance(role, str) or not isinstance(content, str):
        raise TokenizerError(f"a chat message needs a str role and a str content, got {message!r:.80}")
    return role, content
