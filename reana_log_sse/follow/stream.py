"""GET /api/workflows/{id}/logs/stream: Server-Sent Events that resume exactly."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from reana_log_sse.auth import authorized_workflow
from reana_log_sse.follow.direct import Direct
from reana_log_sse.follow.opening import OpeningKey
from reana_log_sse.follow.queue import (
    Batch,
    End,
    Leave,
    Ping,
    ReadSize,
    StatusItem,
    Subscription,
)
from reana_log_sse.follow.sse import LeanEventSourceResponse
from reana_log_sse.params import filters_param, int_param, parse_int
from reana_log_sse.store.errors import ServiceError
from reana_log_sse.store.lines import Line, event_frame
from reana_log_sse.store.snapshot import Filters, Snapshot, StatusRow
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")


def status_frame(workflow_id: uuid.UUID, status: StatusRow) -> bytes:
    return event_frame("status", {"workflow_id": str(workflow_id), "job_id": status.job_id,
                                  "step": status.step, "status": status.status})


READS_IN_FLIGHT = 2  # catch-up range reads at once per follower (Follower._catch_up_ranges)
# the shortest `log` frame: its event and id lines, and the JSON with a 36-character
# workflow id, null job and step and an empty message, is over 160 bytes
MIN_FRAME_BYTES = 128


class Follower:
    """One stream's position and the frames it owes its client."""

    def __init__(
        self, store: Store, workflow_id: uuid.UUID, filters: Filters, cursor: int,
        status_cursor: int, chunk: int, metrics: Any, *, budget: int = 8 * 1024 * 1024,
        line_bytes: int = 64 * 1024,
    ) -> None:
        self.store = store
        self.workflow_id = workflow_id
        self.filters = filters
        self.cursor = cursor  # every matching line with seq <= cursor has been sent
        self.status_cursor = status_cursor
        # catch-up reads of about half the budget each: one is sent while the next is read
        # (catch_up), so a catching-up follower holds about its queue's bound in bytes.
        # Their frames come joined (a few bytes objects per read, however many lines), so
        # they are bounded in bytes alone: no frame is under MIN_FRAME_BYTES.
        self.read_size = ReadSize(max(chunk, budget // 2 // MIN_FRAME_BYTES), budget // 2,
                                  line_bytes)
        # an unfiltered catch-up to a known id reads ranges of ids, up to READS_IN_FLIGHT
        # at once (on connections the pool has spare): they and the chunk being sent
        # hold about the budget; ReadSize counts ids here (a range of n ids holds at
        # most n lines)
        share = budget // (READS_IN_FLIGHT + 1)
        self.range_size = ReadSize(max(chunk, share // MIN_FRAME_BYTES), share, line_bytes)
        self.metrics = metrics
        self.unfiltered = not filters.jobs and filters.kind is None

    def batch_frames(self, batch: Batch) -> bytes:
        """A live batch: an unfiltered follower that has not seen any of its lines sends
        the batch's shared frames; others filter line by line."""
        lines = batch.lines
        if lines and self.unfiltered and lines[0].seq > self.cursor:
            self.cursor = lines[-1].seq
            return batch.frames()
        return self.frames(lines)

    def frames(self, lines: list[Line]) -> bytes:
        match = self.filters.matches
        out = b"".join(line.frame for line in lines if line.seq > self.cursor and match(line))
        if lines:
            self.cursor = max(self.cursor, lines[-1].seq)
        return out

    async def catch_up(self, until: int | None) -> AsyncIterator[bytes]:
        """Read from the database what lies between our cursor and `until` (None: now).
        The next chunk is read while this one is being sent (one read ahead); both
        together hold about the follower's byte budget (see __init__). To a known id,
        an unfiltered follower reads ranges of ids, several at once (_catch_up_ranges)."""
        if until is not None and self.unfiltered:
            async for data in self._catch_up_ranges(until):
                yield data
            return
        pending: asyncio.Task[Snapshot | None] | None = None
        try:
            while until is None or self.cursor < until:
                snap = await (pending or self._read(until))
                pending = None
                if snap is None:
                    return
                self.read_size.observe_frames(snap.frame_count, snap.frames)
                out: list[bytes] = []
                self._take(snap, out)
                done = snap.horizon >= (snap.last_seq if until is None
                                        else min(until, snap.last_seq))
                if not done:
                    pending = asyncio.ensure_future(self._read(until))
                data = b"".join(out)
                if data:
                    yield data
                if done:
                    return
        finally:
            if pending is not None:  # the stream closed: the read ahead is not wanted
                pending.cancel()
                pending.add_done_callback(_retrieve)

    async def _catch_up_ranges(self, until: int) -> AsyncIterator[bytes]:
        """catch_up to a known id, for an unfiltered follower: the ids (cursor, until]
        in consecutive ranges, read by up to READS_IN_FLIGHT transactions at once (the
        database's work for one follower then runs on more than one core), sent in
        order. Every line up to `until` was committed before `until` was known, so
        each range's read sees all of it whatever its snapshot; so does every status
        committed before a line up to `until`. A status the read of a later range
        repeats (read with an older status cursor) is skipped; one committed later
        has after_seq >= until and comes after every line of the catch-up. A range that
        held no line (ids whose lines are gone: a dropped day, a retried batch's
        duplicates) is followed by one read by line count from there, which jumps the
        gap however wide, before ranges go on."""
        pending: collections.deque[tuple[int, int, asyncio.Task[Snapshot | None]]] = \
            collections.deque()
        start = self.cursor  # where the next range starts

        def fill() -> None:
            nonlocal start
            while start < until and len(pending) < READS_IN_FLIGHT and (
                    not pending or self.store.spare_connection()):
                n = self.range_size.lines
                end = min(until, start + n)
                pending.append((end, end - start,
                                asyncio.ensure_future(self._read(end, after=start))))
                start = end

        try:
            fill()
            while pending:
                end, ids, task = pending.popleft()
                snap = await task
                if snap is None:
                    return
                self.range_size.observe_frames(ids, snap.frames)
                out: list[bytes] = []
                self._take(snap, out)
                if snap.horizon < end:  # it saw fewer ids than asked: go on from there
                    _drop(pending)
                    start = self.cursor
                elif not snap.frame_count and end < until:  # a gap: jump it
                    _drop(pending)
                    gap = await self._read(until)
                    if gap is None:
                        return
                    self.read_size.observe_frames(gap.frame_count, gap.frames)
                    self._take(gap, out)
                    start = self.cursor
                fill()
                data = b"".join(out)
                if data:
                    yield data
        finally:
            _cancel(pending)  # the stream closed: the reads ahead are not wanted

    def _take(self, snap: Snapshot, out: list[bytes]) -> None:
        """A catch-up read's frames (built by PostgreSQL, filtered there: every one is past
        our cursor) with its statuses not sent yet (a later range's read may repeat one),
        into `out`; the cursors move past the read."""
        for frames, status in snap.frame_parts():
            out.append(frames)
            if status is not None and status.id > self.status_cursor:
                self.status_cursor = status.id
                out.append(status_frame(self.workflow_id, status))
        self.cursor = max(self.cursor, snap.horizon)
        self.status_cursor = max(self.status_cursor, snap.status_cursor)

    async def _read(self, until: int | None, *, after: int | None = None) -> Snapshot | None:
        self.metrics.catchup_reads.inc()
        if after is None:
            after, limit = self.cursor, self.read_size.lines
        else:  # a range of ids (after, until]: at most that many lines
            assert until is not None
            limit = until - after
        return await self.store.snapshot(
            self.workflow_id, after=after, status_after=self.status_cursor,
            limit=limit, filters=self.filters, upto=until, frames=True,
        )


def _cancel(pending: collections.deque[tuple[int, int, asyncio.Task[Any]]]) -> None:
    while pending:
        task = pending.popleft()[2]
        task.cancel()
        task.add_done_callback(_retrieve)


def _drop(pending: collections.deque[tuple[int, int, asyncio.Task[Any]]]) -> None:
    """Forget reads in flight without cancelling them (a cancelled query costs the
    connection a cancel request and a rollback): they finish, their results unread."""
    while pending:
        pending.popleft()[2].add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned read's error is not worth a warning


async def follow(
    follower: Follower, sub: Subscription, first: bytes, retry_ms: int
) -> AsyncIterator[bytes]:
    metrics = follower.metrics
    metrics.active_streams.inc()
    item: Any = None
    # batches being written (settled once written or dropped); a list only while there
    # are some: an idle stream holds no empty one
    writing: list[Batch] | tuple[()] = ()
    try:
        yield b"retry: %d\n\n" % retry_ms + first
        # sent (the headers and this first chunk): the headers are not kept for the
        # stream's life; from now on, while this task waits on an empty queue, the feed
        # may write live batches itself (follow/direct.py)
        if sub.response is not None:
            sub.response.raw_headers = ()
        Direct.attach(sub, follower)
        while True:
            item = sub.take()
            while item is None:
                await sub.waiter()  # the future itself (Subscription.waiter)
                item = sub.take()
            if item.after > follower.cursor:
                async for data in follower.catch_up(item.after):
                    yield data
            if isinstance(item, Batch):
                # this batch and what else queued up while this follower waited its turn
                # go in the same write: one send per wake-up, not one per batch
                batch, item = item, None
                parts = []
                writing = []
                while batch is not None:
                    writing.append(batch)
                    parts.append(follower.batch_frames(batch))
                    follower.cursor = max(follower.cursor, batch.upto)
                    batch = sub.next_batch(follower.cursor)
                data = b"".join(parts)
                if data:
                    yield data
                for batch in writing:
                    batch.settle(metrics)
                writing = ()
            elif isinstance(item, StatusItem):
                if item.status.id > follower.status_cursor:
                    follower.status_cursor = item.status.id
                    yield status_frame(follower.workflow_id, item.status)
            elif isinstance(item, Ping):
                yield b": ping\n\n"
            elif isinstance(item, End):
                yield event_frame("end", {"workflow_id": str(follower.workflow_id),
                                          "status": item.status})
                return
            elif isinstance(item, Leave):
                return  # the response then ends with its last chunk; the client resumes
    except ServiceError as exc:
        # The database went away mid-stream: close it; the client resumes with its last id.
        logger.warning("stream of %s closed: %s", follower.workflow_id, exc.detail)
    finally:
        if isinstance(item, Batch):  # closed while catching up to it
            item.settle(metrics)
        for batch in writing:  # closed while writing them
            batch.settle(metrics)
        metrics.active_streams.dec()
        sub.close()


NO_FILTERS = Filters()
SHUTDOWN_GRACE_SECONDS = 2.0  # below serve's uvicorn timeout_graceful_shutdown (5 s)


class FollowResponse(LeanEventSourceResponse):
    """An SSE response that owns its subscription: closed when the response ends, however
    it ends. A HEAD (sse-starlette answers it with headers only), or a client gone before
    the body started, never runs the body generator, so its `finally` cannot be relied
    on to unsubscribe. On server shutdown (sse-starlette's exit signal, seen by
    sse.LeanEventSourceResponse) the stream is finished cleanly: its last chunk, then
    close. Its sends and body are lean (sse.LeanEventSourceResponse: one task per stream;
    the hub's one timer pings and times out stalled sends)."""

    def __init__(self, sub: Subscription, content: AsyncIterator[bytes], **kwargs: Any) -> None:
        self.sub = sub
        super().__init__(content, shutdown_grace_period=SHUTDOWN_GRACE_SECONDS, **kwargs)

    def on_shutdown(self) -> None:
        super().on_shutdown()
        self.sub.leave()

    def ended(self) -> None:
        self.sub.close()


async def stream_logs(request: Request) -> FollowResponse:
    state = request.app.state
    workflow_id = await authorized_workflow(request)
    if request.scope.get("query_string"):
        filters = filters_param(request)
        since = int_param(request, "since")
        tail = int_param(request, "tail")
    else:  # the usual stream (EventSource, the widget): no query string to parse
        filters, since, tail = NO_FILTERS, None, None
    last_event_id = request.headers.get("last-event-id", "").strip()
    if last_event_id:
        since = parse_int(last_event_id, "Last-Event-ID")
    store: Store = state.store

    follower = Follower(store, workflow_id, filters, 0, 0, state.hub.read_chunk,
                        state.metrics, budget=state.hub.queue_bytes,
                        line_bytes=state.settings.max_line_bytes)
    sub = state.hub.subscribe(workflow_id)  # before reading: nothing can fall in between
    try:
        if since is None and tail is not None:
            # only where the tail starts: its lines come by the catch-up's reads, which
            # are sized in bytes (ReadSize), whatever `tail` says
            snap = await store.snapshot(workflow_id, tail=tail, limit=0, filters=filters,
                                        job_statuses=True)
        else:
            # one read, shared with the streams of this workflow opening alongside (it
            # starts after they all subscribed: opening.py), which holds the first chunk
            # of lines too
            snap = await state.openings.read(OpeningKey(
                workflow_id, since or 0, filters, follower.read_size.lines))
        if snap is None and not state.settings.wait_for_unknown:
            raise HTTPException(404, f"unknown workflow {workflow_id}")
        first: list[bytes] = []
        if snap is not None:
            if snap.status is not None:
                first.append(event_frame("status", {"workflow_id": str(workflow_id),
                                                    "job_id": None, "step": None,
                                                    "status": snap.status}))
            for status in snap.job_statuses:
                first.append(status_frame(workflow_id, status))
            follower.status_cursor = snap.status_cursor
            # `since` or where the tail starts, or the last line of the first chunk
            follower.cursor = snap.horizon
            if snap.frame_count:
                follower.read_size.observe_frames(snap.frame_count, snap.frames)
                first.extend(frames for _, frames in snap.frames)
    except BaseException:
        sub.close()
        raise
    if snap is not None and follower.cursor < snap.last_seq:
        # the rest of the catch-up runs inside the stream, ahead of anything live
        sub.items.insert(0, Batch(snap.last_seq, snap.last_seq, [], time.monotonic(), None))
    response = FollowResponse(
        sub, follow(follower, sub, b"".join(first), state.settings.retry_ms),
        ping=0,  # the hub's one timer pings idle streams (Hub._pings)
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    sub.response = response
    return response


class StreamLogs:
    """The stream route's ASGI endpoint: stream_logs' response, run without
    request_response's per-request wrapper (starlette/routing.py: a Request, two closures
    and a second exception-handling layer around every send, for the stream's lifetime).

    The app calls it past its middleware stack and router (app.LogsApp), so it answers
    what stream_logs raises before the response starts (HTTPException, ServiceError) with
    the app's handlers itself, looked up as ExceptionMiddleware does
    (starlette/_exception_handler.py: by the exception's class and its bases). Anything
    else goes to uvicorn (app.LogsApp says how it answers)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.response(scope, receive, send)
        await response(scope, receive, send)  # the Request is not kept for the stream's life

    @staticmethod
    async def response(scope: Scope, receive: Receive, send: Send) -> Any:
        """The stream's response, or the app's answer to what stopped it: the app runs it
        (app.LogsApp), so that no frame of this endpoint is held."""
        request = Request(scope, receive, send)
        try:
            return await stream_logs(request)
        except Exception as exc:
            handlers = getattr(scope.get("app"), "exception_handlers", {})
            # not Exception (ServerErrorMiddleware's handler) nor BaseException, object
            for cls in type(exc).__mro__[:-3]:
                if cls in handlers:
                    return await handlers[cls](request, exc)
            raise
