"""Continuous batching (Model.forward_batch, csrc/model/batch.c): a batched step must give each sequence the
logits it gets alone, for mixes of decode tokens and prompt chunks at different positions, with sequences
joining and leaving between steps, on every ISA this CPU runs and with 1 and N threads.

Tolerance: none. Each sequence's rows get the arithmetic lcx_forward gives them alone (a prompt chunk through
the gemm tile, whose per-row sums do not depend on the other rows; a decode token through the matvec kernel,
a block of weight rows at a time for all decode tokens), so the logits are compared bit for bit."""
import numpy as np
import pytest

import llama_cx
from _ckpt import write_checkpoint
from llama_cx import _kernels as K
from llama_cx.errors import ContextLengthError, LlamaCxError

ISAS = [i for i in K.ISA_NAMES if K.isa_supported(i)]
THREADS = sorted({1, max(3, llama_cx.runtime.available_cpus())})
# big enough for threads (lcx_forward_batch runs toy sizes on one thread); 2 kv heads for 8 query heads (GQA)
PARAMS = dict(dim=256, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=512, multiple_of=64, ffn_dim_multiplier=None,
              norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=False, max_seq_len=2048)


@pytest.fixture(scope="module", params=["bf16", "f32"])
def model(tmp_path_factory, request):
    d = tmp_path_factory.mktemp(f"batch-{request.param}")
    write_checkpoint(d, params=PARAMS, dtype=request.param, seed=21)
    return llama_cx.load(str(d))


@pytest.fixture(params=[(isa, nt) for isa in ISAS for nt in THREADS], ids=lambda p: f"{p[0]}-{p[1]}t")
def path(request):
    isa, nt = request.param
    old_isa, old_nt = K.get_isa(), K.get_num_threads()
    K.set_isa(isa)
    K.set_num_threads(nt)
    yield isa, nt
    K.set_isa(old_isa)
    K.set_num_threads(old_nt)


def _ids(seed, n):
    return [int(i) for i in np.random.default_rng(seed).integers(0, PARAMS["vocab_size"], n)]


# A schedule: per step, {sequence: tokens}. Sequences join (a first prompt chunk), decode (one token), prefill
# the rest of a long prompt in chunks between others' decode steps, and leave (absent from later steps);
# sequence 3's prompt crosses a 512-key part of decode attention (several parts merged).
SCHEDULE = [
    {0: _ids(1, 7), 1: _ids(2, 1)},
    {0: [5], 1: _ids(3, 30), 2: _ids(4, 2)},
    {0: [9], 1: [11], 2: [13], 3: _ids(5, 300)},
    {1: [17], 3: _ids(6, 250)},                                 # 0 and 2 sit this step out
    {0: [19], 1: [23], 2: _ids(7, 3), 3: [29]},
    {2: [31], 3: [37], 4: _ids(8, 128)},                        # 0 and 1 have left; 4 joins
    {2: [41], 3: [43], 4: [47]},
]


def _run_alone(model, n_ctx=1024):
    """Each sequence's logits at each of its steps, run alone with ctx.forward (same blocks). ctx.forward cuts
    a block into pieces of ctx.max_batch (128) tokens; a chunk that leaves a piece of one token (129) gets the
    matvec there and one-query attention, so no chunk here does."""
    out = {}
    for s in sorted({s for step in SCHEDULE for s in step}):
        ctx = model.new_context(n_ctx)
        out[s] = [bytes(ctx.forward(step[s], all_logits=True)) for step in SCHEDULE if s in step]
    return out


def _run_batched(model, n_ctx=1024):
    ctxs, out = {}, {}
    for step in SCHEDULE:
        seqs = sorted(step)
        for s in seqs:
            if s not in ctxs:
                ctxs[s] = model.new_context(n_ctx)
        logits = model.forward_batch([ctxs[s] for s in seqs], [step[s] for s in seqs], all_logits=True)
        for s, lg in zip(seqs, logits):
            out.setdefault(s, []).append(bytes(lg))
    return out, ctxs


def test_batched_steps_equal_each_sequence_alone(model, path):
    alone = _run_alone(model)
    batched, ctxs = _run_batched(model)
    assert batched.keys() == alone.keys()
    for s in alone:
        for k, (a, b) in enumerate(zip(alone[s], batched[s])):
            assert a == b, f"sequence {s}, its step {k}: batched logits differ from the sequence alone"
    assert ctxs[3].pos == 300 + 250 + 3 and ctxs[0].tokens == SCHEDULE[0][0] + [5, 9, 19]


def test_last_logits_and_greedy_decode_equal_alone(model, path):
    """The default (last row of each sequence) and a greedy loop: 5 sequences decoding together, ids and logits
    identical to each decoding alone."""
    prompts = [_ids(10 + k, n) for k, n in enumerate((1, 4, 17, 64, 200))]
    alone = []
    for p in prompts:
        ctx = model.new_context(512)
        lg, ids = ctx.forward(p), []
        for _ in range(6):
            ids.append(K.argmax(lg))
            lg = ctx.forward([ids[-1]])
        alone.append((ids, bytes(lg)))
    ctxs = [model.new_context(512) for _ in prompts]
    lgs = model.forward_batch(ctxs, prompts)
    ids = [[] for _ in prompts]
    for _ in range(6):
        for k, lg in enumerate(lgs):
            ids[k].append(K.argmax(lg))
        lgs = model.forward_batch(ctxs, [[i[-1]] for i in ids])
    assert [(i, bytes(lg)) for i, lg in zip(ids, lgs)] == alone


def test_a_batch_of_one_and_the_shapes(model):
    vocab = PARAMS["vocab_size"]
    a, b = model.new_context(64), model.new_context(64)
    (la,) = model.forward_batch([a], [[1, 2, 3]])
    assert la.shape == (vocab,) and bytes(la) == bytes(b.forward([1, 2, 3]))
    la, lb = model.forward_batch([a, b], [[4], [5, 6]], all_logits=True)
    assert la.shape == (1, vocab) and lb.shape == (2, vocab)
    assert a.pos == 4 and b.pos == 5


def test_bad_batches_get_one_line_errors(model, tmp_path):
    a, b = model.new_context(16), model.new_context(16)
    write_checkpoint(tmp_path / "o", params=PARAMS, seed=1)
    other = llama_cx.load(str(tmp_path / "o"))
    cases = [
        (([], []), LlamaCxError, "at least one context"),
        (([a, b], [[1]]), LlamaCxError, "2 contexts but 1 token lists"),
        (([a, a], [[1], [2]]), LlamaCxError, "context 1 appears twice"),
        (([a, other.new_context(8)], [[1], [2]]), LlamaCxError, "context 1 is not a context of this model"),
        (([a, "ctx"], [[1], [2]]), LlamaCxError, "context 1 is not a context of this model"),
        (([a, b], [[1], []]), LlamaCxError, "context 1: forward needs at least one token"),
        (([a, b], [[1], [512]]), LlamaCxError, "context 1: token id 512 out of range"),
        (([a, b], [[1], [1.5]]), LlamaCxError, "context 1: token ids must be integers"),
        (([a, b], [[1], [0] * 17]), ContextLengthError, "context 1: 17 tokens do not fit"),
    ]
    for (ctxs, lists), exc, msg in cases:
        with pytest.raises(exc, match=msg) as e:
            model.forward_batch(ctxs, lists)
        assert "\n" not in str(e.value)
    assert a.pos == 0 and b.pos == 0  # nothing was run
    big = [model.new_context(2048) for _ in range(3)]
    with pytest.raises(LlamaCxError, match="4097 tokens in one step, at most 4096"):
        model.forward_batch(big, [[1] * 2000, [1] * 2000, [1] * 97])


def test_a_context_in_use_is_refused(model):
    a, b = model.new_context(16), model.new_context(16)
    b._busy.acquire()  # as while another thread's forward runs on it
    with pytest.raises(LlamaCxError, match="in use by another thread"):
        model.forward_batch([a, b], [[1], [2]])
    assert not a._busy.locked() and a.pos == 0
    with pytest.raises(LlamaCxError, match="in use"):
        b.forward([1])
    b._busy.release()
    model.forward_batch([a, b], [[1], [2]])
    assert a.pos == b.pos == 1


# ---- the KV cache option: bf16 / f16 rows (rounded on write, widened to read) --------------------------------
# Against Meta's reference (f32 KV there), max |Δlogit| / std(reference logits) measured on the six checkpoints
# of tests/test_model_reference.py (37-token prompt, prefill then decode): f32 1.9-2.4e-6, f16 0.8-1.1e-3,
# bf16 6.9-9.7e-3 (bf16 keeps 8 bits of mantissa, f16 11). Bounds: about 2x the worst measured.
KV_TOL = {"f32": 2e-4, "f16": 2.5e-3, "bf16": 2e-2}


def test_f16_rounding_matches_numpy(path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1000) * s for s in (1e-8, 1e-5, 1e-3, 1, 300, 7e4)]).astype(np.float32)
    x = np.concatenate([x, np.float32([0.0, -0.0, 65504, 65519.99, 65520, -65520, np.inf, -np.inf, 5.96e-8,
                                       2.98e-8, 2.99e-8, 6.1e-5, 6.103e-5])])[:-1]  # odd length: the masked tail
    with np.errstate(over="ignore"):  # numpy warns of the values that become inf
        want = x.astype(np.float16)
    out = np.full(len(x), 0xDEAD, dtype=np.uint16)
    K.from_f32(x, "f16", out, len(x))
    assert (out == want.view(np.uint16)).all()
    back = np.full(len(x), np.nan, dtype=np.float32)
    K.to_f32(out, "f16", back, len(x))
    assert (back == want.astype(np.float32)).all()


@pytest.mark.parametrize("kv", ["bf16", "f16"])
def test_half_kv_cache_matches_meta_within_tolerance(tmp_path, llama_models_root, kv):
    from _reference import meta_reference, reference_logits
    from test_model_reference import CASES, _make

    for case in ("gqa-untied", "mha-tied-f32"):
        p, params, sd = _make(tmp_path, case, **CASES[case])
        model = llama_cx.load(p)
        prompt = [int(i) for i in np.random.default_rng(1).integers(0, params["vocab_size"], 37)]
        ref = np.asarray(reference_logits(meta_reference(llama_models_root, params, sd, max_seq_len=256), prompt),
                         dtype=np.float64)
        ctx = model.new_context(128, kv_dtype=kv)
        ours = [np.asarray(ctx.forward(prompt[:20], all_logits=True))]
        ours += [np.asarray(ctx.forward([t]))[None] for t in prompt[20:]]
        err = np.abs(np.concatenate(ours) - ref).max() / ref.std()
        assert KV_TOL["f32"] < err <= KV_TOL[kv], f"{case}: max |Δ| = {err:.2e} x std with a {kv} KV cache"


@pytest.mark.parametrize("kv", ["bf16", "f16"])
def test_batched_steps_with_a_half_kv_cache_equal_alone(model, kv):
    """The batched step rounds the same rows the same way (one from_f32 of the table): bits equal alone, also
    with an f32-cache context in the same step."""
    prompts = [_ids(40 + k, n) for k, n in enumerate((3, 50, 1))]
    kvs = [kv, kv, "f32"]
    alone = []
    for p, d in zip(prompts, kvs):
        ctx = model.new_context(256, kv_dtype=d)
        alone.append([bytes(ctx.forward(p))] + [bytes(ctx.forward([t])) for t in (5, 6)])
    ctxs = [model.new_context(256, kv_dtype=d) for d in kvs]
    got = [[bytes(lg)] for lg in model.forward_batch(ctxs, prompts)]
    for t in (5, 6):
        for g, lg in zip(got, model.forward_batch(ctxs, [[t]] * 3)):
            g.append(bytes(lg))
    assert got == alone


def test_kv_dtype_is_checked_and_halves_the_cache(model):
    with pytest.raises(LlamaCxError, match="KV cache dtype 'q8' not supported \\(one of f32, bf16, f16\\)"):
        model.new_context(16, kv_dtype="q8")
    cfg = model.config
    kv_bytes = 2 * cfg.n_layers * 1024 * cfg.n_kv_heads * cfg.head_dim * 4  # f32 K and V of 1024 positions
    f32, bf16 = model.new_context(1024).state_bytes, model.new_context(1024, kv_dtype="bf16").state_bytes
    # half the cache, plus the per-thread f32 scratch the widened rows go to
    n_threads = (bf16 - f32 + kv_bytes // 2) // (2 * 1024 * cfg.head_dim * 4)
    assert n_threads >= 1 and bf16 - f32 == n_threads * 2 * 1024 * cfg.head_dim * 4 - kv_bytes // 2


def test_smollm2_sequences_decoding_together_equal_alone(smollm2_gguf_path):
    """A real model (SmolLM2-135M, 30 layers, 9 heads on 3 kv heads): 4 sequences decoding together, greedy ids
    and logits bit for bit those of each alone."""
    model = llama_cx.load(smollm2_gguf_path)
    prompts = [[1, 2, 3, 4, 5], list(range(100, 140)), [7], list(range(2000, 2013))]
    alone = []
    for p in prompts:
        ctx, ids = model.new_context(128), []
        lg = ctx.forward(p)
        for _ in range(4):
            ids.append(K.argmax(lg))
            lg = ctx.forward([ids[-1]])
        alone.append((ids, bytes(lg)))
    ctxs = [model.new_context(128) for _ in prompts]
    lgs, ids = model.forward_batch(ctxs, prompts), [[] for _ in prompts]
    for _ in range(4):
        for k, lg in enumerate(lgs):
            ids[k].append(K.argmax(lg))
        lgs = model.forward_batch(ctxs, [[i[-1]] for i in ids])
    assert [(i, bytes(lg)) for i, lg in zip(ids, lgs)] == alone
