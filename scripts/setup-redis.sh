#!/usr/bin/env bash
# Debian's redis-server, the Celery broker of the distributed end-to-end stack (tests/e2e/topology.py CELERY;
# AirflowStack starts a private server per stack on a free loopback port, persistence off, ended by its pid).
# Idempotent: installs only when no redis-server is found; fails loudly when it cannot be had. Nothing is started.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
  bash "$(dirname "$0")/apt-install.sh" redis-server
  # the package starts the system service; the tests never use it (their own server, own port)
  if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
fi
command -v redis-server >/dev/null 2>&1 || { echo "setup-redis: redis-server is not on PATH" >&2; exit 1; }
echo "setup-redis: $(redis-server --version | head -n 1)"
