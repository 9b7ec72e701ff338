"""Whole-model logits against Meta's reference implementation (llama_models/llama3/model.py) on random
checkpoints written by torch.save.

Tolerance: max |Δlogit| <= 2e-4 x (std of the reference logits). Both sides compute in float32 from the same
bf16 weights; the residual difference is summation order (our SIMD tiles vs torch's GEMMs)."""
import numpy as np
import pytest

import llama_cx
from _ckpt import write_checkpoint
from _reference import meta_reference, reference_greedy, reference_logits

TOL = 2e-4

CASES = {
    "gqa-untied": dict(n_heads=4, n_kv_heads=2, tied=False),
    "mha-untied": dict(n_heads=4, n_kv_heads=4, tied=False),
    "gqa-tied": dict(n_heads=8, n_kv_heads=2, tied=True),
    "mha-tied-f32": dict(n_heads=2, n_kv_heads=2, tied=True, dtype="f32"),
    "gqa-scaled-rope": dict(n_heads=4, n_kv_heads=1, tied=False, use_scaled_rope=True),
    "ffn-multiplier": dict(n_heads=4, n_kv_heads=2, tied=False, ffn_dim_multiplier=1.3, multiple_of=48),
}


def _make(tmp_path, name, **kw):
    kw = dict(kw)
    tied, dtype = kw.pop("tied"), kw.pop("dtype", "bf16")
    params = dict(dim=64, n_layers=3, vocab_size=512, multiple_of=32, ffn_dim_multiplier=None, norm_eps=1e-5,
                  rope_theta=500000.0, use_scaled_rope=False)
    params.update(kw)
    d = tmp_path / name
    params, sd = write_checkpoint(str(d), params=params, tied=tied, dtype=dtype, seed=hash(name) % 1000)
    return str(d), params, sd


def _check_close(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max() / ref.std()
    assert err <= TOL, f"max |Δ| = {err:.2e} x std(logits)"
    return err


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_greedy_and_incremental_match_meta(tmp_path, llama_models_root, case):
    path, params, sd = _make(tmp_path, case, **CASES[case])
    model = llama_cx.load(path)
    assert model.tied_embeddings == CASES[case]["tied"]
    ref = meta_reference(llama_models_root, params, sd, max_seq_len=256)
    rng = np.random.default_rng(1)
    prompt = [int(i) for i in rng.integers(0, params["vocab_size"], 37)]

    # one-shot logits for every position
    ours = np.asarray(model.logits(prompt))
    _check_close(ours, reference_logits(ref, prompt))

    # prefill then decode one token at a time == one-shot
    ctx = model.new_context(n_ctx=128)
    last = np.asarray(ctx.forward(prompt[:20]))
    np.testing.assert_allclose(last, ours[19], rtol=0, atol=1e-5 * ours.std())
    for i in range(20, len(prompt)):
        step = np.asarray(ctx.forward([prompt[i]]))
        np.testing.assert_allclose(step, ours[i], rtol=0, atol=1e-5 * ours.std())

    # greedy continuation identical for 32 tokens
    ref_ids = reference_greedy(ref, prompt[:8], 32)
    ctx = model.new_context(n_ctx=64)
    nxt = llama_cx._kernels.argmax(ctx.forward(prompt[:8]))
    ours_ids = []
    for _ in range(32):
        ours_ids.append(nxt)
        nxt = llama_cx._kernels.argmax(ctx.forward([nxt]))
    assert ours_ids == ref_ids


@pytest.mark.slow
def test_scaled_rope_past_8192_matches_meta(tmp_path, llama_models_root):
    """Llama 3.1 rope scaling only changes low frequencies, which matter at long range: check positions past
    the original 8192-token context."""
    params = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=64, multiple_of=16,
                  ffn_dim_multiplier=None, norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)
    d = str(tmp_path / "long")
    params, sd = write_checkpoint(d, params=params, seed=5)
    model = llama_cx.load(d)
    assert model.config.use_scaled_rope and model.config.rope_scale_factor == 8.0
    n = 8200
    rng = np.random.default_rng(2)
    ids = [int(i) for i in rng.integers(0, 64, n)]
    ctx = model.new_context(n_ctx=n)
    ctx.forward(ids[:-8])
    ours = np.stack([np.asarray(ctx.forward([t])) for t in ids[-8:]])
    ref = meta_reference(llama_models_root, params, sd, max_seq_len=n)
    ref_logits = reference_logits(ref, ids)[-8:]
    _check_close(ours, ref_logits)


def test_decode_past_many_key_parts_matches_meta(tmp_path, llama_models_root):
    """A decode step's attention runs in parts of LCX_DEC_KC (512) keys, each for up to 16 of the query heads
    that share a kv head, merged by their log-sum-exp: 34 query heads on one kv head (3 head blocks) and
    positions past 1024 keys (3 parts), against Meta's logits and our own one-shot prompt at those positions."""
    path, params, sd = _make(tmp_path, "parts", tied=False, dim=272, n_heads=34, n_kv_heads=1, n_layers=2)
    model = llama_cx.load(path)
    rng = np.random.default_rng(3)
    ids = [int(i) for i in rng.integers(0, params["vocab_size"], 1060)]
    n0 = 1030
    ctx = model.new_context(n_ctx=len(ids))
    ctx.forward(ids[:n0])
    steps = np.stack([np.asarray(ctx.forward([t])) for t in ids[n0:]])
    ref = meta_reference(llama_models_root, params, sd, max_seq_len=len(ids))
    _check_close(steps, reference_logits(ref, ids)[n0:])
    one_shot = np.asarray(model.logits(ids))[n0:]
    np.testing.assert_allclose(steps, one_shot, rtol=0, atol=1e-5 * one_shot.std())
