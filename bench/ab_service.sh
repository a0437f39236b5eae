#!/bin/bash
# Interleaved before/after runs of bench/bench_service.py (docs/benchmarks.md, "Issue 14").
#   git archive 1d1ffb2 | tar -x -C /tmp/base     # the code before
#   BASE=/tmp/base bench/ab_service.sh ROUND N [VARIANT...] [-- bench_service args]
# VARIANTs: base (the code in $BASE), new (this tree), new2 (this tree, 2 upstream
# executors), gMS (this tree, BATCHLOG_OUTCOME_GROUP_MS=MS). Each runs from its own tree:
# `python -m batchlog.cli serve` puts the working directory first on sys.path.
# Results: bench/out/ab-ROUND-VARIANT.json.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
ROUND=$1; N=$2; shift 2
VARIANTS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do VARIANTS+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#VARIANTS[@]} -eq 0 ] && VARIANTS=(base new new2)
for v in "${VARIANTS[@]}"; do
  TREE=$HERE; SET=()
  case $v in
    base) TREE=${BASE:?set BASE to the code before};;
    new) SET=(--set BATCHLOG_UPSTREAM_EXECUTORS=1);;
    new2) SET=(--set BATCHLOG_UPSTREAM_EXECUTORS=2);;
    g*) SET=(--set BATCHLOG_UPSTREAM_EXECUTORS=1 --set "BATCHLOG_OUTCOME_GROUP_MS=${v#g}");;
  esac
  echo "== $v $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$TREE" && PYTHONPATH=$TREE nice "$PY" "$HERE/bench/bench_service.py" --requests "$N" \
    --skip-direct --extra-batches 0 "${SET[@]}" "$@" --json "$HERE/bench/out/ab-$ROUND-$v.json" \
    | grep -E "end to end")
done
