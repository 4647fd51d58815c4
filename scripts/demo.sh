#!/usr/bin/env bash
# The main job: an example DAG against the bundled emulator; a Dune execution started, polled, and
# cancelled when its task hits execution_timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py
