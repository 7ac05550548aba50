"""The SSE response layer: sse-starlette's EventSourceResponse with a lean send."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError


class LeanEventSourceResponse(EventSourceResponse):
    """sse-starlette's EventSourceResponse with a lean send.

    Its per-send timeout (`send_timeout`) wraps every write in an anyio cancel scope and
    timer, which cost more than the write itself at 1,000 followers (docs/performance.md).
    Here a send only notes when it started; the hub's one timer (Hub._pings) calls
    abort_if_stalled, and a write that has waited longer than the timeout (a client that
    reads nothing) ends the stream as sse-starlette's own timeout would (SendTimeoutError;
    the client resumes from its last id). Its per-stream ping task is off (ping=0): the
    same timer queues the pings. Everything else (disconnects, shutdown, HEAD) is
    sse-starlette's.
    """

    sending_since: float | None = None
    _task: asyncio.Task[Any] | None = None
    _stalled = False

    async def _send_with_timeout(self, send: Any, message: Any) -> None:
        if self._task is None:
            self._task = asyncio.current_task()
        self.sending_since = time.monotonic()
        try:
            await send(message)
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancel, turned into sse-starlette's timeout
            raise SendTimeoutError() from None
        finally:
            self.sending_since = None

    def abort_if_stalled(self, now: float, timeout: float) -> None:
        since = self.sending_since
        if since is not None and now - since > timeout and self._task is not None \
                and not self._stalled:
            self._stalled = True
            self._task.cancel()
