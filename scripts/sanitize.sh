#!/usr/bin/env bash
# Build llama_cx's compiled parts with AddressSanitizer + UndefinedBehaviorSanitizer (setup.py's opt-in
# LLAMA_CX_SANITIZE=1) in a copy of the tree -- the normal in-place build is left alone -- and run the
# kernel, model, checkpoint, GGUF, limits, hardening and concurrency tests (and the file-format fuzz targets,
# which run the model on whatever a fuzzed file loads) against it. Then a second copy with ThreadSanitizer
# (LLAMA_CX_SANITIZE=thread) runs the tests where threads share a tokenizer, a model or a context.
#
# ThreadSanitizer and OpenMP: GCC's libgomp is not built with TSan, and its barriers and thread hand-off are
# futex-based, which TSan cannot see; with more than one OpenMP thread every parallel region is reported as a
# race (measured: lcx_forward's shared locals, written before the region and read inside it). With
# OMP_NUM_THREADS=1 libgomp runs each region on the calling thread and makes no threads, so what TSan checks is
# exactly what this job is for: Python threads sharing llama_cx objects (the tokenizer's compiled core, a model's
# weights and scratch, a context's lock). LLVM's libomp with its Archer tool (which tells TSan about OpenMP's
# synchronisation; needs the extension built by clang -fopenmp) would allow more threads: this machine has
# neither clang nor that runtime, so it is not tried here.
#
#   bash scripts/sanitize.sh [extra pytest args]
#
# Environment: PYTHON (default: python, i.e. the active test venv), LCX_SANITIZE_DIR (where the sanitized
# copies are built; default: a temp dir, removed afterwards), JOBS (parallel compile jobs, default 2),
# LCX_TSAN=0 (skip the ThreadSanitizer stage).
# Exit status: 0 when the tests pass with no sanitizer report; non-zero on a failing test, a sanitizer
# report (in this process or any subprocess a test starts), or a build problem.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
JOBS=${JOBS:-2}

CC_BIN=$("$PY" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')
LIBASAN=$("$CC_BIN" -print-file-name=libasan.so)
if [ ! -f "$LIBASAN" ]; then
    echo "sanitize.sh: $CC_BIN has no AddressSanitizer runtime (libasan.so); install it (Debian: libasan8 / gcc)" >&2
    exit 2
fi

if [ -n "${LCX_SANITIZE_DIR:-}" ]; then
    WORK=$LCX_SANITIZE_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/lcx-sanitize-XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
SRC=$WORK/src
LOG=$WORK/pytest.log
mkdir -p "$SRC"

echo "== copying the tree to $SRC"
tar -C "$ROOT" --exclude=./.git --exclude='*.so' --exclude='*.o' --exclude=./build --exclude=./.venv \
    --exclude='__pycache__' --exclude=.pytest_cache --exclude=.hypothesis --exclude=./benchmarks/out \
    -cf - . | tar -C "$SRC" -xf -

echo "== building with -fsanitize=address,undefined ($CC_BIN)"
t0=$(date +%s)
(cd "$SRC" && LLAMA_CX_SANITIZE=1 "$PY" setup.py -q build_ext --inplace --parallel "$JOBS" \
    --build-temp "$WORK/build-temp" > "$WORK/build.log" 2>&1) || { tail -50 "$WORK/build.log"; exit 2; }
echo "   built in $(( $(date +%s) - t0 )) s"

# the tests must import the sanitized copy, and it must really be instrumented
KERNELS=$(cd "$SRC" && LD_PRELOAD=$LIBASAN ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$SRC \
          "$PY" -c 'import llama_cx._kernels as k; print(k.__file__)')
case "$KERNELS" in
    "$SRC"/*) ;;
    *) echo "sanitize.sh: the tests would import $KERNELS, not the sanitized build in $SRC" >&2; exit 2 ;;
esac
SYMBOLS=$(nm -D "$KERNELS")
if ! grep -q __asan_init <<< "$SYMBOLS" || ! grep -q __ubsan_handle <<< "$SYMBOLS"; then
    echo "sanitize.sh: $KERNELS is not instrumented (no __asan_init/__ubsan_handle_*); was LLAMA_CX_SANITIZE honoured?" >&2
    exit 2
fi

TESTS=(tests/test_kernels.py tests/test_quants.py tests/test_model_reference.py tests/test_checkpoint.py
       tests/test_checkpoint_errors.py tests/test_gguf.py tests/test_limits.py tests/test_concurrency.py tests/test_hardening.py
       "tests/test_fuzz.py::test_fuzz_target[pth]" "tests/test_fuzz.py::test_fuzz_target[gguf]")

echo "== running the tests under ASan + UBSan (LD_PRELOAD=$LIBASAN)"
set +e
(
    cd "$SRC"
    # detect_leaks=0: CPython does not free everything at exit. allocator_may_return_null=1: a request the
    # tests make on purpose (a 2^40-position KV cache) must fail as malloc does, with NULL, not abort.
    # halt_on_error: the first report ends the process with a non-zero status.
    export LD_PRELOAD=$LIBASAN
    export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONFAULTHANDLER=1
    "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" "$@"
) 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

# (a report from a subprocess may reach the log only in part, inside a test's assertion message)
if grep -q -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer|runtime error:|==[0-9]+==ABORTING" "$LOG"; then
    echo "sanitize.sh: sanitizer report(s) above (log: $LOG)" >&2
    [ -z "${LCX_SANITIZE_DIR:-}" ] && cp "$LOG" "${TMPDIR:-/tmp}/lcx-sanitize.log" && echo "log kept in ${TMPDIR:-/tmp}/lcx-sanitize.log" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize.sh: tests failed under the sanitizers (exit status $status)" >&2
    exit "$status"
fi
echo "== no ASan/UBSan reports; tests passed"

# ---- ThreadSanitizer: Python threads sharing a tokenizer, a model, a context ---------------------------------------
LIBTSAN=$("$CC_BIN" -print-file-name=libtsan.so)
if [ "${LCX_TSAN:-1}" = "0" ]; then
    echo "== ThreadSanitizer stage skipped (LCX_TSAN=0)"
    exit 0
fi
if [ ! -f "$LIBTSAN" ]; then
    echo "sanitize.sh: $CC_BIN has no ThreadSanitizer runtime (libtsan.so); install it (Debian: libtsan2) or set LCX_TSAN=0" >&2
    exit 2
fi
TSRC=$WORK/src-tsan
TLOG=$WORK/tsan
mkdir -p "$TSRC" "$TLOG"
tar -C "$SRC" --exclude='*.so' --exclude='*.o' --exclude='__pycache__' -cf - . | tar -C "$TSRC" -xf -
echo "== building with -fsanitize=thread ($CC_BIN)"
(cd "$TSRC" && LLAMA_CX_SANITIZE=thread "$PY" setup.py -q build_ext --inplace --parallel "$JOBS" \
    --build-temp "$WORK/build-temp-tsan" > "$WORK/build-tsan.log" 2>&1) || { tail -50 "$WORK/build-tsan.log"; exit 2; }
KERNELS=$(cd "$TSRC" && LD_PRELOAD=$LIBTSAN PYTHONPATH=$TSRC "$PY" -c 'import llama_cx.tokenizers._bpe as k; print(k.__file__)')
case "$KERNELS" in
    "$TSRC"/*) ;;
    *) echo "sanitize.sh: the TSan tests would import $KERNELS, not the build in $TSRC" >&2; exit 2 ;;
esac
nm -D "$KERNELS" | grep -q __tsan_init || { echo "sanitize.sh: $KERNELS is not built with TSan" >&2; exit 2; }

echo "== running the thread tests under ThreadSanitizer (OMP_NUM_THREADS=1; see the top of this file)"
set +e
(
    cd "$TSRC"
    export LD_PRELOAD=$LIBTSAN
    # a report anywhere (this process or a CLI subprocess) goes to $TLOG/report.<pid> and fails the job
    export TSAN_OPTIONS=halt_on_error=1:exitcode=66:log_path=$TLOG/report
    export OMP_NUM_THREADS=1
    export PYTHONPATH=$TSRC${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -m pytest -q -p no:cacheprovider tests/test_hardening.py -k thread \
        "tests/test_concurrency.py::test_contexts_interleaved_in_one_thread" "$@"
) 2>&1 | tee "$WORK/pytest-tsan.log"
status=${PIPESTATUS[0]}
set -e
if ls "$TLOG"/report.* > /dev/null 2>&1; then
    cat "$TLOG"/report.* >&2
    echo "sanitize.sh: ThreadSanitizer report(s) above" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize.sh: thread tests failed under ThreadSanitizer (exit status $status)" >&2
    exit "$status"
fi
echo "== no sanitizer reports; tests passed"
