"""Target `unpickle`: llama_cx.formats._unpickle.load_pickle on torch.save's data.pkl and on generated pickles.

Inputs: byte mutations of real data.pkl members (torch.save, protocols 2 and 4, nn.Parameter, shared
storages), of pickles the standard library writes (protocols 0-5) and of hostile pickles; and opcode
programs drawn by hypothesis (every opcode, with arguments of every size), so deep interpreter states are
reached that byte edits of a real file rarely hit.
Oracle beyond "no crash": a successful result holds only inert data (nothing callable, no object that
is not a plain container, scalar or one of the unpickler's own records).
"""
import os
import pickle
import struct
from collections import OrderedDict

from hypothesis import strategies as st

from llama_cx.formats._unpickle import StorageRef, TensorRef, _Global, _OrderedDict, load_pickle

from ._corpus import pickle_hotspots, pickle_of, torch_checkpoints
from ._engine import BOUNDARY, Input, Seed, mutations

NAME = "unpickle"
TIMEOUT = 5.0
_INERT = (dict, _OrderedDict, list, tuple, str, bytes, int, float, bool, type(None), TensorRef, StorageRef, _Global)


class _Reduce:
    def __init__(self, f, args):
        self.f, self.args = f, args

    def __reduce__(self):
        return self.f, self.args


def seeds():
    out = [Seed(f"torch-{name}", pickle_of(pth), weight=3) for name, pth in torch_checkpoints()]
    plain = OrderedDict(a=[1, -1, 2**40, -(2**70), 1.5, None, True, False], b=(b"x" * 300, "ü" * 3), c={1: ()})
    for proto in range(6):
        out.append(Seed(f"stdlib-protocol{proto}", pickle.dumps(plain, protocol=proto)))
    out.append(Seed("os-system", pickle.dumps(_Reduce(os.system, ("true",)), protocol=2)))
    out.append(Seed("eval", pickle.dumps(_Reduce(eval, ("1",)), protocol=4)))
    out.append(Seed("ordereddict-items", pickle.dumps(OrderedDict([("k", 1)]), protocol=2)))
    return [Seed(s.name, s.data, pickle_hotspots(s.data), s.weight) for s in out]


# ---- opcode programs -------------------------------------------------------------------------------------
_TEXT = st.one_of(st.sampled_from(["storage", "cpu", "0", "torch", "collections", "OrderedDict",
                                   "torch._utils", "_rebuild_tensor_v2", "_rebuild_parameter", "BFloat16Storage",
                                   "FloatStorage", "UntypedStorage", "_rebuild_tensor_v3", "bfloat16", "os",
                                   "system", "builtins", "eval", "_metadata", ""]),
                  st.text(max_size=12))
_INT = st.one_of(st.sampled_from(BOUNDARY), st.integers(-(2**70), 2**70), st.integers(-2, 300))


def _u(fmt, v):
    """v as the little-endian field of struct format fmt, wrapped to its width (sign included)."""
    n = struct.calcsize(fmt)
    return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")


def _enc(s):
    return s.encode("utf-8", "surrogatepass")


_OPS = st.one_of(
    st.sampled_from([b"(", b"0", b"1", b"2", b"N", b"\x88", b"\x89", b")", b"t", b"\x85", b"\x86", b"\x87",
                     b"]", b"l", b"a", b"e", b"}", b"d", b"s", b"u", b"\x94", b"\x93", b"Q", b"R", b"b", b"o",
                     b"\x81", b"\x92", b".", b"\x8f", b"\x90", b"\x91", b"P", b"g", b"p"]),
    _INT.map(lambda v: b"J" + _u("<i", v)),
    _INT.map(lambda v: b"K" + _u("<B", v)),
    _INT.map(lambda v: b"M" + _u("<H", v)),
    _INT.map(lambda v: b"\x8a" + bytes([min(len(_le(v)), 255)]) + _le(v)),
    _INT.map(lambda v: b"\x8b" + _u("<i", len(_le(v))) + _le(v)),
    st.floats(allow_nan=True).map(lambda f: b"G" + struct.pack(">d", f)),
    _TEXT.map(lambda s: b"X" + _u("<I", len(_enc(s))) + _enc(s)),
    _TEXT.map(lambda s: b"\x8c" + bytes([min(len(_enc(s)), 255)]) + _enc(s)[:255]),
    _TEXT.map(lambda s: b"\x8d" + _u("<Q", len(_enc(s))) + _enc(s)),
    st.binary(max_size=8).map(lambda b: b"C" + bytes([len(b)]) + b),
    st.binary(max_size=8).map(lambda b: b"B" + _u("<I", len(b)) + b),
    st.tuples(_TEXT, _TEXT).map(lambda t: b"c" + _enc(t[0]) + b"\n" + _enc(t[1]) + b"\n"),
    st.tuples(_TEXT, _TEXT).map(lambda t: b"i" + _enc(t[0]) + b"\n" + _enc(t[1]) + b"\n"),
    st.integers(0, 300).map(lambda i: b"q" + _u("<B", i)),
    st.integers(0, 300).map(lambda i: b"h" + _u("<B", i)),
    _INT.map(lambda i: b"r" + _u("<I", i)),
    _INT.map(lambda i: b"j" + _u("<I", i)),
    st.integers(0, 9).map(lambda p: b"\x80" + bytes([p])),
    _INT.map(lambda n: b"\x95" + _u("<Q", n)),
    st.sampled_from(range(256)).map(lambda b: bytes([b])),
)


def _le(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)


def inputs(seed_list):
    programs = st.lists(_OPS, min_size=1, max_size=40).map(
        lambda ops: Input(b"\x80\x02" + b"".join(ops) + b".", f"opcode program {b''.join(ops)!r}"))
    return st.one_of(mutations(seed_list), mutations(seed_list), programs)


# ---- running ----------------------------------------------------------------------------------------------
def execute(data: bytes):
    result = load_pickle(data, "fuzz.pkl")
    seen, todo = set(), [result]
    while todo:  # iterative walk: results may be deep or contain themselves
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        assert type(x) in _INERT, f"non-inert object in the result: {type(x)}"
        if isinstance(x, dict):
            todo.extend(x.keys())
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
