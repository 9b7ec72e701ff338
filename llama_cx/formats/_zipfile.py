"""A strict, read-only zip directory reader for torch.save archives, working over one mmap of the file.

torch.save (PyTorchFileWriter, built on miniz) writes an uncompressed zip: every member STORED, data aligned
to 64 bytes by padding in the LOCAL header's extra field, sizes in a trailing data descriptor (flag bit 3, so
the local header's sizes are zero), and always a ZIP64 end-of-central-directory record + locator. Members
larger than 4 GiB (or past 4 GiB) carry their real sizes/offsets in a ZIP64 extra field of the central entry.

We parse the central directory ourselves (zipfile.ZipFile would work, but we need the absolute data offset
of every member without reading it, and every number checked against the file size before it is used).
Headers are read with plain file reads, not through the mmap, so that finding the members faults no page
of the mapping in (the kernel maps ~64 KiB around every touched page). Only what torch needs is supported:
one disk, no encryption, STORED members.

Layout (APPNOTE.TXT 4.3):  [local header 30 + name + extra][data] ... [central dir] [zip64 eocd] [zip64
locator] [eocd 22 + comment]
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Tuple

from ..errors import FormatError, fail

_EOCD = struct.Struct("<4sHHHHIIH")  # sig, disk, cd disk, entries here, entries total, cd size, cd offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # sig, disk with zip64 eocd, zip64 eocd offset, total disks
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")  # sig, record size, made by, needed, disk, cd disk, entries here/total, cd size, cd offset
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # see _read_central_entry
_LOCAL = struct.Struct("<4sHHHHHIIIHH")

_SIG_EOCD = b"PK\x05\x06"
_SIG_ZIP64_LOCATOR = b"PK\x06\x07"
_SIG_ZIP64_EOCD = b"PK\x06\x06"
_SIG_CENTRAL = b"PK\x01\x02"
_SIG_LOCAL = b"PK\x03\x04"

_STORED = 0
_MAX_COMMENT = 0xFFFF
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class ZipMember:
    name: str
    offset: int  # absolute byte offset of the member's data in the file
    size: int  # bytes of data (STORED: compressed size == uncompressed size)


def _read(f, pos: int, n: int, path) -> bytes:
    f.seek(pos)
    b = f.read(n)
    if len(b) != n:
        fail(path, f"file truncated: wanted {n} bytes at offset {pos}")
    return b


def _find_eocd(f, size: int, path) -> Tuple[int, bytes]:
    """(position, bytes) of the end-of-central-directory record: the last 'PK\\5\\6' whose comment ends the file."""
    if size < _EOCD.size:
        fail(path, f"not a zip archive (only {size} bytes)")
    lo = max(0, size - _EOCD.size - _MAX_COMMENT)
    tail = _read(f, lo, size - lo, path)
    pos = len(tail) - _EOCD.size
    while True:
        pos = tail.rfind(_SIG_EOCD, 0, pos + 4)
        if pos < 0:
            fail(path, "not a zip archive, or truncated (no end-of-central-directory record)")
        (comment_len,) = struct.unpack_from("<H", tail, pos + 20)
        if pos + _EOCD.size + comment_len == len(tail):
            return lo + pos, tail[pos : pos + _EOCD.size]
        pos -= 1


def read_zip_directory(f, size: int, path) -> Dict[str, ZipMember]:
    """Every member of the zip open as binary file `f` (`size` bytes), by name, with checked data offsets."""
    eocd_pos, eocd = _find_eocd(f, size, path)
    _sig, disk, cd_disk, n_here, n_total, cd_size, cd_offset, _comment = _EOCD.unpack(eocd)
    end_of_cd_area = eocd_pos  # the central directory must end before the (zip64) eocd records

    loc_pos = eocd_pos - _ZIP64_LOCATOR.size
    locator = _read(f, loc_pos, _ZIP64_LOCATOR.size, path) if loc_pos >= 0 else b""
    if locator[:4] == _SIG_ZIP64_LOCATOR:
        _sig, z_disk, z_off, n_disks = _ZIP64_LOCATOR.unpack(locator)
        if z_disk != 0 or n_disks != 1:
            fail(path, f"multi-disk zip archives are not supported ({n_disks} disks)")
        if z_off + _ZIP64_EOCD.size > loc_pos:
            fail(path, f"corrupt zip: ZIP64 end-of-central-directory offset {z_off} is past its locator at {loc_pos}")
        record = _read(f, z_off, _ZIP64_EOCD.size, path)
        if record[:4] != _SIG_ZIP64_EOCD:
            fail(path, f"corrupt zip: no ZIP64 end-of-central-directory record at offset {z_off}")
        (_sig, _rec, _made, _need, disk64, cd_disk64, n_here64, n_total64, cd_size64, cd_offset64) = _ZIP64_EOCD.unpack(record)
        # The 32-bit fields are either the 0xFFFF.. sentinel or must agree with the 64-bit ones.
        for name, small, big, sentinel in (
            ("entry count", n_total, n_total64, _U16_MAX),
            ("central directory size", cd_size, cd_size64, _U32_MAX),
            ("central directory offset", cd_offset, cd_offset64, _U32_MAX),
        ):
            if small != sentinel and small != big:
                fail(path, f"corrupt zip: {name} is {small} in the end-of-central-directory record but {big} in the ZIP64 one")
        disk, cd_disk, n_here, n_total, cd_size, cd_offset = disk64, cd_disk64, n_here64, n_total64, cd_size64, cd_offset64
        end_of_cd_area = z_off
    elif _U32_MAX in (cd_size, cd_offset) or _U16_MAX in (n_here, n_total):
        fail(path, "corrupt zip: ZIP64 values announced but no ZIP64 end-of-central-directory locator")

    if disk != 0 or cd_disk != 0:
        fail(path, "multi-disk zip archives are not supported")
    if n_here != n_total:
        fail(path, f"corrupt zip: {n_here} entries on this disk but {n_total} in total")
    if cd_offset + cd_size > end_of_cd_area:
        fail(path, f"corrupt zip: central directory ({cd_size} bytes at offset {cd_offset}) runs past its end record at {end_of_cd_area} (file truncated or spliced?)")
    if n_total * _CENTRAL.size > cd_size:
        fail(path, f"corrupt zip: {n_total} entries cannot fit in a {cd_size}-byte central directory")

    members: Dict[str, ZipMember] = {}
    cd = _read(f, cd_offset, cd_size, path)  # positions below are relative to the central directory
    pos, cd_end = 0, cd_size
    for i in range(n_total):
        member, pos = _read_central_entry(f, cd, pos, cd_offset, path, i)
        if member.name in members:
            fail(path, f"corrupt zip: member {member.name!r} appears twice")
        members[member.name] = member
    if pos != cd_end:
        fail(path, f"corrupt zip: central directory holds {cd_end - pos} bytes after its {n_total} entries")
    return members


def _read_central_entry(f, cd: bytes, pos: int, data_end: int, path, index: int):
    """Parse the entry at `cd[pos:]`, then its local header; returns (ZipMember, position of the next entry).

    `data_end` (the central directory's offset) bounds every local header and member data.
    """
    cd_end = len(cd)
    if pos + _CENTRAL.size > cd_end:
        fail(path, f"corrupt zip: central directory entry {index} runs past the directory end")
    (sig, _made, _need, flags, method, _time, _date, _crc, csize, usize, name_len, extra_len, comment_len,
     disk_start, _iattr, _eattr, local_off) = _CENTRAL.unpack_from(cd, pos)
    if sig != _SIG_CENTRAL:
        fail(path, f"corrupt zip: bad signature for central directory entry {index} at offset {data_end + pos}")
    name_pos = pos + _CENTRAL.size
    next_pos = name_pos + name_len + extra_len + comment_len
    if next_pos > cd_end:
        fail(path, f"corrupt zip: name/extra/comment of central directory entry {index} run past the directory end")
    raw_name = cd[name_pos : name_pos + name_len]
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        name = raw_name.decode("cp437")
    extra = cd[name_pos + name_len : name_pos + name_len + extra_len]

    if _U32_MAX in (usize, csize, local_off) or disk_start == _U16_MAX:
        usize, csize, local_off, disk_start = _zip64_extra(extra, usize, csize, local_off, disk_start, path, name)
    if disk_start != 0:
        fail(path, f"multi-disk zip archives are not supported (member {name!r} starts on disk {disk_start})")
    if flags & 0x1:
        fail(path, f"zip member {name!r} is encrypted")
    if method != _STORED:
        fail(path, f"zip member {name!r} is compressed (method {method}); torch.save writes uncompressed (STORED) members")
    # Checked before anything is sized from these numbers: a zip-bomb-like declaration is refused here.
    if usize != csize:
        fail(path, f"corrupt zip: STORED member {name!r} declares {usize} bytes uncompressed but {csize} stored")
    if csize > data_end:
        fail(path, f"corrupt zip: member {name!r} declares {csize} bytes, more than the {data_end} bytes before the central directory")

    # The local header's name and extra lengths decide where the data starts (torch pads the local extra
    # field to align data; the central extra field differs).
    if local_off + _LOCAL.size + name_len > data_end:
        fail(path, f"corrupt zip: local header of member {name!r} at offset {local_off} lies past the data area ({data_end} bytes)")
    local = _read(f, local_off, _LOCAL.size + name_len, path)
    lsig, *_rest, lname_len, lextra_len = _LOCAL.unpack_from(local)
    if lsig != _SIG_LOCAL:
        fail(path, f"corrupt zip: no local header for member {name!r} at offset {local_off}")
    if lname_len != name_len or local[_LOCAL.size :] != raw_name:
        fail(path, f"corrupt zip: local header at offset {local_off} does not name member {name!r}")
    data_off = local_off + _LOCAL.size + lname_len + lextra_len
    if data_off + csize > data_end:
        fail(path, f"corrupt zip: data of member {name!r} ({csize} bytes at offset {data_off}) runs past the data area ({data_end} bytes; truncated?)")
    return ZipMember(name, data_off, csize), next_pos


def _zip64_extra(extra: bytes, usize, csize, local_off, disk_start, path, name):
    """Replace sentinel (0xFFFFFFFF) fields by the ZIP64 extended-information extra field (tag 0x0001)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if len(body) != length:
            break
        if tag == 0x0001:
            off = 0

            def take(fmt):
                nonlocal off
                n = struct.calcsize(fmt)
                if off + n > len(body):
                    fail(path, f"corrupt zip: ZIP64 extra field of member {name!r} is too short")
                (v,) = struct.unpack_from(fmt, body, off)
                off += n
                return v

            # Only the fields whose 32-bit value is the sentinel are present, in this order (APPNOTE 4.5.3).
            if usize == _U32_MAX:
                usize = take("<Q")
            if csize == _U32_MAX:
                csize = take("<Q")
            if local_off == _U32_MAX:
                local_off = take("<Q")
            if disk_start == _U16_MAX:
                disk_start = take("<I")
            return usize, csize, local_off, disk_start
        pos += 4 + length
    fail(path, f"corrupt zip: member {name!r} needs a ZIP64 extra field but has none")
