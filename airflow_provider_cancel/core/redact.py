"""One scrubber for every secret the provider knows (API keys, URL credentials), wherever vendor or transport text
enters a message: exception messages and notes, retry warnings, the Test button's answer, trigger events.

`register` also hands each secret to Airflow's own masker, which redacts task and triggerer logs; `scrub` is for
the text Airflow's masker never sees (an exception stored in a trigger event, a message returned to the UI).
"""

from __future__ import annotations

import contextlib
import re
import threading
import urllib.parse

REPLACEMENT = "***"
# Shorter pieces are not scrubbed (they would blank ordinary words); Airflow's masker skips those under 5 too.
MIN_LENGTH = 4
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def forms(secret: str) -> set[str]:
    """The secret as it may appear in text: itself, the pieces between its line breaks or other control characters
    (a header cannot carry those, so an error may show the pieces), and its URL-encoded forms."""
    found = {secret, *_CONTROL.split(secret), urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return {form for form in found if len(form) >= MIN_LENGTH}


def register(*secrets: str | None) -> None:
    """Scrub these from every message from now on, and mask them in Airflow's logs."""
    global _pattern
    new = set().union(*(forms(secret) for secret in secrets if secret)) - _secrets
    if not new:
        return
    with _lock:
        _secrets.update(new)
        ordered = sorted(_secrets, key=len, reverse=True)  # the longest first: a piece never hides its whole
        _pattern = re.compile("|".join(map(re.escape, ordered)))
    for form in new:
        _mask_in_airflow(form)


def scrub(text: str) -> str:
    """`text` without any registered secret."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REPLACEMENT, text)


def _mask_in_airflow(secret: str) -> None:
    with contextlib.suppress(Exception):  # outside a task or triggerer (tests, scripts) there is no masker to tell
        from airflow.providers.common.compat.sdk import mask_secret

        mask_secret(secret)
