#!/usr/bin/env bash
# Install everything the tests need, check style and types, and run the whole suite twice:
# on SQLite and on PostgreSQL (127.0.0.1:5432; the suite creates and drops its own databases), the
# second time only the tests that reach the database (tests/conftest.py says which). Tests run in one
# process per core, a test module per process (each process has its own database and servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system.sh --postgres
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== test suite on SQLite"
LABCLOUD_TEST_DB=sqlite .venv/bin/python -m pytest -n auto --dist loadfile "$@"
echo "== test suite on PostgreSQL"
LABCLOUD_TEST_DB=postgresql .venv/bin/python -m pytest -n auto --dist loadfile "$@"
