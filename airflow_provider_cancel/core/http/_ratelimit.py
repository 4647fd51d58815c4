"""What a vendor's headers say about our request budget: `Retry-After` and `X-RateLimit-*`."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """What the vendor said about our remaining budget on one answer."""

    remaining: int | None = None
    reset_at: float | None = None  # epoch seconds
    retry_after: float | None = None

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


NO_RATE_LIMIT = RateLimit()  # immutable: one shared instance when a vendor sends no rate-limit headers


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date. None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit:
    remaining = _number(headers.get("x-ratelimit-remaining"))
    reset = _number(headers.get("x-ratelimit-reset"))
    retry_after = headers.get("retry-after")
    if remaining is None and reset is None and not retry_after:
        return NO_RATE_LIMIT
    # Vendors send an epoch timestamp; some send seconds-until-reset. A small number is the latter.
    if reset is not None and reset < 1e9:
        reset = time.time() + reset
    return RateLimit(
        remaining=None if remaining is None else int(remaining),
        reset_at=reset,
        retry_after=parse_retry_after(retry_after),
    )


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
