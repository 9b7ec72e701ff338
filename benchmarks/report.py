"""Derived numbers and the tables: effective bandwidth and roofline per row, greedy agreement between
engines, the printed table, results.md, and the llama_cx / peer ratios."""
from __future__ import annotations

from .worker import PREFILL_BUDGET_S, PREFILL_MAX_RUNS, TTFT_PROMPT


def derive(row: dict, bandwidth: dict) -> None:
    """Effective GB/s, fraction of the measured read bandwidth, decode roofline."""
    wb, tps = row.get("weight_bytes_per_token"), row.get("decode_tps")
    bw = row.get("bw_gbs") or bandwidth.get("gbs", {}).get(str(row["threads"]))
    if bw and "absent" not in row and "failed" not in row:
        row["bw_gbs"] = bw
    if wb and tps:
        row["effective_gbs"] = wb * tps / 1e9
        if bw:
            row["bw_fraction"] = row["effective_gbs"] / bw
    if wb and bw:
        row["roofline_tps"] = bw * 1e9 / wb


ROUND_METRICS = ("import_s", "load_s", "ttft_s", "decode_tps", "bw_gbs", "other_cpu_cores")


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def combine_rounds(rows: list) -> dict:
    """One row from the rounds of one (engine, model, threads): every measured number is the median over the
    rounds that measured it (greedy ids and RSS come from the round with the median decode); the per-round
    numbers stay in `per_round` for the ratios and the record."""
    done = [r for r in rows if "decode_tps" in r]
    if len(rows) == 1 or not done:
        return rows[0]
    done.sort(key=lambda r: r["decode_tps"])
    out = dict(done[(len(done) - 1) // 2])
    for k in ROUND_METRICS:
        vals = [r[k] for r in done if r.get(k) is not None]
        if vals:
            out[k] = _median(vals)
    out["prefill_tps"] = {n: _median([r["prefill_tps"][n] for r in done if n in r.get("prefill_tps", {})])
                          for n in out.get("prefill_tps", {})}
    out["per_round"] = [{"round": r.get("round"), "decode_tps": r["decode_tps"], "prefill_tps": r.get("prefill_tps", {})}
                        for r in sorted(done, key=lambda r: r.get("round") or 0)]
    out["rounds"] = len(done)
    out.pop("round", None)
    for k in ("effective_gbs", "bw_fraction", "roofline_tps"):
        out.pop(k, None)
    return out


def greedy_agreement(rows: list) -> None:
    """Per (model, threads): how many leading greedy ids each engine shares with a reference engine."""
    order = ("torch-fp32", "torch-bf16", "llama_cx", "llama.cpp")
    groups = {}
    for r in rows:
        if r.get("greedy_ids"):
            groups.setdefault((r["model"], r["threads"]), {})[r["engine"]] = r
    for g in groups.values():
        ref_name = next(e for e in order if e in g)
        ref = g[ref_name]["greedy_ids"]
        for r in g.values():
            n = 0
            for a, b in zip(r["greedy_ids"], ref):
                if a != b:
                    break
                n += 1
            r["agree"] = f"{n}/{len(ref)}" if r["engine"] != ref_name else "ref"
            r["agree_ref"] = ref_name


COLUMNS = [
    ("engine", "engine", "{}"), ("model", "model", "{}"), ("thr", "threads", "{}"),
    ("import s", "import_s", "{:.2f}"), ("load ms", "load_s", "{:.0f}", 1e3), ("TTFT ms", "ttft_s", "{:.0f}", 1e3),
    ("prefill128 tok/s", "prefill_tps.128", "{:.1f}"), ("prefill512 tok/s", "prefill_tps.512", "{:.1f}"),
    ("decode tok/s", "decode_tps", "{:.2f}"), ("eff GB/s", "effective_gbs", "{:.1f}"),
    ("BW GB/s", "bw_gbs", "{:.1f}"), ("% of BW", "bw_fraction", "{:.0f}%", 100),
    ("roofline tok/s", "roofline_tps", "{:.1f}"),
    ("peak RSS GB", "peak_rss", "{:.2f}", 1e-9), ("greedy agree", "agree", "{}"),
    ("other load", "other_cpu_cores", "{:.2f}"),
]


def cell(row, key, fmt, scale=None):
    v = row
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    if v is None:
        return "-"
    if scale is not None:
        v = v * scale
    return fmt.format(v)


def table_rows(rows):
    header = [c[0] for c in COLUMNS]
    body = []
    for r in rows:
        if "absent" in r or "failed" in r:
            why = ("absent: " + r["absent"]) if "absent" in r else ("failed: " + r["failed"])
            body.append([r["engine"], r["model"], str(r["threads"]), why])
        else:
            body.append([cell(r, c[1], c[2], c[3] if len(c) > 3 else None) for c in COLUMNS])
    return header, body


def format_text_table(rows) -> str:
    header, body = table_rows(rows)
    full = [b for b in body if len(b) == len(header)]
    widths = [max(len(x) for x in col) for col in zip(header, *full)] if full else [len(h) for h in header]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    for b in body:
        if len(b) == len(header):
            lines.append("  ".join(x.rjust(w) for x, w in zip(b, widths)))
        else:
            lines.append("  ".join(x.rjust(w) for x, w in zip(b[:3], widths)) + "  " + b[3])
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    rows = report["results"]
    header, body = table_rows(rows)
    m = report["machine"]
    out = [f"# llama_cx benchmarks ({report['mode']} mode)", "",
           f"- date: {report['date']}", f"- command: `{report['command']}`",
           f"- CPU: {m.get('cpu', '?')}, {m['cores']} cores usable, ISA: {', '.join(m.get('isa', []))}, "
           f"RAM {m.get('mem_total_gb', '?')} GB",
           f"- versions: python {m['python']}, torch {m.get('torch_version', 'absent')}, "
           f"llama-cpp-python {m.get('llama_cpp_version', 'absent')}, llama_cx engine digest {m.get('llama_cx_source')}"]
    bw = report["bandwidth"]
    if bw.get("gbs"):
        out.append("- read bandwidth (" + bw["probe"] + "): "
                   + ", ".join(f"{t} thr {g:.1f} GB/s" for t, g in bw["gbs"].items()))
    else:
        out.append(f"- read bandwidth: absent ({bw.get('absent')})")
    s = report["settings"]
    out += [f"- per run: TTFT on a {TTFT_PROMPT}-token prompt, prefill {s['prompts']} tokens (best of "
            f"{s['reps']}, or of up to {PREFILL_MAX_RUNS} while they take under {PREFILL_BUDGET_S:g} s), decode {s['n_decode']} greedy tokens after a {TTFT_PROMPT}-token prompt; "
            "weights read from the page cache; 'other load' = cores other processes kept busy meanwhile"
            + (f"; each row is the median of {s['rounds']} rounds, run in alternating engine order, and each "
               "ratio the ratio of medians with the spread of the same-round ratios" if s.get("rounds", 1) > 1 else ""),
            ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for b in body:
        if len(b) == len(header):
            out.append("| " + " | ".join(b) + " |")
        else:
            out.append("| " + " | ".join(b[:3]) + " | " + b[3] + " |" + " |" * (len(header) - 4))
    ratios = ratio_lines(rows)
    if ratios:
        out += ["", "llama_cx / peer (higher is better for llama_cx):", ""] + ratios
    if report.get("tokenizer"):
        out += ["", "Tokenizer (encode, one thread): " + tokenizer_line(report["tokenizer"])]
    if report.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


OURS = ("llama_cx", "llama_cx-bf16pf", "llama_cx-bf16", "llama_cx-hp")


def ratio_lines(rows) -> list:
    """llama_cx (and its bf16-prefill variant) against each peer of the same model and thread count."""
    lines = []
    for name in OURS:
        ours = {(r["model"], r["threads"]): r for r in rows if r["engine"] == name and "decode_tps" in r}
        for r in rows:
            base = ours.get((r["model"], r["threads"]))
            if r["engine"] in OURS or base is None or "decode_tps" not in r:
                continue
            parts = [f"decode {base['decode_tps'] / r['decode_tps']:.2f}x" + _round_ratios(base, r, "decode_tps")]
            for n, v in r.get("prefill_tps", {}).items():
                if n in base.get("prefill_tps", {}):
                    parts.append(f"prefill{n} {base['prefill_tps'][n] / v:.2f}x" + _round_ratios(base, r, "prefill_tps", n))
            if r.get("ttft_s") and base.get("ttft_s"):
                parts.append(f"TTFT {r['ttft_s'] / base['ttft_s']:.2f}x")
            lines.append(f"- {name}, {r['model']}, {r['threads']} thr, vs {r['engine']}: " + ", ".join(parts))
    return lines


def _round_ratios(base: dict, peer: dict, key: str, sub=None) -> str:
    """ " (rounds 0.91-1.02x)": the spread of the same-round ratios, when both rows have several rounds."""
    a, b = base.get("per_round", []), peer.get("per_round", [])
    ratios = []
    for x in a:
        y = next((y for y in b if y["round"] == x["round"]), None)
        vx, vy = (x.get(key), y.get(key)) if y else (None, None)
        if sub is not None:
            vx, vy = (vx or {}).get(sub), (vy or {}).get(sub)
        if vx and vy:
            ratios.append(vx / vy)
    return f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x)" if len(ratios) > 1 else ""


def tokenizer_line(t: dict) -> str:
    if "ours_mb_s" not in t:
        return "; ".join(f"{k}: {v}" for k, v in t.items())
    line = (f"llama_cx {t['ours_mb_s']} MB/s vs tiktoken {t['tiktoken_mb_s']} MB/s = {t['ratio']}x on "
            f"{t['text_mb']} MB of prose + code (Llama 3 tokenizer, core {t.get('core')}, same ids: {t.get('same_ids')})")
    if "gguf_mb_s" in t:
        line += f"; SmolLM2 GGUF tokenizer {t['gguf_mb_s']} MB/s"
    return line

