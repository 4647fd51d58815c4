#!/usr/bin/env bash
# One venv per Airflow version: .venv-af/<version> holds apache-airflow==<version> and this provider (editable,
# with its test extra). Idempotent: created when missing, brought up to date in place when pyproject.toml changed.
# Every venv shares pip's one cache (PIP_CACHE_DIR, default ~/.cache/pip), so a second venv downloads only what
# differs. Prints the venv's path on its last line.
#   setup-airflow-version.sh 3.1.8
#   PYTHON   interpreter for the venv (default python3.11, else python3; common-compat needs Python >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:?usage: scripts/setup-airflow-version.sh <apache-airflow version, e.g. 3.1.8>}
case "$VERSION" in
  3.*) ;;
  *) echo "setup-airflow-version.sh: Airflow 3 only, not '$VERSION'" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=.venv-af/$VERSION
STAMP="$VENV/.installed"
# What Airflow's constraints file for the line would hold back (it is not reachable from here): releases of
# Airflow's own dependencies that came out after the line and break it.
case "$VERSION" in
  # FastAPI 0.132 refuses a JSON body without a Content-Type header, and the 3.0 Task SDK sends none: every
  # task dies at start with a 422 from PATCH /execution/task-instances/{id}/run (apache/airflow#63209).
  3.0.*) PINS=("fastapi<0.132") ;;
  # 3.2 sets no upper bound on FastAPI; from 0.137 its dag-processor fails to build the Execution API's routes
  # ("Model 'TITerminalStatePayload' needs a discriminator field"). 3.3 declares <0.137: the same here.
  3.2.*) PINS=("fastapi<0.137") ;;
  *) PINS=() ;;
esac
WANT="airflow=$VERSION pyproject=$(sha256sum pyproject.toml | cut -c1-16) pins=${PINS[*]:-}"

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  started=$(date +%s)
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV: apache-airflow==$VERSION ($("$PYTHON" --version))" >&2
    mkdir -p .venv-af
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  else
    echo "== updating $VENV (built for '$(cat "$STAMP" 2>/dev/null)', want '$WANT')" >&2
  fi
  # The pin keeps the resolver on this Airflow (the provider allows any 3.x); a beta's own pins are exact.
  "$VENV/bin/python" -m pip install -q "apache-airflow==$VERSION" "${PINS[@]}" -e ".[test]" >&2
  echo "$WANT" > "$STAMP"
  echo "== $VENV ready in $(( $(date +%s) - started )) s" >&2
fi

# Fail here, not in pytest, if the venv does not hold the Airflow it should.
"$VENV/bin/python" - "$VERSION" >&2 <<'PY'
import sys
from importlib.metadata import version
want, core, sdk = sys.argv[1], version("apache-airflow-core"), version("apache-airflow-task-sdk")
compat = version("apache-airflow-providers-common-compat")
print(f"== apache-airflow-core {core}, task-sdk {sdk}, common-compat {compat}")
if core != want:
    sys.exit(f"setup-airflow-version.sh: venv has apache-airflow-core {core}, expected {want}")
PY
echo "$VENV"
