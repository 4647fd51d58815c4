#!/usr/bin/env bash
# The package as users get it: build the wheel and sdist (twine check), install the wheel (not an editable
# checkout) with apache-airflow==3.3.2 in a fresh venv, and from outside the checkout: check the installed
# package and its provider metadata, parse every example DAG (no import errors), run the README's main job
# (scripts/demo.py: a Dune execution cancelled at its task's timeout, against the bundled emulator) and the
# ordinary Dune example to success. Uses pip's cache; prints its time (budget: 4 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
elapsed() { echo "$(( $(date +%s) - START )) s"; }
BUILD_PYTHON=${BUILD_PYTHON:-$ROOT/.venv/bin/python}   # has build and twine (the test extra); setup.sh makes it
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/apc-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'echo "test-wheel: FAILED (line $LINENO, after $(elapsed))" >&2' ERR

echo "-- build wheel and sdist ($(elapsed))"
"$BUILD_PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
"$BUILD_PYTHON" -m twine check --strict "$WORK/dist"/*
WHEEL=$(ls "$WORK"/dist/*.whl)
unzip -l "$WHEEL" | grep -q "airflow_provider_cancel/py.typed" || { echo "py.typed missing from $WHEEL"; exit 1; }

echo "-- fresh venv: $(basename "$WHEEL")[emulator] + apache-airflow==3.3.2 ($(elapsed))"
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q "${WHEEL}[emulator]" "apache-airflow==3.3.2" 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -m pip show -q airflow-provider-cancel >/dev/null

# Everything below runs outside the checkout, on copies of the example DAGs and of the demo script.
cp -r example_dags "$WORK/dags"
cp scripts/demo.py "$WORK/demo.py"
cd "$WORK"
export AIRFLOW_HOME=$WORK/airflow-home AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$WORK/dags
unset PYTHONPATH

echo "-- the installed package, not the checkout ($(elapsed))"
"$VPY" - "$ROOT" <<'PY'
import importlib.metadata as md, pathlib, sys
import airflow_provider_cancel
from airflow_provider_cancel.get_provider_info import get_provider_info
where = pathlib.Path(airflow_provider_cancel.__file__).resolve()
root = pathlib.Path(sys.argv[1]).resolve()
assert root not in where.parents, f"imported from the checkout: {where}"
assert "site-packages" in where.parts, where
version = md.version("airflow-provider-cancel")
assert get_provider_info()["versions"] == [version] == [airflow_provider_cancel.__version__], version
assert (where.parent / "py.typed").exists()
print(f"airflow-provider-cancel {version} from {where.parent}")
PY
"$WORK/venv/bin/airflow" db migrate >"$WORK/migrate.log" 2>&1 || { tail -20 "$WORK/migrate.log"; exit 1; }
"$WORK/venv/bin/airflow" providers get airflow-provider-cancel -o json >"$WORK/provider.json" 2>/dev/null
grep -q '"Provider": "airflow-provider-cancel"' "$WORK/provider.json" || { cat "$WORK/provider.json"; exit 1; }

echo "-- every example DAG parses ($(elapsed))"
"$WORK/venv/bin/airflow" dags list-import-errors --local -o json >"$WORK/import-errors.json" 2>"$WORK/import-errors.log"
"$WORK/venv/bin/airflow" dags list --local -o json >"$WORK/dags.json" 2>"$WORK/dags.log"
"$VPY" - "$WORK" <<'PY'
import json, pathlib, re, sys
work = pathlib.Path(sys.argv[1])
def last_json(name):
    lines = [l for l in (work / name).read_text().splitlines() if l.startswith(("[", "{"))]
    return json.loads(lines[-1])
errors = last_json("import-errors.json")
assert errors == [], errors
shown = {row["dag_id"] for row in last_json("dags.json")}
expected = {m for f in (work / "dags").glob("*.py") for m in re.findall(r'dag_id="([a-z0-9_]+)"', f.read_text())}
assert expected and expected <= shown, sorted(expected - shown)
print(f"{len(expected)} example DAGs parsed, no import errors: {', '.join(sorted(expected))}")
PY

echo "-- the README's main job from the wheel: demo.py on the copied example DAGs ($(elapsed))"
APC_DEMO_DAGS_FOLDER=$WORK/dags "$VPY" "$WORK/demo.py"

echo "-- example_dune to success from the wheel ($(elapsed))"
"$VPY" - <<'PY'
import json, os, subprocess, sys, tempfile
from pathlib import Path
from airflow_provider_cancel.emulator.testing import EmulatorProcess
airflow = str(Path(sys.executable).with_name("airflow"))
with tempfile.TemporaryDirectory() as home, EmulatorProcess("--api-key", "sk-wheel") as emulator:
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW_CONN_DUNE_DEFAULT": json.dumps(
        {"conn_type": "dune", "host": emulator.base_url("dune"), "password": "sk-wheel"})}
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    run = subprocess.run([airflow, "dags", "test", "example_dune"], env=env, capture_output=True, text=True)
    out = run.stdout + run.stderr
    cancels = emulator.client().journal(vendor="dune", action="cancel")
    assert run.returncode == 0, out[-3000:]
    assert cancels == [], cancels
    print(f"example_dune succeeded: {len(emulator.client().journal(vendor='dune', action='create'))} executions, no cancel")
PY

TOTAL=$(( $(date +%s) - START ))
echo "test-wheel: passed in ${TOTAL} s (budget 240 s)"
if [ "$TOTAL" -gt 240 ]; then echo "test-wheel: over its 4-minute budget" >&2; fi
