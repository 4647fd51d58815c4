#!/usr/bin/env bash
# apt-get install Debian packages, as root or through sudo; fails loudly when neither is possible.
# Usage: bash scripts/apt-install.sh <package>...
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "apt-install: need root or sudo to apt-get install $*" >&2; exit 1; }
  SUDO="sudo"
fi
echo "apt-install: apt-get install $*"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
