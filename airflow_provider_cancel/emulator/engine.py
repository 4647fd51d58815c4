"""The vendor-neutral core of the emulator.

Everything that is the same for every vendor lives here: the execution store and its scenarios, the request
journal, fault injection, API-key checks and rate limits. A vendor module (``dune.py``, ...) only declares its
routes on a :class:`VendorAPI` and knows its own paths, payloads, status words and error bodies; the request
pipeline in :meth:`VendorAPI.serve` wraps every one of its handlers with auth, rate limit, faults and journal.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import itertools
import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import unquote_plus, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.types import Receive, Scope, Send

Action = Literal["create", "status", "result", "cancel", "list", "other"]
AuthResult = Literal["ok", "missing", "invalid"]
CancelledBy = Literal["api", "remote"]


# --------------------------------------------------------------------------------------------------------------
# Executions and scenarios


class State(str, enum.Enum):
    """Generic execution state; each vendor maps it to its own status words."""

    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"  # cancel accepted but not effective yet (vendors whose cancel is asynchronous)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PARTIAL = "partial"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.PARTIAL})

_OUTCOME_STATE = {
    "succeed": State.SUCCEEDED,
    "fail": State.FAILED,
    "remote_cancel": State.CANCELLED,
    "partial": State.PARTIAL,
}
_SPEC = (
    r"(?P<outcome>succeed|fail|forever|remote[_-]cancel|partial)"
    r"(?::(?P<polls>\d+)|@(?P<seconds>\d+(?:\.\d+)?)s)?"
    r"(?:,rows=(?P<rows>\d+))?"
)
_SPEC_RE = re.compile(_SPEC, re.IGNORECASE)
# The marker may sit in SQL (`-- emulate:fail`), in a string, or be a JSON key (`"emulate": "fail:3"`).
_MARKER_RE = re.compile(r"\bemulate[\"']?\s*[:=]\s*[\"']?" + _SPEC, re.IGNORECASE)


@dataclass(frozen=True)
class Scenario:
    """How one execution behaves: its outcome and when it is reached (after N polls or S seconds)."""

    outcome: str = "succeed"
    polls: int = 2
    seconds: float | None = None
    rows: int = 5

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """Parse ``<outcome>[:<N>|@<S>s][,rows=<R>]``, e.g. ``fail:3`` or ``succeed@10s,rows=250``."""
        match = _SPEC_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"invalid scenario {text!r}: expected <outcome>[:<N>|@<S>s][,rows=<R>]")
        return cls._from_match(match)

    @classmethod
    def find(cls, text: str) -> Scenario | None:
        """The first ``emulate:<scenario>`` marker anywhere in ``text``, if any."""
        match = _MARKER_RE.search(text)
        return cls._from_match(match) if match else None

    @classmethod
    def _from_match(cls, match: re.Match[str]) -> Scenario:
        polls, seconds, rows = match["polls"], match["seconds"], match["rows"]
        return cls(
            outcome=match["outcome"].lower().replace("-", "_"),
            polls=int(polls) if polls else cls.polls,
            seconds=float(seconds) if seconds else None,
            rows=int(rows) if rows else cls.rows,
        )

    def __str__(self) -> str:
        when = f"@{self.seconds:g}s" if self.seconds is not None else f":{self.polls}"
        return f"{self.outcome}{when},rows={self.rows}"


@dataclass
class Execution:
    """One emulated remote execution; ``data`` holds whatever the vendor echoes back from the create request."""

    id: str
    vendor: str
    scenario: Scenario
    created_at: float
    state: State = State.PENDING
    polls: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    cancelled_by: CancelledBy | None = None
    cancel_requests: int = 0
    idempotency_key: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(scenario=str(self.scenario), state=self.state.value, terminal=self.state.terminal)
        return record


# --------------------------------------------------------------------------------------------------------------
# Journal


@dataclass
class JournalEntry:
    """One request to a vendor route. Holds no header, body or key: secrets must never reach the journal."""

    seq: int
    ts: float
    vendor: str
    method: str
    path: str
    query: str
    action: Action
    execution_id: str | None
    auth: AuthResult
    status_code: int | None = None  # None until answered, and for dropped connections
    fault: str | None = None
    body_bytes: int = 0  # the request body's size (never its content): "no body" is checkable


class Journal:
    def __init__(self, limit: int) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=limit)  # bounded: long benchmarks must not grow forever
        self._seq = itertools.count(1)

    def add(self, **fields: Any) -> JournalEntry:
        entry = JournalEntry(seq=next(self._seq), ts=time.time(), **fields)
        self._entries.append(entry)
        return entry

    def select(
        self,
        vendor: str | None = None,
        action: str | None = None,
        execution_id: str | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        return [
            asdict(e)
            for e in self._entries
            if e.seq > since
            and vendor in (None, e.vendor)
            and action in (None, e.action)
            and execution_id in (None, e.execution_id)
        ]

    def clear(self) -> None:
        self._entries.clear()  # seq keeps counting, so `since` cursors stay valid


# --------------------------------------------------------------------------------------------------------------
# Faults and rate limits

# 403: the vendor starts refusing the key mid-run (revoked, out of credit), the one fault a client must not ride out.
# Hostile answers (issue 14): `huge`, `endless` and `echo_key` answer instead of the vendor, like the kinds above;
# `drip`, `odd_field`, `odd_rate_limit`, `deep_json` and `other_id` let the vendor act, then spoil its answer.
FaultKind = Literal["403", "429", "500", "502", "503", "504", "slow", "drop", "malformed",
                    "huge", "endless", "echo_key", "drip", "odd_field", "odd_rate_limit", "deep_json", "other_id"]
SPOILERS = frozenset({"drip", "odd_field", "odd_rate_limit", "deep_json", "other_id"})  # answer after the handler
DEFAULT_DELAY = {"slow": 5.0, "drip": 0.5}  # slow: seconds before the answer; drip: seconds per byte of it
HUGE_SIZE = 600 * 1024 * 1024  # what a `huge` answer declares in Content-Length, by default
DEEP_LEVELS = 100_000  # past Python's recursion limit (a client's json.loads alone raises RecursionError)


class Fault(BaseModel):
    """A rule that makes matching vendor requests misbehave; ``None`` for vendor/action matches any."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = None  # assigned by the engine
    vendor: str | None = None
    action: Action | None = None
    kind: FaultKind
    count: int | None = Field(default=None, ge=1, description="requests left to fault; default 1")
    probability: float | None = Field(default=None, gt=0, le=1, description="fire at random (seeded)")
    retry_after: float | None = Field(default=None, ge=0, description="Retry-After seconds (429 default 1)")
    delay: float | None = Field(default=None, ge=0, description="`slow`: seconds before answering (default 5); "
                                "`drip`: seconds between two bytes of the answer (default 0.5)")
    size: int | None = Field(default=None, ge=1, description="`huge`: bytes declared in Content-Length (600 MiB)")

    @property
    def wait(self) -> float:
        return self.delay if self.delay is not None else DEFAULT_DELAY.get(self.kind, 5.0)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _default_count(self) -> Fault:
        # A fault with neither a count nor a probability fires once; with a probability alone it never runs out.
        if self.count is None and self.probability is None:
            self.count = 1
        return self

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse the CLI form ``kind=429,action=status,count=3,retry_after=1``."""
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"invalid fault {text!r}: {part!r} is not name=value")
            fields[name.strip()] = None if value.strip().lower() in ("", "none", "null", "any") else value.strip()
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'fault'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"invalid fault {text!r}: {problems}") from None


_WINDOW_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                 "d": 86400, "day": 86400}
_RATE_RE = re.compile(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?", re.IGNORECASE)


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` requests per sliding ``window`` seconds, per vendor and API key."""

    limit: int
    window: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``40/min``, ``1000/day``, ``3/2s``..."""
        match = _RATE_RE.fullmatch(text.strip())
        if match is None or match[3].lower() not in _WINDOW_UNITS or int(match[1]) < 1:
            raise ValueError(f"invalid rate limit {text!r}: expected e.g. 40/min, 1000/day, 3/2s")
        return cls(int(match[1]), float(match[2] or 1) * _WINDOW_UNITS[match[3].lower()])

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}s"


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset: float  # epoch seconds when the oldest counted request leaves the window
    retry_after: int  # whole seconds until a request would be allowed (0 if allowed now)


# --------------------------------------------------------------------------------------------------------------
# Configuration and the engine


@dataclass
class EmulatorConfig:
    """Start-up configuration; `POST /_emulator/reset` returns the emulator to exactly this."""

    api_keys: Sequence[str] = ()  # empty: any non-empty key is accepted
    default_scenario: str = "succeed:2"
    faults: Sequence[str | Mapping[str, Any] | Fault] = ()
    rate_limits: Mapping[str, str] = field(default_factory=dict)  # vendor -> "40/min"
    seed: int = 0
    journal_limit: int = 200_000


class Engine:
    """All mutable emulator state. Single event loop, no awaits inside methods, hence no locks."""

    def __init__(self, config: EmulatorConfig, vendors: Iterable[str]) -> None:
        self.config = config
        self.vendors = frozenset(vendors)
        self._api_keys = frozenset(config.api_keys)
        self.reset()

    def reset(self) -> None:
        """Forget executions, journal, counters and runtime settings; re-apply the start-up configuration."""
        config = self.config
        self.default_scenario = Scenario.parse(config.default_scenario)
        self.executions: dict[str, Execution] = {}
        self.resources: dict[str, dict[str, Any]] = {}  # vendor -> what its routes keep besides executions
        self._idempotency: dict[tuple[str, str], str] = {}
        self.journal = Journal(config.journal_limit)
        self.rng = random.Random(config.seed)
        self.faults: list[Fault] = []
        self._fault_ids = itertools.count(1)
        for spec in config.faults:
            self.add_fault(spec)
        self.rate_limits: dict[str, RateLimit] = {}
        for vendor, rate in config.rate_limits.items():
            self.set_rate_limit(vendor, rate)
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self.fault_counts: Counter[str] = Counter()
        self.requests = 0
        self.rate_limited = 0

    # -- executions ----------------------------------------------------------------------------------------

    def scenario_for(self, source: str) -> Scenario:
        return Scenario.find(source) or self.default_scenario

    def create(
        self,
        vendor: str,
        execution_id: str,
        *,
        scenario: Scenario,
        idempotency_key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Execution:
        if execution_id in self.executions:
            raise ValueError(f"execution id {execution_id!r} already exists")
        ex = Execution(execution_id, vendor, scenario, time.time(), idempotency_key=idempotency_key,
                       data=data or {})
        self.executions[ex.id] = ex
        if idempotency_key is not None:
            self._idempotency[(vendor, idempotency_key)] = ex.id
        return ex

    def by_idempotency_key(self, vendor: str, key: str) -> Execution | None:
        execution_id = self._idempotency.get((vendor, key))
        return self.get(vendor, execution_id) if execution_id else None

    def get(self, vendor: str | None, execution_id: str, *, poll: bool = False) -> Execution | None:
        """The execution, brought up to date. ``poll=True`` counts a status poll (which moves poll scenarios)."""
        ex = self.executions.get(execution_id)
        if ex is None or vendor not in (None, ex.vendor):
            return None
        self._advance(ex, poll=poll)
        return ex

    def find(self, vendor: str | None = None) -> list[Execution]:
        """All executions (of one vendor), oldest first, brought up to date: for list endpoints."""
        found = (self.get(vendor, execution_id) for execution_id in list(self.executions))
        return [ex for ex in found if ex is not None]

    def cancel(self, ex: Execution, *, asynchronous: bool = False) -> bool:
        """A cancel via the vendor API. True if the execution was still live (so the cancel took).

        ``asynchronous`` leaves it CANCELLING until the next status poll, for vendors whose cancel is a request.
        """
        ex.cancel_requests += 1
        self._advance(ex, poll=False)
        if ex.state.terminal:
            return False
        if asynchronous:
            ex.state = State.CANCELLING
        else:
            self._finish(ex, State.CANCELLED, time.time(), cancelled_by="api")
        return True

    def remote_cancel(self, ex: Execution) -> bool:
        """Someone else cancelled it (the vendor's UI, another client): not through the emulated API."""
        self._advance(ex, poll=False)
        if ex.state.terminal:
            return False
        self._finish(ex, State.CANCELLED, time.time(), cancelled_by="remote")
        return True

    def _advance(self, ex: Execution, *, poll: bool) -> None:
        if poll:
            ex.polls += 1  # counted even after the end: polling a finished execution is worth seeing
        if ex.state.terminal:
            return
        now = time.time()
        if ex.state is State.CANCELLING:
            if poll:
                self._finish(ex, State.CANCELLED, now, cancelled_by="api")
            return
        scenario = ex.scenario
        if scenario.outcome != "forever":
            if scenario.seconds is not None:
                due_at = ex.created_at + scenario.seconds
            else:
                due_at = now if ex.polls > scenario.polls else math.inf
            if now >= due_at:
                by: CancelledBy | None = "remote" if scenario.outcome == "remote_cancel" else None
                self._finish(ex, _OUTCOME_STATE[scenario.outcome], due_at, cancelled_by=by)
                return
        if poll and ex.polls > 1 and ex.state is State.PENDING:
            # The first poll sees it queued, later ones running: clients must handle both.
            ex.state, ex.started_at = State.RUNNING, now

    @staticmethod
    def _finish(
        ex: Execution, state: State, at: float, cancelled_by: CancelledBy | None = None
    ) -> None:
        ex.state, ex.finished_at, ex.cancelled_by = state, at, cancelled_by
        if ex.started_at is None and state is not State.CANCELLED:
            ex.started_at = ex.created_at

    # -- auth, faults, rate limits -------------------------------------------------------------------------

    def record(self, **fields: Any) -> JournalEntry:
        """Journal one vendor request (see :class:`JournalEntry` for what may be recorded)."""
        self.requests += 1
        return self.journal.add(**fields)

    def check_key(self, key: str | None) -> AuthResult:
        if not key:
            return "missing"
        return "ok" if not self._api_keys or key in self._api_keys else "invalid"

    def add_fault(self, spec: str | Mapping[str, Any] | Fault) -> Fault:
        if isinstance(spec, str):
            fault = Fault.parse(spec)
        else:
            fault = Fault.model_validate(spec if isinstance(spec, Mapping) else spec.model_dump())
        if fault.vendor is not None and fault.vendor not in self.vendors:
            raise ValueError(f"unknown vendor {fault.vendor!r}; known: {', '.join(sorted(self.vendors))}")
        fault.id = next(self._fault_ids)
        self.faults.append(fault)
        return fault

    def take_fault(self, vendor: str, action: Action) -> Fault | None:
        """The first fault rule that fires for this request, consuming one of its count."""
        for fault in self.faults:
            if fault.vendor not in (None, vendor) or fault.action not in (None, action):
                continue
            if fault.probability is not None and self.rng.random() >= fault.probability:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
            self.fault_counts[fault.kind] += 1
            return fault
        return None

    def set_rate_limit(self, vendor: str, rate: str | None) -> None:
        if vendor not in self.vendors:
            raise ValueError(f"unknown vendor {vendor!r}; known: {', '.join(sorted(self.vendors))}")
        if rate is None:
            self.rate_limits.pop(vendor, None)
        else:
            self.rate_limits[vendor] = RateLimit.parse(rate)

    def check_rate(self, vendor: str, key: str) -> RateDecision | None:
        """Count this request in the vendor+key sliding window; None when the vendor has no limit."""
        rate = self.rate_limits.get(vendor)
        if rate is None:
            return None
        now = time.time()
        # Keep a digest, not the key itself, even in memory.
        bucket = (vendor, hashlib.sha256(key.encode()).hexdigest())
        window = self._windows.setdefault(bucket, deque())
        while window and window[0] <= now - rate.window:
            window.popleft()
        allowed = len(window) < rate.limit
        if allowed:
            window.append(now)
        else:
            self.rate_limited += 1
        reset = window[0] + rate.window
        retry_after = 0 if allowed else max(1, math.ceil(reset - now))
        return RateDecision(allowed, rate.limit, rate.limit - len(window), reset, retry_after)

    def stats(self) -> dict[str, Any]:
        by_state = Counter(ex.state.value for ex in self.executions.values())
        by_vendor = Counter(ex.vendor for ex in self.executions.values())
        return {
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "faults": dict(self.fault_counts),
            "executions": {"total": len(self.executions), "by_state": dict(by_state), "by_vendor": dict(by_vendor)},
        }


# --------------------------------------------------------------------------------------------------------------
# The HTTP side: what a vendor module declares its routes on


class ApiError(Exception):
    """Raise from a handler to answer with the vendor's error body for ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Call:
    """One request to a vendor route, as its handler sees it."""

    request: Request
    engine: Engine
    vendor: VendorAPI
    body: bytes
    execution_id: str | None  # what the journal records; set by create()/get()

    @property
    def base_url(self) -> str:
        """The vendor root as this client addressed it, e.g. ``http://127.0.0.1:8765/dune``, for links."""
        return str(self.request.base_url).rstrip("/") + self.vendor.prefix

    def json(self) -> Any:
        """The parsed body; None when empty. Raises ApiError(400) when it is not JSON."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None

    def create(
        self,
        *,
        data: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        execution_id: str | None = None,
        source: str = "",
    ) -> Execution:
        """Create an execution whose scenario comes from an ``emulate:`` marker in the body or query string
        (or in ``source``: text the vendor stored earlier, e.g. a saved definition executed with no body)."""
        source = " ".join((source, self.body.decode("utf-8", "replace"), unquote_plus(self.request.url.query)))
        ex = self.engine.create(
            self.vendor.name,
            execution_id or self.vendor.new_id(),
            scenario=self.engine.scenario_for(source),
            idempotency_key=idempotency_key,
            data=data,
        )
        self.execution_id = ex.id
        return ex

    @property
    def store(self) -> dict[str, Any]:
        """This vendor's own resources (saved definitions...), forgotten on reset like the executions."""
        return self.engine.resources.setdefault(self.vendor.name, {})

    def idempotent(self, key: str | None) -> Execution | None:
        """The execution an earlier create with this idempotency key made, if any (then answer with it)."""
        ex = self.engine.by_idempotency_key(self.vendor.name, key) if key else None
        if ex is not None:
            self.execution_id = ex.id
        return ex

    def get(self, execution_id: str, *, poll: bool = False) -> Execution | None:
        """This vendor's execution (None if unknown). ``poll=True`` for status reads: they drive scenarios."""
        self.execution_id = execution_id
        return self.engine.get(self.vendor.name, execution_id, poll=poll)

    def cancel(self, ex: Execution, *, asynchronous: bool = False) -> bool:
        return self.engine.cancel(ex, asynchronous=asynchronous)


Handler = Callable[[Call], Awaitable[Response]]

_SECRET_PARAM = re.compile(r"key|token|secret|password|signature", re.IGNORECASE)
_DEFAULT_MESSAGES = {401: "invalid or missing API key", 429: "rate limit exceeded"}


class VendorAPI:
    """A vendor's emulated API: its routes plus the few vendor facts the shared request pipeline needs.

    ``api_key`` extracts the presented key from a request; ``error`` renders the vendor's error body for a
    status and message (used for 401, 429, injected 5xx and :class:`ApiError`); ``messages`` overrides the
    engine's default text per status; ``rate_limit_headers`` adds X-RateLimit-* where the vendor documents them;
    ``odd_fields`` names, per action, optional fields of its answers that an ``odd_field`` fault sets to a value of
    the wrong type (the client must read the rest, the id first).
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: Callable[[Request], str | None],
        error: Callable[[int, str], Response],
        new_id: Callable[[], str],
        messages: Mapping[int, str] | None = None,
        rate_limit_headers: bool = False,
        id_param: str = "execution_id",
        odd_fields: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.name, self.prefix = name, f"/{name}"
        self.api_key, self.error, self.new_id = api_key, error, new_id
        self.messages = {**_DEFAULT_MESSAGES, **(messages or {})}
        self.rate_limit_headers = rate_limit_headers
        self.id_param = id_param  # the path parameter naming the execution, so the journal can record it
        # For `odd_field` faults: per action, optional fields of its answer (dotted paths) and a wrong-typed value.
        self.odd_fields = odd_fields or {}
        self._routes: list[tuple[str, str, Action, Handler]] = []

    def route(self, method: str, path: str, *, action: Action) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._routes.append((method, path, action, handler))
            return handler

        return register

    def router(self) -> APIRouter:
        """A FastAPI router with every declared route, then a catch-all so unknown paths are journaled too."""
        router = APIRouter(prefix=self.prefix, tags=[self.name])
        for method, path, action, handler in self._routes:
            router.add_api_route(
                path, self._endpoint(handler, action), methods=[method], name=f"{self.name}.{handler.__name__}",
                summary=(handler.__doc__ or "").strip().split("\n")[0] or None,
            )
        router.add_api_route(
            "/{path:path}", self._endpoint(None, "other"), include_in_schema=False,
            methods=["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"], name=f"{self.name}.not_found",
        )
        return router

    def _endpoint(self, handler: Handler | None, action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.serve(request, handler, action)

        return endpoint

    async def serve(self, request: Request, handler: Handler | None, action: Action) -> Response:
        """The shared pipeline: journal, auth, rate limit, faults, then the vendor's handler."""
        engine: Engine = request.app.state.engine
        key = self.api_key(request)
        entry = engine.record(
            vendor=self.name,
            method=request.method,
            path=request.url.path,
            query=urlencode([(k, v) for k, v in request.query_params.multi_items() if not _SECRET_PARAM.search(k)]),
            action=action,
            execution_id=request.path_params.get(self.id_param),
            auth=engine.check_key(key),
        )
        call = Call(request, engine, self, await request.body(), entry.execution_id)
        entry.body_bytes = len(call.body)
        if entry.auth == "ok" and key:
            response = await self._respond(call, handler, key, entry)
        else:
            response = self.error(401, self.messages[401])
        entry.execution_id = call.execution_id
        entry.status_code = None if isinstance(response, DroppedResponse) else response.status_code
        return response

    async def _respond(self, call: Call, handler: Handler | None, key: str, entry: JournalEntry) -> Response:
        engine = call.engine
        decision = engine.check_rate(self.name, key)
        if decision is not None and not decision.allowed:
            response = self.error(429, self.messages[429])
            response.headers["Retry-After"] = str(decision.retry_after)
        else:
            fault = engine.take_fault(self.name, entry.action)
            entry.fault = fault.kind if fault else None
            if fault is None or fault.kind == "slow":
                if fault is not None:
                    await asyncio.sleep(fault.wait)  # then answer normally: a slow create still creates
                response = await self._handle(call, handler)
            elif fault.kind in SPOILERS:
                # The vendor acts (a create creates, a cancel cancels); only its answer is spoiled.
                response = self._spoiled(fault, call, entry.action, await self._handle(call, handler))
            else:
                # Faults answer before the handler runs, so they never change any execution.
                response = self._faulted(fault, key)
        if decision is not None and self.rate_limit_headers:
            response.headers["X-RateLimit-Limit"] = str(decision.limit)
            response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
            response.headers["X-RateLimit-Reset"] = str(math.ceil(decision.reset))
        return response

    async def _handle(self, call: Call, handler: Handler | None) -> Response:
        try:
            if handler is None:
                raise ApiError(404, "Not Found")
            return await handler(call)
        except ApiError as exc:
            return self.error(exc.status, exc.message)

    def _faulted(self, fault: Fault, key: str) -> Response:
        if fault.kind == "drop":
            return DroppedResponse()
        if fault.kind == "malformed":
            return Response(b'{"emulator": "malformed response, cut he', media_type="application/json")
        if fault.kind in ("huge", "endless"):
            return StreamedResponse(None if fault.kind == "endless" else fault.size or HUGE_SIZE)
        if fault.kind == "echo_key":  # a careless vendor: the key it refused, in the body of its 401
            return self.error(401, f"{self.messages[401]}: {key!r} is not a valid key")
        status = int(fault.kind)
        response = self.error(status, self.messages.get(status, HTTPStatus(status).phrase))
        if status == 429 or fault.retry_after is not None:
            retry_after = 1.0 if fault.retry_after is None else fault.retry_after
            response.headers["Retry-After"] = str(math.ceil(retry_after))  # HTTP wants whole seconds
        return response


    def _spoiled(self, fault: Fault, call: Call, action: Action, response: Response) -> Response:
        """The handler's own answer, spoiled the way `fault` says (a 2xx JSON answer only; others pass)."""
        body = bytes(response.body) if response.status_code < 300 and hasattr(response, "body") else None
        if body is None:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        if fault.kind == "drip":
            return DrippedResponse(body, fault.wait, status_code=response.status_code, headers=headers)
        if fault.kind == "odd_rate_limit":
            headers.update({"Retry-After": "inf", "X-RateLimit-Remaining": "nan", "X-RateLimit-Reset": "-inf"})
            return Response(body, response.status_code, headers, media_type="application/json")
        data = json.loads(body)
        if fault.kind == "odd_field":
            for path, value in self.odd_fields.get(action, {}).items():
                *parents, name = path.split(".")
                target = data
                for parent in parents:
                    target = target.get(parent) if isinstance(target, dict) else None
                if isinstance(target, dict):
                    target[name] = value
        elif fault.kind == "other_id" and call.execution_id:
            data = _replace_value(data, call.execution_id, _another_id(call.execution_id))
        text = json.dumps(data)
        if fault.kind == "deep_json" and text.endswith("}"):
            text = text[:-1] + (", " if len(text) > 2 else "") + '"emulator_deep": ' + "[" * DEEP_LEVELS + \
                "]" * DEEP_LEVELS + "}"
        return Response(text.encode(), response.status_code, headers, media_type="application/json")


def _another_id(execution_id: str) -> str:
    """An id of the same form, one character off (the last character changed)."""
    last = execution_id[-1]
    return execution_id[:-1] + ("1" if last != "1" else "2")


def _replace_value(value: Any, old: str, new: str) -> Any:
    if value == old:
        return new
    if isinstance(value, dict):
        return {k: _replace_value(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_value(v, old, new) for v in value]
    return value


class DrippedResponse(Response):
    """The whole answer, its body sent one byte every `interval` seconds (headers at once)."""

    def __init__(self, body: bytes, interval: float, *, status_code: int, headers: Mapping[str, str]) -> None:
        super().__init__(body, status_code, dict(headers), media_type="application/json")
        self.interval = interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        gone = _disconnected(receive)
        try:
            for i in range(len(self.body)):
                await asyncio.sleep(self.interval)
                if gone.done():
                    return
                await send({"type": "http.response.body", "body": bytes(self.body[i:i + 1]), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


class StreamedResponse(Response):
    """A 200 whose body is filler streamed until `size` bytes are sent (declared in Content-Length) or, with no
    size, forever (chunked), in both cases only as long as the client keeps reading."""

    CHUNK = b" " * 65536

    def __init__(self, size: int | None) -> None:
        super().__init__(media_type="application/json")
        self.size = size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        if self.size is not None:
            headers.append((b"content-length", str(self.size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = _disconnected(receive)
        sent, piece = 0, b'{"padding": "'
        try:
            while not gone.done() and (self.size is None or sent < self.size):
                if self.size is not None:
                    piece = piece[: self.size - sent]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                sent += len(piece)
                piece = self.CHUNK
                await asyncio.sleep(0)  # let the disconnect be noticed
            if not gone.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


def _disconnected(receive: Receive) -> asyncio.Task[None]:
    """A task that ends when the client has gone away."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return asyncio.ensure_future(wait())


class DroppedResponse(Response):
    """Promises a body, sends part of it and stops: the connection ends without a complete HTTP response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        })
        await send({"type": "http.response.body", "body": b'{"dropped": tr', "more_body": True})
        # Returning with the body incomplete makes uvicorn close the transport (it logs that; __main__ filters it).
