"""Target `zip`: llama_cx.formats._zipfile.read_zip_directory on torch.save archives.

Oracle beyond "no crash": every member it returns lies inside the file (the loader maps data by these
offsets without further checks of its own).
"""
import io

from llama_cx.formats._zipfile import read_zip_directory

from ._corpus import torch_checkpoints, zip_hotspots
from ._engine import Seed

NAME = "zip"
TIMEOUT = 5.0


def seeds():
    return [Seed(name, data, zip_hotspots(data)) for name, data in torch_checkpoints()]


def execute(data: bytes):
    members = read_zip_directory(io.BytesIO(data), len(data), "fuzz.pth")
    for m in members.values():
        assert 0 <= m.offset and m.size >= 0 and m.offset + m.size <= len(data), (m, len(data))
