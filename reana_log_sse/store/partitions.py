"""Daily partitions of log_lines: created ahead, dropped past the retention."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import re
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger("reana_log_sse")

_NAME = re.compile(r"^log_lines_p(\d{8})$")
_MAINTENANCE_LOCK = 7_351_002  # pg_try_advisory_lock key: one replica maintains at a time


def partition_name(day: dt.date) -> str:
    return f"log_lines_p{day:%Y%m%d}"


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Window:
    """The days that have partitions: [first, last] inclusive."""

    first: dt.date
    last: dt.date

    @classmethod
    def around(cls, today: dt.date, *, retention_days: int, ahead_days: int) -> Window:
        return cls(today - dt.timedelta(days=retention_days - 1), today + dt.timedelta(ahead_days))

    def days(self) -> list[dt.date]:
        n = (self.last - self.first).days + 1
        return [self.first + dt.timedelta(days=i) for i in range(n)]

    @functools.cached_property
    def epoch_bounds(self) -> tuple[float, float]:
        """[start, end) of the window as epoch seconds (the ingest's per-line check)."""
        end = self.last + dt.timedelta(days=1)
        return day_start(self.first).timestamp(), day_start(end).timestamp()

    def contains(self, ts: dt.datetime) -> bool:
        start, end = self.epoch_bounds
        return start <= ts.timestamp() < end


@dataclasses.dataclass
class MaintenanceReport:
    created: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)
    rejected_deleted: int = 0
    skipped: bool = False


async def existing(conn: psycopg.AsyncConnection) -> dict[str, bool]:
    """Attached partitions of log_lines -> whether a concurrent detach is pending."""
    cur = await conn.execute(
        "SELECT c.relname, i.inhdetachpending FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'log_lines'::regclass"
    )
    return {name: pending for name, pending in await cur.fetchall()}


async def maintain(url: str, window: Window, *, wait: bool = False) -> MaintenanceReport:
    """Create the window's missing partitions and drop those entirely before it.
    wait: when another process is maintaining, wait for it (then find its partitions)
    instead of skipping; a process starting, or an ingest that met a missing partition,
    must not go on before the partitions exist.

    Runs on its own autocommit connection: partitions are made with CREATE TABLE + ATTACH
    (SHARE UPDATE EXCLUSIVE on log_lines, which inserts and reads do not wait for) and
    removed with DETACH .. CONCURRENTLY, which waits for readers instead of blocking them.
    """
    from reana_log_sse.store.db import conninfo

    report = MaintenanceReport()
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        if wait:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_MAINTENANCE_LOCK,))
            row: tuple[Any, ...] | None = (True,)
        else:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_MAINTENANCE_LOCK,))
            row = await cur.fetchone()
        if not (row and row[0]):
            report.skipped = True
            return report
        try:
            attached = await existing(conn)
            for day in window.days():
                name = partition_name(day)
                if name not in attached:
                    await _create(conn, name, day)
                    report.created.append(name)
            for name, pending in sorted(attached.items()):
                match = _NAME.match(name)
                if not match:
                    continue
                day = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
                if day < window.first:
                    await _drop(conn, name, pending)
                    report.dropped.append(name)
            cur = await conn.execute(
                "DELETE FROM rejected_events WHERE received_at < %s", (day_start(window.first),)
            )
            report.rejected_deleted = cur.rowcount
            # jobs of workflows whose every line lay in the days just dropped (sql/0005;
            # a database not migrated that far has none)
            cur = await conn.execute("SELECT to_regclass('job_workflows') IS NOT NULL")
            if (await cur.fetchone() or (False,))[0]:
                await conn.execute(
                    "DELETE FROM job_workflows j USING workflows w"
                    " WHERE w.workflow_id = j.workflow_id AND w.ts_last < %s",
                    (day_start(window.first),))
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MAINTENANCE_LOCK,))
    if report.created or report.dropped:
        logger.info("partitions: created %s, dropped %s", report.created, report.dropped)
    return report


async def _create(conn: psycopg.AsyncConnection, name: str, day: dt.date) -> None:
    table = sql.Identifier(name)
    async with conn.transaction():
        await conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE log_lines INCLUDING DEFAULTS)").format(
                table
            )
        )
        await conn.execute(
            sql.SQL(
                "ALTER TABLE log_lines ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
            ).format(
                table,
                sql.Literal(day_start(day)),
                sql.Literal(day_start(day + dt.timedelta(days=1))),
            )
        )


async def _drop(conn: psycopg.AsyncConnection, name: str, pending: bool) -> None:
    table = sql.Identifier(name)
    if pending:  # an earlier concurrent detach was interrupted
        await conn.execute(
            sql.SQL("ALTER TABLE log_lines DETACH PARTITION {} FINALIZE").format(table)
        )
    else:
        await conn.execute(
            sql.SQL("ALTER TABLE log_lines DETACH PARTITION {} CONCURRENTLY").format(table)
        )
    await conn.execute(sql.SQL("DROP TABLE {}").format(table))
