"""Importing the operators (as a DAG file does) imports nothing of OpenLineage; asking for lineage does."""

from __future__ import annotations

import json
import subprocess
import sys

from airflow_provider_cancel.registry import VENDORS

# Airflow's provider discovery (ProvidersManager, reached through common-compat by any operator) reads every
# installed provider's get_provider_info, OpenLineage's too: those two modules load with or without this package.
DISCOVERY = ["airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"]

CHECK = """
import json, sys
import airflow_provider_cancel.core.operator, airflow_provider_cancel.cancel
{imports}
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("openlineage", "airflow.providers.openlineage",
                                                              "airflow_provider_cancel.core.lineage")))))
"""


def loaded(imports: str) -> list[str]:
    run = subprocess.run([sys.executable, "-c", CHECK.format(imports=imports)], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_importing_every_operator_imports_no_openlineage() -> None:
    imports = "\n".join(f"from {v.module} import {v.operator}, {v.sensor}, {v.hook}" for v in VENDORS)
    assert [m for m in loaded(imports) if m not in DISCOVERY] == []


def test_discovery_alone_loads_the_same() -> None:
    # What the allowance above lets through is Airflow's, not ours: a bare BaseOperator import loads it too.
    bare = "import airflow.providers.common.compat.sdk as sdk\nsdk.BaseOperator"
    run = subprocess.run([sys.executable, "-c", f"import json, sys\n{bare}\nprint(json.dumps(sorted(m for m in "
                          "sys.modules if 'openlineage' in m)))"], capture_output=True, text=True, timeout=120,
                         check=True)
    assert set(json.loads(run.stdout.strip().splitlines()[-1])) <= set(DISCOVERY)


def test_the_check_sees_openlineage_once_lineage_is_asked_for() -> None:
    # The same probe must report the modules once they are imported, else the test above proves nothing.
    imports = (
        "from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator\n"
        "op = DuneRunQueryOperator(task_id='t', sql='SELECT 1')\n"
        "op.get_openlineage_facets_on_complete(None)"
    )
    modules = loaded(imports)
    assert "airflow_provider_cancel.core.lineage" in modules
    assert any(m.startswith("openlineage") for m in modules)
    assert any(m.startswith("airflow.providers.openlineage.extractors") for m in modules)
