"""The vendor-neutral execution state every adapter maps its own status words onto."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow_provider_cancel.core.http import RateLimit


class ExecutionState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A word the adapter does not know. It never counts as success: the task keeps polling (and warns)
    # until the execution reaches a known state or the task's deadline passes.
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


class CancelOutcome(str, enum.Enum):
    """What one cancel attempt (with its retries) achieved."""

    REQUESTED = "requested"  # the vendor accepted the cancel (it may still be in progress)
    ALREADY_FINISHED = "already_finished"  # nothing to cancel: the execution had ended
    NOT_FOUND = "not_found"
    FAILED = "failed"  # every attempt failed: the execution may still run

    @property
    def settled(self) -> bool:
        return self is not CancelOutcome.FAILED


TERMINAL_STATES = frozenset({ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.CANCELLED})


def normalize_status(word: object, words: Mapping[str, ExecutionState]) -> ExecutionState:
    """Map a vendor's status word, case-insensitively and with either spelling of cancel(l)ed."""
    if not isinstance(word, str):
        return ExecutionState.UNKNOWN
    key = word.strip().lower()
    state = words.get(key) or words.get(key.replace("canceled", "cancelled"))
    return state or ExecutionState.UNKNOWN


@dataclass(frozen=True)
class ExecutionStatus:
    """One status reading of one remote execution, as a vendor adapter understood it."""

    execution_id: str
    state: ExecutionState
    vendor_status: str
    # One human line of progress ("45%, Analyzing data"; "120/123 items") when the vendor reports it.
    progress: str | None = None
    # The vendor's own explanation of a failure or cancellation, ready for an exception message.
    error: str | None = None
    # The raw, parsed status payload, for result extraction by the same adapter.
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # What the vendor's answer said about the API key's remaining budget, for the next read's timing.
    rate_limit: RateLimit | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        text = f"{self.state.value} ({self.vendor_status})"
        if self.progress:
            text += f", {self.progress}"
        return text


class _Dumpable(Protocol):
    def model_dump(self) -> dict[str, Any]: ...


class LazyPayload(Mapping[str, Any]):
    """A parsed model's `model_dump()`, made on first read: most polls only look at the state."""

    __slots__ = ("_data", "_model")

    def __init__(self, model: _Dumpable) -> None:
        self._model: _Dumpable | None = model
        self._data: dict[str, Any] = {}

    def _dict(self) -> dict[str, Any]:
        if self._model is not None:
            self._data, self._model = self._model.model_dump(), None
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())
