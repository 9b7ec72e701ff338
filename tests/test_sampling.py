"""Sampler: each filter against hand-computed distributions and a float64 numpy oracle; draws against
the exact filtered softmax; seeded reproducibility; bad settings."""
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llama_cx import _sampling
from llama_cx.errors import InvalidArgumentError, LlamaCxError
from llama_cx.sampling import Sampler, SamplingParams


def oracle(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, recent=()):
    """The documented pipeline in float64 numpy: penalty, temperature, top-k, softmax, top-p, min-p."""
    l32 = np.array(logits, dtype=np.float32)
    l32 = np.where(np.isnan(l32), np.float32(-np.inf), l32)
    for t in set(recent):
        v = np.float64(l32[t])
        l32[t] = np.float32(v / repeat_penalty if v > 0 else v * repeat_penalty)
    n = len(l32)
    ids = np.arange(n)
    order = np.lexsort((ids, -l32.astype(np.float64)))  # logit desc, id asc
    if temperature == 0:
        return [int(order[0])], np.array([1.0])
    keep = order[:top_k] if 0 < top_k < n else order
    lk = l32[keep].astype(np.float64)
    w = np.exp((lk - lk.max()) / temperature)
    probs = w / w.sum()
    cut = len(keep)
    if top_p < 1:
        cut = min(cut, int(np.argmax(np.cumsum(probs) >= top_p)) + 1)
    if min_p > 0:
        cut = min(cut, int(np.sum(probs >= min_p * probs.max())))
    kept = probs[:cut]
    return [int(i) for i in keep[:cut]], kept / kept.sum()


def dist(logits, **kw):
    recent = kw.pop("recent", None)
    s = Sampler(SamplingParams(**kw), len(logits))
    return s.distribution(np.asarray(logits, dtype=np.float32), recent)


LOG1234 = np.log(np.array([1.0, 2.0, 3.0, 4.0]))  # softmax = [.1, .2, .3, .4]


@pytest.mark.parametrize(
    "kw, ids, probs",
    [
        (dict(temperature=1.0, top_p=1.0), [3, 2, 1, 0], [0.4, 0.3, 0.2, 0.1]),
        (dict(temperature=0.5, top_p=1.0), [3, 2, 1, 0], [16 / 30, 9 / 30, 4 / 30, 1 / 30]),
        (dict(temperature=1.0, top_p=1.0, top_k=2), [3, 2], [4 / 7, 3 / 7]),
        (dict(temperature=1.0, top_p=0.65), [3, 2], [4 / 7, 3 / 7]),    # .4 < .65 <= .7
        (dict(temperature=1.0, top_p=0.35), [3], [1.0]),                 # .35 <= .4
        (dict(temperature=1.0, top_p=0.95), [3, 2, 1, 0], [0.4, 0.3, 0.2, 0.1]),
        (dict(temperature=1.0, top_p=1.0, min_p=0.45), [3, 2, 1], [4 / 9, 3 / 9, 2 / 9]),  # p >= .18
        (dict(temperature=1.0, top_p=1.0, min_p=0.6), [3, 2], [4 / 7, 3 / 7]),
        (dict(temperature=1.0, top_p=1.0, min_p=1.0), [3], [1.0]),
        # top-k renormalises before top-p: {.4, .3} -> {4/7, 3/7}; 0.5 <= 4/7 keeps one
        (dict(temperature=1.0, top_k=2, top_p=0.5), [3], [1.0]),
        (dict(temperature=0.0), [3], [1.0]),
    ],
)
def test_filters_match_hand_computed_distributions(kw, ids, probs):
    got_ids, got_probs = dist(LOG1234, **kw)
    assert got_ids == ids
    assert np.allclose(got_probs, probs, rtol=1e-6, atol=0)


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    logits = [2.0, -1.0, 0.5, 1.0]
    ids, probs = dist(logits, temperature=1.0, top_p=1.0, repeat_penalty=2.0, recent=[0, 1, 0])
    penalised = np.array([1.0, -2.0, 0.5, 1.0])  # token 0: 2/2, token 1: -1*2; 2 and 3 untouched
    expect = np.exp(penalised) / np.exp(penalised).sum()
    assert ids == [0, 3, 2, 1]  # 0 and 3 tie at 1.0: lower id first
    assert np.allclose(probs, expect[ids], rtol=1e-6)


def test_repeat_penalty_only_looks_at_the_last_n_tokens():
    logits = np.array([3.0, 2.9, 0.0], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=0, repeat_penalty=10.0, repeat_last_n=2), 3)
    assert s.sample(logits, recent=[0, 2, 2]) == 0   # token 0 is 3 tokens back: not penalised
    assert s.sample(logits, recent=[2, 0]) == 1      # 3.0 / 10 < 2.9


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=1.0, top_p=1.0),
        dict(temperature=0.7, top_k=3, top_p=1.0),
        dict(temperature=1.3, top_p=0.8),
        dict(temperature=1.0, top_p=1.0, min_p=0.3),
        dict(temperature=0.9, top_k=4, top_p=0.9, min_p=0.1, repeat_penalty=1.5, recent=[1, 2]),
    ],
)
def test_draw_frequencies_match_the_filtered_softmax(kw):
    """20k draws from a 6-token vocabulary: every frequency within 5 sigma of the oracle's probability."""
    logits = np.array([0.3, 1.2, -0.5, 2.0, 1.9, 0.0], dtype=np.float32)
    recent = kw.pop("recent", None)
    s = Sampler(SamplingParams(seed=1234, **kw), len(logits))
    n = 20000
    counts = np.bincount([s.sample(logits, recent) for _ in range(n)], minlength=len(logits))
    ids, probs = oracle(logits, recent=recent or (), **kw)
    p = np.zeros(len(logits))
    p[ids] = probs
    assert counts[p == 0].sum() == 0, "a filtered-out token was drawn"
    sigma = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) <= 5 * sigma + 1), (counts, n * p)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.floats(-30, 30, width=32), min_size=1, max_size=300),
    temperature=st.sampled_from([0.0, 0.25, 0.8, 1.0, 2.0]),
    top_k=st.integers(0, 40),
    top_p=st.sampled_from([1.0, 0.95, 0.5, 0.1]),
    min_p=st.sampled_from([0.0, 0.05, 0.5]),
    penalty=st.sampled_from([1.0, 1.3, 0.8]),
    seed=st.integers(0, 2**31),
)
def test_filtered_distribution_matches_numpy_oracle(data, temperature, top_k, top_p, min_p, penalty, seed):
    logits = np.array(data, dtype=np.float32)
    recent = random.Random(seed).choices(range(len(logits)), k=min(10, len(logits)))
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=penalty)
    ids, probs = dist(logits, recent=recent, **kw)
    ref_ids, ref_probs = oracle(logits, recent=recent, **kw)
    # top-p/min-p boundaries can flip on the last bit when a cumulative sum lands exactly on top_p
    if ids != ref_ids:
        assert abs(len(ids) - len(ref_ids)) == 1 and ids[: min(len(ids), len(ref_ids))] == ref_ids[: min(len(ids), len(ref_ids))]
        return
    assert np.allclose(probs, ref_probs, rtol=2e-6, atol=1e-12)  # weights are expf (float32)


@pytest.mark.parametrize("kw", [dict(top_p=0.9), dict(top_k=40, top_p=1.0), dict(min_p=0.05, top_p=1.0), dict(top_p=0.999)])
def test_full_llama3_vocabulary(kw):
    """128256 logits: the heap (top-k) and histogram (top-p) fast paths give the oracle's sets."""
    logits = (np.random.default_rng(5).standard_normal(128256) * 3).astype(np.float32)
    ids, probs = dist(logits, temperature=0.8, **kw)
    ref_ids, ref_probs = oracle(logits, temperature=0.8, **kw)
    assert ids == ref_ids
    assert np.allclose(probs, ref_probs, rtol=2e-6, atol=1e-15)


def test_greedy_is_argmax_with_lowest_id_on_ties_and_ignores_the_seed():
    logits = np.array([1.0, 5.0, 2.0, 5.0], dtype=np.float32)
    for seed in (0, 1, 2):
        s = Sampler(SamplingParams(temperature=0, seed=seed), 4)
        assert [s.sample(logits) for _ in range(5)] == [1] * 5
    assert _sampling.argmax(logits) == 1


def test_nan_logits_are_never_drawn_and_all_nan_is_an_error():
    logits = np.array([np.nan, 0.0, np.nan, 0.0], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=1.0, top_p=1.0, seed=3), 4)
    assert {s.sample(logits) for _ in range(200)} == {1, 3}
    with pytest.raises(ValueError, match="no finite"):
        s.sample(np.full(4, np.nan, dtype=np.float32))


def test_same_seed_same_tokens_and_other_seeds_differ():
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=42)
    a = Sampler(params, 1000)
    b = Sampler(params, 1000)
    seq_a = [a.sample(logits) for _ in range(50)]
    assert seq_a == [b.sample(logits) for _ in range(50)]
    c = Sampler(params.replace(seed=43), 1000)
    assert seq_a != [c.sample(logits) for _ in range(50)]
    # the global random module is not involved
    random.seed(0)
    d = Sampler(params, 1000)
    random.random()
    assert seq_a == [d.sample(logits) for _ in range(50)]


def test_unseeded_samplers_record_their_seed():
    s = Sampler(SamplingParams(temperature=1.0), 10)
    again = Sampler(SamplingParams(temperature=1.0, seed=s.seed), 10)
    logits = np.zeros(10, dtype=np.float32)
    assert [s.sample(logits) for _ in range(20)] == [again.sample(logits) for _ in range(20)]


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(temperature=float("nan")), "temperature must be finite"),
        (dict(temperature=float("inf")), "temperature must be finite"),
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(temperature="hot"), "temperature must be a number"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.01), r"top_p must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(top_k=2.5), "top_k must be an integer"),
        (dict(top_k=True), "top_k must be an integer"),
        (dict(min_p=-0.01), r"min_p must be in \[0, 1\]"),
        (dict(min_p=1.5), r"min_p must be in \[0, 1\]"),
        (dict(repeat_penalty=0.0), "repeat_penalty must be > 0"),
        (dict(repeat_penalty=-1.0), "repeat_penalty must be > 0"),
        (dict(repeat_last_n=-1), "repeat_last_n must be >= 0"),
        (dict(seed=1.5), "seed must be an integer"),
    ],
)
def test_bad_settings_are_rejected_with_one_line(kw, msg):
    with pytest.raises(InvalidArgumentError, match=msg) as e:
        SamplingParams(**kw)
    assert isinstance(e.value, LlamaCxError) and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)


def test_logits_must_be_float32_vectors():
    s = Sampler(SamplingParams(), 4)
    with pytest.raises(InvalidArgumentError, match="1-D float32"):
        s.sample(np.zeros(4, dtype=np.float64))
    with pytest.raises(ValueError, match="built for 4"):
        s.sample(np.zeros(5, dtype=np.float32))
