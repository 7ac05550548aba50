"""The feeds' live reads (follow/hub.py Feed.refresh): one statement, one round trip, for
every feed that asks at once.

read_snapshot (snapshot.py) takes a REPEATABLE READ transaction of six round trips; a
feed reads once per NOTIFY that names its workflow, and a NOTIFY names every workflow
its commit touched, so at 100 busy follows those reads were most of the service's time
(docs/performance.md, issue 22). The feeds a NOTIFY wakes ask in the same turn of the
event loop; LiveReads sends their reads as one statement (live.sql).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from reana_log_sse.store.db import load_sql
from reana_log_sse.store.errors import translated
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import MAX_READ_BYTES, Snapshot, StatusRow

__all__ = ["LiveRead", "LiveReads"]

_LIVE = "\n".join(x for x in load_sql("live.sql").splitlines() if not x.startswith("--"))

# One statement reads at most this many feeds, and at most about MAX_READ_BYTES of
# messages for all of them together (each gets its share, and at least MIN_SHARE, plus
# the line that crosses it): a read is sized in bytes however many feeds ask at once. A
# feed whose read was cut reads on from its horizon, as after any cut read.
MOST_FEEDS = 64
MIN_SHARE = 64 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class LiveRead:
    workflow_id: uuid.UUID
    after: int
    status_after: int
    limit: int


def _params(reads: Sequence[LiveRead], max_bytes: int) -> dict[str, Any]:
    """live.sql's parameters for `reads`, checked before any connection is taken."""
    if any(r.limit < 1 for r in reads):
        raise ValueError("a live read asks for at least one line")
    return {"wfs": [r.workflow_id for r in reads], "afters": [r.after for r in reads],
            "status_afters": [r.status_after for r in reads],
            "limits": [r.limit for r in reads], "bytes": max_bytes}


async def _execute(conn: psycopg.AsyncConnection[Any], params: dict[str, Any]) -> list[Any]:
    cur = await conn.execute(_LIVE, params, binary=True, prepare=True)
    return await cur.fetchall()


def _snapshots(reads: Sequence[LiveRead], rows: list[Any]) -> list[Snapshot | None]:
    found: list[Snapshot | None] = [None] * len(reads)
    for i, last_seq, status, status_age, horizon, seqs, *columns in rows:
        read = reads[i - 1]
        lines: list[Line] = []
        if seqs:
            kinds, job_ids, steps, streams, tss, messages, truncs = columns[:7]
            names = [str(read.workflow_id)] * len(seqs)
            lines = [Line(*r) for r in zip(seqs, names, kinds, job_ids, steps, streams,
                                           tss, messages, truncs, strict=True)]
        ids, after_seqs, s_jobs, s_steps, s_statuses = columns[7:]
        statuses = ([StatusRow(*r) for r in zip(ids, after_seqs, s_jobs, s_steps,
                                                s_statuses, strict=True)] if ids else [])
        # status ids grow with after_seq, so the withheld ones come last
        cursor = statuses[-1].id if statuses else read.status_after
        found[i - 1] = Snapshot(last_seq, status, status_age, horizon, lines, statuses,
                                cursor)
    return found


# The feeds' statements run on a connection of their own, on which PostgreSQL runs
# live.sql by its generic plan. With `plan_cache_mode = auto` it plans every execution
# afresh, even prepared (a custom plan, pruned to the workflow's days, looks cheaper):
# 1.1-1.3 ms of planning for 0.2-0.3 ms of execution on the bench's database; the
# generic plan prunes the daily partitions at run time, per workflow (the ts range comes
# from the workflows row inside the statement), and the read took 0.42 ms instead of
# 1.6-1.7 ms (docs/performance.md, issue 22). On the pool's connections the setting
# would reach every statement psycopg prepares, so it stays on this one.
GENERIC_PLAN = "-c plan_cache_mode=force_generic_plan"


class LiveReads:
    """Live reads that ask while none is being sent go out together: the first starts a
    statement at the next turn of the event loop, with every read asked by then (the
    feeds a NOTIFY woke), and reads asked while it runs go in the next one, as soon as
    it is back: one statement at a time, on one connection of its own (GENERIC_PLAN),
    opened when first needed and again after it failed, within the pool's timeout."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._waiting: list[tuple[LiveRead, asyncio.Future[Snapshot | None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.statements = 0  # sent (tests count them)

    async def read_many(self, reads: Sequence[LiveRead], *,
                        max_bytes: int = MAX_READ_BYTES) -> list[Snapshot | None]:
        """Each read as read_snapshot(after=, status_after=, limit=, max_bytes=) (no
        filters, no tail, no upto) would read it, all in one statement (live.sql): the
        lines after `after` up to the workflow's last_seq, the first `limit` of them and
        at most about `max_bytes` of messages, as Line objects; the statuses with id >
        status_after that come after no line past the horizon. None for an unknown
        workflow. (read() sends the reads asked together through here.)"""
        params = _params(reads, max_bytes)
        async with translated():
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    options = psycopg.conninfo.conninfo_to_dict(self.pool.conninfo).get(
                        "options", "")
                    # past connect_timeout psycopg raises OperationalError: unavailable
                    conn = self._conn = await psycopg.AsyncConnection.connect(
                        self.pool.conninfo, autocommit=True,
                        connect_timeout=max(1, round(self.pool.timeout)),
                        options=f"{options} {GENERIC_PLAN}".strip())
                rows = await _execute(conn, params)
            except BaseException:
                await self.close()  # the next read connects afresh
                raise
        return _snapshots(reads, rows)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def read(self, read: LiveRead) -> Snapshot | None:
        future: asyncio.Future[Snapshot | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((read, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="live-reads")
        return await future

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch = [(r, f) for r, f in self._waiting[:MOST_FEEDS] if not f.done()]
                del self._waiting[:MOST_FEEDS]  # done: its feed was cancelled meanwhile
                if not batch:
                    continue
                share = max(MAX_READ_BYTES // len(batch), MIN_SHARE)
                self.statements += 1
                try:
                    snaps = await self.read_many([r for r, _ in batch], max_bytes=share)
                except Exception as exc:  # each feed logs it and retries (hub.py)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (shutdown): no feed waits forever
                    for _, future in batch:
                        future.cancel()
                    raise
                for (_, future), snap in zip(batch, snaps, strict=True):
                    if not future.done():
                        future.set_result(snap)
        finally:
            self._sender = None
            for _, future in self._waiting:  # cancelled (shutdown): they ask again
                future.cancel()
            self._waiting.clear()
