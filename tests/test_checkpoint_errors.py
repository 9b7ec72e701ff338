"""Every way a Meta checkpoint can be wrong gives one FormatError line naming the file and the problem;
hostile pickles raise UnsafePickleError and nothing in them runs."""
import collections
import io
import json
import os
import pickle
import random
import shutil
import subprocess
import zipfile

import pytest
import torch

from _ckpt import SMALL, random_state_dict, write_checkpoint
from llama_cx.formats import open_checkpoint
from llama_cx.errors import FormatError, UnsafePickleError
from test_checkpoint import assert_same_as_torch, rewrite_central

PKL = "consolidated.00/data.pkl"


def error(path, cls=FormatError) -> str:
    with pytest.raises(cls) as info:
        open_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


@pytest.fixture
def ckpt(tmp_path):
    """A valid small checkpoint directory; returns (dir, path of its .pth)."""
    d = tmp_path / "ckpt"
    write_checkpoint(d, dtype="bf16", seed=1)
    return d, str(d / "consolidated.00.pth")


def rezip(pth, replace=None, compress=(), drop=(), add=None):
    """Re-write torch archive `pth` in place with Python's zipfile, changing members."""
    with zipfile.ZipFile(pth) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(pth, "w") as z:
        for name, data in members + list((add or {}).items()):
            if name in drop:
                continue
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
            z.writestr(info, (replace or {}).get(name, data))


# ---- torch-like pickles forged here, to tamper with what torch would never write ----------------------------
class _FakeStorage:
    def __init__(self, key, numel, storage_type):
        self.key, self.numel, self.storage_type = key, numel, storage_type


class _FakeTensor:
    """Pickles exactly as torch pickles a tensor: _rebuild_tensor_v2(persistent storage, offset, size, stride, ...)."""

    def __init__(self, key, numel, offset, size, stride, storage_type=torch.BFloat16Storage):
        self.storage = _FakeStorage(key, numel, storage_type)
        self.args = (offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage,) + self.args


class _TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def forged_pickle(pth, **changes) -> bytes:
    """data.pkl describing the (unshared) tensors of `pth` like torch does; `changes` maps name -> field overrides."""
    sd = torch.load(pth, weights_only=True)
    fakes = {}
    for key, (name, t) in enumerate(sd.items()):
        f = dict(key=str(key), numel=t.numel(), offset=0, size=t.shape, stride=t.stride())
        f.update(changes.get(name, {}))
        fakes[name] = _FakeTensor(**f)
    buf = io.BytesIO()
    _TorchLikePickler(buf, protocol=2).dump(fakes)
    return buf.getvalue()


def test_forged_pickle_is_faithful(ckpt):
    """Untampered, the forged data.pkl is byte for byte what torch.save wrote, and loads the same tensors."""
    d, pth = ckpt
    original = str(d.parent / "original.pth")
    shutil.copy(pth, original)
    rezip(pth, replace={PKL: forged_pickle(pth)})
    assert zipfile.ZipFile(pth).read(PKL) == zipfile.ZipFile(original).read(PKL)
    forged, ref = torch.load(pth, weights_only=True), torch.load(original, weights_only=True)
    assert all(torch.equal(forged[n], ref[n]) for n in ref)
    assert_same_as_torch(open_checkpoint(d), original)


# ---- paths and directory layout -------------------------------------------------------------------------
def test_missing_path(tmp_path):
    assert error(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such file or directory"
    assert error(str(tmp_path / "nope.pth")).endswith("nope.pth: no such file or directory")


def test_directory_without_params_or_weights(tmp_path, ckpt):
    d, pth = ckpt
    os.remove(d / "params.json")
    assert error(d) == f"{d}: no params.json (expected a Meta checkpoint directory: params.json, consolidated.00.pth, tokenizer.model)"
    assert error(pth) == f"{d / 'params.json'}: file not found (a Meta .pth needs the params.json beside it)"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "params.json").write_text(json.dumps(SMALL))
    assert "no consolidated.00.pth" in error(empty)


def test_multi_shard(ckpt):
    """A second copy of a whole checkpoint is not a model-parallel shard (tests/test_meta_shards.py has real ones)."""
    d, pth = ckpt
    shutil.copy(pth, d / "consolidated.01.pth")
    want = f"{pth}: tensor tok_embeddings.weight is (600, 64) (2 shards joined along dim 0), expected (300, 64) from params.json"
    assert error(d) == want
    assert error(pth) == want


# ---- not a torch zip ------------------------------------------------------------------------------------
def test_not_a_zip(ckpt):
    d, pth = ckpt
    with open(pth, "wb") as f:
        f.write(os.urandom(4096))
    assert error(d) == f"{pth}: not a torch.save checkpoint (not a zip archive)"
    open(pth, "wb").close()
    assert error(d) == f"{pth}: empty file"


def test_gguf_magic_goes_to_the_gguf_reader(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + os.urandom(60))
    assert "zip" not in error(bad)


def test_legacy_torch_format(ckpt):
    d, pth = ckpt
    torch.save(torch.load(pth), pth, _use_new_zipfile_serialization=False)
    assert error(d) == f"{pth}: not a torch.save checkpoint (not a zip archive) (legacy pre-1.6 torch.save format?)"


def test_zip_without_data_pkl(ckpt):
    d, pth = ckpt
    rezip(pth, drop={PKL})
    assert error(d) == f"{pth}: not a torch.save checkpoint (0 */data.pkl members in the zip)"


@pytest.mark.parametrize("member", [PKL, "consolidated.00/data/3"])
def test_compressed_member(ckpt, member):
    d, pth = ckpt
    rezip(pth, compress={member})
    assert zipfile.ZipFile(pth).getinfo(member).compress_type == zipfile.ZIP_DEFLATED
    assert error(d) == f"{pth}: zip member {member!r} is compressed (method 8); torch.save writes uncompressed (STORED) members"


def test_big_endian(ckpt):
    d, pth = ckpt
    rezip(pth, replace={"consolidated.00/byteorder": b"big"})
    assert error(d) == f"{pth}: big-endian checkpoints are not supported (byteorder b'big')"


# ---- truncated, spliced and forged zip structure ----------------------------------------------------------
def _cut_points(pth):
    with zipfile.ZipFile(pth) as z:
        st = z.getinfo("consolidated.00/data/0")
        st1 = z.getinfo("consolidated.00/data/1")
        return {
            "inside-storage": st.header_offset + 200,
            "inside-local-header": st1.header_offset + 12,
            "inside-data.pkl": 100,
            "inside-central-dir": z.start_dir + 30,
            "inside-eocd": os.path.getsize(pth) - 10,
        }


@pytest.mark.parametrize("where", ["inside-storage", "inside-local-header", "inside-data.pkl", "inside-central-dir", "inside-eocd"])
def test_truncated(ckpt, where):
    d, pth = ckpt
    cut = _cut_points(pth)[where]
    with open(pth, "r+b") as f:
        f.truncate(cut)
    assert error(d) == f"{pth}: not a zip archive, or truncated (no end-of-central-directory record)"


@pytest.mark.parametrize("where", ["inside-storage", "inside-central-dir"])
def test_spliced(ckpt, where):
    """Bytes cut from the middle, end records intact: every offset after the cut is now wrong."""
    d, pth = ckpt
    cut = _cut_points(pth)[where]
    data = open(pth, "rb").read()
    open(pth, "wb").write(data[:cut] + data[cut + 64 :])
    msg = error(d)
    assert msg.startswith(f"{pth}: corrupt zip: "), msg


def test_member_offset_beyond_file(ckpt):
    d, pth = ckpt
    size = os.path.getsize(pth)
    rewrite_central(pth, pth, override={"consolidated.00/data/2": dict(offset=size + 4096)})
    with zipfile.ZipFile(pth) as z:
        start = z.start_dir
    assert error(d) == (f"{pth}: corrupt zip: local header of member 'consolidated.00/data/2' at offset {size + 4096} "
                        f"lies past the data area ({start} bytes)")


def test_member_data_runs_past_central_directory(ckpt):
    d, pth = ckpt
    with zipfile.ZipFile(pth) as z:
        info, start = z.getinfo("consolidated.00/data/0"), z.start_dir
    rewrite_central(pth, pth, override={"consolidated.00/data/0": dict(size=start - info.header_offset)})
    msg = error(d)
    assert msg.startswith(f"{pth}: corrupt zip: data of member 'consolidated.00/data/0' ({start - info.header_offset} bytes at offset ")
    assert msg.endswith(f"runs past the data area ({start} bytes; truncated?)")


@pytest.mark.parametrize("zip64", [True, False], ids=["zip64", "zip32"])
def test_zip_bomb_declared_size(ckpt, zip64):
    d, pth = ckpt
    huge = (1 << 62) if zip64 else 0xFFFFFFF0
    rewrite_central(pth, pth, zip64=zip64, override={PKL: dict(size=huge)})
    with zipfile.ZipFile(pth) as z:
        start = z.start_dir
    assert error(d) == f"{pth}: corrupt zip: member {PKL!r} declares {huge} bytes, more than the {start} bytes before the central directory"


def test_storage_missing_from_zip(ckpt):
    d, pth = ckpt
    rezip(pth, drop={"consolidated.00/data/0"})
    assert error(d) == f"{pth}: tensor tok_embeddings.weight refers to storage '0', which is not in the archive"


# ---- forged tensor records -------------------------------------------------------------------------------
def test_storage_offset_beyond_storage(ckpt):
    d, pth = ckpt
    rezip(pth, replace={PKL: forged_pickle(pth, **{"norm.weight": dict(offset=1 << 40)})})
    assert error(d) == f"{pth}: tensor norm.weight (shape (64), strides (1), storage offset {1 << 40}) reaches element {(1 << 40) + 63} of a storage of 64 elements"


def test_strides_reach_past_storage(ckpt):
    d, pth = ckpt
    rezip(pth, replace={PKL: forged_pickle(pth, **{"layers.0.attention.wq.weight": dict(stride=(65, 1))})})
    assert error(d) == f"{pth}: tensor layers.0.attention.wq.weight (shape (64, 64), strides (65, 1), storage offset 0) reaches element 4158 of a storage of 4096 elements"


def test_storage_numel_larger_than_member(ckpt):
    """A persistent id claiming a huge storage (zip-bomb-like) is refused before anything is sized from it."""
    d, pth = ckpt
    rezip(pth, replace={PKL: forged_pickle(pth, **{"norm.weight": dict(numel=1 << 50)})})
    assert error(d) == f"{pth}: storage '19' of tensor norm.weight declares {1 << 50} elements ({1 << 51} bytes) but its zip member holds 128 bytes"


def test_unsupported_storage_dtype(ckpt):
    d, pth = ckpt
    rezip(pth, replace={PKL: forged_pickle(pth, **{"norm.weight": dict(storage_type=torch.DoubleStorage)})})
    assert error(d) == f"{pth}: tensor norm.weight has dtype float64 (DoubleStorage); only bfloat16, float16 and float32 checkpoints are supported"


def test_float64_checkpoint(tmp_path):
    write_checkpoint(tmp_path, state_dict={k: v.double() for k, v in random_state_dict(SMALL, "f32").items()})
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: tensor tok_embeddings.weight has dtype float64 (DoubleStorage); only bfloat16, float16 and float32 checkpoints are supported"


def test_mixed_dtypes(tmp_path):
    sd = random_state_dict(SMALL, "bf16")
    sd["layers.1.ffn_norm.weight"] = sd["layers.1.ffn_norm.weight"].float()
    write_checkpoint(tmp_path, state_dict=sd)
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: mixed dtypes: tok_embeddings.weight is bf16 but layers.1.ffn_norm.weight is f32"


def test_not_a_state_dict(ckpt):
    d, pth = ckpt
    rezip(pth, replace={PKL: pickle.dumps([1, 2, 3], protocol=2)})
    assert error(d) == f"{pth}: data.pkl holds a list, not a state dict of named tensors"


@pytest.mark.parametrize("cut", [1, 40, -2])
def test_truncated_pickle(ckpt, cut):
    d, pth = ckpt
    data = zipfile.ZipFile(pth).read(PKL)
    rezip(pth, replace={PKL: data[:cut]})
    assert error(d).startswith(f"{pth} ({PKL}): malformed pickle: ")


# ---- shapes against params.json --------------------------------------------------------------------------
def test_shape_mismatch(tmp_path):
    write_checkpoint(tmp_path, state_dict=random_state_dict(SMALL), vocab_size=301)
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: tensor tok_embeddings.weight has shape (300, 64), expected (301, 64) from params.json"


def test_gqa_shape_mismatch(tmp_path):
    write_checkpoint(tmp_path, state_dict=random_state_dict(dict(SMALL, n_kv_heads=2)), n_kv_heads=4)
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: tensor layers.0.attention.wk.weight has shape (32, 64), expected (64, 64) from params.json"


def test_missing_tensor(tmp_path):
    sd = random_state_dict(SMALL)
    del sd["layers.1.feed_forward.w2.weight"], sd["norm.weight"]
    write_checkpoint(tmp_path, state_dict=sd)
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: missing tensor layers.1.feed_forward.w2.weight (expected shape (64, 192)) (and 1 more)"


def test_missing_layers(tmp_path):
    write_checkpoint(tmp_path, state_dict=random_state_dict(SMALL), n_layers=1000000)
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: missing tensor layers.2.attention.wq.weight (params.json says n_layers=1000000 but the checkpoint has 2 layers)"


def test_hidden_dim_mismatch(tmp_path):
    # Meta's sizing: int(1.5 * int(2 * 4 * 64 / 3)) = 255, rounded up to multiple_of 32 -> 256
    write_checkpoint(tmp_path, state_dict=random_state_dict(SMALL), ffn_dim_multiplier=1.5)
    assert error(tmp_path) == f"{tmp_path / 'consolidated.00.pth'}: FFN hidden_dim mismatch: params.json implies 256 but layers.0.feed_forward.w1.weight has 192 rows"


# ---- params.json ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    (json.dumps({k: v for k, v in SMALL.items() if k != "dim"}), "missing required key 'dim'"),
    (json.dumps(dict(SMALL, dim=-64)), "dim must be positive, got -64"),
    (json.dumps(dict(SMALL, n_layers=0)), "n_layers must be positive, got 0"),
    (json.dumps(dict(SMALL, n_heads=5)), "dim 64 is not divisible by n_heads 5"),
    (json.dumps(dict(SMALL, n_kv_heads=3)), "n_heads 4 is not a multiple of n_kv_heads 3"),
    (json.dumps(dict(SMALL, vocab_size=-1)), "vocab_size is missing or -1 (it must be given for Llama 3 checkpoints; "
     "a Llama 2 checkpoint takes it from the SentencePiece tokenizer.model beside it)"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_params_json(ckpt, text, problem):
    d, _ = ckpt
    (d / "params.json").write_text(text)
    assert error(d) == f"{d / 'params.json'}: {problem}"


# ---- hostile pickles -------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_cmd(marker):
    return f"touch {marker}"


def _payloads(marker):
    """name -> (data.pkl bytes, the global the error must name)."""
    m = str(marker)
    bu = m.encode()
    ev = _Evil(eval, f"open({m!r}, 'w').close()")
    return {
        "os.system-handwritten": (b"\x80\x02cos\nsystem\nX" + len(_touch_cmd(m)).to_bytes(4, "little")
                                  + _touch_cmd(m).encode() + b"\x85R.", "os.system"),
        "posix.system": (pickle.dumps({"x": _Evil(os.system, _touch_cmd(m))}, protocol=2), "posix.system"),
        "posix.system-protocol4": (pickle.dumps({"x": _Evil(os.system, _touch_cmd(m))}, protocol=4), "posix.system"),
        "builtins.eval": (pickle.dumps(ev, protocol=2, fix_imports=False), "builtins.eval"),
        "__builtin__.eval": (pickle.dumps(ev, protocol=2), "__builtin__.eval"),
        "subprocess.Popen": (pickle.dumps(_Evil(subprocess.Popen, ["touch", m]), protocol=2, fix_imports=False), "subprocess.Popen"),
        "inst-os.system": (b"(X" + len(bu).to_bytes(4, "little") + bu + b"ios\nsystem\n.", "opcode INST instantiates os.system"),
        "obj-ordereddict": (b"\x80\x02(ccollections\nOrderedDict\no.", "opcode OBJ would instantiate collections.OrderedDict"),
        "call-storage-type": (b"\x80\x02ctorch\nFloatStorage\nK\x05\x85R.", "it calls torch.FloatStorage, which is allowlisted only as a type tag"),
        "ext1": (b"\x80\x02\x82\x01.", "opcode EXT1"),
        "unknown-opcode": (b"\x80\x02\xff.", "unsupported opcode 0xff at byte 2"),
        "torch.load-global": (b"\x80\x02ctorch\nload\n.", "torch.load"),
    }


@pytest.mark.parametrize("case", list(_payloads("m")))
def test_hostile_pickle_is_refused_and_never_runs(ckpt, tmp_path, case):
    d, pth = ckpt
    marker = tmp_path / "pwned"
    payload, named = _payloads(marker)[case]
    rezip(pth, replace={PKL: payload})
    msg = error(d, UnsafePickleError)
    assert msg.startswith(f"{pth} ({PKL}): refused unsafe pickle: ") and msg.endswith("; nothing from it was executed")
    assert named in msg
    assert not marker.exists()


@pytest.mark.parametrize("case", ["os.system-handwritten", "posix.system", "builtins.eval", "subprocess.Popen"])
def test_hostile_payloads_are_live(tmp_path, case):
    """The payloads above really do run under a normal unpickler (so the tests above can fail)."""
    marker = tmp_path / "pwned"
    result = pickle.loads(_payloads(marker)[case][0])
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()


def test_hostile_object_saved_by_torch(tmp_path):
    """A real torch.save of a state dict carrying a __reduce__ payload among genuine tensors."""
    marker = tmp_path / "pwned"
    sd = random_state_dict(SMALL)
    sd["rope.freqs"] = _Evil(os.system, _touch_cmd(marker))
    write_checkpoint(tmp_path / "c", state_dict=sd)
    pth = tmp_path / "c" / "consolidated.00.pth"
    assert error(tmp_path / "c", UnsafePickleError) == (
        f"{pth} ({PKL}): refused unsafe pickle: it asks for global posix.system, which is not in the allowlist "
        f"of tensor-rebuilding names; nothing from it was executed")
    assert not marker.exists()
    torch.load(pth, weights_only=False)  # what a trusting loader would do
    assert marker.exists()


# ---- fuzzing: corrupting any header byte gives a FormatError or a (still checked) load ---------------------
def test_corrupted_headers_never_crash(ckpt):
    d, pth = ckpt
    original = open(pth, "rb").read()
    with zipfile.ZipFile(pth) as z:
        pkl = z.getinfo(PKL)
        regions = [(pkl.header_offset, pkl.header_offset + 64 + pkl.file_size), (z.start_dir, len(original))]
        regions += [(i.header_offset, i.header_offset + 64) for i in z.infolist()]
    rng = random.Random(1234)
    outcomes = collections.Counter()
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.choice([1, 1, 2, 4])):
            lo, hi = rng.choice(regions)
            data[rng.randrange(lo, hi)] = rng.randrange(256)
        with open(pth, "wb") as f:
            f.write(data)
        try:
            ck = open_checkpoint(d)
        except FormatError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        else:
            for t in ck.tensors.values():  # whatever loaded still lies inside the file
                assert t.offset + t.nbytes <= ck.file_size
            outcomes["loaded"] += 1
    assert outcomes["error"] > 100, outcomes
