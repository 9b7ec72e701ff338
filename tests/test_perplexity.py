"""`llama-cx perplexity` against llama.cpp's method computed from llama-cpp-python's own logits (logits_all) on the
same file and text: SmolLM2-135M with its weights dequantized exactly to F32 (so both engines run the same
numbers in float32), with the vocabulary's add_bos_token as shipped (False) and switched on (each chunk then
starts with BOS in both engines)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import llama_cx
from llama_cx.errors import InvalidArgumentError

from _llamacpp import dequantized_f32_gguf, llama_cpp_or_skip, no_extra_buffers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(llama_cx.__file__)))
N_CTX = 64
TEXT = (
    "The lighthouse stood at the end of a long stone pier, and for more than a century its keepers had written "
    "the weather into a book that never left the lamp room. Each morning they noted the wind, the height of the "
    "swell, the colour of the sky over the western headland, and the number of ships that had passed in the "
    "night. Most entries were short. A few ran to whole pages, when a storm had torn the slates from the roof "
    "or a fishing boat had come in with a broken mast and a crew too tired to speak.\n\n"
    "When the light was automated, the last keeper packed the books into wooden crates and sent them to the "
    "town library, where they sat unopened for twenty years. A student looking for something else entirely "
    "found them, and began to read. She noticed that the handwriting changed every few decades, but the habits "
    "did not: the same abbreviations, the same small drawings of clouds in the margins, the same careful "
    "underlining of the word fog. Over one winter she copied the numbers into a spreadsheet, and by spring she "
    "could show that the storms had grown more frequent, the calm weeks shorter, and the sea a little higher "
    "against the pier each year. The keepers had measured it all along, one line at a time, without knowing "
    "what they were building."
)


@pytest.fixture(scope="module")
def smollm2_f32(smollm2_gguf_path, tmp_path_factory):
    return dequantized_f32_gguf(smollm2_gguf_path, str(tmp_path_factory.mktemp("ppl") / "smollm2-f32.gguf"))


@pytest.fixture(scope="module")
def smollm2_f32_bos(smollm2_gguf_path, tmp_path_factory):
    return dequantized_f32_gguf(smollm2_gguf_path, str(tmp_path_factory.mktemp("ppl") / "smollm2-f32-bos.gguf"),
                                overrides=[("tokenizer.ggml.add_bos_token", True, "bool")])


def llamacpp_perplexity(path, text, n_ctx, monkeypatch):
    """tools/perplexity/perplexity.cpp `perplexity()`, step by step, on llama-cpp-python's logits."""
    llama_cpp = llama_cpp_or_skip()
    no_extra_buffers(monkeypatch)
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False, n_threads=2)
    add_bos = llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model))
    tokens = llm.tokenize(text.encode(), add_bos=True, special=False)  # common_tokenize(ctx, text, true)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    for i in range(len(tokens) // n_ctx):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float32)
        for p in range(first, n_ctx - 1):
            row = logits[p]
            m = row.max()
            v = -(float(row[tokens[i * n_ctx + p + 1]] - m) - np.log(np.exp((row - m).astype(np.float64)).sum()))
            nll += v
            nll2 += v * v
            count += 1
    mean = nll / count
    ppl = float(np.exp(mean))
    return ppl, float(np.sqrt((nll2 / count - mean * mean) / (count - 1)) * ppl), len(tokens), bool(add_bos)


@pytest.mark.parametrize("which", ["as_shipped", "add_bos"])
def test_same_as_llamacpp(which, smollm2_f32, smollm2_f32_bos, monkeypatch):
    path = smollm2_f32 if which == "as_shipped" else smollm2_f32_bos
    want, want_err, n_tokens, add_bos = llamacpp_perplexity(path, TEXT, N_CTX, monkeypatch)
    assert add_bos == (which == "add_bos")
    got = llama_cx.perplexity(path, TEXT, N_CTX)
    assert got.n_tokens == n_tokens
    assert got.n_chunks == n_tokens // N_CTX >= 4
    assert got.n_scored == got.n_chunks * (N_CTX - N_CTX // 2 - 1)
    assert abs(got.ppl / want - 1) < 0.005, (got.ppl, want)
    assert abs(got.stderr / want_err - 1) < 0.05, (got.stderr, want_err)
    assert str(got).startswith(f"PPL = {got.ppl:.4f} +/- ")


def test_batch_size_does_not_change_the_result(smollm2_f32):
    a = llama_cx.perplexity(smollm2_f32, TEXT, N_CTX, n_batch=16)
    b = llama_cx.perplexity(smollm2_f32, TEXT, N_CTX)
    assert abs(a.ppl / b.ppl - 1) < 1e-4
    with pytest.raises(InvalidArgumentError, match="n_batch must be a positive integer, got 0"):
        llama_cx.perplexity(smollm2_f32, TEXT, N_CTX, n_batch=0)


def test_too_short(smollm2_f32):
    with pytest.raises(InvalidArgumentError, match=r"tokenizes to \d+ tokens; perplexity with a context of 512 "
                                                   r"needs at least 1024"):
        llama_cx.perplexity(smollm2_f32, TEXT, 512)


def test_cli(smollm2_f32, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "llama_cx", "perplexity", smollm2_f32, str(text), "--ctx", str(N_CTX),
                        "--batch", "32"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    want = llama_cx.perplexity(smollm2_f32, TEXT, N_CTX)
    assert r.stdout.startswith(f"PPL = {want.ppl:.4f} +/- {want.stderr:.5f} ({want.n_chunks} chunks of {N_CTX} tokens")
    assert f"{want.n_chunks}/{want.n_chunks} chunks" in r.stderr  # the progress bar's last state
    r = subprocess.run([sys.executable, "-m", "llama_cx", "perplexity", smollm2_f32, str(tmp_path / "nope.txt")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1 and r.stderr.strip().endswith("nope.txt: no such file")
