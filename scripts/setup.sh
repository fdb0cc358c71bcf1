#!/usr/bin/env bash
# Creates .venv and installs the app (and with --test, the test tools and Chromium).
# torch is installed first at a pinned version: a CPU build on Linux x86 machines that have it
# locally, the regular (MPS-enabled) wheel on macOS; then the project's range is already met.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "$(uname -s)" = "Darwin" ] && [ "$(uname -m)" != "arm64" ]; then
  # PyTorch ships no Intel-Mac (x86-64 macOS) wheels after 2.2.2; MACtuner needs 2.5+ and MPS.
  echo "MACtuner needs a Mac with Apple Silicon (M1 or newer): PyTorch has no current builds for Intel Macs." >&2
  exit 1
fi
TORCH_VERSION=${MACTUNER_TORCH_VERSION:-2.13.0}
STARTED=$SECONDS
# pip runs quietly (-q): say each step in our own words, so a first install (minutes) is never silent.
say() { echo "MACtuner set-up: $*" >&2; }
if ! [ -x .venv/bin/python ]; then
  say "creating the virtual environment .venv ($("$PY" --version 2>&1))"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
CPU_INDEX=https://download.pytorch.org/whl/cpu
reachable() { .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" "$1" >/dev/null 2>&1; }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  say "installing torch ${TORCH_VERSION} (the first time only: a few hundred MB, several minutes)"
  if [ "$(uname -s)" = "Linux" ] && ! command -v nvidia-smi >/dev/null 2>&1 && reachable "$CPU_INDEX/torch/"; then
    "${PIP[@]}" "torch==${TORCH_VERSION}" --extra-index-url "$CPU_INDEX"
  else
    # macOS (MPS wheel), CUDA machines, or a machine whose pip config already provides the build.
    "${PIP[@]}" "torch==${TORCH_VERSION}"
  fi
fi
if [ "${1:-}" = "--test" ]; then
  say "installing MACtuner and its test tools (Django, Channels, transformers, pytest, Playwright)"
  "${PIP[@]}" -e ".[test]"
  if ! [ -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Chromium for the browser tests"
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
      || echo "warning: could not install chromium; browser tests will skip" >&2
  fi
else
  say "checking MACtuner's packages (Django, Channels, transformers; the first time: a few minutes)"
  "${PIP[@]}" -e .
fi
say "ready in $((SECONDS - STARTED)) s"
