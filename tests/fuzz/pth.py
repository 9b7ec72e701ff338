"""Target `pth`: the whole Meta loader (zip directory, restricted unpickler, tensor views, config checks) on
mutated torch.save files beside a valid params.json, then a forward pass over whatever loaded."""
import json
import os

from llama_cx.formats import open_checkpoint

from ._corpus import TINY, scratch_dir, torch_checkpoints, write_atomic, zip_hotspots
from ._engine import Seed
from ._model_check import run_model

NAME = "pth"
TIMEOUT = 10.0


def _dir() -> str:
    d = os.path.join(scratch_dir(), "pth")
    if not os.path.isdir(d):
        os.makedirs(d)
        with open(os.path.join(d, "params.json"), "w") as f:
            json.dump(TINY, f)
    return d


def seeds():
    return [Seed(name, data, zip_hotspots(data)) for name, data in torch_checkpoints()]


def execute(data: bytes):
    d = _dir()
    write_atomic(os.path.join(d, "consolidated.00.pth"), data)
    run_model(open_checkpoint(d))
