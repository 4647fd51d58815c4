"""Placeholder: the bctrl router is being written."""

from __future__ import annotations

import uuid

from fastapi.responses import JSONResponse

from airflow_provider_cancel.emulator.engine import VendorAPI

api = VendorAPI(
    "bctrl",
    api_key=lambda r: r.headers.get("authorization"),
    error=lambda status, msg: JSONResponse({"error": msg}, status_code=status),
    new_id=lambda: str(uuid.uuid4()),
)
