#!/usr/bin/env bash
# The distributed end-to-end stage: the CELERY topology (tests/e2e/topology.py: CeleryExecutor on a private Redis,
# two Celery workers, two triggerers, two schedulers, dag-processor, api-server on a private PostgreSQL), the D rows
# (tests/e2e/test_distributed.py) and the K matrix on it (artifacts/e2e-matrix-celery.md). Uses the main .venv.
# Extra arguments go to pytest (e.g. -x, or -k d1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ ! -f .venv/.installed-distributed ] || [ pyproject.toml -nt .venv/.installed-distributed ]; then
  python -m pip install -q -e ".[test,distributed]" "apache-airflow==3.3.2"
  touch .venv/.installed-distributed
fi
bash scripts/setup-postgres.sh
bash scripts/setup-redis.sh
E2E_TOPOLOGY=celery python -m pytest -p no:cacheprovider -m "e2e and not ui and not versions" \
  tests/e2e/test_distributed.py tests/e2e/test_kill_paths.py tests/e2e/test_triggerer_handover.py "$@"
