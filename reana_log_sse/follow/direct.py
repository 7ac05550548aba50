"""Live batches written by the Feed straight to the sockets of caught-up followers.

Without this, each live batch wakes every follower's task, which sends it through
sse-starlette's `_stream_response`, Starlette's middleware `send` wrappers and uvicorn's
`RequestResponseCycle.send`, which frames the body as one HTTP/1.1 chunk and joins it
once per follower (uvicorn/protocols/http/httptools_impl.py: `content = [b"%x\\r\\n" %
len(body), body, b"\\r\\n"]`, then `transport.write(b"".join(content))`). At 5,000
followers that was nearly all of the service's time (issue 22). Here the Feed frames a
batch once, exactly as uvicorn would, and writes those bytes to each follower that is
caught up (`deliver`); every other follower gets the batch queued as before.

A follower is caught up when all of these hold, checked for each batch:
- its stream task waits on its subscription's waiter with an empty queue: it has sent all it
  yielded (an async generator runs only when its consumer asks for the next item, and
  sse-starlette asks once the previous send returned), nothing is queued (a status, a
  ping, `end` or Leave goes first) and it was not woken (a woken task's waiter is done,
  even before the task runs again: then it may write, and we must not);
- it is unfiltered and its cursor is the batch's `after` (no gap to read first);
- its response is chunked HTTP/1.1 (`Direct.attach`), its client has not gone, its
  response has not ended, and its transport is neither closing nor paused (uvicorn's
  FlowControl `write_paused`, set from the transport's `pause_writing`).
A follower whose client reads nothing takes direct writes until its transport pauses
(a write over the high-water mark pauses it at once); the next batches queue (bounded in
bytes, as before), its task's send then waits for the transport, and the hub's timer
ends the stream after `send_timeout` (Hub._pings, sse.LeanEventSourceResponse).
"""

from __future__ import annotations

from typing import Any

from reana_log_sse.metrics import Metrics

# hub.py (Batch, Subscription) and stream.py (Follower) import this module: their types
# are spelled Any here, named in comments, so that no import goes back up to them
Batch = Subscription = Follower = Any


class Direct:
    """One stream's way to its socket: uvicorn's cycle, its transport and flow control."""

    __slots__ = ("cycle", "flow", "follower", "transport", "writes")

    def __init__(self, cycle: Any, follower: Follower) -> None:
        self.cycle = cycle
        self.transport = cycle.transport
        self.flow = cycle.flow
        self.follower = follower
        self.writes = 0  # batches written straight to this follower

    @classmethod
    def attach(cls, sub: Subscription, follower: Follower) -> Direct | None:
        """Called by the stream's task once its response started and its first chunk was
        sent: the follower's Direct, or None when it must keep the task's path (filtered;
        not on the lean path of sse.LeanEventSourceResponse; not chunked HTTP/1.1)."""
        hook = getattr(sub.response, "lean_hook", None)
        if hook is None or not sub.feed.hub.direct_writes:
            return None
        cycle = hook.cycle()
        if cycle is None or not follower.unfiltered or cycle.chunked_encoding is not True \
                or cycle.scope.get("http_version", "1.1") != "1.1" \
                or cycle.scope.get("method") != "GET" or not cycle.response_started:
            return None
        direct = cls(cycle, follower)
        sub.direct = direct
        return direct


def chunk(body: bytes) -> bytes:
    """`body` as one HTTP/1.1 chunk, framed as uvicorn frames a chunked body's part
    (uvicorn/protocols/http/httptools_impl.py, RequestResponseCycle.send)."""
    return b"".join([b"%x\r\n" % len(body), body, b"\r\n"])


def deliver(subscribers: list[Subscription], batch: Batch,
            metrics: Metrics) -> list[Subscription]:
    """Write `batch` to each caught-up follower (module docstring); the others, to queue
    it for, are returned. Its bytes are built once, at the first write."""
    rest: list[Subscription] = []
    data: bytes | None = None
    after, upto = batch.after, batch.upto
    written = 0
    for sub in subscribers:
        direct = sub.direct
        if direct is None:
            rest.append(sub)
            continue
        # idle: waiting on its waiter and not woken (everything that queues an item, `end` and
        # Leave included, wakes it: then its queue is not empty either)
        waiter = sub._waiter
        follower = direct.follower
        cycle = direct.cycle
        if waiter is None or waiter.done() \
                or follower.cursor != after or direct.flow.write_paused \
                or cycle.disconnected or cycle.response_complete \
                or direct.transport.is_closing():
            rest.append(sub)
            continue
        if batch.lines:
            if data is None:
                data = chunk(batch.frames())
            try:
                direct.transport.write(data)
            except Exception:  # nothing written (it checks before it buffers): the task's path
                rest.append(sub)
                continue
            direct.writes += 1
            written += 1
        follower.cursor = upto
        batch.settle(metrics)
    if written:
        metrics.direct_writes.inc(written)
    return rest
