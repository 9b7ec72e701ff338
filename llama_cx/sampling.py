"""Choosing the next token from the logits: the settings (SamplingParams) and the sampler.

One step, in this order (Meta's reference `generate` and Hugging Face apply temperature first too):
  1. repeat penalty on the raw logits of the last `repeat_last_n` tokens (CTRL / llama.cpp rule:
     a positive logit is divided by the penalty, a negative one multiplied);
  2. temperature 0 -> greedy: the largest penalised logit (lowest id on ties), nothing is drawn;
  3. logits / temperature;
  4. top-k: keep the k largest (0 = off);
  5. softmax over what is left;
  6. top-p: keep the smallest set of best tokens whose probability reaches top_p (1 = off);
  7. min-p: keep tokens with p >= min_p * p_max (0 = off);
  8. renormalise and draw with the sampler's own `random.Random(seed)`.
Ranking is by (logit desc, id asc), so every step is deterministic: same seed + same settings +
same logits = same token, always. The loops over the vocabulary live in `_sampling.pyx`.
"""
from __future__ import annotations

import math
import random
from array import array
from dataclasses import dataclass, replace
from typing import Iterable, Optional

from . import _sampling, defaults
from .errors import InvalidArgumentError, brief


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = defaults.TEMPERATURE  # 0 = greedy
    top_k: int = defaults.TOP_K  # 0 = off
    top_p: float = defaults.TOP_P  # 1 = off
    min_p: float = defaults.MIN_P  # 0 = off
    repeat_penalty: float = defaults.REPEAT_PENALTY  # 1 = off
    repeat_last_n: int = defaults.REPEAT_LAST_N  # how many recent tokens the penalty looks at
    seed: Optional[int] = None  # None = a fresh random seed per sampler

    def __post_init__(self):
        self.validate()

    def validate(self) -> "SamplingParams":
        def number(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidArgumentError(f"{name} must be a number, got {brief(v)}")
            if not math.isfinite(v):
                raise InvalidArgumentError(f"{name} must be finite, got {brief(v)}")
            return v

        def integer(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgumentError(f"{name} must be an integer, got {brief(v)}")
            return v

        if number("temperature") < 0:
            raise InvalidArgumentError(f"temperature must be >= 0 (0 = greedy), got {brief(self.temperature)}")
        if integer("top_k") < 0:
            raise InvalidArgumentError(f"top_k must be >= 0 (0 = off), got {brief(self.top_k)}")
        if not 0 < number("top_p") <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1] (1 = off), got {brief(self.top_p)}")
        if not 0 <= number("min_p") <= 1:
            raise InvalidArgumentError(f"min_p must be in [0, 1] (0 = off), got {brief(self.min_p)}")
        if number("repeat_penalty") <= 0:
            raise InvalidArgumentError(f"repeat_penalty must be > 0 (1 = off), got {brief(self.repeat_penalty)}")
        if integer("repeat_last_n") < 0:
            raise InvalidArgumentError(f"repeat_last_n must be >= 0, got {brief(self.repeat_last_n)}")
        if self.seed is not None:
            integer("seed")
        return self

    def replace(self, **changes) -> "SamplingParams":
        return replace(self, **changes)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Draws token ids for one generation: SamplingParams + its own RNG + work buffers for one vocab."""

    def __init__(self, params: SamplingParams, vocab_size: int):
        self.params = params
        self.seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**32)
        self._rng = random.Random(self.seed)
        self._core = _sampling.SamplerCore(vocab_size)
        self._no_ids = array("i")

    def _penalty_ids(self, recent: Optional[Iterable[int]]):
        p = self.params
        if p.repeat_penalty == 1.0 or p.repeat_last_n == 0 or not recent:
            return self._no_ids
        recent = list(recent)[-p.repeat_last_n:]
        return array("i", sorted(set(recent)))

    def sample(self, logits, recent: Optional[Iterable[int]] = None) -> int:
        """Next token id from `logits` (float32 buffer, shape (vocab,)); `recent` = tokens so far."""
        p = self.params
        # Draw r even when greedy, so that the stream of random numbers never depends on the path.
        r = self._rng.random()
        return self._core.sample(
            _f32(logits), self._penalty_ids(recent), p.repeat_penalty, p.temperature, p.top_k, p.top_p, p.min_p, r
        )

    def distribution(self, logits, recent: Optional[Iterable[int]] = None):
        """The filtered distribution `sample` draws from: (ids, probs), most likely first."""
        p = self.params
        return self._core.filtered(
            _f32(logits), self._penalty_ids(recent), p.repeat_penalty, p.temperature, p.top_k, p.top_p, p.min_p
        )


def _f32(logits):
    """`logits` as a 1-D float32 memoryview (memoryview, array('f'), numpy), without copying."""
    mv = memoryview(logits)
    if mv.ndim != 1 or mv.format != "f":
        raise InvalidArgumentError(f"logits must be a 1-D float32 buffer, got format {mv.format!r} with {mv.ndim} dims")
    return mv
