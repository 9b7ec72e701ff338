"""Sampling defaults for chat: what the model file recommends, else what chat front-ends use.

A chat reply without a length cap or a repeat penalty can loop until the context is full (the 135M demo
model did in 2 of 8 replies). The console's `chat` and `demo` therefore start from
  - the settings the model file states (GGUF `general.sampling.*`, written by llama.cpp's converter from a
    model's generation_config.json), where present;
  - else CHAT_DEFAULTS: a reply cap of 512 tokens and llama.cpp's long-standing repeat penalty, 1.1 over the
    last 64 tokens (Ollama's defaults are the same penalty and window).
Flags given by the user win over both.
"""
from __future__ import annotations

import math
from typing import Dict

CHAT_DEFAULTS = {"max_tokens": 512, "repeat_penalty": 1.1, "repeat_last_n": 64}

# GGUF key -> (SamplingParams field, type)
GGUF_SAMPLING_KEYS = {
    "general.sampling.temp": ("temperature", float),
    "general.sampling.top_k": ("top_k", int),
    "general.sampling.top_p": ("top_p", float),
    "general.sampling.min_p": ("min_p", float),
    "general.sampling.penalty_repeat": ("repeat_penalty", float),
    "general.sampling.penalty_last_n": ("repeat_last_n", int),
}


def recommended_sampling(metadata: dict) -> Dict[str, float]:
    """The sampling settings a model file recommends (only valid ones; a bad value is ignored)."""
    from .errors import InvalidArgumentError
    from .sampling import SamplingParams

    out = {}
    for key, (field, kind) in GGUF_SAMPLING_KEYS.items():
        v = metadata.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        if kind is int and v != int(v):
            continue
        try:
            SamplingParams(**{field: kind(v)})
        except InvalidArgumentError:
            continue
        out[field] = kind(v)
    return out
