"""Hugging Face tokenizer.json (byte-level BPE) -> llama_cx.tokenizers.Tokenizer, the same object a GGUF "gpt2"
vocabulary gives: the same pre-tokenizer scanners and merge loop, only read from another file.

What is read, and from where:
- tokenizer.json `model` (type BPE): `vocab` (byte-level token string -> id), `merges` (rank = index; either
  "a b" strings or [a, b] pairs, as tokenizers >= 0.20 writes them), `ignore_merges`;
- tokenizer.json `pre_tokenizer`: recognised as one of the scanners in _pretokenize.py (the Llama 3
  Split regex + ByteLevel, GPT-2's ByteLevel regex, SmolLM2's Digits + ByteLevel); anything else is refused
  with one line, since a different split silently gives different ids;
- tokenizer.json `added_tokens`: special tokens (never produced from text unless allowed, as everywhere in
  llama_cx; Hugging Face matches them in text by default);
- bos: the special token the post-processor puts first (Llama 3's TemplateProcessing), else tokenizer_config.json
  `bos_token` with `add_bos_token`; eos: tokenizer_config.json `eos_token`; stop ids: eos, generation_config.json
  `eos_token_id` (one id or a list) and the usual end-of-turn tokens;
- chat template: tokenizer_config.json `chat_template` (a string, or a list of named templates: "default"), or
  chat_template.jinja beside it (where transformers >= 4.47 saves it).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from .._json import read_json
from ..errors import FormatError, brief
from .gpt2_bpe import _END_OF_GENERATION, _gguf_token_bytes
from .tiktoken_format import LLAMA3_PATTERN
from .tokenizer import Tokenizer

_MAX_TOKENIZER_BYTES = 64 << 20  # Llama 3's tokenizer.json is 9 MB
_MAX_SMALL_JSON = 4 << 20
_GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_SUPPORTED_PRE = ("Split(Llama 3 regex) + ByteLevel", "ByteLevel (GPT-2 regex)", "Digits(individual) + ByteLevel")


def load_hf_tokenizer(directory: str) -> Tokenizer:
    """The tokenizer of an HF model directory (tokenizer.json, with tokenizer_config.json and
    generation_config.json when present)."""
    path = os.path.join(directory, "tokenizer.json")
    tj = read_json(path, _MAX_TOKENIZER_BYTES, "tokenizer.json")
    tc_path = os.path.join(directory, "tokenizer_config.json")
    tc = read_json(tc_path, _MAX_SMALL_JSON, "tokenizer_config.json") if os.path.isfile(tc_path) else {}
    gc_path = os.path.join(directory, "generation_config.json")
    gc = read_json(gc_path, _MAX_SMALL_JSON, "generation_config.json") if os.path.isfile(gc_path) else {}
    template = _chat_template(directory, tc, tc_path)
    return from_tokenizer_json(tj, path, tokenizer_config=tc if isinstance(tc, dict) else {},
                               generation_config=gc if isinstance(gc, dict) else {}, chat_template=template)


def from_tokenizer_json(tj: dict, source: str, tokenizer_config: Optional[dict] = None,
                        generation_config: Optional[dict] = None, chat_template: Optional[str] = None) -> Tokenizer:
    """A Tokenizer from the parsed tokenizer.json `tj` (and the parsed tokenizer_config / generation_config)."""
    tc, gc = tokenizer_config or {}, generation_config or {}

    def fail(msg):
        raise FormatError(f"{source}: {msg}")

    if not isinstance(tj, dict):
        fail("not a JSON object")
    model = tj.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "merges" not in model:
        fail(f"model type {brief(model.get('type') if isinstance(model, dict) else model)} is not supported "
             f"(llama_cx reads byte-level BPE)")
    if tj.get("normalizer") is not None:
        fail(f"normalizer {brief(tj['normalizer'].get('type') if isinstance(tj['normalizer'], dict) else tj['normalizer'])} "
             f"is not supported (byte-level BPE vocabularies have none)")
    if model.get("byte_fallback"):
        fail("byte_fallback BPE (SentencePiece-style) is not supported here; llama_cx reads byte-level BPE")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            fail(f"model.{key} {brief(model[key])} is not supported")
    if model.get("dropout") not in (None, 0, 0.0):
        fail(f"model.dropout {brief(model['dropout'])} is not supported")
    pattern = _pre_tokenizer(tj.get("pre_tokenizer"), fail)

    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        fail("model.vocab is missing or not an object of token -> id")
    added = tj.get("added_tokens") or []
    if not isinstance(added, list):
        fail("added_tokens is not a list")
    special: Dict[str, int] = {}
    for k, a in enumerate(added):
        if not (isinstance(a, dict) and isinstance(a.get("content"), str) and _is_id(a.get("id"))):
            fail(f"added_tokens[{k}] is not an object with a string content and an integer id")
        special.setdefault(a["content"], a["id"])
    n = max(max(special.values(), default=-1), max((v for v in vocab.values() if _is_id(v)), default=-1)) + 1
    if n > 1 << 24:
        fail(f"a vocabulary of {n} ids is absurdly large")
    token_bytes: List[Optional[bytes]] = [None] * n
    by_text: Dict[str, int] = {}
    seen = set()
    special_ids = set(special.values())
    for text, i in vocab.items():
        if not _is_id(i):
            fail(f"model.vocab[{brief(text)}] = {brief(i)} is not a token id")
        if i in seen:
            fail(f"model.vocab gives id {i} to two tokens")
        seen.add(i)
        by_text[text] = i
        if i not in special_ids:
            token_bytes[i] = _gguf_token_bytes(text)

    merges = _merges(model["merges"], vocab, token_bytes, fail)

    def token(key) -> Optional[str]:
        v = tc.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return v if isinstance(v, str) else None

    def id_of(name: Optional[str], what: str) -> Optional[int]:
        if name is None:
            return None
        i = special.get(name, by_text.get(name))
        if i is None:
            fail(f"{what} {brief(name)} (tokenizer_config.json) is not a token of the vocabulary")
        return i

    bos_first = _post_processor_bos(tj.get("post_processor"))
    add_bos = bos_first is not None or tc.get("add_bos_token") is True
    bos = id_of(bos_first if bos_first is not None else token("bos_token"), "bos_token")
    eos = id_of(token("eos_token"), "eos_token")
    pad = id_of(token("pad_token"), "pad_token")
    gen_eos = gc.get("eos_token_id")
    gen_eos = gen_eos if isinstance(gen_eos, list) else [] if gen_eos is None else [gen_eos]
    for i in gen_eos:
        if not _is_id(i) or i >= n:
            fail(f"generation_config.json eos_token_id {brief(i)} is not a token id (vocabulary of {n})")
    if eos is None and gen_eos:
        eos = gen_eos[0]
    stop = ([eos] if eos is not None else []) + gen_eos + [special[t] for t in _END_OF_GENERATION if t in special]
    return Tokenizer(
        token_bytes=token_bytes, special_tokens=special, merges=merges, pattern=pattern,
        ignore_merges=bool(model.get("ignore_merges", False)), meta_slicing=False, bos_id=bos, eos_id=eos,
        stop_ids=stop, pad_id=pad, source=source, add_bos=add_bos and bos is not None, chat_template=chat_template,
    )


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 24


def _merges(raw, vocab: Dict[str, int], token_bytes, fail) -> List[Tuple[int, int]]:
    """Merges as id pairs, rank = index. The hot loop of a load (Llama 3: 280k merges), so it only asks yes/no;
    the first bad merge is then explained by _bad_merge."""
    if not isinstance(raw, list):
        fail("model.merges is not a list")
    get = vocab.get
    out: List[Tuple[int, int]] = []
    append = out.append
    for m in raw:
        if type(m) is str:
            x, sep, y = m.partition(" ")
            ok = sep and " " not in y
        else:
            ok = type(m) is list and len(m) == 2 and type(m[0]) is str and type(m[1]) is str
            if ok:
                x, y = m
        a = get(x) if ok else None
        b = get(y) if ok else None
        if a is None or b is None or x + y not in vocab or token_bytes[a] is None or token_bytes[b] is None:
            _bad_merge(len(out), m, vocab, token_bytes, fail)
        append((a, b))
    return out


def _bad_merge(k: int, m, vocab, token_bytes, fail):
    parts = m.split(" ") if isinstance(m, str) else m if isinstance(m, list) else ()
    if len(parts) != 2 or not all(isinstance(p, str) and p in vocab for p in parts):
        fail(f"model.merges[{k}] = {brief(m)} is not two tokens of the vocabulary")
    if parts[0] + parts[1] not in vocab:
        fail(f"model.merges[{k}] = {brief(m)} joins to a string that is not a token")
    fail(f"model.merges[{k}] = {brief(m)} merges a special token")


def _pre_tokenizer(pre, fail) -> str:
    """The _pretokenize scanner equivalent to a tokenizer.json pre_tokenizer, or a one-line refusal."""
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        fail(f"pre_tokenizer {brief(pre)} is not supported")
    kinds = [s.get("type") for s in steps]
    last = steps[-1]
    if kinds[-1] != "ByteLevel" or last.get("add_prefix_space", False):
        fail(f"pre_tokenizer {_describe(steps)} is not supported (supported: {'; '.join(_SUPPORTED_PRE)})")
    regex = last.get("use_regex", True)
    if kinds == ["ByteLevel"] and regex:
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and regex and steps[0].get("individual_digits") is True:
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not regex:
        split = steps[0]
        pat = split.get("pattern")
        pat = pat.get("Regex") if isinstance(pat, dict) else None
        if split.get("behavior") == "Isolated" and split.get("invert") is False:
            if pat == LLAMA3_PATTERN:
                return "llama3"
            if pat == _GPT2_PATTERN:
                return "gpt2"
        fail(f"pre_tokenizer Split with pattern {brief(pat, 50)} ({split.get('behavior')}) is not supported "
             f"(supported: {'; '.join(_SUPPORTED_PRE)})")
    fail(f"pre_tokenizer {_describe(steps)} is not supported (supported: {'; '.join(_SUPPORTED_PRE)})")


def _describe(steps) -> str:
    return " + ".join(str(s.get("type")) + ("(use_regex=false)" if s.get("use_regex") is False else "")
                      + ("(add_prefix_space)" if s.get("add_prefix_space") else "") for s in steps)


def _post_processor_bos(pp) -> Optional[str]:
    """The special token a TemplateProcessing puts before a single sequence (Llama 3: <|begin_of_text|>)."""
    if not isinstance(pp, dict):
        return None
    if pp.get("type") == "Sequence":
        procs = pp.get("processors")
        for p in procs if isinstance(procs, list) else []:
            got = _post_processor_bos(p)
            if got is not None:
                return got
        return None
    if pp.get("type") != "TemplateProcessing":
        return None
    single = pp.get("single")
    if isinstance(single, list) and single and isinstance(single[0], dict) and "SpecialToken" in single[0]:
        name = single[0]["SpecialToken"].get("id") if isinstance(single[0]["SpecialToken"], dict) else None
        return name if isinstance(name, str) else None
    return None


def _chat_template(directory: str, tc, tc_path: str) -> Optional[str]:
    t = tc.get("chat_template") if isinstance(tc, dict) else None
    if isinstance(t, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    if isinstance(t, str):
        return t
    jinja = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(jinja):
        try:
            with open(jinja, "rb") as f:
                raw = f.read(_MAX_SMALL_JSON + 1)
        except OSError as e:
            raise FormatError(f"{jinja}: cannot read ({e.strerror or e})") from None
        if len(raw) > _MAX_SMALL_JSON:
            raise FormatError(f"{jinja}: over {_MAX_SMALL_JSON >> 20} MiB; refusing to read it")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{jinja}: not UTF-8 (byte {e.start})") from None
    return None
