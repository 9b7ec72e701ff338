"""Write the same .npz as `llama-cx trace` from a PyTorch model, with forward hooks, so the two can be diffed:

    python docs/trace_from_torch.py hf  HF_MODEL_DIR   --ids 128000,791,6864 --out hf.npz
    python docs/trace_from_torch.py meta META_CKPT_DIR --ids 128000,791,6864 --out meta.npz
    llama-cx trace MODEL --ids 128000,791,6864 --out ours.npz
    llama-cx trace-diff ours.npz hf.npz

Meta's model (llama_models/llama3/model.py) already uses the trace's names as module names, so a hook on each
named module is the whole job. transformers' LlamaForCausalLM calls them differently (HF_NAMES below); its
attention computes the same outputs with q/k rows permuted (rotate-half RoPE), which the trace does not see.
Every hook keeps the module's output for the one sequence: float32 [T, ...].
"""
import argparse
import re

import numpy as np
import torch

STAGES = ("attention_norm", "attention", "ffn_norm", "feed_forward")  # per layer, plus layers.{i} itself
HF_NAMES = {  # transformers module name pattern -> trace name
    r"model\.embed_tokens": "tok_embeddings",
    r"model\.layers\.(\d+)\.input_layernorm": r"layers.\1.attention_norm",
    r"model\.layers\.(\d+)\.self_attn": r"layers.\1.attention",
    r"model\.layers\.(\d+)\.post_attention_layernorm": r"layers.\1.ffn_norm",
    r"model\.layers\.(\d+)\.mlp": r"layers.\1.feed_forward",
    r"model\.layers\.(\d+)": r"layers.\1",
    r"model\.norm": "norm",
    r"lm_head": "output",
}


def _is_meta_name(name):
    return (name in ("tok_embeddings", "norm", "output") or re.fullmatch(r"layers\.\d+", name) is not None
            or re.fullmatch(r"layers\.\d+\.(%s)" % "|".join(STAGES), name) is not None)


def _hf_name(name):
    for pattern, trace_name in HF_NAMES.items():
        if re.fullmatch(pattern, name):
            return re.sub(pattern, trace_name, name)
    return None


def hooked_trace(model, names, run):
    """Run `run()` with a forward hook on every module that `names` maps to a trace name; returns trace name ->
    float32 array [T, ...] of that module's output (the first element when it returns a tuple)."""
    out, hooks = {}, []

    def keep(trace_name):
        def hook(module, inputs, output):
            t = output[0] if isinstance(output, tuple) else output
            out[trace_name] = t.detach().float()[0].numpy().copy()  # batch of one: [T, ...]
        return hook

    for name, module in model.named_modules():
        trace_name = names(name)
        if trace_name:
            hooks.append(module.register_forward_hook(keep(trace_name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return out


def meta_trace(model, ids):
    """Meta's Transformer (llama_models/llama3/model.py): its module names are the trace's names."""
    out = hooked_trace(model, lambda n: n if _is_meta_name(n) else None,
                       lambda: model.forward(torch.tensor([ids]), 0))
    return dict(tokens=np.asarray(ids, dtype=np.int64), **out)


def hf_trace(model, ids):
    """transformers' LlamaForCausalLM, its module names mapped by HF_NAMES."""
    out = hooked_trace(model, _hf_name, lambda: model(torch.tensor([ids]), use_cache=False))
    return dict(tokens=np.asarray(ids, dtype=np.int64), **out)


def _load_meta(path, max_seq_len):
    import json
    import os
    import tempfile

    import torch.distributed as dist
    from fairscale.nn.model_parallel import initialize as fs_init
    from llama_models.llama3.args import ModelArgs
    from llama_models.llama3.model import Transformer

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    if not fs_init.model_parallel_is_initialized():
        fs_init.initialize_model_parallel(1)
    with open(os.path.join(path, "params.json")) as f:
        params = json.load(f)
    model = Transformer(ModelArgs(**params, max_seq_len=max_seq_len, max_batch_size=1))
    sd = torch.load(os.path.join(path, "consolidated.00.pth"), map_location="cpu", weights_only=True)
    sd.setdefault("output.weight", sd["tok_embeddings.weight"])  # tied embeddings (Llama 3.2 1B/3B)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.float().eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=("hf", "meta"))
    ap.add_argument("model", help="a transformers model directory, or a Meta checkpoint directory")
    ap.add_argument("--ids", required=True, help="comma-separated token ids (llama-cx trace prints them)")
    ap.add_argument("--out", required=True, metavar="FILE.npz")
    a = ap.parse_args()
    ids = [int(s) for s in a.ids.split(",")]
    if a.kind == "hf":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(a.model).float().eval()
        arrays = hf_trace(model, ids)
    else:
        arrays = meta_trace(_load_meta(a.model, max(len(ids), 8)), ids)
    np.savez(a.out, **arrays)
    print(f"wrote {len(arrays)} arrays to {a.out}")


if __name__ == "__main__":
    main()
