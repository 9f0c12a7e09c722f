#!/usr/bin/env bash
# Install labcloud into .venv and start it with the demo apps: SQLite, local disk, local executor.
# Any arguments go to `labcloud serve` (e.g. --host 0.0.0.0 --port 8080).
# The data dir is ./labcloud-data of this checkout unless LABCLOUD_HOME says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system.sh
[ -x .venv/bin/python ] || python3 -m venv .venv

# A copy of the checkout is installed (not an editable install), so it is installed again only when what
# goes into it changed: pyproject.toml or any file under src/. The stamp holds the hash of both as installed.
source_state() {
  {
    sha256sum pyproject.toml
    find src -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
stamp=.venv/labcloud-installed.sha256
state=$(source_state)
if [ "$(cat "$stamp" 2>/dev/null)" != "$state" ]; then
  echo "installing labcloud into .venv"
  rm -f "$stamp"
  # build/ is setuptools' scratch folder: a file deleted from src/ would live on there and be installed again.
  rm -rf build
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q .
  echo "$state" >"$stamp"
fi
exec .venv/bin/labcloud serve "$@"
