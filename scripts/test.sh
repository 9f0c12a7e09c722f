#!/usr/bin/env bash
# Install everything the tests need, check style and types, and run the whole suite twice:
# on SQLite and on PostgreSQL (127.0.0.1:5432; the suite creates and drops its own databases), the
# second time only the tests that reach the database (tests/conftest.py says which). Tests run in one
# process per core, a test module per process (each process has its own database and servers), handed out
# in the order tests/conftest.py puts them in: the longest modules first.
# Both passes run whatever the first one found; the exit status is non-zero if either failed, and the
# last line sums both up. Arguments go to pytest (e.g. tests/test_jobs.py -k cancel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system.sh --postgres
# Bytecode is written the first time a module is imported, not by pip for every module of every package at
# install (one at a time: 15-20 s here), and never skipped: with PYTHONDONTWRITEBYTECODE set, each of the
# suite's hundreds of processes (servers, workers, command-line calls) would compile labcloud again.
unset PYTHONDONTWRITEBYTECODE
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q --no-compile -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

# run_pass NAME DB ARGS...: one pass; its verdict in the variable NAME, its pytest exit status returned.
run_pass() {
  local name=$1 db=$2 status=0
  shift 2
  LABCLOUD_TEST_DB=$db .venv/bin/python -m pytest -n auto --dist loadfile --no-loadscope-reorder "$@" || status=$?
  case $status in
    0) printf -v "$name" 'passed' ;;
    # The PostgreSQL pass keeps only tests that reach the database: a selection without any is fine.
    5)
      if [ "$db" = postgresql ]; then
        printf -v "$name" 'nothing to run'
        status=0
      else
        printf -v "$name" 'no tests ran (exit status 5)'
      fi
      ;;
    *) printf -v "$name" 'FAILED (exit status %s)' "$status" ;;
  esac
  return "$status"
}

sqlite_status=0 postgresql_status=0 sqlite='' postgresql='not run'
echo "== test suite on SQLite"
run_pass sqlite sqlite "$@" || sqlite_status=$?
# An interrupted run (2) or a usage error (4) would be the same again: stop there.
if [ "$sqlite_status" != 2 ] && [ "$sqlite_status" != 4 ]; then
  echo "== test suite on PostgreSQL"
  run_pass postgresql postgresql "$@" || postgresql_status=$?
fi
echo "== SQLite: $sqlite; PostgreSQL: $postgresql"
if [ "$sqlite_status" != 0 ]; then exit "$sqlite_status"; fi
exit "$postgresql_status"
