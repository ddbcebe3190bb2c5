#!/usr/bin/env bash
# GPU benchmarks: the seed's baseline and kolora in the same run on the same machine (docs/benchmarks.md).
#
#   bench/gpu.sh train     SEED_BASELINE=path/to/seed_baseline.py   # seed training step, then kolora's train bench
#   bench/gpu.sh generate  SEED_BASELINE=path/to/seed_baseline.py   # seed generation, then kolora's generate bench
#
# Needs a CUDA GPU with diffsynth 1.1.9 and transformers<5 importable (WHEELS=dir installs them first, for machines
# without an index). One JSON line per measurement on stdout; OUT=dir also keeps the log there.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: bench/gpu.sh train|generate}
seed=${SEED_BASELINE:?set SEED_BASELINE to the seed baseline script (shared/bench/seed_baseline.py)}
if [[ -n "${WHEELS:-}" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kolora-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/kolora-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
dir=${OUT:-/tmp}
measure() {  # measure NAME CMD...: JSON lines to stdout and $dir/bench-$part.jsonl, the rest to $dir/NAME.log
  local name=$1; shift
  if ! "$@" > >(grep --line-buffered '^{' | tee -a "$dir/bench-$part.jsonl") 2>"$dir/$name.log"; then
    echo "$name failed; last lines of $dir/$name.log:" >&2; tail -n 20 "$dir/$name.log" >&2; return 1
  fi
}
python3 -c 'import json, torch; print(json.dumps({"what": "env", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}))'
case $part in
  train) measure seed-train python3 "$seed" train; measure kolora-train python3 bench/train_bench.py ;;
  generate) measure seed-generate python3 "$seed" generate; measure kolora-generate python3 bench/generate_bench.py ;;
  *) echo "unknown part $part: train or generate" >&2; exit 2 ;;
esac
