"""What a model file may make llama_cx spend, in one place: the largest small file or zip member read whole,
the pickle interpreter's budget, and the refusal of paths that are not regular files or directories.

Each bound is far above what a real file needs (the numbers beside them) and far below what would hurt: a
small or sparse hostile file must cost seconds and megabytes, never minutes or gigabytes.
"""
from __future__ import annotations

import os
import stat

from .errors import FormatError

# Side files and torch.save members read whole into memory (checked against the size on disk or the size the
# zip declares, before reading; a sparse 3 GiB member costs nothing to make and 3 GB to read).
MAX_PARAMS_JSON = 1 << 20  # Meta's params.json: ~250 bytes; Hugging Face's config.json: ~1 KB
MAX_SIDE_JSON = 4 << 20  # tokenizer_config.json (Llama 3.1's, chat template inside: ~55 KB), generation_config.json,
#                          chat_template.jinja
MAX_TOKENIZER_FILE = 64 << 20  # Meta's Llama 3 tokenizer.model: 2.2 MB (128k tokens); tokenizer.json: 9 MB;
#                                Llama 2's SentencePiece tokenizer.model: 0.5 MB
MAX_SAFETENSORS_INDEX = 64 << 20  # model.safetensors.index.json: ~25 KB for Llama 3 8B (291 tensors)
# A safetensors header is read whole and parsed as JSON: the reference implementation's own bound
# (safetensors/src/tensor.rs MAX_HEADER_SIZE); a Llama 3 70B shard's header is ~60 KB.
MAX_SAFETENSORS_HEADER = 100_000_000
MAX_DATA_PKL = 64 << 20  # data.pkl of a Llama 3.1 405B shard: ~0.2 MB (1.1k tensors, ~180 bytes each)
MAX_SMALL_MEMBER = 4096  # byteorder ("little"), version ("3"), .data/serialization_id: a few bytes
MAX_ZIP_DIRECTORY = 64 << 20  # the central directory, read whole: ~100 bytes per member, one member per tensor

# GGUF metadata and tensor infos become Python objects (~60 bytes for a 2-byte string read from 10 bytes of
# file): bounded in count, not only by the file's size, which a sparse file makes free. Llama 3's vocabulary is
# ~540k array elements (128k tokens + types, 280k merges); a 405B model has 1.1k tensors.
MAX_GGUF_ELEMENTS = 4 << 20  # metadata array elements, all arrays together: <= ~300 MB of Python objects
MAX_GGUF_TENSORS = 1 << 17
MAX_GGUF_KEYS = 1 << 16

# RoPE (config.ModelConfig): frequencies are theta^(-2i/head_dim) in float32 and wavelengths 2 pi / frequency;
# a theta of 1e-300 or 1e300 made them 0 or inf (ZeroDivisionError at load). Real models use 1e4 .. 5e6; 1e12
# leaves room for long-context fine-tunes (3.6e9) while every frequency stays a normal float32. The Llama 3.1
# scaling factor divides frequencies: Llama 3.1 uses 8, Llama 3.2 1B/3B 32.
ROPE_THETA_RANGE = (1.0, 1e12)  # exclusive below, inclusive above
ROPE_FACTOR_RANGE = (1.0, 1e6)

# Kernel threads (runtime.set_num_threads, --threads): each gets private buffers in every context, and OpenMP
# makes them all; beyond the largest machines' core counts a value is a typo (99999999999 overflowed C's int).
MAX_THREADS = 1024

# Opcodes the pickle interpreter (_unpickle) runs. Each adds at most one object (a container, a string of
# bytes it read, a number, a record) or one slot (stack, container item, memo entry), so this bounds its memory
# and time, wherever the pickle came from. torch.save writes 32 per tensor, so 2M covers 65k tensors (a Llama
# 3.1 405B shard has 1.1k); the worst case, every opcode an empty list appended to another, stays near 200 MB.
MAX_PICKLE_OPS = 2 << 20
# A dict key is hashed, and hashing a tuple hashes everything inside it: with memo sharing (BINGET) a key of
# 355 bytes can be a 32-level DAG of 2^31 leaves. Keys are refused when their expanded size (every element,
# counted again each time it is shared) passes this; torch's keys are strings.
MAX_KEY_ELEMENTS = 256


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str, what: str, max_size: int = None):
    """`path` opened for binary reading, refused unless it is a regular file (of at most max_size bytes).

    Opened with O_NONBLOCK and checked with fstat on the open descriptor: opening a FIFO for reading without it
    waits for a writer forever, and a stat before open would leave a window to swap the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FormatError(f"{path}: {what} not found") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path}: cannot read the {what}: it is {_kind(st.st_mode)}, not a regular file")
        if max_size is not None and st.st_size > max_size:
            raise FormatError(f"{path}: the {what} is {st.st_size} bytes, more than the {max_size} such a file "
                              f"can need (refused before reading)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str, what: str, max_size: int) -> bytes:
    """The bytes of a regular file of at most max_size bytes (see open_regular)."""
    with open_regular(path, what, max_size) as f:
        try:
            data = f.read(max_size + 1)
        except OSError as e:
            raise FormatError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > max_size:  # it grew after the check
        raise FormatError(f"{path}: the {what} is more than {max_size} bytes")
    return data


def check_model_path(path: str) -> None:
    """Refuse a model path that is neither a directory nor a regular file (a FIFO, a device, a socket)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file or directory") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise FormatError(f"{path}: {_kind(st.st_mode)}, not a model file or directory")
