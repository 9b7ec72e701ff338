"""Test helper: a "scripted" Llama checkpoint whose next token depends only on the current one, by construction.

All attention and FFN output weights are zero, so the residual stream at a position is the embedding of its
token; the final RMSNorm turns a one-hot embedding e_s into 8 e_s (dim 64), and output.weight maps slot s to the
successor with a logit of 8 x 64 = 512 (every other logit is 0). So any sampler with temperature <= ~10 follows
`successor` exactly: the text a CLI streams is known in advance, while the whole real pipeline (checkpoint
reader, tokenizer, kernels, sampler, generation loop, CLI) runs.
"""
import torch

from _ckpt import random_state_dict

LLAMA3_VOCAB = 128256


def scripted_state_dict(params: dict, successor: dict, default: int):
    """successor: {token id: next id} (at most dim - 1 distinct keys); every other token is followed by default."""
    dim, vocab = params["dim"], params["vocab_size"]
    keys = list(successor)
    if len(keys) > dim - 1:
        raise ValueError(f"at most {dim - 1} scripted tokens, got {len(keys)}")
    sd = random_state_dict(params, dtype="bf16")
    for name, t in sd.items():
        if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            sd[name] = torch.zeros_like(t)  # attention and FFN add nothing to the residual stream
    emb = torch.zeros(vocab, dim)
    emb[:, 0] = 1.0  # slot 0: "any other token"
    out = torch.zeros(vocab, dim)
    out[default, 0] = 64.0
    for s, tok in enumerate(keys, 1):
        emb[tok] = 0.0
        emb[tok, s] = 1.0
        out[successor[tok], s] = 64.0
    sd["tok_embeddings.weight"] = emb.to(torch.bfloat16)
    sd["output.weight"] = out.to(torch.bfloat16)
    sd["norm.weight"] = torch.ones(dim, dtype=torch.bfloat16)
    return sd


def cycle(ids, end=None):
    """successor map that walks `ids` in order and then stops on `end` (or starts over when end is None)."""
    if len(set(ids)) != len(ids):
        raise ValueError("a scripted sequence cannot repeat a token")
    succ = {a: b for a, b in zip(ids, ids[1:])}
    succ[ids[-1]] = ids[0] if end is None else end
    return succ
