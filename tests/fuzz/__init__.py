"""Fuzz harnesses for every parser that reads untrusted bytes, driven by hypothesis.

Each target module in this package (one per input format) defines
    NAME                        the name `scripts/fuzz.py --target` takes
    seeds() -> list[Seed]       seed inputs, generated at run time from real files (nothing binary is committed)
    execute(data: bytes)        feed one input to llama_cx; a LlamaCxError is a clean refusal
    inputs(seeds) (optional)    a hypothesis strategy of Input; default: mutations of the seeds (_engine.mutations)
    TIMEOUT (optional)          seconds one execution may take before it counts as a hang

_engine.run(name, ...) runs one target: every seed once, then hypothesis-generated inputs, counting
executions; anything but success or a one-line LlamaCxError (IndexError, struct.error, MemoryError,
RecursionError, OverflowError, UnicodeDecodeError, a hang, ...) is a finding, shrunk by hypothesis to a minimal
input. tests/test_fuzz.py runs each target for a short deterministic budget; scripts/fuzz.py for longer.
"""

TARGETS = ("zip", "unpickle", "pth", "params_json", "tiktoken", "gguf", "tokenizer", "spm", "safetensors")
