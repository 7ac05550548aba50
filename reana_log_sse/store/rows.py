"""Prepared lines, and their COPY into log_lines (straight, or staged for duplicates)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from reana_log_sse.store.db import load_sql

_INSERT = load_sql("ingest.sql")
_COPY = (
    "COPY incoming (workflow_id, ord, ts, dedupe, kind, job_id, step, pod, container,"
    " stream, message, truncated, collected_at, line_key) FROM STDIN (FORMAT BINARY)"
)
# The same columns straight into log_lines, seq in place of ord (see Store.ingest).
_COPY_LINES = (
    "COPY log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step, pod, container,"
    " stream, message, truncated, collected_at, line_key) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "int8", "timestamptz", "uuid", "text", "text", "text", "text", "text",
               "text", "text", "bool", "timestamptz", "uuid"]


@dataclasses.dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: int
    committed_at: float  # time.time() right after COMMIT
    adopted: int = 0  # duplicates whose stored copy came from the live tap (adopt.sql)


class PreparedLine(NamedTuple):
    """A validated line ready for COPY (a tuple, in COPY's column order); ord is its
    1-based position among the batch's lines of its workflow."""

    workflow_id: uuid.UUID
    ord: int
    ts: dt.datetime
    dedupe: uuid.UUID
    kind: str
    job_id: str | None
    step: str | None
    pod: str | None
    container: str | None
    stream: str
    message: str
    truncated: bool
    collected_at: dt.datetime | None
    line_key: uuid.UUID | None = None  # identity.py; None without pod, container or ns


async def job_steps(cur: psycopg.AsyncCursor[Any], lines: Sequence[PreparedLine]
                    ) -> dict[tuple[uuid.UUID, str], str]:
    """The steps REANA named for the jobs of the lines that carry none (pods do not)."""
    wanted = {(line.workflow_id, line.job_id) for line in lines
              if line.step is None and line.job_id is not None}
    if not wanted:
        return {}
    await cur.execute(
        "SELECT workflow_id, job_id, step FROM job_steps"
        " WHERE workflow_id = ANY(%s) AND job_id = ANY(%s)",
        (list({w for w, _ in wanted}), list({j for _, j in wanted})),
    )
    return {(w, j): step for w, j, step in await cur.fetchall()}


_JOB_SPANS = (
    "INSERT INTO job_workflows (job_id, workflow_id, first_seq, last_seq)"
    " SELECT * FROM unnest(%s::text[], %s::uuid[], %s::bigint[], %s::bigint[]) ORDER BY 1, 2"
    " ON CONFLICT (job_id, workflow_id) DO UPDATE"
    " SET first_seq = least(job_workflows.first_seq, excluded.first_seq),"
    " last_seq = greatest(job_workflows.last_seq, excluded.last_seq)"
)


Spans = dict[tuple[str, uuid.UUID], list[int]]  # (job, workflow) -> [first id, last id]


def job_spans(parts: Sequence[tuple[Sequence[PreparedLine], dict[uuid.UUID, int]]]) -> Spans:
    """Each job's span of ids among the lines of `parts` (batches with their bases: a
    line's id is base + ord). copy_lines finds the same while it copies."""
    spans: Spans = {}
    for lines, bases in parts:
        for line in lines:
            if line.job_id is not None:
                seq = bases[line.workflow_id] + line.ord
                spans.setdefault((line.job_id, line.workflow_id), [seq, seq])[1] = seq
    return spans


async def widen_job_spans(cur: psycopg.AsyncCursor[Any], spans: Spans) -> None:
    """Widen each job's span of ids in job_workflows (sql/0005), in one statement."""
    if spans:
        keys = list(spans)
        await cur.execute(_JOB_SPANS, ([j for j, _ in keys], [w for _, w in keys],
                                       [spans[k][0] for k in keys],
                                       [spans[k][1] for k in keys]))


async def copy_lines(
    cur: psycopg.AsyncCursor[Any],
    parts: Sequence[tuple[Sequence[PreparedLine], dict[uuid.UUID, int]]],
    steps: dict[tuple[uuid.UUID, str], str],
    spans: Spans,
) -> int:
    """COPY batches' lines straight into log_lines with their ids, base + ord per batch
    (the common case: no line is stored yet), and fill `spans` (job_spans) on the way. A
    line already stored makes the COPY fail with a unique violation, which rolls the
    whole transaction back (Store.ingest then takes the staged path)."""
    n = 0
    last_job, last_w, span = None, None, [0, 0]
    async with cur.copy(_COPY_LINES) as copy:
        copy.set_types(_COPY_TYPES)
        # copy.write_row, without a coroutine per row: the formatter encodes each row
        # into its buffer and hands back a full one, which copy.write sends
        encode, send = copy.formatter.write_row, copy.write
        for lines, bases in parts:
            n += len(lines)
            for (w, o, ts, dedupe, kind, job_id, step, pod, container, stream, message,
                 truncated, collected_at, line_key) in lines:  # one unpack, no getters
                seq = bases[w] + o
                if job_id is not None:
                    # a container's lines come in runs: most lines only move the end
                    if w is last_w and job_id == last_job:
                        span[1] = seq
                    else:
                        span = spans.setdefault((job_id, w), [seq, seq])
                        span[1] = seq
                        last_job, last_w = job_id, w
                    if step is None and steps:
                        step = steps.get((w, job_id))
                if full := encode((w, seq, ts, dedupe, kind, job_id, step, pod,
                                   container, stream, message, truncated, collected_at,
                                   line_key)):
                    await send(full)
    return n


async def stage_lines(cur: psycopg.AsyncCursor[Any], lines: Sequence[PreparedLine],
                      ids: list[uuid.UUID], bases: dict[uuid.UUID, int]) -> int:
    """COPY into the staging table, then INSERT .. ON CONFLICT DO NOTHING: stores the
    lines not stored yet; returns how many."""
    async with cur.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for line in lines:
            await copy.write_row(line)
    await cur.execute(_INSERT, {"workflow_ids": ids, "bases": [bases[w] for w in ids]})
    return cur.rowcount
