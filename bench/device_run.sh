#!/usr/bin/env bash
# The CUDA checks and the CUDA web-path benchmark, as one prepared run on a GPU machine whose
# python3 already has torch/transformers (the Django side comes as wheels in .wheels/):
#   bash bench/device_run.sh            (writes its reports under $OUT, default bench/out)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .wheels ]; then
  python3 -m pip install -q --no-index --find-links .wheels django channels daphne whitenoise websockets pytest-django 2>&1 | tail -2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_pipeline_load.py tests/test_pipeline_errors.py 2>&1 | tail -5 | tee "$OUT/pytest_gpu.txt"
(cd bench && python3 cuda_check.py) 2>&1 | grep -v "^Loading" | tee "$OUT/cuda_check.txt"
(cd bench && timeout 240 python3 web_path.py --device cuda --runs 3) 2>&1 | grep -v "^Loading" | tail -6 | tee "$OUT/web_path_cuda_1g.txt"
(cd bench && timeout 300 python3 web_path.py --device cuda --params 2B --shards 8 --runs 3) 2>&1 | grep -v "^Loading" | tail -6 | tee "$OUT/web_path_cuda_4g.txt"
