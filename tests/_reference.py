"""Meta's reference Llama 3 model (llama_models/llama3/model.py from llama-models==0.3.0), run on CPU in
float32 with torch + fairscale (model-parallel world size 1), as the independent oracle for our logits."""
import importlib.util
import os
import sys
import tempfile
import types

import torch

_MODULE = None


def _meta_model_module(llama_models_root):
    """Import llama3/args.py + model.py as a private package (its __init__ would pull unrelated deps)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    src = os.path.join(llama_models_root, "llama_models", "llama3")
    pkg = types.ModuleType("_meta_llama3")
    pkg.__path__ = [src]
    sys.modules["_meta_llama3"] = pkg
    for name in ("args", "model"):
        spec = importlib.util.spec_from_file_location(f"_meta_llama3.{name}", os.path.join(src, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    _init_model_parallel()
    _MODULE = sys.modules["_meta_llama3.model"]
    return _MODULE


def _init_model_parallel():
    import torch.distributed as dist
    from fairscale.nn.model_parallel import initialize as fs_init

    if not dist.is_initialized():
        store = tempfile.NamedTemporaryFile(prefix="lcx-dist-", delete=False).name
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    if not fs_init.model_parallel_is_initialized():
        fs_init.initialize_model_parallel(1)


def meta_reference(llama_models_root, params: dict, state_dict: dict, max_seq_len: int):
    """Meta's Transformer in float32 with our state dict (tied embeddings -> output = tok_embeddings)."""
    mod = _meta_model_module(llama_models_root)
    args = sys.modules["_meta_llama3.args"].ModelArgs(**params, max_seq_len=max_seq_len, max_batch_size=1)
    torch.manual_seed(0)
    model = mod.Transformer(args)
    sd = {k: v.float() for k, v in state_dict.items()}
    if "output.weight" not in sd:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd, strict=True)
    return model.float().eval()


def reference_logits(model, ids, start_pos=0, chunk=1024):
    """(len(ids), vocab) float32 numpy logits, fed to Meta's model in chunks using its own KV cache."""
    outs = []
    for s in range(0, len(ids), chunk):
        toks = torch.tensor([ids[s:s + chunk]], dtype=torch.long)
        outs.append(model.forward(toks, start_pos + s)[0])
    return torch.cat(outs).numpy()


def reference_greedy(model, prompt, n_new):
    logits = reference_logits(model, prompt)
    out, pos = [], len(prompt)
    nxt = int(logits[-1].argmax())
    for _ in range(n_new):
        out.append(nxt)
        lg = model.forward(torch.tensor([[nxt]], dtype=torch.long), pos)[0, -1]
        pos += 1
        nxt = int(lg.argmax())
    return out
