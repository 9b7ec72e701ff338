"""`llama-cx trace` and `llama-cx trace-diff`: look inside the forward pass (llama_cx/trace.py does the work).

    llama-cx trace MODEL -p TEXT [--out FILE.npz] [--stages S,..] [--layers 0,3,5-7] [--against OTHER] [--fast]
    llama-cx trace-diff A.npz B.npz [--tol X] [--plot FILE.png]

`trace` prints, per layer, the norm of each stage's vector for the last prompt token and the logit lens (the
tokens the residual stream would predict if the model stopped after that layer); `trace-diff` prints the
relative error ||a-b||/||b|| of every stage two traces share and the first one that crosses a tolerance.
"""
from __future__ import annotations

import math
import sys
from typing import List

from .._text import show
from ..trace import (FAST_STAGES, LAYER_STAGES, STAGES, Trace, array_name, diff, load_npz, logit_lens, norm2,
                    parse_layers, parse_stages, row, save_npz, stage_names, top_k, trace)
from ..errors import InvalidArgumentError
from .common import PROG

_SHORT = {"attention_norm": "attn_norm", "attention": "attention", "ffn_norm": "ffn_norm",
          "feed_forward": "feed_fwd", "residual": "residual"}


def _float(s):
    import argparse

    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {s!r}")
    return v


def _top(s):
    import argparse

    try:
        v = int(s)
    except ValueError:
        v = -1
    if not 0 <= v <= 20:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..20, got {s!r}")
    return v


def add_parsers(subs: dict, parser_cls, common) -> None:
    """Add the `trace` and `trace-diff` parsers to subs (name -> parser); common: the shared options parent."""
    p = subs["trace"] = parser_cls(
        prog=f"{PROG} trace", parents=[common],
        description="Run a prompt through the reference forward pass and keep every stage of every layer "
                    "(float32 [T, ...], named after Meta's modules); print a table per layer with the norm of each "
                    "stage and the logit lens.")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="checkpoint directory, .pth or .gguf (default: $LLAMA_CX_MODEL, else the demo model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="the prompt ('-' reads stdin); BOS as the tokenizer asks")
    src.add_argument("--ids", metavar="I,J,..", help="token ids instead of a prompt")
    p.add_argument("--out", metavar="FILE.npz", help="write the trace (np.load reads it)")
    p.add_argument("--stages", metavar="S,..", help=f"keep only these stages: {', '.join(STAGES)} "
                                                    "(residual = the layers.{i} arrays)")
    p.add_argument("--layers", metavar="L,..", help="keep only these layers, e.g. 0,3,5-7 or -1 (the last)")
    p.add_argument("--against", metavar="OTHER_MODEL", help="trace another model on the same ids and diff the two")
    p.add_argument("--fast", action="store_true",
                   help="trace the fast forward instead (ISA and bf16 switches in effect): residual stream and "
                        "logits only")
    p.add_argument("--tol", type=_float, default=1e-3, metavar="X", help="with --against: tolerance (default 1e-3)")
    p.add_argument("--top", type=_top, default=3, metavar="K", help="logit-lens tokens per layer (default 3, 0 = none)")
    p.set_defaults(func=cmd_trace)

    p = subs["trace-diff"] = parser_cls(
        prog=f"{PROG} trace-diff", parents=[common],
        description="Relative error ||a-b||/||b|| per stage and layer of two traces (B is the reference), and "
                    "the first stage that crosses the tolerance.")
    p.add_argument("a", metavar="A.npz")
    p.add_argument("b", metavar="B.npz")
    p.add_argument("--tol", type=_float, default=1e-3, metavar="X", help="tolerance (default 1e-3)")
    p.add_argument("--plot", metavar="FILE.png", help="also plot the errors per layer (needs matplotlib)")
    p.set_defaults(func=cmd_trace_diff, model=None)


# ---- trace --------------------------------------------------------------------------------------------------------
def _ids(args, model) -> List[int]:
    if args.ids is not None:
        try:
            return [int(s) for s in args.ids.replace(" ", "").split(",") if s]
        except ValueError:
            raise InvalidArgumentError(f"--ids: expected comma-separated integers, got {args.ids!r}") from None
    from .common import read_prompt

    tok = model.require_tokenizer()
    return tok.encode(read_prompt(args), bos=bool(tok.add_bos))


def _piece(model, i: int, width: int = 12) -> str:
    """A token as the terminal shows it: its text repr'd (quotes show spaces), or #id without a tokenizer."""
    if model.tokenizer is None:
        return f"#{i}"
    try:
        s = repr(model.tokenizer.decode([i]))
    except Exception:  # a special id the decoder will not show: fall back to the number
        return f"#{i}"
    return s if len(s) <= width else s[:width - 2] + "…" + s[-1]


def trace_table(model, tr: Trace, top: int = 3) -> List[str]:
    """The terminal table: per layer the norm of each stage for the last token, and the logit lens there."""
    cfg = model.config
    T = len(tr["tokens"])
    lens = logit_lens(model, tr, -1) if top else {}
    out = [f"{T} tokens: " + " ".join(_piece(model, i) for i in tr["tokens"][:24]) + (" …" if T > 24 else "")]
    out.append(f"norms ||x|| of the last token's vectors (position {T - 1}); logit lens: top {top} of "
               f"output(norm(residual)) there")
    header = f"{'layer':>6} " + " ".join(f"{_SHORT[s]:>10}" for s in LAYER_STAGES) + "   logit lens"
    out.append(header)

    def lens_cell(name):
        if name not in lens:
            return ""
        return "  ".join(f"{_piece(model, i)} {p:.2f}" for i, p in top_k(lens[name], top))

    if "tok_embeddings" in tr:
        v = norm2(row(tr["tok_embeddings"], -1))
        out.append(f"{'embed':>6} " + " ".join(" " * 10 for _ in LAYER_STAGES[:-1]) + f" {v:>10.4g}   "
                   + lens_cell("tok_embeddings"))
    for i in range(cfg.n_layers):
        names = [array_name(s, i) for s in LAYER_STAGES]
        if not any(n in tr for n in names):
            continue
        cells = [f"{norm2(row(tr[n], -1)):>10.4g}" if n in tr else f"{'-':>10}" for n in names]
        out.append(f"{i:>6} " + " ".join(cells) + "   " + lens_cell(f"layers.{i}"))
    if "norm" in tr:
        out.append(f"{'norm':>6} {norm2(row(tr['norm'], -1)):>10.4g}")
    if "output" in tr and top:
        best = top_k(row(tr["output"], -1), top)
        out.append(f"{'output':>6} next token: " + "  ".join(f"{_piece(model, i)} {p:.2f}" for i, p in best))
    return out


def _trace_for_cli(model, ids, args) -> Trace:
    """The trace to save (filters applied) plus what the table needs (residuals, logits) of the same layers."""
    engine = "fast" if args.fast else "reference"
    if args.stages is None:
        return trace(model, ids, layers=args.layers, engine=engine)
    keep = parse_stages(args.stages)
    want = list(dict.fromkeys(keep + ["tok_embeddings", "residual", "output"]))
    if engine == "fast":
        want = [s for s in want if s in FAST_STAGES]
    full = trace(model, ids, stages=want, layers=args.layers, engine=engine)
    full.saved = [n for n in stage_names(model.config.n_layers, keep, args.layers) if n in full]
    return full


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def cmd_trace(args) -> int:
    from ..model import load
    from .common import load_model, model_path

    model = load_model(args)
    ids = _ids(args, model)
    # every argument checked before the (slow) forward pass and its progress line
    keep = parse_stages(args.stages)
    if args.fast and args.stages is not None and any(s not in FAST_STAGES for s in keep):
        bad = next(s for s in keep if s not in FAST_STAGES)
        raise InvalidArgumentError(f"--fast cannot observe stage {bad!r} (only {', '.join(FAST_STAGES)})")
    parse_layers(args.layers, model.config.n_layers)
    if not ids:
        raise InvalidArgumentError("no tokens to trace (empty prompt)")
    bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
    if bad:
        raise InvalidArgumentError(f"token id {bad[0]} out of range [0, {model.config.vocab_size})")
    what = "the fast forward" if args.fast else "the reference forward (scalar, one token at a time)"
    sys.stderr.write(f"{PROG}: tracing {len(ids)} tokens through {what}\n")
    tr = _trace_for_cli(model, ids, args)
    for line in trace_table(model, tr, args.top):
        _say(line)
    if args.out:
        names = getattr(tr, "saved", list(tr))
        save_npz(args.out, {n: tr[n] for n in names})
        sys.stderr.write(f"{PROG}: wrote {len(names)} arrays to {show(args.out)}\n")
    if args.against:
        other = load(args.against, huge_pages=args.huge_pages)
        if other.config.vocab_size != model.config.vocab_size or other.config.dim != model.config.dim:
            raise InvalidArgumentError(f"{args.against}: dim/vocab {other.config.dim}/{other.config.vocab_size} differ "
                                       f"from {model_path(args, True)}'s {model.config.dim}/{model.config.vocab_size}")
        tb = _trace_for_cli(other, ids, args)
        _say(f"\n{show(model_path(args, True))} against {show(args.against)} (relative error ||a-b||/||b||):")
        _print_diff(tr, tb, args.tol)
    return 0


# ---- trace-diff ---------------------------------------------------------------------------------------------------
def diff_table(rows, first, tol: float, n_layers: int) -> List[str]:
    """Rows: layers; columns: the per-layer stages; other stages on lines of their own. '!' marks errors > tol."""
    err = dict(rows)

    def cell(name):
        if name not in err:
            return f"{'-':>10}"
        e = err[name]
        return f"{e:>9.2e}{'!' if not e <= tol else ' '}"

    out = [f"{'layer':>6} " + " ".join(f"{_SHORT[s]:>10}" for s in LAYER_STAGES)]
    if "tok_embeddings" in err:
        out.append(f"{'embed':>6} " + " " * 44 + cell("tok_embeddings"))
    for i in range(n_layers):
        names = [array_name(s, i) for s in LAYER_STAGES]
        if any(n in err for n in names):
            out.append(f"{i:>6} " + " ".join(cell(n) for n in names))
    for n in ("norm", "output"):
        if n in err:
            out.append(f"{n:>6} {cell(n)}")
    if first is None:
        out.append(f"no stage crosses the tolerance {tol:g} (largest {max(err.values()):.2e} at "
                   f"{max(err, key=err.get)})")
    else:
        out.append(f"first stage over {tol:g}: {first} (relative error {err[first]:.2e})")
    return out


def _n_layers(names) -> int:
    idx = [int(n.split(".")[1]) for n in names if n.startswith("layers.") and n.split(".")[1].isdigit()]
    return max(idx) + 1 if idx else 0


def _print_diff(a, b, tol: float):
    rows, first = diff(a, b, tol)
    for line in diff_table(rows, first, tol, _n_layers(a)):
        _say(line)
    return rows, first


def plot_diff(rows, tol: float, path: str, title: str) -> bool:
    """Relative error against layer, one line per stage (log scale); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    err = dict(rows)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    n = _n_layers(err)
    for s in LAYER_STAGES:
        pts = [(i, err[array_name(s, i)]) for i in range(n) if array_name(s, i) in err]
        if pts:
            ax.plot([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], marker="o", ms=3, label=_SHORT[s])
    ax.axhline(tol, color="red", ls="--", lw=1, label=f"tol {tol:g}")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("||a-b|| / ||b||")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def cmd_trace_diff(args) -> int:
    a, b = load_npz(args.a), load_npz(args.b)
    _say(f"{show(args.a)} against {show(args.b)} (relative error ||a-b||/||b||, '!' over {args.tol:g}):")
    rows, _ = _print_diff(a, b, args.tol)
    if args.plot:
        if plot_diff(rows, args.tol, args.plot, f"{args.a} vs {args.b}"):
            sys.stderr.write(f"{PROG}: wrote {show(args.plot)}\n")
        else:
            sys.stderr.write(f"{PROG}: --plot needs matplotlib (pip install matplotlib); table only\n")
    return 0
