#!/usr/bin/env bash
# Every CPU benchmark in one go; each report lands in bench/results/ (BENCHMARKS.md quotes them).
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
mkdir -p results
run() { local name=$1; shift; echo "== $name: $*"; "$PY" "$@" 2>&1 | grep -v "^Loading" | tee "results/cpu-$name.txt"; }
run engine_1g engine_bench.py --runs 5
run load_vs_plain_hot load_vs_plain.py --runs 10
run load_vs_plain_cold load_vs_plain.py --runs 5 --cold
run web_path_1g web_path.py --runs 5
run web_path_4g web_path.py --params 2B --shards 8 --runs 3
run click_latency click_latency.py --starts 5 --loads 30
run event_latency event_latency.py
run engine_memory memory.py --cycles 5
