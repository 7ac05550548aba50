"""The in-process fan-out: one LISTEN connection, one reader per followed workflow.

A NOTIFY names the workflows a committed batch touched. The workflow's Feed reads the new
rows once (however many followers it has) and hands them to each follower's bounded
queue. Every queued item says which line it follows (`after`); a follower whose own
position is behind that reads the gap from the database, so a follower whose queue
overflowed (and was emptied) simply catches up from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import psycopg

from reana_log_sse.follow.direct import Direct, deliver
from reana_log_sse.follow.handoff import Handed, Handoffs
from reana_log_sse.metrics import Metrics
from reana_log_sse.store.db import NOTIFY_CHANNEL, conninfo
from reana_log_sse.store.errors import ServiceError
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import TERMINAL_STATUSES, StatusRow
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")


@dataclasses.dataclass(slots=True)
class Batch:
    after: int
    upto: int
    lines: list[Line]
    notified_at: float  # monotonic time the NOTIFY arrived
    committed_at: float | None  # wall-clock epoch the ingest sent with the NOTIFY
    _frames: bytes | None = None
    _nbytes: int = -1
    pending: int = 0  # followers that have yet to write it (or drop it): see settle()

    @property
    def nbytes(self) -> int:
        """The size of its lines' frames: what a follower's queue holds for it."""
        if self._nbytes < 0:
            self._nbytes = sum([len(line.frame) for line in self.lines])
        return self._nbytes

    def settle(self, metrics: Metrics) -> None:
        """One follower is done with this batch (written, filtered out or dropped). When
        the last one is, the batch's delays are observed once: the delay to its slowest
        follower (metrics per batch, not per follower per batch)."""
        self.pending -= 1
        if self.pending == 0 and self.lines:
            metrics.notify_to_send.observe(time.monotonic() - self.notified_at)
            if self.committed_at is not None:
                metrics.stage_delay.labels("committed_to_sent").observe(
                    max(0.0, time.time() - self.committed_at))

    def frames(self) -> bytes:
        """Every line's frame in one bytes object, joined once for all the followers."""
        if self._frames is None:
            self._frames = b"".join([line.frame for line in self.lines])
        return self._frames


@dataclasses.dataclass(frozen=True, slots=True)
class StatusItem:
    after: int
    status: StatusRow


@dataclasses.dataclass(frozen=True, slots=True)
class End:
    after: int
    status: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive for an idle follower: the hub's one ping timer queues it (Hub._pings)."""

    after: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Leave:
    """The server is shutting down: finish the stream cleanly; the client resumes."""

    after: int = 0


PING = Ping()
Item = Batch | StatusItem | End | Ping | Leave


class ReadSize:
    """How many lines the next read of a workflow asks for, so that it holds about
    `budget` bytes rather than `most` lines of any size: it starts with what fits if
    every line is as long as allowed, doubles while full reads stay under half the
    budget, and shrinks to fit when a read was over it."""

    __slots__ = ("budget", "lines", "most")

    def __init__(self, most: int, budget: int, line_bytes: int) -> None:
        self.most = most
        self.budget = budget
        self.lines = max(16, min(most, budget // (line_bytes + 256)))

    def observe(self, lines: list[Line]) -> None:
        """A read of Line objects (the feed's): their text and about 256 bytes each."""
        size = sum([len(line.message) for line in lines]) + 256 * len(lines)
        self.observe_size(len(lines), size)

    def observe_frames(self, count: int, frames: list[tuple[int, bytes]]) -> None:
        """A read of `count` lines as frames joined by PostgreSQL (the catch-up's): their
        exact size."""
        self.observe_size(count, sum([len(frame) for _, frame in frames]))

    def observe_size(self, count: int, size: int) -> None:
        if not count:
            return
        if size > self.budget:
            self.lines = max(16, self.lines * self.budget // size)
        elif count >= self.lines and 2 * size <= self.budget:
            self.lines = min(self.most, 2 * self.lines)


class Subscription:
    """A follower's queue of items from its workflow's Feed, bounded in lines and in
    bytes of frames (a few long lines weigh as much as many short ones).

    The queue is a list, not a deque: a caught-up follower's queue is empty nearly
    always (live batches are written straight to it, direct.py), and an empty deque
    costs 624 bytes, a list 56 (docs/performance.md, "Memory per stream"); a queue is
    short, so taking from its head stays cheap."""

    __slots__ = ("feed", "limit", "limit_bytes", "items", "queued_lines", "queued_bytes",
                 "ending", "closed", "response", "direct", "_waiter")

    def __init__(self, feed: Feed, limit: int, limit_bytes: int) -> None:
        self.feed = feed
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.items: list[Item] = []
        self.queued_lines = 0
        self.queued_bytes = 0
        self.ending = False
        self.closed = False
        self.response: Any = None  # the stream's response (stream.FollowResponse)
        self.direct: Direct | None = None  # its way to write live batches (direct.py)
        self._waiter: asyncio.Future[None] | None = None

    def push(self, item: Item) -> None:
        if self.ending:  # nothing after `end` matters, and it must never be dropped
            if isinstance(item, Batch):
                item.settle(self.feed.hub.metrics)
            return
        self.ending = isinstance(item, End)
        lines, size = (len(item.lines), item.nbytes) if isinstance(item, Batch) else (0, 0)
        if self.queued_lines + lines > self.limit or self.queued_bytes + size > self.limit_bytes:
            # Too far behind: forget what is queued. The next item's `after` is then
            # ahead of the follower, which reads the gap from the database instead.
            self._settle_all()
            self.feed.hub.metrics.follower_overflows.inc()
            if lines > self.limit or size > self.limit_bytes:
                item.settle(self.feed.hub.metrics)  # type: ignore[union-attr]
                item = Batch(item.upto, item.upto, [], item.notified_at, item.committed_at)  # type: ignore[union-attr]
                lines = size = 0
        self.items.append(item)
        self.queued_lines += lines
        self.queued_bytes += size
        self._wake()

    def ping(self) -> None:
        """Queue a keep-alive if nothing else is queued (a busy stream needs none)."""
        if not self.items and not self.ending:
            self.items.append(PING)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Item:
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self.items.pop(0)
        if isinstance(item, Batch):
            self.queued_lines -= len(item.lines)
            self.queued_bytes -= item.nbytes
        return item

    def next_batch(self, cursor: int) -> Batch | None:
        """The next queued item if it is a batch that follows on from `cursor` (no gap
        to read first), without waiting: a follower that fell behind sends what queued
        up as one write."""
        items = self.items
        if items:
            item = items[0]
            if isinstance(item, Batch) and item.after <= cursor:
                del items[0]
                self.queued_lines -= len(item.lines)
                self.queued_bytes -= item.nbytes
                return item
        return None

    def _settle_all(self) -> None:
        metrics = self.feed.hub.metrics
        for queued in self.items:
            if isinstance(queued, Batch):
                queued.settle(metrics)
        self.items.clear()
        self.queued_lines = self.queued_bytes = 0

    def leave(self) -> None:
        """Shutdown: the follower's next item tells it to finish its stream now."""
        self.items.insert(0, Leave())
        self._wake()

    def close(self) -> None:
        """Leave the feed (idempotent: a stream that never ran is closed by its response)."""
        if not self.closed:
            self.closed = True
            self._settle_all()
            self.feed.unsubscribe(self)
        # the response holds this subscription: without this link back, a closed stream
        # is freed when its request ends, not by the next full cyclic GC (which, with
        # streams resuming every few seconds, let RSS creep up between collections)
        self.response = None
        self.direct = None


class Feed:
    """Reads one workflow's new rows once and fans them out."""

    def __init__(self, hub: Hub, workflow_id: uuid.UUID) -> None:
        self.hub = hub
        self.workflow_id = workflow_id
        self.subscribers: set[Subscription] = set()
        self.last: int | None = None  # highest seq read (None until initialised)
        self.status_cursor = 0
        self.ended: End | None = None
        self.dirty = asyncio.Event()
        self.dirty.set()
        self.notified_at = time.monotonic()
        self.committed_at: float | None = None
        self._end_at: float | None = None
        self._end_status = ""
        self._was_unknown = False
        self.reading = False  # a refresh is in flight (its read may hold any new line)
        # a read fits half a follower's queue, so a burst reaches live followers as
        # batches they can queue, not as one overflow that sends them all to the database
        self.read_size = ReadSize(hub.read_chunk, hub.queue_bytes // 2, hub.line_bytes)
        self.task = asyncio.create_task(self._run(), name=f"feed-{workflow_id}")

    def subscribe(self, limit: int, limit_bytes: int) -> Subscription:
        sub = Subscription(self, limit, limit_bytes)
        self.subscribers.add(sub)
        if self.ended is not None:
            sub.push(self.ended)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            self.task.cancel()
            if self.hub.feeds.get(self.workflow_id) is self:
                del self.hub.feeds[self.workflow_id]
                self.hub.metrics.followed_workflows.set(len(self.hub.feeds))
                self.hub.followed_changed(self.workflow_id, False)

    def poke(self, committed_at: float | None) -> None:
        if not self.dirty.is_set():
            self.notified_at = time.monotonic()
            self.committed_at = committed_at
        self.dirty.set()

    def take(self, handed: Handed, committed_at: float | None) -> bool:
        """A local commit's lines of this workflow (handoff.py), sent without a read if
        nothing can come before them: no NOTIFY pending, no read in flight, and every
        line up to the first of them delivered. False: the feed must read instead."""
        if self.dirty.is_set() or self.reading or self.last != handed.base:
            return False
        now = time.monotonic()
        self._broadcast(Batch(handed.base, handed.upto, handed.lines, now, committed_at))
        self.last = handed.upto
        self.hub.handoffs.taken += 1
        return True

    def _broadcast(self, item: Item) -> None:
        subscribers = list(self.subscribers)
        if isinstance(item, Batch):
            item.pending = len(subscribers)
            # caught-up followers get it on their socket now; the rest through their task
            subscribers = deliver(subscribers, item, self.hub.metrics)
        for sub in subscribers:
            sub.push(item)

    async def _run(self) -> None:
        while True:
            try:
                timeout = None
                if self._end_at is not None and self.ended is None:
                    timeout = max(0.0, self._end_at - time.monotonic())
                if timeout is None:
                    await self.dirty.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.dirty.wait(), timeout)
                self.dirty.clear()
                self.reading = True
                try:
                    await self.refresh()
                finally:
                    self.reading = False
                if (
                    self.ended is None and self._end_at is not None
                    and time.monotonic() >= self._end_at and self.last is not None
                ):
                    self.ended = End(self.last, self._end_status)
                    self._broadcast(self.ended)
            except asyncio.CancelledError:
                raise
            except ServiceError as exc:
                logger.warning("feed %s: %s; retrying", self.workflow_id, exc.detail)
                self.dirty.set()
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("feed %s failed; retrying", self.workflow_id)
                self.dirty.set()
                await asyncio.sleep(1.0)

    async def refresh(self) -> None:
        store = self.hub.store
        if self.last is None:
            snap = await store.snapshot(self.workflow_id, limit=0)
            if snap is None:  # not known yet: wait for its first NOTIFY
                self._was_unknown = True
                return
            self.last, self.status_cursor = snap.last_seq, snap.status_cursor
            if self._was_unknown:
                # followers of a workflow that was unknown have seen none of the statuses
                # that made it known (pod statuses come before any line): read them
                self.status_cursor = 0
                self.dirty.set()
            # Followers that subscribed before this point may have read less: the empty
            # batch tells them where live delivery starts.
            self._broadcast(Batch(self.last, self.last, [], self.notified_at, None))
            self._note_status(snap.status, snap.status_age)
            return
        notified_at, committed_at = self.notified_at, self.committed_at
        self.hub.metrics.feed_reads.inc()
        while True:
            # one statement, one round trip (store/live.py)
            snap = await store.live(self.workflow_id, after=self.last,
                                    status_after=self.status_cursor,
                                    limit=self.read_size.lines)
            if snap is None:
                return
            self.read_size.observe(snap.lines)
            start = self.last
            for lines, status in snap.parts():  # lines committed before a status go first
                upto = snap.horizon if status is None else status.after_seq
                if upto > start:
                    self._broadcast(Batch(start, upto, lines, notified_at, committed_at))
                    start = upto
                if status is not None:
                    self._broadcast(StatusItem(start, status))
            self.last = max(self.last, snap.horizon)
            self.status_cursor = snap.status_cursor
            if snap.horizon >= snap.last_seq:
                break
        self._note_status(snap.status, snap.status_age)

    def _note_status(self, status: str | None, age: float | None) -> None:
        """A terminal workflow status ends the streams once late lines had their grace."""
        if status in TERMINAL_STATUSES and self._end_at is None:
            self._end_status = status
            self._end_at = time.monotonic() + max(0.0, self.hub.end_grace - (age or 0.0))
            self.dirty.set()


class Hub:
    def __init__(
        self, store: Store, database_url: str, metrics: Metrics, *,
        queue_lines: int, end_grace: float, read_chunk: int = 2000,
        queue_bytes: int = 8 * 1024 * 1024, line_bytes: int = 64 * 1024,
        ping_seconds: float = 15.0, send_timeout: float = 60.0, direct_writes: bool = True,
    ) -> None:
        self.direct_writes = direct_writes  # follow/direct.py (Direct.attach reads it)
        self.ping_seconds = ping_seconds
        self.send_timeout = send_timeout
        self._pinger: asyncio.Task[None] | None = None
        self.store = store
        self.database_url = database_url
        self.metrics = metrics
        self.queue_lines = queue_lines
        self.queue_bytes = queue_bytes
        self.line_bytes = line_bytes
        self.end_grace = end_grace
        self.read_chunk = read_chunk
        self.feeds: dict[uuid.UUID, Feed] = {}
        # told when a workflow gets its first follower here (True) or loses its last
        # (False): the Kubernetes live tap follows only followed workflows' pods
        self.on_followed: Callable[[uuid.UUID, bool], None] | None = None
        self.listening = False
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # this process's commits hand their lines to its feeds without a read (handoff.py)
        self.handoffs = Handoffs(self)
        store.handoff = self.handoffs

    def subscribe(self, workflow_id: uuid.UUID) -> Subscription:
        feed = self.feeds.get(workflow_id)
        if feed is None:
            feed = self.feeds[workflow_id] = Feed(self, workflow_id)
            self.metrics.followed_workflows.set(len(self.feeds))
            self.followed_changed(workflow_id, True)
        return feed.subscribe(self.queue_lines, self.queue_bytes)

    def followed_changed(self, workflow_id: uuid.UUID, followed: bool) -> None:
        if self.on_followed is not None:
            try:
                self.on_followed(workflow_id, followed)
            except Exception:
                logger.exception("on_followed hook failed")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="listen")
        if self.ping_seconds > 0:
            self._pinger = asyncio.create_task(self._pings(), name="pings")

    async def _pings(self) -> None:
        """One timer for every stream: each tick queues a ping for the idle followers
        and ends the streams whose client has read nothing for `send_timeout` seconds
        (their write has been waiting that long; they resume from their last id)."""
        while True:
            await asyncio.sleep(self.ping_seconds)
            now = time.monotonic()
            for feed in list(self.feeds.values()):
                for sub in list(feed.subscribers):
                    sub.ping()
                    response = sub.response
                    if response is not None:
                        response.abort_if_stalled(now, self.send_timeout)

    async def wait_listening(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        for feed in list(self.feeds.values()):
            feed.task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo(self.database_url), autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening = True
                    self._connected.set()
                    logger.info("listening for new lines on channel %s", NOTIFY_CHANNEL)
                    delay = 0.1
                    # anything committed while we were not listening is read now
                    self.handoffs.clear()
                    for feed in list(self.feeds.values()):
                        feed.poke(None)
                    async for notify in conn.notifies():
                        self._dispatch(notify.payload)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                if self.listening:
                    logger.warning("LISTEN connection lost (%s); reconnecting", exc)
                else:
                    logger.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
            finally:
                self.listening = False
                self._connected.clear()
            self.metrics.listen_reconnects.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(self, payload: str) -> None:
        try:
            message: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            message = {"all": True}
        committed_at = message.get("t")
        if message.get("all"):
            targets = list(self.feeds.values())
        else:
            targets = []
            for key in message.get("w", {}):
                feed = self.feeds.get(uuid.UUID(key))
                if feed is not None:  # a status change may come with no new line
                    targets.append(feed)
        handed = self.handoffs.take(message.get("h"))  # this process's commit's lines
        for feed in targets:
            lines = handed.get(feed.workflow_id) if handed else None
            if lines is None or not feed.take(lines, committed_at):
                feed.poke(committed_at)
