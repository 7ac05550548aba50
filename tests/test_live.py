"""The feed's live read (store/live.py, follow/hub.py Feed.refresh): one statement, one
round trip, reading what the six-round-trip snapshot read reads, lines before statuses."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from reana_log_sse.follow.hub import Hub
from reana_log_sse.follow.queue import Batch, StatusItem
from reana_log_sse.metrics import Metrics
from reana_log_sse.store import db, partitions
from reana_log_sse.store.errors import DatabaseUnavailable
from reana_log_sse.store.live import _LIVE, LiveRead, LiveReads
from reana_log_sse.store.snapshot import read_snapshot
from reana_log_sse.store.store import PreparedLine, Store
from tests.test_catchup import _store_workflow


class Proxy:
    """A TCP proxy in front of PostgreSQL that counts the client's round trips: each
    simple Query ('Q') and each Sync ('S', the end of an extended-protocol exchange)
    waits for one ReadyForQuery (PostgreSQL's protocol, "Message Flow")."""

    def __init__(self, url: str) -> None:
        self.target = psycopg.conninfo.conninfo_to_dict(db.conninfo(url))
        self.round_trips = 0
        self.server: asyncio.Server | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        params = {k: v for k, v in self.target.items() if k not in ("host", "port")}
        try:
            yield psycopg.conninfo.make_conninfo(
                **params, host="127.0.0.1", port=port, sslmode="disable",
                gssencmode="disable")
        finally:
            self.server.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.target.get("host") or "/tmp", self.target.get("port") or "5432"
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, int(port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open()

        async def upstream() -> None:  # client -> server, message by message
            (length,) = struct.unpack("!i", await reader.readexactly(4))  # startup
            up_writer.write(struct.pack("!i", length) + await reader.readexactly(length - 4))
            while True:
                head = await reader.readexactly(5)
                (length,) = struct.unpack("!i", head[1:])
                body = await reader.readexactly(length - 4)
                if head[:1] in (b"Q", b"S"):
                    self.round_trips += 1
                up_writer.write(head + body)

        async def downstream() -> None:
            while data := await up_reader.read(1 << 16):
                writer.write(data)

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()


def _lines(wf: uuid.UUID, first: int, n: int) -> list[PreparedLine]:
    ts = dt.datetime.now(dt.UTC)
    return [PreparedLine(wf, i + 1, ts, uuid.uuid4(), "job", "j", None, "p", "c",
                         "stdout", f"line {first + i}", False, None) for i in range(n)]


async def _hub(url: str, pool_url: str) -> Hub:
    await partitions.maintain(url, partitions.Window.around(
        dt.datetime.now(dt.UTC).date(), retention_days=2, ahead_days=1))
    pool = db.make_pool(pool_url, max_size=2, timeout=10)
    await pool.open()
    return Hub(Store(pool), url, Metrics(), queue_lines=1000, end_grace=1)


async def _until(condition: Any) -> None:
    while not condition():  # a condition, checked as the feed's task runs
        await asyncio.sleep(0.005)


def test_live_feed_read_is_one_round_trip(database_url):
    """A NOTIFY's feed read: one statement on the wire (read_snapshot took six), once the
    statement is prepared."""
    async def run() -> None:
        proxy = Proxy(database_url)
        async with proxy.running() as url:
            hub = await _hub(database_url, url)
            try:
                wf = uuid.uuid4()
                await hub.store.ingest(_lines(wf, 1, 3))
                await hub.store.set_status(wf, status="running", job_id="j", step=None,
                                           details={}, workflow_level=False)
                sub = hub.subscribe(wf)
                feed = hub.feeds[wf]
                await _until(lambda: feed.last == 3)
                # the first live read on the live reads' own connection also prepares
                # their statement (live.LiveReads: a generic plan): two round trips, once
                live, before = hub.store.live_reads, proxy.round_trips
                feed.poke(None)
                await _until(lambda: live.statements == 1 and live._sender is None)
                assert proxy.round_trips - before == 2
                for n in (1, 5):  # as a NOTIFY after each commit would, with no LISTEN
                    await hub.store.ingest(_lines(wf, feed.last + 1, n))
                    await hub.store.set_status(wf, status="finished", job_id="j",
                                               step=None, details={}, workflow_level=False)
                    target = feed.last + n
                    before = proxy.round_trips
                    feed.poke(None)
                    await _until(lambda: feed.last == target)  # noqa: B023
                    assert proxy.round_trips - before == 1
                items = list(sub.items)
                assert [type(i) for i in items] == [Batch, Batch, StatusItem,
                                                    Batch, StatusItem]
                assert [line.seq for line in items[3].lines] == [5, 6, 7, 8, 9]
                # a NOTIFY naming several followed workflows: their feeds read together
                others = [uuid.uuid4() for _ in range(3)]
                for other in others:
                    await hub.store.set_status(other, status="running", job_id=None,
                                               step=None, details={}, workflow_level=True)
                subs = [hub.subscribe(other) for other in others]
                feeds = [feed, *(hub.feeds[other] for other in others)]
                await _until(lambda: all(f.last is not None for f in feeds))
                for other in [wf, *others]:
                    await hub.store.ingest(_lines(other, 1, 2))
                targets = [f.last + 2 for f in feeds]  # type: ignore[operator]
                before = proxy.round_trips
                for f in feeds:  # as Hub._dispatch pokes the feeds a NOTIFY names
                    f.poke(None)
                await _until(lambda: [f.last for f in feeds] == targets)
                assert proxy.round_trips - before == 1
                for other, other_sub in zip(others, subs, strict=True):
                    [*_, batch] = other_sub.items
                    assert isinstance(batch, Batch) and [
                        (line.workflow_id, line.seq) for line in batch.lines] == [
                        (str(other), 1), (str(other), 2)]
            finally:
                await hub.stop()
                await hub.store.pool.close()

    asyncio.run(run())


def test_live_feed_read_puts_lines_before_the_status_between_them(database_url):
    """Lines, a job's status, more lines, all committed before one feed read: the
    followers get the lines committed before the status, the status, then the rest."""
    async def run() -> None:
        hub = await _hub(database_url, database_url)
        try:
            wf = uuid.uuid4()
            await hub.store.ingest(_lines(wf, 1, 1))
            sub = hub.subscribe(wf)
            feed = hub.feeds[wf]
            await _until(lambda: feed.last == 1)
            await hub.store.ingest(_lines(wf, 2, 3))
            status_id = await hub.store.set_status(wf, status="running", job_id="j",
                                                   step="fit", details={},
                                                   workflow_level=False)
            await hub.store.ingest(_lines(wf, 5, 2))
            feed.poke(None)
            await _until(lambda: feed.last == 6)
            live = [(type(i).__name__, i.after, getattr(i, "upto", None)) for i in sub.items]
            assert live == [("Batch", 1, 1), ("Batch", 1, 4), ("StatusItem", 4, None),
                            ("Batch", 4, 6)]
            items = list(sub.items)
            assert [line.seq for line in items[1].lines] == [2, 3, 4]
            assert items[2].status.id == status_id and items[2].status.after_seq == 4
            assert [line.seq for line in items[3].lines] == [5, 6]
            assert feed.status_cursor == status_id
        finally:
            await hub.stop()
            await hub.store.pool.close()

    asyncio.run(run())


async def _read_live(live: LiveReads, wf: uuid.UUID, *, after: int, status_after: int,
                     limit: int, **kwargs: Any) -> Any:
    """One feed's live read, as the feed's statement makes it (LiveReads.read_many)."""
    [snap] = await live.read_many([LiveRead(wf, after, status_after, limit)], **kwargs)
    return snap


def test_live_read_reads_what_a_snapshot_read_reads(database_url):
    """Across four day partitions, statuses between lines, every start, line limits and
    byte budgets that cut reads mid-way: the same counters, horizon, lines, statuses and
    status cursor as read_snapshot (the feed's read before)."""
    async def run() -> None:
        wf = uuid.uuid4()
        lines, statuses = await _store_workflow(database_url, wf)
        pool = db.make_pool(database_url, max_size=2, timeout=10)
        await pool.open()
        live_reads = LiveReads(pool)
        try:
            cases = 0
            for after in [0, 1, 2, lines[20].seq, lines[-2].seq, lines[-1].seq]:
                for status_after in (0, statuses[3].id, statuses[-1].id):
                    for limit, budget in ((1, 1 << 20), (16, 1 << 20), (1000, 1 << 22),
                                          (1000, 300), (7, 1), (1000, 1)):
                        live = await _read_live(live_reads, wf, after=after,
                                                status_after=status_after, limit=limit,
                                                max_bytes=budget)
                        old = await read_snapshot(pool, wf, after=after,
                                                  status_after=status_after, limit=limit,
                                                  max_bytes=budget)
                        assert live is not None and old is not None
                        assert (live.last_seq, live.status, live.horizon,
                                live.status_cursor, live.statuses) == (
                            old.last_seq, old.status, old.horizon, old.status_cursor,
                            old.statuses), (after, status_after, limit, budget)
                        assert [x.frame for x in live.lines] == [x.frame for x in old.lines]
                        cases += bool(live.lines) and bool(live.statuses)
            assert cases  # some reads held both
            assert await _read_live(live_reads, uuid.uuid4(), after=0, status_after=0,
                                    limit=10) is None
            # many reads in one statement, an unknown workflow among them: each its own
            reads = [LiveRead(wf, after, status_after, limit)
                     for after in (0, lines[20].seq, lines[-1].seq)
                     for status_after in (0, statuses[3].id) for limit in (1, 16, 1000)]
            reads.insert(5, LiveRead(uuid.uuid4(), 0, 0, 10))
            many = await live_reads.read_many(reads, max_bytes=1000)
            for read, snap in zip(reads, many, strict=True):
                old = await read_snapshot(pool, read.workflow_id, after=read.after,
                                          status_after=read.status_after, limit=read.limit,
                                          max_bytes=1000)
                assert (snap is None) == (old is None)
                if snap is not None and old is not None:
                    assert (snap.horizon, snap.status_cursor, snap.statuses) == (
                        old.horizon, old.status_cursor, old.statuses)
                    assert [x.frame for x in snap.lines] == [x.frame for x in old.lines]
        finally:
            await live_reads.close()
            await pool.close()

    asyncio.run(run())


def _scanned_partitions(plan: dict[str, Any]) -> set[str]:
    """The partitions of log_lines a plan's executed nodes read."""
    found: set[str] = set()
    if plan.get("Relation Name", "").startswith("log_lines_") and plan.get("Actual Loops"):
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _scanned_partitions(child)
    return found


def test_live_read_scans_only_the_days_of_the_workflows_lines(database_url):
    """EXPLAIN ANALYZE of the statement: only the daily partitions inside the workflow's
    range of timestamps are read (pruned at run time from the row read in the statement)."""
    async def run() -> None:
        wf = uuid.uuid4()
        lines, _ = await _store_workflow(database_url, wf)  # its lines span days -4 .. 0
        async with await psycopg.AsyncConnection.connect(
                db.conninfo(database_url), autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'log_lines'::regclass")
            row = await cur.fetchone()
            assert row is not None and row[0] > 5  # more days exist than it wrote to
            days = {line.ts.date() for line in lines}
            plans = []
            for after in (0, lines[-3].seq):
                cur = await conn.execute(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + _LIVE,
                    {"wfs": [wf], "afters": [after], "status_afters": [0],
                     "limits": [1000], "bytes": 1 << 22})
                row = await cur.fetchone()
                assert row is not None
                plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
                plans.append(_scanned_partitions(plan[0]["Plan"]))
            # lines from days -4, -3, -2, -1 and 0: five partitions, each named by its day
            assert len(plans[0]) == len(days) == 5, plans[0]
            assert plans[1] == plans[0]
            for name in plans[0]:
                assert any(d.strftime("%Y%m%d") in name for d in days), (name, days)

    asyncio.run(run())


def test_live_reads_share_a_statement_survive_a_failed_one_and_a_cancelled_reader(
        database_url, monkeypatch):
    """LiveReads: reads asked in one turn go out as one statement; a failed statement
    fails each of its reads (their feeds retry) and the next goes out; a read cancelled
    while it waits leaves the others theirs."""
    from reana_log_sse.store import live

    async def run() -> None:
        hub = await _hub(database_url, database_url)
        try:
            wfs = [uuid.uuid4() for _ in range(3)]
            for wf in wfs:
                await hub.store.ingest(_lines(wf, 1, 2))
            reads = live.LiveReads(hub.store.pool)
            real, sent = live._execute, []

            async def flaky(conn: Any, params: Any, **kwargs: Any) -> Any:
                sent.append(len(params["wfs"]))
                if len(sent) == 1:
                    raise RuntimeError("the database went away")
                return await real(conn, params, **kwargs)

            monkeypatch.setattr(live, "_execute", flaky)

            def ask(wf: uuid.UUID) -> asyncio.Task[Any]:
                return asyncio.ensure_future(reads.read(live.LiveRead(wf, 0, 0, 10)))

            failed = await asyncio.gather(*map(ask, wfs), return_exceptions=True)
            assert [type(x) for x in failed] == [RuntimeError] * 3
            tasks = [ask(wf) for wf in wfs]
            await asyncio.sleep(0)  # each task has asked; the statement is not out yet
            tasks[1].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(done[1], asyncio.CancelledError)
            for wf, snap in zip((wfs[0], wfs[2]), (done[0], done[2]), strict=True):
                assert [(x.workflow_id, x.seq) for x in snap.lines] == [(str(wf), 1),
                                                                       (str(wf), 2)]
            assert sent == [3, 2] and reads.statements == 2
        finally:
            await reads.close()
            await hub.stop()
            await hub.store.pool.close()

    asyncio.run(run())


def test_live_read_never_reads_past_the_workflows_last_seq(database_url):
    """A line stored before its workflow's last_seq publishes it (a COPY ahead of the id
    counter) is not read, and the horizon stays at last_seq: the next read gets it."""
    async def run() -> None:
        wf = uuid.uuid4()
        lines, _ = await _store_workflow(database_url, wf)
        last = lines[-1].seq
        async with await psycopg.AsyncConnection.connect(
                db.conninfo(database_url), autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, stream, message)"
                " VALUES (%s, %s, %s, %s, 'job', 'stdout', 'not yet published')",
                (wf, last + 1, lines[-1].ts, uuid.uuid4()))
            pool = db.make_pool(database_url, max_size=2, timeout=10)
            await pool.open()
            live_reads = LiveReads(pool)
            try:
                snap = await _read_live(live_reads, wf, after=lines[-3].seq,
                                        status_after=0, limit=100)
                assert snap is not None and snap.horizon == snap.last_seq == last
                assert [x.seq for x in snap.lines] == [x.seq for x in lines[-2:]]
                await conn.execute("UPDATE workflows SET last_seq = %s WHERE workflow_id = %s",
                                   (last + 1, wf))
                snap = await _read_live(live_reads, wf, after=last, status_after=0,
                                        limit=100)
                assert snap is not None and [x.seq for x in snap.lines] == [last + 1]
                assert snap.horizon == last + 1
            finally:
                await live_reads.close()
                await pool.close()

    asyncio.run(run())


def test_live_reads_run_by_a_generic_plan_on_their_own_connection_only(database_url):
    """PostgreSQL plans a custom plan at every execution unless told: the live reads'
    connection is told (live.GENERIC_PLAN), the pool's connections are not; a broken
    connection is replaced at the next read."""
    async def run() -> None:
        hub = await _hub(database_url, database_url)
        try:
            wf = uuid.uuid4()
            await hub.store.ingest(_lines(wf, 1, 2))
            live = hub.store.live_reads
            snap = await hub.store.live(wf, after=0, status_after=0, limit=10)
            assert snap is not None and [line.seq for line in snap.lines] == [1, 2]
            conn = live._conn
            assert conn is not None
            cur = await conn.execute("SHOW plan_cache_mode")
            assert await cur.fetchone() == ("force_generic_plan",)
            async with hub.store.pool.connection() as pooled:
                cur = await pooled.execute("SHOW plan_cache_mode")
                assert await cur.fetchone() == ("auto",)
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            with pytest.raises(DatabaseUnavailable):
                await hub.store.live(wf, after=0, status_after=0, limit=10)
            snap = await hub.store.live(wf, after=1, status_after=0, limit=10)
            assert snap is not None and [line.seq for line in snap.lines] == [2]
            assert live._conn is not None and live._conn is not conn
        finally:
            await hub.store.close()
            await hub.stop()
            await hub.store.pool.close()

    asyncio.run(run())
