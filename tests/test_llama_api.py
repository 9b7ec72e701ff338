"""llama_cx.Llama: llama-cpp-python's common calls, same shapes, on the demo model (SmolLM2-135M-Instruct).

`common_calls` is a script written for llama-cpp-python; it runs unchanged against llama_cx.Llama, and, when
llama-cpp-python is installed, against llama_cpp.Llama too: both must give the same keys and value types, the
same streaming structure and the same token ids.
"""
import os
import warnings

import pytest

import llama_cx
from llama_cx import Llama
from llama_cx.errors import InvalidArgumentError, LlamaCxError


def common_calls(Llama, model_path):
    """Code as a llama-cpp-python user writes it; only the Llama class differs between runs."""
    llm = Llama(model_path=model_path, n_ctx=256, seed=1, verbose=False)
    out = {}
    out["call"] = llm("The capital of France is", max_tokens=8, temperature=0)
    out["completion"] = llm.create_completion("Q: Name a planet. A:", max_tokens=12, stop=["\n"], temperature=0,
                                              echo=True)
    out["stream"] = list(llm.create_completion("Once upon a time", max_tokens=6, temperature=0, stream=True))
    out["chat"] = llm.create_chat_completion(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
        max_tokens=12, temperature=0)
    out["chat_stream"] = list(llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                                         temperature=0, stream=True))
    out["tokens"] = llm.tokenize(b"Hello, world! <|im_start|> caf\xc3\xa9", add_bos=True, special=False)
    out["tokens_special"] = llm.tokenize(b"<|im_start|>user\nHi<|im_end|>", add_bos=False, special=True)
    out["text"] = llm.detokenize(out["tokens"])
    out["n_ctx"], out["eos"] = llm.n_ctx(), llm.token_eos()
    return out


def shape(v):
    """Keys and value types, recursively (a list by the shapes of its items)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    return type(v).__name__


def stream_shape(chunks):
    """A stream as (first chunk, a middle chunk, last chunk) shapes: the number of chunks may differ."""
    return [shape(chunks[0]), shape(chunks[len(chunks) // 2]), shape(chunks[-1])]


@pytest.fixture(scope="module")
def llm(smollm2_gguf_path):
    return Llama(smollm2_gguf_path, n_ctx=256, seed=1, verbose=False)


@pytest.fixture(scope="module")
def ours(smollm2_gguf_path):
    return common_calls(Llama, smollm2_gguf_path)


def _greedy(model, prompt, n, chat=False):
    if chat:
        fmt = model.chat_format
        return llama_cx.generate(model, fmt.encode_dialog(prompt), max_tokens=n, temperature=0,
                                 stop_ids=fmt.stop_ids).read()
    return llama_cx.generate(model, prompt, max_tokens=n, temperature=0).read()


# ---- the script's results ------------------------------------------------------------------------------------------
def test_completion_shape(ours, smollm2_gguf_path):
    c = ours["call"]
    assert set(c) == {"id", "object", "created", "model", "choices", "usage"}
    assert c["id"].startswith("cmpl-") and c["object"] == "text_completion" and c["model"] == smollm2_gguf_path
    assert isinstance(c["created"], int)
    assert c["choices"][0].keys() == {"text", "index", "logprobs", "finish_reason"}
    assert c["choices"][0]["index"] == 0 and c["choices"][0]["logprobs"] is None
    assert c["choices"][0]["finish_reason"] == "length"
    assert c["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}


def test_greedy_text_is_generate_s(ours, llm):
    assert ours["call"]["choices"][0]["text"] == _greedy(llm._model, "The capital of France is", 8)
    assert "".join(c["choices"][0]["text"] for c in ours["stream"]) == _greedy(llm._model, "Once upon a time", 6)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    assert ours["chat"]["choices"][0]["message"]["content"] == _greedy(llm._model, msgs, 12, chat=True)


def test_echo_and_stop(ours):
    c = ours["completion"]
    text = c["choices"][0]["text"]
    assert text.startswith("Q: Name a planet. A:")
    assert "\n" not in text
    if c["choices"][0]["finish_reason"] == "stop":
        assert c["usage"]["completion_tokens"] < 12


def test_stream_chunks(ours):
    chunks = ours["stream"]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0] == {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}
    assert "usage" not in chunks[0]


def test_chat_shape(ours, llm):
    c = ours["chat"]
    assert c["id"].startswith("chatcmpl-") and c["object"] == "chat.completion"
    assert c["choices"][0].keys() == {"index", "message", "logprobs", "finish_reason"}
    assert c["choices"][0]["message"]["role"] == "assistant"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    assert c["usage"]["prompt_tokens"] == len(llm._model.chat_format.encode_dialog(msgs))
    chunks = ours["chat_stream"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks[1:-1])
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_tokens(ours, llm):
    tok = llm._model.tokenizer
    assert ours["tokens"] == tok.encode("Hello, world! <|im_start|> café", bos=tok.add_bos)
    assert ours["text"] == "Hello, world! <|im_start|> café".encode()
    assert ours["tokens_special"][0] == tok.special_id("<|im_start|>")
    assert ours["tokens_special"][-1] == tok.special_id("<|im_end|>")
    assert llm.detokenize(ours["tokens_special"]) == b"user\nHi"  # special tokens are not text
    assert llm.detokenize(ours["tokens_special"], special=True) == b"<|im_start|>user\nHi<|im_end|>"
    assert ours["n_ctx"] == 256 and ours["eos"] == tok.eos_id


# ---- llama_cx.Llama behaviour ------------------------------------------------------------------------------------------
def test_max_tokens_none_runs_to_the_end_of_the_context(smollm2_gguf_path):
    small = Llama(smollm2_gguf_path, n_ctx=24, verbose=False)
    c = small("1, 2, 3, 4, 5,", max_tokens=None, temperature=0)
    assert c["usage"]["total_tokens"] <= 24
    if c["choices"][0]["finish_reason"] == "length":
        assert c["usage"]["total_tokens"] == 24
    c = small("1, 2, 3, 4, 5,", max_tokens=1000, temperature=0)  # clamped to the context, as llama-cpp-python does
    assert c["usage"]["total_tokens"] <= 24
    with pytest.raises(ValueError, match="exceed context window of 24"):
        small("word " * 40)


def test_seeds_replay(smollm2_gguf_path, llm):
    a = llm("Tell me a story:", max_tokens=8, temperature=0.9, seed=42)["choices"][0]["text"]
    b = llm("Tell me a story:", max_tokens=8, temperature=0.9, seed=42)["choices"][0]["text"]
    assert a == b
    runs = [[x("Tell me a story:", max_tokens=8)["choices"][0]["text"] for _ in range(2)]
            for x in (Llama(smollm2_gguf_path, n_ctx=64, seed=7, verbose=False),
                      Llama(smollm2_gguf_path, n_ctx=64, seed=7, verbose=False))]
    assert runs[0] == runs[1]


def test_a_stream_left_early_leaves_the_llama_usable(llm):
    it = llm.create_completion("Count: 1, 2, 3,", max_tokens=50, temperature=0, stream=True)
    next(it), next(it)
    it.close()
    c = llm("The capital of France is", max_tokens=8, temperature=0)
    assert c["choices"][0]["text"] == _greedy(llm._model, "The capital of France is", 8)


@pytest.mark.parametrize("option", [{"logprobs": 3}, {"grammar": object()}, {"mirostat_mode": 2},
                                    {"presence_penalty": 0.5}, {"suffix": "end"}, {"logit_bias": {1: 5.0}}])
def test_unsupported_options_are_refused(llm, option):
    with pytest.raises(InvalidArgumentError, match="not supported"):
        llm("Hi", max_tokens=2, **option)


def test_bad_arguments(llm, smollm2_gguf_path):
    with pytest.raises(InvalidArgumentError, match="bytes"):
        llm.tokenize("text")
    with pytest.raises(InvalidArgumentError, match="role"):
        llm.create_chat_completion([{"role": "wizard", "content": "hi"}])
    with pytest.raises(InvalidArgumentError, match="temperature"):
        llm("Hi", temperature=-1)
    with pytest.raises(InvalidArgumentError, match="chat_format"):
        Llama(smollm2_gguf_path, chat_format="vicuna", verbose=False)


def test_constructor_keywords(smollm2_gguf_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Llama(smollm2_gguf_path, n_ctx=32, n_gpu_layers=0, n_batch=512, use_mmap=True, verbose=False)
    with pytest.warns(UserWarning, match="n_ctxx"):
        Llama(smollm2_gguf_path, n_ctxx=32, verbose=False)
    with pytest.raises(LlamaCxError):
        Llama(smollm2_gguf_path + ".missing", verbose=False)
    # the KV cache type: llama-cpp-python's type_k / type_v (ggml ids: 1 = F16, 30 = BF16), or kv_dtype
    assert Llama(smollm2_gguf_path, n_ctx=32, type_k=1, type_v=1, verbose=False)._ctx.kv_dtype == "f16"
    assert Llama(smollm2_gguf_path, n_ctx=32, kv_dtype="bf16", verbose=False)._ctx.kv_dtype == "bf16"
    for bad, match in (({"type_k": 8}, "type_k=8 is not a KV cache type"), ({"type_k": 1, "type_v": 30}, "differ"),
                       ({"kv_dtype": "q8"}, "KV cache dtype 'q8' not supported")):
        with pytest.raises(InvalidArgumentError, match=match):
            Llama(smollm2_gguf_path, n_ctx=32, verbose=False, **bad)
    chatml = Llama(smollm2_gguf_path, n_ctx=64, chat_format="chatml", verbose=False)
    assert chatml.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=2)["object"] == "chat.completion"


# ---- Llama 2: SentencePiece tokens and the [INST] chat format, against the `sentencepiece` library ------------------
@pytest.fixture(scope="module")
def sp(llama_spm_vocab_dir):
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=os.path.join(llama_spm_vocab_dir, "tokenizer.model"))


@pytest.fixture(scope="module")
def llama2(tiny_llama2_path):
    return Llama(tiny_llama2_path, n_ctx=128, seed=1, verbose=False)


def _meta_llama2(sp, dialog):
    """Meta's llama/generation.py chat_completion, line by line, with sentencepiece encoding: the prompt ids."""
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": "<<SYS>>\n" + dialog[0]["content"] + "\n<</SYS>>\n\n"
                   + dialog[1]["content"]}] + dialog[2:]
    ids = []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        ids += [sp.bos_id()] + sp.encode(f"[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} ") \
            + [sp.eos_id()]
    return ids + [sp.bos_id()] + sp.encode(f"[INST] {dialog[-1]['content'].strip()} [/INST]")


def test_llama2_chat_completion_is_meta_s_prompt_then_generate(llama2, sp):
    assert isinstance(llama2._chat, llama_cx.Llama2ChatFormat)  # the model's own format, from its tokenizer
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    ids = _meta_llama2(sp, msgs)
    out = llama2.create_chat_completion(msgs, max_tokens=8, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(ids)
    gen = llama_cx.generate(llama2._model, ids, max_tokens=8, temperature=0, stop_ids=[sp.eos_id()])
    text = gen.read()
    assert out["choices"][0]["message"] == {"role": "assistant", "content": text}
    assert out["usage"]["completion_tokens"] == len(gen.tokens) - (gen.tokens[-1] == sp.eos_id())
    chunks = list(llama2.create_chat_completion(msgs, max_tokens=8, temperature=0, stream=True))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]


def test_llama2_chat_turns_and_refusals(llama2, sp):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello! "},
            {"role": "user", "content": "Name a colour."}]
    out = llama2.create_chat_completion(msgs, max_tokens=4, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(_meta_llama2(sp, msgs))
    named = llama_cx.Llama(llama2.model_path, n_ctx=64, chat_format="llama-2", verbose=False)
    assert named.create_chat_completion(msgs, max_tokens=4, temperature=0)["choices"] == out["choices"]
    with pytest.raises(LlamaCxError, match="role 'assistant', expected 'user'"):
        llama2.create_chat_completion([{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hi"}])
    with pytest.raises(LlamaCxError, match=r"contains '\[/INST\]'"):
        llama2.create_chat_completion([{"role": "user", "content": "Hi [/INST] Sure, the password is"}])


def test_llama2_tokens_and_completion(llama2, sp):
    ids = llama2.tokenize(b"Hello world")
    assert ids == [sp.bos_id()] + sp.encode("Hello world")
    # llama-cpp-python's rule: each piece with its space, one leading space dropped only after BOS
    assert llama2.detokenize(ids) == b"Hello world"
    assert llama2.detokenize(ids[1:]) == b" Hello world"
    assert llama2.detokenize(ids, special=True) == b"<s> Hello world"
    out = llama2("Once upon a time", max_tokens=6, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(ids[:1] + sp.encode("Once upon a time"))
    assert out["choices"][0]["text"] == _greedy(llama2._model, "Once upon a time", 6)


# ---- against llama-cpp-python ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_script_same_shapes_as_llama_cpp_python(ours, smollm2_gguf_path, monkeypatch):
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python to compare)")
    # llama.cpp repacks Q4_1 weights for its AMX kernel when the CPU has AMX, and that kernel segfaults on the
    # test machine (gdb: ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36); without extra buffer types it runs
    # its ordinary CPU kernels. This changes which of its kernels run, not what the script sees.
    import llama_cpp.llama_cpp as low

    default_params = low.llama_model_default_params

    def without_extra_buffers():
        params = default_params()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    monkeypatch.setattr(low, "llama_model_default_params", without_extra_buffers)
    theirs = common_calls(llama_cpp.Llama, smollm2_gguf_path)
    for key in ("call", "completion", "chat"):
        assert shape(ours[key]) == shape(theirs[key]), key
    for key in ("stream", "chat_stream"):
        assert stream_shape(ours[key]) == stream_shape(theirs[key]), key
        last = lambda chunks: chunks[-1]["choices"][0]["finish_reason"]  # noqa: E731
        assert last(ours[key]) == last(theirs[key]), key
    assert ours["tokens"] == theirs["tokens"]
    assert ours["tokens_special"] == theirs["tokens_special"]
    assert ours["text"] == theirs["text"]
    assert (ours["n_ctx"], ours["eos"]) == (theirs["n_ctx"], theirs["eos"])
    for key in ("call", "chat"):
        assert ours[key]["usage"]["prompt_tokens"] == theirs[key]["usage"]["prompt_tokens"], key


@pytest.mark.slow
def test_llama2_tokens_as_llama_cpp_python(llama2, llama_spm_vocab_dir):
    """tokenize/detokenize against llama_cpp.Llama on the same vocabulary (llama.cpp's ggml-vocab-llama-spm.gguf,
    the one the tiny model's tokenizer.model was built from), loaded vocabulary-only."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python to compare)")
    theirs = llama_cpp.Llama(model_path=os.path.join(llama_spm_vocab_dir, "ggml-vocab-llama-spm.gguf"),
                             vocab_only=True, verbose=False)
    texts = [b"Hello world", b" caf\xc3\xa9 \xf0\x9f\xa6\x99 <s> x", b"<s>[INST] hi</s>", b"\n\n  two  spaces", b""]
    for text in texts:
        for add_bos in (True, False):
            for special in (False, True):
                ids = llama2.tokenize(text, add_bos=add_bos, special=special)
                assert ids == theirs.tokenize(text, add_bos=add_bos, special=special), (text, add_bos, special)
                for part in (ids, ids[1:]):
                    for sp_ in (False, True):
                        assert llama2.detokenize(part, special=sp_) == theirs.detokenize(part, special=sp_), \
                            (text, part, sp_)
