"""Minimal loopback stand-ins, for the baselines: Databricks' runs/get + runs/cancel, and Dune's status + cancel.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies, no framework), so it keeps up with
10,000 pollers on a shared 2-core machine and its own cost stays out of the way. Every run is RUNNING
forever; a cancel is answered and its receipt time recorded, for the cancel-latency benchmark.

    python benchmarks/standin.py --port 8123          # serves until SIGTERM
    GET  /_standin/health     {"ok": true, "pid": ...}
    GET  /_standin/receipts   {"receipts": [{"vendor", "id", "ts"}], "requests": N}   (ts: time.time())
    DELETE /_standin/receipts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

# A compact but realistic jobs/runs/get answer (~same size as the emulator's Dune status answer, 261 bytes).
_DATABRICKS_RUN = (
    '{{"job_id":1043,"run_id":{run_id},"number_in_job":{run_id},"creator_user_name":"bench@example.com",'
    '"state":{{"life_cycle_state":"RUNNING","state_message":"In run","user_cancelled_or_timedout":false}},'
    '"start_time":1732390000000,"setup_duration":0,"execution_duration":0,"cleanup_duration":0,'
    '"run_type":"SUBMIT_RUN","run_name":"bench"}}'
)
_DUNE_STATUS = (
    '{{"execution_id":"{id}","query_id":0,"state":"QUERY_STATE_EXECUTING","is_execution_finished":false,'
    '"submitted_at":"2026-11-23T20:03:51.777616Z","expires_at":"2027-02-21T20:03:51.777616Z",'
    '"execution_started_at":"2026-11-23T20:03:51.785328Z"}}'
)


class State:
    def __init__(self) -> None:
        self.requests = 0
        self.receipts: list[dict[str, object]] = []


def _response(status: int, body: str) -> bytes:
    payload = body.encode()
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}.get(status, "OK")
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    head = (
        f"HTTP/1.1 {status} {reason}\r\ndate: {date}\r\nserver: standin\r\ncontent-length: {len(payload)}\r\n"
        "content-type: application/json\r\n\r\n"
    )
    return head.encode() + payload


def _run_id(query: str, body: bytes) -> str:
    if body.strip():
        try:
            data = json.loads(body)
            if isinstance(data, dict) and "run_id" in data:
                return str(data["run_id"])
        except ValueError:
            pass
    return (parse_qs(query).get("run_id") or ["0"])[0]


def route(state: State, method: str, target: str, body: bytes) -> bytes:
    state.requests += 1
    parts = urlsplit(target)
    path = parts.path
    if path == "/api/2.2/jobs/runs/get" and method == "GET":
        return _response(200, _DATABRICKS_RUN.format(run_id=int(_run_id(parts.query, body) or 0)))
    if path == "/api/2.2/jobs/runs/cancel" and method == "POST":
        state.receipts.append({"vendor": "databricks", "id": _run_id(parts.query, body), "ts": time.time()})
        return _response(200, "{}")
    if path.startswith("/dune/api/v1/execution/"):
        segments = path.split("/")  # ['', 'dune', 'api', 'v1', 'execution', ID, ACTION]
        if len(segments) == 7 and segments[6] == "status" and method == "GET":
            return _response(200, _DUNE_STATUS.format(id=segments[5]))
        if len(segments) == 7 and segments[6] == "cancel" and method == "POST":
            state.receipts.append({"vendor": "dune", "id": segments[5], "ts": time.time()})
            return _response(200, '{"success":true}')
    if path == "/_standin/health":
        return _response(200, json.dumps({"ok": True, "pid": os.getpid()}))
    if path == "/_standin/receipts":
        if method == "DELETE":
            state.receipts.clear()
            return _response(200, '{"ok":true}')
        return _response(200, json.dumps({"receipts": state.receipts, "requests": state.requests}))
    return _response(404, '{"error":"not found"}')


class HttpProtocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, target, _ = ([*head[0].split(" "), "", ""])[:3]
            self.transport.write(route(self.state, method, target, body))
            if close:
                self.transport.close()
                return


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    state = State()
    server = await loop.create_server(lambda: HttpProtocol(state), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop  # the emulator runs on uvloop too (uvicorn picks it up); server speed only

        uvloop.run(serve(args.host, args.port))
    except ImportError:
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
