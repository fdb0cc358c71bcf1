#!/usr/bin/env bash
# The CUDA tests, CUDA checks and CUDA engine benchmarks as ONE prepared run on a GPU machine whose
# python3 already has torch (transformers 5.24, Django and daphne come as wheels in .whl/, fetched by
# scripts/gpu_wheels.sh):
#   bash bench/device_run.sh          (reports under $OUT, default bench/out; each step has a timeout)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
PY=${PY:-python3}
if [ -d .whl ]; then
  timeout 60 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3
  export PYTHONPATH=/tmp/site:$PWD
fi
step() { local name=$1 limit=$2; shift 2; echo "== $name (timeout ${limit}s): $*" | tee -a "$OUT/log.txt"
  local t0=$SECONDS; timeout "$limit" "$@" 2>&1 | grep -v -e "^Loading weights" -e "it/s\]$" | tee "$OUT/$name.txt"
  echo "== $name: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s" | tee -a "$OUT/log.txt" "$OUT/$name.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers, safetensors, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'safetensors', safetensors.__version__, 'cuda', torch.cuda.is_available())"
  nproc; free -g | head -2; df -h . | tail -1; } 2>&1 | tee "$OUT/gpu.txt"
step pytest_gpu 120 $PY -m pytest -q -p no:cacheprovider --ds=bench.gpu_settings \
  tests/test_engine_cuda.py tests/test_engine.py tests/test_pipeline_load.py tests/test_pipeline_errors.py
cd bench
step cuda_check 45 $PY cuda_check.py
step engine_cuda_1g 80 $PY engine_bench.py --device cuda --runs 3
# SKIP_8G=1: a re-check of the merged code that fits a small remaining device budget.
[ "${SKIP_8G:-}" = 1 ] || step engine_cuda_8g 180 $PY engine_bench.py --device cuda --params 4B --shards 4 --runs 3
# The web path on the GPU (POST -> daphne -> load thread -> websocket "succeeded", against plain
# transformers and cat, hot and cold) when the wheels from scripts/gpu_wheels.sh brought daphne.
if $PY -c "import daphne, channels, django" 2>/dev/null; then
  step web_path_cuda_1g 150 $PY web_path.py --device cuda --runs 3
  [ "${SKIP_8G:-}" = 1 ] || step web_path_cuda_8g 300 $PY web_path.py --device cuda --params 4B --shards 4 --runs 3
else
  echo "== web_path: skipped (no daphne: run scripts/gpu_wheels.sh and carry .whl)" | tee -a "$OUT/log.txt"
fi
