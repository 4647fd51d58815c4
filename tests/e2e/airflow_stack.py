"""A real Airflow 3.3 stack for end-to-end tests, driven through the public REST API like the UI.

``AirflowStack`` starts ``airflow standalone`` (scheduler with LocalExecutor, dag-processor, triggerer,
api-server) in a temporary ``AIRFLOW_HOME`` on a private PostgreSQL server (``tests/e2e/postgres.py``; SQLite
froze under waves of task starts), waits until ``/api/v2/monitor/health`` reports every
component healthy, and offers REST helpers (trigger runs, mark TIs failed/success, clear, read XCom/logs) and
process helpers (find the pids of a running task, restart the triggerer, start a second triggerer) for the
kill-path tests.

Process layout (all pids below are in one session whose id is ``stack.sid``)::

    pytest (this process)
     └─ stack leader  (python airflow_stack.py --leader; session + process-group leader, child subreaper)
         ├─ airflow standalone            -> standalone.log
         │   ├─ airflow scheduler
         │   │   ├─ airflow serve-logs                      (worker log server, free port)
         │   │   └─ airflow worker -- LocalExecutor: <idle>   x parallelism  (forked, same group)
         │   │        └─ airflow worker -- <ti.id>            task runner, own process group, same session
         │   ├─ airflow dag-processor  (+ forked parsing processes)
         │   ├─ airflow api-server     (uvicorn, 1 worker, 127.0.0.1:<port>)
         │   └─ airflow triggerer      (+ forked trigger runner, + airflow serve-logs on the trigger log port)
         └─ airflow triggerer ...         -> triggerer-<n>.log  (restart_triggerer / start_extra_triggerer)

Which process is which for a running task (``task_pids``):

* ``supervisor``: the LocalExecutor worker process that runs ``supervise_task()`` for the TI. Its title is
  ``airflow worker -- LocalExecutor: <ti.id>`` while it supervises the TI and ``... <idle>`` otherwise; it is a
  long-lived pool process of the scheduler (it is *not* gone after the task ends, it goes back to idle).
  SIGTERM to it is forwarded to the task runner (``ActivitySubprocess._forward_signal``).
* ``runner``: the forked task process that runs ``execute()``; title ``airflow worker -- <ti.id>`` (set by
  ``task_runner.startup``; until then it still carries the supervisor's title). It is the ``pid`` that the
  TI REST payload reports, and it leads its own process group (``new_process_group=True``).
* ``ti.id`` changes on every clear (``prepare_db_for_next_try`` assigns a new uuid7), so always look the pids
  up through the current TI.

Why a leader process: ``airflow standalone`` and every component must be ended as a group, and a restarted
or extra triggerer must belong to the same group. A process can only join a process group of its own
session, so the stack's session is led by a tiny leader that spawns processes on request (JSON lines over
its stdin). The leader is also a child subreaper (orphans of the stack are re-parented to it, so even
processes that ``setsid`` away stay findable as its descendants), tears the stack down on SIGTERM, and
tears it down when its stdin hits EOF, i.e. when the test process died without running ``stop()``.
``stop()`` additionally sweeps the session from outside, and an ``atexit`` hook calls ``stop()``.

Usage::

    with AirflowStack(Path("tests/e2e/dags"), env={"AIRFLOW_CONN_ACME_DEFAULT": json.dumps({...})},
                      parallelism=4) as stack:
        stack.wait_dag("my_dag")
        run_id = stack.trigger("my_dag")
        stack.wait_ti("my_dag", run_id, "op", {"running"}, timeout=120)
        pids = stack.wait_task_pids("my_dag", run_id, "op")       # .supervisor / .runner
        stack.set_ti_state("my_dag", run_id, "op", "failed")       # the UI's "Mark as failed"
        AirflowStack.wait_until(lambda: not pid_alive(pids.runner), timeout=60)

Settings worth knowing for kill tests (pass them in ``env``):

* ``[workers] min_heartbeat_interval`` (= ``heartbeat``, 1 s here): latency until a supervisor notices a
  mark-failed/success/clear (409/410 on its heartbeat) and SIGTERMs the task, then SIGKILL 5 s later
  (hard-coded escalation delay).
* ``AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT`` (300 s): how long a TI whose worker was SIGKILLed
  stays RUNNING before the scheduler fails it.
* ``AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD`` (30 s): after a SIGKILLed triggerer, its triggers
  move to another triggerer only once its job looks dead (SIGTERM ends the job at once).
* The inherited ``AIRFLOW*`` variables of the test process are *not* passed on; everything comes from the
  defaults in ``_build_env`` and ``env``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from .postgres import PostgresServer
    from .topology import Topology

__all__ = [
    "AirflowStack",
    "ProcInfo",
    "StackError",
    "TaskProcesses",
    "free_port",
    "pid_alive",
    "render_log_line",
]

T = TypeVar("T")

REDELIVERY_SECONDS = 30  # the Celery stack's visibility timeout (see _celery_env)
TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class StackError(RuntimeError):
    """Anything that went wrong with the stack: startup, a REST call, a wait that timed out."""


# --------------------------------------------------------------------------------------------------------------
# /proc helpers (Linux only)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # one letter from /proc/<pid>/stat: R S D Z T X ...
    cmdline: tuple[str, ...]

    @property
    def title(self) -> str:
        return " ".join(self.cmdline)

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def _read_proc(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces/parens: split after the last ')'
    rest = stat[stat.rfind(")") + 2 :].split()
    if len(rest) < 4:
        return None
    cmdline = tuple(p for p in raw.decode(errors="replace").split("\0") if p)
    if len(cmdline) == 1 and " " in cmdline[0]:
        # setproctitle may write the whole title into argv[0]
        cmdline = tuple(cmdline[0].split(" "))
    return ProcInfo(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0], cmdline)


def _all_procs() -> list[ProcInfo]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _read_proc(int(name))
            if info is not None:
                out.append(info)
    return out


def _family(
    root: int, sid: int | None = None, procs: list[ProcInfo] | None = None, zombies: bool = False
) -> list[ProcInfo]:
    """Live descendants of ``root`` plus live members of session ``sid`` (``root`` itself excluded)."""
    procs = _all_procs() if procs is None else procs
    children: dict[int, list[ProcInfo]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: dict[int, ProcInfo] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child.pid not in found:
                found[child.pid] = child
                stack.append(child.pid)
    if sid is not None:
        for p in procs:
            if p.sid == sid:
                found.setdefault(p.pid, p)
    found.pop(root, None)
    return sorted((p for p in found.values() if zombies or p.alive), key=lambda p: p.pid)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    info = _read_proc(pid)
    return info is not None and info.alive


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (and, when possible, on the wildcard address too)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # the log servers bind the wildcard address (:: or 0.0.0.0): make sure that is free too
        try:
            fam = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        except OSError:
            continue
        return port
    raise StackError("could not find a free port")


def _port_open(port: int | None) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port or 0), timeout=1):
        return True
    return False


def _is_airflow_cmd(cmdline: tuple[str, ...], sub: str) -> bool:
    return any(os.path.basename(a) == "airflow" and cmdline[i + 1] == sub for i, a in enumerate(cmdline[:-1]))


# --------------------------------------------------------------------------------------------------------------
# The leader process (runs as ``python airflow_stack.py --leader GRACE``)
# --------------------------------------------------------------------------------------------------------------


class _Shutdown(BaseException):
    pass


class _PortClash(StackError):
    pass


def _leader_main(grace: float) -> None:  # pragma: no cover - runs in its own process
    me = os.getpid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    stopping = threading.Event()

    def reaper() -> None:
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                if stopping.wait(0.2):
                    return
            except InterruptedError:
                pass

    threading.Thread(target=reaper, daemon=True).start()

    tearing_down = False
    cause = "eof"

    def on_term(signum, frame):
        nonlocal cause
        if not tearing_down:
            cause = signal.Signals(signum).name
            raise _Shutdown()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def teardown() -> None:
        nonlocal tearing_down
        tearing_down = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        sys.stderr.write(f"stack leader: teardown ({cause}), grace {grace}s\n")
        # After stop() the group already got its SIGTERM (killpg); on EOF / shutdown request it did not.
        # Processes of the session in other groups (task runners lead their own) or that left the session
        # (re-parented to this subreaper) never get the group's signal: SIGTERM them individually.
        if cause != "SIGTERM":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(me, signal.SIGTERM)
        for p in _family(me, me):
            if p.pgid != me:
                _signal(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _family(me, me):
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = _family(me, me)
            if not left:
                break
            sys.stderr.write(f"stack leader: SIGKILL {[(p.pid, p.title[:60]) for p in left]}\n")
            for p in left:
                _signal(p.pid, signal.SIGKILL)
            time.sleep(0.05)
        # let the reaper thread collect the zombies re-parented to us, so none outlives the leader
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and _family(me, zombies=True):
            time.sleep(0.05)
        stopping.set()
        sys.stderr.flush()
        os._exit(0)

    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if req.get("op") == "shutdown":
                    cause = "shutdown request"
                    raise _Shutdown()
                if req.get("op") == "grace":
                    grace = float(req["grace"])
                    sys.stdout.write(json.dumps({"ok": True, "grace": grace}) + "\n")
                    sys.stdout.flush()
                    continue
                log = open(req["log"], "ab")  # noqa: SIM115
                try:
                    proc = subprocess.Popen(
                        req["argv"],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=req.get("env"),
                        cwd=req.get("cwd"),
                    )
                finally:
                    log.close()
                proc.returncode = 0  # the reaper thread owns waitpid(); keep Popen from waiting
                resp = {"ok": True, "pid": proc.pid}
            except _Shutdown:
                raise
            except Exception as e:
                resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            sys.stdout.write(json.dumps(resp) + "\n")
            sys.stdout.flush()
    except _Shutdown:
        pass
    teardown()  # SIGTERM, shutdown request, or EOF on stdin (the test process is gone)


# --------------------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TaskProcesses:
    """The processes of one running task instance (see the module docstring for which is which)."""

    ti_id: str
    state: str | None
    try_number: int
    rest_pid: int | None  # TI ``pid`` from the REST payload (= the task runner's pid once it started)
    hostname: str | None
    supervisor: int | None = None  # LocalExecutor worker running supervise_task() for this TI
    runner: int | None = None  # forked task process running execute()
    processes: list[ProcInfo] = field(default_factory=list)  # every stack process whose title has the TI id

    @property
    def pids(self) -> list[int]:
        return [p for p in (self.supervisor, self.runner) if p]


# --------------------------------------------------------------------------------------------------------------
# Log rendering, as the UI's text mode does (renderStructuredLog in airflow/ui, 3.3.2)
# --------------------------------------------------------------------------------------------------------------

_UI_HIDDEN_KEYS = ("ti_id", "dag_id", "task_id", "run_id", "try_number", "map_index")


def render_log_line(entry: Any, *, show_timestamp: bool = True, show_source: bool = True) -> str:
    """Render one item of the log endpoint's ``content`` the way the UI renders it as text."""
    if isinstance(entry, str):
        return entry
    entry = dict(entry)
    event = str(entry.pop("event", ""))
    level = entry.pop("level", None)
    ts = entry.pop("timestamp", None)
    parts: list[str] = []
    if ts and show_timestamp:
        parts.append(f"[{ts}] ")
    if isinstance(level, str):
        parts.append(f"{level.upper()} - ")
    error_detail = entry.pop("error_detail", None)
    parts.append(event)
    if "filename" in entry and "lineno" in entry:
        entry["loc"] = f"{entry.pop('filename')}:{entry.pop('lineno')}"
    for key, value in entry.items():
        if key in _UI_HIDDEN_KEYS:
            continue
        if not show_source and key in ("logger", "chan", "lineno", "filename", "loc"):
            continue
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        parts.append(f" {'source' if key == 'logger' else key}={shown} ")
    if error_detail:
        for exc in error_detail:
            frames = "".join(
                f"    File {fr.get('filename')}, line {fr.get('lineno')} in {fr.get('name')}\n"
                for fr in exc.get("frames", [])
            )
            parts.append(f"\n{exc.get('exc_type')}: {exc.get('exc_value')}\n{frames}")
    return "".join(parts)


def _tail(path: Path, lines: int = 80) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(data.splitlines()[-lines:])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _has_serde_tag(value: Any) -> bool:
    if isinstance(value, dict):
        return "__classname__" in value or any(_has_serde_tag(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_serde_tag(v) for v in value)
    return False


# --------------------------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------------------------


class AirflowStack:
    """A real ``airflow standalone`` stack in a temporary AIRFLOW_HOME. Use as a context manager.

    :param dags_folder: the ``[core] dags_folder`` of the stack (the ``dags-folder`` bundle).
    :param env: extra environment for every Airflow process of the stack, applied last, e.g.
        ``{"AIRFLOW_CONN_ACME_DEFAULT": json.dumps({...}), "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "0"}``.
    :param parallelism: ``[core] parallelism`` = number of LocalExecutor worker processes (all forked at start).
    :param heartbeat: ``[workers] min_heartbeat_interval``: how fast a supervisor notices mark-failed/clear.
    :param startup_timeout: deadline for the stack to become healthy.
    :param stop_grace: seconds between SIGTERM and SIGKILL in ``stop()``.
    :param keep_home: keep the temporary AIRFLOW_HOME after ``stop()`` (also kept if env
        ``AIRFLOW_STACK_KEEP_HOME=1``), e.g. to read the logs of a failed run.
    :param database: ``"postgres"`` (a private server in AIRFLOW_HOME/postgres-N, ended with the stack) or
        ``"sqlite"``; default: env ``AIRFLOW_STACK_DB``, else ``"postgres"``. On SQLite, Airflow 3.3's
        api-server froze for 30-120 s when ~16 tasks started at once, and tasks died at start.
    :param topology: which components run, and how many (``tests/e2e/topology.py``; default ``STANDALONE``).
        Every component is its own process in the stack's session, its pid in ``components``.
    """

    def __init__(
        self,
        dags_folder: Path,
        env: dict[str, str] | None = None,
        parallelism: int = 16,
        heartbeat: int = 1,
        *,
        startup_timeout: float = 240.0,
        stop_grace: float = 10.0,
        request_timeout: float = 150.0,  # above SQLite's busy timeout: a slow answer is not a failure
        keep_home: bool = False,
        database: str | None = None,
        topology: Topology | None = None,
    ) -> None:
        from .topology import STANDALONE  # here: the leader runs this file as a script

        self.topology = topology or STANDALONE
        self.database = database or os.environ.get("AIRFLOW_STACK_DB") or "postgres"
        if self.database not in ("postgres", "sqlite"):
            raise StackError(f"database must be 'postgres' or 'sqlite', not {self.database!r}")
        if self.topology.celery and self.database != "postgres":
            raise StackError("a Celery stack needs PostgreSQL (several schedulers, the Celery result backend)")
        self.postgres: PostgresServer | None = None
        self._db_url: str | None = None
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = dict(env or {})
        self.parallelism = parallelism
        self.heartbeat = heartbeat
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.request_timeout = request_timeout
        self.keep_home = keep_home or os.environ.get("AIRFLOW_STACK_KEEP_HOME") == "1"

        self.home: Path | None = None
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self.stop_seconds: float | None = None
        self.standalone_pid: int | None = None
        self.components: dict[str, int] = {}  # component name (topology.py) -> pid
        self.triggerer_job_ids: dict[str, int] = {}  # triggerer component -> its TriggererJob id
        self.redis_port: int | None = None
        self.triggerer_log_paths: list[Path] = []
        self._env: dict[str, str] | None = None
        self._leader: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._spawn_count = 0
        self._stopped = False
        self.leftovers_killed: list[ProcInfo] = []  # what stop() had to SIGKILL from outside the leader

    # ---------------------------------------------------------------------------------------- properties
    @property
    def env(self) -> dict[str, str]:
        """The full environment of the stack's processes (a copy): use it for ``airflow`` CLI calls."""
        if self._env is None:
            raise StackError("stack not started")
        return dict(self._env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sid(self) -> int:
        """Session id = process-group id = pid of the stack leader."""
        if self._leader is None:
            raise StackError("stack not started")
        return self._leader.pid

    pgid = sid

    @property
    def log_path(self) -> Path:
        """The ``airflow standalone`` output (all four components, prefixed by component name)."""
        assert self.home is not None
        return self.home / "standalone.log"

    @property
    def airflow_bin(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise StackError("stack not started")
        return self._client

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------- environment
    def _build_env(self) -> dict[str, str]:
        assert self.home is not None and self.port is not None
        base = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith(("AIRFLOW", "_AIRFLOW")) or k in ("FORCE_COLOR", "PYTEST_CURRENT_TEST"))
        }
        bin_dir = str(Path(sys.executable).parent)
        base["PATH"] = bin_dir + os.pathsep + base.get("PATH", "")
        try:
            from cryptography.fernet import Fernet

            fernet = Fernet.generate_key().decode()
        except Exception:  # pragma: no cover
            fernet = ""
        home = str(self.home)
        af = {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": self.topology.executor,
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": fernet,
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._db_url or "",
            # 32 tasks starting and heartbeating at once through one api-server worker ran its default pool
            # (5 + 10 overflow) dry: requests waited the pool's 30 s and were answered 500 "Database error".
            # PostgreSQL here allows 400 connections (tests/e2e/postgres.py).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "20",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "30",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__SECRET_KEY": "airflow-stack-e2e-secret-key",
            "AIRFLOW__API__EXPOSE_CONFIG": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-stack-e2e-jwt-secret-0123456789abcdef",
            # Airflow 3.0 always writes an "iss" claim, None when unset, and PyJWT >= 2.12 refuses a None
            # issuer ("Issuer (iss) must be a string."; 2.15.1 here): without a constraints file 3.0.6 gets it.
            "AIRFLOW__API_AUTH__JWT_ISSUER": "airflow-stack-e2e",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(self.heartbeat),
            # Dozens of tasks starting at once on 2 cores and SQLite: the api-server took up to 31 s to mark a
            # task started, and at the default 5 s timeout (3 failed heartbeats) tasks died before they ran.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "10",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
            "AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": f"{home}/logs",
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.topology.celery:
            af.update(self._celery_env())
        env = {**base, **af, **self.extra_env}
        # the API port is fixed by start(); keep the execution API URL consistent with it
        env["AIRFLOW__API__PORT"] = str(self.port)
        if "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" not in self.extra_env:
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.base_url}/execution/"
        return env

    def _celery_env(self) -> dict[str, str]:
        """CeleryExecutor on the stack's Redis, results in its PostgreSQL; 1 s job heartbeats, so the other
        scheduler and triggerer see a dead one within the thresholds below (docs/kill-paths.md, D rows)."""
        assert self._db_url is not None and self.redis_port is not None
        return {
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self._db_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.topology.worker_concurrency),
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # Redis hands an unacknowledged message (task_acks_late) to another worker after this long: 30 s
            # (default 1 day) so every task that runs longer is redelivered while it runs (D6), on every row.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(REDELIVERY_SECONDS),
        }

    # ---------------------------------------------------------------------------------------- lifecycle
    def start(self) -> AirflowStack:
        """Start the stack and wait until every component is healthy (``startup_seconds`` = time taken).

        If a port picked as free got taken before a component bound it, the stack is torn down and started
        again on new ports (up to 3 attempts).
        """
        if self._leader is not None:
            raise StackError("stack already started")
        t0 = time.monotonic()
        for attempt in range(3):
            try:
                self._start_once()
                break
            except _PortClash as e:
                self.stop()
                self._leader, self._stopped, self._env, self._client = None, False, None, None
                if attempt == 2:
                    raise StackError(f"ports kept clashing; last: {e}") from None
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_once(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="airflow-stack-"))
        self.port = free_port()
        self.redis_port = free_port() if self.topology.celery else None
        self._db_url = self._start_database()
        self._env = self._build_env()
        self._client = httpx.Client(base_url=self.base_url, timeout=self.request_timeout)
        leader_log = open(self.home / "stack-leader.log", "ab")  # noqa: SIM115
        try:
            self._leader = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--leader", str(self.stop_grace)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=leader_log,
                env=self._env,
                cwd=str(self.home),
                start_new_session=True,
            )
        finally:
            leader_log.close()
        atexit.register(self._atexit_stop)
        try:
            if self.topology.standalone:
                self.standalone_pid = self.spawn([self.airflow_bin, "standalone"], self.log_path)
                self.components = {"standalone": self.standalone_pid}
            else:
                self._start_components()
            self._wait_ready(time.monotonic() + self.startup_timeout)
        except _PortClash:
            raise
        except BaseException:
            self.keep_home = True  # keep the logs the error message points to
            self.stop()
            raise

    def _start_components(self) -> None:
        """A distributed topology: Redis, the schema, then each component as its own process."""
        assert self.home is not None
        redis = shutil.which("redis-server")
        if redis is None:
            raise StackError("redis-server not found: run scripts/setup-redis.sh (Debian's redis-server)")
        self.components["redis"] = self.spawn(
            [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.home)], self.home / "redis.log")
        self.wait_until(lambda: _port_open(self.redis_port), timeout=30, interval=0.1, message="redis listening")
        self.run_cli("db", "migrate", timeout=300)
        for name in self.topology.component_names():
            self.start_component(name)
            if name == "api-server":  # the others ask it (and triggerers are told apart by its job list)
                self.wait_until(self._api_answers, timeout=self.startup_timeout, message="the api-server answering")

    def _api_answers(self) -> bool:
        if not pid_alive(self.components["api-server"]):
            log = self.component_log("api-server")
            raise StackError(f"api-server exited; tail of {log}:\n{self.log_tail(path=log)}")
        with contextlib.suppress(httpx.HTTPError):
            return self.request("GET", "/api/v2/monitor/health", timeout=5).status_code == 200
        return False

    def start_component(self, name: str) -> int:
        """Start (or start again) the component ``name`` (``scheduler-2``, ``worker-1``...); returns its pid.
        A triggerer is waited for until its job is alive (one at a time, so each job id maps to one component),
        a worker until Celery says it is ready."""
        assert self.home is not None
        kind, _, number = name.rpartition("-") if name[-1].isdigit() else (name, "", "")
        argv = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
            "worker": ["celery", "worker", "--celery-hostname", f"w{number}@%h",
                       "--concurrency", str(self.topology.worker_concurrency), "--skip-serve-logs"],
        }[kind]
        log = self.home / f"{name}.log"
        known_jobs = {j["id"] for j in self.triggerer_jobs(alive_only=False)} if kind == "triggerer" else set()
        started_at = log.stat().st_size if log.exists() else 0
        self.components[name] = pid = self.spawn([self.airflow_bin, *argv], log)
        if kind == "triggerer":
            self.triggerer_log_paths.append(log)

            def its_job() -> int | None:
                if not pid_alive(pid):
                    raise StackError(f"{name} exited; tail of {log}:\n{self.log_tail(path=log)}")
                return next((j["id"] for j in self.triggerer_jobs() if j["id"] not in known_jobs), None)

            self.triggerer_job_ids[name] = self.wait_until(its_job, timeout=120, message=f"{name}'s job alive")
        if kind == "worker":
            def ready() -> bool:
                if not pid_alive(pid):
                    raise StackError(f"{name} exited; tail of {log}:\n{self.log_tail(path=log)}")
                with open(log, "rb") as f:
                    f.seek(started_at)
                    return b"ready." in f.read()

            self.wait_until(ready, timeout=120, message=f"{name} ready")
        return pid

    def component_of(self, pid: int) -> str | None:
        """The component whose process tree holds ``pid`` (a task runner's worker, say)."""
        procs = self.processes()
        for name, root in self.components.items():
            if pid == root or any(p.pid == pid for p in _family(root, None, procs)):
                return name
        return None

    def signal_component(self, name: str, sig: int) -> None:
        """``sig`` to the component's main process only (a Celery worker's warm shutdown is SIGTERM to it)."""
        _signal(self.components[name], sig)

    def kill_component(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """``sig`` to every process of the component at once (main process, pool, task runners: each leads its
        own group, so a group kill would miss them), the way a lost machine or container takes them all.
        Returns the pids signalled."""
        pids = [p.pid for p in self.component_processes(name)]
        for pid in pids:
            _signal(pid, sig)
        return pids

    def sql(self, query: str, *params: Any) -> list[tuple]:
        """Rows of a read-only query on the metadata database (PostgreSQL): what no REST endpoint shows, such as
        which triggerer job holds which trigger."""
        import psycopg2

        assert self._db_url is not None and self.database == "postgres"
        with contextlib.closing(psycopg2.connect(self._db_url.replace("+psycopg2", ""))) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def component_log(self, name: str) -> Path:
        assert self.home is not None
        return self.log_path if name == "standalone" else self.home / f"{name}.log"

    def component_processes(self, name: str) -> list[ProcInfo]:
        """The component's process and every descendant (a worker's pool processes and task runners, which lead
        process groups of their own)."""
        pid, procs = self.components[name], self.processes()
        return [p for p in procs if p.pid == pid] + _family(pid, None, procs)

    def _start_database(self) -> str:
        assert self.home is not None
        if self.database == "sqlite":
            # A long busy timeout: dozens of concurrent tasks heartbeating every second keep SQLite busy,
            # and a component that meets "database is locked" dies (seen: the triggerer, after 30 s).
            return f"sqlite:///{self.home}/airflow.db?timeout=120"
        from .postgres import PostgresError, PostgresServer  # here: the leader runs this file as a script

        self.home.chmod(0o711)  # the server may run as the postgres user: it must pass through to home/postgres-N
        for attempt in range(3):
            self.postgres = PostgresServer(self.home / f"postgres-{attempt}", free_port())
            try:
                return self.postgres.start("airflow")
            except PostgresError as e:
                self.postgres.stop()
                if "could not bind" not in str(e) or attempt == 2:  # a port taken since we picked it: retry
                    raise StackError(f"could not start the stack's PostgreSQL: {e}") from None
        raise AssertionError("unreachable")

    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _leader_request(self, req: dict, timeout: float = 30) -> dict:
        if self._leader is None or self._leader.poll() is not None:
            raise StackError("stack leader is not running")
        with self._lock:
            assert self._leader.stdin is not None and self._leader.stdout is not None
            self._leader.stdin.write((json.dumps(req) + "\n").encode())
            self._leader.stdin.flush()
            ready, _, _ = select.select([self._leader.stdout.fileno()], [], [], timeout)
            if not ready:
                raise StackError(f"stack leader did not answer {req.get('op')!r} within {timeout}s")
            return json.loads(self._leader.stdout.readline() or b'{"ok": false, "error": "leader gone"}')

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        """Start ``argv`` inside the stack's session and process group (via the leader); returns its pid.

        Output goes to ``log``; ``env`` defaults to ``self.env``. The process is ended by ``stop()``.
        """
        req = {"op": "spawn", "argv": argv, "log": str(log), "env": env or self._env, "cwd": str(self.home)}
        resp = self._leader_request(req)
        if not resp.get("ok"):
            raise StackError(f"spawn {argv} failed: {resp.get('error')}")
        return int(resp["pid"])

    def _wait_ready(self, deadline: float) -> None:
        last: Any = None
        while True:
            for name, pid in self.components.items():
                log = self.component_log(name)
                tail = self.log_tail(400, log) if log.exists() else ""
                if "address already in use" in tail.lower():
                    raise _PortClash(next(ln for ln in tail.splitlines() if "already in use" in ln.lower()))
                if not pid_alive(pid):
                    raise StackError(f"{name} exited during startup; tail of {log}:\n{self.log_tail(path=log)}")
            try:
                last = self.health()
                if all((last.get(c) or {}).get("status") == "healthy" for c in _COMPONENTS) and self._all_up():
                    return
            except (httpx.HTTPError, ValueError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise StackError(
                    f"Airflow stack not healthy after {self.startup_timeout:.0f}s (last health: {last}); "
                    f"tail of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def _all_up(self) -> bool:
        """Beyond the health endpoint: every triggerer has a live job (workers were waited for at start)."""
        return self.topology.standalone or len(self.triggerer_jobs()) >= self.topology.triggerers

    def log_tail(self, lines: int = 80, path: Path | None = None) -> str:
        return _ANSI.sub("", _tail(path or self.log_path, lines))

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the process group, wait up to ``grace`` s, SIGKILL the rest; verify nothing survives.

        Idempotent. Raises ``StackError`` if a process of the stack could not be killed.
        """
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit_stop)
        leader = self._leader
        if leader is None or self._stopped:
            self._stop_database()
            return
        self._stopped = True
        grace = self.stop_grace if grace is None else grace
        t0 = time.monotonic()
        sid = leader.pid
        if self._client is not None:
            self._client.close()  # an open keep-alive connection delays the api-server's graceful shutdown
        if grace != self.stop_grace:
            with contextlib.suppress(Exception):
                self._leader_request({"op": "grace", "grace": grace}, timeout=5)
        # SIGTERM to the whole group; the leader then also SIGTERMs descendants outside the group (task
        # runners lead their own groups), waits its grace and SIGKILLs whatever is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=grace + 25)
        # belt and braces from outside (leader dead or stuck): SIGKILL the group and every session member
        leftovers: list[ProcInfo] = []
        deadline = time.monotonic() + 20
        while True:
            left = [p for p in _family(sid, sid) if p.pid != os.getpid()]
            if leader.poll() is None:
                left.append(ProcInfo(sid, os.getpid(), sid, sid, "R", ()))
            if not left:
                break
            leftovers = left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, signal.SIGKILL)
            for p in left:
                _signal(p.pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                leader.wait(timeout=0.1)
        with contextlib.suppress(Exception):
            leader.wait(timeout=5)
        for stream in (leader.stdin, leader.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]
        self._stop_database()  # after the components: none of them should see the database vanish
        self.stop_seconds = time.monotonic() - t0
        survivors = [p for p in _family(sid, sid) if p.pid != os.getpid()]
        if self.home is not None and not self.keep_home and not survivors:
            shutil.rmtree(self.home, ignore_errors=True)
        if survivors:
            raise StackError(f"processes of the stack survived stop(): {survivors}")
        self.leftovers_killed = leftovers

    def dump_database(self) -> bytes:
        """The metadata database's content: a plain SQL dump (PostgreSQL) or the database file (SQLite)."""
        assert self.home is not None
        if self.postgres is None:
            return (self.home / "airflow.db").read_bytes()
        return self.postgres.dump("airflow")

    def _stop_database(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()

    # ---------------------------------------------------------------------------------------- processes
    def processes(self) -> list[ProcInfo]:
        """Every live process of the stack (session members and descendants of the leader)."""
        return _family(self.sid, self.sid)

    def task_pids(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> TaskProcesses:
        """Processes of the TI's current try, found by the TI id in their process titles.

        ``runner`` = task process (also ``rest_pid``), ``supervisor`` = LocalExecutor worker supervising it.
        Both are None when the TI is not running on a worker (e.g. deferred, queued, finished).
        """
        ti = self.ti(dag_id, run_id, task_id, map_index)
        ti_id = str(ti["id"])
        procs = [p for p in self.processes() if any(ti_id in a for a in p.cmdline)]
        res = TaskProcesses(
            ti_id=ti_id,
            state=ti.get("state"),
            try_number=int(ti.get("try_number") or 0),
            rest_pid=ti.get("pid"),
            hostname=ti.get("hostname"),
            processes=procs,
        )
        ids = {p.pid for p in procs}
        for p in procs:
            if p.ppid in ids:
                res.runner = p.pid  # forked from the supervisor
            else:
                res.supervisor = p.pid
        if res.runner is None and res.rest_pid and res.rest_pid in ids and res.rest_pid != res.supervisor:
            res.runner = res.rest_pid
        if self.topology.celery and res.runner is None and res.supervisor is not None:
            # Only the task runner carries the TI id in its title; its supervisor is the Celery pool process.
            runner = next(p for p in procs if p.pid == res.supervisor)
            res.runner, res.supervisor = runner.pid, runner.ppid
        return res

    def wait_task_pids(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, timeout: float = 60
    ) -> TaskProcesses:
        """Wait until both the supervisor and the task runner of the TI's current try are visible."""

        def both() -> TaskProcesses | None:
            tp = self.task_pids(dag_id, run_id, task_id, map_index)
            return tp if tp.runner and tp.supervisor else None

        return self.wait_until(
            both,
            timeout=timeout,
            message=f"processes of {dag_id}/{run_id}/{task_id}",
        )

    def triggerer_pids(self) -> list[int]:
        """Main processes of the stack's triggerers (not their forked trigger runners / log servers)."""
        procs = self.processes()
        trig = {p.pid for p in procs if _is_airflow_cmd(p.cmdline, "triggerer")}
        return sorted(p.pid for p in procs if p.pid in trig and p.ppid not in trig)

    def triggerer_jobs(self, alive_only: bool = True) -> list[dict]:
        params: dict[str, Any] = {"job_type": "TriggererJob", "limit": 100, "order_by": "-id"}
        if alive_only:
            params["is_alive"] = True
        return self.get("/api/v2/jobs", params=params)["jobs"]

    def start_extra_triggerer(self, env: dict[str, str] | None = None, wait: bool = True, timeout: float = 120):
        """Start one more ``airflow triggerer`` in the stack's group (own trigger log port). Returns its pid."""
        extra = {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()), **(env or {})}
        return self._start_triggerer(extra, wait, timeout)

    def _start_triggerer(self, env_overrides: dict[str, str], wait: bool, timeout: float) -> int:
        known = {j["id"] for j in self.triggerer_jobs(alive_only=False)}
        self._spawn_count += 1
        log = self.home / f"triggerer-{self._spawn_count}.log"  # type: ignore[operator]
        self.triggerer_log_paths.append(log)
        pid = self.spawn([self.airflow_bin, "triggerer"], log, env={**self.env, **env_overrides})
        if wait:

            def new_alive_job():
                if not pid_alive(pid):
                    raise StackError(f"new triggerer {pid} exited; tail of {log}:\n{self.log_tail(path=log)}")
                return [j for j in self.triggerer_jobs() if j["id"] not in known] or None

            self.wait_until(new_alive_job, timeout=timeout, interval=0.5, message="new triggerer job alive")
            self.wait_healthy(timeout=timeout)
        return pid

    def restart_triggerer(
        self,
        sig: int = signal.SIGTERM,
        timeout: float = 120,
        kill_after: float = 30,
        while_down: Callable[[], object] | None = None,
    ) -> int:
        """Stop every triggerer of the stack with ``sig`` and start one new triggerer; wait until it is alive.

        With SIGTERM the old triggerer shuts down gracefully and ends its job, so its triggers are re-assigned
        at once. With SIGKILL the old job stays "alive" until ``[triggerer] triggerer_health_check_threshold``
        (default 30 s) expires; only then does the new triggerer pick the triggers up.
        Processes of the old triggerer (trigger runner, serve-logs) still alive after ``kill_after`` s are
        SIGKILLed. ``while_down`` runs once no triggerer is left, before the new one starts.
        Returns the pid of the new triggerer. On a distributed topology every triggerer component is stopped and
        each is started again (the pid returned is the first's).
        """
        if not self.topology.standalone:
            return self._restart_triggerer_components(sig, kill_after, while_down)
        old = self.triggerer_pids()
        procs = self.processes()
        old_tree = {p.pid for pid in old for p in _family(pid, None, procs)} | set(old)
        for pid in old:
            _signal(pid, sig)
        self.wait_until(
            lambda: not any(pid_alive(p) for p in old),
            timeout=kill_after,
            interval=0.1,
            message="old triggerer exited",
            raise_on_timeout=False,
        )
        for pid in old_tree:
            if pid_alive(pid):
                _signal(pid, signal.SIGKILL)
        self.wait_until(
            lambda: not any(pid_alive(p) for p in old_tree), timeout=15, interval=0.1, message="old tree gone"
        )
        if while_down is not None:
            while_down()
        return self._start_triggerer({}, True, timeout)

    def _restart_triggerer_components(
        self, sig: int, kill_after: float, while_down: Callable[[], object] | None
    ) -> int:
        names = [n for n in self.components if n.startswith("triggerer-")]
        old = {p.pid for n in names for p in self.component_processes(n)}
        for name in names:
            self.signal_component(name, sig)
        self.wait_until(lambda: not any(pid_alive(self.components[n]) for n in names), timeout=kill_after,
                        interval=0.1, message="old triggerers exited", raise_on_timeout=False)
        for pid in old:
            if pid_alive(pid):
                _signal(pid, signal.SIGKILL)
        self.wait_until(lambda: not any(pid_alive(p) for p in old), timeout=15, interval=0.1, message="old trees gone")
        if while_down is not None:
            while_down()
        pids = [self.start_component(name) for name in names]  # every one, in order
        return pids[0]

    def run_cli(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` against the stack's home (own session, killed as a group on timeout)."""
        proc = subprocess.Popen(
            [self.airflow_bin, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise StackError(f"airflow {' '.join(args)} timed out after {timeout}s:\n{out}\n{err}") from None
        cp = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} exited {proc.returncode}:\n{out}\n{err}")
        return cp

    # ---------------------------------------------------------------------------------------- REST basics
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One REST call, as the UI's user makes it: with a token when the api-server asks for one (3.1 and 3.2
        answer 401 without one even when every user is an admin; 3.0 and 3.3+ let such a user in)."""
        r = self._request(method, path, **kwargs)
        if r.status_code == 401 and path.startswith("/api/"):
            token = self.client.get("/auth/token")  # the simple auth manager's all-admins token
            if token.status_code in (200, 201):
                self.client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
                r = self._request(method, path, **kwargs)
        return r

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A read (GET) that times out, or that a loaded api-server answers with a 500 "Database error" (its
        connection pool ran dry), is tried again, twice."""
        for attempt in range(3 if method == "GET" else 1):
            try:
                r = self.client.request(method, path, **kwargs)
            except httpx.TransportError:
                if method != "GET" or attempt == 2:
                    raise
            else:
                if method != "GET" or attempt == 2 or r.status_code < 500 or "Database error" not in r.text:
                    return r
            time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, *, ok: Iterable[int] = (200, 201), retries: int = 0, **kw) -> Any:
        attempt = 0
        while True:
            try:
                r = self.request(method, path, **kw)
            except httpx.TransportError:
                attempt += 1
                if attempt > retries:
                    raise
                time.sleep(0.5)
                continue
            # SQLite under load answers "database is locked" as a 500: the UI user would simply retry.
            if r.status_code >= 500 and "Database error" in r.text and attempt < retries:
                attempt += 1
                time.sleep(0.5 * attempt)
                continue
            break
        if r.status_code not in ok:
            raise StackError(f"{method} {path} -> HTTP {r.status_code}: {r.text[:2000]}")
        return r.json() if r.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self._call("GET", path, retries=3, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> Any:
        return self._call("POST", path, json=json_body, **kw)

    def patch(self, path: str, json_body: Any = None, **kw: Any) -> Any:
        return self._call("PATCH", path, json=json_body, retries=5, **kw)

    def health(self) -> dict:
        r = self.request("GET", "/api/v2/monitor/health", timeout=10)
        r.raise_for_status()
        return r.json()

    def wait_healthy(self, timeout: float = 120, components: Iterable[str] = _COMPONENTS) -> dict:
        comps = tuple(components)

        def ok():
            with contextlib.suppress(httpx.HTTPError):
                h = self.health()
                if all((h.get(c) or {}).get("status") == "healthy" for c in comps):
                    return h
            return None

        return self.wait_until(ok, timeout=timeout, interval=0.5, message=f"health of {comps}")

    @staticmethod
    def wait_until(
        predicate: Callable[[], T],
        timeout: float,
        interval: float = 0.5,
        message: str = "condition",
        raise_on_timeout: bool = True,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy (returned); raise ``StackError`` on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() >= deadline:
                if raise_on_timeout:
                    raise StackError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
                return last
            time.sleep(interval)

    # ---------------------------------------------------------------------------------------- DAGs / runs
    def import_errors(self) -> list[dict]:
        return self.get("/api/v2/importErrors", params={"limit": 1000})["import_errors"]

    def _files_defining(self, dag_id: str) -> list[str]:
        files = []
        for path in self.dags_folder.rglob("*.py"):
            with contextlib.suppress(OSError):
                if dag_id in path.read_text(errors="replace"):
                    files.append(str(path.relative_to(self.dags_folder)))
        return files

    def wait_dag(self, dag_id: str, timeout: float = 120, file: str | Path | None = None) -> dict:
        """Wait until ``dag_id`` is parsed and serialized; returns the DAG details.

        Raises at once if ``/api/v2/importErrors`` has an error for ``file`` (relative to the dags folder), or,
        without ``file``, for any file in the dags folder whose text mentions ``dag_id``.
        """
        if file is not None:
            p = Path(file)
            candidates = [str(p.relative_to(self.dags_folder) if p.is_absolute() else p)]
        else:
            candidates = self._files_defining(dag_id)

        def check():
            r = self.request("GET", f"/api/v2/dags/{dag_id}/details")
            if r.status_code == 200:
                return r.json()
            for err in self.import_errors():
                fn = str(err.get("filename") or "")
                if any(fn == c or fn.endswith("/" + c) or c.endswith(fn) for c in candidates if fn):
                    raise StackError(f"import error in {fn} for DAG {dag_id}:\n{err.get('stack_trace')}")
            return None

        return self.wait_until(check, timeout=timeout, interval=0.5, message=f"DAG {dag_id} serialized")

    def dag(self, dag_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}")

    def unpause(self, dag_id: str) -> dict:
        return self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False}, params={"update_mask": "is_paused"})

    def pause(self, dag_id: str) -> dict:
        return self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": True}, params={"update_mask": "is_paused"})

    def trigger(self, dag_id: str, run_id: str | None = None, conf: dict | None = None) -> str:
        """Create a manual run (``logical_date`` null, like the UI's Trigger button); returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_run(self, dag_id: str, run_id: str, states: set[str], timeout: float = 300) -> dict:
        return self.wait_until(
            lambda: r if (r := self.dag_run(dag_id, run_id))["state"] in states else None,
            timeout=timeout,
            message=f"run {dag_id}/{run_id} in {states}",
        )

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> dict:
        """PATCH the run state: "success" | "failed" | "queued" (like the UI's Mark run as ...)."""
        return self.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": state})

    # ---------------------------------------------------------------------------------------- task instances
    @staticmethod
    def _ti_path(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        p = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return p if map_index < 0 else f"{p}/{map_index}"

    def ti(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
        return self.get(self._ti_path(dag_id, run_id, task_id, map_index))

    def tis(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})[
            "task_instances"
        ]

    def ti_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        return self.get(self._ti_path(dag_id, run_id, task_id, map_index) + "/tries")["task_instances"]

    def wait_ti(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: set[str] | str,
        timeout: float = 120,
        map_index: int = -1,
        *,
        min_try: int = 0,
        fail_states: set[str] | None = None,
    ) -> dict:
        """Wait until the TI is in one of ``states`` (and ``try_number >= min_try``); returns the TI.

        Raises ``StackError`` with the current state and the task's log tail on timeout, or at once when the
        TI reaches one of ``fail_states``.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        bad = set(fail_states or ()) - wanted
        deadline = time.monotonic() + timeout
        ti: dict = {}
        busy = ""  # the last "Database error" answer: a loaded api-server's, ridden out until the deadline
        while True:
            r = None
            with contextlib.suppress(httpx.TransportError):
                r = self.request("GET", self._ti_path(dag_id, run_id, task_id, map_index))
            if r is not None and r.status_code >= 500 and "Database error" in r.text:
                busy, r = f" (last answer: HTTP {r.status_code} {r.text[:300]})", None
            if r is not None and r.status_code not in (200, 404):
                raise StackError(f"GET TI {dag_id}/{run_id}/{task_id} -> HTTP {r.status_code}: {r.text[:2000]}")
            if r is not None and r.status_code == 200:
                ti = r.json()
                if ti.get("state") in wanted and int(ti.get("try_number") or 0) >= min_try:
                    return ti
                if ti.get("state") in bad:
                    raise StackError(self._ti_report(ti, f"reached {ti.get('state')!r} instead of {wanted}"))
            if time.monotonic() >= deadline:
                raise StackError(self._ti_report(ti, f"not in {wanted} (min_try={min_try}) after {timeout}s{busy}"))
            time.sleep(0.5)

    def _ti_report(self, ti: dict, what: str) -> str:
        head = (
            f"TI {ti.get('dag_id')}/{ti.get('dag_run_id')}/{ti.get('task_id')}[{ti.get('map_index')}] {what}: "
            f"state={ti.get('state')!r} try_number={ti.get('try_number')} pid={ti.get('pid')}"
        )
        tail = "<no log>"
        if ti.get("try_number"):
            try:
                text = self.task_log(
                    ti["dag_id"], ti["dag_run_id"], ti["task_id"], int(ti["try_number"]), ti.get("map_index", -1)
                )
                tail = "\n".join(text.splitlines()[-40:])
            except Exception as e:
                tail = f"<log unavailable: {e}>"
        return f"{head}\n--- task log tail ---\n{tail}"

    def set_ti_state(
        self, dag_id: str, run_id: str, task_id: str, new_state: str, map_index: int = -1, **flags: bool
    ) -> Any:
        """The UI's "Mark as failed/success" on one TI: ``PATCH .../taskInstances/{task_id}``."""
        if new_state not in ("failed", "success", "skipped"):
            raise ValueError(f"new_state must be failed|success|skipped, not {new_state!r}")
        # idempotent, so a "Database error" of a loaded api-server is simply tried again
        body = {"new_state": new_state, **flags}
        return self._call("PATCH", self._ti_path(dag_id, run_id, task_id, map_index), json=body, retries=3)

    def clear_ti(self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None, **options: Any) -> Any:
        """The UI's "Clear" on one TI (a running TI goes to ``restarting``, then runs a new try)."""
        target: Any = task_id if map_index is None or map_index < 0 else [task_id, map_index]
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [target],
            "only_failed": False,
            "only_running": False,
            "reset_dag_runs": True,
            "include_upstream": False,
            "include_downstream": False,
            "include_future": False,
            "include_past": False,
            **options,
        }
        return self._call("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body, retries=5)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The XCom value, or None if there is no such entry.

        The Task SDK stores ``airflow.sdk.serde.serialize(value)`` as JSON: plain JSON types come back as they
        are; tagged values (tuples, datetimes, dataclasses ... ``{"__classname__": ...}``) are decoded with
        ``airflow.sdk.serde.deserialize``.
        """
        r = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index},
        )
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise StackError(f"GET xcom {key} -> HTTP {r.status_code}: {r.text[:2000]}")
        value = r.json().get("value")
        if not _has_serde_tag(value):
            return value
        # decode in a subprocess with the stack's env: importing airflow here would configure it in the test
        # process (AIRFLOW_HOME, logging) behind the back of other tests
        code = (
            "import json, pickle, sys\n"
            "from airflow.sdk.serde import deserialize\n"
            "sys.stdout.buffer.write(pickle.dumps(deserialize(json.loads(sys.stdin.read()))))\n"
        )
        cp = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(value).encode(),
            capture_output=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if cp.returncode != 0:
            raise StackError(f"cannot deserialize XCom {key}: {cp.stderr.decode(errors='replace')[-2000:]}")
        return pickle.loads(cp.stdout)

    def task_log_entries(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> list[Any]:
        """The raw ``content`` items of the log endpoint (dicts for structured lines, str otherwise)."""
        data = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        return list(data.get("content") or [])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task log of one try as the UI shows it (text mode of the UI's log renderer)."""
        entries = self.task_log_entries(dag_id, run_id, task_id, try_number, map_index)
        return "\n".join(render_log_line(e) for e in entries)

    def rendered_fields(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
        return self.ti(dag_id, run_id, task_id, map_index).get("rendered_fields") or {}


if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == "--leader":
    _leader_main(float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
