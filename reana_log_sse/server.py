"""The HTTP server the service runs on: uvicorn, with limits uvicorn does not set itself.

uvicorn times out idle keep-alive connections (`timeout_keep_alive`) but not a request
whose headers arrive slowly or never (uvicorn/protocols/http/httptools_impl.py arms its
only timer in on_response_complete), and httptools caps neither the request line nor the
headers. `GuardedHttpToolsProtocol` adds both: the headers must arrive within
`header_timeout_seconds` of the connection opening (or of the previous answer ending),
and they may not exceed `max_header_bytes`. Bodies have their own deadline in the
handlers (body.read_body).

It also tells a response when its client has gone without a task waiting in `receive()`
for `http.disconnect`: each request's scope carries a `DisconnectHook` under
`scope["extensions"][DISCONNECT_EXTENSION]`, fired from `connection_lost` (where uvicorn
marks the cycle disconnected and wakes `receive()`, uvicorn/protocols/http/
httptools_impl.py). The event streams use it (sse.LeanEventSourceResponse), so that an
idle stream costs one task, not five. The hook also reaches the request's uvicorn cycle
(`DisconnectHook.cycle`), through which the follow room writes live batches straight to
a caught-up follower's transport (follow/direct.py).

Each connection's and each request's idle state is kept small (docs/performance.md, "Memory
per stream"): uvicorn makes two `asyncio.Event`s per stream (the connection's flow
control, the request's message event) and a deque for pipelined requests, each holding an
empty deque of 624 bytes for as long as the stream lives. `LeanEvent` and `_Pipeline` do
the same with nothing allocated until a task waits or a request is pipelined; and
uvicorn's forwarded-headers rewrite runs before the app's coroutine (`ForwardedBeforeApp`)
rather than in a coroutine around it that each stream would hold.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reana_log_sse.settings import Settings

DISCONNECT_EXTENSION = "reana_log_sse.disconnect"


class DisconnectHook:
    """Calls back once when the client of one request has gone before its response ended.

    It also leads to the request's uvicorn cycle (uvicorn/protocols/http/httptools_impl.py,
    RequestResponseCycle: its transport, flow control and framing) by a weak reference:
    the cycle holds the scope that holds this hook, and a strong link back would leave
    every finished request to the cyclic GC."""

    __slots__ = ("_cycle", "callback", "gone")

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None
        self.gone = False
        self._cycle: weakref.ref[Any] | None = None

    def cycle(self) -> Any:
        """uvicorn's RequestResponseCycle of this request, or None (gone, or not set)."""
        return self._cycle() if self._cycle is not None else None

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """Set (or clear, with None) the callback; called at once if already gone."""
        self.callback = callback
        if self.gone and callback is not None:
            self.fire()

    def fire(self) -> None:
        self.gone = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


class LeanEvent:
    """`asyncio.Event`'s interface as uvicorn uses it (set, clear, is_set, wait), with no
    list of waiters until one waits. Each waiter's future is made on the running loop, as
    asyncio.Event does (asyncio/locks.py, Event.wait)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiters, self._waiters = self._waiters, None
            for fut in waiters or ():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        waiters = self._waiters
        waiters.append(fut)
        try:
            await fut
            return True
        finally:
            if fut in waiters:  # cancelled before set(), which detaches the list it wakes
                waiters.remove(fut)


class _Pipeline(list):  # type: ignore[type-arg]
    """uvicorn's queue of pipelined requests (a deque it uses by appendleft, pop and
    truth), as a list: 56 bytes empty, which it nearly always is."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
              b"connection: close\r\n\r\n")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Our fields live in slots, not in the instance dict: uvicorn's 27 attributes share
    # their keys across connections (CPython's key-sharing dicts hold at most 30 keys),
    # and three more of ours made each connection's dict a 1.5 KiB one of its own
    # (docs/performance.md, "Memory per stream").
    __slots__ = ("header_timeout", "max_header_bytes", "_awaiting_headers",
                 "_header_bytes", "_header_timer")

    def __init__(self, *args: Any, header_timeout: float | None = None,
                 max_header_bytes: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = 10.0 if header_timeout is None else header_timeout
        self.max_header_bytes = 64 * 1024 if max_header_bytes is None else max_header_bytes
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn/protocols/http/flow_control.py: set while writable, waited in drain()
        self.flow._is_writable_event = LeanEvent(True)  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:  # its response had not ended
            hook = cycle.scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
            if hook is not None:
                hook.fire()

    def data_received(self, data: bytes) -> None:
        waiting = self._awaiting_headers
        super().data_received(data)
        if waiting and self._awaiting_headers:  # these bytes did not finish the headers
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        hook = DisconnectHook()
        scope = self.scope
        scope.setdefault("extensions", {})[DISCONNECT_EXTENSION] = hook
        super().on_headers_complete()
        cycle = self.cycle  # the one uvicorn just made for this scope (not on an upgrade)
        if cycle is not None and cycle.scope is scope:
            hook._cycle = weakref.ref(cycle)
            # its task is made but has not run: nothing waits on uvicorn's Event yet
            cycle.message_event = LeanEvent()  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            self._awaiting_headers = True  # the next request's headers have their deadline
            self._header_bytes = 0
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self._awaiting_headers and not busy and not self.transport.is_closing():
            self.transport.close()


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    return None


class ForwardedBeforeApp:
    """uvicorn's X-Forwarded-Proto and X-Forwarded-For rewrite of the scope (its
    ProxyHeadersMiddleware, from trusted hosts only), done before the app's coroutine
    starts, not in a coroutine of its own around it, which every stream would hold for
    its life (docs/performance.md, "Memory per stream"). uvicorn's own middleware does the
    rewrite, around an app that returns at once; this returns the app's coroutine for
    uvicorn to await (uvicorn/protocols/http/httptools_impl.py run_asgi: `await app(...)`)."""

    def __init__(self, app: Any, trusted_hosts: list[str] | str) -> None:
        self.app = app
        self._rewrite = ProxyHeadersMiddleware(_nothing, trusted_hosts=trusted_hosts)

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        step = self._rewrite(scope, receive, send)
        try:
            step.send(None)
        except StopIteration:  # done: it never waits
            pass
        else:
            step.close()
            raise RuntimeError("uvicorn's ProxyHeadersMiddleware waited for something")
        return self.app(scope, receive, send)


class _Config(uvicorn.Config):
    """uvicorn's config, whose loaded app rewrites forwarded headers by ForwardedBeforeApp
    instead of uvicorn's middleware, with the same trusted hosts (uvicorn/config.py load:
    ProxyHeadersMiddleware outermost, when `proxy_headers`)."""

    def load(self) -> None:
        super().load()
        if isinstance(self.loaded_app, ProxyHeadersMiddleware):
            self.loaded_app = ForwardedBeforeApp(self.loaded_app.app, self.forwarded_allow_ips)


def uvicorn_config(app: Any, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's config for `app` with the service's connection limits. The protocol is
    a partial of a module-level class, so that the config pickles into `serve --workers`
    processes (uvicorn/_subprocess.py passes the config to each spawned worker), and uvicorn
    calls it as it calls a protocol class (uvicorn/server.py: http_protocol_class(...))."""
    protocol = functools.partial(GuardedHttpToolsProtocol,
                                 header_timeout=settings.header_timeout_seconds,
                                 max_header_bytes=settings.max_header_bytes)
    kwargs.setdefault("timeout_keep_alive", 5)  # idle keep-alive connections (uvicorn's default)
    return _Config(app, http=protocol, **kwargs)  # type: ignore[arg-type]
