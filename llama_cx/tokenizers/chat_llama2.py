"""The Llama 2 chat format, exactly as Meta's llama/generation.py `chat_completion` builds it:

    [INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST]

- a system message is folded into the first user message: B_SYS + system + E_SYS + user;
- each finished exchange is   bos + encode(f"[INST] {user.strip()} [/INST] {answer.strip()} ") + eos
- the last user message is    bos + encode(f"[INST] {user.strip()} [/INST]")
- roles go system (optional), user, assistant, user, ..., and a prompt ends with a user message.
The tags are plain text to the tokenizer (Llama 2 has no special tokens for them), so, like Meta, we refuse
messages that contain them: a user could otherwise close an [INST] turn and write the assistant's part.

Same interface as llama_cx.tokenizers.chat_format's formats (encode_dialog, encode_turn, stop_ids,
end_of_turn_id), so ChatSession works unchanged: after encode_dialog(system + first user message), the sampled
reply and eos, the next turn is encode_turn([user]) = bos + encode("[INST] {user} [/INST]"). The session keeps
each reply as it was sampled, so its cache differs from Meta re-encoding the whole history (which encodes the
answer together with its prompt and a trailing space, usually one more "▁" token before eos) only inside the
replies.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from ..errors import TokenizerError
from ._messages import role_content

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = [B_INST, E_INST, "<<SYS>>", "<</SYS>>"]


class Llama2ChatFormat:
    """Llama 2 chat (Meta's llama/generation.py chat_completion), for a SentencePiece tokenizer with bos/eos."""

    ROLES = ("system", "user", "assistant")

    def __init__(self, tokenizer):
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise TokenizerError(f"{tokenizer.source}: the Llama 2 chat format needs bos and eos tokens")
        self.tokenizer = tokenizer
        self.begin_of_text_id = tokenizer.bos_id
        self.end_of_turn_id = tokenizer.eos_id  # a reply ends with eos, as Meta's generation stops on it
        self.stop_ids: Tuple[int, ...] = tuple(dict.fromkeys([tokenizer.eos_id] + list(tokenizer.stop_ids)))

    def encode_dialog(self, messages: Sequence, add_generation_prompt: bool = True) -> List[int]:
        """The prompt of a dialog: [system], user, assistant, ..., user (Meta's chat_completion).

        add_generation_prompt=False also takes a dialog that ends with the assistant (a finished conversation,
        every exchange closed with eos); Llama 2 has no separate generation prompt, "[/INST]" ends the user turn.
        A system message alone (nothing to fold it into yet) gives no ids."""
        msgs = [role_content(m) for m in messages]
        self._check_tags(msgs)
        if msgs and msgs[0][0] == "system":
            if len(msgs) == 1 and not add_generation_prompt:
                return []
            if len(msgs) == 1:
                raise TokenizerError("a Llama 2 dialog needs a user message after the system message")
            msgs = [(msgs[1][0], B_SYS + msgs[0][1] + E_SYS + msgs[1][1])] + msgs[2:]
        return self._encode(msgs, add_generation_prompt)

    def encode_turn(self, messages: Sequence, first: bool = False, add_generation_prompt: bool = True) -> List[int]:
        """The ids of new messages (user, or user/assistant/.../user) for a cache that holds the dialog so far,
        ending with eos; first=True: the whole prompt, the same as encode_dialog."""
        if first:
            return self.encode_dialog(messages, add_generation_prompt)
        msgs = [role_content(m) for m in messages]
        self._check_tags(msgs)
        if any(role == "system" for role, _ in msgs):
            raise TokenizerError("a Llama 2 system message can only open the dialog (it is folded into the first "
                                 "user message)")
        return self._encode(msgs, add_generation_prompt)

    def _check_tags(self, msgs):
        for k, (_, content) in enumerate(msgs):
            for tag in SPECIAL_TAGS:
                if tag in content:
                    raise TokenizerError(f"message {k} contains {tag!r}: the Llama 2 chat tags are not allowed in "
                                         f"messages (Meta's chat_completion refuses them too)")

    def _encode(self, msgs: List[Tuple[str, str]], add_generation_prompt: bool) -> List[int]:
        for k, (role, _) in enumerate(msgs):
            want = "user" if k % 2 == 0 else "assistant"
            if role != want:
                raise TokenizerError(
                    f"message {k} has role {role!r}, expected {want!r}: Llama 2 dialogs are an optional 'system', "
                    f"then 'user' and 'assistant' alternating (u/a/u/a/u...)")
        if add_generation_prompt and (not msgs or msgs[-1][0] != "user"):
            raise TokenizerError("the last message of a Llama 2 prompt must be from the user")
        enc = self.tokenizer.encode
        ids: List[int] = []
        for (_, prompt), (_, answer) in zip(msgs[::2], msgs[1::2]):
            ids += enc(f"{B_INST} {prompt.strip()} {E_INST} {answer.strip()} ", bos=True, eos=True)
        if len(msgs) % 2 == 1:
            ids += enc(f"{B_INST} {msgs[-1][1].strip()} {E_INST}", bos=True)
        return ids
