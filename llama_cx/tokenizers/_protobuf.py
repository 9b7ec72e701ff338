"""A minimal protobuf (proto2) wire-format reader: just enough to read SentencePiece's ModelProto without the
`protobuf` package.

The wire format (https://protobuf.dev/programming-guides/encoding/): a message is a sequence of fields, each a
varint key `(field_number << 3) | wire_type` followed by its value:

    wire type 0  VARINT  int32/int64/uint32/uint64/bool/enum, 1..10 bytes, 7 bits each, little end first
    wire type 1  I64     fixed64/sfixed64/double, 8 bytes little-endian
    wire type 2  LEN     string/bytes/embedded message/packed repeated: a varint length, then that many bytes
    wire type 5  I32     fixed32/sfixed32/float, 4 bytes little-endian
    (3 and 4 are the deprecated groups: refused)

`decode(data, schema)` reads one message into a dict by a schema {field_number: Field}; unknown fields are
skipped (as protobuf parsers do), a repeated field gives a list, a singular field seen twice keeps the last
value, and a singular message seen twice is merged (both as protobuf specifies). Every read is bounds-checked:
a truncated or overlong input, a bad wire type, or a known field with the wrong wire type raises FormatError
with one line naming the file, the field path and the problem.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Optional, Union

from ..errors import FormatError

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "group start", 4: "group end", 5: "32-bit"}
_F32 = struct.Struct("<f")
_MAX_DEPTH = 16  # SentencePiece nests two deep; a hostile file must not recurse forever


@dataclass(frozen=True)
class Field:
    """One field of a schema. kind: 'int32', 'int64', 'uint64', 'bool', 'enum', 'float', 'string', 'bytes' or
    'message' (then `schema` is the nested message's schema)."""

    name: str
    kind: str
    repeated: bool = False
    schema: Optional[Dict[int, "Field"]] = None


_WIRE_OF_KIND = {"int32": VARINT, "int64": VARINT, "uint64": VARINT, "bool": VARINT, "enum": VARINT,
                 "float": I32, "string": LEN, "bytes": LEN, "message": LEN}


class _Reader:
    def __init__(self, data: Union[bytes, memoryview], source: str):
        self.data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.source = source

    def fail(self, path, msg: str):
        where = _format(path)
        raise FormatError(f"{self.source}: {msg}" + (f" (in {where})" if where else ""))

    def varint(self, pos: int, end: int, path):
        """(value, next position); at most 10 bytes, the 10th holding only the top bit of a 64-bit value."""
        data = self.data
        result = shift = 0
        for i in range(10):
            if pos >= end:
                self.fail(path, "truncated protobuf (a varint runs past the end of its message)")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                if i == 9 and b > 1:
                    self.fail(path, "malformed protobuf (a varint is larger than 64 bits)")
                return result, pos
            shift += 7
        self.fail(path, "malformed protobuf (a varint is longer than 10 bytes)")

    def message(self, pos: int, end: int, schema: Dict[int, Field], out: dict, path, depth: int) -> dict:
        if depth > _MAX_DEPTH:
            self.fail(path, "protobuf messages nested too deeply")
        data = self.data
        while pos < end:
            b = data[pos]  # keys and lengths are almost always one byte: read those inline
            if b < 0x80:
                key, pos = b, pos + 1
            else:
                key, pos = self.varint(pos, end, path)
            number, wire = key >> 3, key & 7
            if number == 0:
                self.fail(path, "malformed protobuf (field number 0)")
            field = schema.get(number)
            if field is not None and wire != _WIRE_OF_KIND[field.kind]:
                expected = _WIRE_OF_KIND[field.kind]
                self.fail(_where(path, field), f"malformed protobuf: field {number} ({field.name}) has wire type "
                                               f"{wire} ({_WIRE_NAMES.get(wire, 'invalid')}), expected {expected} "
                                               f"({_WIRE_NAMES[expected]})")
            if wire == VARINT:
                if pos < end and data[pos] < 0x80:
                    value, pos = data[pos], pos + 1
                else:
                    value, pos = self.varint(pos, end, _where(path, field))
            elif wire == LEN:
                if pos < end and data[pos] < 0x80:
                    n, pos = data[pos], pos + 1
                else:
                    n, pos = self.varint(pos, end, _where(path, field))
                if n > end - pos:
                    self.fail(_where(path, field),
                              f"truncated protobuf (a field of {n} bytes runs past the end of its message)")
                value, pos = (pos, pos + n), pos + n
            elif wire == I32:
                if pos + 4 > end:
                    self.fail(_where(path, field), "truncated protobuf (a 32-bit field runs past the end of its message)")
                value, pos = bytes(data[pos:pos + 4]), pos + 4
            elif wire == I64:
                if pos + 8 > end:
                    self.fail(_where(path, field), "truncated protobuf (a 64-bit field runs past the end of its message)")
                value, pos = bytes(data[pos:pos + 8]), pos + 8
            else:
                self.fail(_where(path, field), f"malformed protobuf: wire type {wire} "
                                               f"({_WIRE_NAMES.get(wire, 'invalid')}) of field {number} is not supported")
            if field is None:
                continue  # unknown field: skipped, as protobuf parsers do
            if field.kind == "message":
                if field.repeated:
                    items = out.setdefault(field.name, [])
                    items.append(self.message(value[0], value[1], field.schema, {}, (path, field, len(items)),
                                              depth + 1))
                else:  # a singular message seen twice is merged (protobuf semantics)
                    out[field.name] = self.message(value[0], value[1], field.schema, out.get(field.name, {}),
                                                   (path, field, None), depth + 1)
                continue
            value = self.scalar(field, value, path)
            if field.repeated:
                out.setdefault(field.name, []).append(value)
            else:
                out[field.name] = value
        return out

    def scalar(self, field: Field, value, path):
        kind = field.kind
        if kind in ("int32", "enum"):  # negative int32 values are sign-extended to 64 bits on the wire
            value &= 0xFFFFFFFF
            return value - (1 << 32) if value >= 1 << 31 else value
        if kind == "int64":
            return value - (1 << 64) if value >= 1 << 63 else value
        if kind == "uint64":
            return value
        if kind == "bool":
            return value != 0
        if kind == "float":
            return _F32.unpack(value)[0]
        raw = bytes(self.data[value[0]:value[1]])
        if kind == "bytes":
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(_where(path, field), f"string field {field.name} is not valid UTF-8")


# A field path, built only when an error names it: None (the top message) or (parent path, Field, index or None).
def _where(path, field: Optional[Field]):
    return path if field is None else (path, field, None)


def _format(path) -> str:
    parts = []
    while path is not None:
        path, field, index = path
        parts.append(field.name + (f"[{index}]" if index is not None else ""))
    return ".".join(reversed(parts))


def decode(data: Union[bytes, memoryview], schema: Dict[int, Field], source: str) -> dict:
    """The message in `data` as a dict {field name: value}; FormatError (naming `source`) if it is malformed."""
    r = _Reader(data, source)
    return r.message(0, len(r.data), schema, {}, None, 0)
