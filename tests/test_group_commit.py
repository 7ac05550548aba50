"""Group commit (reana_log_sse/store/group.py): batches that arrive while a transaction is in
flight share the next one, and a failed group stores each of its batches alone.

A group is made to form without timing: a test transaction holds a workflow's row lock,
so the first batch's transaction waits on it (seen in pg_stat_activity) and the batches
posted meanwhile queue for the next group (seen in reana_log_sse_ingest_group_waiting)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from reana_log_sse.ingest.prepare import prepare
from reana_log_sse.store import db, partitions
from reana_log_sse.store.errors import BadInput
from reana_log_sse.store.store import PreparedLine
from tests.helpers import Follower, event, post_batch, store_on


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _lock_waiters(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                           " current_database() AND wait_event_type = 'Lock'").fetchone()
        return int(row[0]) if row else 0


@contextlib.contextmanager
def _locked(database_url: str, workflow_id: uuid.UUID) -> Iterator[None]:
    """The workflow's row locked, as an ingest transaction in flight holds it."""
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO workflows (workflow_id) VALUES (%s) ON CONFLICT DO NOTHING",
                     (workflow_id,))
        conn.commit()
        conn.execute("SELECT 1 FROM workflows WHERE workflow_id = %s FOR UPDATE", (workflow_id,))
        yield
        conn.commit()


async def _row_lock(database_url: str, workflow_id: uuid.UUID) -> psycopg.AsyncConnection[Any]:
    """A connection whose open transaction row-locks the (new) workflow, as an ingest
    transaction in flight holds it; commit() releases it."""
    conn = await psycopg.AsyncConnection.connect(db.conninfo(database_url))
    await conn.execute("INSERT INTO workflows (workflow_id) VALUES (%s)", (workflow_id,))
    await conn.commit()
    await conn.execute("SELECT 1 FROM workflows WHERE workflow_id = %s FOR UPDATE",
                       (workflow_id,))
    return conn


def _metric(server: Any, name: str, label: str = "") -> float:
    text = server.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + (f'{{how="{label}"}}' if label else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _grouped(server: Any, blocker: list[dict[str, Any]], *queued: list[dict[str, Any]],
             locked: uuid.UUID) -> list[Any]:
    """Post `blocker` while `locked` is row-locked, then each of `queued` while it waits
    (in this order), then release the lock: `queued` form one group. The answers."""
    with ThreadPoolExecutor(1 + len(queued)) as threads:
        with _locked(server.database_url, locked):
            futures = [threads.submit(post_batch, server.url, server.ingest_token, blocker)]
            _wait(lambda: _lock_waiters(server.database_url) == 1)
            for n, batch in enumerate(queued, 1):
                futures.append(threads.submit(post_batch, server.url, server.ingest_token,
                                              batch))
                _wait(lambda n=n: _metric(server, "reana_log_sse_ingest_group_waiting") == n)
        return [f.result().json() for f in futures]


def test_group_commit_stores_batches_that_arrive_together_in_one_transaction(live_server):
    s = live_server
    wf = uuid.uuid4()
    a, b, c = ([event(wf, f"{name} {i}") for i in range(20)] for name in "abc")
    b_sent = [*b, {"workflow_id": str(wf), "kind": "job"}]  # and an invalid event
    answers = _grouped(s, a, b_sent, c, locked=wf)
    assert answers == [{"accepted": 20, "duplicates": 0, "rejected": 0},
                       {"accepted": 20, "duplicates": 0, "rejected": 1},
                       {"accepted": 20, "duplicates": 0, "rejected": 0}]
    rows = s.sql("SELECT message, seq, xmin::text FROM log_lines WHERE workflow_id = %s"
                 " ORDER BY seq", (wf,))
    assert [r[0] for r in rows] == [e["message"] for e in a + b + c]  # in arrival order
    assert [r[1] for r in rows] == list(range(1, 61))
    first, group = {r[2] for r in rows[:20]}, {r[2] for r in rows[20:]}
    assert len(first) == 1 and len(group) == 1 and first != group  # b and c: one transaction
    assert s.sql("SELECT count(*) FROM rejected_events") == [(1,)]
    assert _metric(s, "reana_log_sse_ingest_groups_total", "together") == 1
    assert _metric(s, "reana_log_sse_ingest_group_batches_total", "together") == 2


def test_group_commit_a_batch_with_a_stored_line_is_stored_alone_and_the_others_once(
        live_server):
    s = live_server
    wf, other = uuid.uuid4(), uuid.uuid4()
    old = [event(wf, f"old {i}") for i in range(5)]
    assert post_batch(s.url, s.ingest_token, old).json()["accepted"] == 5
    a = [event(wf, f"a {i}") for i in range(10)]
    retried = old + [event(wf, f"new {i}") for i in range(5)]  # a retry with 5 more lines
    c = [event(other, f"c {i}") for i in range(10)] + [event(wf, "c last")]
    answers = _grouped(s, a, retried, c, locked=wf)
    assert answers == [{"accepted": 10, "duplicates": 0, "rejected": 0},
                       {"accepted": 5, "duplicates": 5, "rejected": 0},
                       {"accepted": 11, "duplicates": 0, "rejected": 0}]
    rows = s.sql("SELECT message FROM log_lines WHERE workflow_id = %s ORDER BY seq", (wf,))
    expected = [e["message"] for e in old + a + retried[5:]] + ["c last"]
    assert [r[0] for r in rows][:15] == expected[:15]  # before the group, in order
    assert sorted(r[0] for r in rows) == sorted(expected)  # each once
    assert s.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s", (other,)) == [(10,)]
    assert _metric(s, "reana_log_sse_ingest_groups_total", "split") == 1
    assert _metric(s, "reana_log_sse_ingest_groups_total", "together") == 0


def test_group_commit_ids_increase_in_commit_order_across_two_servers(server_factory):
    one, two = server_factory(), server_factory()
    wfs = [uuid.uuid4() for _ in range(3)]
    sent: list[str] = []

    def batch(tag: str) -> list[dict[str, Any]]:
        lines = [event(wfs[i % 3], f"{tag} {i}") for i in range(30)]
        sent.extend(e["message"] for e in lines if e["workflow_id"] == str(wfs[0]))
        return lines

    one.sql("INSERT INTO workflows (workflow_id) VALUES (%s)", (wfs[0],))

    async def run() -> Follower:
        url = f"{one.url}/api/workflows/{wfs[0]}/logs/stream"
        async with Follower(url) as follower:
            def load() -> None:
                with ThreadPoolExecutor(6) as threads, _locked(one.database_url, wfs[0]):
                    # a group forms on each server, then both race for the same workflows
                    for k, server in enumerate((one, two)):
                        threads.submit(post_batch, server.url, server.ingest_token,
                                       batch(f"block{k}"))
                        _wait(lambda k=k: _lock_waiters(one.database_url) == k + 1)
                    for server in (one, two):
                        for n in (1, 2):
                            threads.submit(post_batch, server.url, server.ingest_token,
                                           batch(f"{server.port} q{n}"))
                            _wait(lambda n=n, server=server: _metric(
                                server, "reana_log_sse_ingest_group_waiting") == n)
                with ThreadPoolExecutor(4) as threads:  # and then without a lock
                    for k in range(16):
                        threads.submit(post_batch, (one, two)[k % 2].url, one.ingest_token,
                                       batch(f"free {k}"))

            await asyncio.to_thread(load)
            await follower.wait_logs(len(sent))
            return follower

    follower = asyncio.run(run())
    ids = follower.ids
    assert ids == sorted(set(ids))  # strictly increasing, as committed
    assert sorted(line["message"] for line in follower.logs) == sorted(sent)  # each once
    for server in (one, two):
        assert _metric(server, "reana_log_sse_ingest_groups_total", "together") >= 1
    rows = one.sql("SELECT xmin::text, min(seq), max(seq) FROM log_lines"
                   " WHERE workflow_id = %s GROUP BY 1 ORDER BY 2", (wfs[0],))
    for (_, _, top), (_, bottom, _) in zip(rows, rows[1:], strict=False):
        assert top < bottom  # a transaction's ids are one run: none interleave


# -- the Store's committer, driven directly --------------------------------------------


def _lines(wf: uuid.UUID, tag: str, n: int = 10) -> list[PreparedLine]:
    today = dt.datetime.now(dt.UTC).date()
    window = partitions.Window.around(today, retention_days=2, ahead_days=1)
    lines, rejected = prepare([event(wf, f"{tag} {i}") for i in range(n)],
                              max_line_bytes=65536, window=window)
    assert not rejected
    return lines


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("with_bad", [False, True], ids=["commits", "fails"])
def test_group_commit_a_cancelled_caller_leaves_its_group_whole(database_url, with_bad):
    wf = uuid.uuid4()
    bad = [line._replace(message="NUL \x00 here") for line in _lines(wf, "bad", 3)]
    unretrieved: list[dict[str, Any]] = []

    async def run() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
        async with store_on(database_url) as store, \
                await _row_lock(database_url, wf) as lock:
            assert store.group is not None
            first = asyncio.create_task(store.ingest(_lines(wf, "first")))
            await _until(lambda: _lock_waiters(database_url) == 1)
            queued = [_lines(wf, "gone"), *([bad] if with_bad else []), _lines(wf, "last")]
            tasks = []
            for n, lines in enumerate(queued, 1):
                tasks.append(asyncio.create_task(store.ingest(lines)))
                await _until(lambda n=n: store.group.waiting == n)
            for task in tasks[:-1]:  # their clients left: their batches stay in the group
                task.cancel()
            await asyncio.wait(tasks[:-1])
            assert all(t.cancelled() for t in tasks[:-1])
            await lock.commit()
            answers = [await first, await tasks[-1]]
        gc.collect()
        return answers

    answers = asyncio.run(run())
    assert [a.accepted for a in answers] == [10, 10]
    assert unretrieved == []  # no "Future exception was never retrieved"
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT split_part(message, ' ', 1), count(*),"
                            " count(DISTINCT xmin::text) FROM log_lines"
                            " WHERE workflow_id = %s GROUP BY 1", (wf,)).fetchall()
        xmins = conn.execute("SELECT count(DISTINCT xmin::text) FROM log_lines WHERE"
                             " workflow_id = %s AND message NOT LIKE 'first%%'",
                             (wf,)).fetchone()
    assert sorted(rows) == [("first", 10, 1), ("gone", 10, 1), ("last", 10, 1)]
    # committed: the group's one transaction; failed (the NUL): each batch alone
    assert xmins == ((2,) if with_bad else (1,))


def test_group_commit_a_batch_the_database_refuses_fails_alone(database_url):
    wf, other = uuid.uuid4(), uuid.uuid4()

    async def run() -> list[Any]:
        async with store_on(database_url) as store, \
                await _row_lock(database_url, wf) as lock:
            assert store.group is not None
            first = asyncio.create_task(store.ingest(_lines(wf, "first")))
            await _until(lambda: _lock_waiters(database_url) == 1)
            bad = [line._replace(message="NUL \x00 here") for line in _lines(other, "bad")]
            tasks = []
            for n, (lines, rejected) in enumerate([(bad, [("why", "{}")]),
                                                   (_lines(wf, "good"), [])], 1):
                tasks.append(asyncio.create_task(store.ingest(lines, rejected)))
                await _until(lambda n=n: store.group.waiting == n)
            await lock.commit()
            return await asyncio.gather(first, *tasks, return_exceptions=True)

    first, refused, good = asyncio.run(run())
    assert isinstance(refused, BadInput), refused
    assert (first.accepted, good.accepted) == (10, 10)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                            (wf,)).fetchone() == (20,)
        assert conn.execute("SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                            (other,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM rejected_events").fetchone() == (0,)


def test_group_commit_a_caller_cancelled_while_its_group_is_in_flight_is_stored(database_url):
    wf, held = uuid.uuid4(), uuid.uuid4()

    async def run() -> Any:
        async with store_on(database_url) as store, await _row_lock(database_url, wf) as lock_wf, \
                await _row_lock(database_url, held) as lock_held:
            assert store.group is not None
            first = asyncio.create_task(store.ingest(_lines(wf, "first")))
            await _until(lambda: _lock_waiters(database_url) == 1)
            gone = asyncio.create_task(store.ingest(_lines(held, "gone")
                                                    + _lines(wf, "gone-too", 2)))
            await _until(lambda: store.group.waiting == 1)
            last = asyncio.create_task(store.ingest(_lines(wf, "last")))
            await _until(lambda: store.group.waiting == 2)
            await lock_wf.commit()
            assert (await first).accepted == 10
            # the group [gone, last] is in flight, its allocation waiting for `held`
            await _until(lambda: store.group.waiting == 0
                         and _lock_waiters(database_url) == 1)
            gone.cancel()
            await asyncio.wait([gone])
            assert gone.cancelled()
            await lock_held.commit()
            return await last

    last = asyncio.run(run())
    assert last.accepted == 10
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT split_part(message, ' ', 1), count(*),"
                            " count(DISTINCT xmin::text) FROM log_lines"
                            " WHERE message NOT LIKE 'first%%' GROUP BY 1").fetchall()
        xmins = conn.execute("SELECT count(DISTINCT xmin::text) FROM log_lines"
                             " WHERE message NOT LIKE 'first%%'").fetchone()
    # the cancelled caller's batch was committed with its group, in one transaction
    assert sorted(rows) == [("gone", 10, 1), ("gone-too", 2, 1), ("last", 10, 1)]
    assert xmins == (1,)


def test_group_commit_close_waits_for_the_pending_groups(database_url):
    wf = uuid.uuid4()

    async def run() -> list[Any]:
        async with store_on(database_url) as store, \
                await _row_lock(database_url, wf) as lock:
            assert store.group is not None
            tasks = [asyncio.create_task(store.ingest(_lines(wf, "first")))]
            await _until(lambda: _lock_waiters(database_url) == 1)
            tasks.append(asyncio.create_task(store.ingest(_lines(wf, "queued"))))
            await _until(lambda: store.group.waiting == 1)
            closing = asyncio.create_task(store.close())  # as the lifespan's shutdown
            await asyncio.sleep(0)
            assert not closing.done()  # both batches are still pending
            await lock.commit()
            await closing
            assert all(t.done() for t in tasks)  # answered before close() returned
            return [t.result().accepted for t in tasks]

    assert asyncio.run(run()) == [10, 10]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                            (wf,)).fetchone() == (20,)
