"""Storage: the ingest transaction and status changes; snapshot reads are in snapshot.py
(re-exported here)."""

from __future__ import annotations

import datetime as dt
import operator
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from reana_log_sse.metrics import Metrics
from reana_log_sse.store.db import NOTIFY_CHANNEL, load_sql
from reana_log_sse.store.errors import PartitionMissing, translated
from reana_log_sse.store.group import GroupCommit
from reana_log_sse.store.live import LiveRead, LiveReads
from reana_log_sse.store.rows import (
    IngestResult,
    PreparedLine,
    Spans,
    copy_lines,
    job_spans,
    job_steps,
    stage_lines,
    widen_job_spans,
)
from reana_log_sse.store.snapshot import (
    TERMINAL_STATUSES,
    Filters,
    Snapshot,
    read_opening,
    read_snapshot,
)

_NOTIFY_MAX = 7900  # PostgreSQL caps a payload at 8000 bytes
_ALLOCATE = load_sql("allocate.sql")
_ADOPT = load_sql("adopt.sql")
_POD_STATUS_CURRENT = load_sql("pod_status_current.sql")
# how far along a status is; a pod-derived status is stored only when it is further along
# than the current one (terminal ones are final): replicas and relists store it once
_RANK = {"created": 0, "queued": 1, "pending": 2, "running": 3}
_FINAL = 4


class Handoff(Protocol):
    """Where committed lines go to this process's feeds without a read
    (follow/handoff.py Handoffs)."""

    def offer(self, parts: Sequence[tuple[Sequence[PreparedLine], dict[uuid.UUID, int]]],
              steps: dict[tuple[uuid.UUID, str], str], last: dict[uuid.UUID, int],
              counts: dict[uuid.UUID, int]) -> str | None: ...

    def withdraw(self, token: str) -> None: ...


class Store:
    def __init__(self, pool: AsyncConnectionPool, *,
                 create_partitions: Callable[[], Awaitable[Any]] | None = None,
                 group_lines: int = 0, metrics: Metrics | None = None) -> None:
        """create_partitions: run when a line's day has no partition yet, before the one
        retry of that batch (every ingest path: Vector's, ship's, the tap's).
        group_lines: group commit (group.py) up to this many lines; 0: each batch alone."""
        self.pool = pool
        self.create_partitions = create_partitions
        self.live_reads = LiveReads(pool)  # the feeds' reads, together (live.py)
        # this process's feeds, offered the lines of each commit (follow/handoff.py)
        self.handoff: Handoff | None = None
        self.group: GroupCommit | None = None
        if group_lines > 0:

            self.group = GroupCommit(self, max_lines=group_lines, metrics=metrics)

    async def close(self) -> None:
        """Finish the pending group commits (before the pool closes)."""
        if self.group is not None:
            await self.group.close()
        await self.live_reads.close()

    # -- writes ------------------------------------------------------------------------

    async def ingest(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]] = (),
        *, of_record: bool = True,
    ) -> IngestResult:
        """Store a batch with its NOTIFY; answers after the commit. of_record: the batch
        comes from the path of record (Vector, ship), whose copy of a line the live tap
        stored first replaces the tap's provisional fields (adopt.sql); the tap passes
        False. With group commit, batches arriving together share a transaction."""
        if self.group is not None:
            return await self.group.submit(lines, rejected, of_record)
        return await self.ingest_alone(lines, rejected, of_record=of_record)

    async def ingest_alone(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]] = (),
        *, of_record: bool = True,
    ) -> IngestResult:
        """Store one batch in its own transaction with one NOTIFY."""
        try:
            return await self._ingest_once(lines, rejected, of_record)
        except PartitionMissing:
            if self.create_partitions is None:
                raise
            await self.create_partitions()
            return await self._ingest_once(lines, rejected, of_record)

    async def _ingest_once(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]],
        of_record: bool,
    ) -> IngestResult:
        try:
            committed_at = await self.ingest_together([(lines, rejected)])
        except psycopg.errors.UniqueViolation:
            # some lines are stored already (a retry, or the tap's copy): that transaction
            # left nothing; the staged path skips exactly the stored lines
            return await self._ingest_staged(lines, rejected, of_record)
        return IngestResult(len(lines), 0, len(rejected), committed_at)

    async def ingest_together(
        self, batches: Sequence[tuple[Sequence[PreparedLine], Sequence[tuple[str, str]]]],
    ) -> float:
        """The direct path, for one batch or a group of them (group.py): one transaction,
        one id allocation over all their workflows (each batch's ids after the previous
        batch's in its workflows), one COPY straight into log_lines, one NOTIFY; returns
        the commit time. A line already stored fails the COPY with a unique violation
        (as a missing partition or a refused value fails it): nothing is stored then."""
        counts: dict[uuid.UUID, int] = {}
        offsets: list[dict[uuid.UUID, int]] = []
        for lines, _ in batches:
            mine: dict[uuid.UUID, int] = {}
            for line in lines:
                mine[line.workflow_id] = line.ord  # ords count up within a workflow
            here = {}
            for w, n in mine.items():
                here[w] = before = counts.get(w, 0)
                counts[w] = before + n
            offsets.append(here)
        rejected = [(_text(r), _text(e)) for _, batch in batches for r, e in batch]
        token: str | None = None  # the lines offered to this process's feeds (handoff)
        try:
            async with translated(), self.pool.connection() as conn:
                async with conn.transaction(), conn.cursor() as cur:
                    if counts:
                        every = [line for lines, _ in batches for line in lines]
                        last = await allocate_ids(cur, every, counts)
                        bases = {w: last[w] - counts[w] for w in counts}
                        # read where ingest.sql's join reads it: after the allocation
                        steps = await job_steps(cur, every)
                        parts = [(lines, {w: bases[w] + o for w, o in here.items()})
                                 for (lines, _), here in zip(batches, offsets, strict=True)]
                        spans: Spans = {}
                        await copy_lines(cur, parts, steps, spans)
                        await widen_job_spans(cur, spans)
                        handoff = self.handoff
                        if handoff is not None:
                            token = handoff.offer(parts, steps, last, counts)
                        sent = await _notify(cur, last, token)
                        if handoff is not None and token is not None and not sent:
                            # it went as {"all": true}: the feeds read these lines
                            handoff.withdraw(token)
                            token = None
                    if rejected:
                        await cur.executemany(
                            "INSERT INTO rejected_events (reason, event) VALUES (%s, %s)",
                            rejected)
                return time.time()
        except BaseException:
            if token is not None and self.handoff is not None:
                self.handoff.withdraw(token)  # not committed (or not known to be)
            raise

    async def _ingest_staged(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]],
        of_record: bool,
    ) -> IngestResult:
        """COPY into a staging table, then INSERT .. ON CONFLICT DO NOTHING: stores the
        lines not stored yet, and adopts (of_record) the ones the live tap stored first."""
        counts: dict[uuid.UUID, int] = {}
        for line in lines:
            counts[line.workflow_id] = line.ord  # ords count up within a workflow
        inserted = adopted = 0
        async with translated(), self.pool.connection() as conn:
            async with conn.transaction(), conn.cursor() as cur:
                if lines:
                    ids = sorted(counts)
                    last = await allocate_ids(cur, lines, counts)
                    bases = {w: last[w] - counts[w] for w in ids}
                    await widen_job_spans(cur, job_spans([(lines, bases)]))
                    inserted = await stage_lines(cur, lines, ids, bases)
                    if of_record and inserted < len(lines):
                        await cur.execute(_ADOPT)
                        adopted = cur.rowcount
                    await _notify(cur, last)
                if rejected:
                    await cur.executemany(
                        "INSERT INTO rejected_events (reason, event) VALUES (%s, %s)",
                        [(_text(r), _text(e)) for r, e in rejected])
            committed_at = time.time()
        return IngestResult(inserted, len(lines) - inserted, len(rejected), committed_at,
                            adopted)

    async def set_status(
        self, workflow_id: uuid.UUID, *, status: str, job_id: str | None, step: str | None,
        details: dict[str, Any], workflow_level: bool,
    ) -> int:
        """Record a status change; returns its status event id."""
        async with translated(), self.pool.connection() as conn, conn.cursor() as cur:
            last_seq = await _lock_workflow(cur, workflow_id)
            return await _record_status(cur, workflow_id, last_seq, status=status,
                                        job_id=job_id, step=step, details=details,
                                        workflow_level=workflow_level)

    async def record_pod_status(
        self, workflow_id: uuid.UUID, *, status: str, job_id: str | None, pod: str,
        unless_a_job_failed: bool = False,
    ) -> int | None:
        """Store a status derived from a pod, once, and only if it moves the job (job_id
        set) or the workflow further along: never over a terminal status (REANA's POSTs
        or an earlier pod-derived one), never back. unless_a_job_failed: a "finished"
        workflow becomes "failed" when a job's latest status is failed. Returns the
        status event id, or None when nothing changed."""
        async with translated(), self.pool.connection() as conn, conn.cursor() as cur:
            last_seq = await _lock_workflow(cur, workflow_id)
            await cur.execute(_POD_STATUS_CURRENT, {"workflow_id": workflow_id,
                                                    "job_id": job_id})
            row = await cur.fetchone()
            assert row is not None
            workflow_status, job_latest, a_job_failed = row
            if workflow_status in TERMINAL_STATUSES:
                return None  # the workflow ended: nothing a pod says changes that
            current = workflow_status if job_id is None else job_latest
            if status == "finished" and unless_a_job_failed and a_job_failed:
                status = "failed"
            if _RANK.get(status, _FINAL) <= _RANK.get(current, _FINAL if current else -1):
                return None
            return await _record_status(cur, workflow_id, last_seq, status=status,
                                        job_id=job_id, step=None,
                                        details={"source": "pod", "pod": pod},
                                        workflow_level=job_id is None)

    # -- reads -------------------------------------------------------------------------

    async def job_span(self, job_id: str) -> tuple[uuid.UUID, int, int] | None:
        """The workflow whose lines name this job, and the span of ids they lie in
        (job_workflows, sql/0005); of several workflows (a batch system's job ids
        repeat), the one that wrote last."""
        async with translated(), self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT j.workflow_id, j.first_seq, j.last_seq FROM job_workflows j"
                " JOIN workflows w ON w.workflow_id = j.workflow_id WHERE j.job_id = %s"
                " ORDER BY w.ts_last DESC LIMIT 1", (job_id,))
            row = await cur.fetchone()
        return (row[0], row[1], row[2]) if row else None

    async def workflow_starting(self, prefix: str) -> uuid.UUID | None:
        """The workflow whose id's text starts with `prefix` (hex digits and dashes), the
        one that wrote last if several do."""
        hex_digits = prefix.replace("-", "")
        if not hex_digits or len(hex_digits) > 32:
            return None
        try:
            low = uuid.UUID(hex_digits.ljust(32, "0"))
            high = uuid.UUID(hex_digits.ljust(32, "f"))
        except ValueError:
            return None
        async with translated(), self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT workflow_id FROM workflows WHERE workflow_id BETWEEN %s AND %s"
                " ORDER BY ts_last DESC LIMIT 1", (low, high))
            row = await cur.fetchone()
        return row[0] if row else None

    async def snapshot(
        self,
        workflow_id: uuid.UUID,
        *,
        after: int = 0,
        status_after: int | None = None,
        limit: int = 1000,
        filters: Filters | None = None,
        tail: int | None = None,
        upto: int | None = None,
        job_statuses: bool = False,
        frames: bool = False,
        max_bytes: int | None = None,
    ) -> Snapshot | None:
        """One REPEATABLE READ view of a workflow (snapshot.read_snapshot says what)."""
        return await read_snapshot(
            self.pool, workflow_id, after=after, status_after=status_after, limit=limit,
            filters=filters, tail=tail, upto=upto, job_statuses=job_statuses, frames=frames,
            max_bytes=max_bytes)

    async def opening(self, workflow_id: uuid.UUID, *, after: int, limit: int,
                      filters: Filters) -> Snapshot | None:
        """A new stream's opening read: one statement (snapshot.read_opening says what)."""
        return await read_opening(self.pool, workflow_id, after=after, limit=limit,
                                  filters=filters)

    async def live(self, workflow_id: uuid.UUID, *, after: int, status_after: int,
                   limit: int) -> Snapshot | None:
        """A feed's live read (live.LiveReads.read_many says what): one statement for the feeds
        that read at once."""
        return await self.live_reads.read(LiveRead(workflow_id, after, status_after,
                                                   limit))

    def spare_connection(self) -> bool:
        """Whether the pool could lend a connection now without making anyone wait."""
        stats = self.pool.get_stats()
        return not stats.get("requests_waiting", 0) and (
            stats.get("pool_available", 0) > 0
            or stats.get("pool_size", 0) < stats.get("pool_max", 0))

    async def ping(self) -> None:
        async with translated(), self.pool.connection() as conn:
            await conn.execute("SELECT 1")


def _text(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates (a reason may quote input)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


async def allocate_ids(cur: psycopg.AsyncCursor[Any], lines: Sequence[PreparedLine],
                       counts: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
    """Reserve counts[w] ids for each workflow w of `lines` and widen its range of line
    timestamps to theirs (allocate.sql, row-locking the workflows until commit); returns
    each workflow's last id after it."""
    ids = sorted(counts)
    firsts, lasts = _ts_bounds(lines, ids)
    await cur.execute(_ALLOCATE, {"workflow_ids": ids, "counts": [counts[w] for w in ids],
                                  "ts_firsts": firsts, "ts_lasts": lasts})
    return {row[0]: row[1] for row in await cur.fetchall()}


_TS = operator.attrgetter("ts")


def _ts_bounds(lines: Sequence[PreparedLine], ids: list[uuid.UUID]
               ) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """The earliest and latest line timestamp of each workflow (in `ids` order)."""
    if len(ids) == 1:  # the usual batch: one workflow's lines
        stamps = list(map(_TS, lines))
        return [min(stamps)], [max(stamps)]
    by: dict[uuid.UUID, list[dt.datetime]] = {}
    for line in lines:
        by.setdefault(line.workflow_id, []).append(line.ts)
    return [min(by[w]) for w in ids], [max(by[w]) for w in ids]


async def _lock_workflow(cur: psycopg.AsyncCursor[Any], workflow_id: uuid.UUID) -> int:
    """Create the workflow if unknown and row-lock it until commit; returns its last_seq."""
    await cur.execute(
        "INSERT INTO workflows AS w (workflow_id) VALUES (%s)"
        " ON CONFLICT (workflow_id) DO UPDATE SET updated_at = now()"
        " RETURNING last_seq",
        (workflow_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _record_status(
    cur: psycopg.AsyncCursor[Any], workflow_id: uuid.UUID, last_seq: int, *, status: str,
    job_id: str | None, step: str | None, details: dict[str, Any], workflow_level: bool,
) -> int:
    if workflow_level:
        await cur.execute(
            "UPDATE workflows SET status = %s, status_at = now() WHERE workflow_id = %s",
            (status, workflow_id),
        )
    await cur.execute(
        "INSERT INTO status_events (workflow_id, after_seq, job_id, step, status, details)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (workflow_id, last_seq, job_id, step, status, Jsonb(details)),
    )
    row = await cur.fetchone()
    assert row is not None
    if job_id is not None and step is not None:
        await cur.execute(
            "INSERT INTO job_steps (workflow_id, job_id, step) VALUES (%s, %s, %s)"
            " ON CONFLICT (workflow_id, job_id) DO UPDATE SET step = excluded.step",
            (workflow_id, job_id, step),
        )
        # lines that came before REANA named the step get it now
        await cur.execute(
            "UPDATE log_lines SET step = %s"
            " WHERE workflow_id = %s AND job_id = %s AND step IS NULL",
            (step, workflow_id, job_id),
        )
    if workflow_level and status == "deleted":
        await cur.execute("DELETE FROM log_lines WHERE workflow_id = %s", (workflow_id,))
        await cur.execute("DELETE FROM job_workflows WHERE workflow_id = %s", (workflow_id,))
    await _notify(cur, {workflow_id: last_seq})
    return int(row[0])


async def _notify(cur: psycopg.AsyncCursor[Any], last: dict[uuid.UUID, int],
                  token: str | None = None) -> bool:
    """One NOTIFY per committed batch: {"w": {workflow: last_seq}, "t": epoch}, and "h":
    the token of the lines offered to this process's feeds (follow/handoff.py). Returns
    whether the token went out (a payload too long for PostgreSQL goes as {"all": true})."""
    message: dict[str, Any] = {"w": {str(k): v for k, v in last.items()}, "t": time.time()}
    if token is not None:
        message["h"] = token
    payload = orjson.dumps(message)
    if len(payload) > _NOTIFY_MAX:
        payload = orjson.dumps({"all": True, "t": message["t"]})
        token = None
    await cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload.decode()))
    return token is not None
