"""The live tap's writer (reana_log_sse/store/coalesce.py), driven directly on a real Store:
chunks merged into one transaction, in order; a chunk stored before skipped within it; a
chunk the database refuses failing alone; the window bounding flushes, not chunks; a quiet
source's chunk going early, at most once per `quiet`.

Chunks join one flush without timing: tasks started together all submit in one loop
pass, before the flush the first one scheduled (call_soon) runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from reana_log_sse.ingest.prepare import prepare
from reana_log_sse.store import partitions
from reana_log_sse.store.coalesce import Coalescer
from reana_log_sse.store.errors import BadInput
from reana_log_sse.store.store import PreparedLine, Store
from tests.helpers import event, store_on


def _lines(wf: uuid.UUID, tag: str, n: int = 10, job: str = "reana-run-job-1",
           ) -> list[PreparedLine]:
    today = dt.datetime.now(dt.UTC).date()
    window = partitions.Window.around(today, retention_days=2, ahead_days=1)
    lines, rejected = prepare([event(wf, f"{tag} {i}", job=job) for i in range(n)],
                              max_line_bytes=65536, window=window)
    assert not rejected
    return lines


@contextlib.asynccontextmanager
async def _writer(database_url: str, window: float = 0.0, quiet: float = 0.0
                  ) -> AsyncIterator[tuple[Store, Coalescer, list[int]]]:
    async with store_on(database_url) as store:
        stored: list[int] = []
        writer = Coalescer(store, window=window, max_lines=5000, quiet=quiet,
                           stored=stored.append)
        try:
            yield store, writer, stored
        finally:
            await writer.close()


def _rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def test_tap_coalesce_chunks_of_many_follows_share_one_transaction_in_order(database_url):
    wf, other = uuid.uuid4(), uuid.uuid4()
    chunks = [_lines(wf, "a", job="job-a"), _lines(other, "b"), _lines(wf, "c", job="job-c"),
              _lines(wf, "d", 3, job="job-a")]

    async def run() -> int:
        async with _writer(database_url) as (_, writer, stored):
            await asyncio.gather(*(writer.submit(c) for c in chunks))
            assert stored == [33]
            return writer.flushes

    assert asyncio.run(run()) == 1
    xmins = _rows(database_url, "SELECT count(DISTINCT xmin::text) FROM log_lines"
                  " WHERE workflow_id = ANY(%s)", [wf, other])
    assert xmins == [(1,)]
    rows = _rows(database_url, "SELECT message FROM log_lines WHERE workflow_id = %s"
                 " ORDER BY seq", wf)
    assert [m for (m,) in rows] == ([f"a {i}" for i in range(10)] + [f"c {i}" for i in range(10)]
                                    + [f"d {i}" for i in range(3)])
    seqs = [s for (s,) in _rows(database_url, "SELECT seq FROM log_lines WHERE workflow_id = %s"
                                " ORDER BY seq", wf)]
    assert seqs == list(range(1, 24))
    # each job's span of ids covers its lines (job_workflows, sql/0005)
    spans = _rows(database_url, "SELECT job_id, first_seq, last_seq FROM job_workflows"
                  " WHERE workflow_id = %s ORDER BY job_id", wf)
    assert spans == [("job-a", 1, 23), ("job-c", 11, 20)]


def test_tap_coalesce_a_chunk_stored_before_is_skipped_in_the_same_one_transaction(
        database_url):
    # a new follow's lookback re-reads lines Vector stored: the merged COPY fails on them,
    # and the staged path stores the rest, still one transaction for the whole flush
    wf, other = uuid.uuid4(), uuid.uuid4()
    before, fresh, also = _lines(wf, "before"), _lines(wf, "fresh"), _lines(other, "also")

    async def run() -> None:
        async with _writer(database_url) as (store, writer, stored):
            await store.ingest(before)
            await asyncio.gather(*(writer.submit(c) for c in (before, fresh, also)))
            assert writer.flushes == 1
            assert stored == [20]

    asyncio.run(run())
    rows = _rows(database_url, "SELECT split_part(message, ' ', 1), count(*),"
                 " count(DISTINCT xmin::text) FROM log_lines WHERE workflow_id = ANY(%s)"
                 " AND message NOT LIKE 'before%%' GROUP BY 1 ORDER BY 1", [wf, other])
    assert rows == [("also", 10, 1), ("fresh", 10, 1)]
    xmins = _rows(database_url, "SELECT count(DISTINCT xmin::text) FROM log_lines"
                  " WHERE workflow_id = ANY(%s) AND message NOT LIKE 'before%%'", [wf, other])
    assert xmins == [(1,)]
    assert _rows(database_url, "SELECT count(*) FROM log_lines WHERE workflow_id = %s"
                 " AND message LIKE 'before%%'", wf) == [(10,)]


def test_tap_coalesce_a_chunk_the_database_refuses_fails_alone(database_url):
    wf, other = uuid.uuid4(), uuid.uuid4()
    bad = [line._replace(message="NUL \x00 here") for line in _lines(other, "bad")]

    async def run() -> list[Any]:
        async with _writer(database_url) as (_, writer, stored):
            answers = await asyncio.gather(writer.submit(_lines(wf, "first")),
                                           writer.submit(bad), writer.submit(_lines(wf, "last")),
                                           return_exceptions=True)
            assert writer.flushes == 1
            assert sorted(stored) == [10, 10]
            return answers

    first, refused, last = asyncio.run(run())
    assert (first, last) == (None, None)
    assert isinstance(refused, BadInput), refused
    assert _rows(database_url, "SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                 wf) == [(20,)]
    assert _rows(database_url, "SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                 other) == [(0,)]


def test_tap_coalesce_flushes_follow_the_window_not_the_chunks(database_url):
    # 30 follows, each submitting 5 chunks one after the other (as a follow awaits each
    # chunk's commit before the next): the first flush goes at once, the next ones wait
    # for the window, so 150 chunks take a few flushes, not 150
    wfs = [uuid.uuid4() for _ in range(30)]

    async def follow(wf: uuid.UUID, writer: Coalescer) -> None:
        for j in range(5):
            await writer.submit(_lines(wf, f"chunk{j}", 2))

    async def run() -> int:
        async with _writer(database_url, window=3600) as (_, writer, stored):
            tasks = [asyncio.create_task(follow(wf, writer)) for wf in wfs]
            # the first flush went at once; each follow's second chunk now waits
            async with asyncio.timeout(20):
                while writer.waiting < len(wfs):
                    await asyncio.sleep(0.01)
            assert writer.flushes == 1
            for _ in range(4):  # the window ends (close() flushes what waits)
                await writer.close()
                async with asyncio.timeout(20):
                    while writer.waiting < len(wfs) and not all(t.done() for t in tasks):
                        await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
            assert sum(stored) == 300
            return writer.flushes

    assert asyncio.run(run()) == 5
    rows = _rows(database_url, "SELECT count(DISTINCT xmin::text), count(*) FROM log_lines"
                 " WHERE workflow_id = ANY(%s)", wfs)
    assert rows == [(5, 300)]


def test_tap_coalesce_a_follow_cancelled_while_its_chunk_waits_leaves_it_stored(database_url):
    # a follow is cancelled when its workflow loses its last follower or its pod goes; its
    # chunk stays in the flush (as group.py keeps a cancelled caller's batch), and close()
    # (Tap.stop) stores what waits before the pool closes
    wf = uuid.uuid4()

    async def run() -> None:
        async with _writer(database_url, window=3600) as (_, writer, stored):
            await writer.submit(_lines(wf, "first"))  # at once: the tap was quiet
            waiting = asyncio.create_task(writer.submit(_lines(wf, "second")))
            async with asyncio.timeout(20):
                while writer.waiting < 1:
                    await asyncio.sleep(0.01)
            waiting.cancel()
            await asyncio.wait([waiting])
            assert waiting.cancelled() and writer.flushes == 1
            await writer.close()
            assert stored == [10, 10]

    asyncio.run(run())
    rows = _rows(database_url, "SELECT message FROM log_lines WHERE workflow_id = %s"
                 " ORDER BY seq", wf)
    assert [m for (m,) in rows] == [f"first {i}" for i in range(10)] + [
        f"second {i}" for i in range(10)]


async def _waiting(writer: Coalescer, n: int) -> None:
    async with asyncio.timeout(20):
        while writer.waiting < n:
            await asyncio.sleep(0.01)


def test_tap_coalesce_a_quiet_sources_chunk_goes_before_the_window_at_most_once_per_quiet(
        database_url):
    # an hour's window and an hour's quiet: the busy source's second chunk waits for the
    # window; a source not heard from for `quiet` goes at once, taking it along; the next
    # quiet source finds the express flush spent and waits
    busy, quiet, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def run() -> None:
        async with _writer(database_url, window=3600, quiet=3600) as (_, writer, stored):
            await writer.submit(_lines(busy, "first"), source="busy")  # the tap was quiet
            second = asyncio.create_task(writer.submit(_lines(busy, "second"), source="busy"))
            await _waiting(writer, 1)
            assert (writer.flushes, writer.express) == (1, 0)
            async with asyncio.timeout(20):  # not the hour
                await writer.submit(_lines(quiet, "quiet"), source="quiet")
                await second  # it went with the quiet chunk
            assert (writer.flushes, writer.express) == (2, 1)
            third = asyncio.create_task(writer.submit(_lines(later, "later"), source="later"))
            await _waiting(writer, 1)
            assert (writer.flushes, writer.express) == (2, 1)
            await writer.close()
            await third
            assert stored == [10, 20, 10]

    asyncio.run(run())
    rows = _rows(database_url, "SELECT split_part(message, ' ', 1), count(DISTINCT xmin::text)"
                 " FROM log_lines WHERE workflow_id = ANY(%s) GROUP BY 1 ORDER BY 1",
                 [busy, quiet, later])
    assert rows == [("first", 1), ("later", 1), ("quiet", 1), ("second", 1)]
    xmins = _rows(database_url, "SELECT count(DISTINCT xmin::text) FROM log_lines"
                  " WHERE workflow_id = ANY(%s) AND split_part(message, ' ', 1) IN"
                  " ('second', 'quiet')", [busy, quiet])
    assert xmins == [(1,)]


def test_tap_coalesce_a_quiet_chunk_that_finds_the_express_spent_waits_for_the_next_one(
        database_url):
    # an hour's window, 0.2 s quiet: the second quiet source's chunk goes with the next
    # express flush, about 0.2 s on, not after the hour
    wfs = [uuid.uuid4() for _ in range(3)]

    async def run() -> None:
        async with _writer(database_url, window=3600, quiet=0.2) as (_, writer, stored):
            await writer.submit(_lines(wfs[0], "a"), source="a")  # the tap was quiet
            await writer.submit(_lines(wfs[1], "b"), source="b")  # express
            async with asyncio.timeout(20):
                await writer.submit(_lines(wfs[2], "c"), source="c")  # the next express
            assert (writer.flushes, writer.express) == (3, 2)
            assert stored == [10, 10, 10]

    asyncio.run(run())

