"""Memory growth of one status read against answers that are huge or never end (issue 14, class 3).

    python benchmarks/huge_answers.py                       # this tree
    python benchmarks/huge_answers.py --tree /path/to/other  # another checkout's provider (e.g. main), same cases

A loopback server (tests/integration/hostile.py, in this process) answers every request with a 600 MiB body
declared in Content-Length, or a 1.5 GiB chunked body; each case runs in a fresh child process that first imports
everything and reads one small answer, then reads the huge one (DuneHook.get_status on the sync path,
aget_status on the async one). Reported per case: the growth of the child's peak RSS (VmHWM) over that read, its
RSS after it, the bytes the server got to send, and how the read ended. Nothing here is a test: figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.hostile import HostileServer, Reply  # noqa: E402

MiB = 1024 * 1024
KEY = "sk-bench-huge-0000"
CASES = {
    "content-length 600 MiB": Reply(body=b'{"padding": "', declared_length=600 * MiB),
    "chunked 1.5 GiB": Reply(body=b'{"padding": "', chunked=True, chunked_total=1536 * MiB),
}
WARM, HUGE = "01HKZJ2683PHF9Q9PHHQ8FW4Q0", "01HKZJ2683PHF9Q9PHHQ8FW4Q1"
CHILD = f"WARM, HUGE = {WARM!r}, {HUGE!r}" + r"""
import asyncio, json, sys, time
from airflow_provider_cancel.vendors.dune import DuneHook

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

path = sys.argv[1]
hook = DuneHook("dune_huge")
def read(eid):
    return hook.get_status(eid) if path == "sync" else asyncio.run(hook.aget_status(eid))

read(WARM)  # one small answer first: imports, the connection, the payload schema and the pool are paid for here
before_hwm, before_rss = status("VmHWM"), status("VmRSS")
started = time.monotonic()
try:
    read(HUGE)
    ended = "answered"
except BaseException as err:
    ended = f"{type(err).__name__}: {str(err)[:160]}"
print(json.dumps({"peak_growth": status("VmHWM") - before_hwm, "rss_after": status("VmRSS") - before_rss,
                  "seconds": round(time.monotonic() - started, 2), "ended": ended}))
"""


def run_case(server: HostileServer, reply: Reply, path: str, tree: Path) -> dict:
    small = Reply(body={"execution_id": WARM, "state": "QUERY_STATE_EXECUTING"})
    server.reply = lambda request: small if WARM in request.path else reply
    server.sent_bytes = 0
    env = {**os.environ, "PYTHONPATH": str(tree), "AIRFLOW_DISABLE_GREENBACK_PORTAL": "true",
           "AIRFLOW_CONN_DUNE_HUGE": json.dumps({"conn_type": "dune", "host": server.url, "password": KEY,
                                                 "extra": {"max_retries": 0, "timeout": 120}})}
    child = subprocess.run([sys.executable, "-c", CHILD, path], env=env, capture_output=True, text=True,
                           timeout=900, cwd="/")
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"ended": f"child failed ({child.returncode}): {child.stderr[-400:]}"}
    figures = json.loads(lines[-1])
    time.sleep(0.2)  # let the server's writer notice the client is gone before its count is read
    figures["server_sent"] = server.sent_bytes
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree whose provider is measured")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = {}
    with HostileServer() as server:
        for name, reply in CASES.items():
            for path in ("sync", "async"):
                figures = run_case(server, reply, path, args.tree.resolve())
                results[f"{name}, {path}"] = figures
                print(f"{name:24} {path:5}  peak RSS +{figures.get('peak_growth', 0) / MiB:7.1f} MiB  "
                      f"RSS after +{figures.get('rss_after', 0) / MiB:7.1f} MiB  server sent "
                      f"{figures.get('server_sent', 0) / MiB:7.1f} MiB  {figures.get('seconds', '?')} s  "
                      f"{figures.get('ended')}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
