"""What a vendor's headers say about our request budget: `Retry-After` and `X-RateLimit-*`."""

from __future__ import annotations

import email.utils
import math
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


# Beyond these a value is no real instruction: ignored like a garbled one (not a crash, not a long wait).
MAX_SENSIBLE_WAIT = 86_400.0  # Retry-After
MAX_SENSIBLE_RESET = 366 * 86_400.0  # X-RateLimit-Reset from now (a daily or monthly quota's window)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date. None when absent, garbled, not finite,
    negative, or over a day."""
    if not value:
        return None
    value = value.strip()
    seconds = _number(value)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if when is None:
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if 0 <= seconds <= MAX_SENSIBLE_WAIT else None


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit:
    """What the headers say, each value only when it is a sensible number (`inf`, `nan`, negative or absurd values
    are ignored)."""
    remaining = _number(headers.get("x-ratelimit-remaining"))
    reset = _number(headers.get("x-ratelimit-reset"))
    retry_after = headers.get("retry-after")
    if remaining is None and reset is None and not retry_after:
        return NO_RATE_LIMIT
    if remaining is not None and not 0 <= remaining < 1e15:
        remaining = None
    now = time.time()
    # Vendors send an epoch timestamp; some send seconds-until-reset. A small number is the latter.
    if reset is not None and 0 <= reset < 1e9:
        reset = now + reset
    if reset is not None and not 0 <= reset <= now + MAX_SENSIBLE_RESET:
        reset = None
    return RateLimit(
        remaining=None if remaining is None else int(remaining),
        reset_at=reset,
        retry_after=parse_retry_after(retry_after, now=now),
    )


def _number(value: str | None) -> float | None:
    """A finite number, else None."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
