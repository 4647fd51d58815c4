#!/usr/bin/env bash
# The legacy-triggerer tests (tests/legacy) under Airflow 3.2, whose triggerer has no trigger on_kill (issue 4).
# Creates .venv-legacy (idempotent: reinstalls only when the Airflow version or pyproject.toml changes) and runs
# `python -m pytest tests/legacy -q`. Extra arguments go to pytest. Any failure, or tests that would only be
# skipped (wrong Airflow in the venv), fails the script.
#   LEGACY_AIRFLOW_VERSION  Airflow to test against (default 3.2.2, the newest 3.2.x; 3.0/3.1 cannot import
#                           this provider: airflow.sdk.exceptions has no AirflowFailException there)
#   PYTHON                  interpreter for the venv (default python3.11, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

AIRFLOW_VERSION=${LEGACY_AIRFLOW_VERSION:-3.2.2}
case "$AIRFLOW_VERSION" in
  3.[0-2].*) ;;
  *) echo "test-legacy.sh: LEGACY_AIRFLOW_VERSION must be 3.0.x-3.2.x, not '$AIRFLOW_VERSION'" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=.venv-legacy
STAMP="$VENV/.installed"
WANT="airflow=$AIRFLOW_VERSION pyproject=$(sha256sum pyproject.toml | cut -c1-16)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "== $VENV was built for '$(cat "$STAMP")', want '$WANT': rebuilding"
  rm -rf "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "== creating $VENV with apache-airflow==$AIRFLOW_VERSION ($("$PYTHON" --version))"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "apache-airflow==$AIRFLOW_VERSION" \
    "httpx>=0.27" "httpx-aiohttp>=0.1.8" "pydantic>=2.6" "tenacity>=8.2" \
    "fastapi>=0.110" "uvicorn>=0.29" "pytest>=8" "pytest-asyncio>=0.23" "pytest-timeout>=2.3"
  # --no-deps: the project's own requirement (apache-airflow>=3.0) must not pull in a newer Airflow.
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  echo "$WANT" > "$STAMP"
fi

# Fail before pytest if the venv does not hold the Airflow it should (then the tests would only skip).
"$VENV/bin/python" - "$AIRFLOW_VERSION" <<'PY'
import sys
from importlib.metadata import version
want, core, sdk = sys.argv[1], version("apache-airflow-core"), version("apache-airflow-task-sdk")
print(f"== apache-airflow-core {core}, apache-airflow-task-sdk {sdk}")
if core != want:
    sys.exit(f"test-legacy.sh: .venv-legacy has apache-airflow-core {core}, expected {want}")
PY

echo "== pytest tests/legacy"
LEGACY_TESTS_REQUIRED=1 "$VENV/bin/python" -m pytest tests/legacy -q -p no:cacheprovider -rxXs "$@"
