"""Endpoint URLs as shown to operators: credentials out, the endpoint still recognisable."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocktimesd.core.redact import UNPARSEABLE, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ws://alice:S3cret@host/rpc?apikey=KEY", "ws://***@host/rpc?apikey=***"),
        ("ws://alice@host:9944", "ws://***@host:9944"),
        ("wss://rpc.mainnet.autonomys.xyz/ws", "wss://rpc.mainnet.autonomys.xyz/ws"),
        ("ws://127.0.0.1:9944", "ws://127.0.0.1:9944"),
        ("ws://[::1]:9944/x?a=1&b=2", "ws://[::1]:9944/x?a=***&b=***"),
        ("ws://host/?KEY", "ws://host/?***"),
        ("ws://host/?a=1&&b", "ws://host/?a=***&&***"),
        ("ws://host/p#token", "ws://host/p#***"),
        ("ws://a:b@c@host", "ws://***@host"),
        ("ws://user:p%40ss@host:1/", "ws://***@host:1/"),
        # "@" forgotten: what looks like a port may be a password.
        ("ws://alice:S3cret/host", "ws://alice:***/host"),
        ("ws://[::1]S3cret/", "ws://[::1]:***/"),
        ("ws://", "ws://"),
        ("https://host/ws", "https://host/ws"),
        # Not scheme://host: nothing of it is shown.
        ("alice:S3cret@host", UNPARSEABLE),
        ("S3cret", UNPARSEABLE),
        ("", UNPARSEABLE),
        ("ws://[::1", UNPARSEABLE),
        ("ws:///?apikey=KEY", UNPARSEABLE),
        # One log line: no control characters.
        ("ws://host/a\x1bb", "ws://host/a?b"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_anything_at_all_gives_a_string() -> None:
    for junk in (None, 5, b"ws://a:b@c", object()):
        assert redact_url(junk) == UNPARSEABLE  # type: ignore[arg-type]


# What a well-formed URL may carry there unencoded (RFC 3986 "unreserved").
SECRET = st.text(alphabet=string.ascii_letters + string.digits + "-._~", min_size=6, max_size=20)


@settings(max_examples=100, deadline=None)
@given(
    scheme=st.sampled_from(["ws", "wss", "http"]),
    user=SECRET,
    password=SECRET,
    key=SECRET,
    value=SECRET,
)
def test_no_credential_survives(
    scheme: str, user: str, password: str, key: str, value: str
) -> None:
    url = f"{scheme}://{user}:{password}@node.example:9944/ws?{key}={value}"
    shown = redact_url(url)
    for secret in (user, password, value):
        # Allowed only where it happens to be part of what is kept.
        if secret not in f"{scheme}://node.example:9944/ws?{key}=***":
            assert secret not in shown, (url, shown)
