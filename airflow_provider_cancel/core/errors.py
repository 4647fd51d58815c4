"""Exceptions raised by the provider. None of them ever carries an API key: vendor text is scrubbed of every secret
the provider knows (`core.redact`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_cancel.core.redact import scrub

if TYPE_CHECKING:
    from airflow_provider_cancel.core.http import RateLimit


class ProviderConfigError(AirflowException):
    """A connection or an operator argument is unusable; raised before any remote side effect."""


class ExecutionApiError(AirflowException):
    """The vendor API answered with an error, or not in a way we could read."""

    def __init__(
        self,
        *,
        vendor: str,
        method: str,
        path: str,
        status_code: int | None,
        message: str,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        conn_id: str | None = None,
        rate_limit: RateLimit | None = None,
        transient: bool | None = None,
    ) -> None:
        self.vendor = vendor
        self.conn_id = conn_id
        self.method = method
        self.path = path
        self.status_code: int | None = status_code  # type: ignore[assignment]  # the vendor's HTTP status, not ours
        self.message = scrub(message)  # vendor text: a 401 body may echo the key it refused
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.rate_limit = rate_limit  # what the error answer's headers said about our budget, if it had any
        # Whether asking again later may succeed; None: as the HTTP status says. True for an answer that came but
        # could not be used (unreadable, about another execution): a wait goes on.
        self.transient = transient
        super().__init__(str(self))

    def __str__(self) -> str:
        connection = f" (connection {self.conn_id!r})" if self.conn_id else ""
        where = f"{self.vendor} API{connection} {self.method} {self.path}"
        what = f"HTTP {self.status_code}" if self.status_code is not None else "no usable response"
        if self.code:
            what += f" {self.code}"
        text = f"{where} -> {what}: {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return scrub(text)

    def __reduce__(self):  # keep pickling (e.g. across process boundaries) working with keyword init
        return (_rebuild_api_error, (self.__dict__.copy(),))


def _rebuild_api_error(state: dict) -> ExecutionApiError:
    state = {k: v for k, v in state.items() if k in _API_ERROR_FIELDS}
    return ExecutionApiError(**state)


_API_ERROR_FIELDS = (
    "vendor", "method", "path", "status_code", "message", "code", "request_id", "retry_after", "conn_id",
    "rate_limit", "transient",
)


class ExecutionFailed(AirflowException):
    """The remote execution ended in failure; the message carries the vendor's own error."""


class ExecutionCancelledRemotely(AirflowFailException):
    """Someone else cancelled the execution. No retry: a retry would relaunch what a person stopped."""


class ExecutionKilled(AirflowException):
    """The task was killed while it waited; the remote execution was asked to cancel."""
