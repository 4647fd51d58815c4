#!/usr/bin/env bash
# The whole test suite: lint; unit, emulator and integration tests (real HTTP on loopback); the built wheel in a
# fresh venv (scripts/test-wheel.sh); end-to-end on a real Airflow 3.3 stack started and torn down by the tests;
# the Airflow UI in headless Chromium (tests/ui, its own stack); every other Airflow 3 line (3.0 to 3.4), each in
# its own venv with its own stack (scripts/test-versions.sh).
# Extra arguments go to every pytest run (e.g. -x).
set -euo pipefail
cd "$(dirname "$0")/.."
all_started=$(date +%s); stage_started=$all_started
stage() {  # the next stage's header, with the time the previous one took: where the CI budget goes
  local now; now=$(date +%s)
  echo "== $* (previous stage $(( now - stage_started )) s; $(( now - all_started )) s so far)"; stage_started=$now
}
bash scripts/setup.sh
. .venv/bin/activate
stage "ruff"
ruff check .
stage "mypy"
mypy
stage "unit, emulator, integration (2 workers)"
python -m pytest -p no:cacheprovider -n 2 -m "not e2e" --ignore=tests/legacy "$@"
stage "the built wheel in a fresh venv: twine check, provider metadata, example DAGs parse, the main job runs"
bash scripts/test-wheel.sh
stage "end-to-end on a real Airflow 3.3 (one stack on a private PostgreSQL; scenarios run concurrently inside it)"
bash scripts/setup-postgres.sh
python -m pytest -p no:cacheprovider -m "e2e and not ui and not versions" "$@"
stage "the Airflow UI in headless Chromium (Debian's chromium; screenshots in artifacts/ui/)"
bash scripts/install-browser.sh
python -m pytest -p no:cacheprovider -m ui tests/ui "$@"
stage "every other Airflow 3 line: 3.0.6 3.1.8 3.2.2 3.3.1 3.4.0b2, one after another (artifacts/versions-matrix.md)"
bash scripts/test-versions.sh "$@"
stage "all green"
