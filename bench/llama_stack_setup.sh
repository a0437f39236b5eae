#!/usr/bin/env bash
# The llama-stack peer for bench/bench_sidebyside.py, in its own venv outside the repo
# (llama-stack is not a batchlog dependency). Idempotent; prints the venv's path.
#
#   bash bench/llama_stack_setup.sh            # ~/.cache/batchlog/llama-stack-venv
#   LLAMA_STACK_VENV=/tmp/ls PYTHON312=python3.12 bash bench/llama_stack_setup.sh
#
# llama-stack 0.7.3 needs Python >= 3.12; the recipe is issue 14's (with its 'mcp<2' pin).
set -euo pipefail
VENV="${LLAMA_STACK_VENV:-$HOME/.cache/batchlog/llama-stack-venv}"
PY="${PYTHON312:-}"
if [ -z "$PY" ]; then
  for cand in python3.12 /root/.pyenv/versions/3.12.1/bin/python3.12 python3.13; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "no Python 3.12 found: set PYTHON312" >&2; exit 1; }
if ! "$VENV/bin/python" -c 'import llama_stack' >/dev/null 2>&1; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q 'llama-stack==0.7.3' 'mcp<2'
fi
"$VENV/bin/python" -c 'import importlib.metadata as m; print("llama-stack", m.version("llama-stack"))' >&2
echo "$VENV"
