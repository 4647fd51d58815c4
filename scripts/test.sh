#!/usr/bin/env bash
# The whole test suite: lint, types, unit, emulator, integration (real HTTP on loopback) and end-to-end
# (a real Airflow 3.3 stack started and torn down by the tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
echo "== ruff"; ruff check airflow_provider_cancel tests example_dags scripts benchmarks
echo "== pytest"; python -m pytest -p no:cacheprovider "$@"
