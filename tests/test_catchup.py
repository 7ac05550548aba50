"""Catch-up reads (Follower.catch_up): frames joined by PostgreSQL, cut at the statuses,
across day partitions, filtered, resumed: the same frames in the same order as the
lines and statuses the store holds, each line once."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from typing import Any

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from reana_log_sse.follow.stream import Follower, status_frame
from reana_log_sse.metrics import Metrics
from reana_log_sse.store import db, partitions
from reana_log_sse.store.embedded import create_database
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import Filters, Snapshot, StatusRow, frame_end
from reana_log_sse.store.store import PreparedLine, Store

WF = "6b4bf6b1-4a2c-4f46-9d8a-1df2c9f0c001"
_TS = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
_messages = st.sampled_from(["", "x", "two\n\nblank lines", "event: log\nid: 1\n\n",
                             "\\n\\n", 'quote " \\', "é\u2028", "y" * 300])


def _line(seq: int, message: str) -> Line:
    return Line(seq, WF, "job", "reana-run-job-1", "fit", "stdout", _TS, message, False)


@settings(max_examples=300, deadline=None)
@given(gaps=st.lists(st.integers(1, 3), max_size=30), messages=st.data(),
       cuts=st.lists(st.integers(-1, 100), max_size=8))
def test_catchup_frame_parts_cut_joined_frames_where_line_parts_cut(gaps, messages, cuts):
    seqs, seq = [], 0
    for gap in gaps:
        seq += gap
        seqs.append(seq)
    lines = [_line(s, messages.draw(_messages)) for s in seqs]
    statuses = [StatusRow(i + 1, after, None, None, "running")
                for i, after in enumerate(sorted(cuts))]
    joined = b"".join(line.frame for line in lines)
    by_lines = Snapshot(seq, None, None, seq, lines, statuses, len(statuses))
    by_frames = Snapshot(seq, None, None, seq, [], statuses, len(statuses),
                         frames=[(seq, joined)] if lines else [], frame_count=len(lines))
    expected = [(b"".join(line.frame for line in part), status)
                for part, status in by_lines.parts()]
    assert list(by_frames.frame_parts()) == expected
    starts = [len(b"".join(x.frame for x in lines[:k])) for k in range(len(lines) + 1)]
    for cut in cuts:  # and searched from any frame's start
        for k in range(len(lines)):
            first_past = next((j for j in range(k, len(lines)) if lines[j].seq > cut),
                              len(lines))
            assert frame_end(joined, cut, starts[k]) == starts[first_past]

def _day(days: int, hour: int = 12, microsecond: int = 0) -> dt.datetime:
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + dt.timedelta(days=days, hours=hour, microseconds=microsecond)


async def _store_workflow(url: str, wf: uuid.UUID) -> tuple[list[Line], list[StatusRow]]:
    """A workflow whose lines lie in four day partitions, straddle midnight, and come in
    id order that is not timestamp order (a late line of an older day); statuses between."""
    await partitions.maintain(url, partitions.Window.around(
        dt.datetime.now(dt.UTC).date(), retention_days=5, ahead_days=1))
    stamps = ([_day(-3, h) for h in range(0, 24, 3)]
              + [_day(-2, 23, 999_999 + k) for k in range(-3, 3)]  # across midnight
              + [_day(-1, 1)] + [_day(-4, 5)]  # a late line from an older day
              + [_day(0, h) for h in range(6)] + [_day(-1, 23, 999_999)] + [_day(0, 7)])
    rows, lines = [], []
    for i, ts in enumerate(stamps * 6):
        seq = 2 * i + 1 + (i % 3 == 0)  # gaps, as duplicates of a batch leave
        kind, job = ("job", f"job-{i % 2}") if i % 5 else ("workflow", None)
        message = f"line {seq} {'z' * (i % 7 * 40)}"
        rows.append((wf, seq, ts, uuid.uuid4(), kind, job, None, "pod", "c", "stdout",
                     message, False))
        lines.append(Line(seq, str(wf), kind, job, None, "stdout", ts, message, False))
    last = lines[-1].seq
    afters = [0, 1, 2, 2, 40, 41, 99, 100, 101, last - 1, last, last]
    async with await psycopg.AsyncConnection.connect(db.conninfo(url)) as conn:
        await conn.execute("INSERT INTO workflows (workflow_id, last_seq, ts_first, ts_last)"
                           " VALUES (%s, %s, %s, %s)", (wf, last, min(stamps), max(stamps)))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step,"
                " pod, container, stream, message, truncated)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
            statuses = []
            for k, after in enumerate(afters):
                await cur.execute(
                    "INSERT INTO status_events (workflow_id, after_seq, job_id, step, status)"
                    " VALUES (%s, %s, %s, NULL, %s) RETURNING id",
                    (wf, after, f"job-{k % 2}", "running"))
                row = await cur.fetchone()
                assert row is not None
                statuses.append(StatusRow(row[0], after, f"job-{k % 2}", None, "running"))
        await conn.commit()
    return lines, statuses


def _expected(wf: uuid.UUID, lines: list[Line], statuses: list[StatusRow], cursor: int,
              status_cursor: int, filters: Filters) -> bytes:
    """Each line past the cursor that matches, once, in id order; each status past its
    cursor after the lines committed before it."""
    out, pending = [], [s for s in statuses if s.id > status_cursor]
    for line in lines:
        while pending and pending[0].after_seq < line.seq:
            out.append(status_frame(wf, pending.pop(0)))
        if line.seq > cursor and filters.matches(line):
            out.append(line.frame)
    out += [status_frame(wf, s) for s in pending]
    return b"".join(out)


def test_catchup_across_day_partitions_with_statuses_filters_and_resume(database_url):
    async def run() -> None:
        wf = uuid.uuid4()
        lines, statuses = await _store_workflow(database_url, wf)
        pool = db.make_pool(database_url, max_size=4, timeout=10)
        await pool.open()
        store = Store(pool)
        cases: list[tuple[int, int, Filters]] = [
            (0, 0, Filters()),
            (lines[20].seq, statuses[4].id, Filters()),  # resumed from an older day's line
            (lines[9].seq, statuses[1].id, Filters(jobs=("job-1",))),
            (0, 0, Filters(kind="workflow")),
            (lines[-1].seq - 1, statuses[-3].id, Filters()),
        ]
        reads: dict[int, int] = {}
        try:
            # 16-line reads, and few; to `None` (now): reads of up to n lines one after
            # another; to the last id: an unfiltered follower's ranges of ids, several
            # at once
            for budget, to_last in itertools.product((8 * 1024, 8 * 1024 * 1024),
                                                     (False, True)):
                for cursor, status_cursor, filters in cases:
                    metrics = Metrics()
                    follower = Follower(store, wf, filters, cursor, status_cursor, 2000,
                                        metrics, budget=budget)
                    until = lines[-1].seq if to_last else None
                    got = b"".join([data async for data in follower.catch_up(until)])
                    assert got == _expected(wf, lines, statuses, cursor, status_cursor,
                                            filters), (budget, to_last, cursor, filters)
                    assert follower.cursor == lines[-1].seq
                    assert follower.status_cursor == statuses[-1].id
                    reads[budget] = reads.get(budget, 0) + _count(metrics)
        finally:
            await pool.close()
        # the small budget cut it into many reads, statuses falling inside and between
        assert reads[8 * 1024] > 2 * reads[8 * 1024 * 1024]

    asyncio.run(run())


def _count(metrics: Any) -> int:
    return int(metrics.catchup_reads._value.get())


async def _catch_up_all(url: str, wf: uuid.UUID) -> list[int]:
    """The ids of every line a new follower's catch-up of the workflow sends."""
    pool = db.make_pool(url, max_size=4, timeout=10)
    await pool.open()
    try:
        store = Store(pool)
        snap = await store.snapshot(wf, limit=0)
        assert snap is not None
        got = []
        for until in (None, snap.last_seq):  # both catch-up paths
            follower = Follower(store, wf, Filters(), 0, 0, 2000, Metrics(), budget=8 * 1024)
            data = b"".join([d async for d in follower.catch_up(until)])
            got.append([int(x.split(b"\n", 1)[0]) for x in data.split(b"\nid: ")[1:]])
        assert got[0] == got[1]
        return got[0]
    finally:
        await pool.close()


def _prepared(wf: uuid.UUID, stamps: list[dt.datetime]) -> list[PreparedLine]:
    return [PreparedLine(wf, i + 1, ts, uuid.uuid4(), "job", "j", None, "p", "c", "stdout",
                         f"line {i} at {ts}", False, None) for i, ts in enumerate(stamps)]


def test_catchup_reads_every_day_a_workflow_wrote_to_through_ingest(database_url):
    """Ingest widens the workflow's range of days (allocate.sql): a batch of today, then
    one of lines from three days ago (a late shipper), then one straddling midnight."""
    async def run() -> None:
        await partitions.maintain(database_url, partitions.Window.around(
            dt.datetime.now(dt.UTC).date(), retention_days=5, ahead_days=1))
        wf = uuid.uuid4()
        pool = db.make_pool(database_url, max_size=2, timeout=10)
        await pool.open()
        try:
            store = Store(pool)
            for stamps in ([_day(0, 9), _day(0, 10)], [_day(-3, 8), _day(-3, 9)],
                           [_day(-2, 23, 999_999), _day(-1, 0)]):
                await store.ingest(_prepared(wf, stamps))
        finally:
            await pool.close()
        assert await _catch_up_all(database_url, wf) == [1, 2, 3, 4, 5, 6]

    asyncio.run(run())


def test_catchup_workflow_stored_before_migration_0004_keeps_every_line(pg_admin_url):
    """A workflow whose lines an older version stored (no range of days yet) is read
    whole after the upgrade, also once a new batch of today gave it a range."""
    async def run() -> None:
        name = f"t_before_0004_{uuid.uuid4().hex[:8]}"
        create_database(pg_admin_url, name)
        url = pg_admin_url.replace("/postgres?", f"/{name}?")
        wf = uuid.uuid4()
        async with await psycopg.AsyncConnection.connect(db.conninfo(url)) as conn:
            await conn.execute("CREATE TABLE reana_log_sse_migrations (version integer"
                               " PRIMARY KEY, name text NOT NULL, applied_at timestamptz"
                               " NOT NULL DEFAULT now())")
            for version, mname, text in db.migrations():
                if version < 4:
                    await conn.execute(text)  # type: ignore[arg-type]
                    await conn.execute("INSERT INTO reana_log_sse_migrations (version, name)"
                                       " VALUES (%s, %s)", (version, mname))
            await conn.commit()
        await partitions.maintain(url, partitions.Window.around(
            dt.datetime.now(dt.UTC).date(), retention_days=5, ahead_days=1))
        async with await psycopg.AsyncConnection.connect(db.conninfo(url)) as conn:
            await conn.execute("INSERT INTO workflows (workflow_id, last_seq) VALUES (%s, 3)",
                               (wf,))
            for seq, ts in ((1, _day(-4, 1)), (2, _day(-1, 23)), (3, _day(0, 1))):
                await conn.execute(
                    "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, stream,"
                    " message) VALUES (%s, %s, %s, %s, 'job', 'stdout', 'old')",
                    (wf, seq, ts, uuid.uuid4()))
            await conn.commit()
        assert (await db.migrate(url))[0] == 4  # and the later ones (0005: job_workflows)
        assert await _catch_up_all(url, wf) == [1, 2, 3]
        pool = db.make_pool(url, max_size=2, timeout=10)
        await pool.open()
        try:
            await Store(pool).ingest(_prepared(wf, [_day(0, 2)]))
        finally:
            await pool.close()
        assert await _catch_up_all(url, wf) == [1, 2, 3, 4]

    asyncio.run(run())


def test_catchup_to_a_known_id_jumps_a_gap_of_ids_in_a_few_reads(database_url):
    """Ids whose lines are gone (a dropped day, duplicates of a retried batch): the ranges
    of ids do not walk the gap range by range."""
    async def run() -> None:
        await partitions.maintain(database_url, partitions.Window.around(
            dt.datetime.now(dt.UTC).date(), retention_days=2, ahead_days=1))
        wf = uuid.uuid4()
        seqs = [1, 2, 3, *range(1_000_001, 1_000_011)]
        async with await psycopg.AsyncConnection.connect(db.conninfo(database_url)) as conn:
            await conn.execute("INSERT INTO workflows (workflow_id, last_seq, ts_first, ts_last)"
                               " VALUES (%s, %s, %s, %s)", (wf, seqs[-1], _day(0, 1), _day(0, 1)))
            for seq in seqs:
                await conn.execute(
                    "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, stream,"
                    " message) VALUES (%s, %s, %s, %s, 'job', 'stdout', 'x')",
                    (wf, seq, _day(0, 1), uuid.uuid4()))
            await conn.commit()
        pool = db.make_pool(database_url, max_size=4, timeout=10)
        await pool.open()
        try:
            metrics = Metrics()
            follower = Follower(Store(pool), wf, Filters(), 0, 0, 2000, metrics,
                                budget=8 * 1024)
            data = b"".join([d async for d in follower.catch_up(seqs[-1])])
        finally:
            await pool.close()
        got = [int(x.split(b"\n", 1)[0]) for x in data.split(b"\nid: ")[1:]]
        assert got == seqs
        assert _count(metrics) < 10  # 2,000-id ranges would take 500 reads

    asyncio.run(run())
