"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

    llama_cx_requests_total{endpoint, status}          counter: finished HTTP requests by route and status code
    llama_cx_prompt_tokens_total                       counter: prompt tokens admitted
    llama_cx_prompt_tokens_cached_total                counter: of those, taken from a slot's cache (prefix reuse)
    llama_cx_completion_tokens_total                   counter: tokens generated (usage.completion_tokens)
    llama_cx_queue_depth, llama_cx_slots_busy, llama_cx_slots_total   gauges
    llama_cx_time_to_first_token_seconds               histogram: request received -> first token sampled
    llama_cx_decode_tokens_total, llama_cx_decode_seconds_total       counters: rate() of their ratio = tok/s
    llama_cx_decode_tokens_per_second                  gauge: the same over the last 10 s, for a quick look

Every replica exposes its own numbers; Prometheus sums them across replicas.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Dict, Tuple

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WINDOW_S = 10.0


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Dict[Tuple[str, int], int] = collections.Counter()
        self.prompt_tokens = 0
        self.prompt_tokens_cached = 0
        self.completion_tokens = 0
        self.gauges = {"queue_depth": 0, "slots_busy": 0, "slots_total": 0}
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)  # the last is +Inf
        self.ttft_sum = 0.0
        self.decode_tokens = 0
        self.decode_seconds = 0.0
        self._rounds: collections.deque = collections.deque()  # (time, tokens decoded, seconds)

    # ---- updates (any thread) --------------------------------------------------------------------------
    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def prompt(self, n: int, cached: int) -> None:
        with self._lock:
            self.prompt_tokens += n
            self.prompt_tokens_cached += cached

    def completion(self, n: int) -> None:
        with self._lock:
            self.completion_tokens += n

    def set_gauges(self, **values) -> None:
        with self._lock:
            self.gauges.update(values)

    def first_token(self, seconds: float) -> None:
        with self._lock:
            i = next((i for i, b in enumerate(TTFT_BUCKETS) if seconds <= b), len(TTFT_BUCKETS))
            self.ttft_counts[i] += 1
            self.ttft_sum += seconds

    def round(self, decoded: int, seconds: float) -> None:
        """One scheduler round: `decoded` tokens sampled-and-fed over `seconds` (prefill chunks included)."""
        now = time.monotonic()
        with self._lock:
            self.decode_tokens += decoded
            self.decode_seconds += seconds
            self._rounds.append((now, decoded, seconds))
            while self._rounds and self._rounds[0][0] < now - _WINDOW_S:
                self._rounds.popleft()

    def decode_tok_s(self) -> float:
        with self._lock:
            now = time.monotonic()
            recent = [(n, s) for t, n, s in self._rounds if t >= now - _WINDOW_S]
        busy = sum(s for _, s in recent)
        return sum(n for n, _ in recent) / busy if busy > 0 else 0.0

    # ---- exposition ---------------------------------------------------------------------------------------
    def render(self) -> str:
        rate = self.decode_tok_s()
        with self._lock:
            out = []

            def family(name, kind, help_text):
                out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} {kind}")

            family("llama_cx_requests_total", "counter", "HTTP requests finished, by endpoint and status code.")
            for (endpoint, status), n in sorted(self.requests.items()):
                out.append(f'llama_cx_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            for name, value, help_text in (
                    ("llama_cx_prompt_tokens_total", self.prompt_tokens, "Prompt tokens admitted."),
                    ("llama_cx_prompt_tokens_cached_total", self.prompt_tokens_cached,
                     "Prompt tokens found in a slot's cache (not recomputed)."),
                    ("llama_cx_completion_tokens_total", self.completion_tokens, "Tokens generated."),
                    ("llama_cx_decode_tokens_total", self.decode_tokens, "Tokens sampled and fed in scheduler rounds."),
                    ("llama_cx_decode_seconds_total", self.decode_seconds, "Seconds spent in scheduler rounds.")):
                family(name, "counter", help_text)
                out.append(f"{name} {value}")
            for key, help_text in (("queue_depth", "Requests waiting for a slot."),
                                   ("slots_busy", "Slots serving a request."), ("slots_total", "Slots.")):
                family(f"llama_cx_{key}", "gauge", help_text)
                out.append(f"llama_cx_{key} {self.gauges[key]}")
            family("llama_cx_decode_tokens_per_second", "gauge", "Tokens generated per busy second, last 10 s.")
            out.append(f"llama_cx_decode_tokens_per_second {rate:.3f}")
            name = "llama_cx_time_to_first_token_seconds"
            family(name, "histogram", "Time from request to first generated token.")
            cumulative = 0
            for bound, n in zip(TTFT_BUCKETS + ("+Inf",), self.ttft_counts):
                cumulative += n
                out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
            out.append(f"{name}_sum {self.ttft_sum}")
            out.append(f"{name}_count {cumulative}")
        return "\n".join(out) + "\n"
