"""llama_cx: a CPU inference engine for Meta Llama models (Meta checkpoints and GGUF, no torch at run time)."""
from ._version import __version__
from .chat_format import ChatFormat, ChatMLFormat, chat_format_for
from .config import ModelConfig
from .errors import (ContextLengthError, FormatError, InvalidArgumentError, LlamaCxError, TokenizerError,
                     TokenizerMissingError, UnsafePickleError)
from .generate import ChatSession, Generation, GenerationStats, generate, generate_tokens
from .llama import Llama
from .model import Context, Model, load
from .runtime import (cpu_info, get_bf16_decode, get_bf16_prefill, get_num_threads, set_bf16_decode, set_bf16_prefill,
                      set_num_threads)
from .sampling import Sampler, SamplingParams
from .tokenizer import Tokenizer

__all__ = [
    "__version__", "load", "Model", "Context", "ModelConfig", "Tokenizer", "ChatFormat", "ChatMLFormat",
    "chat_format_for", "generate", "generate_tokens", "Generation", "GenerationStats", "ChatSession",
    "Sampler", "SamplingParams", "Llama", "cpu_info", "set_num_threads", "get_num_threads", "set_bf16_prefill",
    "get_bf16_prefill", "set_bf16_decode", "get_bf16_decode", "LlamaCxError", "FormatError",
    "UnsafePickleError", "TokenizerError", "InvalidArgumentError", "TokenizerMissingError", "ContextLengthError",
]
