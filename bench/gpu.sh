#!/usr/bin/env bash
# GPU benchmarks for docs/benchmarks.md: the seed, the peers and kolora's defaults in ONE command on one machine,
# because absolute times drift between machines (`make bench` keeps the CPU figures).
#
#   SHARED_BENCH=../shared/bench WHEELS=dir OUT=dir bench/gpu.sh [all|train|generate|e2e|ddp]
#
# SHARED_BENCH holds seed_baseline.py and peers/ (diffusers' KolorsPipeline plain and compiled, Kolors' own LoRA
# script and diffusers' SDXL LoRA script adapted to Kolors). Needs a CUDA GPU with diffsynth 1.1.9 and
# transformers<5 importable (WHEELS=dir installs them and diffusers 0.36 first, for machines without an index).
# One JSON line per measurement on stdout and in $OUT/bench.jsonl; each program's log in $OUT/NAME.log. Sized to
# run in about 8 minutes on an H200; the knobs below trade time for repetitions.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
part=${1:-all}
shared=${SHARED_BENCH:?set SHARED_BENCH to the folder with seed_baseline.py and peers/ (shared/bench)}
if [[ -n "${WHEELS:-}" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kolora-site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/kolora-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
dir=${OUT:-/tmp/kolora-gpu-bench}
mkdir -p "$dir"
measure() {  # measure NAME SECONDS CMD...: JSON lines to stdout and $dir/bench.jsonl, the rest to $dir/NAME.log
  local name=$1 limit=$2; shift 2
  echo "{\"what\": \"command\", \"name\": \"$name\", \"cmd\": \"$*\", \"started\": \"$(date -u +%FT%TZ)\"}" | tee -a "$dir/bench.jsonl"
  if ! timeout "$limit" "$@" > >(grep --line-buffered '^{' | tee -a "$dir/bench.jsonl") 2>"$dir/$name.log"; then
    echo "$name failed or ran past ${limit}s; last lines of $dir/$name.log:" >&2; tail -n 5 "$dir/$name.log" >&2
  fi
}
python3 -c 'import json, torch; print(json.dumps({"what": "env", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}))' | tee -a "$dir/bench.jsonl"
train() {
  measure seed-train 120 env BENCH_TRAIN_STEPS="${SEED_TRAIN_STEPS:-20}" python3 "$shared/seed_baseline.py" train
  measure peers-train 150 env PEER_TRAIN_STEPS="${PEER_TRAIN_STEPS:-8}" PEER_TRAIN_WARMUP=2 python3 "$shared/peers/kolors_official_train.py"
  # b1: the seed recipe with kolora's defaults; b8+bf16: throughput mode (see bench/train_bench.py)
  measure kolora-train 240 env BENCH_VARIANTS="${KOLORA_TRAIN_VARIANTS:-b1,b8+bf16}" python3 bench/train_bench.py
}
generate() {
  measure seed-generate 90 python3 "$shared/seed_baseline.py" generate
  measure peers-generate 90 env PEER_GEN_MODES="${PEER_GEN_MODES:-nipp_upcast}" python3 "$shared/peers/diffusers_kolors_generate.py"
  measure peers-generate-compiled 200 env PEER_COMPILE=1 PEER_GEN_MODES=nipp_fp16fix python3 "$shared/peers/diffusers_kolors_generate.py"
  # b8: the stage's choice for the 8-image story (no compile); b8+compile: what a 32+ image shard gets
  measure kolora-generate 150 env BENCH_VARIANTS="${KOLORA_GEN_VARIANTS:-b8,b8+compile}" python3 bench/generate_bench.py
}
e2e() {  # the whole pipeline stage by stage on full-size random Kolors (offline), beside the seed's own parts; the
  # seed's end to end is its model build + 500 x s/step + 8 x s/image (it has no pipeline). Needs Data-Juicer for
  # filter: without it, make the trainset elsewhere and pass E2E_STAGES=fetch-models,train,generate,evaluate.
  measure seed-e2e-parts 240 env BENCH_TRAIN_STEPS="${SEED_TRAIN_STEPS:-20}" BENCH_GEN_IMAGES=2 python3 "$shared/seed_baseline.py" train generate
  measure kolora-e2e "${E2E_TIMEOUT:-1500}" python3 bench/pipeline_bench.py --profile full --images "${E2E_IMAGES:-16}" \
    --workdir "${E2E_WORKDIR:-/tmp/kolora-e2e}" --stages "${E2E_STAGES:-ingest,filter,fetch-models,train,generate,evaluate}" \
    -- --models.source random
}
ddp() {  # issue 17, on a host of 2+ GPUs: the train stage itself on 1 and 2 GPUs at batch 1 and 8 per GPU, scaling
  # efficiency, and 2 x 8 against 1 x 16 for the LoRA; the seed's step for the ratio
  measure seed-train 120 env BENCH_TRAIN_STEPS="${SEED_TRAIN_STEPS:-20}" python3 "$shared/seed_baseline.py" train
  measure kolora-ddp "${DDP_TIMEOUT:-1500}" env NCCL_NVLS_ENABLE=0 python3 bench/ddp_bench.py --devices 1,2 --batch 1,8 \
    --steps "${DDP_STEPS:-60}" --equivalence --workdir "${DDP_WORKDIR:-/tmp/kolora-ddp}" -- --train.precision bf16-mixed
}
case $part in
  all) train; generate ;;
  train) train ;;
  generate) generate ;;
  e2e) e2e ;;
  ddp) ddp ;;
  *) echo "unknown part $part: all, train, generate, e2e or ddp" >&2; exit 2 ;;
esac
