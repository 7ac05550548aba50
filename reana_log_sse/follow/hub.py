"""The in-process fan-out: one LISTEN connection, one reader per followed workflow.

A NOTIFY names the workflows a committed batch touched. The workflow's Feed reads the new
rows once (however many followers it has) and hands them to each follower's bounded
queue. Every queued item says which line it follows (`after`); a follower whose own
position is behind that reads the gap from the database, so a follower whose queue
overflowed (and was emptied) simply catches up from the database. The lines of a commit
made in this process are handed to its feeds without the read when nothing can come
before them (handoff.py). The queues and what they hold are in queue.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import psycopg

from reana_log_sse.follow.direct import deliver
from reana_log_sse.follow.handoff import Handed, Handoffs
from reana_log_sse.follow.queue import (
    Batch,
    End,
    Item,
    ReadSize,
    StatusItem,
    Subscription,
)
from reana_log_sse.metrics import Metrics
from reana_log_sse.store.db import NOTIFY_CHANNEL, conninfo
from reana_log_sse.store.errors import ServiceError
from reana_log_sse.store.snapshot import TERMINAL_STATUSES
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")


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
        self.hub.metrics.feed_handoffs.inc()
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
        self.handoffs = Handoffs(self.feeds, queue_bytes // 2)  # as a feed's ReadSize
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
            if lines is not None:
                try:
                    if feed.take(lines, committed_at):
                        continue
                except Exception:  # never the LISTEN loop's end: the feed reads instead
                    logger.exception("feed %s: handoff failed; reading", feed.workflow_id)
            feed.poke(committed_at)
