"""What the tokenizers share around their merging: special-token names as the API takes them, the pattern that
finds allowed specials in text, and wrapping ids in BOS / EOS."""
from __future__ import annotations

import re
import threading
from typing import Collection, Dict, List, Union

from ..errors import TokenizerError

SpecialSet = Union[str, Collection[str]]  # "all" or names


class SpecialTokens:
    """Mixin over `special_tokens` ({name: id}), `bos_id`, `eos_id` and `source`; call _init_specials() in __init__."""

    def _init_specials(self) -> None:
        self._special_res: Dict[frozenset, "re.Pattern"] = {}  # shared by threads: filled under _special_lock
        self._special_lock = threading.Lock()

    def _special_names(self, names: SpecialSet, what: str) -> frozenset:
        if names == "all":
            return frozenset(self.special_tokens)
        if isinstance(names, str):
            raise TypeError(f"{what} must be 'all' or a set of special token names, not the string {names!r}")
        return frozenset(names) & frozenset(self.special_tokens)

    def _special_re(self, names: frozenset) -> "re.Pattern":
        r = self._special_res.get(names)
        if r is None:
            # longest first, so a name that is a prefix of another never hides it
            r = re.compile("|".join(re.escape(t) for t in sorted(names, key=lambda t: (-len(t), t))))
            with self._special_lock:
                if len(self._special_res) > 16:
                    self._special_res.clear()
                self._special_res[names] = r
        return r

    def _with_bos_eos(self, ids: List[int], bos: bool, eos: bool) -> List[int]:
        if bos:
            if self.bos_id is None:
                raise TokenizerError(f"{self.source}: this vocabulary has no begin-of-text token")
            ids.insert(0, self.bos_id)
        if eos:
            if self.eos_id is None:
                raise TokenizerError(f"{self.source}: this vocabulary has no end-of-text token")
            ids.append(self.eos_id)
        return ids
