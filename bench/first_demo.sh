#!/usr/bin/env bash
# Times the first `make demo` as on a fresh machine: a new clone of this repository's
# main, run with HOME set to an empty folder (no pip cache, no ~/.cache/batchlog
# wheelhouse or model cache, no ~/.ray), so every package is downloaded and llama.cpp is
# compiled. Prints the seconds and the exit status; the log is in $OUT/make-demo.log.
#   bash bench/first_demo.sh [OUT_DIR]
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out/home"
git clone -q "$repo" "$out/clone"
cd "$out/clone" || exit 1
# pyenv's shims look for their root under HOME: keep the real one.
export PYENV_ROOT=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")} HOME="$out/home"
start=$(date +%s)
make demo > "$out/make-demo.log" 2>&1
rc=$?
echo "make demo: exit $rc after $(( $(date +%s) - start )) s (commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)); log: $out/make-demo.log"
