"""One operator factory per vendor, `scenario` in, for the tests that run the same lifecycle on all five."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator

from .test_b3os_lifecycle import op as b3os_op
from .test_bctrl_lifecycle import op as bctrl_op
from .test_dune_lifecycle import op as dune_op
from .test_izieroma_lifecycle import op as izieroma_op
from .test_meibel_lifecycle import op as meibel_op

OPERATORS: dict[str, Callable[..., BaseOperator]] = {
    "dune": lambda scenario, **kw: dune_op(f"SELECT 1 -- emulate:{scenario}", **kw),
    "izieroma": lambda scenario, **kw: izieroma_op(f"Summarise the week emulate:{scenario}", **kw),
    "bctrl": bctrl_op,
    "meibel": meibel_op,
    "b3os": b3os_op,
}


def scenario_operator(vendor: str, scenario: str, **kw: Any) -> Any:
    """The vendor's run operator against the emulator connection, with fast polling, running `scenario`."""
    return OPERATORS[vendor](scenario, **kw)
