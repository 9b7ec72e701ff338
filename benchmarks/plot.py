"""Bar charts of decode and prefill throughput per engine, model and thread count (matplotlib optional)."""
from __future__ import annotations


def plot(report: dict, path: str):
    """Write a PNG to `path`. Returns (path, None), or (None, reason) when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "matplotlib is not installed (pip install matplotlib)"
    rows = [r for r in report["results"] if r.get("decode_tps")]
    if not rows:
        return None, "no engine produced numbers"
    groups = []  # (model, threads) in first-seen order
    for r in rows:
        if (r["model"], r["threads"]) not in groups:
            groups.append((r["model"], r["threads"]))
    engines = []
    for r in rows:
        if r["engine"] not in engines:
            engines.append(r["engine"])
    by = {(r["model"], r["threads"], r["engine"]): r for r in rows}
    prompts = [str(n) for n in report["settings"]["prompts"]]
    panels = [("decode tok/s", lambda r: r.get("decode_tps"))]
    panels += [(f"prefill {n} tok/s", (lambda n: lambda r: r.get("prefill_tps", {}).get(n))(n)) for n in prompts]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    width = 0.8 / len(engines)
    for ax, (title, get) in zip(axes[0], panels):
        for j, eng in enumerate(engines):
            xs, ys = [], []
            for i, (model, t) in enumerate(groups):
                r = by.get((model, t, eng))
                if r is not None and get(r):
                    xs.append(i + (j - (len(engines) - 1) / 2) * width)
                    ys.append(get(r))
            ax.bar(xs, ys, width, label=eng)
        if title.startswith("decode"):  # decode roofline: bandwidth / weight bytes per token (bf16)
            for i, (model, t) in enumerate(groups):
                roof = [by[(model, t, e)].get("roofline_tps") for e in ("llama_cx", "torch-bf16", "llama.cpp")
                        if (model, t, e) in by]
                if roof and roof[0]:
                    ax.hlines(roof[0], i - 0.45, i + 0.45, colors="k", linestyles="dashed",
                              label="bf16 roofline" if i == 0 else None)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{m}\n{t} thr" for m, t in groups])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    m = report["machine"]
    fig.suptitle(f"llama_cx vs peers ({report['mode']} mode) on {m.get('cpu', '?')}, {m['cores']} cores", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, None
