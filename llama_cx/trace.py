"""Every intermediate of the forward pass, named after the modules of Meta's model.py, and the .npz they travel in.

    tr = llama_cx.trace(model, ids)                 # {"tokens": (T,) int64, "tok_embeddings": (T, dim), ...}
    np.asarray(tr["layers.7"])                      # the residual stream after layer 7, float32 (T, dim)
    tr.save("trace.npz")                            # np.load("trace.npz")["layers.7.attention"]

Names (the contract: anyone can write the same from PyTorch with forward hooks, docs/trace_from_torch.py):
    tokens                      int64   (T,)
    tok_embeddings              float32 (T, dim)
    layers.{i}.attention_norm   float32 (T, dim)   RMSNorm before attention
    layers.{i}.attention        float32 (T, dim)   output of wo, before the residual add
    layers.{i}.ffn_norm         float32 (T, dim)   RMSNorm before the feed-forward
    layers.{i}.feed_forward     float32 (T, dim)   output of w2, before the residual add
    layers.{i}                  float32 (T, dim)   the residual stream after layer i
    norm                        float32 (T, dim)   the final RMSNorm
    output                      float32 (T, vocab) logits

The default engine is the reference forward (csrc/model/reference.c): one token at a time, serial, scalar
kernels, every stage written out. engine="fast" traces the fast forward itself (the ISA and bf16 switches in
effect) where it can be observed without cost to it: the residual stream after each layer (by running the
first i+1 layers; O(n_layers²) layer passes) and the logits.

No numpy at run time: arrays are shaped memoryviews (np.asarray(view) is zero-copy), and .npz files are
written and read here with the standard library (a zip of .npy files: a short text header, then raw data).
"""
from __future__ import annotations

import ast
import math
import operator
import os
import re
import struct
import sys
import zipfile
from array import array
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import FormatError, InvalidArgumentError

# stage names for the filters, in forward order; "residual" selects the layers.{i} arrays
STAGES = ("tok_embeddings", "attention_norm", "attention", "ffn_norm", "feed_forward", "residual", "norm", "output")
LAYER_STAGES = ("attention_norm", "attention", "ffn_norm", "feed_forward", "residual")
FAST_STAGES = ("tok_embeddings", "residual", "output")  # what engine="fast" can observe


def array_name(stage: str, layer: Optional[int] = None) -> str:
    """The .npz name of a stage: "layers.3.attention", "layers.3" (residual), "norm", ..."""
    if stage not in LAYER_STAGES:
        return stage
    return f"layers.{layer}" if stage == "residual" else f"layers.{layer}.{stage}"


def parse_layers(spec, n_layers: int) -> List[int]:
    """Layer indices from "0,3,5-7", "all", a list of ints or None (all); negative indices count from the end."""
    if spec is None or spec == "all":
        return list(range(n_layers))
    items: List[int] = []
    for p in (spec.split(",") if isinstance(spec, str) else list(spec)):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", p) if isinstance(p, str) else None
        try:
            items.extend(range(int(m.group(1)), int(m.group(2)) + 1) if m else [int(p)])
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"bad layer list {spec!r}: expected e.g. 0,3,5-7 or all") from None
    out = []
    for i in items:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise InvalidArgumentError(f"layer {i} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
        if j not in out:
            out.append(j)
    return sorted(out)


def parse_stages(spec) -> List[str]:
    """Stage names from "attention,residual", a list, or None (all)."""
    if spec is None or spec == "all":
        return list(STAGES)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for s in names:
        if s not in STAGES:
            raise InvalidArgumentError(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def stage_names(n_layers: int, stages=None, layers=None) -> List[str]:
    """The .npz names a trace with these filters holds, in forward order ("tokens" always first)."""
    st, ly = parse_stages(stages), parse_layers(layers, n_layers)
    names = ["tokens"]
    if "tok_embeddings" in st:
        names.append("tok_embeddings")
    names += [array_name(s, i) for i in ly for s in LAYER_STAGES if s in st]
    names += [s for s in ("norm", "output") if s in st]
    return names


def forward_order(names: Iterable[str]) -> List[str]:
    """Sort .npz names in the order the forward pass produces them."""
    def key(n):
        if n == "tokens":
            return (0, 0, 0)
        if n == "tok_embeddings":
            return (1, 0, 0)
        if n.startswith("layers."):
            parts = n.split(".")
            try:
                i = int(parts[1])
            except (IndexError, ValueError):
                return (4, 0, n)
            sub = ".".join(parts[2:]) or "residual"
            return (2, i, LAYER_STAGES.index(sub) if sub in LAYER_STAGES else 9)
        return (3, ("norm", "output").index(n), 0) if n in ("norm", "output") else (4, 0, n)
    return sorted(names, key=key)


def _f32_view(buf: bytearray, shape: Tuple[int, ...]) -> memoryview:
    return memoryview(buf).cast("f", shape)


class Trace(dict):
    """name -> shaped memoryview (float32 stages, int64 tokens), in forward order; .save(path) writes an .npz."""

    def save(self, path: str) -> None:
        save_npz(path, self)

    @property
    def tokens(self) -> List[int]:
        return list(self["tokens"])


def _model_and_ids(model, ids):
    from .model import Model, load

    if not isinstance(model, Model):
        model = load(os.fspath(model))
    try:
        ids = [operator.index(i) for i in ids]
    except TypeError:
        raise InvalidArgumentError("token ids must be integers") from None
    if not ids:
        raise InvalidArgumentError("a trace needs at least one token")
    vocab = model.config.vocab_size
    for i in ids:
        if not 0 <= i < vocab:
            raise InvalidArgumentError(f"token id {i} out of range [0, {vocab})")
    return model, ids


def trace(model, ids: Sequence[int], stages=None, layers=None, engine: str = "reference") -> Trace:
    """Every stage of the forward pass over ids (positions 0..T-1), float32 [T, ...], named as in Meta's model.

    model: a llama_cx.Model or a path; stages: names from STAGES (None = all; "residual" = the layers.{i}
    arrays); layers: "0,3,5-7", a list, or None (all); engine: "reference" (every stage) or "fast" (the fast
    forward: tok_embeddings, the residual stream, output)."""
    from . import _kernels

    model, ids = _model_and_ids(model, ids)
    cfg = model.config
    T, dim, vocab = len(ids), cfg.dim, cfg.vocab_size
    names = stage_names(cfg.n_layers, stages, layers)
    if engine not in ("reference", "fast"):
        raise InvalidArgumentError(f"unknown trace engine {engine!r} (reference or fast)")
    if engine == "fast":
        missing = [s for s in parse_stages(stages) if s not in FAST_STAGES]
        if missing and stages is not None:
            raise InvalidArgumentError(f"the fast engine cannot observe stage {missing[0]!r} (only {', '.join(FAST_STAGES)})")
        names = [n for n in names if n in ("tokens", "tok_embeddings", "output") or n.count(".") == 1]
    bufs: Dict[str, bytearray] = {n: bytearray(4 * T * (vocab if n == "output" else dim)) for n in names if n != "tokens"}
    if engine == "reference":
        _kernels.forward_reference(model._c, ids, bufs)
    else:
        _fast_trace(model, ids, bufs)
    out = Trace()
    out["tokens"] = memoryview(array("q", ids)).cast("B").cast("q", (T,))
    for n in names[1:]:
        out[n] = _f32_view(bufs[n], (T, vocab if n == "output" else dim))
    return out


def _fast_trace(model, ids: List[int], bufs: Dict[str, bytearray]) -> None:
    """The fast forward's observable stages: the residual after layer i from a model cut after layer i (its
    state keeps the residual stream; the final norm writes elsewhere), logits from the whole model."""
    from . import _kernels
    from .runtime import available_cpus

    T, c = len(ids), model._c
    nth = max(available_cpus(), _kernels.get_num_threads())
    if "tok_embeddings" in bufs:
        dim = model.config.dim
        for i, tok in enumerate(ids):
            c.embedding_row(tok, memoryview(bufs["tok_embeddings"])[4 * i * dim:4 * (i + 1) * dim])
    for n, buf in bufs.items():
        if n.startswith("layers."):
            st = _kernels.CState(_kernels.model_prefix(c, int(n.split(".")[1]) + 1), T, T, nth)
            st.forward(ids, 0)
            _kernels.state_residual(st, buf, T)
    if "output" in bufs:
        _kernels.CState(c, T, T, nth).forward(ids, 0, bufs["output"], True)


def logit_lens(model, tr: Trace, pos: int = -1) -> Dict[str, memoryview]:
    """For each residual stream in the trace (tok_embeddings and layers.{i}), the logits (vocab,) it would give
    at token `pos` if the model stopped there: final norm, then the output matrix (nostalgebraist's logit lens)."""
    from . import _kernels

    vocab = model.config.vocab_size
    names = [n for n in tr if n == "tok_embeddings" or (n.startswith("layers.") and n.count(".") == 1)]
    if not names:
        return {}
    rows = array("f")
    for n in names:
        rows.extend(row(tr[n], pos))
    out = bytearray(4 * len(names) * vocab)
    _kernels.logit_lens(model._c, rows, len(names), out)
    v = memoryview(out).cast("f")
    return {n: v[k * vocab:(k + 1) * vocab] for k, n in enumerate(names)}


def top_k(logits, k: int = 3) -> List[Tuple[int, float]]:
    """The k largest entries of logits as (index, softmax probability), largest first."""
    vals = list(logits)
    m = max(vals)
    z = math.fsum(math.exp(x - m) for x in vals)
    best = sorted(range(len(vals)), key=lambda i: -vals[i])[:k]
    return [(i, math.exp(vals[i] - m) / z) for i in best]


def norm2(v) -> float:
    """Euclidean norm of a float32 vector or array (any shape), summed in double."""
    flat = v.cast("B").cast("f") if isinstance(v, memoryview) else v
    return math.sqrt(math.fsum(x * x for x in flat))


def row(v: memoryview, i: int) -> array:
    """Row i of a (T, n) float32 view as an array('f')."""
    T, n = v.shape
    i = i + T if i < 0 else i
    return array("f", v.cast("B")[4 * i * n:4 * (i + 1) * n].cast("f"))


def rel_error(a, b) -> float:
    """||a - b|| / ||b|| over all elements (0 when both are zero, inf when only b is)."""
    fa, fb = a.cast("B").cast(a.format), b.cast("B").cast(b.format)
    num = math.sqrt(math.fsum((x - y) ** 2 for x, y in zip(fa, fb)))
    den = math.sqrt(math.fsum(y * y for y in fb))
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def diff(a: Dict[str, memoryview], b: Dict[str, memoryview], tol: float = 1e-3):
    """Relative error ||a-b||/||b|| per stage present in both (forward order, tokens excluded), and the first
    stage whose error exceeds tol (None when none does). The traces must be of the same tokens."""
    if "tokens" in a and "tokens" in b and list(a["tokens"]) != list(b["tokens"]):
        raise InvalidArgumentError(
            f"the traces are of different tokens ({len(a['tokens'])} vs {len(b['tokens'])} ids); trace the same ids")
    common = [n for n in forward_order(set(a) & set(b)) if n != "tokens"]
    if not common:
        raise InvalidArgumentError("the two traces have no stage in common")
    rows, first = [], None
    for n in common:
        if a[n].shape != b[n].shape:
            raise InvalidArgumentError(f"{n}: shapes differ ({a[n].shape} vs {b[n].shape})")
        e = rel_error(a[n], b[n])
        rows.append((n, e))
        if first is None and not e <= tol:
            first = n
    return rows, first


# ---- .npz without numpy ---------------------------------------------------------------------------------------
_DESCR = {"f": "<f4", "q": "<i8"}
_FORMAT = {v: k for k, v in _DESCR.items()}


def _npy_header(descr: str, shape: Tuple[int, ...]) -> bytes:
    """A .npy version 1.0 header: magic, version, little-endian length, then a Python dict literal padded with
    spaces to a multiple of 64 bytes and ended by a newline (numpy's own layout)."""
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    pad = -(10 + len(d) + 1) % 64
    text = (d + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def save_npz(path: str, arrays: Dict[str, memoryview]) -> None:
    """Write name -> memoryview (format 'f' or 'q', C-contiguous) as an uncompressed .npz (like np.savez)."""
    tmp = f"{path}.part{os.getpid()}"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, v in arrays.items():
                fmt = v.format
                if fmt not in _DESCR:
                    raise InvalidArgumentError(f"{name}: cannot save format {fmt!r} (float32 or int64 only)")
                data = array(fmt, v.cast("B").cast(fmt))
                if sys.byteorder != "little":
                    data.byteswap()
                with z.open(name + ".npy", "w", force_zip64=True) as f:
                    f.write(_npy_header(_DESCR[fmt], v.shape))
                    f.write(data.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_npy(f, where: str) -> memoryview:
    magic = f.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise FormatError(f"{where}: not a .npy array")
    major = magic[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", f.read(2))
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", f.read(4))
    else:
        raise FormatError(f"{where}: .npy format version {major} is not supported")
    try:
        h = ast.literal_eval(f.read(hlen).decode("latin1"))
        descr, fortran, shape = h["descr"], h["fortran_order"], tuple(h["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError):
        raise FormatError(f"{where}: unreadable .npy header") from None
    if descr not in _FORMAT or fortran is not False or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise FormatError(f"{where}: {descr!r} fortran_order={fortran} shape {shape}: only little-endian float32 "
                          f"('<f4') or int64 ('<i8') arrays in C order are read")
    fmt = _FORMAT[descr]
    n = math.prod(shape) if shape else 1
    raw = f.read(8 * n + 1)
    if len(raw) != n * 4 * (2 if fmt == "q" else 1):
        raise FormatError(f"{where}: {len(raw)} data bytes for shape {shape} {descr}")
    data = array(fmt)
    data.frombytes(raw)
    if sys.byteorder != "little":
        data.byteswap()
    return memoryview(data).cast("B").cast(fmt, shape) if shape else memoryview(data)


def load_npz(path: str) -> Trace:
    """Read an .npz of float32 / int64 arrays (as written by save_npz, np.savez or np.savez_compressed)."""
    out = Trace()
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise FormatError(f"{path}: member {info.filename!r} is not a .npy array")
                with z.open(info) as f:
                    out[info.filename[:-4]] = _read_npy(f, f"{path}: {info.filename}")
    except zipfile.BadZipFile:
        raise FormatError(f"{path}: not an .npz file (not a zip archive)") from None
    ordered = Trace()
    for n in forward_order(out):
        ordered[n] = out[n]
    return ordered
