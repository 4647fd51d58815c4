#!/usr/bin/env bash
# Debian's Chromium for the UI tests (tests/ui). Playwright's own browser download needs the internet, so the
# tests drive the distribution's /usr/bin/chromium instead. Idempotent: installs only what is missing, and fails
# loudly (non-zero) when the browser cannot be had. The Python side (playwright) comes from pyproject's test
# extra (scripts/setup.sh).
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  # fonts-liberation: without any font the screenshots show boxes instead of text
  bash "$(dirname "$0")/apt-install.sh" chromium fonts-liberation
fi

# The browser must actually render a page headless (a half-installed package or a missing library shows here).
if ! timeout 120 chromium --headless=new --no-sandbox --disable-gpu --dump-dom "data:text/html,<p>ok</p>" 2>/dev/null \
    | grep -q "<p>ok</p>"; then
  echo "install-browser: chromium is installed but cannot render a page headless" >&2
  exit 1
fi
echo "install-browser: $(chromium --version 2>/dev/null) at $(command -v chromium)"

if ! python3 -c "import playwright" 2>/dev/null; then
  echo "install-browser: the Python package playwright is missing: pip install -e '.[test]'" >&2
  exit 1
fi
