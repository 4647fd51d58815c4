"""The sync transport: one httpx.Client per ApiClient, redirects never followed."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from airflow_provider_cancel.core.http._config import USER_AGENT, ClientTimeouts
from airflow_provider_cancel.core.http._models import ApiCall, Received
from airflow_provider_cancel.core.http._transports import tls_context


class SyncTransport:
    def __init__(self, base_url: str, timeouts: ClientTimeouts) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            verify=tls_context(),
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def send(self, call: ApiCall, headers: Mapping[str, str]) -> Received:
        response = self._client.request(call.method, call.path, params=call.params, json=call.json, headers=headers)
        return Received(response.status_code, response.headers, response.content, response.reason_phrase)

    def close(self) -> None:
        self._client.close()
