"""A streaming text filter that follows each emoji by its Unicode name(s), e.g. "🚀" -> "🚀 (ROCKET)": for terminals
and logs where emojis do not show. Feed it text in chunks as they arrive (a generation's output); a sequence
cut at a chunk's end is held back until the next chunk shows where it ends.
"""
from __future__ import annotations

import unicodedata

_ZWJ, _VS16, _VS15 = "\u200d", "\ufe0f", "\ufe0e"


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    in_blocks = 0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or 0x2300 <= cp <= 0x23FF or 0x2B00 <= cp <= 0x2BFF
    return in_blocks and unicodedata.category(ch) in ("So", "Sk")


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_extender(ch: str) -> bool:
    """Characters that extend the emoji before them: variation selectors, skin tones, tag characters."""
    cp = ord(ch)
    return ch in (_VS16, _VS15) or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def _emoji_name(ch: str) -> str:
    return unicodedata.name(ch, f"U+{ord(ch):04X}")


class EmojiNamer:
    """Streaming filter: each emoji (a whole ZWJ / skin-tone / flag sequence) is followed by its name(s),
    e.g. "🚀" -> "🚀 (ROCKET)", "👍🏽" -> "👍🏽 (THUMBS UP SIGN + EMOJI MODIFIER FITZPATRICK TYPE-4)".
    A sequence at the end of a chunk is held back until the next chunk shows whether it goes on."""

    def __init__(self):
        self.pending = ""

    def _cluster_end(self, text: str, i: int):
        """End of the emoji sequence starting at i, and whether it may continue past the text's end."""
        j = i + 1
        if _is_regional(text[i]):
            if j == len(text):
                return j, True
            if _is_regional(text[j]):
                j += 1
        while j < len(text):
            c = text[j]
            if _is_extender(c):
                j += 1
            elif c == _ZWJ:
                if j + 1 == len(text):
                    return j + 1, True
                if not _is_emoji(text[j + 1]):
                    break
                j += 2
            else:
                return j, False
        return j, True

    def feed(self, chunk: str) -> str:
        text, self.pending = self.pending + chunk, ""
        out, i = [], 0
        while i < len(text):
            ch = text[i]
            if not _is_emoji(ch):
                out.append(ch)
                i += 1
                continue
            end, open_ = self._cluster_end(text, i)
            if open_:
                self.pending = text[i:]
                break
            out.append(self._named(text[i:end]))
            i = end
        return "".join(out)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        if not text:
            return ""
        return self._named(text) if _is_emoji(text[0]) else text

    @staticmethod
    def _named(cluster: str) -> str:
        names = [_emoji_name(c) for c in cluster if _is_emoji(c)]
        return f"{cluster} ({' + '.join(names)})"
