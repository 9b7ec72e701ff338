"""The `llama-cx` console (also `python -m llama_cx`).

    llama-cx MODEL                       interactive menu of predefined prompts (as in Llama Nuts and Bolts)
    llama-cx generate MODEL -p PROMPT    stream a completion to stdout, stats to stderr
    llama-cx chat MODEL                  interactive chat (/reset, /system TEXT, /stats, /exit)
    llama-cx info MODEL [--tensors]      what the checkpoint holds
    llama-cx demo [-p PROMPT]            chat with the demo model (SmolLM2-135M-Instruct, fetched once)
    llama-cx trace MODEL -p TEXT         every stage of every layer (trace.py); also trace-diff A B
    llama-cx serve MODEL [--port 8000]   OpenAI-compatible HTTP server (llama_cx/server/)
    llama-cx quantize IN OUT --type T    a quantized GGUF (tools.py); also perplexity MODEL FILE

MODEL is a Meta checkpoint directory, a .pth or a .gguf file; $LLAMA_CX_MODEL is the default, and
chat/generate/demo fall back to the demo model. A user mistake is one line on stderr,
`llama-cx: error: ...`, and a non-zero exit status: 1 for bad input, 2 for bad usage, 130 for Ctrl-C.
"""
from .main import main

__all__ = ["main"]
