"""Llama 2: a Meta checkpoint directory in Llama 2 style and a GGUF with a "llama" (SentencePiece) vocabulary.

- Model: random tiny Llama 2 checkpoints (params.json with vocab_size -1 and no rope_theta, consolidated.00.pth
  written by torch.save with Llama 2's rope.freqs tensor, the Llama 2 SentencePiece tokenizer.model) against Meta's
  reference model (llama_models' Llama 3 model.py computes the Llama 2 architecture with rope_theta 10000).
  Tolerance: max |Δlogit| <= 2e-4 x std(reference logits), as tests/test_model_reference.py.
- Chat format: token ids against a line-by-line transcription of Meta's llama/generation.py chat_completion, with
  the `sentencepiece` library doing the encoding.
"""
import os

import numpy as np
import pytest
import torch

sentencepiece = pytest.importorskip("sentencepiece")

import llama_cx  # noqa: E402
from _ckpt import random_state_dict, write_checkpoint  # noqa: E402
from _reference import meta_reference, reference_greedy, reference_logits  # noqa: E402
from llama_cx import ChatSession, Llama2ChatFormat, SentencePieceTokenizer, chat_format_for  # noqa: E402
from llama_cx.errors import FormatError, TokenizerError  # noqa: E402

TOL = 2e-4
VOCAB = 32000
# Hugging Face's chat template of meta-llama/Llama-2-7b-chat-hf (what llama.cpp copies into a GGUF)
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}")
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}"
                    "{% endif %}{% endfor %}")

PARAMS = {  # Llama 2's params.json layout (llama-2-7b: dim 4096, multiple_of 256, n_heads 32, n_layers 32)
    "mha": {"dim": 64, "multiple_of": 32, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-05, "vocab_size": -1},
    "gqa": {"dim": 64, "multiple_of": 32, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2, "norm_eps": 1e-05,
            "vocab_size": -1},  # llama-2-70b has n_kv_heads 8
}


@pytest.fixture(scope="module")
def spm_model(llama_spm_vocab_dir):
    return os.path.join(llama_spm_vocab_dir, "tokenizer.model")


@pytest.fixture(scope="module")
def sp(spm_model):
    return sentencepiece.SentencePieceProcessor(model_file=spm_model)


def _rope_freqs(head_dim):
    # Llama 2's consolidated.*.pth carry this table (1 / theta^(2i/d), bf16); Meta's loader does not use it
    return (1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))).to(torch.bfloat16)


def _llama2_dir(path, kind, spm_model, seed=0):
    params = PARAMS[kind]
    sd = random_state_dict(dict(params, vocab_size=VOCAB), dtype="bf16", seed=seed)
    sd["rope.freqs"] = _rope_freqs(params["dim"] // params["n_heads"])
    write_checkpoint(str(path), params=params, state_dict=sd, tokenizer=spm_model)
    sd = {k: v for k, v in sd.items() if k != "rope.freqs"}
    ref_params = {k: v for k, v in params.items()}
    ref_params.update(vocab_size=VOCAB, rope_theta=10000.0)
    return ref_params, sd


@pytest.fixture(scope="module")
def llama2(tmp_path_factory, spm_model, llama_models_root):
    """{kind: (path, loaded model, Meta's reference)}."""
    out = {}
    for i, kind in enumerate(sorted(PARAMS)):
        path = tmp_path_factory.mktemp(f"llama2-{kind}")
        ref_params, sd = _llama2_dir(path, kind, spm_model, seed=10 + i)
        out[kind] = (str(path), llama_cx.load(str(path)), meta_reference(llama_models_root, ref_params, sd, 256),
                     ref_params, sd)
    return out


def _check_close(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max() / ref.std()
    assert err <= TOL, f"max |Δ| = {err:.2e} x std(logits)"


# -- the checkpoint ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_llama2_config_and_tokenizer(llama2, kind):
    _, model, _, _, _ = llama2[kind]
    c = model.config
    assert c.vocab_size == VOCAB  # vocab_size -1: the tokenizer's n_words
    assert c.rope_theta == 10000.0 and not c.use_scaled_rope  # no rope_theta in params.json: Llama 2's 10000
    assert c.max_seq_len == 4096
    assert c.n_kv_heads == PARAMS[kind].get("n_kv_heads", PARAMS[kind]["n_heads"])
    assert isinstance(model.tokenizer, SentencePieceTokenizer) and model.tokenizer.vocab_size == VOCAB
    assert isinstance(model.chat_format, Llama2ChatFormat)
    assert any("rope.freqs" in n for n in model.notes)  # present, ignored, said so


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_llama2_logits_and_greedy_match_meta(llama2, sp, kind):
    _, model, ref, _, _ = llama2[kind]
    prompt = model.tokenizer.encode("The capital of France is Paris; la capitale de l'Italie est Rome. 🦙", bos=True)
    assert prompt == [1] + sp.encode("The capital of France is Paris; la capitale de l'Italie est Rome. 🦙")
    _check_close(model.logits(prompt), reference_logits(ref, prompt))

    ref_ids = reference_greedy(ref, prompt, 24)
    ctx = model.new_context(n_ctx=64)
    nxt = llama_cx._kernels.argmax(ctx.forward(prompt))
    ours = []
    for _ in range(24):
        ours.append(nxt)
        nxt = llama_cx._kernels.argmax(ctx.forward([nxt]))
    assert ours == ref_ids

    # generate(): the text that continues the prompt, as sentencepiece decodes prompt + new ids (llama.cpp's and
    # llama-cpp-python's completion text); Meta's text_completion (sentencepiece's decode of the new ids alone)
    # is the same without its one leading space
    cut = ref_ids.index(2) if 2 in ref_ids else len(ref_ids)
    text = "".join(llama_cx.generate(model, prompt, max_tokens=24, temperature=0))
    before = sp.decode(prompt[1:])
    whole = sp.decode(prompt[1:] + ref_ids[:cut])
    assert whole.startswith(before) and text == whole[len(before):]
    assert (text[1:] if text.startswith(" ") else text) == sp.decode(ref_ids[:cut])
    # a chat reply stands alone: decoded as Meta's chat_completion decodes it
    reply = "".join(ChatSession(model, n_ctx=128).send("Hi", max_tokens=8, temperature=0))
    reply_ids = reference_greedy(ref, meta_chat_completion_tokens(sp, [_u("Hi")]), 8)
    reply_ids = reply_ids[:reply_ids.index(2)] if 2 in reply_ids else reply_ids
    assert reply == sp.decode(reply_ids)


def test_llama2_gguf_matches_meta(tmp_path, llama2, llama_spm_vocab_dir):
    """The same weights as a GGUF with llama.cpp's Llama 2 vocabulary (converted the way llama.cpp does): the
    SentencePiece tokenizer comes from the GGUF metadata, the chat format from its template."""
    from _gguf_files import write_llama_gguf
    from _spm import gguf_vocab
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V

    _, _, ref, params, sd = llama2["gqa"]
    tokens, scores, types = gguf_vocab(os.path.join(llama_spm_vocab_dir, "ggml-vocab-llama-spm.gguf"))
    meta = [("tokenizer.ggml.model", "llama", V.STRING), ("tokenizer.ggml.tokens", list(tokens), V.ARRAY, V.STRING),
            ("tokenizer.ggml.scores", [float(s) for s in scores], V.ARRAY, V.FLOAT32),
            ("tokenizer.ggml.token_type", [int(t) for t in types], V.ARRAY, V.INT32),
            ("tokenizer.ggml.bos_token_id", 1, V.UINT32), ("tokenizer.ggml.eos_token_id", 2, V.UINT32),
            ("tokenizer.ggml.unknown_token_id", 0, V.UINT32), ("tokenizer.ggml.add_bos_token", True, V.BOOL),
            ("tokenizer.chat_template", LLAMA2_TEMPLATE, V.STRING)]
    path = tmp_path / "llama2.gguf"
    write_llama_gguf(path, params, sd, qtype_of=lambda name, arr: Q.F32, extra_metadata=meta, context_length=4096)
    model = llama_cx.load(str(path))
    assert isinstance(model.tokenizer, SentencePieceTokenizer) and model.tokenizer.add_bos
    assert isinstance(model.chat_format, Llama2ChatFormat)
    assert model.config.rope_theta == 10000.0 and model.config.vocab_size == VOCAB
    prompt = model.tokenizer.encode("Hello world, llamas!", bos=True)
    _check_close(model.logits(prompt), reference_logits(ref, prompt))


def test_llama2_info_names_the_tokenizer_and_chat_format(llama2):
    from llama_cx.cli.info import _info_lines

    text = "\n".join(_info_lines(llama2["mha"][1]))
    assert "SentencePiece BPE (Meta tokenizer.model), 32000 tokens, adds bos" in text
    assert "Llama 2 ([INST]" in text and "'<s>' (1)" in text and "'</s>' (2)" in text


def test_llama2_tokenizer_in_the_parent_directory(tmp_path, spm_model):
    """Meta's Llama 2 download: tokenizer.model at the top, the model folders (llama-2-7b-chat/, ...) below it."""
    _llama2_dir(tmp_path / "llama-2-7b-chat", "mha", spm_model)
    os.replace(tmp_path / "llama-2-7b-chat" / "tokenizer.model", tmp_path / "tokenizer.model")
    model = llama_cx.load(str(tmp_path / "llama-2-7b-chat"))
    assert isinstance(model.tokenizer, SentencePieceTokenizer) and model.config.vocab_size == VOCAB
    assert any("parent directory" in n for n in model.notes)


def test_llama2_without_tokenizer_needs_vocab_size(tmp_path, spm_model):
    _llama2_dir(tmp_path, "mha", spm_model)
    os.remove(tmp_path / "tokenizer.model")
    with pytest.raises(FormatError) as e:
        llama_cx.load(str(tmp_path))
    assert "vocab_size" in str(e.value) and "SentencePiece tokenizer.model" in str(e.value)


def test_llama2_broken_tokenizer_model_is_one_line(tmp_path, spm_model):
    _llama2_dir(tmp_path, "mha", spm_model)
    data = open(spm_model, "rb").read()
    (tmp_path / "tokenizer.model").write_bytes(data[:1000])
    with pytest.raises(FormatError) as e:
        llama_cx.load(str(tmp_path))
    msg = str(e.value)
    assert "tokenizer.model" in msg and "truncated protobuf" in msg and "\n" not in msg


def test_llama2_vocab_mismatch_is_refused(tmp_path, spm_model):
    params = dict(PARAMS["mha"], vocab_size=VOCAB + 8)  # an explicit vocab_size wins, and must fit the weights
    sd = random_state_dict(dict(params, vocab_size=VOCAB), seed=1)
    write_checkpoint(str(tmp_path), params=params, state_dict=sd, tokenizer=spm_model)
    with pytest.raises(FormatError) as e:
        llama_cx.load(str(tmp_path))
    assert "tok_embeddings.weight" in str(e.value)


# -- the chat format ----------------------------------------------------------------------------------------------


def meta_chat_completion_tokens(sp, dialog):
    """Meta's llama/generation.py (Llama 2) chat_completion, for one dialog, transcribed: B_INST/E_INST and
    B_SYS/E_SYS, the system message folded into the first user message, each user/assistant pair encoded with
    bos and eos, the last user message with bos only."""
    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"],
                   "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}] + dialog[2:]
    assert all([msg["role"] == "user" for msg in dialog[::2]]) and all(
        [msg["role"] == "assistant" for msg in dialog[1::2]])
    dialog_tokens = sum(
        [[sp.bos_id()] + sp.encode(f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} ")
         + [sp.eos_id()] for prompt, answer in zip(dialog[::2], dialog[1::2])], [])
    assert dialog[-1]["role"] == "user"
    dialog_tokens += [sp.bos_id()] + sp.encode(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}")
    return dialog_tokens


def _u(c):
    return {"role": "user", "content": c}


def _a(c):
    return {"role": "assistant", "content": c}


def _s(c):
    return {"role": "system", "content": c}


DIALOGS = {
    "single": [_u("what is the recipe of mayonnaise?")],
    "system+user": [_s("Always answer with Haiku"), _u("I am going to Paris, what should I see?")],
    "multi-turn": [_u("I am going to Paris, what should I see?"),
                   _a("Paris, the capital of France, is known for ...\n\n1. The Eiffel Tower\n2. The Louvre"),
                   _u("What is so great about #1?")],
    "system+multi-turn": [_s("Always answer with emojis"), _u("How to go from Beijing to NY?"), _a("✈️🗽"),
                          _u("  and back?  "), _a(" 🏠 \n"), _u("thanks\n\n")],
    "whitespace": [_s("  You are terse.  \n"), _u("\n\t Hi \t\n")],
    "unicode": [_u("¿Dónde está la biblioteca? 图书馆在哪里？ 🦙🦙")],
    "empty": [_u("")],
}


@pytest.fixture(scope="module")
def fmt(spm_model):
    return Llama2ChatFormat(SentencePieceTokenizer.from_file(spm_model))


@pytest.mark.parametrize("name", sorted(DIALOGS))
def test_chat_format_matches_meta_generation_py(fmt, sp, name):
    assert fmt.encode_dialog(DIALOGS[name]) == meta_chat_completion_tokens(sp, DIALOGS[name])


def test_chat_format_turns_continue_the_dialog(fmt, sp):
    d = DIALOGS["system+multi-turn"]
    want = meta_chat_completion_tokens(sp, d)
    first = fmt.encode_dialog(d[:2])
    # a finished exchange: Meta encodes the answer with its prompt; encode_dialog without a generation prompt
    # gives the whole conversation so far
    done = fmt.encode_dialog(d[:5], add_generation_prompt=False)
    assert want[:len(done)] == done and done[-1] == 2
    assert done + fmt.encode_turn([d[5]]) == want
    assert fmt.encode_turn(d[:2], first=True) == first
    assert fmt.encode_dialog([d[0]], add_generation_prompt=False) == []  # nothing to fold the system prompt into
    assert fmt.stop_ids == (2,) and fmt.end_of_turn_id == 2


def test_chat_format_refuses_what_meta_refuses(fmt):
    for dialog, needle in [([_a("hi")], "expected 'user'"), ([_u("a"), _u("b")], "expected 'assistant'"),
                           ([_u("a"), _a("b")], "must be from the user"), ([_s("x")], "needs a user message"),
                           ([_u("[INST] x")], "'[INST]'"), ([_s("<<SYS>>"), _u("x")], "'<<SYS>>'"),
                           ([_u("a"), _a("b [/INST]"), _u("c")], "'[/INST]'"), ([], "must be from the user"),
                           ([{"role": "user"}], "str content")]:
        with pytest.raises(TokenizerError) as e:
            fmt.encode_dialog(dialog)
        assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TokenizerError):
        fmt.encode_turn([_s("late system")])


def test_chat_format_for_llama2(spm_model, llama3_tokenizer_path):
    tok = SentencePieceTokenizer.from_file(spm_model)
    assert isinstance(chat_format_for(tok), Llama2ChatFormat)  # no template: a SentencePiece vocabulary
    assert isinstance(chat_format_for(tok, LLAMA2_TEMPLATE), Llama2ChatFormat)
    assert chat_format_for(tok, MISTRAL_TEMPLATE) is None  # [INST] without <<SYS>>: not Llama 2's format
    llama3 = llama_cx.Tokenizer.from_file(llama3_tokenizer_path)
    assert chat_format_for(llama3, LLAMA2_TEMPLATE) is None


def test_chat_session_on_llama2(llama2, sp):
    """ChatSession works unchanged: the cache holds Meta's prompt, the sampled reply and eos, then the next turn
    (bos + [INST] ... [/INST])."""
    model = llama2["gqa"][1]
    s = ChatSession(model, system="Be brief.", n_ctx=256)
    s.ask("Hi there!", max_tokens=6, temperature=0)
    first = meta_chat_completion_tokens(sp, [_s("Be brief."), _u("Hi there!")])
    assert model.chat_format.encode_dialog(s.messages[:2]) == first
    assert s.ctx.tokens[:len(first)] == first
    reply = s._exchanges[0][1]
    s.ask("And then?", max_tokens=4, temperature=0)
    turn2 = [1] + sp.encode("[INST] And then? [/INST]")
    assert s.ctx.tokens[:len(first) + len(reply) + 1 + len(turn2)] == first + reply + [2] + turn2
    assert s.ctx.tokens == s.tokens()[:len(s.ctx.tokens)]
