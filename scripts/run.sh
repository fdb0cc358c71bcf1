#!/usr/bin/env bash
# Set up (first time) and start MACtuner on http://127.0.0.1:8000 with zero services:
# SQLite + in-memory channel layer, and a generated demo model if the models folder is empty.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py makedemo
echo "MACtuner: http://${MACTUNER_BIND:-127.0.0.1}:${MACTUNER_PORT:-8000}/"
exec .venv/bin/daphne -b "${MACTUNER_BIND:-127.0.0.1}" -p "${MACTUNER_PORT:-8000}" mactuner_site.asgi:application
