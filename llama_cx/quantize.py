"""`llama-cx quantize`: a checkpoint in F32 / F16 / BF16 (Meta directory or .pth, Hugging Face directory, GGUF)
-> a quantized llama GGUF that llama.cpp loads, written by our own GGUF writer (no torch, no gguf package).

    llama_cx.quantize("Llama3.2-1B/", "llama-1b-q4_k_m.gguf", "q4_k_m")

Which type each tensor gets follows llama.cpp's recipe (src/llama-quant.cpp, llama_tensor_get_type_impl, no
importance matrix): the mixture of the _S / _M / _L types, Q6_K for the output matrix (and for tied embeddings),
and the fallback to a 32-block type when a row length is not a multiple of 256. The blocks themselves are
ggml's reference quantizers (csrc/kernels/generic/quantize.c). 1-D tensors (norms) stay F32.

Tensor rows are written as the checkpoint holds them under Meta's names: a GGUF's attn_q / attn_k rows are
Meta's interleaved-pair layout already (see formats/gguf_llama.py), so no permutation is needed here.
"""
from __future__ import annotations

import os
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from . import dtypes
from .errors import FormatError, InvalidArgumentError
from .formats import open_checkpoint
from .formats.gguf_llama import _llama_rope_factors, gguf_name
from .formats.gguf_writer import GGUFWriter

# ggml_type ids
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14

# name -> (llama_ftype written as general.file_type, the default ggml type of the mixture); llama.h llama_ftype
FILE_TYPES: Dict[str, Tuple[int, int]] = {
    "q4_0": (2, Q4_0), "q4_1": (3, Q4_1), "q8_0": (7, Q8_0), "q5_0": (8, Q5_0), "q5_1": (9, Q5_1),
    "q2_k": (10, Q2_K), "q3_k_s": (11, Q3_K), "q3_k_m": (12, Q3_K), "q3_k_l": (13, Q3_K),
    "q4_k_s": (14, Q4_K), "q4_k_m": (15, Q4_K), "q5_k_s": (16, Q5_K), "q5_k_m": (17, Q5_K), "q6_k": (18, Q6_K),
}
_FALLBACK = {Q2_K: Q4_0, Q3_K: Q4_0, Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}  # llama-quant.cpp tensor_type_fallback


def _name(ggml_type: int) -> str:
    return dtypes.BY_GGML_ID[ggml_type].ggml_name


# ---- the recipe ------------------------------------------------------------------------------------------------

def _use_more_bits(i: int, n: int) -> bool:
    """The layers llama.cpp gives more bits in the _M mixtures: the first and last eighth, and every third."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _category(name: str) -> str:
    if name == "token_embd.weight":
        return "token_embd"
    if name == "output.weight":
        return "output"
    for c in ("attn_v", "attn_k", "attn_q", "attn_output", "ffn_down", "ffn_gate", "ffn_up"):
        if name.endswith(f".{c}.weight"):
            return c
    return "other"


def choose_types(tensors: List[Tuple[str, Tuple[int, ...]]], kind: str, n_layers: int, n_gqa: int) -> Dict[str, int]:
    """{GGUF name: ggml type} for `tensors` ((name, row-major shape), in file order) quantized as `kind` (a
    FILE_TYPES name): llama.cpp's llama_tensor_get_type for a llama model without an importance matrix."""
    ftype, default = FILE_TYPES[kind]
    tied = not any(n == "output.weight" for n, _ in tensors)
    n_attn_v = sum(_category(n) == "attn_v" for n, _ in tensors)
    i_attn_v = i_ffn_down = 0
    out = {}
    for name, shape in tensors:
        if len(shape) < 2 or not name.endswith("weight") or "_norm.weight" in name:
            out[name] = F32  # llama.cpp quantizes only 2-D weights that are not norms; ours are F32 (or given so)
            continue
        cat, ncols, t = _category(name), shape[-1], default
        if cat == "output" or (tied and cat == "token_embd"):
            block = dtypes.BY_GGML_ID[default].block_size
            if ncols % block:
                t = Q8_0
            elif t != Q8_0:
                t = Q6_K
        elif cat == "attn_v":
            if kind == "q2_k":
                t = Q4_K if n_gqa >= 4 else Q3_K
            elif kind == "q3_k_m":
                t = Q5_K if i_attn_v < 2 else Q4_K
            elif kind == "q3_k_l":
                t = Q5_K
            elif kind in ("q4_k_m", "q5_k_m") and _use_more_bits(i_attn_v, n_attn_v):
                t = Q6_K
            elif kind == "q4_k_s" and i_attn_v < 4:
                t = Q5_K
            if n_layers == 80 and n_gqa > 1 and t in (Q3_K, Q4_K):  # LLM_TYPE_70B: attn_v is 8x smaller there
                t = Q5_K
            i_attn_v += 1
        elif cat == "ffn_down":
            i, n = i_ffn_down, n_layers
            if kind == "q2_k":
                t = Q3_K
            elif kind == "q3_k_m":
                t = Q5_K if i < n // 16 else Q4_K
            elif kind == "q3_k_l":
                t = Q5_K
            elif kind == "q4_k_m" and _use_more_bits(i, n):
                t = Q6_K
            elif kind == "q5_k_m" and _use_more_bits(i, n):
                t = Q6_K
            elif kind == "q4_k_s" and i < n // 8:
                t = Q5_K
            i_ffn_down += 1
        elif cat == "attn_output":
            t = {"q2_k": Q3_K, "q3_k_m": Q4_K, "q3_k_l": Q5_K}.get(kind, t)
        # a row length the type's blocks do not divide: the nearest 32-block type, else F16
        if ncols % dtypes.BY_GGML_ID[t].block_size:
            t = _FALLBACK.get(t, t)
            if ncols % dtypes.BY_GGML_ID[t].block_size:
                t = F16
        out[name] = t
    return out


# ---- metadata --------------------------------------------------------------------------------------------------

def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte -> printable character map, the alphabet of every byte-level BPE vocabulary in a GGUF."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template: what convert_hf_to_gguf copies for Llama 3, and
# what llama.cpp (and llama_cx) recognise as the Llama 3 chat format. A Meta directory does not say whether it is an
# instruct model; the template costs nothing on a base model.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _tiktoken_metadata(path: str) -> List[tuple]:
    """tokenizer.ggml.* for Meta's Llama 3 tokenizer.model, as convert_hf_to_gguf writes its HF twin: "gpt2"
    tokens in GPT-2's byte alphabet, the 256 special tokens as control tokens, and the merges recovered from the
    ranks the way transformers' TikTokenConverter does (every split of a token into two tokens, by rank)."""
    from .tokenizers.tiktoken_format import llama3_vocab

    v = llama3_vocab(path)
    base = [b for b in v["token_bytes"] if b is not None]
    rank = {b: i for i, b in enumerate(base)}
    enc = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(enc[c] for c in b)

    merges = []
    for r, tok in enumerate(base):
        if len(tok) < 2:
            continue
        local = [(rank[tok[:k]], rank[tok[k:]]) for k in range(1, len(tok)) if tok[:k] in rank and tok[k:] in rank]
        merges.extend(sorted(local))
    merges = [f"{text(base[a])} {text(base[b])}" for a, b in merges]
    special = sorted(v["special_tokens"].items(), key=lambda kv: kv[1])
    tokens = [text(b) for b in base] + [name for name, _ in special]
    types = [1] * len(base) + [3] * len(special)
    return [
        ("tokenizer.ggml.model", "gpt2", "string"), ("tokenizer.ggml.pre", "llama-bpe", "string"),
        ("tokenizer.ggml.tokens", tokens, "array[string]"), ("tokenizer.ggml.token_type", types, "array[int32]"),
        ("tokenizer.ggml.merges", merges, "array[string]"),
        ("tokenizer.ggml.bos_token_id", v["bos_id"], "uint32"), ("tokenizer.ggml.eos_token_id", v["eos_id"], "uint32"),
        ("tokenizer.ggml.padding_token_id", v["pad_id"], "uint32"),
        ("tokenizer.ggml.add_bos_token", True, "bool"),
        ("tokenizer.chat_template", LLAMA3_CHAT_TEMPLATE, "string"),
    ]


def _spm_metadata(path: str) -> List[tuple]:
    """tokenizer.ggml.* for a SentencePiece tokenizer.model (Llama 2): model "llama", pieces, scores, types."""
    from .tokenizers import _protobuf as pb
    from .tokenizers.spm import _MODEL_PROTO, _read_model_file

    proto = pb.decode(_read_model_file(path), _MODEL_PROTO, path)
    pieces = proto.get("pieces", [])
    trainer = proto.get("trainer_spec", {})
    md = [
        ("tokenizer.ggml.model", "llama", "string"), ("tokenizer.ggml.pre", "default", "string"),
        ("tokenizer.ggml.tokens", [p["piece"] for p in pieces], "array[string]"),
        ("tokenizer.ggml.scores", [float(p.get("score", 0.0)) for p in pieces], "array[float32]"),
        ("tokenizer.ggml.token_type", [int(p.get("type", 1)) for p in pieces], "array[int32]"),
    ]
    for key, proto_key, default in (("bos", "bos_id", 1), ("eos", "eos_id", 2), ("unknown", "unk_id", 0)):
        tid = trainer.get(proto_key, default)
        if 0 <= tid < len(pieces):
            md.append((f"tokenizer.ggml.{key}_token_id", tid, "uint32"))
    md += [("tokenizer.ggml.add_bos_token", True, "bool"), ("tokenizer.ggml.add_eos_token", False, "bool")]
    return md


def _hf_json_metadata(directory: str) -> List[tuple]:
    """tokenizer.ggml.* for a Hugging Face tokenizer.json (byte-level BPE), as convert_hf_to_gguf's
    _set_vocab_gpt2: vocab + added tokens (special ones as control tokens), merges, bos/eos from the configs."""
    import json

    from .tokenizers.hf_json import load_hf_tokenizer
    from .tokenizers.tiktoken_format import LLAMA3_PATTERN

    with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tok = load_hf_tokenizer(directory)  # checks the file and knows bos / eos
    vocab = dict(tj["model"]["vocab"])
    types = {}
    for a in tj.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        types[a["id"]] = 3 if a.get("special") else 4
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    # llama.cpp's name for the pre-tokenizer (llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_*) of each pattern we read
    pre = {"llama3": "llama-bpe", LLAMA3_PATTERN: "llama-bpe", "gpt2": "gpt-2", "smollm": "smollm"}.get(tok.pattern)
    if pre is None:
        raise FormatError(f"{directory}: tokenizer.json's pre-tokenizer has no llama.cpp name we know")
    md = [
        ("tokenizer.ggml.model", "gpt2", "string"), ("tokenizer.ggml.pre", pre, "string"),
        ("tokenizer.ggml.tokens", tokens, "array[string]"),
        ("tokenizer.ggml.token_type", [types.get(i, 1) for i in range(n)], "array[int32]"),
        ("tokenizer.ggml.merges", merges, "array[string]"),
    ]
    if tok.bos_id is not None:
        md.append(("tokenizer.ggml.bos_token_id", tok.bos_id, "uint32"))
    if tok.eos_id is not None:
        md.append(("tokenizer.ggml.eos_token_id", tok.eos_id, "uint32"))
    md.append(("tokenizer.ggml.add_bos_token", bool(tok.add_bos), "bool"))
    if tok.chat_template:
        md.append(("tokenizer.chat_template", tok.chat_template, "string"))
    return md


def _tokenizer_metadata(ck, gguf_in) -> Tuple[List[tuple], Optional[str]]:
    """(metadata entries, a note when none could be written) for the checkpoint's tokenizer."""
    spec = ck.tokenizer
    if gguf_in is not None:
        md = [(k, v, gguf_in.metadata_types[k]) for k, v in gguf_in.metadata.items() if k.startswith("tokenizer.")]
        return md, None if md else "the input GGUF has no tokenizer metadata"
    if spec is None:
        return [], "no tokenizer found beside the checkpoint: the GGUF holds the weights only"
    if spec.kind == "tiktoken":
        return _tiktoken_metadata(spec.path), None
    if spec.kind == "spm":
        return _spm_metadata(spec.path), None
    if spec.kind == "hf_json":
        return _hf_json_metadata(spec.path), None
    return [], f"tokenizer kind {spec.kind} cannot be written to GGUF"


def _model_metadata(ck, kind: str, name: str) -> List[tuple]:
    c = ck.config
    md = [
        ("general.architecture", "llama", "string"), ("general.name", name, "string"),
        ("llama.block_count", c.n_layers, "uint32"), ("llama.context_length", c.max_seq_len, "uint32"),
        ("llama.embedding_length", c.dim, "uint32"), ("llama.feed_forward_length", c.hidden_dim, "uint32"),
        ("llama.attention.head_count", c.n_heads, "uint32"), ("llama.attention.head_count_kv", c.n_kv_heads, "uint32"),
        ("llama.rope.freq_base", float(c.rope_theta), "float32"),
        ("llama.attention.layer_norm_rms_epsilon", float(c.norm_eps), "float32"),
    ]
    if c.head_dim != c.dim // c.n_heads:
        md += [("llama.attention.key_length", c.head_dim, "uint32"), ("llama.attention.value_length", c.head_dim, "uint32")]
    md += [
        ("general.file_type", FILE_TYPES[kind][0], "uint32"),
        ("llama.vocab_size", c.vocab_size, "uint32"), ("llama.rope.dimension_count", c.head_dim, "uint32"),
        ("general.quantization_version", 2, "uint32"),  # GGML_QNT_VERSION
    ]
    return md


# ---- the tool --------------------------------------------------------------------------------------------------

@dataclass
class QuantizeResult:
    path: str
    kind: str
    types: Dict[str, int]  # GGUF tensor name -> ggml type written
    in_bytes: int  # the input's tensor bytes
    out_bytes: int  # the output file's size
    seconds: float
    notes: List[str] = field(default_factory=list)

    def type_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for t in self.types.values():
            counts[_name(t)] = counts.get(_name(t), 0) + 1
        return counts


def _f32_rows(t) -> array:
    """A tensor's values as a fresh float32 array (row-major)."""
    from . import _kernels

    if t.dtype == "f32":
        out = array("f")
        out.frombytes(t.memoryview())
        return out
    out = array("f", bytes(4 * t.numel))
    _kernels.to_f32(t.memoryview(), t.dtype, out, t.numel)
    return out


def quantize(in_path, out_path, type: str = "q4_k_m", progress: Optional[Callable[[int, int, str], None]] = None,
             name: Optional[str] = None) -> QuantizeResult:
    """Quantize the checkpoint at in_path (F32/F16/BF16: Meta directory or .pth, HF directory, GGUF) into a llama
    GGUF at out_path. type: a FILE_TYPES name (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s/m/l, q4_k_s/m,
    q5_k_s/m, q6_k). progress(done, total, tensor name) is called before each tensor."""
    from . import _kernels

    kind = str(type).lower()
    if kind not in FILE_TYPES:
        raise InvalidArgumentError(f"unknown quantization type {type!r} (choose from {', '.join(FILE_TYPES)})")
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    if not os.path.exists(in_path):
        raise FormatError(f"{in_path}: no such file or directory")
    if os.path.exists(out_path) and os.path.samefile(in_path, out_path):
        raise InvalidArgumentError(f"{out_path}: the output would overwrite the input")
    t0 = time.perf_counter()
    gguf_in = None
    from .formats import sniff

    if not os.path.isdir(in_path) and sniff(in_path) == "gguf":
        from .formats.gguf import GGUFFile

        gguf_in = GGUFFile(in_path)
        bad = [ti for ti in gguf_in.tensor_infos if ti.type_name not in ("F32", "F16", "BF16")]
        if bad:
            raise FormatError(f"{in_path}: tensor {bad[0].name} is {bad[0].type_name}; quantize reads F32, F16 or BF16 "
                              f"weights (requantizing a quantized file would add a second rounding)")
    ck = open_checkpoint(in_path)
    c = ck.config
    notes = list(ck.notes)
    for n, t in ck.tensors.items():
        if t.dtype not in ("f32", "f16", "bf16"):
            raise FormatError(f"{in_path}: tensor {n} is {t.dtype}; quantize reads F32, F16 or BF16 weights")

    # file order: rope factors, embeddings, each block, final norm, output (convert_hf_to_gguf's order)
    order = ["tok_embeddings.weight"]
    for i in range(c.n_layers):
        p = f"layers.{i}."
        order += [p + s + ".weight" for s in ("attention_norm", "attention.wq", "attention.wk", "attention.wv",
                                             "attention.wo", "ffn_norm", "feed_forward.w1", "feed_forward.w3",
                                             "feed_forward.w2")]
    order += ["norm.weight"] + (["output.weight"] if "output.weight" in ck.tensors else [])
    plan = [(gguf_name(n), ck.tensors[n]) for n in order]
    types = choose_types([(g, t.shape) for g, t in plan], kind, c.n_layers, c.n_heads // c.n_kv_heads)

    w = GGUFWriter(out_path)
    label = name or ck.name
    for key, value, vtype in _model_metadata(ck, kind, label):
        w.add(key, value, vtype)
    tok_md, note = _tokenizer_metadata(ck, gguf_in)
    for key, value, vtype in tok_md:
        w.add(key, value, vtype)
    if note:
        notes.append(note)
    rope = None
    if c.use_scaled_rope:  # llama.cpp reads Llama 3.1 rope scaling from this tensor (LlamaModel.generate_extra_tensors)
        rope = array("f", _llama_rope_factors(c.head_dim, c.rope_theta, c.rope_scale_factor, c.rope_original_context))
        w.add_tensor("rope_freqs.weight", (len(rope),), F32)
        types = {"rope_freqs.weight": F32, **types}
    for g, t in plan:
        w.add_tensor(g, t.shape, types[g])

    total = len(plan)
    in_bytes = sum(t.nbytes for _, t in plan)
    with w.data() as put:
        if rope is not None:
            put(rope)
        for k, (g, t) in enumerate(plan):
            if progress is not None:
                progress(k, total, g)
            x = _f32_rows(t)
            qt = types[g]
            if qt == F32:
                put(x)
            elif qt == F16:
                put(struct.pack(f"<{len(x)}e", *x))
            else:
                rows, cols = t.numel // t.shape[-1], t.shape[-1]
                buf = bytearray(rows * _kernels.quant_row_bytes(qt, cols))
                _kernels.quantize_rows(qt, x, buf, rows, cols)
                put(buf)
            del x
        if progress is not None:
            progress(total, total, "")
    if gguf_in is not None:
        gguf_in.close()
    return QuantizeResult(out_path, kind, types, in_bytes, os.path.getsize(out_path), time.perf_counter() - t0, notes)


def progress_line(stream=None) -> Callable[[int, int, str], None]:
    """A progress(done, total, name) callback that redraws one line on stream (stderr)."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()

    def show(done: int, total: int, name: str) -> None:
        width = 30
        fill = width * done // max(total, 1)
        line = f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {name}"
        if tty:
            stream.write("\r" + line.ljust(78)[:100])
            if done == total:
                stream.write("\n")
        elif done == total or done % max(1, total // 10) == 0:
            stream.write(line + "\n")
        stream.flush()

    return show
