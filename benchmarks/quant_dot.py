"""Read bandwidth of the quantized row-dot kernels (decode's matrix-vector products) next to a plain read.

    python -m benchmarks.quant_dot [--mib 768] [--rows 4096] [--cols 4096] [--reps 5] [--types Q4_K,Q8_0]
                                   [--isas avx512vnni,avx2] [--threads 1,2]

A pool of --mib MiB of weights (bigger than the last-level cache: every pass streams from DRAM) is cut into
(rows, cols) matrices of each type; one pass runs the kernel over every matrix of the pool against one
quantized activation vector, as decode does once per token. Effective GB/s = weight bytes / time of a pass;
best and median of --reps passes. The plain read is benchmarks/stream.c (a uint64 sum over the same MiB)
with the same thread counts, and the existing bf16 matvec (lcx_linear) over a bf16 pool of the same size is
shown for reference. Prints a table; nothing is asserted (benchmarks are not tests).

    python -m benchmarks.quant_dot --nx 1,2,4,8 [--types ...] [--isas ...] [--reps 30]

The multi-vector kernel (dotn, continuous batching): per type, path and SmolLM2 shape (576x576, 1536x576,
576x1536, 49152x576; the K-quants at 1536x1536 and 1536x4096, whose rows must be multiples of 256), one
core, the time of one dotn call over nx activation vectors against nx calls of dot (dotn with nx = 1), with
the weights in L2 (one matrix, called again and again) and beyond it (a pool of --l3-mib MiB of copies, in
L3 on a big-L3 server, else DRAM). Best of --reps passes; the ~us of the Python call measured on a one-block
product and taken off every call; speedup = nx x t(dot) / t(dotn).
"""
import argparse
import statistics
import time

import numpy as np

from llama_cx import _kernels as K

from . import machine

F16_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def weight_pool(qtype: str, rows: int, cols: int, mib: int, rng) -> "tuple[np.ndarray, int, int]":
    """(pool (n_mats, rows * row_bytes) uint8, row_bytes, n_mats): random quants, f16 scales of ~1e-2
    (normal f32 products: no denormal slow paths)."""
    block, nbytes, _ = K.quant_block(qtype)
    row_bytes = cols // block * nbytes
    n_mats = max(1, (mib << 20) // (rows * row_bytes))
    pool = rng.integers(0, 256, size=(n_mats * rows * (cols // block), nbytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        pool[:, off:off + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    return pool.reshape(n_mats, rows * row_bytes), row_bytes, n_mats


def time_passes(run_pass, reps: int) -> "list[float]":
    run_pass()  # warm-up: page faults, thread start
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run_pass()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=768)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--types", default="Q4_K,Q8_0,Q4_0,Q6_K,Q5_K,Q5_0")
    ap.add_argument("--isas", default=",".join(i for i in K.QUANT_ISAS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 reference rows")
    ap.add_argument("--nx", default="", help="e.g. 1,2,4,8: time dotn over nx vectors against nx dot calls")
    ap.add_argument("--l3-mib", type=int, default=64, help="pool size for the beyond-L2 column of --nx")
    a = ap.parse_args(argv)
    if a.nx:
        return bench_nx(a)
    threads = [int(t) for t in a.threads.split(",")]
    isas = [i for i in a.isas.split(",") if K.quant_isa_supported(i)]
    rng = np.random.default_rng(0)
    print(f"pool {a.mib} MiB of ({a.rows}, {a.cols}) matrices; best / median of {a.reps} passes; GB/s of weights")

    exe, note = machine.compile_stream(print)
    read = {}
    for t in threads:
        r = machine.probe_bandwidth(exe, t, a.mib, a.reps) if exe else {"error": note}
        read[t] = r.get("best_gbs")
        print(f"plain read (stream.c), {t} thread{'s' if t > 1 else ''}: "
              + (f"{r['best_gbs']:.1f} GB/s" if "best_gbs" in r else r["error"]))

    x = rng.standard_normal(a.cols).astype(np.float32)
    print(f"{'type':6} {'path':11} " + " ".join(f"{f'{t} thr best/med':>18} {'of read':>7}" for t in threads))
    for qtype in a.types.split(","):
        pool, row_bytes, n_mats = weight_pool(qtype, a.rows, a.cols, a.mib, rng)
        _, _, act = K.quant_block(qtype)
        xq = K.quantize_act(act, x)
        t0 = time.perf_counter()
        for _ in range(1000):
            K.quantize_act(act, x)
        q_us = (time.perf_counter() - t0) * 1e3
        mats = [memoryview(pool[i]) for i in range(n_mats)]
        for isa in isas:
            cells = []
            for t in threads:
                def run_pass():
                    for m in mats:
                        K.dot_rows(qtype, isa, m, row_bytes, xq, a.rows, a.cols, t)
                secs = time_passes(run_pass, a.reps)
                gbs = [pool.nbytes / s / 1e9 for s in secs]
                best, med = max(gbs), statistics.median(gbs)
                frac = f"{best / read[t]:.0%}" if read.get(t) else "-"
                cells.append(f"{best:8.1f} / {med:6.1f}   {frac:>7}")
            print(f"{qtype:6} {isa:11} " + " ".join(cells), flush=True)
        print(f"{'':6} quantize_act {act} of {a.cols} floats (Python call included): {q_us:.2f} us")
        del pool, mats

    if not a.no_bf16:  # the existing bf16 decode kernel on the same number of bytes
        n_mats = max(1, (a.mib << 20) // (a.rows * a.cols * 2))
        pool = rng.integers(0x3C00, 0x3E00, size=(n_mats, a.rows * a.cols), dtype=np.uint16)
        y = np.empty(a.rows, np.float32)
        old = K.get_num_threads()
        cells = []
        for t in threads:
            K.set_num_threads(t)

            def run_pass():
                for i in range(n_mats):
                    K.linear(pool[i], "bf16", x, y, a.rows, a.cols, 1)
            gbs = [pool.nbytes / s / 1e9 for s in time_passes(run_pass, a.reps)]
            frac = f"{max(gbs) / read[t]:.0%}" if read.get(t) else "-"
            cells.append(f"{max(gbs):8.1f} / {statistics.median(gbs):6.1f}   {frac:>7}")
        K.set_num_threads(old)
        print(f"{'bf16':6} {K.get_isa() + ' f32x':11} " + " ".join(cells))


SMOL_SHAPES = [(576, 576), (1536, 576), (576, 1536), (49152, 576)]
K_SHAPES = [(1536, 1536), (576, 4096), (4096, 1536)]


def bench_nx(a):
    nxs = [int(v) for v in a.nx.split(",")]
    isas = [i for i in a.isas.split(",") if K.quant_isa_supported(i)]
    rng = np.random.default_rng(0)
    reps = max(a.reps, 5)

    def best(fn):
        fn()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return min(out)

    print(f"dotn against nx dot calls, one core, best of {reps}; us per call with the Python call taken off")
    for qtype in a.types.split(","):
        block, nbytes, act = K.quant_block(qtype)
        shapes = SMOL_SHAPES if block == 32 else K_SHAPES
        for isa in isas:
            one = weight_pool(qtype, 1, block, 1, rng)[0][0][:nbytes]
            x1 = K.quantize_act(act, np.ones(block, np.float32))
            overhead = best(lambda: K.dot_rows_n(qtype, isa, one, nbytes, x1, 1, 1, block))
            for rows, cols in shapes:
                row_bytes = cols // block * nbytes
                x = {nx: b"".join(K.quantize_act(act, rng.standard_normal(cols).astype(np.float32)) for _ in range(nx))
                     for nx in nxs}
                mat_bytes = rows * row_bytes
                n_pool = max(1, (a.l3_mib << 20) // mat_bytes)
                pool, _, _ = weight_pool(qtype, rows, cols, max(1, (n_pool * mat_bytes) >> 20), rng)
                mats = [memoryview(pool[i]) for i in range(pool.shape[0])]
                hot = "hot L2" if mat_bytes <= (1 << 20) else "hot L3"  # one matrix again and again
                for where, ms in ((hot, mats[:1]), (f"pool {pool.nbytes >> 20}M", mats)):
                    if where.startswith("pool") and len(mats) < 2:
                        continue
                    t1 = None
                    cells = []
                    for nx in nxs:
                        def run(nx=nx):
                            for m in ms:
                                K.dot_rows_n(qtype, isa, m, row_bytes, x[nx], nx, rows, cols)
                        t = (best(run) - len(ms) * overhead) / len(ms)
                        if nx == 1:
                            t1 = t
                        sp = f" x{nx * t1 / t:.2f}" if t1 else ""
                        cells.append(f"nx={nx} {t * 1e6:8.1f} us{sp}")
                    print(f"{qtype:5} {isa:10} {rows:5}x{cols:<5} {where:10} " + "  ".join(cells), flush=True)
                del pool, mats


if __name__ == "__main__":
    main()
