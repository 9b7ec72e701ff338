"""Hugging Face Llama directories: config.json + model.safetensors (or shards + model.safetensors.index.json)
+ tokenizer.json / tokenizer_config.json, loaded as the same Checkpoint record as Meta's and GGUF files.

Tensor names map to Meta's (model.layers.3.mlp.gate_proj.weight -> layers.3.feed_forward.w1.weight) and every
weight is a zero-copy view into the mapped safetensors files, except q_proj and k_proj:

Q/K row layout. transformers' convert_llama_weights_to_hf.py stores wq / wk with the rows of each head
permuted (`permute`: view (n_heads, head_dim/2, 2, dim), transpose(1, 2)), so that HF's rotate_half RoPE, which
pairs dimension i with i + head_dim/2, computes what Meta's RoPE computes on adjacent pairs (2i, 2i+1). Our
kernels rotate adjacent pairs, so the loader undoes the permutation: it copies those two matrices per layer,
rows reordered, into one buffer at load (head_dim/2 rows from each half of a head, interleaved). Cost: the q
and k matrices take their size again in anonymous memory (Llama 3.1 8B bf16: 1.34 GB beside its 16 GB file;
3.2 1B: 0.17 GB), and load reads them once (the 1B's 160 MiB: 0.15 s warm, 1.1 s with first-touch page
faults, measured on a busy 2-core machine).
The alternative, RoPE in rotate-half order in the C forward pass, needs no copy (the same permutation applied
to q and k within a head leaves q.k unchanged) and is the better end state; it waits for the forward-pass
refactor. Decode speed is the same either way: the same bytes are streamed per token.
"""
from __future__ import annotations

import math
import os
import re
from typing import Dict, List, Optional, Tuple

from .._json import read_json
from .._limits import MAX_PARAMS_JSON
from ..config import ModelConfig
from ..errors import FormatError, LlamaCxError, brief, brief_name
from ..tensor import Tensor, contiguous_strides, weight_buffer
from .checkpoint import Checkpoint, MappedFile, TokenizerSpec, expected_shapes
from .safetensors import SafetensorsFile, open_index, open_safetensors

ARCHITECTURE = "LlamaForCausalLM"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_GLOBAL = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
_BLOCK = {
    "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}
_BLOCK_RE = re.compile(r"model\.layers\.(0|[1-9][0-9]{0,5})\.([a-z_.]+)\.weight")
# Older checkpoints saved RoPE's inverse frequencies as a buffer; they are recomputed from config.json.
_INV_FREQ_RE = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


def meta_name(hf_name: str) -> Optional[str]:
    """The Meta name of an HF Llama tensor, e.g. model.layers.3.mlp.up_proj.weight -> layers.3.feed_forward.w3.weight."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    m = _BLOCK_RE.fullmatch(hf_name)
    if m and m.group(2) in _BLOCK:
        return f"layers.{m.group(1)}.{_BLOCK[m.group(2)]}.weight"
    return None


def hf_name(name: str) -> str:
    """The HF name of a Meta tensor name (inverse of meta_name), for messages."""
    for h, m in _GLOBAL.items():
        if m == name:
            return h
    layer, _, rest = name[len("layers."):].partition(".")
    for h, m in _BLOCK.items():
        if rest == m + ".weight":
            return f"model.layers.{layer}.{h}.weight"
    return name


# ---- config.json -------------------------------------------------------------------------------------------


def config_from_hf(cfg: dict, source: str, rope_scale_factor: Optional[float] = None) -> ModelConfig:
    """ModelConfig from a transformers LlamaConfig dict, 4.x layout (top-level rope_theta / rope_scaling) or
    5.x layout (rope_parameters). Absent keys take LlamaConfig's defaults."""

    def bad(msg):
        raise FormatError(f"{source}: {msg}")

    if not isinstance(cfg, dict):
        bad("expected a JSON object")
    archs = cfg.get("architectures")
    if archs is None:
        if cfg.get("model_type") != "llama":
            bad(f"no architectures and model_type {brief(cfg.get('model_type'))}; llama_cx runs {ARCHITECTURE}")
    elif archs != [ARCHITECTURE]:
        bad(f"architectures {brief(archs)} is not supported (llama_cx runs {ARCHITECTURE})")

    def get_int(key, default=None):
        v = cfg.get(key, default)
        if v is None:
            v = default
        if v is None:
            bad(f"missing required key {key!r}")
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**31:
            bad(f"{key} must be a positive integer, got {brief(v)}")
        return v

    def get_float(d, key, default, where=""):
        v = d.get(key, default)
        if v is None:
            v = default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            bad(f"{where}{key} must be a positive number, got {brief(v)}")
        return float(v)

    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        bad(f"hidden_act {brief(act)} is not supported (Llama uses silu)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key, False) is not False:
            bad(f"{key} = {brief(cfg[key])}: biased projections are not supported")

    dim = get_int("hidden_size")
    n_heads = get_int("num_attention_heads")
    head_dim = get_int("head_dim") if cfg.get("head_dim") is not None else 0

    # RoPE: 5.x nests everything in rope_parameters; 4.x has rope_theta beside an optional rope_scaling
    if cfg.get("rope_parameters") is not None:
        rope, where = cfg["rope_parameters"], "rope_parameters."
        if not isinstance(rope, dict):
            bad(f"rope_parameters must be an object, got {brief(rope)}")
        theta = get_float(rope, "rope_theta", cfg.get("rope_theta", 10000.0), where)
    else:
        rope, where = cfg.get("rope_scaling"), "rope_scaling."
        if rope is not None and not isinstance(rope, dict):
            bad(f"rope_scaling must be an object or null, got {brief(rope)}")
        rope = rope or {}
        theta = get_float(cfg, "rope_theta", 10000.0)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "llama3"):
        bad(f"{where}rope_type {brief(kind)} is not supported (llama_cx supports default and llama3 rope)")
    scaled = kind == "llama3"
    extra = {}
    if scaled:
        factor = get_float(rope, "factor", None, where)
        low = get_float(rope, "low_freq_factor", None, where)
        high = get_float(rope, "high_freq_factor", None, where)
        orig = rope.get("original_max_position_embeddings")
        if isinstance(orig, bool) or not isinstance(orig, int) or not 0 < orig < 2**31:
            bad(f"{where}original_max_position_embeddings must be a positive integer, got {brief(orig)}")
        extra = dict(rope_scale_factor=float(rope_scale_factor) if rope_scale_factor is not None else factor,
                     rope_low_freq_factor=low, rope_high_freq_factor=high, rope_original_context=orig)
    try:
        return ModelConfig(
            dim=dim, n_layers=get_int("num_hidden_layers"), n_heads=n_heads,
            n_kv_heads=get_int("num_key_value_heads", n_heads), vocab_size=get_int("vocab_size"),
            hidden_dim=get_int("intermediate_size"), norm_eps=get_float(cfg, "rms_norm_eps", 1e-6),
            rope_theta=theta, use_scaled_rope=scaled, max_seq_len=get_int("max_position_embeddings", 2048),
            head_dim=head_dim, **extra,
        )
    except FormatError as e:
        bad(str(e).replace("invalid model config: ", ""))


# ---- the directory ---------------------------------------------------------------------------------------------


def _open_weights(path: str) -> Tuple[str, Dict[str, SafetensorsFile], List[SafetensorsFile], str]:
    """(directory, tensor name -> file, files, layout) for an HF directory or one .safetensors file in it."""
    if os.path.isdir(path):
        directory = path
        index = os.path.join(directory, INDEX_NAME)
        single = os.path.join(directory, SINGLE_NAME)
        if os.path.lexists(index):  # lexists here and below: a FIFO or a device is refused by name when opened
            by_tensor, files = open_index(index)
            return directory, by_tensor, files, f"{len(files)} safetensors shards ({INDEX_NAME})"
        path = single  # load checked that one of the two is there
    directory = os.path.dirname(os.path.abspath(path))
    st = open_safetensors(path)
    return directory, {n: st for n in st.entries}, [st], f"one safetensors file ({os.path.basename(path)})"


def load(path, rope_scale_factor: Optional[float] = None, weights: bool = True) -> Checkpoint:
    """Load an HF Llama directory (or one .safetensors file with config.json beside it) as a Checkpoint
    (weights=False: wq / wk stay views in HF's row order, nothing is copied; for describing the model)."""
    path = os.fsdecode(path)
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    config_path = os.path.join(directory, "config.json")
    if not os.path.lexists(config_path):
        raise FormatError(f"{path}: no config.json beside it (a safetensors checkpoint needs its Hugging Face config)")
    if os.path.isdir(path) and not any(os.path.lexists(os.path.join(path, n)) for n in (INDEX_NAME, SINGLE_NAME)):
        raise FormatError(f"{path}: no {SINGLE_NAME} or {INDEX_NAME} (expected a Hugging Face model "
                          f"directory: config.json, model.safetensors, tokenizer.json)")
    raw_cfg = read_json(config_path, MAX_PARAMS_JSON)
    config = config_from_hf(raw_cfg, config_path, rope_scale_factor)
    tie = raw_cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise FormatError(f"{config_path}: tie_word_embeddings must be true or false, got {brief(tie)}")

    directory, by_tensor, files, layout = _open_weights(path)
    where = files[0].path if len(files) == 1 else os.path.join(directory, INDEX_NAME)
    notes: List[str] = []

    def fail(msg):
        raise FormatError(f"{where}: {msg}")

    names: Dict[str, str] = {}  # Meta name -> HF name
    ignored = []
    for h in by_tensor:
        m = meta_name(h)
        if m is None:
            if _INV_FREQ_RE.fullmatch(h):
                ignored.append(h)
                continue
            fail(f"unexpected tensor {brief_name(h)} for a {ARCHITECTURE} (unsupported variant?)")
        names[m] = h
    if ignored:
        notes.append(f"ignored {len(ignored)} rotary_emb.inv_freq buffers (RoPE is recomputed from config.json)")
    if tie and "output.weight" in names:
        notes.append("ignored lm_head.weight: config.json says tie_word_embeddings (transformers ties it too)")
        del names["output.weight"]
    tied = "output.weight" not in names
    if tied and not tie:
        fail("missing tensor lm_head.weight (config.json says tie_word_embeddings is false)")

    # Bound the work by the layers the files hold before sizing anything from num_hidden_layers.
    layers = {int(m.group(1)) for m in map(_BLOCK_RE.fullmatch, names.values()) if m}
    if config.n_layers > len(layers):
        first = min(set(range(len(layers) + 1)) - layers)
        fail(f"missing tensor model.layers.{first}.self_attn.q_proj.weight (config.json says num_hidden_layers="
             f"{config.n_layers} but the checkpoint holds {len(layers)} layers)")
    shapes = expected_shapes(config, tied)
    for m, h in names.items():
        if m not in shapes:
            fail(f"unexpected tensor {brief_name(h)} (config.json says num_hidden_layers={config.n_layers})")
    missing = [m for m in shapes if m not in names]
    if missing:
        fail(f"missing tensor {hf_name(missing[0])} ({len(missing)} missing in all)")

    tensors: Dict[str, Tensor] = {}
    for m, shape in shapes.items():
        t = by_tensor[names[m]].tensor(names[m], as_name=m)
        if t.shape != shape:
            raise FormatError(f"{by_tensor[names[m]].path}: tensor {names[m]} has shape {list(t.shape)}, "
                              f"expected {list(shape)} from config.json")
        tensors[m] = t
    if weights:
        copy = _unpermute_qk(tensors, config, where)
        notes.append(f"q_proj/k_proj rows reordered from HF's rotate-half layout into a copy at load "
                     f"({len(copy) / 2**20:.1f} MiB of memory beside the mapped files)")
    else:
        copy = None
        mib = sum(tensors[f"layers.{i}.attention.{w}.weight"].nbytes for i in range(config.n_layers) for w in ("wq", "wk"))
        notes.append(f"q_proj/k_proj rows reordered from HF's rotate-half layout into a copy at load "
                     f"({mib / 2**20:.1f} MiB of memory beside the mapped files)")

    dtypes = sorted({t.dtype for t in tensors.values()})
    metadata = {
        "dtype": "+".join(dtypes), "tied_embeddings": tied, "n_params": sum(t.numel for t in tensors.values()),
        "config_path": config_path,
    }
    return Checkpoint(
        path=where, format="hf", config=config, tensors=tensors,
        files=[MappedFile(f.path, f.size, f.mm) for f in files], buffers=[copy] if copy is not None else [],
        has_weights=weights,
        tokenizer=_tokenizer(directory, notes), metadata=metadata, notes=notes,
        format_description=f"Hugging Face: config.json + {layout}", tokenizer_missing="tokenizer.json is missing or unreadable",
        display_name=os.path.basename(os.path.abspath(directory)),
    )


def _unpermute_qk(tensors: Dict[str, Tensor], c: ModelConfig, where: str):
    """Replace every wq / wk view by a copy in Meta's row order; returns the buffer that holds the copies.

    Within a head, HF row j * head_dim/2 + i (j = 0, 1) is Meta row 2i + j (the inverse of transformers'
    `permute`): (n_heads, 2, head_dim/2, dim) -> (n_heads, head_dim/2, 2, dim)."""
    todo = []
    for i in range(c.n_layers):
        todo.append((f"layers.{i}.attention.wq.weight", c.n_heads))
        todo.append((f"layers.{i}.attention.wk.weight", c.n_kv_heads))
    total = sum(tensors[n].nbytes for n, _ in todo)
    try:
        buf = weight_buffer(total)
    except MemoryError:
        raise LlamaCxError(f"{where}: not enough memory for the reordered q/k copy ({total / 2**30:.1f} GiB)") from None
    half = c.head_dim // 2
    at = 0
    with memoryview(buf) as dst:
        for name, n_heads in todo:
            t = tensors[name]
            row = t.shape[1] * t.itemsize  # bytes per row
            with t.memoryview() as src:
                for h in range(n_heads):
                    base = h * c.head_dim * row
                    for i in range(half):
                        d = at + base + 2 * i * row
                        s = base + i * row
                        dst[d : d + row] = src[s : s + row]
                        dst[d + row : d + 2 * row] = src[s + half * row : s + (half + 1) * row]
            tensors[name] = Tensor(t.dtype, t.shape, contiguous_strides(t.shape), at, buf, name)
            at += t.nbytes
    return buf


def _tokenizer(directory: str, notes: List[str]) -> Optional[TokenizerSpec]:
    """tokenizer.json (with tokenizer_config.json, generation_config.json beside it), when present; one that cannot
    be read leaves a note (llama_cx.tokenizers.from_spec), the weights still run on token ids."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.lexists(path):
        notes.append("no tokenizer.json: token ids only")
        return None
    return TokenizerSpec("hf_json", path, path=directory, required=False)
