"""Defaults shared by every entry point (library calls, ChatSession, the CLI): each defined here once.

Pure Python with no imports, so the CLI can show them in --help without loading the compiled core.
"""

CONTEXT = 4096  # positions of a context when none is asked for, capped by the model's max_seq_len
MAX_TOKENS = 256  # tokens a generation makes at most

# sampling (llama_cx.sampling.SamplingParams)
TEMPERATURE = 0.6  # Meta's default for Llama 3 chat; 0 = greedy
TOP_K = 0  # 0 = off
TOP_P = 0.9  # Meta's default; 1 = off
MIN_P = 0.0  # 0 = off
REPEAT_PENALTY = 1.0  # 1 = off
REPEAT_LAST_N = 64  # how many recent tokens the penalty looks at

# `llama-cx chat` and `demo` replies. Without a length cap or a repeat penalty the 135M demo model looped until the
# context was full in 2 of 8 replies; these are what chat front-ends use: a reply cap, and llama.cpp's
# long-standing repeat penalty, 1.1 over the last 64 tokens (Ollama's defaults are the same penalty and window).
# Both give way to what the model file recommends (GGUF general.sampling.*, Checkpoint.sampling), and that to flags.
CHAT_MAX_TOKENS = 512
CHAT_REPEAT_PENALTY = 1.1
CHAT_REPEAT_LAST_N = 64
