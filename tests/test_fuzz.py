"""Fuzzing in the test suite: every harness of tests/fuzz/ for a short, deterministic budget, and one
regression test per finding (the minimal input that used to crash, hang or escape as a raw exception).

Longer runs: `python scripts/fuzz.py --seconds 600` (see tests/fuzz/__init__.py).
"""
import os
import struct
import subprocess
import sys

import pytest

from fuzz import TARGETS, _engine
from llama_cx.formats import open_checkpoint
from llama_cx.config import ModelConfig
from llama_cx.errors import FormatError, UnsafePickleError
from llama_cx.formats._unpickle import load_pickle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# hypothesis examples per target: together about 40 s on one busy CI core (seed generation included)
BUDGET = {"zip": 1000, "unpickle": 1000, "pth": 600, "params_json": 800, "tiktoken": 300, "gguf": 800, "tokenizer": 400,
          "spm": 600, "safetensors": 600}


def test_every_target_has_a_budget():
    assert set(BUDGET) == set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target(name):
    stats = _engine.run(name, max_examples=BUDGET[name], derandomize=True)
    print(f"{name}: {stats.executions} executions ({stats.accepted} accepted, {stats.refused} refused) "
          f"in {stats.seconds:.1f} s")
    assert not stats.findings, "\n".join(map(str, stats.findings))
    assert stats.executions >= BUDGET[name]
    # the seeds are real files: most must load, and mutations must reach both outcomes
    assert stats.refused > 0 and stats.accepted > 0


def test_mutations_are_deterministic_and_bounded():
    seeds = [_engine.Seed("a", b"0123456789abcdef", ((0, 4), (8, 8))), _engine.Seed("b", b"XYZ")]
    ops = [("hot", 1, 2**64 - 1), ("hot", 0, ("size", -1)), ("splice", 3, 1, 1, 10), ("flip", 17, 0),
           ("insert", 100, b"!!"), ("dup", 2, 3), ("delete", 5, 2), ("int", 1, 2, 2**16 + 5), ("truncate", 30)]
    out = _engine.apply(seeds, 0, ops)
    assert out == _engine.apply(seeds, 0, ops)
    want = bytearray(b"0123456789abcdef")
    want[8:16] = b"\xff" * 8
    want[0:4] = struct.pack("<I", 15)
    want[3:5] = b"YZ"
    want[17 % 16] ^= 1
    want[100 % 17 : 100 % 17] = b"!!"
    p = 2 % 19
    want[p:p] = want[p : p + 3]
    del want[5:7]
    want[1:3] = struct.pack("<H", 5)
    del want[30 % (len(want) + 1) :]
    assert out == bytes(want)


# ---- regression tests: one per finding ------------------------------------------------------------------
def _in_subprocess(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter: a regression that segfaults fails this test instead of the whole run."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_unpickle_deeply_nested_tuple_key_is_refused():
    # 200k TUPLE1 opcodes wrap () 200k times; as a dict key, hashing it recursed in C until the stack
    # overflowed (SIGSEGV). Found by the unpickle harness.
    r = _in_subprocess(
        "from llama_cx.formats._unpickle import load_pickle\n"
        "from llama_cx.errors import FormatError\n"
        "try:\n"
        "    load_pickle(b'\\x80\\x02}' + b')' + b'\\x85' * 200000 + b'K\\x01s.', 'x.pkl')\n"
        "except FormatError as e:\n"
        "    print('refused:', e)\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == "refused: x.pkl: malformed pickle: tuples nested deeper than 32 levels at byte 37\n"


def test_unpickle_nesting_limit():
    # torch's own pickles nest tuples 3 deep; 32 levels are allowed, 33 refused
    assert load_pickle(b"\x80\x02}" + b")" + b"\x85" * 32 + b"K\x01s.", "x.pkl") == {_nest(32): 1}
    with pytest.raises(FormatError, match="tuples nested deeper than 32 levels"):
        load_pickle(b"\x80\x02}" + b")" + b"\x85" * 33 + b"K\x01s.", "x.pkl")


def _nest(n):
    t = ()
    for _ in range(n):
        t = (t,)
    return t


@pytest.mark.parametrize("where", ["persistent id storage type", "tensor offset"])
def test_unpickle_error_messages_survive_deep_and_huge_values(where):
    # A 100k-level nested list (N EMPTY_LIST then N-1 APPEND) in a place the error message quotes:
    # formatting it with str() raised RecursionError instead of the FormatError.
    n = 100_000
    deep = b"]" * n + b"a" * (n - 1)
    if where == "persistent id storage type":
        data = b"\x80\x02(X\x07\x00\x00\x00storage" + deep + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ."
        cls = UnsafePickleError
    else:
        pid = (b"(X\x07\x00\x00\x00storage\x8c\x05torch\x8c\x0cFloatStorage\x93X\x01\x00\x00\x000"
               b"X\x03\x00\x00\x00cpuK\x04tQ")
        data = (b"\x80\x02\x8c\x0ctorch._utils\x8c\x12_rebuild_tensor_v2\x93(" + pid + deep +
                b"K\x04\x85K\x01\x85\x89)tR.")
        cls = FormatError
    with pytest.raises(cls) as e:
        load_pickle(data, "x.pkl")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg


def test_params_json_nested_too_deep(tmp_path):
    # json.loads raises RecursionError (not ValueError) for ~2000 nested arrays. Found by params_json.
    (tmp_path / "params.json").write_text('{"dim": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(FormatError, match="params.json: "):
        ModelConfig.from_params_file(str(tmp_path / "params.json"))


@pytest.mark.parametrize("changes", [
    dict(dim=10**400),  # OverflowError: integer division result too large for a float (ffn_hidden_dim)
    dict(ffn_dim_multiplier=1e308),  # OverflowError: cannot convert float infinity to integer
])
def test_params_json_absurd_sizes(changes):
    params = dict(dict(dim=16, n_layers=1, n_heads=2, vocab_size=32), **changes)
    with pytest.raises(FormatError, match="params.json: "):
        ModelConfig.from_params(params)


def test_gguf_rope_freqs_of_zeros(tmp_path):
    # rope_freqs.weight all zeros: the expected Llama 3.1 factors were computed with factor = max = 0 before
    # the factor was checked: ZeroDivisionError. Found by the gguf harness.
    import numpy as np
    from _ckpt import random_state_dict
    from _gguf_files import write_llama_gguf
    from fuzz._corpus import TINY
    from gguf import GGMLQuantizationType as Q

    path = tmp_path / "m.gguf"
    write_llama_gguf(path, TINY, random_state_dict(TINY, dtype="f32"),
                     extra_tensors=[("rope_freqs.weight", np.zeros(4, dtype=np.float32), Q.F32)])
    with pytest.raises(FormatError, match="rope_freqs.weight"):
        open_checkpoint(str(path))


def test_tiktoken_rank_with_thousands_of_digits(tmp_path, llama3_tokenizer_path):
    # int() of a rank with more than 4300 digits raised ValueError (Python's int/str conversion limit).
    # Found by the tiktoken harness (line edits).
    lines = open(llama3_tokenizer_path, "rb").read().split(b"\n")[:300]
    lines[3] = lines[3].split()[0] + b" " + b"9" * 5000
    (tmp_path / "tokenizer.model").write_bytes(b"\n".join(lines) + b"\n")
    from llama_cx.tokenizers import Tokenizer

    with pytest.raises(FormatError) as e:
        Tokenizer.from_file(tmp_path / "tokenizer.model")
    assert f"tokenizer.model:4: rank '{'9' * 50}" in str(e.value) and "is too large" in str(e.value)
    assert "\n" not in str(e.value)


def test_fuzz_script_runs(tmp_path):
    """scripts/fuzz.py: one target, a short budget, the summary table, exit status 0 with no findings."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "fuzz.py"), "--target", "zip", "--seconds", "3",
                        "--findings", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    row = [line.split() for line in r.stdout.splitlines() if line.startswith("zip ")][-1]
    assert int(row[1]) > 100 and row[-1] == "0", r.stdout
    assert "no findings" in r.stdout
