# Sourced by the scripts: make .venv (Python 3.11+) and install the project into it, once per change of pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON="$candidate"; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "gdx_pipeline needs Python 3.11 or newer on PATH (python3.11, python3.12, ...)." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.gdx-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  # pip's own warnings go to a log, not between the lines a person reads.
  echo "Installing the project into .venv (first time: a minute or two; log: .venv/install.log) ..."
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip &&
         .venv/bin/python -m pip install --quiet -e ".[test,bench]"; } >.venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    echo "Installing into .venv failed; full log: $ROOT/.venv/install.log" >&2
    exit 1
  fi
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export VIRTUAL_ENV="$ROOT/.venv"  # activated, as `dg` expects of a project's environment

# The embedded default that scripts/demo and scripts/dev share (the tests make their own):
# the data folder ./data (SQLite warehouse inside) and Dagster's instance in ./.dagster_home.
use_local_defaults() {
  export GDX_DATA_DIR="${GDX_DATA_DIR:-$ROOT/data}"
  export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
  mkdir -p "$GDX_DATA_DIR/landing" "$DAGSTER_HOME"
  touch "$DAGSTER_HOME/dagster.yaml"
}
