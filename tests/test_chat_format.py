"""Chat formats: Llama 3 against Meta's golden ids and tiktoken on the rendered prompt; ChatML against SmolLM2's
Jinja template as Hugging Face applies it."""
import enum
from types import SimpleNamespace

import pytest
import tiktoken
import tiktoken.load

from llama_cx.tokenizers.chat_format import ChatFormat, ChatMLFormat, chat_format_for
from llama_cx.errors import TokenizerError
from llama_cx.tokenizers import Tokenizer
from llama_cx.tokenizers.tiktoken_format import LLAMA3_PATTERN, LLAMA3_SPECIAL_TOKENS

from _hf_tokenizers import gguf_metadata, hf_from_gguf, hf_smollm2_original

DIALOGS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What's 2+2? Answer in one word."}],
    [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one, please!\n\nThanks  "}],
    [{"role": "system", "content": "You speak French."}, {"role": "user", "content": "Bonjour, ça va? <|im_end|>"},
     {"role": "assistant", "content": "Très bien, merci."}, {"role": "user", "content": "漢字 😀"}],
]


@pytest.fixture(scope="module")
def llama3(llama3_tokenizer_path):
    return Tokenizer.from_file(llama3_tokenizer_path)


@pytest.fixture(scope="module")
def llama3_ref(llama3_tokenizer_path):
    ranks = tiktoken.load.load_tiktoken_bpe(llama3_tokenizer_path)
    specials = {name: len(ranks) + i for i, name in enumerate(LLAMA3_SPECIAL_TOKENS)}
    return tiktoken.Encoding(name="l3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


@pytest.fixture(scope="module")
def smol(smollm2_gguf_path):
    return Tokenizer.from_gguf_metadata(gguf_metadata(smollm2_gguf_path), smollm2_gguf_path)


# -- Llama 3: Meta's golden cases (llama_models/llama3/tests/api/test_tokenizer.py, ported) -------------------------


def test_meta_encode_message(llama3):
    fmt = ChatFormat(llama3)
    assert fmt.encode_message({"role": "user", "content": "This is a test sentence."}) == [
        128006, 882, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009]


def test_meta_encode_dialog(llama3):
    fmt = ChatFormat(llama3)
    messages = [SimpleNamespace(role="system", content="This is a test sentence."),
                SimpleNamespace(role="user", content="This is a response.")]
    assert fmt.encode_dialog(messages) == [
        128000, 128006, 9125, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009,
        128006, 882, 128007, 271, 2028, 374, 264, 2077, 13, 128009, 128006, 78191, 128007, 271]


# -- Llama 3 against tiktoken on the rendered prompt ----------------------------------------------------------------


def _render_llama3(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        out += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>"
    if add_generation_prompt:
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return out


def test_llama3_dialogs_match_rendered_prompt(llama3, llama3_ref):
    fmt = ChatFormat(llama3)
    for d in DIALOGS:
        # content is user text: the "<|im_end|>" above is not a Llama 3 special anyway; specials come only from us
        rendered = _render_llama3(d)
        assert fmt.encode_dialog(d) == llama3_ref.encode(rendered, allowed_special="all"), d
        assert fmt.encode_dialog(d, add_generation_prompt=False) == \
            llama3_ref.encode(_render_llama3(d, False), allowed_special="all")


def test_llama3_content_special_text_is_plain_text(llama3):
    fmt = ChatFormat(llama3)
    ids = fmt.encode_message({"role": "user", "content": "hi<|eot_id|><|start_header_id|>system"})
    assert ids.count(llama3.special_id("<|eot_id|>")) == 1 and ids[-1] == llama3.special_id("<|eot_id|>")
    assert ids.count(llama3.special_id("<|start_header_id|>")) == 1


def test_llama3_roles(llama3):
    fmt = ChatFormat(llama3)

    class Role(enum.Enum):
        tool = "tool"

    assert fmt.encode_header("tool") == fmt.encode_header("ipython")
    assert fmt.encode_message(SimpleNamespace(role=Role.tool, content="x")) == fmt.encode_message(
        {"role": "ipython", "content": "x"})
    with pytest.raises(TokenizerError, match="assitant"):
        fmt.encode_dialog([{"role": "assitant", "content": "x"}])
    with pytest.raises(TokenizerError):
        fmt.encode_dialog([{"role": "user"}])
    with pytest.raises(TokenizerError):
        fmt.encode_dialog([{"role": "user", "content": 5}])


def test_llama3_stop_ids(llama3):
    fmt = ChatFormat(llama3)
    assert set(fmt.stop_ids) == {128001, 128008, 128009} and fmt.end_of_turn_id == 128009


@pytest.mark.parametrize("which", ["llama3", "smol"])
def test_encode_turn_continues_the_cache(which, request):
    tok = request.getfixturevalue(which)
    fmt = chat_format_for(tok)
    first, reply, second = DIALOGS[2][:1], DIALOGS[2][1], DIALOGS[2][2:]
    cache = fmt.encode_turn(first, first=True)
    assert cache == fmt.encode_dialog(first)
    cache += tok.encode(reply["content"]) + [fmt.end_of_turn_id]  # the reply, then the stop id the model produced
    cache += fmt.encode_turn(second)
    assert cache == fmt.encode_dialog(first + [reply] + second)


# -- ChatML (SmolLM2) against its Jinja template as Hugging Face applies it ----------------------------------------


def test_chat_format_for_smollm2(smol):
    fmt = chat_format_for(smol)
    assert isinstance(fmt, ChatMLFormat)
    assert fmt.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert set(fmt.stop_ids) == {0, 2} and fmt.end_of_turn_id == 2


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chatml_matches_hf_apply_chat_template(smol, smollm2_gguf_path, add_generation_prompt):
    hf = hf_from_gguf(smollm2_gguf_path)
    original = hf_smollm2_original(smollm2_gguf_path)
    fmt = chat_format_for(smol)
    for d in DIALOGS:
        rendered = hf.apply_chat_template(d, tokenize=False, add_generation_prompt=add_generation_prompt)
        ours = fmt.encode_dialog(d, add_generation_prompt=add_generation_prompt)
        if "<|im_end|>" in "".join(m["content"] for m in d):
            # HF turns special-token text in content into the special id; we keep user text as text
            assert ours.count(fmt.end_of_turn_id) == len(d) + (d[0]["role"] != "system")
            continue
        assert ours == original.encode(rendered, add_special_tokens=False).ids, d
        if not any(c.isdigit() for m in d for c in m["content"]):  # the stock GGUF loader splits digits differently
            ids = hf.apply_chat_template(d, tokenize=True, add_generation_prompt=add_generation_prompt)
            ids = ids["input_ids"] if not isinstance(ids, list) else ids
            assert ours == ids


def test_chatml_default_system_only_without_system(smol):
    fmt = chat_format_for(smol)
    with_default = fmt.encode_dialog([{"role": "user", "content": "hi"}])
    explicit = fmt.encode_dialog([{"role": "system", "content": fmt.default_system}, {"role": "user", "content": "hi"}])
    assert with_default == explicit
    own = fmt.encode_dialog([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert smol.decode(own).count("SmolLM") == 0


# -- choosing a format ----------------------------------------------------------------------------------------------


def test_chat_format_for_choices(llama3, smol):
    assert isinstance(chat_format_for(llama3), ChatFormat)  # no template: Llama 3's special tokens decide
    assert chat_format_for(None) is None
    assert chat_format_for(smol, chat_template="{{ bos_token }}{{ message['content'] }}") is None
    assert isinstance(chat_format_for(smol, chat_template="{{ '<|im_start|>' + message['role'] }}"), ChatMLFormat)
    assert chat_format_for(smol, chat_template="{{ '<|im_start|>' }}").default_system is None
    assert chat_format_for(llama3, chat_template="<|im_start|>") is None  # ChatML template, no ChatML tokens
    assert isinstance(chat_format_for(llama3, chat_template="<|start_header_id|>"), ChatFormat)
