"""The OpenAI-compatible server (llama_cx/server) against the official `openai` client and raw HTTP.

A live uvicorn on a free port of 127.0.0.1 serves SmolLM2-135M-Instruct (the demo model). Greedy output is
compared with llama_cx.generate / `llama-cx generate` token for token: a slot computes exactly what a lone
generate computes (same kernels, same prefill blocks; see scheduler._prefill_chunks), so the tolerance is zero,
concurrency and prefix reuse included.
"""
import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

starlette = pytest.importorskip("starlette", reason="the server extra (starlette) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (test dependency) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (test dependency) is not installed")

import llama_cx  # noqa: E402
from llama_cx.server import create_app  # noqa: E402
from llama_cx.server.scheduler import _prefill_chunks  # noqa: E402

N_CTX = 512
N_SLOTS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Live:
    """uvicorn serving `app` in a thread; .url is the base URL."""

    def __init__(self, app):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def model(smollm2_gguf_path):
    return llama_cx.load(smollm2_gguf_path)


@pytest.fixture(scope="module")
def live(model):
    srv = _Live(create_app(model, model_name="smollm2", n_slots=N_SLOTS, n_ctx=N_CTX))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _metrics(live) -> dict:
    """The /metrics samples as {name{labels}: value}."""
    text = httpx.get(live.url + "/metrics").text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _wait_idle(live, timeout=30.0) -> dict:
    deadline = time.time() + timeout
    while True:
        h = httpx.get(live.url + "/health").json()
        if h["slots_busy"] == 0 and h["queue_depth"] == 0:
            return h
        if time.time() > deadline:
            raise AssertionError(f"slots still busy after {timeout} s: {h}")
        time.sleep(0.02)


def _greedy(model, prompt, max_tokens, chat=False):
    """(text, completion token count as usage counts it) from a lone llama_cx.generate."""
    if chat:
        fmt = model.chat_format
        gen = llama_cx.generate(model, fmt.encode_dialog(prompt), max_tokens=max_tokens, temperature=0,
                                stop_ids=fmt.stop_ids)
    else:
        gen = llama_cx.generate(model, prompt, max_tokens=max_tokens, temperature=0)
    text = gen.read()
    n = len(gen.tokens) - (1 if gen.tokens and gen.tokens[-1] in gen.stop_ids else 0)
    return text, n


# ---- the OpenAI client: completion and chat, streaming and not -----------------------------------------------------
def test_models_lists_the_model(client):
    assert [m.id for m in client.models.list().data] == ["smollm2"]


def test_completion_matches_generate_and_counts_usage(client, model):
    prompt = "The capital of France is"
    text, n = _greedy(model, prompt, 12)
    r = client.completions.create(model="smollm2", prompt=prompt, max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == "length"
    tok = model.tokenizer
    assert r.usage.prompt_tokens == len(tok.encode(prompt, bos=tok.add_bos))
    assert r.usage.completion_tokens == n == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_completion_stream_matches_generate(client, model):
    prompt = "def fib(n):"
    text, n = _greedy(model, prompt, 16)
    chunks = list(client.completions.create(model="smollm2", prompt=prompt, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == n


def test_completion_matches_the_cli(client, model, smollm2_gguf_path):
    prompt = "Once upon a time"
    r = subprocess.run([sys.executable, "-m", "llama_cx", "generate", smollm2_gguf_path, "-p", prompt, "-n", "10",
                        "--temperature", "0", "-q"], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(llama_cx.__file__))))
    assert r.returncode == 0, r.stderr
    out = client.completions.create(model="smollm2", prompt=prompt, max_tokens=10, temperature=0)
    text = out.choices[0].text  # the CLI ends its output with a newline when the text does not (whole last line)
    assert r.stdout == text + ("" if text.endswith("\n") else "\n")


def test_chat_matches_generate(client, model):
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What is 2+2?"}]
    text, n = _greedy(model, messages, 24, chat=True)
    r = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == ("stop" if n < 24 else "length")
    assert r.usage.prompt_tokens == len(model.chat_format.encode_dialog(messages))
    assert r.usage.completion_tokens == n


def test_ignore_eos_generates_max_tokens(client, model):
    """llama.cpp's ignore_eos extension: the reply runs on past the end-of-turn token to max_tokens."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    _, n = _greedy(model, messages, 24, chat=True)
    assert n < 24  # the model ends its turn early on its own
    r = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 24
    with pytest.raises(openai.BadRequestError, match="ignore_eos must be a boolean"):
        client.completions.create(model="smollm2", prompt="Hi", max_tokens=2, extra_body={"ignore_eos": 1})


def test_chat_stream_matches_generate(client, model):
    messages = [{"role": "user", "content": "Name a colour."}]
    text, n = _greedy(model, messages, 24, chat=True)
    chunks = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == n


def test_sse_wire_format(live):
    body = {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        json.loads(line[len("data: "):])


def test_stop_string_ends_the_reply(client, model):
    text, _ = _greedy(model, "The capital of France is", 12)  # ' Paris.\n\n...'
    stop = text.split()[0]
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=12, temperature=0,
                                  stop=[stop])
    assert r.choices[0].text == text[:text.index(stop)]
    assert r.choices[0].finish_reason == "stop"


# ---- concurrency, chunked prefill, prefix reuse ---------------------------------------------------------------------
def test_prefill_chunks_never_make_a_one_token_call_generate_would_not():
    for block in (3, 4, 128):
        for n in range(1, 3 * block + 3):
            for keep in range(0, n):
                chunks = _prefill_chunks(keep, n, block)
                assert chunks[0][0] <= keep and chunks[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
                assert all(1 <= e - s <= block for s, e in chunks)
                singles = [s for s, e in chunks if e - s == 1]
                fresh_singles = [n - 1] if n % block == 1 or n == 1 else []
                assert singles == fresh_singles, (keep, n, block, chunks)


def test_eight_concurrent_streams_each_match_running_alone(client, model, live):
    """8 clients at once (more prompt tokens than one prefill block for some, shared prefixes for others):
    each stream's text is exactly what a lone greedy generate gives (tolerance: identical tokens)."""
    tok = model.tokenizer
    long_ids = tok.encode("The history of the printing press begins in the fifteenth century. " * 20)
    prompts = [
        "The capital of France is",
        "The capital of France is a city",                # shares a prefix with the first
        "def add(a, b):",
        "Write a haiku about the sea:",
        long_ids[:129],                                    # 129 % 128 == 1: a one-token prefill tail
        long_ids[:200],                                    # two prefill chunks, interleaved with the others
        long_ids[:150] + tok.encode(" In summary,"),       # shares 150 tokens with the one before
        "1, 2, 3, 4,",
    ]
    max_tokens = 12
    want = [_greedy(model, p, max_tokens)[0] for p in prompts]
    got = [None] * len(prompts)
    spans = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def one(i):
        barrier.wait()
        parts, first = [], None
        for c in client.completions.create(model="smollm2", prompt=prompts[i], max_tokens=max_tokens, temperature=0,
                                           stream=True):
            if c.choices and c.choices[0].text:
                first = first or time.perf_counter()
                parts.append(c.choices[0].text)
        got[i] = "".join(parts)
        spans[i] = (first, time.perf_counter())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == want
    # the streams ran at the same time (interleaved), not one after another
    first_end = min(end for _, end in spans)
    assert sum(start is not None and start < first_end for start, _ in spans) >= 2


def test_prefix_reuse_skips_the_shared_prefill_and_changes_nothing(client, model, live):
    system = "You are a careful assistant. " * 10
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]
    _wait_idle(live)
    before = _metrics(live)["llama_cx_prompt_tokens_cached_total"]
    r1 = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=6, temperature=0)
    msgs2 = msgs[:1] + [{"role": "user", "content": "Say bye."}]
    r2 = client.chat.completions.create(model="smollm2", messages=msgs2, max_tokens=6, temperature=0)
    cached = _metrics(live)["llama_cx_prompt_tokens_cached_total"] - before
    assert cached >= len(model.chat_format.encode_dialog(msgs[:1], add_generation_prompt=False)) - 2
    assert r1.choices[0].message.content == _greedy(model, msgs, 6, chat=True)[0]
    assert r2.choices[0].message.content == _greedy(model, msgs2, 6, chat=True)[0]


# ---- bad requests, disconnects, auth -----------------------------------------------------------------------------
BAD = {
    "malformed JSON": ("/v1/completions", b'{"prompt": "hi", ', 400),
    "not an object": ("/v1/completions", b'["hi"]', 400),
    "prompt wrong type": ("/v1/completions", {"prompt": 5}, 400),
    "prompt ids out of range": ("/v1/completions", {"prompt": [1, 10**9]}, 400),
    "empty prompt": ("/v1/completions", {"prompt": ""}, 400),
    "two prompts": ("/v1/completions", {"prompt": ["a", "b"]}, 400),
    "max_tokens a string": ("/v1/completions", {"prompt": "hi", "max_tokens": "5"}, 400),
    "max_tokens zero": ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400),
    "temperature a string": ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400),
    "temperature out of range": ("/v1/completions", {"prompt": "hi", "temperature": 7}, 400),
    "stream not a bool": ("/v1/completions", {"prompt": "hi", "stream": "yes"}, 400),
    "stop a number": ("/v1/completions", {"prompt": "hi", "stop": 3}, 400),
    "stop too long": ("/v1/completions", {"prompt": "hi", "stop": "x" * 1000}, 400),
    "n = 2": ("/v1/completions", {"prompt": "hi", "n": 2}, 400),
    "max_tokens beyond the context": ("/v1/completions", {"prompt": "hi", "max_tokens": N_CTX}, 400),
    "prompt longer than the context": ("/v1/completions", {"prompt": "word " * (2 * N_CTX)}, 400),
    "messages missing": ("/v1/chat/completions", {"model": "x"}, 400),
    "messages a string": ("/v1/chat/completions", {"messages": "hi"}, 400),
    "unknown role": ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    "content a number": ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400),
    "image content": ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400),
    "chat max_tokens beyond the context": ("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": N_CTX}, 400),
    "body over 1 MiB": ("/v1/completions", {"prompt": "x" * (1 << 20)}, 413),
    "wrong method": ("/v1/models", {"prompt": "hi"}, 405),
    "unknown path": ("/v1/nothing", {}, 404),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_a_4xx_openai_error(live, case):
    path, body, status = BAD[case]
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(live.url + path, timeout=60, headers={"content-type": "application/json"}, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and err["type"] == "invalid_request_error"
    assert httpx.get(live.url + "/health").json()["status"] == "ok"


def test_body_limit_holds_without_content_length(live):
    def chunked():  # no Content-Length: the limit is checked while reading
        for _ in range(20):
            yield b" " * 65536
        yield b'{"prompt": "hi"}'

    r = httpx.post(live.url + "/v1/completions", content=chunked(), timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smollm2", messages=[{"role": "wizard", "content": "hi"}])
    assert "role" in str(e.value)


def test_server_still_answers_after_bad_requests(live, client, model):
    bad = [b"{", b"[]", b'{"prompt": {}}', b'{"prompt": "hi", "max_tokens": -1}']
    for body in bad:
        assert httpx.post(live.url + "/v1/completions", content=body).status_code == 400
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.choices[0].text == _greedy(model, "The capital of France is", 4)[0]


def test_metrics_count_requests_tokens_and_time_to_first_token(live, client):
    client.completions.create(model="smollm2", prompt="Hi", max_tokens=2, temperature=0)
    httpx.post(live.url + "/v1/completions", content=b"{")
    m = _metrics(live)
    assert m['llama_cx_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    assert m['llama_cx_requests_total{endpoint="/v1/completions",status="400"}'] >= 1
    assert m["llama_cx_completion_tokens_total"] >= 2 and m["llama_cx_prompt_tokens_total"] >= 1
    assert m["llama_cx_slots_total"] == N_SLOTS
    assert m['llama_cx_time_to_first_token_seconds_bucket{le="+Inf"}'] == m["llama_cx_time_to_first_token_seconds_count"] >= 1
    assert "llama_cx_queue_depth" in m and "llama_cx_decode_tokens_per_second" in m


def _decoded(live) -> float:
    return _metrics(live)["llama_cx_decode_tokens_total"]


def test_disconnect_mid_stream_frees_the_slot(live, client, model):
    _wait_idle(live)
    before = _decoded(live)
    body = {"prompt": "Count to a thousand: 1, 2, 3,", "max_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(4)]  # a few events, then hang up
    assert got[0].startswith("data: ")
    _wait_idle(live)
    assert _decoded(live) - before < 200  # the job stopped with the client, long before its 400 tokens
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.choices[0].text == _greedy(model, "The capital of France is", 4)[0]


def test_disconnect_while_waiting_for_a_whole_reply_frees_the_slot(live):
    _wait_idle(live)
    before = _decoded(live)
    body = {"prompt": "Count to a thousand: 1, 2, 3,", "max_tokens": 400, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live.url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
    _wait_idle(live)
    assert _decoded(live) - before < 200


@pytest.fixture(scope="module")
def keyed(model):
    srv = _Live(create_app(model, model_name="smollm2", n_slots=1, n_ctx=128, api_key="s3cret"))
    yield srv
    srv.close()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Basic s3cret"])
def test_api_key_required(keyed, header):
    headers = {"authorization": header} if header else {}
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions")):
        r = httpx.request(method, keyed.url + path, headers=headers, json={"prompt": "hi", "max_tokens": 1})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_api_key_accepted_and_health_open(keyed):
    c = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0)
    assert c.completions.create(model="smollm2", prompt="Hi", max_tokens=2, temperature=0).usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(keyed.url + "/health").status_code == 200
    assert httpx.get(keyed.url + "/metrics").status_code == 200


# ---- the command ----------------------------------------------------------------------------------------------------------
def _repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(llama_cx.__file__)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_runs_and_stops_cleanly(smollm2_gguf_path, sig):
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "llama_cx", "serve", smollm2_gguf_path, "--port", str(port),
                          "--parallel", "2", "--ctx", "128"], cwd=_repo_root(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert p.poll() is None and time.time() < deadline, "server did not come up"
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode in (0, -sig, 128 + sig, 130), err
    assert "Traceback" not in err
    assert "Application shutdown complete" in err


def test_serve_without_the_extra_says_what_to_install(smollm2_gguf_path):
    code = ("import sys; sys.modules['starlette'] = None; from llama_cx.cli import main; "
            f"sys.exit(main(['serve', {smollm2_gguf_path!r}]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=_repo_root(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == 'llama-cx: error: the server needs starlette and uvicorn: pip install "llama_cx[server]"'


def test_more_requests_than_slots_wait_their_turn(keyed, model):
    """A 1-slot server: concurrent requests queue and each still gets its own greedy answer."""
    c = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0, timeout=120)
    prompts = ["The capital of France is", "def add(a, b):", "1, 2, 3,"]
    got = [None] * 3

    def one(i):
        got[i] = c.completions.create(model="smollm2", prompt=prompts[i], max_tokens=6, temperature=0).choices[0].text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == [_greedy(model, p, 6)[0] for p in prompts]


def test_replicas_share_no_state(live, keyed, model):
    """Two replicas (here: two apps on two ports): a conversation whose turns alternate between them gets the
    same replies as one replica, since each request carries the whole conversation."""
    a = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    b = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0, timeout=120)

    def talk(clients):
        msgs = []
        for client, text in zip(clients, ["Hi, I am Ann.", "What is my name?"]):
            msgs.append({"role": "user", "content": text})
            r = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=12, temperature=0)
            msgs.append({"role": "assistant", "content": r.choices[0].message.content})
        return msgs

    assert talk([a, b]) == talk([a, a]) == talk([b, b])


def test_openai_defaults(client, model):
    """Completions default to 16 tokens (as OpenAI's); top_p 0 keeps only the best token (greedy)."""
    r = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", top_p=0, seed=5)
    assert r.usage.completion_tokens <= 16
    text, n = _greedy(model, "1, 2, 3, 4,", 16)
    assert r.choices[0].text == text and r.usage.completion_tokens == n


def test_serve_on_a_busy_port_is_one_line(smollm2_gguf_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "llama_cx", "serve", smollm2_gguf_path, "--port", str(port)],
                           cwd=_repo_root(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert re.fullmatch(rf"llama-cx: error: cannot listen on 127\.0\.0\.1:{port}: .+\n", r.stderr), r.stderr


def test_long_prefill_is_interleaved_with_other_streams(model):
    """While a 500-token prompt is prefilled (4 chunks of 128), a running stream keeps getting tokens: the
    scheduler alternates one prefill chunk with one decode step of each other slot."""
    from llama_cx.sampling import SamplingParams
    from llama_cx.server.scheduler import Job, Scheduler

    log, lock = [], threading.Lock()
    first_a, done = threading.Event(), threading.Semaphore(0)

    def recorder(name):
        def on_event(ev):
            with lock:
                log.append((name, ev[0]))
            if name == "A" and ev[0] == "text":
                first_a.set()
            if ev[0] in ("done", "error"):
                done.release()
        return on_event

    tok = model.tokenizer
    sched = Scheduler(model, 2, N_CTX)
    sched.start()
    try:
        greedy = SamplingParams(temperature=0)
        sched.submit(Job(tok.encode("1, 2, 3, 4,"), greedy, 60, [], (), recorder("A")))
        assert first_a.wait(120)
        long_prompt = tok.encode("The history of the printing press begins in the fifteenth century. " * 40)[:500]
        with lock:
            log.append(("B", "submitted"))
        sched.submit(Job(long_prompt, greedy, 2, [], (), recorder("B")))
        assert done.acquire(timeout=300) and done.acquire(timeout=300)
    finally:
        sched.stop()
    start = log.index(("B", "submitted"))
    b_first = next(i for i, (name, kind) in enumerate(log) if name == "B" and kind != "submitted")
    a_between = sum(name == "A" and kind == "text" for name, kind in log[start:b_first])
    assert a_between >= 4, log[start:b_first + 1]  # 5 expected; a prefill in one call would give 2


def test_prefix_reuse_takes_prefilled_rows_only(model):
    """A chat's second prompt holds the first prompt and the first reply: the slot reuses the prompt (rows a
    prefill wrote) and recomputes the reply (rows decode steps wrote, summed in another order), so the answer is
    exactly a fresh generate's."""
    from llama_cx.sampling import SamplingParams
    from llama_cx.server.scheduler import Job, Scheduler

    fmt, greedy = model.chat_format, SamplingParams(temperature=0)
    sched = Scheduler(model, 1, N_CTX)
    sched.start()

    def run(ids, n):
        done = threading.Event()
        job = Job(ids, greedy, n, [], fmt.stop_ids, lambda ev: ev[0] in ("done", "error") and done.set())
        sched.submit(job)
        assert done.wait(300)
        return job

    try:
        first = [{"role": "user", "content": "Name three colours."}]
        p1 = fmt.encode_dialog(first)
        j1 = run(p1, 8)
        reply = [t for t in j1.tokens if t not in fmt.stop_ids]
        p2 = p1 + reply + [fmt.end_of_turn_id] + fmt.encode_turn([{"role": "user", "content": "And three more?"}])
        j2 = run(p2, 8)
    finally:
        sched.stop()
    assert j2.cached_tokens == len(p1)  # len(p1) % 128 != 1: the whole first prompt is reusable
    fresh = llama_cx.generate_tokens(model, p2, max_tokens=8, temperature=0, stop_ids=fmt.stop_ids)
    assert j2.tokens == list(fresh)


def test_llama2_chat_format_is_served(tiny_llama2_path):
    """A Llama 2 model (SentencePiece tokens, [INST] chat format): chat replies, streamed and not, are a lone
    generate's on the model's own chat format; a dialog the format refuses is a 400 naming the problem."""
    model = llama_cx.load(tiny_llama2_path)
    assert isinstance(model.chat_format, llama_cx.Llama2ChatFormat)
    srv = _Live(create_app(model, model_name="llama2", n_slots=2, n_ctx=128))
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
        text, n = _greedy(model, msgs, 8, chat=True)
        r = client.chat.completions.create(model="llama2", messages=msgs, max_tokens=8, temperature=0)
        assert r.choices[0].message.content == text
        assert r.usage.prompt_tokens == len(model.chat_format.encode_dialog(msgs)) and r.usage.completion_tokens == n
        chunks = client.chat.completions.create(model="llama2", messages=msgs, max_tokens=8, temperature=0,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
        bad = httpx.post(srv.url + "/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "x"}]})
        assert bad.status_code == 400 and "expected 'user'" in bad.json()["error"]["message"]
    finally:
        srv.close()
