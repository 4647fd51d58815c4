"""The emulator's ASGI app: every vendor router under ``/<vendor>``, the control API under ``/_emulator``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from airflow_provider_cancel.emulator.engine import EmulatorConfig, Engine, Execution, Fault, VendorAPI
from airflow_provider_cancel.registry import CONN_TYPES

# One module per vendor of the registry, named after its conn_type (see dune.py), each declaring its VendorAPI `api`.
VENDORS: dict[str, VendorAPI] = {
    name: importlib.import_module(f"airflow_provider_cancel.emulator.{name}").api for name in CONN_TYPES
}


def create_app(config: EmulatorConfig | None = None, vendors: Iterable[VendorAPI] | None = None) -> FastAPI:
    """Build the emulator (``vendors`` defaults to all of :data:`VENDORS`).

    Invalid configuration (scenario, fault, rate limit) raises ValueError.
    """
    apis = {api.name: api for api in (VENDORS.values() if vendors is None else vendors)}
    app = FastAPI(
        title="airflow-provider-cancel vendor emulator",
        description="Local stand-in for the vendor APIs. Control API under /_emulator.",
        docs_url="/_emulator/docs",
        redoc_url=None,
        openapi_url="/_emulator/openapi.json",
    )
    app.state.engine = Engine(config or EmulatorConfig(), apis)
    for api in apis.values():
        app.include_router(api.router())
    app.include_router(control)
    return app


# -- control API -----------------------------------------------------------------------------------------------

control = APIRouter(prefix="/_emulator", tags=["control"])


async def _engine(request: Request) -> Engine:  # async: FastAPI would run a sync dependency in a thread
    return request.app.state.engine  # type: ignore[no-any-return]


EngineDep = Annotated[Engine, Depends(_engine)]


class ScenarioBody(BaseModel):
    scenario: str


class RateLimitBody(BaseModel):
    rate: str | None  # e.g. "40/min"; null removes the limit


def _ok() -> dict[str, bool]:
    return {"ok": True}


def _bad_request(exc: ValueError) -> HTTPException:
    return HTTPException(status_code=422, detail=str(exc))


@control.get("/health")
async def health() -> dict[str, Any]:
    # The pid lets a launcher tell its own emulator from another server already on the port.
    return {"ok": True, "pid": os.getpid()}


@control.get("/journal")
async def journal(
    engine: EngineDep,
    vendor: str | None = None,
    action: str | None = None,
    execution_id: str | None = None,
    since: int = 0,
) -> dict[str, Any]:
    """Recorded vendor requests, oldest first; ``since`` returns only entries with a larger ``seq``."""
    return {"entries": engine.journal.select(vendor, action, execution_id, since)}


@control.delete("/journal")
async def clear_journal(engine: EngineDep) -> dict[str, bool]:
    engine.journal.clear()
    return _ok()


@control.get("/executions")
async def executions(engine: EngineDep, vendor: str | None = None) -> dict[str, Any]:
    return {"executions": [ex.to_dict() for ex in engine.find(vendor)]}


@control.get("/executions/{execution_id}")
async def execution(engine: EngineDep, execution_id: str) -> dict[str, Any]:
    return _existing(engine, execution_id).to_dict()


@control.post("/executions/{execution_id}/remote-cancel")
async def remote_cancel(engine: EngineDep, execution_id: str) -> dict[str, Any]:
    """Cancel as someone else would (vendor UI, another client): not journaled as an API cancel."""
    ex = _existing(engine, execution_id)
    engine.remote_cancel(ex)
    return ex.to_dict()


def _existing(engine: Engine, execution_id: str) -> Execution:
    ex = engine.get(None, execution_id)
    if ex is None:
        raise HTTPException(status_code=404, detail=f"no execution {execution_id!r}")
    return ex


@control.get("/faults")
async def faults(engine: EngineDep) -> dict[str, Any]:
    return {"faults": [f.model_dump() for f in engine.faults]}


@control.post("/faults")
async def add_fault(engine: EngineDep, fault: Fault) -> dict[str, Any]:
    try:
        return engine.add_fault(fault).model_dump()
    except ValueError as exc:
        raise _bad_request(exc) from None


@control.delete("/faults")
async def clear_faults(engine: EngineDep) -> dict[str, bool]:
    engine.faults.clear()
    return _ok()


@control.get("/default-scenario")
async def default_scenario(engine: EngineDep) -> dict[str, str]:
    return {"scenario": str(engine.default_scenario)}


@control.put("/default-scenario")
async def set_default_scenario(engine: EngineDep, body: ScenarioBody) -> dict[str, str]:
    """Scenario for executions whose create request carries no ``emulate:`` marker."""
    try:
        engine.default_scenario = engine.default_scenario.parse(body.scenario)
    except ValueError as exc:
        raise _bad_request(exc) from None
    return {"scenario": str(engine.default_scenario)}


@control.get("/rate-limits")
async def rate_limits(engine: EngineDep) -> dict[str, str]:
    return {vendor: str(rate) for vendor, rate in engine.rate_limits.items()}


@control.put("/rate-limits/{vendor}")
async def set_rate_limit(engine: EngineDep, vendor: str, body: RateLimitBody) -> dict[str, str]:
    try:
        engine.set_rate_limit(vendor, body.rate)
    except ValueError as exc:
        raise _bad_request(exc) from None
    return {v: str(rate) for v, rate in engine.rate_limits.items()}


@control.get("/stats")
async def stats(engine: EngineDep) -> dict[str, Any]:
    return engine.stats()


@control.post("/reset")
async def reset(engine: EngineDep) -> dict[str, bool]:
    """Back to the start-up state: no executions, empty journal, zero counters, CLI faults/limits/scenario."""
    engine.reset()
    return _ok()
