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
    # Seconds from the first attempt: no retry is sent after this (a kill's cancel has ~5 s before SIGKILL).
    give_up_after: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        return cls(**data) if data else cls()


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class ClientTimeouts:
    connect: float = 10.0
    read: float = 30.0
