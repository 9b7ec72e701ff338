"""Target `params_json`: ModelConfig.from_params_file and the Meta loader on mutated or generated
params.json files (beside a valid tiny checkpoint), then a forward pass over whatever loaded.

Generated documents mix the real keys with values of every JSON kind: boundary integers, huge and tiny
floats, NaN/Infinity (Python's json accepts them), strings, nulls, nested containers; plus deep nesting.
"""
import json
import os

from hypothesis import strategies as st

from llama_cx.formats import open_checkpoint
from llama_cx.config import ModelConfig

from ._corpus import TINY, params_seeds, scratch_dir, torch_checkpoints, write_atomic
from ._engine import BOUNDARY, Input, mutations
from ._model_check import run_model

NAME = "params_json"
TIMEOUT = 10.0
KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier", "norm_eps",
        "rope_theta", "use_scaled_rope", "max_seq_len", "rope_scaling_factor", "rope_scale_factor")


def _dir() -> str:
    d = os.path.join(scratch_dir(), "params")
    if not os.path.isdir(d):
        os.makedirs(d)
        write_atomic(os.path.join(d, "consolidated.00.pth"), dict(torch_checkpoints())["bf16"])
    return d


def seeds():
    return params_seeds()


_SCALAR = st.one_of(
    st.sampled_from(BOUNDARY), st.integers(-(2**70), 2**70), st.integers(300, 4000).map(lambda n: 10**n),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, 5e-324, -0.0, 0.5, 1.3]),
    st.booleans(), st.none(), st.text(max_size=8),
)
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=6)


def _document(kv):
    base, changes = kv
    doc = dict(base)
    for k, v in changes:
        if v is _DROP:
            doc.pop(k, None)
        else:
            doc[k] = v
    return doc


_DROP = object()


def inputs(seed_list):
    changes = st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(_VALUE, st.just(_DROP), st.sampled_from(
        [1, 2, 8, 16, 32, 48, 2**31, 2**40, 2**63]))), min_size=1, max_size=4)
    docs = st.tuples(st.just(TINY), changes).map(_document).map(
        lambda d: Input(json.dumps(d).encode(), f"params {d!r}"[:2000]))
    deep = st.tuples(st.integers(1, 100_000), st.sampled_from("[{")).map(
        lambda t: Input(_deep(*t), f"params.json nested {t[0]} levels deep with {t[1]!r}"))
    return st.one_of(mutations(seed_list), docs, docs, deep)


def _deep(n: int, bracket: str) -> bytes:
    if bracket == "[":
        return ('{"dim": ' + "[" * n + "]" * n + "}").encode()
    return ('{"dim": ' + '{"a": ' * n + "1" + "}" * n + "}").encode()


def execute(data: bytes):
    d = _dir()
    path = os.path.join(d, "params.json")
    write_atomic(path, data)
    config = ModelConfig.from_params_file(path)
    assert config.head_dim * config.n_heads == config.q_dim and config.hidden_dim > 0
    run_model(open_checkpoint(d))
