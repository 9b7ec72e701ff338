"""PyTorch eager peer: a compact Llama 3 forward pass with a preallocated KV cache.

Written for speed within eager PyTorch, not copied from Meta's reference (which recomputes masks and
allocates per call): weights stay zero-copy views of the mmapped consolidated.00.pth (bf16 variant) or are
converted once (fp32 variant), every step runs under torch.inference_mode, attention goes through
F.scaled_dot_product_attention with grouped-query heads, and only the last position's logits are computed.

Numerics follow Meta's llama3/model.py: RMSNorm in float32 then cast back, interleaved-pair rotary
embedding (`apply_rotary_emb`) in float32, Llama 3.1 `apply_scaling` of the rotary frequencies.
"""
from __future__ import annotations

import json
import math
import os

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def rope_frequencies(head_dim: int, theta: float, scale_factor):
    """(head_dim // 2,) float32 inverse frequencies; Meta's `apply_scaling` when scale_factor is given."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scale_factor is None:
        return freqs.float()
    low, high, old_ctx = 1.0, 4.0, 8192.0
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(f)
        elif wavelen > old_ctx / low:
            out.append(f / scale_factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / scale_factor + smooth * f)
    return torch.tensor(out, dtype=torch.float32)


class TorchLlama:
    """Engine interface shared by the benchmark workers: reset(), forward(ids) -> greedy next id."""

    def __init__(self, meta_dir: str, dtype: str = "bf16", n_ctx: int = 1024, rope_scale_factor=None):
        with open(os.path.join(meta_dir, "params.json")) as f:
            p = json.load(f)
        self.dtype = DTYPES[dtype]
        self.dim, self.n_heads = p["dim"], p["n_heads"]
        self.n_kv = p.get("n_kv_heads") or self.n_heads
        self.head_dim = self.dim // self.n_heads
        self.eps = p.get("norm_eps", 1e-5)
        self.n_ctx = n_ctx
        sd = torch.load(os.path.join(meta_dir, "consolidated.00.pth"), mmap=True, weights_only=True)
        conv = {}  # one conversion per distinct tensor (keeps tied embeddings shared)

        def w(name):
            t = sd[name]
            if t.dtype == self.dtype:
                return t
            if name not in conv:
                conv[name] = t.to(self.dtype)
            return conv[name]

        self.n_layers = p["n_layers"]
        self.tok_embeddings = w("tok_embeddings.weight")  # (vocab, dim)
        self.output = w("output.weight") if "output.weight" in sd else self.tok_embeddings  # (vocab, dim)
        self.norm = w("norm.weight")
        self.layers = []
        for i in range(self.n_layers):
            g = lambda n: w(f"layers.{i}.{n}.weight")  # noqa: E731
            self.layers.append(dict(
                attention_norm=g("attention_norm"), wq=g("attention.wq"), wk=g("attention.wk"),
                wv=g("attention.wv"), wo=g("attention.wo"), ffn_norm=g("ffn_norm"),
                w1=g("feed_forward.w1"), w2=g("feed_forward.w2"), w3=g("feed_forward.w3")))
        self.weight_bytes_per_token = self._weight_bytes_per_token()

        scale = rope_scale_factor if p.get("use_scaled_rope") else None
        freqs = rope_frequencies(self.head_dim, p.get("rope_theta", 500000.0), scale)
        angles = torch.outer(torch.arange(n_ctx, dtype=torch.float32), freqs)  # (n_ctx, head_dim // 2)
        self.cos, self.sin = angles.cos(), angles.sin()
        # (n_layers, n_kv_heads, n_ctx, head_dim): one head's keys contiguous, as SDPA reads them
        self.k_cache = torch.zeros(self.n_layers, self.n_kv, n_ctx, self.head_dim, dtype=self.dtype)
        self.v_cache = torch.zeros_like(self.k_cache)
        self.pos = 0

    def _weight_bytes_per_token(self) -> int:
        per_layer = sum(t.numel() * t.element_size() for t in self.layers[0].values())
        emb_row = self.dim * self.tok_embeddings.element_size()
        return self.n_layers * per_layer + self.norm.numel() * self.norm.element_size() \
            + self.output.numel() * self.output.element_size() + emb_row

    def reset(self) -> None:
        self.pos = 0

    def _rms_norm(self, x, weight):  # x (T, dim)
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * weight

    def _rope(self, x, cos, sin):  # x (T, heads, head_dim); cos/sin (T, 1, head_dim // 2)
        xf = x.float().unflatten(-1, (-1, 2))  # (T, heads, head_dim // 2, 2): Meta's interleaved pairs
        x0, x1 = xf[..., 0], xf[..., 1]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)

    def forward(self, ids) -> int:
        return int(self.logits(ids).argmax())

    @torch.inference_mode()
    def logits(self, ids):
        """Append ids to the cache; (vocab,) logits of the last position, in the weight dtype."""
        T, pos = len(ids), self.pos
        if pos + T > self.n_ctx:
            raise ValueError(f"context full: {pos} + {T} > {self.n_ctx}")
        x = self.tok_embeddings[torch.tensor(ids)]  # (T, dim)
        cos, sin = self.cos[pos:pos + T, None, :], self.sin[pos:pos + T, None, :]
        if T == 1 or pos == 0:
            mask, causal = None, T > 1
        else:  # a chunk appended to a filled cache: row t sees cache[: pos + t + 1]
            keep = torch.ones(T, pos + T, dtype=torch.bool).tril(diagonal=pos)
            mask, causal = keep, False
        for i, L in enumerate(self.layers):
            h = self._rms_norm(x, L["attention_norm"])
            q = F.linear(h, L["wq"]).view(T, self.n_heads, self.head_dim)
            k = F.linear(h, L["wk"]).view(T, self.n_kv, self.head_dim)
            v = F.linear(h, L["wv"]).view(T, self.n_kv, self.head_dim)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            self.k_cache[i, :, pos:pos + T] = k.transpose(0, 1)
            self.v_cache[i, :, pos:pos + T] = v.transpose(0, 1)
            keys = self.k_cache[i, :, : pos + T]  # (n_kv, S, head_dim)
            values = self.v_cache[i, :, : pos + T]
            attn = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], keys[None], values[None], attn_mask=mask, is_causal=causal,
                enable_gqa=True)  # (1, n_heads, T, head_dim)
            x = x + F.linear(attn[0].transpose(0, 1).reshape(T, self.dim), L["wo"])
            h = self._rms_norm(x, L["ffn_norm"])
            x = x + F.linear(F.silu(F.linear(h, L["w1"])) * F.linear(h, L["w3"]), L["w2"])
        self.pos = pos + T
        return F.linear(self._rms_norm(x[-1], self.norm), self.output)  # (vocab,), last position only
