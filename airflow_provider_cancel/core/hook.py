"""The base hook: an Airflow connection turned into an API client, and the vendor-neutral status/cancel calls.

A vendor hook only declares facts (paths, auth header, status words) and parses payloads; every request
goes through `ApiClient`, so retries, timeouts, errors and secrets are handled in exactly one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from airflow.providers.common.compat.sdk import BaseHook
from pydantic import BaseModel, ValidationError

from airflow_provider_cancel.core import redact
from airflow_provider_cancel.core.errors import ExecutionApiError, ProviderConfigError
from airflow_provider_cancel.core.http import (
    NO_RETRY,
    Answer,
    ApiCall,
    ApiClient,
    ClientTimeouts,
    RetryPolicy,
    url_credentials,
    validate_base_url,
)
from airflow_provider_cancel.core.state import CancelOutcome, ExecutionState, ExecutionStatus

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)
HookT = TypeVar("HookT", bound="ExecutionHook")
MAX_ID_LENGTH = 200


def parse_model(model: type[Model], body: Any, *, vendor: str, call: ApiCall) -> Model:
    """Validate a vendor payload. Only what the model requires (the id, the state word) is strict: a wrong shape
    there is one clear error naming the field (transient: a wait asks again). An optional field of an unexpected
    type is dropped, with one warning per vendor and field, so that what can be read still is."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
    if isinstance(body, Mapping):
        for _ in range(_MAX_REPAIRS):
            drops = _optional_parts(model, body, errors)
            if drops is None:
                break
            for path in sorted(drops, reverse=True):  # the last list items first: earlier indices stay valid
                body = _without(body, path)
                _warn_once(vendor, model, path)
            try:
                return model.model_validate(body)
            except ValidationError as exc:
                errors = exc.errors()
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in errors[:5]
    )
    raise ExecutionApiError(
        vendor=vendor, method=call.method, path=call.path, status_code=200,
        message=f"unexpected response shape ({problems})", transient=True,
    )


_MAX_REPAIRS = 8  # rounds of dropping: a nested field's parent goes in the next round when it cannot do without it
_WARNED: set[tuple[str, str, str]] = set()


def _optional_parts(model: type[BaseModel], body: Mapping[str, Any], errors: list[Any]) -> set[tuple] | None:
    """Where in `body` each error sits, as far as the body goes (a union member's tag in the error's location is
    not in the body); None when one of them is, or is inside, a field the model requires."""
    paths: set[tuple] = set()
    for err in errors:
        loc, path, value = err["loc"], [], body
        for part in loc:
            if (isinstance(value, Mapping) and part in value) or (
                isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
            ):
                path.append(part)
                value = value[part]
            else:
                break
        if not path:
            return None  # the body itself, or a missing field (a missing optional field is no error)
        field = model.model_fields.get(str(path[0]))
        if field is None or field.is_required():
            return None
        paths.add(tuple(path))
    return paths or None


def _without(value: Any, path: tuple) -> Any:
    """A copy of `value` without the element at `path` (only the containers on the way are copied)."""
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, Mapping) else list(value)
    if rest:
        copy[head] = _without(copy[head], rest)
    else:
        del copy[head]
    return copy


def _warn_once(vendor: str, model: type[BaseModel], path: tuple) -> None:
    where = ".".join("[]" if isinstance(part, int) else str(part) for part in path)
    if (vendor, model.__name__, where) not in _WARNED:
        _WARNED.add((vendor, model.__name__, where))
        log.warning("%s answered %s field %r with a value of an unexpected type: ignored (logged once)", vendor,
                    model.__name__, where)


def is_template(value: object) -> bool:
    """A value known only at run time (a Jinja template, an upstream task's XComArg): checked then, not at
    DAG parse."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    try:
        from airflow.sdk.definitions._internal.mixins import ResolveMixin
    except ImportError:  # pragma: no cover - older Task SDK layouts
        return False
    return isinstance(value, ResolveMixin)


def short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


class ExecutionHook(BaseHook):
    """Base for the vendor hooks. Subclasses set the class facts and implement the adapter methods.

    A concrete hook that leaves a required fact unset or a required method unimplemented fails when its class is
    created (at import), not at its first request. ``class MyBase(ExecutionHook, abstract=True)`` declares an
    intermediate base that is exempt.
    """

    # -- class facts: required (REQUIRED_FACTS) unless a default is given here ---------------------------
    # Airflow's hook registration.
    conn_name_attr: ClassVar[str] = "conn_id"
    conn_type: ClassVar[str]
    default_conn_name: ClassVar[str]
    hook_name: ClassVar[str]

    # Vendor facts.
    vendor: ClassVar[str]
    default_host: ClassVar[str]
    api_key_header: ClassVar[str]
    api_key_scheme: ClassVar[str] = ""  # "Bearer" puts "Bearer <key>" in the header
    status_words: ClassVar[Mapping[str, ExecutionState]]
    execution_id_pattern: ClassVar[re.Pattern[str] | None] = None
    execution_id_example: ClassVar[str] = ""
    # Does the vendor's create take an idempotency key (the operator sends one per try)? Then a create whose
    # answer was lost is sent again and the vendor answers about the same execution; else it is never resent.
    idempotent_create: ClassVar[bool] = False

    REQUIRED_FACTS: ClassVar[tuple[str, ...]] = (
        "conn_type", "default_conn_name", "hook_name", "vendor", "default_host", "api_key_header", "status_words",
    )
    REQUIRED_METHODS: ClassVar[tuple[str, ...]] = ("status_call", "parse_status", "cancel_call", "test_call")

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Airflow 3.0-3.1 read a form only from methods the hook class defines itself (ProvidersManager.
        # _import_hook looks in hook_class.__dict__): every vendor hook gets its own, unless it has one.
        for name in ("get_ui_field_behaviour", "get_connection_form_widgets"):
            if name not in cls.__dict__:
                setattr(cls, name, classmethod(getattr(ExecutionHook, name).__func__))
        if abstract:
            return
        missing = [name for name in cls.REQUIRED_FACTS if not getattr(cls, name, None)]
        missing += [f"{name}()" for name in cls.REQUIRED_METHODS if getattr(cls, name) is getattr(ExecutionHook, name)]
        if missing:
            raise TypeError(f"{cls.__qualname__} must define {', '.join(missing)} (see ExecutionHook)")

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        timeouts: ClientTimeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id or self.default_conn_name
        self._timeouts = timeouts
        self._retry = retry
        self._client: ApiClient | None = None
        self._async_client: ApiClient | None = None
        self._trusted_ids: set[str] = set()
        # Set by the operator while it starts an execution: it owns (and records) an execution the moment its id
        # is known, before the rest of the answer is read, and records an id the client chose before sending.
        self.on_planned: Callable[[str], None] | None = None
        self.on_started: Callable[[str], None] | None = None

    # -- connection -> client --------------------------------------------------------------------------
    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = self.client_for(self.get_connection(self.conn_id))
        return self._client

    async def aclient(self) -> ApiClient:
        if self._async_client is None:
            from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

            # common-compat reads the connection and its extra without blocking the loop on every Airflow 3:
            # on 3.3.1 `aget_connection` + `extra_dejson` on the triggerer's loop can raise
            # DeadlockImminentError (apache/airflow#71891); before 3.1 there is no `aget_connection`.
            # Shielded: asgiref re-raises a cancellation without its message, and the triggerer tells a
            # user kill (which must cancel the execution) from a shutdown only by that message.
            conn = await asyncio.shield(get_async_connection(self.conn_id, hook=self))
            extra = await asyncio.shield(get_async_extra_dejson(conn))
            self._async_client = self.client_for(conn, extra=extra)
        return self._async_client

    def client_for(self, conn: Any, *, extra: Mapping[str, Any] | None = None) -> ApiClient:
        """The connection as a client. Its secrets (the key, credentials in the host) are registered with the
        scrubber and Airflow's masker first; a key or host the provider cannot send safely is refused, naming the
        connection and the field, never echoing the secret."""
        key = (conn.password or "").strip()
        host = (conn.host or "").strip() or self.default_host
        redact.register(conn.password, key, *url_credentials(host))
        where = f"Connection {self.conn_id!r} ({self.vendor})"
        if not key:
            raise ProviderConfigError(f"{where} has no API key: put the key in its password field.")
        if not key.isascii():
            raise ProviderConfigError(f"{where}: the API key (password field) has non-ASCII characters, which an HTTP "
                                      "header cannot carry: paste the key again, exactly as the vendor shows it.")
        if not key.isprintable():
            raise ProviderConfigError(f"{where}: the API key (password field) has a line break or another control "
                                      "character inside it: paste the key again, on one line.")
        extra = (conn.extra_dejson if extra is None else extra) or {}  # the async path read it without blocking
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        if conn.port and not url_credentials(host):  # a separate port field applies when the host has none
            with contextlib.suppress(ValueError):  # an unusable host is refused just below, by name
                parts = urllib.parse.urlsplit(host)
                if parts.port is None:
                    host = parts._replace(netloc=f"{parts.netloc}:{conn.port}").geturl()
        base_url = validate_base_url(
            host, conn_id=self.conn_id, allow_insecure=_truthy(extra.get("allow_insecure_http"))
        )
        timeouts = self._timeouts or ClientTimeouts(
            connect=_number(extra, "connect_timeout", 10.0, conn_id=self.conn_id),
            read=_number(extra, "timeout", 30.0, conn_id=self.conn_id),
        )
        retry = self._retry or RetryPolicy(
            max_attempts=int(_number(extra, "max_retries", 5, conn_id=self.conn_id)) + 1
        )
        return ApiClient(
            vendor=self.vendor,
            base_url=base_url,
            auth_headers={**self.auth_headers(key), **self.extra_headers(extra)},
            timeouts=timeouts,
            retry=retry,
            conn_id=self.conn_id,
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        value = f"{self.api_key_scheme} {key}" if self.api_key_scheme else key
        return {self.api_key_header: value}

    def extra_headers(self, extra: Mapping[str, Any]) -> dict[str, str]:
        """Vendor headers read from the connection's extra (e.g. an organisation id)."""
        return {}

    # -- vendor adapter: required overrides (REQUIRED_METHODS) ---------------------------------------------
    def status_call(self, execution_id: str) -> ApiCall:
        """The request that reads one execution's status."""
        raise NotImplementedError

    def parse_status(self, execution_id: str, body: Any, call: ApiCall) -> ExecutionStatus:
        """The status answer in the vendor-neutral vocabulary (`ExecutionState` via `status_words`)."""
        raise NotImplementedError

    def cancel_call(self, execution_id: str) -> ApiCall:
        """The request that cancels one execution."""
        raise NotImplementedError

    def test_call(self) -> ApiCall:
        """A cheap authenticated request for the UI's Test button."""
        raise NotImplementedError

    # -- vendor adapter: optional overrides -------------------------------------------------------------
    def cancel_outcome(self, body: Any) -> CancelOutcome:
        return CancelOutcome.REQUESTED

    def cancel_error_outcome(self, error: ExecutionApiError) -> CancelOutcome | None:
        """Map a cancel error that means "nothing left to cancel"; None means it is a real error."""
        if error.status_code == 404:
            return CancelOutcome.NOT_FOUND
        if error.status_code == 409:
            return CancelOutcome.ALREADY_FINISHED
        return None

    def execution_url(self, execution_id: str, info: Mapping[str, Any]) -> str | None:
        """A page where a person can see the execution, if the vendor has one."""
        return None

    # -- vendor-neutral lifecycle ----------------------------------------------------------------------
    def trust(self, execution_id: object) -> str:
        """Accept an id the vendor itself returned (or one we recorded from it) without the format check.

        A vendor changing its id format must not turn a started execution into one we can no longer
        poll or cancel: ids travel as one percent-encoded path segment, so any string is safe to send.
        """
        if not isinstance(execution_id, str) or not execution_id.strip() or len(execution_id) > 4 * MAX_ID_LENGTH:
            raise ProviderConfigError(f"{self.vendor} returned an unusable execution id {short_repr(execution_id)}")
        self._trusted_ids.add(execution_id)
        return execution_id

    def planned(self, execution_id: str) -> str:
        """An id the client chose (B3OS ``runId``), about to be sent in a create: recorded before the request."""
        execution_id = self.trust(execution_id)
        if self.on_planned is not None:
            self.on_planned(execution_id)
        return execution_id

    def started(self, execution_id: object) -> str:
        """The id a create answered with: call it as soon as the id is read, before anything else can fail."""
        execution_id = self.trust(execution_id)
        if self.on_started is not None:
            self.on_started(execution_id)
        return execution_id

    def close(self) -> None:
        """Close this hook's sync connections (the async session is shared per event loop and closed with it)."""
        if self._client is not None:
            self._client.close()

    def validate_execution_id(self, value: object) -> str:
        """Reject ids that are not the vendor's, before any request (no `/`, `..`, spaces, huge strings).
        Ids the vendor returned to this hook (`trust`) are accepted as they are."""
        if isinstance(value, str) and value in self._trusted_ids:
            return value
        expected = f" (expected e.g. {self.execution_id_example!r})" if self.execution_id_example else ""
        if not isinstance(value, str) or not value.strip():
            raise ProviderConfigError(f"{self.vendor} execution id must be a non-empty string, got {short_repr(value)}")
        if len(value) > MAX_ID_LENGTH:
            raise ProviderConfigError(
                f"{self.vendor} execution id is {len(value)} characters long: {short_repr(value)}{expected}"
            )
        pattern = self.execution_id_pattern
        if pattern is not None and not pattern.fullmatch(value):
            raise ProviderConfigError(f"{short_repr(value)} is not a valid {self.vendor} execution id{expected}")
        if (pattern is None and not re.fullmatch(r"[A-Za-z0-9_.:\-]+", value)) or ".." in value:
            raise ProviderConfigError(f"{short_repr(value)} is not a valid {self.vendor} execution id{expected}")
        return value

    def get_status(self, execution_id: str, *, deadline: float | None = None) -> ExecutionStatus:
        """The execution's status, with what the answer said about our rate budget (`status.rate_limit`).

        `deadline` (a `time.monotonic()` instant) bounds the whole read, retries included."""
        call = self.status_call(self.validate_execution_id(execution_id))
        return self._status(execution_id, call, self.client.send(call, deadline=deadline))

    async def aget_status(self, execution_id: str, *, deadline: float | None = None) -> ExecutionStatus:
        call = self.status_call(self.validate_execution_id(execution_id))
        client = await self.aclient()
        return self._status(execution_id, call, await client.asend(call, deadline=deadline))

    def _status(self, execution_id: str, call: ApiCall, answer: Answer) -> ExecutionStatus:
        """The adapter's reading of a status answer. One it cannot read, or one about another execution, is an
        error a wait rides out (transient): never a crash, never another execution's state taken for ours."""
        try:
            status = self.parse_status(execution_id, answer.body, call)
        except ExecutionApiError as err:
            err.rate_limit = err.rate_limit or answer.rate_limit
            raise
        except Exception as err:
            raise self._unusable(call, answer, f"unreadable status answer ({type(err).__name__}: {err})") from None
        answered = status.execution_id
        if answered != execution_id and not (isinstance(answered, str) and answered.lower() == execution_id.lower()):
            raise self._unusable(call, answer, f"answer about another execution ({short_repr(answered)}, not "
                                               f"{execution_id}): not taken for this one")
        return dataclasses.replace(status, execution_id=execution_id, rate_limit=answer.rate_limit)

    def _unusable(self, call: ApiCall, answer: Answer, message: str) -> ExecutionApiError:
        return ExecutionApiError(vendor=self.vendor, method=call.method, path=call.path, status_code=200,
                                 message=message, conn_id=self.conn_id, rate_limit=answer.rate_limit, transient=True)

    def cancel(
        self, execution_id: str, *, client: ApiClient | None = None, deadline: float | None = None
    ) -> CancelOutcome:
        """Ask the vendor to cancel; `deadline` (a `time.monotonic()` instant) bounds it, retries included."""
        call = self.cancel_call(self.validate_execution_id(execution_id))
        try:
            return self._cancel_outcome((client or self.client).request(call, deadline=deadline))
        except ExecutionApiError as err:
            return self._cancel_error(err)

    async def acancel(
        self, execution_id: str, *, client: ApiClient | None = None, deadline: float | None = None
    ) -> CancelOutcome:
        call = self.cancel_call(self.validate_execution_id(execution_id))
        try:
            return self._cancel_outcome(await (client or await self.aclient()).arequest(call, deadline=deadline))
        except ExecutionApiError as err:
            return self._cancel_error(err)

    def _cancel_outcome(self, body: Any) -> CancelOutcome:
        """The adapter's reading of a cancel answer (a 2xx); one it cannot read still says the cancel was taken."""
        try:
            return self.cancel_outcome(body)
        except ExecutionApiError:
            raise
        except Exception as err:
            self.log.warning("%s accepted a cancel with an answer that could not be read (%s)", self.vendor,
                             redact.scrub(f"{type(err).__name__}: {err}"))
            return CancelOutcome.REQUESTED

    def _cancel_error(self, err: ExecutionApiError) -> CancelOutcome:
        outcome = self.cancel_error_outcome(err)
        if outcome is None:
            raise err
        return outcome

    def __enter__(self: HookT) -> HookT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one quick authenticated request, no retries, an answer a person can act on."""
        ok, message = self._test_connection()
        return ok, redact.scrub(message)  # shown in the UI: vendor and transport text may echo a secret

    def _test_connection(self) -> tuple[bool, str]:
        try:
            client = self.client.with_options(retry=NO_RETRY)
        except Exception as err:
            return False, str(err)
        ok = f"Connected to {self.vendor} at {client.base_url}; the API key was accepted."
        try:
            client.request(self.test_call())
        except ExecutionApiError as err:
            if err.status_code == 404:  # authenticated; the probe resource just does not exist
                return True, ok
            if err.status_code in (401, 403):
                return False, f"{self.vendor} rejected the API key: {err.message}"  # the UI tests a temporary id
            return False, str(err)
        except Exception as err:
            return False, f"Could not reach {self.vendor} at {client.base_url}: {type(err).__name__}: {err}"
        finally:
            client.close()
        return True, ok

    # -- the connection form on Airflow < 3.2 (3.2+ reads it from the provider info) ----------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_cancel.connections import ui_field_behaviour

        return ui_field_behaviour(cls.conn_type)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from airflow_provider_cancel.connections import connection_form_widgets

        return connection_form_widgets(cls.conn_type)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"))


def _number(extra: Mapping[str, Any], key: str, default: float, *, conn_id: str) -> float:
    value = extra.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProviderConfigError(f"Connection {conn_id!r}: extra {key!r} must be a number, got {value!r}") from None
    if number < 0:
        raise ProviderConfigError(f"Connection {conn_id!r}: extra {key!r} must not be negative, got {value!r}")
    return number
