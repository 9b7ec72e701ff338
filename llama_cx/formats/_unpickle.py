"""A restricted pickle interpreter for torch.save state dicts: data in, inert records out, nothing executed.

Python's pickle.Unpickler calls whatever callable a pickle names; even with find_class overridden, REDUCE
still calls the object find_class returned. Here nothing is ever called: GLOBAL resolves to a `_Global` token
from an allowlist, REDUCE/BUILD/BINPERSID are interpreted by hand for the few shapes torch.save emits, and
every other opcode that could build or call an object is refused with UnsafePickleError.

What torch 2.x `torch.save(state_dict)` emits (pickletools.dis of real files; protocol 2):
    PROTO 2
    GLOBAL 'collections OrderedDict', EMPTY_TUPLE, REDUCE        # the state dict (or EMPTY_DICT for a dict)
    MARK  { BINUNICODE name,
            GLOBAL 'torch._utils _rebuild_tensor_v2', MARK
              MARK BINUNICODE 'storage', GLOBAL 'torch BFloat16Storage', BINUNICODE key, BINUNICODE 'cpu',
                   BININT* numel TUPLE BINPERSID                 # persistent id -> storage `key` in the zip
              BININT* offset, (sizes) TUPLE*, (strides) TUPLE*, NEWFALSE,
              GLOBAL 'collections OrderedDict' EMPTY_TUPLE REDUCE  # backward hooks (empty)
            TUPLE REDUCE } SETITEMS                              # batches of <= 1000 items
    EMPTY_DICT { '_metadata': {...} } BUILD                      # OrderedDict._metadata, ignored
    STOP
plus BINPUT/LONG_BINPUT/BINGET/LONG_BINGET memo traffic, and `torch._utils _rebuild_parameter` around a
tensor for nn.Parameter values. The later protocols' plain-data opcodes (FRAME, MEMOIZE, SHORT_BINUNICODE,
STACK_GLOBAL, ...) are accepted too, so `torch.save(..., pickle_protocol=4)` files load.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Tuple

from ..errors import UnsafePickleError, brief, brief_name, fail

# Legacy typed storage classes torch pickles (torch.storage._dtype_to_storage_type_map) -> (dtype, itemsize).
STORAGE_DTYPES = {
    "DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "ComplexDoubleStorage": ("complex128", 16),
    "ComplexFloatStorage": ("complex64", 8), "QInt8Storage": ("qint8", 1), "QInt32Storage": ("qint32", 4),
    "QUInt8Storage": ("quint8", 1), "QUInt4x2Storage": ("quint4x2", 1), "QUInt2x4Storage": ("quint2x4", 1),
    "UntypedStorage": ("uint8", 1),  # used with _rebuild_tensor_v3 for the dtypes below
}
# dtypes that _rebuild_tensor_v3 names explicitly (torch.storage._new_dtypes); only so the error can name them.
_V3_DTYPES = {
    "uint16", "uint32", "uint64", "complex32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
}

_REBUILD_TENSOR = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}
_REBUILD_PARAMETER = {"_rebuild_parameter", "_rebuild_parameter_with_state"}

# The whole allowlist: (module, name) pairs a pickle may mention. None of them is ever imported or called.
ALLOWED_GLOBALS = (
    {("collections", "OrderedDict")}
    | {("torch._utils", n) for n in _REBUILD_TENSOR | _REBUILD_PARAMETER}
    | {("torch", n) for n in STORAGE_DTYPES}
    | {("torch", n) for n in _V3_DTYPES}
)

_MAX_LONG_BYTES = 64  # no tensor needs an integer wider than this; refuse before int.from_bytes
# Tuples nested deeper than this are refused: hashing a tuple recurses in C without a depth check, so a
# dict key of 200k nested TUPLE1s (one byte each) would overflow the C stack (found by fuzzing). torch's
# pickles nest tuples 3 deep (persistent id inside the _rebuild_tensor arguments).
_MAX_TUPLE_DEPTH = 32

@dataclass(frozen=True)
class _Global:
    module: str
    name: str

    def __str__(self):
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class StorageRef:
    """A persistent id ('storage', torch.<X>Storage, key, location, numel): zip member <prefix>/data/<key>."""

    key: str
    storage_type: str  # e.g. "BFloat16Storage"
    location: str  # e.g. "cpu" (the device it was saved from; irrelevant here)
    numel: int  # elements of storage_type

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.storage_type][0]

    @property
    def itemsize(self) -> int:
        return STORAGE_DTYPES[self.storage_type][1]


@dataclass(frozen=True)
class TensorRef:
    """What _rebuild_tensor_v2 would build: a strided view into a storage (offsets and strides in elements)."""

    storage: StorageRef
    offset: int
    shape: Tuple[int, ...]
    strides: Tuple[int, ...]
    dtype: str  # torch dtype name, e.g. "bfloat16" (differs from storage.dtype only for _rebuild_tensor_v3)


class _OrderedDict(dict):
    """collections.OrderedDict as data: a dict (insertion-ordered) that accepts BUILD of its __dict__ state."""


class _Mark:
    pass


_MARK = _Mark()


class _Interpreter:
    def __init__(self, data: bytes, source: str):
        self.data = data
        self.pos = 0
        self.source = source
        self.malformed = f"{source}: malformed pickle"  # where fail() says the problem is
        self.stack: list = []
        self.marks: list = []
        self.memo: dict = {}
        self.tuple_depth: dict = {}  # id(tuple) -> nesting depth, for every tuple built here
        self.tuples: list = []  # keeps those tuples alive, so their ids stay theirs

    # ---- helpers ------------------------------------------------------------------------------------
    def unsafe(self, msg):
        raise UnsafePickleError(f"{self.source}: refused unsafe pickle: {msg}; nothing from it was executed")

    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            fail(self.malformed, f"truncated at byte {self.pos} (wants {n} more bytes)")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def read_line(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + 4096)
        if end < 0:
            fail(self.malformed, f"unterminated text argument at byte {self.pos}")
        line = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            fail(self.malformed, f"non-UTF-8 text argument at byte {self.pos}")

    def u(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def pop(self):
        if not self.stack or self.stack[-1] is _MARK:
            fail(self.malformed, f"stack underflow at byte {self.pos}")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            fail(self.malformed, f"no MARK to pop at byte {self.pos}")
        start = self.marks.pop()
        items = self.stack[start + 1 :]
        del self.stack[start:]
        return items

    def push_mark(self):
        self.marks.append(len(self.stack))
        self.stack.append(_MARK)

    def top(self):
        if not self.stack or self.stack[-1] is _MARK:
            fail(self.malformed, f"empty stack at byte {self.pos}")
        return self.stack[-1]

    def text(self, b: bytes) -> str:
        try:
            return b.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            fail(self.malformed, f"invalid UTF-8 string at byte {self.pos}")

    def tuple(self, items) -> tuple:
        """A tuple of `items`, refused if that nests tuples deeper than _MAX_TUPLE_DEPTH."""
        t = tuple(items)
        if t:
            depth = 1 + max(self.tuple_depth.get(id(x), 0) if type(x) is tuple else 0 for x in t)
            if depth > _MAX_TUPLE_DEPTH:
                fail(self.malformed, f"tuples nested deeper than {_MAX_TUPLE_DEPTH} levels at byte {self.pos}")
            self.tuple_depth[id(t)] = depth
            self.tuples.append(t)
        return t

    def memo_get(self, i: int):
        if i not in self.memo:
            fail(self.malformed, f"memo key {i} used before it was set (byte {self.pos})")
        return self.memo[i]

    def global_(self, module: str, name: str) -> _Global:
        if (module, name) not in ALLOWED_GLOBALS:
            self.unsafe(f"it asks for global {brief_name(module)}.{brief_name(name)}, which is not in the allowlist of tensor-rebuilding names")
        return _Global(module, name)

    # ---- REDUCE / BUILD / BINPERSID: the only places objects are "made" -------------------------------
    def reduce(self, func, args):
        if not isinstance(func, _Global):
            self.unsafe(f"REDUCE on a {type(func).__name__}, not an allowlisted global")
        if not isinstance(args, tuple):
            fail(self.malformed, f"REDUCE arguments for {func} are a {type(args).__name__}, not a tuple")
        if (func.module, func.name) == ("collections", "OrderedDict"):
            if args == ():
                return _OrderedDict()
            if len(args) == 1 and isinstance(args[0], (list, tuple)):
                d = _OrderedDict()
                for item in args[0]:
                    if not (isinstance(item, (list, tuple)) and len(item) == 2):
                        fail(self.malformed, "OrderedDict items are not (key, value) pairs")
                    self.setitem(d, item[0], item[1])
                return d
            fail(self.malformed, "unexpected OrderedDict arguments")
        if func.module == "torch._utils" and func.name in _REBUILD_TENSOR:
            return self.rebuild_tensor(func, args)
        if func.module == "torch._utils" and func.name in _REBUILD_PARAMETER:
            # _rebuild_parameter(data, requires_grad, backward_hooks[, state]): the Parameter is its tensor.
            if len(args) not in (3, 4) or not isinstance(args[0], TensorRef):
                fail(self.malformed, f"unexpected arguments to {func}")
            return args[0]
        self.unsafe(f"it calls {func}, which is allowlisted only as a type tag, not as a callable")

    def rebuild_tensor(self, func, args):
        # v1: (storage, offset, size, stride); v2: (+ requires_grad, backward_hooks[, metadata]);
        # v3: (+ requires_grad, backward_hooks, dtype) with an UntypedStorage.
        n = {"_rebuild_tensor": (4,), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7,)}[func.name]
        if len(args) not in n:
            fail(self.malformed, f"{func} called with {len(args)} arguments")
        storage, offset, size, stride = args[:4]
        if not isinstance(storage, StorageRef):
            fail(self.malformed, f"{func} called on a {type(storage).__name__}, not a storage")
        ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
        if not ok_int(offset):
            fail(self.malformed, f"tensor storage offset {brief(offset)} is not a non-negative integer")
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
                and all(map(ok_int, size)) and all(map(ok_int, stride))):
            fail(self.malformed, "tensor size/stride are not equal-length tuples of non-negative integers")
        if func.name == "_rebuild_tensor_v3":
            dtype = args[6]
            if not (isinstance(dtype, _Global) and dtype.name in _V3_DTYPES):
                fail(self.malformed, f"{func} called with dtype {brief(dtype)}")
            dtype = dtype.name
        else:
            dtype = storage.dtype
        return TensorRef(storage, offset, size, stride, dtype)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            self.unsafe("a persistent id that is not a torch ('storage', type, key, location, numel) tuple")
        _, stype, key, location, numel = pid
        if not (isinstance(stype, _Global) and stype.module == "torch" and stype.name in STORAGE_DTYPES):
            self.unsafe(f"a persistent id with storage type {brief(stype)}")
        if not (isinstance(key, str) and isinstance(location, str)
                and isinstance(numel, int) and not isinstance(numel, bool) and numel >= 0):
            fail(self.malformed, "persistent id fields are not (str key, str location, int numel)")
        return StorageRef(key, stype.name, location, numel)

    def build(self, inst, state):
        # Only OrderedDict's instance state (torch's `_metadata` attribute) is expected; it is dropped.
        if isinstance(inst, _OrderedDict) and (isinstance(state, dict) or state is None):
            return
        if isinstance(inst, _OrderedDict) and isinstance(state, tuple) and len(state) == 2:
            return
        self.unsafe(f"BUILD on a {type(inst).__name__}")

    def setitem(self, d, k, v):
        if not isinstance(d, dict):
            fail(self.malformed, f"SETITEM on a {type(d).__name__}")
        try:
            d[k] = v
        except TypeError:
            fail(self.malformed, f"unhashable dict key of type {type(k).__name__}")

    # ---- the interpreter loop -----------------------------------------------------------------------
    def run(self):
        data, stack = self.data, self.stack
        while True:
            if self.pos >= len(data):
                fail(self.malformed, "ends without a STOP opcode")
            at = self.pos
            op = data[at : at + 1]
            self.pos += 1
            if op == b"\x80":  # PROTO
                proto = self.read(1)[0]
                if proto > 5:
                    fail(self.malformed, f"unsupported pickle protocol {proto}")
            elif op == b"\x95":  # FRAME (protocol 4): just a length prefix
                self.read(8)
            elif op == b".":  # STOP
                return self.pop()
            elif op == b"(":  # MARK
                self.push_mark()
            elif op == b"0":  # POP
                if stack and stack[-1] is _MARK:
                    self.pop_mark()
                else:
                    self.pop()
            elif op == b"1":  # POP_MARK
                self.pop_mark()
            elif op == b"2":  # DUP
                stack.append(self.top())
            elif op == b"N":
                stack.append(None)
            elif op == b"\x88":
                stack.append(True)
            elif op == b"\x89":
                stack.append(False)
            elif op == b"J":  # BININT
                stack.append(self.u("<i"))
            elif op == b"K":  # BININT1
                stack.append(self.read(1)[0])
            elif op == b"M":  # BININT2
                stack.append(self.u("<H"))
            elif op in (b"\x8a", b"\x8b"):  # LONG1, LONG4
                n = self.read(1)[0] if op == b"\x8a" else self.u("<i")
                if n < 0 or n > _MAX_LONG_BYTES:
                    fail(self.malformed, f"integer of {n} bytes at byte {at}")
                stack.append(int.from_bytes(self.read(n), "little", signed=True))
            elif op == b"G":  # BINFLOAT
                stack.append(self.u(">d"))
            elif op == b"X":  # BINUNICODE
                stack.append(self.text(self.read(self.u("<I"))))
            elif op == b"\x8c":  # SHORT_BINUNICODE
                stack.append(self.text(self.read(self.read(1)[0])))
            elif op == b"\x8d":  # BINUNICODE8
                stack.append(self.text(self.read(self.u("<Q"))))
            elif op == b"B":  # BINBYTES
                stack.append(self.read(self.u("<I")))
            elif op == b"C":  # SHORT_BINBYTES
                stack.append(self.read(self.read(1)[0]))
            elif op == b"\x8e":  # BINBYTES8
                stack.append(self.read(self.u("<Q")))
            elif op == b"T":  # BINSTRING (protocol 1 str)
                stack.append(self.read(self.u("<i")).decode("latin-1"))
            elif op == b"U":  # SHORT_BINSTRING
                stack.append(self.read(self.read(1)[0]).decode("latin-1"))
            elif op == b")":
                stack.append(())
            elif op == b"t":
                stack.append(self.tuple(self.pop_mark()))
            elif op in (b"\x85", b"\x86", b"\x87"):  # TUPLE1..3
                n = op[0] - 0x84
                items = [self.pop() for _ in range(n)][::-1]
                stack.append(self.tuple(items))
            elif op == b"]":
                stack.append([])
            elif op == b"l":
                stack.append(self.pop_mark())
            elif op == b"a":  # APPEND
                v = self.pop()
                lst = self.top()
                if not isinstance(lst, list):
                    fail(self.malformed, f"APPEND to a {type(lst).__name__}")
                lst.append(v)
            elif op == b"e":  # APPENDS
                items = self.pop_mark()
                lst = self.top()
                if not isinstance(lst, list):
                    fail(self.malformed, f"APPENDS to a {type(lst).__name__}")
                lst.extend(items)
            elif op == b"}":
                stack.append({})
            elif op == b"d":  # DICT
                items = self.pop_mark()
                if len(items) % 2:
                    fail(self.malformed, "DICT with an odd number of items")
                d = {}
                for k, v in zip(items[::2], items[1::2]):
                    self.setitem(d, k, v)
                stack.append(d)
            elif op == b"s":  # SETITEM
                v = self.pop()
                k = self.pop()
                self.setitem(self.top(), k, v)
            elif op == b"u":  # SETITEMS
                items = self.pop_mark()
                if len(items) % 2:
                    fail(self.malformed, "SETITEMS with an odd number of items")
                d = self.top()
                for k, v in zip(items[::2], items[1::2]):
                    self.setitem(d, k, v)
            elif op == b"q":  # BINPUT
                self.memo[self.read(1)[0]] = self.top()
            elif op == b"r":  # LONG_BINPUT
                self.memo[self.u("<I")] = self.top()
            elif op == b"\x94":  # MEMOIZE
                self.memo[len(self.memo)] = self.top()
            elif op == b"h":  # BINGET
                stack.append(self.memo_get(self.read(1)[0]))
            elif op == b"j":  # LONG_BINGET
                stack.append(self.memo_get(self.u("<I")))
            elif op == b"c":  # GLOBAL 'module\nname\n'
                module = self.read_line()
                name = self.read_line()
                stack.append(self.global_(module, name))
            elif op == b"\x93":  # STACK_GLOBAL
                name = self.pop()
                module = self.pop()
                if not (isinstance(module, str) and isinstance(name, str)):
                    fail(self.malformed, "STACK_GLOBAL operands are not strings")
                stack.append(self.global_(module, name))
            elif op == b"Q":  # BINPERSID
                stack.append(self.persistent_load(self.pop()))
            elif op == b"R":  # REDUCE
                args = self.pop()
                func = self.pop()
                stack.append(self.reduce(func, args))
            elif op == b"b":  # BUILD
                state = self.pop()
                self.build(self.top(), state)
            elif op == b"i":  # INST 'module\nname\n': instantiate a class from its name
                module, name = self.read_line(), self.read_line()
                self.unsafe(f"opcode INST instantiates {brief_name(module)}.{brief_name(name)}")
            elif op in (b"o", b"\x81", b"\x92"):  # OBJ, NEWOBJ, NEWOBJ_EX: call a class from the stack
                what = next((str(x) for x in reversed(stack) if isinstance(x, _Global)), "an object")
                self.unsafe(f"opcode {_OPNAMES.get(op, op)} would instantiate {what}")
            elif op in (b"\x82", b"\x83", b"\x84"):  # EXT1/2/4: copyreg extension registry
                self.unsafe(f"opcode {_OPNAMES[op]} looks up a global in the extension registry")
            elif op == b"P":  # PERSID (text persistent id)
                self.unsafe("opcode PERSID (text persistent id)")
            else:
                name = _OPNAMES.get(op, f"0x{op.hex()}" if op else "end of data")
                self.unsafe(f"unsupported opcode {name} at byte {at}")


_OPNAMES = {
    b"o": "OBJ", b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX", b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4",
    b"I": "INT", b"L": "LONG", b"F": "FLOAT", b"S": "STRING", b"V": "UNICODE", b"p": "PUT", b"g": "GET",
    b"\x8f": "EMPTY_SET", b"\x90": "ADDITEMS", b"\x91": "FROZENSET", b"\x96": "BYTEARRAY8",
    b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",
}


def load_pickle(data: bytes, source: str) -> object:
    """Interpret a torch.save data.pkl. Dicts/lists/tuples/str/int/float/bool/None, with TensorRef for tensors.

    Raises UnsafePickleError for anything outside the allowlist, FormatError for malformed data.
    """
    result = _Interpreter(bytes(data), source).run()
    return dict(result) if isinstance(result, _OrderedDict) else result
