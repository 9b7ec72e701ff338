"""Chat formats: a dialog (list of messages) -> the token ids of the prompt, with special ids put in directly.

Two formats, one interface (`encode_dialog`, `encode_turn`, `stop_ids`, `end_of_turn_id`):

- `ChatFormat`: Llama 3 / 3.1, after Meta's llama_models/llama3/chat_format.py (llama-models 0.3.0):
      <|begin_of_text|> then per message <|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>,
      ending with an open <|start_header_id|>assistant<|end_header_id|>\\n\\n.
  Content is encoded as is: Meta 0.3.0 does not strip it (the older llama3 repo and Hugging Face's template do).
- `ChatMLFormat`: <|im_start|>role\\ncontent<|im_end|>\\n per message, ending with <|im_start|>assistant\\n
  (SmolLM2, Qwen, ...). When the first message is not a system message, the template's default system message
  (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face") comes first, as its Jinja
  template does.

(Llama 2's `[INST] <<SYS>>` format, `Llama2ChatFormat`, has the same interface; it is in chat_llama2.py.)

`chat_format_for(tokenizer, chat_template=None)` picks one of the three from a chat template (a GGUF's
tokenizer.chat_template) or, without one, from the tokenizer's special tokens and kind.

Messages are dicts {"role": ..., "content": ...} or objects with .role and .content. Content is user text: special
token text in it is encoded as plain text (the tokenizer's default), so a user cannot close a turn by typing
"<|eot_id|>".

Chat sessions that keep the KV cache feed only the new turn: after the prompt `encode_dialog(m)` and a reply that
ended with `end_of_turn_id` (fed to the model too), `encode_turn(new_messages)` are the ids that make the cache
equal to `encode_dialog(m + [reply] + new_messages)`.
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from ..errors import TokenizerError
from ._messages import Message, role_content as _role_content
from .chat_llama2 import Llama2ChatFormat
from .spm import SentencePieceTokenizer


class ChatFormat:
    """Llama 3 / 3.1 chat format (Meta's llama3/chat_format.py)."""

    ROLES = ("system", "user", "assistant", "ipython")

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.begin_of_text_id = tokenizer.special_id("<|begin_of_text|>")
        self.start_header_id = tokenizer.special_id("<|start_header_id|>")
        self.end_header_id = tokenizer.special_id("<|end_header_id|>")
        self.end_of_turn_id = tokenizer.special_id("<|eot_id|>")
        stops = [self.end_of_turn_id]
        for name in ("<|eom_id|>", "<|end_of_text|>"):
            if name in tokenizer.special_tokens:
                stops.append(tokenizer.special_tokens[name])
        self.stop_ids: Tuple[int, ...] = tuple(dict.fromkeys(stops + list(tokenizer.stop_ids)))

    def encode_header(self, role: str) -> List[int]:
        """<|start_header_id|>role<|end_header_id|>\\n\\n ("tool" is written "ipython", as Meta does)."""
        if role == "tool":
            role = "ipython"
        if role not in self.ROLES:
            raise TokenizerError(f"chat role {role!r} is not one of {', '.join(self.ROLES)} (or tool)")
        enc = self.tokenizer.encode
        return [self.start_header_id] + enc(role) + [self.end_header_id] + enc("\n\n")

    def encode_message(self, message: Message) -> List[int]:
        role, content = _role_content(message)
        return self.encode_header(role) + self.tokenizer.encode(content) + [self.end_of_turn_id]

    def encode_dialog(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> List[int]:
        """<|begin_of_text|>, every message, then the open assistant header (Meta's encode_dialog_prompt)."""
        return [self.begin_of_text_id] + self.encode_turn(messages, first=False, add_generation_prompt=add_generation_prompt)

    def encode_turn(self, messages: Sequence[Message], first: bool = False, add_generation_prompt: bool = True) -> List[int]:
        """The ids of new messages for a cache that already holds the dialog so far (ending with <|eot_id|>);
        first=True: the whole prompt, the same as encode_dialog."""
        if first:
            return self.encode_dialog(messages, add_generation_prompt)
        ids: List[int] = []
        for m in messages:
            ids += self.encode_message(m)
        if add_generation_prompt:
            ids += self.encode_header("assistant")
        return ids


class ChatMLFormat:
    """ChatML: <|im_start|>role\\ncontent<|im_end|>\\n per message (SmolLM2's template and others)."""

    def __init__(self, tokenizer, default_system: Optional[str] = None):
        """default_system: the system message put first when the dialog has none (None: no such message)."""
        self.tokenizer = tokenizer
        self.default_system = default_system
        self.im_start_id = tokenizer.special_id("<|im_start|>")
        self.end_of_turn_id = tokenizer.special_id("<|im_end|>")
        self.stop_ids: Tuple[int, ...] = tuple(dict.fromkeys([self.end_of_turn_id] + list(tokenizer.stop_ids)))

    def encode_header(self, role: str) -> List[int]:
        if not role or "\n" in role:
            raise TokenizerError(f"chat role {role!r} must be a non-empty line")
        return [self.im_start_id] + self.tokenizer.encode(role + "\n")

    def encode_message(self, message: Message) -> List[int]:
        role, content = _role_content(message)
        if not role or "\n" in role:
            raise TokenizerError(f"chat role {role!r} must be a non-empty line")
        # one text segment from the role to <|im_end|>, as the template renders it and HF tokenizes it
        return [self.im_start_id] + self.tokenizer.encode(role + "\n" + content) + [self.end_of_turn_id] + \
            self.tokenizer.encode("\n")

    def encode_dialog(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> List[int]:
        ids: List[int] = []
        if self.default_system is not None and (not messages or _role_content(messages[0])[0] != "system"):
            ids += self.encode_message({"role": "system", "content": self.default_system})
        for m in messages:
            ids += self.encode_message(m)
        if add_generation_prompt:
            ids += self.encode_header("assistant")
        return ids

    def encode_turn(self, messages: Sequence[Message], first: bool = False, add_generation_prompt: bool = True) -> List[int]:
        """The ids of new messages for a cache that holds the dialog so far, ending with the <|im_end|> of the
        last reply: the template's "\\n" after it, then the messages; first=True: the same as encode_dialog."""
        if first:
            return self.encode_dialog(messages, add_generation_prompt)
        ids = self.tokenizer.encode("\n")
        for m in messages:
            ids += self.encode_message(m)
        if add_generation_prompt:
            ids += self.encode_header("assistant")
        return ids


# A literal default system message in a ChatML template: '<|im_start|>system\n...<|im_end|>' with no Jinja
# expression inside; the "\n" may be a real newline or Jinja's escape.
_DEFAULT_SYSTEM = re.compile(r"""<\|im_start\|>system(?:\n|\\n)([^'"{}]*?)<\|im_end\|>""")


def chat_format_for(tokenizer, chat_template: Optional[str] = None):
    """The chat format for a tokenizer: ChatMLFormat, ChatFormat (Llama 3) or Llama2ChatFormat, or None when none
    fits.

    chat_template (default: tokenizer.chat_template, a GGUF's tokenizer.chat_template) decides when given: one
    that writes <|im_start|> is ChatML (with its literal default system message, if any), one that writes
    <|start_header_id|> is Llama 3, one that writes [INST] and <<SYS>> is Llama 2 (for a SentencePiece
    tokenizer). Without a template, the tokenizer's special tokens decide, and a SentencePiece tokenizer (Llama 2's
    tokenizer.model, a GGUF "llama" vocabulary) gets Llama 2's format.
    """
    if tokenizer is None:
        return None
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    specials = tokenizer.special_tokens
    llama3_ok = all(t in specials for t in ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    chatml_ok = all(t in specials for t in ("<|im_start|>", "<|im_end|>"))
    llama2_ok = isinstance(tokenizer, SentencePieceTokenizer) and None not in (tokenizer.bos_id, tokenizer.eos_id)
    if template:
        if "<|im_start|>" in template and chatml_ok:
            m = _DEFAULT_SYSTEM.search(template)
            return ChatMLFormat(tokenizer, default_system=m.group(1) if m else None)
        if "<|start_header_id|>" in template and llama3_ok:
            return ChatFormat(tokenizer)
        if "[INST]" in template and "<<SYS>>" in template and llama2_ok:  # Mistral's [INST] template has no <<SYS>>
            return Llama2ChatFormat(tokenizer)
        return None
    if llama3_ok:
        return ChatFormat(tokenizer)
    if chatml_ok:
        return ChatMLFormat(tokenizer)
    if llama2_ok:
        return Llama2ChatFormat(tokenizer)
    return None
