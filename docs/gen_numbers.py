"""Fill the numbers in the guide (docs/*.md) from a trace of the demo model, so that they stay true.

    python docs/gen_numbers.py                  # the demo model (fetched once), pages rewritten in place
    python docs/gen_numbers.py MODEL --out DIR  # another model; the filled pages go to DIR
    python docs/gen_numbers.py --check          # exit 1 when a page's numbers are not what the code gives now

A page holds <!-- numbers:NAME --> ... <!-- /numbers:NAME --> markers; what is between them is replaced by
SECTIONS[NAME](facts). Everything comes from `llama_cx.trace` (the reference forward: scalar, deterministic,
the same on every CPU) over PROMPT, from the loaded model and from the GGUF file itself. Only the `prefill`
section shows the fast forward, whose last digits depend on the CPU's kernel path (it says which).
"""
import argparse
import math
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's llama_cx, when run from a source tree

import llama_cx  # noqa: E402
from llama_cx.trace import diff, logit_lens, norm2, row, top_k  # noqa: E402

PROMPT = "The capital of France is"
MARK = re.compile(r"(<!-- numbers:(\w+) -->\n)(.*?)(<!-- /numbers:\2 -->)", re.S)


class Facts:
    """What every section reads: the model, the prompt's ids, its full reference trace, the logit lens."""

    def __init__(self, path):
        self.path = path
        self.model = llama_cx.load(path)
        self.tok = self.model.require_tokenizer()
        self.cfg = self.model.config
        self.ids = self.tok.encode(PROMPT, bos=bool(self.tok.add_bos))
        self.tr = llama_cx.trace(self.model, self.ids)
        self.lens = logit_lens(self.model, self.tr, -1)
        self.T = len(self.ids)

    def piece(self, i):
        return repr(self.tok.decode([i]))

    def rms(self, name, pos=-1):
        v = row(self.tr[name], pos)
        return math.sqrt(math.fsum(x * x for x in v) / len(v))

    def layers_shown(self):
        L = self.cfg.n_layers
        return sorted({0, 1, L // 4, L // 2, 3 * L // 4, L - 2, L - 1})


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _code(lines):
    return "```text\n" + "\n".join(lines) + "\n```"


def _g(x, d=4):
    return f"{x:.{d}g}"


# ---- one function per marker -------------------------------------------------------------------------------------
def checkpoint(f):
    from llama_cx.cli.info import _info_lines

    lines = [ln for ln in _info_lines(f.model) if not ln.lstrip().startswith(("path", "note"))]
    ck = f.model.checkpoint
    mapped = len(ck.mapped) if getattr(ck, "mapped", None) is not None else 0
    return (f"`llama-cx info` on the demo model:\n\n{_code(lines)}\n\n"
            f"The file is mapped, not read: {mapped / 1e6:.1f} MB of address space; the quantized matrices are "
            f"then widened once into bf16 copies ({f.model.weight_bytes_per_token / 1e6:.1f} MB read per "
            f"decoded token).")


def tokenizer(f):
    from llama_cx.tokenizers import _pretokenize

    pieces = _pretokenize.split(PROMPT, f.tok.pattern)
    rows = [(i, f"{t}", f.piece(t)) for i, t in enumerate(f.ids)]
    return (f"`{PROMPT}` with the demo tokenizer (byte-level BPE by rank, pre-tokenizer `{f.tok.pattern}`, "
            f"{'adds' if f.tok.add_bos else 'no'} BOS):\n\n"
            f"- pre-tokenizer pieces: {' '.join(repr(p) for p in pieces)}\n"
            f"- tokens (`tokens` in the trace):\n\n" + _table(["position", "id", "text"], rows))


def embedding(f):
    tied = "output.weight" not in f.model.checkpoint.tensors
    rows = []
    for i, t in enumerate(f.ids):
        v = row(f.tr["tok_embeddings"], i)
        rows.append((i, f.piece(t), _g(norm2(v)), " ".join(f"{x:+.4f}" for x in v[:4]) + " …"))
    return (f"`tok_embeddings` [T={f.T}, dim={f.cfg.dim}] (the table is {f.cfg.vocab_size} x {f.cfg.dim}; "
            f"{'tied: the same matrix is the output projection' if tied else 'not tied to the output'}):\n\n"
            + _table(["position", "token", "‖x‖", "first values"], rows))


def rmsnorm(f):
    rows = []
    for l in f.layers_shown():
        x_in = "tok_embeddings" if l == 0 else f"layers.{l - 1}"
        rows.append((l, _g(f.rms(x_in)), _g(f.rms(f"layers.{l}.attention_norm")),
                     _g(f.rms(f"layers.{l}.ffn_norm"))))
    return (f"RMS of the last token's vector (position {f.T - 1}) entering each layer, and after the two norms "
            f"(eps = {f.cfg.norm_eps:g}; without the learned weight the output RMS would be 1):\n\n"
            + _table(["layer", "rms(x) in", "rms(attention_norm)", "rms(ffn_norm)"], rows)
            + f"\n\nThe final `norm` brings rms {_g(f.rms(f'layers.{f.cfg.n_layers - 1}'))} down to "
              f"{_g(f.rms('norm'))}.")


def rope(f):
    from llama_cx.config import ModelConfig
    from llama_cx.model import rope_frequencies

    c, freqs = f.cfg, rope_frequencies(f.cfg)
    half = c.head_dim // 2
    pos = f.T - 1
    rows = [(i, f"{freqs[i]:.6g}", f"{2 * math.pi / freqs[i]:.4g}", f"{(pos * freqs[i]) % (2 * math.pi):.4f}")
            for i in sorted({0, 1, half // 4, half // 2, half - 1})]
    l31 = ModelConfig.from_params(dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256,
                                       multiple_of=1024, ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0,
                                       use_scaled_rope=True))
    scaled, plain = rope_frequencies(l31), rope_frequencies(l31.replace(use_scaled_rope=False))
    h31 = l31.head_dim // 2
    rows31 = [(i, f"{2 * math.pi / plain[i]:.5g}", f"{plain[i] / scaled[i]:.4g}")
              for i in sorted({0, h31 // 2, 40, 44, 48, h31 - 1})]
    return (f"The demo model: theta {c.rope_theta:g}, head_dim {c.head_dim} ({half} pairs), scaling "
            f"{'on' if c.use_scaled_rope else 'off'}. Pair i turns by freq[i] radians per position; at the last "
            f"prompt position ({pos}):\n\n"
            + _table(["pair i", "freq[i]", "wavelength (positions)", "angle at pos mod 2π"], rows)
            + f"\n\nLlama 3.1 8B (theta 500000, head_dim 128, factor {l31.rope_scale_factor:g}, original context "
              f"{l31.rope_original_context}): `apply_scaling` leaves short wavelengths alone, divides long ones by the "
              f"factor and blends in between:\n\n"
            + _table(["pair i", "wavelength (positions)", "freq divided by"], rows31))


def attention(f):
    c = f.cfg
    kv_tok = 2 * c.n_layers * c.kv_dim * 4
    rows = [(l, _g(norm2(row(f.tr['tok_embeddings' if l == 0 else f'layers.{l - 1}'], -1))),
             _g(norm2(row(f.tr[f"layers.{l}.attention"], -1)))) for l in f.layers_shown()]
    return (f"The demo model: {c.n_heads} query heads, {c.n_kv_heads} key/value heads (n_rep = {c.n_rep} query "
            f"heads share each), head_dim {c.head_dim}: q has {c.q_dim} values per token, k and v {c.kv_dim} each. "
            f"The KV cache keeps k and v for every layer and position: 2 x {c.n_layers} x {c.kv_dim} x 4 bytes = "
            f"{kv_tok / 1024:.1f} KiB per token (f32), {kv_tok * 4096 / 2**20:.0f} MiB for 4096 positions; "
            f"without GQA it would be {c.n_rep}x that.\n\n"
            f"‖`layers.i.attention`‖ (wo's output, added to the residual) against the residual it reads, last "
            f"token:\n\n" + _table(["layer", "‖x‖ in", "‖attention‖"], rows))


def swiglu(f):
    c = f.cfg
    rows = [(l, _g(norm2(row(f.tr[f"layers.{l}.ffn_norm"], -1))), _g(norm2(row(f.tr[f"layers.{l}.feed_forward"], -1))),
             _g(norm2(row(f.tr[f"layers.{l}"], -1)))) for l in f.layers_shown()]
    n_ffn = 3 * c.dim * c.hidden_dim
    return (f"The demo model: dim {c.dim} -> hidden {c.hidden_dim} -> dim; w1, w3 and w2 hold {n_ffn / 1e6:.2f} M "
            f"weights per layer, {100 * n_ffn * c.n_layers / sum(t.numel for t in f.model.checkpoint.tensors.values()):.0f}% "
            f"of the model. Last token:\n\n"
            + _table(["layer", "‖ffn_norm‖", "‖feed_forward‖", "‖x‖ after the layer"], rows))


def logits(f):
    from llama_cx.sampling import Sampler, SamplingParams

    out = row(f.tr["output"], -1)
    best = top_k(out, 5)
    rows = [(f.piece(i), f"{out[i]:.3f}", f"{p:.3f}") for i, p in best]
    ids, probs = Sampler(SamplingParams(temperature=0.6, top_p=0.9), f.cfg.vocab_size).distribution(out)
    kept = [(f.piece(i), f"{p:.3f}") for i, p in list(zip(ids, probs))[:5]]
    lens = [(name, "  ".join(f"{f.piece(i)} {p:.2f}" for i, p in top_k(f.lens[name], 3)))
            for name in ["tok_embeddings"] + [f"layers.{l}" for l in f.layers_shown()]]
    return (f"`output` at the last position ({f.cfg.vocab_size} logits), the top 5 and their softmax "
            f"probabilities:\n\n" + _table(["token", "logit", "p"], rows)
            + f"\n\nAfter temperature 0.6 and top-p 0.9 the sampler draws from {len(ids)} token(s): "
            + ", ".join(f"{t} {p}" for t, p in kept)
            + "\n\nThe logit lens (`llama-cx trace` prints it for every layer): the same final norm and output "
              "matrix applied to the residual stream after layer i:\n\n" + _table(["residual", "top 3"], lens))


def prefill(f):
    from llama_cx import _kernels

    fast = llama_cx.trace(f.model, f.ids, engine="fast")
    rows, _ = diff(fast, f.tr)
    worst = max(rows, key=lambda r: r[1])
    bf16 = ""
    if _kernels.avx512bf16_supported() and _kernels.get_isa() == "avx512":
        _kernels.set_bf16_prefill(True)
        try:
            rows16, first16 = diff(llama_cx.trace(f.model, f.ids, engine="fast"), fast)
        finally:
            _kernels.set_bf16_prefill(False)
        e16 = dict(rows16)
        where = f"`{first16}` is the first stage over 1e-3 ({e16[first16]:.1e})" if first16 else "no stage is over 1e-3"
        bf16 = (f"\n\nWith bf16 activations in the prompt block (`--bf16-prefill`) against the same fast forward in "
                f"f32: {where}, and the logits differ by {e16['output']:.1e}. That is the price of the faster "
                f"products, seen layer by layer with `trace-diff`.")
    params = sum(t.numel for t in f.model.checkpoint.tensors.values())
    return (f"A prompt of T tokens is one pass over the weights for all T (matrix-matrix products); each decoded "
            f"token is another whole pass for one. For the demo model one pass reads "
            f"{f.model.weight_bytes_per_token / 1e6:.0f} MB and does ~{2 * params / 1e9:.2f} GFLOP per token "
            f"(2 per weight): decode does 1 FLOP per byte read, a prompt of T tokens T FLOP per byte.\n\n"
            f"The fast forward (prompt in one block, kernel path `{_kernels.get_isa()}` here) against the reference "
            f"(one token at a time, scalar) on `{PROMPT}`: largest relative error {worst[1]:.1e} at `{worst[0]}`, "
            f"logits {dict(rows)['output']:.1e} (`llama-cx trace MODEL --fast` / `trace-diff`)." + bf16)


def kernels(f):
    c = f.cfg
    wb = f.model.weight_bytes_per_token
    rows = [(f"{bw} GB/s", f"{bw * 1e9 / wb:.0f} tok/s") for bw in (10, 25, 50)]
    return (f"Per decoded token the demo model streams {wb / 1e6:.1f} MB of bf16 weights; the largest matrix is the "
            f"output projection, {c.vocab_size} x {c.dim} = {c.vocab_size * c.dim * 2 / 1e6:.1f} MB. Each weight "
            f"(2 bytes) is used for one multiply-add (2 FLOP): decode speed is bounded by memory bandwidth, "
            f"not arithmetic:\n\n" + _table(["read bandwidth", "decode ceiling"], rows)
            + "\n\n(benchmarks/RESULTS.md measures ~25 GB/s per core on the development machine.)")


def quantization(f):
    from llama_cx.formats.gguf import GGUFFile

    if not f.path.endswith(".gguf"):
        return "(not a GGUF model)"
    g = GGUFFile(f.path)
    try:
        counts = {}
        for ti in g.tensor_infos:
            counts[ti.type_name] = counts.get(ti.type_name, 0) + 1
        q = next(ti for ti in g.tensor_infos if ti.type_name == "Q4_1")
        raw = bytes(g.tensor_bytes(q)[:20])
        bits = sum(ti.nbytes for ti in g.tensor_infos) * 8 / sum(ti.numel for ti in g.tensor_infos)
    finally:
        g.close()
    d, m = struct.unpack("<2e", raw[:4])
    qs = raw[4:]
    nib = [b & 15 for b in qs] + [b >> 4 for b in qs]
    w = [d * v + m for v in nib]
    from array import array

    from llama_cx import _kernels

    t = f.model.checkpoint.tensors[_meta_name(q.name)]
    got = array("f", bytes(4 * 32))
    _kernels.to_f32(t.memoryview()[:20], t.dtype, got, 32)  # the Q4_1 row's to_f32 kernel, on the mapped block
    return (f"The demo GGUF: {', '.join(f'{k} x{n}' for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))} "
            f"tensors, {bits:.2f} bits per weight on average. The first Q4_1 block of `{q.name}` (20 bytes for 32 "
            f"weights: 5 bits each):\n\n"
            f"- d = {d:.6g}, m = {m:.6g} (two f16), 4-bit codes: {' '.join(map(str, nib[:16]))} | "
            f"{' '.join(map(str, nib[16:]))}\n"
            f"- w = d x code + m: {' '.join(f'{x:.5f}' for x in w[:8])} …\n"
            f"- read in place by the q4_1 row's to_f32 kernel: {' '.join(f'{x:.5f}' for x in got[:8])} …")


def _meta_name(gguf_name):
    from llama_cx.formats.gguf_llama import meta_name

    return meta_name(gguf_name)


def tracing(f):
    from llama_cx.cli.trace import trace_table

    lines = trace_table(f.model, f.tr, 3)
    keep = lines[:3] + [ln for ln in lines[3:] if ln.split()[0] in ("embed", "norm", "output")
                        or (ln.split()[0].isdigit() and int(ln.split()[0]) in f.layers_shown())]
    return f"$ llama-cx trace -p \"{PROMPT}\" --out demo.npz   (demo model; some layers left out here)\n\n" + _code(keep)


SECTIONS = dict(checkpoint=checkpoint, tokenizer=tokenizer, embedding=embedding, rmsnorm=rmsnorm, rope=rope,
                attention=attention, swiglu=swiglu, logits=logits, prefill=prefill, kernels=kernels,
                quantization=quantization, tracing=tracing)


def fill(text, facts, cache):
    def sub(m):
        name = m.group(2)
        if name not in SECTIONS:
            raise SystemExit(f"gen_numbers: unknown numbers marker {name!r}")
        if name not in cache:
            cache[name] = SECTIONS[name](facts).rstrip() + "\n"
        return m.group(1) + cache[name] + m.group(4)

    return MARK.sub(sub, text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", help="model path (default: the demo model)")
    ap.add_argument("--out", metavar="DIR", help="write the filled pages here instead of in place")
    ap.add_argument("--check", action="store_true", help="only compare: exit 1 when a page would change")
    a = ap.parse_args(argv)
    if a.model is None:
        from llama_cx.demo import demo_model_path

        a.model = demo_model_path()
    facts, cache, stale = Facts(a.model), {}, []
    pages = sorted(p for p in os.listdir(HERE) if p.endswith(".md"))
    for p in pages:
        with open(os.path.join(HERE, p), encoding="utf-8") as fh:
            old = fh.read()
        new = fill(old, facts, cache)
        if a.check:
            if new != old:
                stale.append(p)
            continue
        if a.out or new != old:
            dest = os.path.join(a.out or HERE, p)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w", encoding="utf-8") as fh:
                fh.write(new)
    unused = sorted(set(SECTIONS) - set(cache))
    if unused:
        raise SystemExit(f"gen_numbers: no page has the markers for {', '.join(unused)}")
    if stale:
        print(f"gen_numbers: numbers out of date in {', '.join(stale)}; run python docs/gen_numbers.py")
        return 1
    print(f"gen_numbers: {len(cache)} sections in {len(pages)} pages" + (f" -> {a.out}" if a.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
