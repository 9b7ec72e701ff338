"""Reference tokenizers from Hugging Face, built once per test session (loading a GGUF vocabulary takes ~15 s)."""
import functools
import os


@functools.lru_cache(maxsize=None)
def hf_from_gguf(gguf_path: str):
    """transformers' own tokenizer for a GGUF file (AutoTokenizer with gguf_file), offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))


@functools.lru_cache(maxsize=None)
def hf_smollm2_original(gguf_path: str):
    """The GGUF tokenizer with SmolLM2's own pre-tokenizer (its tokenizer.json: Digits(individual_digits=True),
    then ByteLevel), which llama.cpp's "smollm" pre-tokenizer reproduces. transformers' GGUF loader ignores
    tokenizer.ggml.pre = "smollm" and uses plain ByteLevel, which cuts digit runs differently next to spaces."""
    from tokenizers import Tokenizer, pre_tokenizers

    backend = Tokenizer.from_str(hf_from_gguf(gguf_path).backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return backend


def gguf_metadata(gguf_path: str) -> dict:
    """The file's metadata as a dict of Python values: llama_cx's GGUF reader, or the gguf package's."""
    try:
        from llama_cx.formats.gguf import GGUFFile
    except ImportError:
        GGUFFile = None
    if GGUFFile is not None:
        g = GGUFFile(gguf_path)
        try:
            return dict(g.metadata)
        finally:
            g.close()
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    return {k: f.contents() for k, f in reader.fields.items()}
