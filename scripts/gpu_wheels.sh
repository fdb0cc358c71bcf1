#!/usr/bin/env bash
# Fetches into .whl/ (ignored) the wheels a GPU machine without network needs for bench/device_run.sh:
# the GPU image has python 3.12 with torch and an older transformers but no Django, Channels or daphne.
# The versions are this checkout's own (.venv's pip freeze), so the GPU run tests what CI tests.
#   bash scripts/gpu_wheels.sh        (then carry .whl to the device: run(carry=[".whl"]))
set -euo pipefail
cd "$(dirname "$0")/.."
# Already on the GPU image (with torch) or not needed there: left out to stay under the 64 MiB carry.
SKIP='^(torch|nvidia|triton|numpy|sympy|mpmath|networkx|jinja2|markupsafe|filelock|fsspec|mypy|ruff|django-stubs|types-|librt|ast-serialize|pathspec|playwright|greenlet|pyee|psycopg|redis|channels.redis|msgpack|rich|markdown-it-py|mdurl|typer|shellingham|annotated-doc|pydantic|typing-inspection|annotated-types|whitenoise|-e |mactuner)'
mapfile -t PKGS < <(.venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E "$SKIP")
rm -rf .whl && mkdir .whl
.venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d .whl \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any "${PKGS[@]}"
du -sh .whl && ls .whl | wc -l
