"""llama_cx: a CPU inference engine for Meta Llama models (Meta checkpoints and GGUF, no torch at run time)."""
from . import _threads

_threads.prepare_environment()  # OpenMP settings, before a compiled module loads libgomp
try:
    from . import _kernels, _sampling  # noqa: F401
except ImportError as _e:
    from ._build_hint import missing_build_message

    raise ImportError(missing_build_message(_e)) from None
finally:
    _threads.restore_environment()
_threads.say_notices()  # e.g. an OMP_NUM_THREADS libgomp would have warned about: one line on stderr
from ._version import __version__
from .config import ModelConfig
from .errors import (ContextLengthError, FormatError, InvalidArgumentError, LlamaCxError, TokenizerError,
                     TokenizerMissingError, UnsafePickleError)
from .generate import ChatSession, Generation, GenerationStats, generate, generate_tokens
from .llama import Llama
from .model import Context, Model, load
from .perplexity import perplexity
from .quantize import quantize
from .runtime import (check_environment, cpu_info, get_bf16_decode, get_bf16_prefill, get_num_threads,
                      set_bf16_decode, set_bf16_prefill, set_num_threads, get_q8_prefill,
                      set_q8_prefill)
from .sampling import Sampler, SamplingParams
from .tokenizers import SentencePieceTokenizer, Tokenizer
from .tokenizers.chat_format import ChatFormat, ChatMLFormat, chat_format_for
from .tokenizers.chat_llama2 import Llama2ChatFormat
from .trace import trace

__all__ = [
    "__version__", "load", "Model", "Context", "ModelConfig", "Tokenizer", "SentencePieceTokenizer", "ChatFormat",
    "ChatMLFormat", "Llama2ChatFormat", "chat_format_for", "generate", "generate_tokens", "Generation",
    "GenerationStats", "ChatSession", "Sampler", "SamplingParams", "Llama", "check_environment", "cpu_info",
    "set_num_threads", "get_num_threads", "set_bf16_prefill", "get_bf16_prefill", "set_bf16_decode", "get_bf16_decode",
    "set_q8_prefill", "get_q8_prefill",
    "trace", "quantize", "perplexity", "LlamaCxError", "FormatError",
    "UnsafePickleError", "TokenizerError", "InvalidArgumentError", "TokenizerMissingError", "ContextLengthError",
]
