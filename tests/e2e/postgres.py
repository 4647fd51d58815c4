"""A private PostgreSQL server for one Airflow test stack: its own cluster in a directory, on a free loopback port.

Why not SQLite: Airflow 3.3's api-server on SQLite froze for 30 s (the pool's checkout timeout) or 120 s (the
busy timeout) when a wave of ~16 tasks started at once, and answered "Database error" (HTTP 500) to the REST
calls in between; tasks died at start and e2e tests failed at random. PostgreSQL takes such a wave without a
pause. The cluster is throwaway: no fsync, trust authentication on loopback only.

The server runs as the ``postgres`` user when this process is root (PostgreSQL refuses root), from Debian's
``postgresql`` package (``scripts/setup-postgres.sh`` installs it). It is started with its own session and
ended by its pid in ``stop()``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["PostgresError", "PostgresServer", "postgres_bindir"]


class PostgresError(RuntimeError):
    pass


def postgres_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres`` (Debian keeps them off PATH, per major version)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, str(Path(on_path).resolve().parent))
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "postgres").exists():
            return Path(directory)
    raise PostgresError("no PostgreSQL server binaries (initdb, postgres) found: run scripts/setup-postgres.sh")


class PostgresServer:
    """``start()`` makes a cluster in ``directory`` and serves it on 127.0.0.1:``port``; ``stop()`` ends it.

    :param directory: an empty or missing directory for the cluster, its socket and its log.
    :param port: the TCP port on 127.0.0.1 (choose a free one).
    """

    USER = "airflow"

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = Path(directory)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, user=self._as_user, capture_output=True, text=True, timeout=120, cwd="/")
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self, database: str, timeout: float = 60) -> str:
        """Create the cluster and ``database``, start serving; returns the SQLAlchemy URL of ``database``."""
        bindir = postgres_bindir()
        data = self.directory / "data"
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            entry = pwd.getpwnam(self._as_user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run(
            [str(bindir / "initdb"), "-D", str(data), "-U", self.USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the server process
        try:
            self.process = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D", str(data),
                    "-p", str(self.port),
                    "-k", str(self.directory),  # the unix socket stays in our directory, not /var/run
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "max_connections=400",  # 32 task slots, 2 triggerers, scheduler, api-server pools
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                ],
                user=self._as_user,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise PostgresError(f"postgres exited ({self.process.returncode}): {self.log_tail()}")
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, "-q"],
                timeout=30,
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise PostgresError(f"postgres not ready after {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.2)
        self._run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, database])
        return self.url(database)

    def dump(self, database: str) -> bytes:
        """``database`` as plain SQL (``pg_dump``): every row, TOAST-compressed values expanded."""
        argv = [str(postgres_bindir() / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, database]
        done = subprocess.run(argv, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise PostgresError(f"pg_dump failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        return done.stdout

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: disconnect clients, no checkpoint wait), SIGKILL if it lingers. Idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
