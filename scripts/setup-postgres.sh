#!/usr/bin/env bash
# Debian's PostgreSQL server binaries for the end-to-end Airflow stacks (tests/e2e/postgres.py starts a private
# server per stack; on SQLite, Airflow 3.3 froze under waves of task starts). Idempotent: installs only when no
# initdb is found, and fails loudly (non-zero) when the binaries cannot be had. Nothing is started here.
set -euo pipefail

find_initdb() {
  command -v initdb 2>/dev/null || ls -1d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(find_initdb)" ]; then
  bash "$(dirname "$0")/apt-install.sh" postgresql
fi

INITDB=$(find_initdb)
if [ -z "$INITDB" ]; then
  echo "setup-postgres: postgresql is installed but no initdb was found" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "setup-postgres: running as root needs the 'postgres' user (PostgreSQL refuses root); it is missing" >&2
  exit 1
fi
echo "setup-postgres: $("$INITDB" --version) at $INITDB"
