"""Settings of the HTTP layer: timeouts, the retry policy, and the limits every answer is held to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_cancel import __version__

USER_AGENT = f"airflow-provider-cancel/{__version__}"
# 500 too: vendors answer it for passing failures; like 502/504 it is retried only when retry_safe.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# A status or result page this large is not a vendor answer we can use (and would bloat memory and XCom).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """JSON-serializable, so it survives the trip into a trigger unchanged."""

    max_attempts: int = 6
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 300.0
    # The request's whole time budget, in seconds from its first attempt, when the caller gives no deadline:
    # no attempt runs and no back-off sleeps past it (a kill's cancel has ~5 s before SIGKILL).
    give_up_after: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        return cls(**data) if data else cls()


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class ClientTimeouts:
    """Per phase of one attempt; a request's deadline shortens them all to what is left of it."""

    connect: float = 10.0  # to open the connection (and wait for a pooled one)
    read: float = 30.0  # between two reads of the answer
    # One attempt, end to end, whatever the server does (a drip of one byte per second passes every read
    # timeout). None: connect + 2 x read.
    total: float | None = None

    @property
    def attempt(self) -> float:
        return self.total if self.total is not None else self.connect + 2 * self.read
