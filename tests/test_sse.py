"""sse.LeanEventSourceResponse: one task per stream, and every way a stream ends."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

from reana_log_sse.follow.sse import LeanEventSourceResponse
from reana_log_sse.server import DISCONNECT_EXTENSION, DisconnectHook
from tests.helpers import event, post_batch


def _metric(server: Any, name: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def _until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_sse_idle_stream_whose_client_went_away_closes_its_subscription(server_factory):
    # no ping for an hour: only the server's disconnect hook can tell the stream
    server = server_factory(ping_seconds=3600)
    wf = uuid.uuid4()
    await asyncio.to_thread(post_batch, server.url, server.ingest_token, [event(wf, "first")])
    hub = server.app.state.hub
    socks = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.settings.port))
        sock.sendall(f"GET /api/workflows/{wf}/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(sock)
    seen = b""
    while b"id: 1\n" not in seen:  # the last one opened and has its line: all are idle
        seen += await asyncio.to_thread(socks[-1].recv, 65536)
    await _until(lambda: _metric(server, "reana_log_sse_active_streams") == 3, "3 streams")
    for sock in socks:
        sock.close()
    await _until(lambda: not hub.feeds, "the feed to lose its followers")
    assert _metric(server, "reana_log_sse_active_streams") == 0
    assert _metric(server, "reana_log_sse_followed_workflows") == 0


def _scope(hook: DisconnectHook | None, method: str = "GET") -> dict[str, Any]:
    extensions = {} if hook is None else {DISCONNECT_EXTENSION: hook}
    return {"type": "http", "method": method, "path": "/", "headers": [],
            "extensions": extensions}


class _Body:
    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.release = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            yield b"data: one\n\n"
            await self.release.wait()
            yield b"data: two\n\n"
        finally:
            self.finished = True


async def test_sse_client_gone_before_the_body_never_starts_it():
    hook = DisconnectHook()
    hook.fire()  # uvicorn's connection_lost came first
    body = _Body()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await LeanEventSourceResponse(body(), ping=0)(_scope(hook), receive, send)
    assert not body.started and sent == []


async def test_sse_client_gone_mid_stream_ends_the_body_and_its_cleanup_runs():
    hook = DisconnectHook()
    body = _Body()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body") == b"data: one\n\n":
            asyncio.get_running_loop().call_soon(hook.fire)  # gone while the body waits

    async def receive() -> dict[str, Any]:
        raise AssertionError("the lean body never waits in receive()")

    task = asyncio.current_task()
    await LeanEventSourceResponse(body(), ping=0)(_scope(hook), receive, send)
    assert body.started and body.finished
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert task is not None and task.cancelling() == 0  # our cancel was taken back
    assert hook.callback is None


async def test_sse_without_the_hook_is_sse_starlettes_own_machinery():
    body = _Body()
    body.release.set()
    sent: list[dict[str, Any]] = []
    disconnect = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await disconnect.wait()  # sse-starlette's listener waits here
        return {"type": "http.disconnect"}

    await LeanEventSourceResponse(body(), ping=0)(_scope(None), receive, send)
    assert body.finished
    assert [m.get("body") for m in sent[1:]] == [b"data: one\n\n", b"data: two\n\n", b""]
