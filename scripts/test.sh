#!/usr/bin/env bash
# Install llama_cx and everything its tests need, then run the test suite.
#   bash scripts/test.sh [pytest args]
# Uses the active virtualenv, or creates ./.venv. Test-only dependencies: torch==2.13.0 (CPU build; installed
# first, or pip would pull a multi-GB CUDA build), fairscale (Meta's reference model), tiktoken,
# transformers + gguf (independent readers), numpy, hypothesis, pexpect.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
pip() { python -m pip --disable-pip-version-check "$@"; }

pip install -q setuptools wheel "Cython>=3.0"
pip install -q torch==2.13.0
pip install -q -e ".[test]"
pip install -q --no-build-isolation fairscale==0.4.13
# llama.cpp as an oracle (quantize, perplexity, logits of our GGUFs); a source build, slow: its tests skip without it
pip install -q llama-cpp-python==0.3.36 || echo "llama-cpp-python not installed: the tests that use llama.cpp skip"
python -c "import llama_cx, json; print('llama_cx', llama_cx.__version__, json.dumps(llama_cx.cpu_info()))"
python -m pytest "$@"
