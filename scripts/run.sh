#!/usr/bin/env bash
# Install labcloud into .venv and start it with the demo apps: SQLite, local disk, local executor.
# Any arguments go to `labcloud serve` (e.g. --host 0.0.0.0 --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .
exec .venv/bin/labcloud serve "$@"
