"""A local commit's lines handed to this process's feeds without a read
(follow/handoff.py): the same frames a read gives, and a read instead whenever anything
could come before them."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
import pytest

from reana_log_sse.follow.hub import Hub
from reana_log_sse.follow.queue import Batch, StatusItem
from reana_log_sse.store import db
from reana_log_sse.store import store as store_module
from reana_log_sse.store.store import PreparedLine
from tests.test_live import _hub, _until


def _lines(wf: uuid.UUID, first: int, n: int, *, offset: int = 0,
           job: str = "j") -> list[PreparedLine]:
    zone = dt.timezone(dt.timedelta(hours=offset))
    ts = dt.datetime.now(dt.UTC).astimezone(zone).replace(microsecond=123456)
    return [PreparedLine(wf, i + 1, ts, uuid.uuid4(), "job", job, None, "p", "c", "stderr",
                         f"line {first + i} ü", i == 1, None) for i in range(n)]


class Notifies:
    """The NOTIFY payloads the service sends, taken one by one (a LISTEN of our own), to
    dispatch them to a hub that does not listen itself, in the order a test chooses."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def next(self) -> str:
        async for notify in self.conn.notifies(timeout=30, stop_after=1):
            return notify.payload
        raise AssertionError("no NOTIFY in 30 s")


@asynccontextmanager
async def _notifies(url: str) -> AsyncIterator[Notifies]:
    async with await psycopg.AsyncConnection.connect(db.conninfo(url),
                                                     autocommit=True) as conn:
        await conn.execute(f"LISTEN {db.NOTIFY_CHANNEL}")
        yield Notifies(conn)


async def _known(hub: Hub, notifies: Notifies, wf: uuid.UUID) -> None:
    """The workflow exists (a feed of an unknown one waits for its first NOTIFY)."""
    await hub.store.set_status(wf, status="running", job_id=None, step=None, details={},
                               workflow_level=True)
    await notifies.next()


async def _ready(hub: Hub, wf: uuid.UUID) -> Any:
    sub = hub.subscribe(wf)
    feed = hub.feeds[wf]
    await _until(lambda: feed.last is not None and not feed.dirty.is_set()
                 and not feed.reading)
    return sub, feed


@asynccontextmanager
async def _followed(url: str) -> AsyncIterator[tuple[Hub, Notifies, uuid.UUID, Any, Any]]:
    """A hub that does not listen (the test dispatches the NOTIFYs it takes), a known
    workflow, and its subscription and feed, ready."""
    hub = await _hub(url, url)
    try:
        async with _notifies(url) as notifies:
            wf = uuid.uuid4()
            await _known(hub, notifies, wf)
            sub, feed = await _ready(hub, wf)
            yield hub, notifies, wf, sub, feed
    finally:
        await hub.stop()
        await hub.store.pool.close()


def _reads(hub: Hub) -> float:
    return hub.metrics.feed_reads._value.get()  # type: ignore[attr-defined,no-any-return]


def _handoffs(hub: Hub) -> float:
    """Feeds that took a commit's lines without a read (reana_log_sse_feed_handoffs)."""
    return hub.metrics.feed_handoffs._value.get()  # type: ignore[attr-defined,no-any-return]


def test_handoff_sends_a_local_commit_without_a_read_with_the_frames_a_read_gives(
        database_url):
    """A listening hub: each commit's lines reach the followers with no feed read, in
    frames byte for byte those of a read of the same lines (the step REANA named, the
    time in UTC from a +02:00 stamp, a truncated line, non-ASCII text)."""
    async def run() -> None:
        hub = await _hub(database_url, database_url)
        try:
            wf = uuid.uuid4()
            await hub.store.set_status(wf, status="running", job_id="j", step="fit",
                                       details={}, workflow_level=False)
            await hub.start()  # after the status: no NOTIFY of it left to dispatch
            assert await hub.wait_listening(30)
            sub, feed = await _ready(hub, wf)
            reads = _reads(hub)
            await hub.store.ingest(_lines(wf, 1, 3, offset=2))
            await hub.store.ingest(_lines(wf, 4, 2))
            await _until(lambda: feed.last == 5)
            assert _handoffs(hub) == 2 and _reads(hub) == reads
            handed = [i for i in sub.items if isinstance(i, Batch) and i.lines]
            assert [(b.after, b.upto) for b in handed] == [(0, 3), (3, 5)]
            snap = await hub.store.live(wf, after=0, status_after=0, limit=100)
            assert snap is not None
            assert b"".join(b.frames() for b in handed) == b"".join(
                line.frame for line in snap.lines)
            assert [line.step for line in snap.lines] == ["fit"] * 5
        finally:
            await hub.stop()
            await hub.store.pool.close()

    asyncio.run(run())


def test_handoff_a_status_whose_notify_came_first_goes_before_the_lines(database_url):
    """Lines, a status, more lines, their NOTIFYs dispatched in commit order: the first
    lines are handed over; the status's NOTIFY leaves the feed to read, so the next
    commit's lines are not handed over but read, after the status."""
    async def run() -> None:
        async with _followed(database_url) as (hub, notifies, wf, sub, feed):
            await hub.store.ingest(_lines(wf, 1, 2))
            hub._dispatch(await notifies.next())
            assert _handoffs(hub) == 1 and feed.last == 2
            status_id = await hub.store.set_status(wf, status="running", job_id="j",
                                                   step=None, details={},
                                                   workflow_level=False)
            status = await notifies.next()
            await hub.store.ingest(_lines(wf, 3, 2))
            lines = await notifies.next()
            assert "h" in orjson.loads(lines)  # offered, but not taken:
            hub._dispatch(status)  # the status's NOTIFY, then the lines' at once
            hub._dispatch(lines)
            assert _handoffs(hub) == 1
            await _until(lambda: feed.last == 4)
            items = [(type(i).__name__, i.after, getattr(i, "upto", None))
                     for i in sub.items]
            assert items == [("Batch", 0, 0), ("Batch", 0, 2), ("StatusItem", 2, None),
                             ("Batch", 2, 4)]
            assert sub.items[2].status.id == status_id
            assert not hub.handoffs._held

    asyncio.run(run())


def test_handoff_a_feed_behind_the_commit_reads_every_line_once(database_url):
    """A commit whose NOTIFY the feed never saw: the next commit's lines are not handed
    over (the feed is behind their first id); its read brings both, once each."""
    async def run() -> None:
        async with _followed(database_url) as (hub, notifies, wf, sub, feed):
            await hub.store.ingest(_lines(wf, 1, 2))
            await notifies.next()  # lost
            await hub.store.ingest(_lines(wf, 3, 2))
            hub._dispatch(await notifies.next())
            await _until(lambda: feed.last == 4)
            assert _handoffs(hub) == 0
            seqs = [line.seq for i in sub.items if isinstance(i, Batch) for line in i.lines]
            assert seqs == [1, 2, 3, 4]
            assert not any(isinstance(i, StatusItem) for i in sub.items)

    asyncio.run(run())


def test_handoff_is_withdrawn_when_its_transaction_does_not_commit(database_url,
                                                                   monkeypatch):
    """A transaction that fails after its offer (here: once its NOTIFY is queued) rolls
    back, and the offer is withdrawn; a batch with a line stored already fails its direct
    COPY, and the staged path that stores the rest sends no token (its lines are read)."""
    real_notify = store_module._notify
    failing = False

    async def notify_then_fail(*args: Any) -> str | None:
        token = await real_notify(*args)
        if failing:
            assert token is not None  # offered, and about to be committed
            raise RuntimeError("injected after the NOTIFY")
        return token

    monkeypatch.setattr(store_module, "_notify", notify_then_fail)

    async def run() -> None:
        nonlocal failing
        async with _followed(database_url) as (hub, notifies, wf, sub, feed):
            first = _lines(wf, 1, 2)
            failing = True
            with pytest.raises(RuntimeError, match="injected"):
                await hub.store.ingest(first)
            assert not hub.handoffs._held
            failing = False
            await hub.store.ingest(first)  # its NOTIFY is the next: none came before
            hub._dispatch(await notifies.next())
            assert _handoffs(hub) == 1
            again = [*first, *(line._replace(ord=3 + i) for i, line in
                               enumerate(_lines(wf, 3, 1)))]
            result = await hub.store.ingest(again)
            assert (result.accepted, result.duplicates) == (1, 2)
            payload = orjson.loads(await notifies.next())
            assert "h" not in payload and not hub.handoffs._held
            hub._dispatch(orjson.dumps(payload).decode())
            await _until(lambda: feed.last is not None and feed.last >= 5)
            seqs = [line.seq for i in sub.items if isinstance(i, Batch) for line in i.lines]
            assert [line.message for i in sub.items if isinstance(i, Batch)
                    for line in i.lines] == ["line 1 ü", "line 2 ü", "line 3 ü"]
            assert seqs == sorted(seqs)

    asyncio.run(run())


def test_handoff_is_not_offered_for_more_lines_than_a_feed_reads_at_once(database_url):
    """A commit of more lines than the feed's read size: no token (the feed reads them,
    sized as always); a workflow nobody follows here: no token either; a commit naming
    so many workflows that its NOTIFY goes as {"all": true}: its offer is withdrawn."""
    async def run() -> None:
        async with _followed(database_url) as (hub, notifies, wf, sub, feed):
            feed.read_size.lines = 2
            await hub.store.ingest(_lines(wf, 1, 3))
            assert "h" not in orjson.loads(await notifies.next())
            await hub.store.ingest(_lines(uuid.uuid4(), 1, 1))
            assert "h" not in orjson.loads(await notifies.next())
            assert not hub.handoffs._held
            many = [line for w in [wf, *(uuid.uuid4() for _ in range(300))]
                    for line in _lines(w, 1, 1)]
            await hub.store.ingest(many)
            assert orjson.loads(await notifies.next())["all"] is True
            assert not hub.handoffs._held and hub.handoffs.held_bytes == 0

    asyncio.run(run())


def test_handoff_offers_whose_notify_does_not_come_are_bounded_in_bytes(database_url):
    """Commits whose NOTIFYs the hub has not dispatched (its LISTEN down): the offers held
    stay within two feed reads' worth of bytes, the oldest dropped; dispatched late, the
    first (dropped) has the feed read every line, and the rest find it past theirs:
    every line once and in order, and nothing left held."""
    async def run() -> None:
        async with _followed(database_url) as (hub, notifies, wf, sub, feed):
            hub.handoffs.budget = 2000  # 3 lines weigh about 800 bytes here
            payloads = []
            for i in range(10):
                await hub.store.ingest(_lines(wf, 1 + 3 * i, 3))
                payloads.append(await notifies.next())
                assert hub.handoffs.held_bytes <= 2 * hub.handoffs.budget
            assert 0 < len(hub.handoffs._held) < 10
            for payload in payloads:
                hub._dispatch(payload)
                await _until(lambda: not feed.dirty.is_set() and not feed.reading)
            await _until(lambda: feed.last == 30)
            assert _handoffs(hub) == 0
            seqs = [line.seq for i in sub.items if isinstance(i, Batch) for line in i.lines]
            assert seqs == list(range(1, 31))
            assert hub.handoffs.held_bytes == 0 and not hub.handoffs._held

    asyncio.run(run())


def test_handoff_that_fails_leaves_the_feed_to_read_and_the_listener_running(database_url):
    """A handoff that raises (here: the feed's first broadcast) is logged, not raised into
    the LISTEN loop; the feed reads the lines instead, each once."""
    async def run() -> None:
        async with _followed(database_url) as (hub, notifies, wf, sub, feed):
            real, calls = feed._broadcast, []

            def flaky(item: Any) -> None:
                calls.append(item)
                if len(calls) == 1:
                    raise RuntimeError("injected")
                real(item)

            feed._broadcast = flaky  # type: ignore[method-assign]
            await hub.store.ingest(_lines(wf, 1, 3))
            hub._dispatch(await notifies.next())  # does not raise
            await _until(lambda: feed.last == 3)
            assert _handoffs(hub) == 0 and len(calls) == 2
            seqs = [line.seq for i in sub.items if isinstance(i, Batch) for line in i.lines]
            assert seqs == [1, 2, 3]

    asyncio.run(run())
