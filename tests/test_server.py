"""server.py: the connection's and the request's lean idle state on a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from reana_log_sse.server import ForwardedBeforeApp, LeanEvent, _Pipeline, uvicorn_config
from tests.helpers import event, post_batch


async def _script(make: Any) -> list[Any]:
    """The same steps on an event of `make`; what each step saw."""
    seen: list[Any] = []
    ev = make()

    async def waiter(name: str) -> None:
        seen.append((name, await ev.wait(), ev.is_set()))

    seen.append(("initially", ev.is_set()))
    tasks = [asyncio.create_task(waiter(f"w{i}")) for i in range(3)]
    await asyncio.sleep(0)  # all three wait
    tasks[1].cancel()
    await asyncio.sleep(0)
    seen.append(("cancelled", tasks[1].cancelled()))
    ev.set()
    ev.set()  # twice: no second wake-up
    await asyncio.gather(tasks[0], tasks[2])
    seen.append(("set, then wait", await ev.wait()))
    ev.clear()
    seen.append(("cleared", ev.is_set()))
    late = asyncio.create_task(waiter("late"))
    await asyncio.sleep(0)
    seen.append(("late waits", late.done()))
    ev.set()
    ev.clear()  # cleared before the woken task runs: it still returns True
    await late
    # woken, then cancelled before it ran: the task ends cancelled, as asyncio's does
    gone = asyncio.create_task(waiter("gone"))
    await asyncio.sleep(0)
    ev.set()
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    seen.append(("woken then cancelled", gone.cancelled()))
    return seen


async def test_server_lean_event_behaves_as_asyncio_event():
    lean = await _script(LeanEvent)
    assert lean == await _script(asyncio.Event)
    assert ("w0", True, True) in lean and ("late", True, False) in lean


def _connections(server: Any) -> list[Any]:
    return list(server._server.server_state.connections)


@contextlib.asynccontextmanager
async def _held_stream(server: Any) -> AsyncIterator[None]:
    """One stream open on a raw socket, idle once it has its first line."""
    wf = uuid.uuid4()
    await asyncio.to_thread(post_batch, server.url, server.ingest_token, [event(wf, "first")])
    sock = socket.create_connection(("127.0.0.1", server.settings.port))
    try:
        sock.sendall(f"GET /api/workflows/{wf}/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        seen = b""
        while b"id: 1\n" not in seen:
            seen += await asyncio.to_thread(sock.recv, 65536)
        yield
    finally:
        sock.close()


async def test_server_held_stream_allocates_no_waiters_while_idle(server_factory):
    server = server_factory(ping_seconds=3600)
    async with _held_stream(server):
        (protocol,) = [p for p in _connections(server)
                       if p.cycle is not None and p.cycle.scope["path"].endswith("/stream")]
        flow_event = protocol.flow._is_writable_event
        message_event = protocol.cycle.message_event
        assert isinstance(flow_event, LeanEvent) and flow_event.is_set()
        assert isinstance(message_event, LeanEvent)
        # the stream waits for neither: nothing is allocated for their waiters
        assert flow_event._waiters is None and message_event._waiters is None
        assert isinstance(protocol.pipeline, _Pipeline) and not protocol.pipeline


def test_server_pipelined_requests_are_answered_in_order(live_server):
    # three requests in one write: uvicorn runs the first and queues the other two
    # (httptools_impl.py on_headers_complete: pipeline.appendleft; on_response_complete: pop)
    paths = ["/healthz", "/metrics", "/openapi.json"]
    sock = socket.create_connection(("127.0.0.1", live_server.settings.port), timeout=30)
    try:
        sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
        got = b""
        marks = [b'{"status":"ok"}', b"# HELP ", b'"openapi"']
        while got.count(b"HTTP/1.1 200 OK") < 3 or not all(m in got for m in marks):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {got[:300]!r}"
            got += chunk
    finally:
        sock.close()
    positions = [got.index(m) for m in marks]
    assert positions == sorted(positions), positions


def _frames(coro: Any) -> list[str]:
    """The qualified names of a task's awaiting coroutines, outermost first."""
    names = []
    while coro is not None and hasattr(coro, "cr_frame"):
        code = coro.cr_frame.f_code
        names.append(f"{code.co_filename.rsplit('/', 2)[-2]}/{code.co_qualname}")
        coro = coro.cr_await
    return names


async def test_server_stream_runs_past_the_middleware_stack_and_router(server_factory):
    server = server_factory(ping_seconds=3600)
    async with _held_stream(server):
        (chain,) = [_frames(t.get_coro()) for t in list(server._server.server_state.tasks)
                    if "follow/LeanEventSourceResponse.__call__" in _frames(t.get_coro())]
    # the app runs the response from its own frame: no middleware's, no router's, none of
    # the endpoint's or of a response subclass's
    # and uvicorn's task runs the app first: its forwarded-headers rewrite holds no frame
    # and the response runs its body from its own frame, straight into the generator's
    assert chain == ["http/RequestResponseCycle.run_asgi", "reana_log_sse/LogsApp.__call__",
                     "follow/LeanEventSourceResponse.__call__"], chain


def test_server_stream_route_errors_are_answered_by_the_app_handlers(server_factory):
    server = server_factory(db_timeout_seconds=1)
    stream = f"/api/workflows/{uuid.uuid4()}/logs/stream"
    bad = server.get(stream + "?since=abc")
    assert bad.status_code == 400 and "since" in bad.json()["error"], bad.text
    unknown = server.get(stream)
    assert unknown.status_code == 404 and "unknown workflow" in unknown.json()["error"]
    other = httpx.post(server.url + stream)  # on to the router: the route's own 405
    assert other.status_code == 405 and set(other.headers["allow"].split(", ")) == {
        "GET", "HEAD"}
    with server.database_down():  # ServiceError: the app's handler, as for every route
        down = server.get(stream)
    assert down.status_code == 503 and down.headers["retry-after"], down.text
    assert down.json() == {"error": "database unavailable, retry later"}


async def test_server_forwarded_headers_are_rewritten_as_uvicorns_middleware_does():
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))

    def scope(client: Any, *headers: tuple[bytes, bytes], kind: str = "http") -> dict[str, Any]:
        return {"type": kind, "scheme": "http", "client": client, "headers": list(headers)}

    xff, xfp = b"x-forwarded-for", b"x-forwarded-proto"
    cases = [
        scope(("127.0.0.1", 5000), (xff, b"203.0.113.7"), (xfp, b"https")),
        scope(("127.0.0.1", 5000), (xff, b"203.0.113.7, 10.0.0.2"), (xff, b"198.51.100.1")),
        scope(("10.1.2.3", 5000), (xff, b"203.0.113.7"), (xfp, b"https")),  # not trusted
        scope(("127.0.0.1", 5000), (xff, b""), (xfp, b"gopher")),
        scope(None, (xff, b"203.0.113.7")),
        {"type": "lifespan"},
    ]
    for trusted in ("127.0.0.1", "127.0.0.1,10.0.0.0/8", "*"):
        for case in cases:
            await ProxyHeadersMiddleware(app, trusted_hosts=trusted)(dict(case), None, None)
            await ForwardedBeforeApp(app, trusted)(dict(case), None, None)
            uvicorns, ours = seen[-2:]
            assert ours == uvicorns, (trusted, case)
    assert seen[0]["client"] == ("203.0.113.7", 0) and seen[0]["scheme"] == "https"


def test_server_config_loads_the_forwarded_rewrite_in_place_of_uvicorns(live_server):
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    config = uvicorn_config(app, live_server.settings)
    config.load()
    assert isinstance(config.loaded_app, ForwardedBeforeApp) and config.loaded_app.app is app
    plain = uvicorn_config(app, live_server.settings, proxy_headers=False)
    plain.load()
    assert plain.loaded_app is app
