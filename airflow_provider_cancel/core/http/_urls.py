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


def url_credentials(url: str) -> tuple[str, ...]:
    """The user name and password inside `url` (`https://user:pass@host`), if any: secrets to scrub."""
    netloc = urllib.parse.urlsplit(url if "://" in url else f"//{url}").netloc
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return ()
    user, _, password = userinfo.partition(":")
    return tuple(part for part in (userinfo, user, password, urllib.parse.unquote(password)) if part)


def validate_base_url(url: str, *, conn_id: str, allow_insecure: bool) -> str:
    """Refuse URLs the provider cannot send an API key to: with credentials inside (never echoed), a query string
    or fragment (every path would be glued after it), not http(s), or plain http off this machine."""
    where = f"Connection {conn_id!r}: host"
    if url_credentials(url):
        raise ProviderConfigError(f"{where} has credentials inside it (user:password@): remove them and put the API "
                                  "key in the password field")
    try:
        parsed = urllib.parse.urlsplit(url)
        hostname, _ = parsed.hostname, parsed.port  # .port raises on a port that is not a number
    except ValueError:
        raise ProviderConfigError(f"{where} {url!r} is not a valid URL (expected e.g. https://api.example.com)"
                                  ) from None
    if parsed.scheme not in ("http", "https") or not hostname:
        raise ProviderConfigError(f"{where} {url!r} is not an http(s) URL (expected e.g. https://api.example.com)")
    if parsed.query or parsed.fragment or url.rstrip().endswith(("?", "#")):
        shown = urllib.parse.urlunsplit(parsed._replace(query="", fragment=""))
        raise ProviderConfigError(f"{where} {shown!r} has a query string or fragment (…?… or …#…), which would "
                                  "mangle every request path: remove it")
    if parsed.scheme == "http" and not allow_insecure and not _is_loopback(hostname):
        raise ProviderConfigError(
            f"{where} {url!r} uses plain http to a non-loopback address, which would "
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
