"""The SSE response layer: sse-starlette's EventSourceResponse with a lean send and a lean
body: one task per stream.

sse-starlette (sse_starlette/sse.py, EventSourceResponse.__call__) runs each stream in an
anyio task group of four tasks besides the request's own: the stream itself, a listener
for the client's `http.disconnect` (`_listen_for_disconnect`), one for the server's exit
(`_listen_for_exit_signal_with_grace`, around its one shared `_shutdown_watcher`) and the
`data_sender_callable`; with their cancel scopes, anyio task states and events, those
were most of what an idle stream cost (docs/performance.md, "Fan-out"). Here, when the
server tells the response that its client has gone (server.DisconnectHook, from uvicorn's
`connection_lost`), the stream runs its body as sse-starlette's `_stream_response` does,
from the response's own frame in the request's task: the hook cancels it when the client
goes, and one waiter per event loop (`_Drain`) awaits sse-starlette's own exit signal
(`_listen_for_exit_signal`) for every stream, then gives each its `on_shutdown` and,
after `shutdown_grace_period`, cancels those still running (sse-starlette's
force-cancel). HEAD, websocket scopes, a ping task (`ping > 0`), a `data_sender_callable`,
or a server without the hook: sse-starlette's own machinery, unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError, ensure_bytes
from starlette.types import Receive, Scope, Send

from reana_log_sse.server import DISCONNECT_EXTENSION, DisconnectHook

logger = logging.getLogger("reana_log_sse")


class _Drain:
    """One waiter per event loop for the server's exit, for every lean stream on it."""

    def __init__(self) -> None:
        self.streams: set[LeanEventSourceResponse] = set()
        self.task: asyncio.Task[None] | None = None
        self.exiting = False

    def add(self, response: LeanEventSourceResponse) -> None:
        self.streams.add(response)
        if self.exiting:
            response.on_shutdown()
        elif self.task is None or self.task.done() \
                or self.task.get_loop() is not asyncio.get_running_loop():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="sse-drain")

    async def _run(self) -> None:
        try:
            await EventSourceResponse._listen_for_exit_signal()  # sse-starlette's own
            self.exiting = True
            grace = 0.0
            for response in list(self.streams):
                response.on_shutdown()
                grace = max(grace, response._shutdown_grace_period)
            deadline = time.monotonic() + grace
            while self.streams and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # sse-starlette's grace loop polls as often
            for response in list(self.streams):
                response._force_end()
        finally:
            # as sse-starlette's watcher: a later server on this loop starts afresh
            self.exiting = False
            self.task = None


class _SoloLock:
    """The send lock of a stream that is one task: never contended."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_SOLO = _SoloLock()
_local = threading.local()  # one event loop per thread, as sse-starlette's _thread_state


def _drain() -> _Drain:
    drain = getattr(_local, "drain", None)
    if drain is None:
        drain = _local.drain = _Drain()
    return drain


class LeanEventSourceResponse(EventSourceResponse):
    """sse-starlette's EventSourceResponse with a lean send and, where the server allows,
    a lean body (module docstring).

    Its per-send timeout (`send_timeout`) wraps every write in an anyio cancel scope and
    timer, which cost more than the write itself at 1,000 followers (docs/performance.md).
    Here a send only notes when it started; the hub's one timer (Hub._pings) calls
    abort_if_stalled, and a write that has waited longer than the timeout (a client that
    reads nothing) ends the stream as sse-starlette's own timeout would (SendTimeoutError;
    the client resumes from its last id). Its per-stream ping task is off (ping=0): the
    same timer queues the pings.
    """

    sending_since: float | None = None
    _task: asyncio.Task[Any] | None = None
    _stalled = False
    _ending = False  # the lean body: cancelled by us (client gone, or shutdown's grace over)
    lean_hook: DisconnectHook | None = None  # while the lean body runs (follow/direct.py)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the lean body is one task: nothing contends for sse-starlette's send lock (its
        # ping task takes it), so it is made only for sse-starlette's machinery
        self._send_lock = _SOLO  # type: ignore[assignment]

    def on_shutdown(self) -> None:
        """The server is exiting: finish the stream (sse-starlette sets `shutdown_event`)."""
        if self._shutdown_event is not None:
            self._shutdown_event.set()

    def ended(self) -> None:
        """Called once the response has ended, however it ended (for subclasses): here,
        not in a subclass's own __call__ around this one, whose frame each held stream
        would keep (docs/performance.md, "Memory per stream")."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            hook = scope.get("extensions", {}).get(DISCONNECT_EXTENSION) \
                if scope["type"] == "http" else None
            if not isinstance(hook, DisconnectHook) or scope["method"].upper() == "HEAD" \
                    or self.ping_interval > 0 or self.data_sender_callable is not None:
                self._send_lock = anyio.Lock()
                if self.data_sender_callable is None and scope["type"] == "http":
                    # sse-starlette's machinery: its exit listener sets the event, and
                    # on_shutdown follows it
                    if self._shutdown_event is None:
                        self._shutdown_event = anyio.Event()
                    self.data_sender_callable = self._await_shutdown
                await super().__call__(scope, receive, send)
                return
            self._task = asyncio.current_task()
            self.lean_hook = hook
            drain = _drain()
            hook.on_disconnect(self._client_gone)
            drain.add(self)
            try:
                if not self._ending:
                    # sse-starlette's _stream_response, run from this frame: its coroutine
                    # would be held for the stream's life (docs/performance.md, "Memory
                    # per stream"); the same messages, flags and cleanup
                    await send({"type": "http.response.start", "status": self.status_code,
                                "headers": self.raw_headers})
                    self._response_started = True
                    async for data in self.body_iterator:
                        try:
                            await self._send_with_timeout(send, {
                                "type": "http.response.body", "more_body": True,
                                "body": ensure_bytes(data, self.sep)})
                        except BaseException:
                            await self._close_body()
                            raise
                    try:
                        await send({"type": "http.response.body", "body": b"",
                                    "more_body": False})
                    except BaseException:
                        self._send_interrupted = True
                        raise
                    self._response_complete = True
                    self.active = False
            except asyncio.CancelledError:
                # ours (the client is gone, or the shutdown grace is over) is taken back;
                # anyone else's (the server's own shutdown timeout) goes on
                if not self._ending or self._uncancel():
                    raise
            finally:
                self.active = False
                self.lean_hook = None
                hook.on_disconnect(None)
                drain.streams.discard(self)
            if self.background is not None:
                await self.background()
        finally:
            self.ended()

    async def _close_body(self) -> None:
        """The body iterator is suspended at a yield whose bytes could not be sent: close
        it before the error goes on, so that its cleanup runs first (as sse-starlette's
        _stream_response does, within its cleanup timeout)."""
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(self._cleanup_timeout, shield=True) as scope:
            try:
                await aclose()
            except Exception:
                logger.exception("Error closing body iterator after encoding or send failure")
        if scope.cancel_called:
            logger.warning("Body iterator cleanup cancelled after %s seconds",
                           self._cleanup_timeout)

    async def _await_shutdown(self) -> None:
        assert self._shutdown_event is not None
        await self._shutdown_event.wait()
        self.on_shutdown()

    def _client_gone(self) -> None:
        self.active = False
        self._force_end()

    def _force_end(self) -> None:
        if not self._ending and self._task is not None:
            self._ending = True
            if self._task is not asyncio.current_task():
                self._task.cancel()

    def _uncancel(self) -> int:
        """Take back our one cancel of this task: the cancels still pending (others')."""
        task = asyncio.current_task()
        return task.uncancel() if task is not None else 0

    async def _send_with_timeout(self, send: Any, message: Any) -> None:
        if self._task is None:
            self._task = asyncio.current_task()
        self.sending_since = time.monotonic()
        try:
            await send(message)
        except asyncio.CancelledError:
            if not self._stalled or self._ending or self._uncancel():
                raise
            raise SendTimeoutError() from None  # our own cancel, as sse-starlette's timeout
        finally:
            self.sending_since = None

    def abort_if_stalled(self, now: float, timeout: float) -> None:
        since = self.sending_since
        if since is not None and now - since > timeout and self._task is not None \
                and not self._stalled and not self._ending:
            self._stalled = True
            self._task.cancel()
