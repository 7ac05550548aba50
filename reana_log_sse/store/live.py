"""The feed's live read (follow/hub.py Feed.refresh): one statement, one round trip.

read_snapshot (snapshot.py) takes a REPEATABLE READ transaction of six round trips; the
feed reads once per followed workflow per NOTIFY that names it, so at 100 busy follows
those round trips were most of the service's time (docs/performance.md, issue 22).
"""

from __future__ import annotations

import uuid

from psycopg_pool import AsyncConnectionPool

from reana_log_sse.store.db import load_sql
from reana_log_sse.store.errors import translated
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import MAX_READ_BYTES, Snapshot, StatusRow

__all__ = ["read_live"]

_LIVE = "\n".join(x for x in load_sql("live.sql").splitlines() if not x.startswith("--"))


async def read_live(pool: AsyncConnectionPool, workflow_id: uuid.UUID, *, after: int,
                    status_after: int, limit: int,
                    max_bytes: int = MAX_READ_BYTES) -> Snapshot | None:
    """As read_snapshot(after=after, status_after=status_after, limit=limit,
    max_bytes=max_bytes) (no filters, no tail, no upto), in one statement (live.sql):
    the lines after `after` up to the workflow's last_seq, the first `limit` of them and
    at most about `max_bytes` of messages, as Line objects; the statuses with id >
    status_after that come after no line past the horizon. None for an unknown workflow."""
    if limit < 1:
        raise ValueError("a live read asks for at least one line")
    async with translated(), pool.connection() as conn:
        # one statement is one snapshot: no transaction (BEGIN and COMMIT would be two
        # more round trips); the pool's connections are otherwise in transactions
        await conn.set_autocommit(True)
        try:
            cur = await conn.execute(_LIVE, {
                "wf": workflow_id, "after": after, "status_after": status_after,
                "limit": limit, "bytes": max_bytes}, binary=True)
            row = await cur.fetchone()
        finally:
            await conn.set_autocommit(False)
    if row is None:
        return None
    last_seq, status, status_age, horizon, seqs, *columns = row
    lines: list[Line] = []
    if seqs:
        kinds, job_ids, steps, streams, tss, messages, truncs = columns[:7]
        name = str(workflow_id)
        lines = [Line(*r) for r in zip(seqs, [name] * len(seqs), kinds, job_ids, steps,
                                       streams, tss, messages, truncs, strict=True)]
    ids, after_seqs, s_jobs, s_steps, s_statuses = columns[7:]
    statuses = ([StatusRow(*r) for r in zip(ids, after_seqs, s_jobs, s_steps, s_statuses,
                                            strict=True)] if ids else [])
    # status ids grow with after_seq, so the withheld ones come last
    status_cursor = statuses[-1].id if statuses else status_after
    return Snapshot(last_seq, status, status_age, horizon, lines, statuses, status_cursor)
