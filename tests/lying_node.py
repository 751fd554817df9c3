"""A node that lies: a WebSocket server on loopback (port 0) in front of a real one (the
simulator), forwarding every message both ways and rewriting chosen answers.

``rewrite(method, params, result)`` sees the result of every answered call (each call
of a batch on its own) and returns the result to send instead; return ``result``
itself to pass it through.  Errors and subscription notifications pass untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Rewrite = Callable[[str, list[Any], Any], Any]

__all__ = ["Rewrite", "lying_node"]


@contextlib.asynccontextmanager
async def lying_node(upstream: str, rewrite: Rewrite, userinfo: str = "") -> AsyncIterator[str]:
    """Serve until the block ends; yields the URL to connect to (with ``userinfo@`` if
    given: the server accepts any credentials, so tests can check they are not shown)."""

    async def handler(client: ServerConnection) -> None:
        asked: dict[Any, tuple[str, list[Any]]] = {}  # request id -> (method, params)
        async with connect(upstream, max_size=None) as node:

            async def requests() -> None:
                async for text in client:
                    message = json.loads(text)
                    for call in message if isinstance(message, list) else [message]:
                        if isinstance(call, dict) and "id" in call:
                            asked[call["id"]] = (call.get("method", ""), call.get("params", []))
                    await node.send(text)

            async def answers() -> None:
                async for text in node:
                    message = json.loads(text)
                    if isinstance(message, list):
                        await client.send(
                            json.dumps([_rewritten(m, asked, rewrite) for m in message])
                        )
                    else:
                        await client.send(json.dumps(_rewritten(message, asked, rewrite)))

            tasks = [asyncio.create_task(requests()), asyncio.create_task(answers())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await task

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://{userinfo + '@' if userinfo else ''}127.0.0.1:{port}"


def _rewritten(message: Any, asked: dict[Any, tuple[str, list[Any]]], rewrite: Rewrite) -> Any:
    if not isinstance(message, dict) or "result" not in message or "id" not in message:
        return message
    call = asked.pop(message["id"], None)
    if call is None:
        return message
    method, params = call
    return {**message, "result": rewrite(method, params, message["result"])}
