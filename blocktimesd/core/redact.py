"""Endpoint URLs as they may be shown: in logs, errors, metrics labels and HTTP bodies.

An RPC endpoint often carries a credential: ``ws://user:password@host/...`` or an API key
in the query (``?apikey=...``).  :func:`redact_url` keeps what an operator needs to
recognise the endpoint (scheme, host, port, path, the names of query parameters) and
replaces everything that may be secret with ``***``.  It never raises: text that does
not parse as ``scheme://host...`` becomes :data:`UNPARSEABLE`, which carries nothing
of the input.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["MASK", "UNPARSEABLE", "redact_url"]

MASK = "***"
UNPARSEABLE = "<unparseable URL>"


def redact_url(url: str) -> str:
    """``url`` without its userinfo, query values and fragment.

    >>> redact_url("ws://alice:S3cret@node:9944/rpc?apikey=KEY&v=2")
    'ws://***@node:9944/rpc?apikey=***&v=***'
    """
    try:
        return _printable(_redact(url))
    except Exception:  # any input at all must give something safe to print
        return UNPARSEABLE


def _redact(url: str) -> str:
    if not isinstance(url, str):
        return UNPARSEABLE
    parts = urlsplit(url)
    if parts.scheme and not (
        parts.netloc or parts.path.strip("/") or parts.query or parts.fragment
    ):
        return url.strip()  # nothing but a scheme, as in "ws://": nothing to hide
    # Without "//" there is no authority to keep apart from the rest: a typo such as
    # "alice:pw@host" would parse as scheme "alice" and path "pw@host".
    if not parts.scheme or not parts.netloc:
        return UNPARSEABLE
    _userinfo, at, hostport = parts.netloc.rpartition("@")
    out = f"{parts.scheme}://{MASK + '@' if at else ''}{_hostport(hostport)}{parts.path}"
    if parts.query:
        out += "?" + "&".join(_param(p) for p in parts.query.split("&"))
    if parts.fragment:
        out += "#" + MASK
    return out


def _hostport(hostport: str) -> str:
    """Host and port; a "port" that is not a number may be a password whose "@" is
    missing (``ws://alice:S3cret/...``), so it is masked."""
    if hostport.startswith("["):
        host, bracket, rest = hostport.partition("]")
        host += bracket
    else:
        host, colon, port = hostport.partition(":")
        rest = colon + port
    if not rest:
        return host
    if rest.startswith(":") and rest[1:].isdigit() and rest[1:].isascii():
        return host + rest
    return host + ":" + MASK


def _param(param: str) -> str:
    name, eq, _value = param.partition("=")
    # A bare token (``?KEY``) is a value without a name.
    return f"{name}={MASK}" if eq else (MASK if param else "")


def _printable(text: str) -> str:
    """No control characters: the result ends up in single log lines."""
    return "".join(c if c.isprintable() else "?" for c in text)
