"""Parsers of setting values: each returns the value or raises :class:`Invalid` with
what is wrong with it; :mod:`.load` adds the setting's name and its fix."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from blocktimesd.config.model import MetricsAddr
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.redact import redact_url
from blocktimesd.dataset.layout import is_chain_name
from blocktimesd.dataset.objects import DataPath, data_location, location_problem

__all__ = [
    "Invalid",
    "Number",
    "Parser",
    "Whole",
    "chain_name",
    "directory",
    "domain_ids",
    "endpoints",
    "expected_name",
    "genesis",
    "kind",
    "metrics_addr",
    "number",
    "shown",
    "whole",
]


class Invalid(Exception):
    def __init__(self, *problems: tuple[Any, str]) -> None:
        super().__init__(problems)
        self.problems = problems  # (bad value, what is wrong with it)


Parser = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Whole:
    """A whole number from ``minimum`` to ``maximum`` (``why_maximum`` says why).  Text
    is parsed where settings are text (environment, command line); a TOML file has
    numbers, so ``text=False`` refuses a quoted one there."""

    minimum: int
    maximum: int | None = None
    why_maximum: str = ""
    text: bool = True

    def __call__(self, value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = int(value.strip())
            if number is not None and not self.text:
                raise Invalid((value, "is a string, not a whole number (remove the quotes)"))
        if number is None:
            raise Invalid((value, "is not a whole number"))
        if number < self.minimum:
            raise Invalid((value, f"is below the minimum of {self.minimum}"))
        if self.maximum is not None and number > self.maximum:
            why = f": {self.why_maximum}" if self.why_maximum else ""
            raise Invalid((value, f"is above the maximum of {self.maximum}{why}"))
        return number


@dataclass(frozen=True, slots=True)
class Number:
    """A finite number, at least (or, with ``above``, more than) ``minimum``; text as in
    :class:`Whole`."""

    minimum: float
    above: bool
    text: bool = True

    def __call__(self, value: Any) -> float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value.strip())
            if number is not None and math.isfinite(number) and not self.text:
                raise Invalid((value, "is a string, not a number (remove the quotes)"))
        if number is None or not math.isfinite(number):
            raise Invalid((value, "is not a number"))
        if self.above and number <= self.minimum:
            raise Invalid((value, f"is not above {self.minimum:g}"))
        if number < self.minimum:
            raise Invalid((value, f"is below the minimum of {self.minimum:g}"))
        return number


def whole(minimum: int, maximum: int | None = None, why_maximum: str = "") -> Whole:
    return Whole(minimum, maximum, why_maximum)


def number(minimum: float, *, above: bool) -> Number:
    return Number(minimum, above)


def directory(value: Any) -> DataPath:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise Invalid((value, "is not a string"))
    if not value.strip():
        raise Invalid((value, "is empty"))
    problem = location_problem(value)
    if problem is not None:
        raise Invalid((value, problem))
    return data_location(value.strip())


_BAD_HOST = (
    "has a host that is neither an IP address nor a DNS name (labels of 1 to 63 "
    "characters, 253 in all)"
)
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")


def _valid_host(host: str) -> bool:
    """An IP address, or a name the resolver accepts: IDNA-encodable, in labels of 1 to
    63 characters, 253 in all.  Anything else fails later, inside the socket layer,
    with an error that does not name the setting."""
    import ipaddress  # here: only a metrics address has a host to check

    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    name = name.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def metrics_addr(value: Any) -> MetricsAddr:
    if isinstance(value, str):
        host, _, port = value.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host and port.isdigit() and int(port) <= 65535:
            if not _valid_host(host):
                raise Invalid((value, _BAD_HOST))
            return MetricsAddr(host, int(port))
    raise Invalid((value, "is not host:port with a port from 0 to 65535"))


def endpoints(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise Invalid((value, "is not a list of URLs"))
    urls = [item.strip() if isinstance(item, str) else item for item in items]
    urls = [url for url in urls if url != ""]
    if not urls:
        raise Invalid((value, "lists no endpoints"))
    bad = [(shown(url), problem) for url in urls if (problem := _ws_url_problem(url))]
    if bad:
        raise Invalid(*bad)
    return tuple(urls)


def _ws_url_problem(url: Any) -> str | None:
    """What is wrong with an endpoint URL, or None."""
    if not isinstance(url, str) or any(c.isspace() for c in url):
        return "is not a ws:// or wss:// URL"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        return "is not a ws:// or wss:// URL"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return "is not a ws:// or wss:// URL"
    if not _valid_host(parts.hostname):
        return _BAD_HOST
    if port == 0:
        return "has port 0, not a port from 1 to 65535"
    return None


def shown(value: Any) -> Any:
    """An endpoint setting as a message may show it: each URL without credentials."""
    if isinstance(value, str):
        return ",".join(redact_url(url.strip()) if url.strip() else url for url in value.split(","))
    if isinstance(value, list):
        return [shown(item) if isinstance(item, str) else item for item in value]
    return value


def kind(value: Any) -> ChainKind:
    try:
        return ChainKind(value)
    except ValueError:
        raise Invalid((value, "is not a chain kind")) from None


def chain_name(value: Any) -> str:
    if not isinstance(value, str) or not is_chain_name(value):
        raise Invalid((value, "is not a usable chain name"))
    return value


def expected_name(value: Any) -> str | None:
    if not isinstance(value, str):
        raise Invalid((value, "is not a string"))
    return value or None


_HASH = re.compile(r"0x[0-9a-fA-F]{64}\Z")


def genesis(value: Any) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str) or not _HASH.match(value):
        raise Invalid((value, "is not a 0x-prefixed 32-byte hex hash"))
    return value.lower()


def domain_ids(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
        or len(set(value)) != len(value)
    ):
        raise Invalid((value, "is not a list of distinct domain ids"))
    return tuple(value)
