"""Run and drive the emulator from tests: ours, and users' own CI. Needs only httpx (not FastAPI).

    with EmulatorProcess("--api-key", "sk-test") as emulator:
        client = emulator.client()
        ...  # point the code under test at emulator.base_url("dune")
        assert len(client.cancels(execution_id)) == 1
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it); EmulatorProcess retries if another process wins."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str | None = None
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(message or f"condition not met within {timeout} s")
        time.sleep(interval)


SPACE_ID, RUNTIME_ID = "5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01", "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7"


def operator_args(vendor: str, scenario: str, tag: str = "") -> dict[str, Any]:
    """Arguments for a vendor's operator that make the emulator run ``scenario`` (e.g. ``"fail:2"``), with ``tag``
    inside the create request so the execution can be told apart in ``executions()``."""
    if vendor == "dune":
        return {"sql": f"SELECT 1 -- emulate:{scenario} {tag}"}
    if vendor == "izieroma":
        return {"goal": f"Run {tag} emulate:{scenario}"}
    if vendor == "bctrl":
        steps = [{"call": "browser.goto", "args": ["https://shop.example.com"]}]
        return {"space_id": SPACE_ID, "runtime_id": RUNTIME_ID, "steps": steps,
                "metadata": {"emulate": scenario, "tag": tag}}
    if vendor == "meibel":
        return {"batch_spec": {"name": tag or "run", "agent": "agent-7d1c", "user_message": f"emulate:{scenario}",
                               "input": {"datasource_id": "ds-invoices"}}}
    if vendor == "b3os":
        return {"workflow_id": "wf_prices", "payload": {"emulate": scenario, "tag": tag}}
    raise ValueError(f"unknown vendor {vendor!r}")


class EmulatorClient:
    """The emulator's control API (``/_emulator``)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/_emulator", timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))

    def journal(
        self,
        vendor: str | None = None,
        action: str | None = None,
        execution_id: str | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        """Journal entries, oldest first (seq, ts, vendor, method, path, query, action, execution_id,
        status_code, fault, auth)."""
        params = {"vendor": vendor, "action": action, "execution_id": execution_id, "since": since}
        entries: list[dict[str, Any]] = self._call(
            "GET", "/journal", params={k: v for k, v in params.items() if v is not None}
        )["entries"]
        return entries

    def cancels(self, execution_id: str) -> list[dict[str, Any]]:
        """Every cancel request for this execution, including rejected or faulted ones (see ``status_code``
        and ``fault``)."""
        return self.journal(action="cancel", execution_id=execution_id)

    def clear_journal(self) -> None:
        self._call("DELETE", "/journal")

    def execution(self, execution_id: str) -> dict[str, Any]:
        """The generic record: id, vendor, scenario, state, polls, cancel_requests, cancelled_by, data..."""
        record: dict[str, Any] = self._call("GET", f"/executions/{execution_id}")
        return record

    def executions(self, vendor: str | None = None) -> list[dict[str, Any]]:
        params = {"vendor": vendor} if vendor else {}
        records: list[dict[str, Any]] = self._call("GET", "/executions", params=params)["executions"]
        return records

    def remote_cancel(self, execution_id: str) -> dict[str, Any]:
        """Cancel the execution as someone else would, outside the vendor API."""
        record: dict[str, Any] = self._call("POST", f"/executions/{execution_id}/remote-cancel")
        return record

    def add_fault(self, **fault: Any) -> dict[str, Any]:
        """E.g. ``add_fault(kind="429", action="status", count=3, retry_after=1)``; returns the stored rule."""
        stored: dict[str, Any] = self._call("POST", "/faults", json=fault)
        return stored

    def faults(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return rules

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_default_scenario(self, scenario: str) -> None:
        self._call("PUT", "/default-scenario", json={"scenario": scenario})

    def set_rate_limit(self, vendor: str, rate: str | None) -> None:
        """E.g. ``set_rate_limit("dune", "40/min")``; None removes the limit."""
        self._call("PUT", f"/rate-limits/{vendor}", json={"rate": rate})

    def stats(self) -> dict[str, Any]:
        """``{"requests": N, "rate_limited": N, "faults": {kind: N}, "executions": {"total", "by_state",
        "by_vendor"}}``."""
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset(self) -> None:
        """Back to the start-up state (no executions, empty journal, command-line faults and settings)."""
        self._call("POST", "/reset")

    wait_for = staticmethod(wait_for)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmulatorProcess:
    """``python -m airflow_provider_cancel.emulator`` in a subprocess on a free loopback port.

    ``args`` are extra command-line arguments (``"--api-key", "k"``, ``"--fault", "kind=503"``...).
    ``start()`` returns once ``/_emulator/health`` answers; ``stop()`` sends SIGTERM, then SIGKILL.
    """

    def __init__(
        self,
        *args: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 60.0,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args, self.host, self.startup_timeout = list(args), host, startup_timeout
        self._requested_port, self._python = port, python
        self._env = {**os.environ, **(env or {})}
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self.port}"

    def base_url(self, vendor: str) -> str:
        """What a client of ``vendor`` uses as its base URL, e.g. ``http://127.0.0.1:PORT/dune``."""
        return f"{self.url}/{vendor}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def client(self, *, timeout: float = 10.0) -> EmulatorClient:
        return EmulatorClient(self.url, timeout=timeout)

    def output(self) -> str:
        """What the process printed so far (stdout and stderr), for failure messages."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def start(self) -> EmulatorProcess:
        output = ""
        # A port chosen by free_port() can be taken before the emulator binds it: then try another one.
        for _ in range(1 if self._requested_port else 5):
            self.port = self._requested_port or free_port(self.host)
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; stop() closes it
            self._proc = subprocess.Popen(
                [self._python, "-m", "airflow_provider_cancel.emulator",
                 "--host", self.host, "--port", str(self.port), *self.args],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
            )
            if self._wait_ready():
                return self
            output = self.output()
            self.stop()
            if "address already in use" not in output.lower():
                break
        raise RuntimeError(f"emulator did not start (args {self.args}):\n{output}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    health = http.get(f"{self.url}/_emulator/health")
                    if health.status_code == 200 and health.json().get("pid") == self._proc.pid:
                        return True
                except (httpx.TransportError, ValueError):
                    pass
                time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """End the process by its pid: SIGTERM, wait up to ``timeout``, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
