"""Test helper: write Meta-layout checkpoint directories with the real producer, `torch.save`.

A directory holds params.json + consolidated.00.pth (+ tokenizer.model when given), exactly as Meta ships
Llama 3 / 3.1 / 3.2. Weights are random (seeded) unless a state dict is passed in.
"""
import json
import os
import shutil

import torch

from llama_cx.config import ffn_hidden_dim

SMALL = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32,
             ffn_dim_multiplier=None, norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=False)

TORCH_DTYPE = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def random_state_dict(params: dict, dtype="bf16", tied=False, seed=0, scale=None):
    """Random Llama weights with the shapes `params` implies, as an ordered state dict."""
    g = torch.Generator().manual_seed(seed)
    dim, n_heads = params["dim"], params["n_heads"]
    n_kv = params.get("n_kv_heads") or n_heads
    hd = dim // n_heads
    hidden = ffn_hidden_dim(dim, params.get("multiple_of", 256), params.get("ffn_dim_multiplier"))
    vocab = params["vocab_size"]
    td = TORCH_DTYPE[dtype]

    def mat(rows, cols):
        s = scale if scale is not None else cols ** -0.5
        return (torch.randn(rows, cols, generator=g) * s).to(td)

    def norm(n):
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(td)

    sd = {"tok_embeddings.weight": (torch.randn(vocab, dim, generator=g)).to(td)}
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        sd[p + "attention.wq.weight"] = mat(n_heads * hd, dim)
        sd[p + "attention.wk.weight"] = mat(n_kv * hd, dim)
        sd[p + "attention.wv.weight"] = mat(n_kv * hd, dim)
        sd[p + "attention.wo.weight"] = mat(dim, n_heads * hd)
        sd[p + "feed_forward.w1.weight"] = mat(hidden, dim)
        sd[p + "feed_forward.w2.weight"] = mat(dim, hidden)
        sd[p + "feed_forward.w3.weight"] = mat(hidden, dim)
        sd[p + "attention_norm.weight"] = norm(dim)
        sd[p + "ffn_norm.weight"] = norm(dim)
    sd["norm.weight"] = norm(dim)
    if not tied:
        sd["output.weight"] = mat(vocab, dim)
    return sd


def write_checkpoint(path, params=None, dtype="bf16", tied=False, seed=0, state_dict=None, tokenizer=None, **overrides):
    """Write a Meta checkpoint directory; returns (params, state_dict) as written."""
    params = dict(SMALL if params is None else params, **overrides)
    if state_dict is None:
        state_dict = random_state_dict(params, dtype=dtype, tied=tied, seed=seed)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "params.json"), "w") as f:
        json.dump(params, f)
    torch.save(state_dict, os.path.join(path, "consolidated.00.pth"))
    if tokenizer:
        shutil.copy(tokenizer, os.path.join(path, "tokenizer.model"))
    return params, state_dict
