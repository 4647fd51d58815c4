"""The one list of vendors: provider info, the clean-up operator, the tests and the soak all read it.

Plain data with no imports of the vendor modules, so that reading it (Airflow's provider discovery does, in
every component) costs nothing. A sixth vendor is one entry here plus its module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vendor:
    conn_type: str  # also the vendor's key everywhere: emulator prefix, test ids, docs/<conn_type>.md
    display_name: str  # the connection type's name in the UI
    hook: str  # class names in airflow_provider_cancel.vendors.<conn_type>
    operator: str
    sensor: str
    links: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"airflow_provider_cancel.vendors.{self.conn_type}"

    @property
    def hook_path(self) -> str:
        return f"{self.module}.{self.hook}"

    @property
    def operator_path(self) -> str:
        return f"{self.module}.{self.operator}"

    @property
    def sensor_path(self) -> str:
        return f"{self.module}.{self.sensor}"

    @property
    def link_paths(self) -> tuple[str, ...]:
        return tuple(f"{self.module}.{link}" for link in self.links)


VENDORS: tuple[Vendor, ...] = (
    Vendor("dune", "Dune", "DuneHook", "DuneRunQueryOperator", "DuneExecutionSensor", ("DuneQueryLink",)),
    Vendor("izieroma", "izieroma (ROMA API)", "IzieromaHook", "IzieromaRunOperator", "IzieromaExecutionSensor"),
    Vendor("bctrl", "bctrl", "BctrlHook", "BctrlInvokeOperator", "BctrlInvocationSensor"),
    Vendor("meibel", "Meibel", "MeibelHook", "MeibelRunBatchOperator", "MeibelBatchExecutionSensor",
           ("MeibelConsoleLink",)),
    Vendor("b3os", "B3OS", "B3osHook", "B3osRunWorkflowOperator", "B3osRunSensor", ("B3osWorkflowLink",)),
)
BY_CONN_TYPE: dict[str, Vendor] = {vendor.conn_type: vendor for vendor in VENDORS}
CONN_TYPES: tuple[str, ...] = tuple(BY_CONN_TYPE)
