"""Catch-up frames built by PostgreSQL (sql/frame.sql) are byte for byte the frames
lines.Line builds with orjson (what the live path and every earlier version sent)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import psycopg

from reana_log_sse.store import db, partitions
from reana_log_sse.store.store import Store


def _messages() -> list[str]:
    controls = "".join(chr(i) for i in range(1, 32)) + "\x7f"
    return [
        "plain", "", controls, 'quotes " and \\ backslash \\n not a newline', "é ü ß 中文",
        "emoji 😀 and \u2028 \u2029 separators \ufffd", "/slashes/ <html> & 'single'",
        "x" * 70_000, "tab\there\r\nnewline", "\\u0000 as text",
    ]


def test_frames_built_by_postgresql_are_the_frames_orjson_builds(database_url):
    async def run() -> tuple[list[bytes], list[bytes]]:
        await db.migrate(database_url)
        await partitions.maintain(database_url, partitions.Window.around(
            dt.datetime.now(dt.UTC).date(), retention_days=2, ahead_days=1))
        wf = uuid.uuid4()
        day = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        stamps = [day, day.replace(microsecond=1), day.replace(microsecond=100000),
                  day.replace(microsecond=999999), day.replace(hour=0), day.replace(hour=23)]
        rows = []
        seq = 0
        for i, message in enumerate(_messages()):
            for kind, job, step in (("job", "reana-run-job-1", "fit"), ("workflow", None, None),
                                    ("job", 'job "quoted"', None), ("service", None, "s")):
                seq += 1
                rows.append((wf, seq, stamps[seq % len(stamps)], uuid.uuid4(), kind, job,
                             step, "pod", "job", "stderr" if seq % 2 else "stdout", message,
                             i % 2 == 0))
        async with await psycopg.AsyncConnection.connect(db.conninfo(database_url)) as conn:
            await conn.execute("INSERT INTO workflows (workflow_id, last_seq, ts_first, ts_last)"
                               " VALUES (%s, %s, %s, %s)", (wf, seq, min(stamps), max(stamps)))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step,"
                    " pod, container, stream, message, truncated)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
            await conn.commit()
        pool = db.make_pool(database_url, max_size=2, timeout=10)
        await pool.open()
        try:
            store = Store(pool)
            lines = await store.snapshot(wf, limit=1000)
            framed = await store.snapshot(wf, limit=1000, frames=True)
        finally:
            await pool.close()
        assert lines is not None and framed is not None
        assert framed.frame_count == len(lines.lines)
        assert [s for s, _ in framed.frames] == [lines.lines[-1].seq]  # no status: one part
        joined = b"".join(f for _, f in framed.frames)
        # split after each frame's blank line ("\n\n" is escaped inside data)
        return [line.frame for line in lines.lines], joined.split(b"\n\n")[:-1]

    orjson_frames, sql_frames = asyncio.run(run())
    assert len(sql_frames) == 40
    for a, b in zip(orjson_frames, sql_frames, strict=True):
        assert a == b + b"\n\n"
