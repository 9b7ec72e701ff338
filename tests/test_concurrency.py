"""One loaded model shared by several contexts in several Python threads: weights are read-only, each
context has its own KV cache and activations, and the compiled kernels run without the GIL."""
import threading
import time

import pytest

import llama_cx
from _ckpt import write_checkpoint
from llama_cx import _kernels

# big enough that the forward pass takes the multi-threaded (OpenMP) path: dim^2 x tokens >= 2^15
PARAMS = dict(dim=256, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=512, multiple_of=64, ffn_dim_multiplier=None,
              norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=False, max_seq_len=512)
PROMPTS = [[1, 2, 3], [500, 7], list(range(40, 140)), [9] * 17, [3, 1, 4, 1, 5, 9, 2, 6], [511], [0, 0], [77] * 130]
N_NEW = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("shared")
    write_checkpoint(d, params=PARAMS, dtype="bf16", seed=11)
    return llama_cx.load(str(d))


@pytest.fixture
def threads_2():
    """Kernel threads fixed for the test (the result must not depend on it, but timings do)."""
    old = llama_cx.get_num_threads()
    llama_cx.set_num_threads(2)
    yield
    llama_cx.set_num_threads(old)


def greedy(model, prompt):
    """(the N_NEW greedy ids, the bytes of the last logits) from a fresh context."""
    ctx = model.new_context(256)
    logits = ctx.forward(prompt)
    out = []
    for _ in range(N_NEW):
        out.append(_kernels.argmax(logits))
        logits = ctx.forward([out[-1]])
    return out, bytes(logits)


def test_threads_sharing_a_model_match_sequential_runs(model, threads_2):
    expected = [greedy(model, p) for p in PROMPTS]
    assert len({tuple(ids) for ids, _ in expected}) > 1  # different prompts, different continuations

    for _round in range(2):
        results = [None] * len(PROMPTS)
        errors = []
        start = threading.Barrier(4)

        def worker(k):
            try:
                start.wait()
                for i in range(k, len(PROMPTS), 4):
                    results[i] = greedy(model, PROMPTS[i])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        workers = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=300)
        assert not errors, errors
        for i, (got, want) in enumerate(zip(results, expected)):
            assert got[0] == want[0], f"prompt {i}: tokens {got[0]} != sequential {want[0]}"
            assert got[1] == want[1], f"prompt {i}: logits differ from the sequential run"


def test_contexts_interleaved_in_one_thread(model):
    """Several live contexts of one model do not share state (each step of one between steps of others)."""
    expected = [greedy(model, p) for p in PROMPTS[:4]]
    ctxs = [model.new_context(256) for _ in range(4)]
    logits = [c.forward(p) for c, p in zip(ctxs, PROMPTS[:4])]
    ids = [[] for _ in ctxs]
    for _ in range(N_NEW):
        for k, c in enumerate(ctxs):
            ids[k].append(_kernels.argmax(logits[k]))
            logits[k] = c.forward([ids[k][-1]])
    assert ids == [e[0] for e in expected]
    assert [bytes(x) for x in logits] == [e[1] for e in expected]


def _count_while(busy, seconds_hint=None):
    """Increments a pure-Python counter thread makes while `busy()` runs in this thread; (count, seconds)."""
    count = [0]
    stop = threading.Event()

    def counter():
        n = 0
        while not stop.is_set():
            n += 1
            count[0] = n

    t = threading.Thread(target=counter)
    t.start()
    time.sleep(0.05)  # let it get going
    c0, t0 = count[0], time.perf_counter()
    busy()
    c1, t1 = count[0], time.perf_counter()
    stop.set()
    t.join()
    return c1 - c0, t1 - t0


def test_gil_is_released_during_the_forward_pass(model):
    """A Python thread keeps running while a forward pass computes: during long prefill calls it makes at
    least a third of the progress it makes while this thread sleeps (if the kernels held the GIL it
    would make almost none: each 128-token block is one compiled call)."""
    old = llama_cx.get_num_threads()
    llama_cx.set_num_threads(1)  # one core for the kernels, one for the counter
    try:
        prompt = [i % 500 for i in range(256)]

        def forwards():
            for _ in range(3):
                model.new_context(256).forward(prompt)

        busy_n, busy_s = _count_while(forwards)
        idle_n, idle_s = _count_while(lambda: time.sleep(busy_s))
    finally:
        llama_cx.set_num_threads(old)
    busy_rate, idle_rate = busy_n / busy_s, idle_n / idle_s
    assert busy_s > 0.05, "the forward passes were too short to measure"
    assert busy_rate > idle_rate / 3, (busy_rate, idle_rate, busy_s)


@pytest.mark.parametrize("bf16", [False, True])
def test_logits_do_not_depend_on_the_kernel_thread_count(tmp_path, bf16):
    """Threads split q/k rows in whole heads (and rotate their own heads), v/w1/w3/wo/w2 in 4-row blocks, the
    rows of a prompt's normalisation among them, and each normalises a single token privately: with more
    threads than heads (3 q+k heads here, up to 7 threads) some threads own no head at all. A decode step's
    attention is cut in parts of 512 keys that any thread may take (3 parts at the end here). Every split
    must give the 1-thread logits."""
    if bf16 and not _kernels.avx512bf16_supported():
        pytest.skip("no AVX512-BF16 on this CPU")
    d = tmp_path / "m"
    write_checkpoint(d, params=dict(PARAMS, n_heads=2, n_kv_heads=1, dim=192, max_seq_len=2048), dtype="bf16",
                     seed=5)
    m = llama_cx.load(str(d))
    old, old_dp, old_dd = llama_cx.get_num_threads(), llama_cx.get_bf16_prefill(), llama_cx.get_bf16_decode()
    runs = {}
    try:
        llama_cx.set_bf16_prefill(bf16)
        llama_cx.set_bf16_decode(bf16)
        for nt in (1, 2, 3, 7):
            llama_cx.set_num_threads(nt)
            ctx = m.new_context(1100)
            prompt = bytes(ctx.forward(list(range(3, 60)), all_logits=True))
            steps = [bytes(ctx.forward([t])) for t in (5, 77, 300)]
            ctx.forward([(7 * i) % 500 for i in range(1000)])
            runs[nt] = prompt, steps + [bytes(ctx.forward([t])) for t in (9, 400)]
    finally:
        llama_cx.set_num_threads(old)
        llama_cx.set_bf16_prefill(old_dp)
        llama_cx.set_bf16_decode(old_dd)
    for nt in (2, 3, 7):
        assert runs[nt] == runs[1], f"{nt} threads"
