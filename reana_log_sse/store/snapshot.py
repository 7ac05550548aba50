"""Snapshot reads: one consistent view of a workflow's counters, lines and statuses.

The read side of the store (store.py writes): the feed's reads of new rows (hub.py), a
new stream's first frames and a follower's catch-up (stream.py), the JSON and REANA reads.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from reana_log_sse.store.db import load_sql
from reana_log_sse.store.errors import translated
from reana_log_sse.store.lines import Line

# a workflow in one of these has ended: its streams send what was committed before, then end
TERMINAL_STATUSES = frozenset({"finished", "failed", "stopped", "deleted"})

__all__ = ["Filters", "Snapshot", "StatusRow", "frame_end", "read_opening", "read_snapshot"]

_LINE_COLUMNS = "seq, kind, job_id, step, stream, ts, message, truncated"


@dataclasses.dataclass(frozen=True)
class Filters:
    jobs: tuple[str, ...] = ()
    kind: str | None = None

    def matches(self, line: Line) -> bool:
        if self.kind is not None and line.kind != self.kind:
            return False
        return not self.jobs or line.job_id in self.jobs or line.step in self.jobs

    def sql_params(self) -> dict[str, Any]:
        return {"jobs": list(self.jobs) or None, "kind": self.kind}


# the workflow's range of line timestamps (0004_workflow_days.sql): PostgreSQL reads only
# the daily partitions it touches. As text: it may be infinite, which datetime cannot hold
_DAYS_SQL = " AND ts >= %(ts_first)s::timestamptz AND ts <= %(ts_last)s::timestamptz"
_FILTER_SQL = (
    " AND (%(jobs)s::text[] IS NULL OR job_id = ANY(%(jobs)s) OR step = ANY(%(jobs)s))"
    " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
)


# A read of Line objects: at most `limit` lines in seq order and at most about `bytes` of
# messages (the line that crosses it is the last: a read holds at least one line, at most
# `bytes` plus one line). The running sum streams with the index scan, under the LIMIT.
MAX_READ_BYTES = 4 * 1024 * 1024
_LINES_READ = (
    f"SELECT {_LINE_COLUMNS}, run FROM (SELECT {_LINE_COLUMNS},"
    " sum(octet_length(message)) OVER (ORDER BY seq) AS run"
    " FROM log_lines WHERE workflow_id = %(wf)s"
    " AND seq > %(after)s AND seq <= %(upto)s" + _DAYS_SQL + _FILTER_SQL +
    " ORDER BY seq LIMIT %(limit)s) AS x"
    " WHERE run - octet_length(message) < %(bytes)s ORDER BY seq"
)
_TAIL_START = (
    "SELECT seq - 1 FROM log_lines WHERE workflow_id = %(wf)s"
    " AND seq > %(after)s AND seq <= %(upto)s" + _DAYS_SQL + _FILTER_SQL +
    " ORDER BY seq DESC OFFSET %(skip)s LIMIT 1"
)


async def _tail_start(cur: psycopg.AsyncCursor[Any], params: dict[str, Any],
                      tail: int) -> int:
    """Where the last `tail` matching lines start: the seq before the first of them (the
    lines are then read forward from there, in reads sized in bytes, whatever `tail`)."""
    if tail == 0:
        return max(params["after"], params["upto"])
    await cur.execute(_TAIL_START, {**params, "skip": tail - 1})
    row = await cur.fetchone()
    return params["after"] if row is None else max(params["after"], row[0])


# A catch-up read (Snapshot.frames): the frames built by PostgreSQL (frame.sql) and joined
# there into one bytes value, so the service makes a few objects per read, not one per
# line. One plain aggregate over the ordered subquery: PostgreSQL 16+ feeds it presorted
# (no sort: a GROUP BY per status would sort megabytes of frames, spilling past
# work_mem); Snapshot.frame_parts cuts the bytes at the statuses.
_FRAME = "\n".join(x for x in load_sql("frame.sql").splitlines() if not x.startswith("--"))
_FRAME_READ = (
    "SELECT max(seq), count(*), convert_to(string_agg(frame, '' ORDER BY seq), 'UTF8')"
    f" FROM (SELECT seq, {_FRAME} AS frame FROM log_lines WHERE workflow_id = %(wf)s"
    " AND seq > %(after)s AND seq <= %(upto)s" + _DAYS_SQL + _FILTER_SQL +
    " ORDER BY seq LIMIT %(limit)s) AS x"
)
_FRAME_ID = len(b"event: log\nid: ")  # where a frame's id starts (frame.sql)


def frame_end(data: bytes, seq: int, start: int = 0) -> int:
    """Where the frames with id <= seq end in `data` (joined frames in id order, from
    offset `start`, a frame's start). A frame ends with its only blank line ("\\n\\n":
    its data line is JSON, whose newlines are escaped), so a bisection over the bytes
    finds it with a few searches, whatever the number of frames."""
    end = len(data)

    def first_start(off: int) -> int:  # the first frame starting at or after off
        if off <= start:
            return start
        i = data.find(b"\n\n", max(off - 2, start))
        return end if i < 0 or i + 2 >= end else i + 2

    def past(s: int) -> bool:  # the frame at s is past seq (or s is the end)
        return s >= end or int(data[s + _FRAME_ID:data.index(b"\n", s + _FRAME_ID)]) > seq

    lo, hi = start, end
    while lo < hi:
        mid = (lo + hi) // 2
        if past(first_start(mid)):
            hi = mid
        else:
            lo = mid + 1
    return first_start(lo)


@dataclasses.dataclass(frozen=True)
class StatusRow:
    id: int
    after_seq: int
    job_id: str | None
    step: str | None
    status: str


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one consistent read of a workflow saw.

    horizon: every line with seq <= horizon that matches the filters is in `lines` or
    was before the requested start; statuses are those with after_seq <= horizon.
    """

    last_seq: int
    status: str | None
    status_age: float | None  # seconds since the workflow status was set
    horizon: int
    lines: list[Line]
    statuses: list[StatusRow]
    status_cursor: int  # highest status id covered
    job_statuses: list[StatusRow] = dataclasses.field(default_factory=list)
    # a read with frames=True: [(last seq, the lines' frames joined)], or [] without
    # lines, and how many lines they are
    frames: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    frame_count: int = 0

    def frame_parts(self) -> Iterator[tuple[bytes, StatusRow | None]]:
        """As parts(), for a read with frames=True: the joined frames up to each status."""
        data = b"".join([f for _, f in self.frames])
        pos = 0
        for status in self.statuses:
            cut = frame_end(data, status.after_seq, pos)
            yield data[pos:cut], status
            pos = cut
        yield data[pos:] if pos else data, None

    def parts(self) -> Iterator[tuple[list[Line], StatusRow | None]]:
        """The lines in order, cut at each status: (lines up to it, status) for each status,
        then (the rest, None). A status goes after every line with seq <= its after_seq."""
        lines, i = self.lines, 0
        for status in self.statuses:
            j = i
            while j < len(lines) and lines[j].seq <= status.after_seq:
                j += 1
            yield lines[i:j], status
            i = j
        yield lines[i:], None


async def read_snapshot(
    pool: AsyncConnectionPool,
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
    """One REPEATABLE READ view of a workflow: its counters, lines and statuses.

    frames: the lines come as SSE frames built and joined by PostgreSQL, in `frames`
    (the catch-up: no Python object per line), not as Line objects in `lines`.

    Lines: seq > after (and, with `tail`, among the last `tail` matching), the first
    `limit` of them and at most about `max_bytes` (MAX_READ_BYTES) of messages: a read
    is sized in bytes whatever `limit` and `tail` say; `horizon` says where the next read
    starts. Statuses:
    id > status_after (None: none are read); job_statuses: the latest status of each
    job (a new stream's first frames). Returns None for an unknown workflow.
    """
    filters = filters or Filters()
    async with translated(), pool.connection() as conn, conn.transaction():
        cur = conn.cursor()
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await cur.execute(
            "SELECT last_seq, status, extract(epoch FROM now() - status_at)::float8,"
            " (SELECT coalesce(max(id), 0) FROM status_events s"
            "  WHERE s.workflow_id = w.workflow_id), ts_first::text, ts_last::text"
            " FROM workflows w WHERE workflow_id = %s",
            (workflow_id,),
        )
        head = await cur.fetchone()
        if head is None:
            return None
        last_seq, status, status_age, max_status_id, ts_first, ts_last = head
        ceiling = last_seq if upto is None else min(upto, last_seq)
        params = {"wf": workflow_id, "after": after, "upto": ceiling, **filters.sql_params(),
                  "ts_first": ts_first, "ts_last": ts_last}
        statuses: list[StatusRow] = []
        status_cursor = max_status_id
        count = 0
        if tail is not None:  # the last `tail` lines are those after the tail's start
            after = params["after"] = await _tail_start(cur, params, tail)
        full = False
        if limit == 0:  # no lines wanted (where a tail starts, a bare opening): no query
            rows, count = [], 0
        elif frames:
            wf_key = f',"workflow_id":"{workflow_id}","kind":'
            await cur.execute(_FRAME_READ, {**params, "limit": limit,
                                            "wf_key": wf_key}, binary=True)
            last, count, data = await cur.fetchone() or (None, 0, None)
            rows = [(last, data)] if count else []
        else:
            await cur.execute(_LINES_READ, {**params, "limit": limit,
                                            "bytes": max_bytes or MAX_READ_BYTES})
            rows = await cur.fetchall()
            count = len(rows)
            full = bool(rows) and rows[-1][-1] >= (max_bytes or MAX_READ_BYTES)
            rows = [r[:-1] for r in rows]
        if limit == 0:
            horizon = after
        elif count >= limit or full:
            horizon = rows[-1][0]
        else:
            horizon = max(ceiling, after)
        if status_after is not None:
            statuses = await _statuses(cur, workflow_id, status_after, horizon)
            # status ids grow with after_seq, so the withheld ones come last
            status_cursor = statuses[-1].id if statuses else status_after
        jobs: list[StatusRow] = []
        if job_statuses:
            await cur.execute(
                "SELECT DISTINCT ON (coalesce(job_id, ''), coalesce(step, ''))"
                " id, after_seq, job_id, step, status FROM status_events"
                " WHERE workflow_id = %s AND (job_id IS NOT NULL OR step IS NOT NULL)"
                " ORDER BY coalesce(job_id, ''), coalesce(step, ''), id DESC",
                (workflow_id,),
            )
            jobs = sorted((StatusRow(*r) for r in await cur.fetchall()),
                          key=lambda r: r.id)
    if frames:
        return Snapshot(last_seq, status, status_age, horizon, [], statuses,
                        status_cursor, jobs, rows, count)  # type: ignore[arg-type]
    name = str(workflow_id)
    lines = [Line.from_row(name, r) for r in rows]
    return Snapshot(last_seq, status, status_age, horizon, lines, statuses, status_cursor,
                    jobs)


_OPENING = "\n".join(x for x in load_sql("opening.sql").splitlines()
                     if not x.startswith("--")).replace("{frame}", _FRAME)


async def read_opening(pool: AsyncConnectionPool, workflow_id: uuid.UUID, *, after: int,
                       limit: int, filters: Filters) -> Snapshot | None:
    """A new stream's opening read (opening.sql): as read_snapshot(after=after,
    limit=limit, filters=filters, job_statuses=True, frames=True), in one statement (one
    snapshot) and one round trip. None for an unknown workflow."""
    async with translated(), pool.connection() as conn:
        # one statement is one snapshot: no transaction (BEGIN and COMMIT would be two
        # more round trips); the pool's connections are otherwise in transactions
        await conn.set_autocommit(True)
        try:
            cur = await conn.execute(_OPENING, {
                "wf": workflow_id, "after": after, "limit": limit, **filters.sql_params(),
                "wf_key": f',"workflow_id":"{workflow_id}","kind":'}, binary=True)
            row = await cur.fetchone()
        finally:
            await conn.set_autocommit(False)
    if row is None:
        return None
    last_seq, status, status_age, status_cursor, count, last, data, *jobs = row
    if limit == 0:
        horizon = after
    elif count >= limit:
        horizon = last
    else:
        horizon = max(last_seq, after)
    job_statuses = [StatusRow(*r) for r in zip(*jobs, strict=True)] if jobs[0] else []
    return Snapshot(last_seq, status, status_age, horizon, [], [], status_cursor,
                    job_statuses, [(last, data)] if count else [], count)


async def _statuses(cur: psycopg.AsyncCursor[Any], workflow_id: uuid.UUID, after: int,
                    upto: int) -> list[StatusRow]:
    """The status changes with id > after that came after no line past `upto`."""
    await cur.execute(
        "SELECT id, after_seq, job_id, step, status FROM status_events"
        " WHERE workflow_id = %s AND id > %s AND after_seq <= %s ORDER BY id",
        (workflow_id, after, upto),
    )
    return [StatusRow(*r) for r in await cur.fetchall()]
