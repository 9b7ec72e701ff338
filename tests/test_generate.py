"""The generation loop on real (small, random) checkpoints: greedy ids against full-sequence logits, stop
conditions, seeded reproducibility, cache reuse, Ctrl-C consistency, argument checks; then text
streaming and chat sessions with the real Llama 3 tokenizer."""

import numpy as np
import pytest

import llama_cx
from llama_cx.errors import ContextLengthError, InvalidArgumentError, LlamaCxError, TokenizerMissingError
from llama_cx.generate import ChatSession, GenerationStats, generate, generate_tokens
from llama_cx.tokenizers import Tokenizer

from _ckpt import write_checkpoint

PROMPT = [5, 17, 42, 99, 3]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "small"
    write_checkpoint(str(path), seed=7, max_seq_len=64)
    return llama_cx.load(str(path))


def greedy_reference(model, prompt, n):
    """Greedy continuation computed from scratch each step (no KV cache reuse): argmax of the last row."""
    ids = list(prompt)
    for _ in range(n):
        logits = np.asarray(model.logits(ids))[-1]
        ids.append(int(np.argmax(logits)))
    return ids[len(prompt):]


def test_greedy_tokens_match_full_sequence_argmax(model):
    gen = generate_tokens(model, PROMPT, max_tokens=12, temperature=0)
    assert list(gen) == greedy_reference(model, PROMPT, 12)
    assert gen.stats.stop_reason == "max_tokens"
    assert gen.stats.generated_tokens == 12 and gen.stats.prompt_tokens == len(PROMPT)


def test_same_seed_same_tokens_other_seed_differs(model):
    run = lambda seed: list(generate_tokens(model, PROMPT, max_tokens=20, temperature=1.0, top_p=1.0, seed=seed))
    a = run(123)
    assert a == run(123)
    assert a != run(124)


def test_stop_token_ends_generation_and_is_not_yielded(model):
    ref = greedy_reference(model, PROMPT, 8)
    stop = ref[4]
    first = ref.index(stop)
    gen = generate_tokens(model, PROMPT, max_tokens=8, temperature=0, stop_ids=[stop])
    assert list(gen) == ref[:first]
    assert gen.tokens == ref[: first + 1]
    assert gen.stats.stop_reason == "stop_token"


def test_max_tokens_zero_does_no_work(model):
    gen = generate_tokens(model, PROMPT, max_tokens=0)
    assert list(gen) == [] and gen.stats.stop_reason == "max_tokens"
    assert gen.ctx.pos == 0


def test_context_full_stops_cleanly(model):
    ctx = model.new_context(8)
    gen = generate_tokens(model, PROMPT, max_tokens=None, temperature=0, ctx=ctx)
    out = list(gen)
    # prefill 5, then 3 decode steps fill the 8 positions; the 4th sampled token needs no forward pass
    assert len(out) == 8 - len(PROMPT) + 1
    assert gen.stats.stop_reason == "context_full"
    assert ctx.pos == 8 and ctx.tokens == PROMPT + out[:-1]
    assert out == greedy_reference(model, PROMPT, len(out))


def test_prompt_filling_the_context_still_gives_one_token(model):
    ctx = model.new_context(len(PROMPT))
    out = list(generate_tokens(model, PROMPT, max_tokens=10, temperature=0, ctx=ctx))
    assert len(out) == 1


def test_cached_prefix_is_reused(model):
    ctx = model.new_context(32)
    first = generate_tokens(model, PROMPT, max_tokens=4, temperature=0, ctx=ctx)
    out = list(first)
    cached = list(ctx.tokens)
    assert cached == PROMPT + out[:-1]
    follow = cached + [7, 8]
    gen = generate_tokens(model, follow, max_tokens=3, temperature=0, ctx=ctx)
    assert list(gen) == greedy_reference(model, follow, 3)
    assert gen.stats.prefilled_tokens == 2 and gen.stats.prompt_tokens == len(follow)
    # a prompt diverging earlier rewinds to the common prefix
    other = PROMPT[:2] + [11, 12]
    gen = generate_tokens(model, other, max_tokens=3, temperature=0, ctx=ctx)
    assert list(gen) == greedy_reference(model, other, 3)
    assert gen.stats.prefilled_tokens == 2
    # the same prompt again recomputes its last two tokens (the last one's logits are needed, and a one-token
    # call would take the decode path, which rounds differently from the prompt's)
    gen = generate_tokens(model, other, max_tokens=3, temperature=0, ctx=ctx)
    assert list(gen) == greedy_reference(model, other, 3) and gen.stats.prefilled_tokens == 2


class InterruptingContext:
    """The real context, but the n-th forward() call raises KeyboardInterrupt (after or before running)."""

    def __init__(self, ctx, n, after):
        self._ctx, self._n, self._after = ctx, n, after

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def forward(self, ids, **kw):
        self._n -= 1
        if self._n == 0 and not self._after:
            raise KeyboardInterrupt
        out = self._ctx.forward(ids, **kw)
        if self._n == 0:
            raise KeyboardInterrupt
        return out


@pytest.mark.parametrize("after", [False, True])
def test_ctrl_c_during_decode_stops_and_leaves_the_context_consistent(model, after):
    ctx = model.new_context(32)
    gen = generate_tokens(model, PROMPT, max_tokens=10, temperature=0, ctx=InterruptingContext(ctx, 3, after))
    out = list(gen)
    assert gen.stats.stop_reason == "interrupted"
    ref = greedy_reference(model, PROMPT, 10)
    assert out == ref[: len(out)]
    # the token being decoded is either fully in the cache or not at all
    assert ctx.tokens == PROMPT + out[: len(ctx.tokens) - len(PROMPT)]
    assert len(ctx.tokens) == len(PROMPT) + (2 if after else 1)
    # and the context goes on exactly as a fresh one would
    held = list(ctx.tokens)
    gen = generate_tokens(model, held, max_tokens=4, temperature=0, ctx=ctx)
    assert list(gen) == greedy_reference(model, held, 4)
    assert gen.stats.prefilled_tokens == 2  # the cached prompt's last two tokens (never a one-token prefill)


def test_close_stops_early(model):
    gen = generate_tokens(model, PROMPT, max_tokens=10, temperature=0)
    assert next(gen) == greedy_reference(model, PROMPT, 1)[0]
    gen.close()
    assert gen.stats.stop_reason == "interrupted"
    assert list(gen) == []


def test_stats_are_consistent(model):
    gen = generate_tokens(model, PROMPT, max_tokens=6, temperature=0)
    list(gen)
    st = gen.stats
    assert st.generated_tokens == 6 and st.prefilled_tokens == len(PROMPT)
    assert st.time_to_first_token > 0 and st.prefill_seconds > 0 and st.decode_seconds > 0
    assert st.prefill_tok_s == pytest.approx(len(PROMPT) / st.prefill_seconds)
    assert st.decode_tok_s == pytest.approx(5 / st.decode_seconds)
    assert st.effective_gb_s == pytest.approx(model.weight_bytes_per_token * st.decode_tok_s / 1e9)
    line = st.summary()
    assert "\n" not in line and "stop: max_tokens" in line and "GB/s" in line
    assert GenerationStats().summary().endswith("stop: running")
    assert GenerationStats(seed=7, stop_reason="max_tokens").summary().endswith("stop: max_tokens | seed 7")


@pytest.mark.parametrize(
    "kw, err, msg",
    [
        (dict(max_tokens=-1), InvalidArgumentError, "max_tokens must be >= 0"),
        (dict(max_tokens=2.5), InvalidArgumentError, "max_tokens must be an integer"),
        (dict(n_ctx=0), ContextLengthError, "context length must be a positive integer"),
        (dict(n_ctx=65), ContextLengthError, "exceeds the model's maximum 64"),
        (dict(n_ctx=4), ContextLengthError, "prompt has 5 tokens but the context holds 4"),
        (dict(temperature=float("nan")), InvalidArgumentError, "temperature must be finite"),
        (dict(temperature=-1), InvalidArgumentError, "temperature must be >= 0"),
        (dict(top_p=0), InvalidArgumentError, "top_p"),
        (dict(top_k=-1), InvalidArgumentError, "top_k"),
        (dict(min_p=2), InvalidArgumentError, "min_p"),
        (dict(repeat_penalty=0), InvalidArgumentError, "repeat_penalty"),
        (dict(prompt=[]), InvalidArgumentError, "prompt is empty"),
        (dict(prompt=[1, 300]), InvalidArgumentError, r"token ids must be integers in \[0, 300\)"),
        (dict(prompt=[1, -1]), InvalidArgumentError, "token ids"),
        (dict(prompt=b"abc"), InvalidArgumentError, "got bytes"),
        (dict(prompt="text needs a tokenizer"), TokenizerMissingError, "no tokenizer"),
        (dict(prompt=list(range(65))), ContextLengthError, "prompt has 65 tokens but the context holds 64"),
    ],
)
def test_bad_arguments_fail_before_any_work(model, kw, err, msg):
    prompt = kw.pop("prompt", PROMPT)
    made = []
    real = model.new_context
    model.new_context = lambda *a, **k: made.append(1) or real(*a, **k)
    try:
        with pytest.raises(err, match=msg) as e:
            generate_tokens(model, prompt, **kw)  # raises at the call, not at the first next()
    finally:
        del model.new_context
    assert made == []
    assert isinstance(e.value, LlamaCxError) and "\n" not in str(e.value)


def test_text_output_needs_a_tokenizer(model):
    with pytest.raises(TokenizerMissingError):
        generate(model, PROMPT)


# ---- text: the real Llama 3 tokenizer ------------------------------------------------------------------------
from _ckpt import SMALL  # noqa: E402
from _scripted import LLAMA3_VOCAB, cycle, scripted_state_dict  # noqa: E402

EOT = 128009


@pytest.fixture(scope="module")
def l3(tmp_path_factory, llama3_tokenizer_path):
    """Random weights, the Llama 3 vocabulary and tokenizer (so: the Llama 3 chat format)."""
    path = tmp_path_factory.mktemp("l3") / "m"
    write_checkpoint(str(path), seed=3, vocab_size=LLAMA3_VOCAB, max_seq_len=512, tokenizer=llama3_tokenizer_path)
    return llama_cx.load(str(path))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, llama3_tokenizer_path):
    """scripted(text, end=None): a model that writes `text` (then `end`, or `text` again) after any prompt."""
    made = {}
    tok = Tokenizer.from_file(llama3_tokenizer_path)

    def make(text, end=None):
        if (text, end) not in made:
            ids = tok.encode(text)
            params = dict(SMALL, vocab_size=LLAMA3_VOCAB, n_layers=1)
            sd = scripted_state_dict(params, cycle(ids, end), default=ids[0])
            path = tmp_path_factory.mktemp("scripted") / "m"
            write_checkpoint(str(path), params=params, state_dict=sd, tokenizer=llama3_tokenizer_path)
            made[text, end] = llama_cx.load(str(path))
        return made[text, end]

    return make


def test_scripted_model_writes_its_script(scripted):
    text = "Hello world, this is the END of it."
    gen = generate(scripted(text), "Any prompt", max_tokens=len(scripted(text).tokenizer.encode(text)), seed=0)
    assert gen.read() == text and gen.stats.stop_reason == "max_tokens"


def test_text_stream_never_splits_a_character(scripted):
    text = "Hi 🦙 and café!"
    model = scripted(text)
    ids = model.tokenizer.encode(text)
    # the llama's 4 UTF-8 bytes are cut over 3 tokens: b" \xf0\x9f", b"\xa6", b"\x99"
    assert [model.tokenizer.token_bytes(i) for i in ids[1:4]] == [b" \xf0\x9f", b"\xa6", b"\x99"]
    chunks = list(generate(model, "x", max_tokens=len(ids), temperature=0.7, seed=1))
    assert chunks == ["Hi", " ", "🦙", " and", " café", "!"]


def test_incomplete_character_at_the_end_is_flushed_as_replacement(scripted):
    model = scripted("Hi 🦙 and café!")
    assert generate(model, "x", max_tokens=3, temperature=0).read() == "Hi \ufffd"


STOP_TEXT = "Hello world, this is the END of it."


@pytest.mark.parametrize(
    "stop, expect",
    [
        (["END"], "Hello world, this is the "),                       # inside one token (" END")
        (["is the"], "Hello world, this "),                           # across tokens
        (["xyz", " this", "is"], "Hello world,"),                     # the earliest of several
        (["Hello"], ""),                                              # at the very start
        (["of it.!"], STOP_TEXT),                                     # never complete: all text comes out
    ],
)
def test_stop_strings(scripted, stop, expect):
    model = scripted(STOP_TEXT)
    n = len(model.tokenizer.encode(STOP_TEXT))
    gen = generate(model, "x", max_tokens=n, stop=stop, temperature=0)
    chunks = list(gen)
    assert "".join(chunks) == expect == gen.text
    assert gen.stats.stop_reason == ("max_tokens" if expect == STOP_TEXT else "stop_string")


def test_text_that_may_start_a_stop_string_is_held_back_until_it_cannot(scripted):
    model = scripted(STOP_TEXT)
    n = len(model.tokenizer.encode(STOP_TEXT))
    chunks = list(generate(model, "x", max_tokens=n, stop=["world!"], temperature=0))
    assert "".join(chunks) == STOP_TEXT
    # " world" ends with "world", a prefix of the stop string: held back until "," shows it is not one
    assert chunks[:3] == ["Hello", " ", "world,"]


def test_stop_token_ends_text_generation(scripted):
    model = scripted("one two three", end=EOT)
    gen = generate(model, "count:", max_tokens=50, temperature=0)
    assert gen.read() == "one two three"
    assert gen.stats.stop_reason == "stop_token" and gen.tokens[-1] == EOT


def test_text_prompt_gets_bos_when_the_tokenizer_says_so(l3):
    assert l3.tokenizer.add_bos
    gen = generate(l3, "Hello", max_tokens=1)
    assert gen.prompt_ids == [128000] + l3.tokenizer.encode("Hello")
    assert generate(l3, "Hello", max_tokens=1, add_bos=False).prompt_ids == l3.tokenizer.encode("Hello")
    assert generate(l3, [1, 2], max_tokens=1).prompt_ids == [1, 2]  # ids are taken as given


def test_text_generation_is_the_decoded_tokens_and_reproducible(l3):
    a = generate(l3, "Once upon a time", max_tokens=24, temperature=1.0, top_p=0.95, seed=99)
    text = a.read()
    assert text == l3.tokenizer.decode(a.tokens)
    assert generate(l3, "Once upon a time", max_tokens=24, temperature=1.0, top_p=0.95, seed=99).read() == text
    assert generate(l3, "Once upon a time", max_tokens=24, temperature=1.0, top_p=0.95, seed=98).read() != text


def test_bad_stop_strings(l3):
    with pytest.raises(InvalidArgumentError, match="non-empty strings"):
        generate(l3, "x", stop=[""])
    with pytest.raises(InvalidArgumentError, match="non-empty strings"):
        generate(l3, "x", stop=["a", 3])


# ---- chat sessions ---------------------------------------------------------------------------------------------
def reply_ids(gen, stop_ids):
    ids = list(gen.tokens)
    return ids[:-1] if ids and ids[-1] in stop_ids else ids


def test_chat_turn_prefills_only_its_new_tokens_and_matches_a_fresh_run(l3):
    fmt = l3.chat_format
    system = {"role": "system", "content": "Be brief."}
    s = ChatSession(l3, system="Be brief.", n_ctx=256, temperature=0)
    r1 = s.send("Hello!", max_tokens=5)
    list(r1)
    p1 = fmt.encode_dialog([system, {"role": "user", "content": "Hello!"}])
    assert r1.stats.prefilled_tokens == len(p1)
    ids1 = reply_ids(r1, fmt.stop_ids)
    # the reply is closed in the cache by the format's end-of-turn id
    assert s.ctx.tokens == p1 + ids1 + [fmt.end_of_turn_id] == s.tokens()
    pos = s.ctx.pos

    r2 = s.send("And then?", max_tokens=4)
    out2 = list(r2)
    new = fmt.encode_turn([{"role": "user", "content": "And then?"}])
    assert r2.stats.prefilled_tokens == len(new)
    assert r2.stats.prompt_tokens == pos + len(new)
    prompt2 = p1 + ids1 + [fmt.end_of_turn_id] + new
    # greedy reply from the reused cache == greedy reply computed from scratch over the whole conversation
    assert r2.tokens == greedy_reference(l3, prompt2, len(r2.tokens))
    assert "".join(out2) == l3.tokenizer.decode(reply_ids(r2, fmt.stop_ids))
    # and the logits at the end of the incrementally built cache equal a from-scratch pass
    full = np.asarray(l3.logits(s.ctx.tokens))[-1]
    last = s.ctx.tokens[-1]
    s.ctx.rewind(s.ctx.pos - 1)
    again = np.asarray(s.ctx.forward([last]))
    np.testing.assert_allclose(again, full, rtol=1e-4, atol=1e-4)
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages[2]["content"] == l3.tokenizer.decode(ids1)


def test_chat_reset_keeps_the_cached_system_prefix(l3):
    fmt = l3.chat_format
    s = ChatSession(l3, system="Be brief.", n_ctx=256, temperature=0)
    s.ask("Hello!", max_tokens=3)
    s.reset()
    prefix = fmt.encode_dialog([{"role": "system", "content": "Be brief."}], add_generation_prompt=False)
    assert s.messages == [{"role": "system", "content": "Be brief."}]
    assert s.ctx.tokens == prefix
    g = s.send("Hi again", max_tokens=2)
    list(g)
    assert g.stats.prefilled_tokens == len(fmt.encode_turn([{"role": "user", "content": "Hi again"}]))
    s.reset(system=None)
    assert s.messages == [] and s.ctx.tokens == [fmt.begin_of_text_id]


def test_chat_context_overflow_raises_or_drops_oldest(l3):
    fmt = l3.chat_format
    long = "word " * 30
    s = ChatSession(l3, n_ctx=64, temperature=0)
    with pytest.raises(ContextLengthError, match="the message alone needs"):
        s.send("word " * 200)
    assert s.messages == []
    s.ask(long, max_tokens=4)
    with pytest.raises(ContextLengthError, match=r"the conversation needs \d+ of 64 context tokens"):
        s.send(long)
    assert len(s.messages) == 2  # nothing changed

    d = ChatSession(l3, n_ctx=64, temperature=0, drop_oldest=True)
    d.ask(long, max_tokens=4)
    g = d.send("second " + long, max_tokens=4)
    out = list(g)
    assert [m["content"] for m in d.messages if m["role"] == "user"] == ["second " + long]
    prompt = fmt.encode_dialog([{"role": "user", "content": "second " + long}])
    assert g.tokens == greedy_reference(l3, prompt, len(g.tokens))
    assert d.ctx.tokens == d.tokens()
    assert out


def test_chat_ctrl_c_keeps_the_session_usable(l3):
    fmt = l3.chat_format
    s = ChatSession(l3, n_ctx=256, temperature=0)
    real = s.ctx
    s.ctx = InterruptingContext(real, 4, after=False)  # prefill, 2 decode steps, then Ctrl-C
    g = s.send("Tell me a story", max_tokens=20)
    list(g)
    assert g.stats.stop_reason == "interrupted"
    s.ctx = real
    assert s.messages[-1]["role"] == "assistant"
    assert real.tokens == s.tokens()  # the partial reply was closed with the end-of-turn id
    g2 = s.send("Go on", max_tokens=3)
    list(g2)
    assert g2.stats.prefilled_tokens == len(fmt.encode_turn([{"role": "user", "content": "Go on"}]))
    assert g2.tokens == greedy_reference(l3, g2.prompt_ids, len(g2.tokens))


def test_chat_stop_string_ends_the_reply_where_it_begins(scripted):
    model = scripted(STOP_TEXT)
    s = ChatSession(model, n_ctx=128)
    assert s.ask("Say it", stop=["END"], max_tokens=40) == "Hello world, this is the "
    assert s.last.stats.stop_reason == "stop_string"
    assert s.ctx.tokens == s.tokens()
    assert s.tokens()[-1] == model.chat_format.end_of_turn_id


def test_chat_argument_checks(l3, model):
    with pytest.raises(LlamaCxError, match="no tokenizer"):
        ChatSession(model)
    with pytest.raises(InvalidArgumentError, match="top_p"):
        ChatSession(l3, top_p=2)
    with pytest.raises(InvalidArgumentError, match="unknown sampling setting"):
        ChatSession(l3, temprature=0)
    with pytest.raises(ContextLengthError, match="exceeds the model's maximum"):
        ChatSession(l3, n_ctx=10**6)
    s = ChatSession(l3, n_ctx=64)
    with pytest.raises(InvalidArgumentError, match="max_tokens"):
        s.send("hi", max_tokens=-2)
    with pytest.raises(InvalidArgumentError, match="message must be a string"):
        s.send(None)
    assert s.messages == []


@pytest.mark.slow
def test_smollm2_chat_answers_and_reuses_its_cache(smollm2_gguf_path):
    """The real demo model (ChatML): a sensible greedy answer, and the second turn prefills only itself."""
    m = llama_cx.load(smollm2_gguf_path)
    s = ChatSession(m, temperature=0, n_ctx=512)
    assert "Paris" in s.ask("What is the capital of France?", max_tokens=16)
    assert s.last.stats.stop_reason in ("stop_token", "max_tokens")
    assert s.ctx.tokens == s.tokens()
    g = s.send("And of Italy?", max_tokens=12)
    text = "".join(g)
    assert g.stats.prefilled_tokens == len(m.chat_format.encode_turn([{"role": "user", "content": "And of Italy?"}]))
    assert "Rome" in text
