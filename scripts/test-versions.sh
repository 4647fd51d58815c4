#!/usr/bin/env bash
# Every Airflow 3 line besides the main suite's 3.3.2, one after another, each in its own .venv-af/<version>
# (scripts/setup-airflow-version.sh; one shared pip cache). Per line, what can differ by Airflow line:
#   * tests/unit and tests/integration (-n 2), the vendor-parametrized ones for that line's vendor only
#     (TEST_VENDORS; each vendor's adapter is the same code on every line and runs in full on 3.3.2), and that
#     vendor's lifecycle file; tests/emulator and tests/soak never import a version-dependent Airflow path;
#   * tests/legacy (the real 3.0-3.2 triggerer: no trigger on_kill) on 3.0-3.2;
#   * the version-dependent kill rows on a real stack: tests/e2e/test_version_kill_rows.py.
# Each stage's time is printed. Extra arguments go to every pytest run.
#   AIRFLOW_VERSIONS   default "3.0.6 3.1.8 3.2.2 3.3.1 3.4.0b2" (the newest patch of each line, and 3.4's beta)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSIONS=${AIRFLOW_VERSIONS:-"3.0.6 3.1.8 3.2.2 3.3.1 3.4.0b2"}
declare -A VENDOR=([3.0]=dune [3.1]=izieroma [3.2]=bctrl [3.3.1]=meibel [3.4]=b3os)
all_started=$(date +%s)
for version in $VERSIONS; do
  started=$(date +%s)
  venv=$(bash scripts/setup-airflow-version.sh "$version" | tail -1)
  line=${version%.*}; line=${line%.0b*}
  vendor=${VENDOR[$version]:-${VENDOR[$line]:-dune}}
  others=()
  for f in tests/integration/test_*_lifecycle.py; do
    case "$f" in *"/test_${vendor}_lifecycle.py") ;; *) others+=(--ignore="$f") ;; esac
  done
  echo "== Airflow $version ($vendor): venv ready after $(( $(date +%s) - started )) s"
  TEST_VENDORS=$vendor "$venv/bin/python" -m pytest -p no:cacheprovider -q -n 2 -m "not e2e" "${others[@]}" \
    tests/unit tests/integration "$@"
  echo "== Airflow $version: unit + integration done after $(( $(date +%s) - started )) s"
  case "$version" in
    3.[0-2].*)
      LEGACY_TESTS_REQUIRED=1 "$venv/bin/python" -m pytest -p no:cacheprovider -q -rxXs tests/legacy "$@"
      echo "== Airflow $version: legacy triggerer done after $(( $(date +%s) - started )) s" ;;
  esac
  VERSION_KILL_VENDOR=$vendor "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs -m versions \
    tests/e2e/test_version_kill_rows.py "$@"
  echo "== Airflow $version: kill rows done; stage $(( $(date +%s) - started )) s"
done
echo "== all versions: $(( $(date +%s) - all_started )) s (matrix: artifacts/versions-matrix.md)"
