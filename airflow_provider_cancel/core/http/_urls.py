"""URLs: an id as one path segment, and the base URLs a key may be sent to."""

from __future__ import annotations

import re
import urllib.parse

from airflow_provider_cancel.core.errors import ProviderConfigError

_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def quote_path_id(value: str) -> str:
    """Percent-encode an id for use as one path segment (a `/`, `?` or `#` stays inside it)."""
    if _UNRESERVED.fullmatch(value):  # most ids: nothing to encode (a poll builds this every time)
        return value
    return urllib.parse.quote(value, safe="")


def validate_base_url(url: str, *, conn_id: str, allow_insecure: bool) -> str:
    """Refuse URLs that would send an API key in clear text off this machine."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ProviderConfigError(
            f"Connection {conn_id!r}: host {url!r} is not an http(s) URL (expected e.g. https://api.example.com)"
        )
    if parsed.scheme == "http" and not allow_insecure and not _is_loopback(parsed.hostname):
        raise ProviderConfigError(
            f"Connection {conn_id!r}: host {url!r} uses plain http to a non-loopback address, which would "
            "send the API key unencrypted. Use https, or set extra {\"allow_insecure_http\": true} to accept it."
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    import ipaddress  # here, not at import: DAG parsing never needs it

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
