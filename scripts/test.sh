#!/usr/bin/env bash
# Set up (first time) and run the whole test suite: unit, integration, CLI, browser and, when
# PostgreSQL/Redis are reachable (always under CI=true), the cross-process tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if [ "${CI:-}" = "true" ]; then bash scripts/services.sh; fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
