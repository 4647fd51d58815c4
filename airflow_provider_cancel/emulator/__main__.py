"""Command line: ``python -m airflow_provider_cancel.emulator`` / ``airflow-provider-cancel-emulator``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from airflow_provider_cancel.emulator.app import VENDORS, create_app
from airflow_provider_cancel.emulator.engine import EmulatorConfig

_EPILOG = """\
vendors
  Each vendor is served under its own prefix, so a client's base URL is http://HOST:PORT/<vendor>
  followed by the vendor's real paths, e.g. http://127.0.0.1:8765/dune/api/v1/sql/execute.
  Vendors: {vendors}.

scenarios
  Every execution follows a scenario, read from a marker anywhere in the create request's JSON body or
  query string, e.g. SQL "SELECT 1 -- emulate:forever" or {{"query_parameters": {{"emulate": "fail:3"}}}}:

      emulate:<outcome>[:<N>|@<S>s][,rows=<R>]

  outcome  succeed        completes successfully (the default)
           fail           fails with the vendor's error
           forever        never ends by itself; only a cancel stops it
           remote_cancel  is cancelled by someone else, not through the API
           partial        completes with a truncated result (Dune: QUERY_STATE_COMPLETED_PARTIAL)
  :N       the outcome shows on status poll N+1 (default 2: first poll pending, then running, then it)
  @Ss      the outcome is reached S seconds after creation, however often it is polled (long runs)
  rows=R   number of result rows (default 5)

  Without a marker an execution gets --default-scenario; change it at runtime with
  PUT /_emulator/default-scenario {{"scenario": "fail:1"}}.

faults
  --fault kind=K[,vendor=V][,action=A][,count=C][,probability=P][,retry_after=S][,delay=S][,size=B]
  (or POST /_emulator/faults with the same fields as JSON)

  kind         429              429, the vendor's 429 body and Retry-After (retry_after, default 1 s)
               500 502 503 504  that status with the vendor's error body (Retry-After if retry_after is set)
               403              the vendor's 403 body: the key is refused mid-run (not transient)
               slow             waits `delay` seconds (default 5), then answers normally
               drop             sends headers and part of the body, then closes the connection
               malformed        200 with a truncated, invalid JSON body
               huge             200 declaring `size` bytes (default 600 MiB) in Content-Length, streamed filler
               endless          200 with a chunked body of filler that never ends
               echo_key         the vendor's 401, whose body echoes the key it was sent
             the vendor acts, then its answer is spoiled (a create creates, a cancel cancels):
               drip             the answer's body one byte every `delay` seconds (default 0.5)
               odd_field        an optional field of the answer in a wrong type (the id stays readable)
               odd_rate_limit   Retry-After: inf, X-RateLimit-Remaining: nan, X-RateLimit-Reset: -inf
               deep_json        a value nested 100,000 levels deep next to the answer's fields
               other_id         the answer names another execution id (status answers)
  vendor       one of the vendors above (default: any)
  action       create | status | result | cancel | list | other (default: any)
  count        how many matching requests to fault (default 1; unlimited if only probability is set)
  probability  fault each matching request with this probability (RNG seeded by --seed)

  A faulted request never reaches the vendor logic: a faulted create creates nothing and a faulted cancel
  cancels nothing. The exceptions are `slow`, which answers normally after the delay (a slow create does
  create, which is exactly the ambiguous case a client's retry logic must survive), and the spoilers above.
  Examples:  --fault kind=429,action=status,count=3,retry_after=1
             --fault kind=503,probability=0.1
             --fault kind=drop,vendor=dune,action=cancel

rate limits
  --rate-limit VENDOR=N/WINDOW, e.g. dune=40/min, dune=1000/day, dune=3/2s: a sliding window per vendor and
  API key; over it, 429 with Retry-After (plus X-RateLimit-* headers for vendors that document them).

control API (JSON, no auth) under /_emulator; interactive docs at /_emulator/docs
  GET    health  journal?vendor=&action=&execution_id=&since=  executions[/ID]  faults  stats
  POST   faults  reset  executions/ID/remote-cancel
  PUT    default-scenario  rate-limits/VENDOR
  DELETE journal  faults
  POST /_emulator/reset returns to the start-up state, including the command-line faults, scenario and limits.
  The journal records method, path, query (minus keys), action, execution id, status, fault and auth
  result of every vendor request; never a header, a body or an API key.

errors on demand (special ids)
  dune    query_id 404404 does not exist, 403403 is archived
  bctrl   space or runtime 00000000-0000-4000-8000-000000404404 -> 404, runtime ...-000000409409 -> 409 busy;
          header BCTRL-Subaccount-Id: sub_forbidden -> 403
  meibel  batch definition 00000000-0000-0000-0000-000000000404 -> 404
  b3os    wf_missing -> 404, wf_archived -> 400, wf_no_cu -> 402; wf_approval (or a payload with
          "emulate_waiting": N) stays `waiting` before its scenario ends

your own CI
  Point an Airflow connection at the emulator and run your DAGs with `airflow dags test`:
      AIRFLOW_CONN_DUNE_DEFAULT='{{"conn_type": "dune", "host": "http://127.0.0.1:8765/dune", "password": "k"}}'
  or start it from pytest with airflow_provider_cancel.emulator.testing.EmulatorProcess.
  Scenarios, faults, the control API and recipes: docs/emulator.md in the airflow-provider-cancel repository.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-provider-cancel-emulator",
        description="Local emulator of the remote-execution vendor APIs used by airflow-provider-cancel.",
        epilog=_EPILOG.format(vendors=", ".join(VENDORS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--api-key", action="append", default=[], metavar="KEY",
        help="accept only this key (repeatable); without it any non-empty key is accepted",
    )
    parser.add_argument(
        "--default-scenario", default="succeed:2", metavar="SCENARIO",
        help="scenario for executions without an emulate: marker (default: %(default)s)",
    )
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC", help="inject a fault (repeatable)")
    parser.add_argument(
        "--rate-limit", action="append", default=[], metavar="VENDOR=RATE",
        help="rate limit a vendor, e.g. dune=40/min (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults (default: %(default)s)")
    parser.add_argument(
        "--journal-limit", type=int, default=200_000, metavar="N",
        help="keep at most N journal entries, oldest dropped first (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default: %(default)s); access logs stay off: they would show api_key params",
    )
    return parser


class _QuietDrops(logging.Filter):
    """Hide uvicorn's complaint about the response a `drop` fault leaves incomplete on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    rate_limits = {}
    for spec in args.rate_limit:
        vendor, sep, rate = spec.partition("=")
        if not sep:
            parser.error(f"--rate-limit {spec!r}: expected VENDOR=RATE, e.g. dune=40/min")
        rate_limits[vendor.strip()] = rate.strip()
    config = EmulatorConfig(
        api_keys=args.api_key,
        default_scenario=args.default_scenario,
        faults=args.fault,
        rate_limits=rate_limits,
        seed=args.seed,
        journal_limit=args.journal_limit,
    )
    try:
        app = create_app(config)
    except ValueError as exc:
        parser.error(str(exc))

    import uvicorn

    server_config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    print(f"emulator on http://{args.host}:{args.port} (vendors: {', '.join(VENDORS)}; control: /_emulator)",
          file=sys.stderr, flush=True)
    uvicorn.Server(server_config).run()


if __name__ == "__main__":
    main()
