"""Scenarios 1, 4 and 6: ingest vs raw COPY, catch-up vs COPY TO, and the CLI to a pipe."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import psycopg
from psycopg import sql

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import open_follower
from reana_log_sse.store.db import conninfo

_COLUMNS = ("workflow_id, seq, ts, dedupe, kind, job_id, step, pod, container, stream, "
            "message, truncated, collected_at")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(evts: Sequence[dict[str, Any]], seq_base: int) -> bytes:
    """The rows the service would store for these events, in COPY text format."""
    out = []
    for i, e in enumerate(evts):
        fields = (e["workflow_id"], str(seq_base + i), e["timestamp"], str(uuid.uuid4()),
                  e["kind"], e["job_id"], e["step"], e["pod"], e["container"], e["stream"],
                  e["message"].translate(_ESCAPES), "f", e["collected_at"])
        out.append("\t".join("\\N" if f is None else f for f in fields))
    return ("\n".join(out) + "\n").encode()


async def _workers(n: int, jobs: Sequence[Any], work: Any) -> float:
    """Run `work(job)` over jobs with n concurrent workers; seconds taken."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            await work(job)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n)))
    return time.perf_counter() - t0


async def ingest(server: h.Server, meter: h.CpuMeter, *, lines: int, batch: int,
                 senders: int) -> dict[str, Any]:
    """POST /ingest/vector throughput vs raw COPY of the same rows, same concurrency."""
    wfs = h.new_workflows(10)
    batches = [h.events(wfs, batch, k * batch) for k in range(max(1, lines // batch))]
    bodies = [h.body(b) for b in batches]
    total = batch * len(batches)
    async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                 limits=httpx.Limits(max_connections=senders)) as client:
        warm = h.new_workflows(10)
        for k in range(2):  # warm the pool and the code paths
            await h.post(client, h.body(h.events(warm, batch, k * batch)))
        accepted = 0

        async def send(data: bytes) -> None:
            nonlocal accepted
            # read the answer first: `accepted += await ...` would load `accepted` before
            # the await and lose every update made by the other senders meanwhile
            n = (await h.post(client, data))["accepted"]
            accepted += n

        c0 = meter.sample()
        seconds = await _workers(senders, bodies, send)
        c1 = meter.sample()
    stored = await stored_lines(server.database_url, wfs)
    payloads = [_copy_text(b, 10_000_000 + k * batch) for k, b in enumerate(batches)]
    conns = [await psycopg.AsyncConnection.connect(conninfo(server.database_url))
             for _ in range(senders)]
    free = list(conns)

    async def copy(data: bytes) -> None:
        conn = free.pop()
        try:
            async with conn.transaction(), conn.cursor() as cur, \
                    cur.copy(f"COPY log_lines ({_COLUMNS}) FROM STDIN") as cp:
                await cp.write(data)
        finally:
            free.append(conn)

    try:
        b0 = meter.sample()
        copy_seconds = await _workers(senders, payloads, copy)
        b1 = meter.sample()
    finally:
        for conn in conns:
            await conn.close()
    return {"lines": total, "accepted": accepted, "stored": stored, "seconds": seconds,
            "rate": total / seconds, "copy_rate": total / copy_seconds,
            "copy_seconds": copy_seconds, "cpu": h.CpuMeter.share(c0, c1),
            "copy_cpu": h.CpuMeter.share(b0, b1), "senders": senders, "batch": batch,
            "body_bytes": sum(len(b) for b in bodies) / len(bodies)}


async def stored_lines(database_url: str, workflows: Sequence[str]) -> int:
    """How many lines the database holds for these workflows."""
    async with await psycopg.AsyncConnection.connect(conninfo(database_url)) as conn:
        cur = await conn.execute("SELECT count(*) FROM log_lines WHERE workflow_id = ANY(%s)",
                                 (list(workflows),))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


def store_lines(database_url: str, n: int) -> str:
    """A workflow with n stored lines (inserted by SQL, as ingest would have left them)."""
    wf = str(uuid.uuid4())
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        conn.execute("INSERT INTO workflows (workflow_id, last_seq, status) "
                     "VALUES (%s, %s, 'running')", (wf, n))
        conn.execute(
            "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step, pod,"
            " container, stream, message, truncated)"
            " SELECT %s, g, now() - interval '1 hour' + g * interval '1 microsecond',"
            " gen_random_uuid(), 'job', 'reana-run-job-bench', 'fitdata',"
            " 'reana-run-job-bench-x7k2p', 'job', 'stdout',"
            " 'INFO  [fitdata] iteration ' || g || ': chi2/ndf = 1.0' || (g %% 997)"
            " || ', params = [0.4, 12.3, 7.1e-3] converged', false"
            " FROM generate_series(1, %s) AS g", (wf, n))
        # the range of its lines' timestamps, as ingest keeps it (0004_workflow_days.sql;
        # a service from before it, run with --service-tree, has no such columns)
        if conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name ="
                        " 'workflows' AND column_name = 'ts_first'").fetchone():
            conn.execute("UPDATE workflows SET (ts_first, ts_last) = (SELECT min(ts), max(ts)"
                         " FROM log_lines WHERE workflow_id = %s) WHERE workflow_id = %s",
                         (wf, wf))
        conn.execute("VACUUM ANALYZE log_lines")
    return wf


def fill_earlier_days(database_url: str, days: int, per_day: int) -> int:
    """Lines of other workflows in each of the `days` days before today, as a database
    with a retention of days holds: every daily partition of log_lines then has rows,
    and a read by workflow and id probes each one's index (not empty ones)."""
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        for day in range(1, days + 1):
            conn.execute(
                "INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step, pod,"
                " container, stream, message, truncated)"
                " SELECT md5(%s || '-' || g %% 10)::uuid, g,"  # 10 workflows a day
                "  date_trunc('day', now()) - %s * interval '1 day' + g * interval '1 ms',"
                "  gen_random_uuid(), 'job', 'reana-run-job-other', 'other',"
                "  'reana-run-job-other-x', 'job', 'stdout', 'INFO  [other] event ' || g,"
                "  false FROM generate_series(1, %s) AS g", (str(day), day, per_day))
        conn.execute("VACUUM ANALYZE log_lines")
    return days * per_day


async def copy_out(database_url: str, wf: str) -> tuple[float, int]:
    """Seconds and bytes to COPY a workflow's lines out, in id order (the read floor)."""
    query = sql.SQL(
        "COPY (SELECT seq, kind, job_id, step, stream, ts, message, truncated FROM log_lines"
        " WHERE workflow_id = {} ORDER BY seq) TO STDOUT").format(sql.Literal(wf))
    size = 0
    async with await psycopg.AsyncConnection.connect(conninfo(database_url)) as conn:
        t0 = time.perf_counter()
        async with conn.cursor() as cur, cur.copy(query) as cp:
            async for data in cp:
                size += len(data)
        return time.perf_counter() - t0, size


async def catchup(server: h.Server, meter: h.CpuMeter, *, lines: int) -> dict[str, Any]:
    """One follower joins a workflow with `lines` stored lines: lines/s until live."""
    wf = await asyncio.to_thread(store_lines, server.database_url, lines)
    # the service keeps 30 days of partitions (REANA_LOG_SSE_RETENTION_DAYS): fill them
    others = await asyncio.to_thread(fill_earlier_days, server.database_url, 29,
                                     max(100, lines // 50))
    copy_seconds, copy_bytes = await copy_out(server.database_url, wf)
    c0 = meter.sample()
    t0 = time.perf_counter()
    follower = await open_follower(server.url, f"/api/workflows/{wf}/logs/stream")
    await asyncio.wait_for(follower.reached(lines), 600)
    seconds = time.perf_counter() - t0
    c1 = meter.sample()
    # live from there: one new line arrives by the live path
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        t1 = time.perf_counter()
        await h.post(client, h.body(h.events([wf], 1)))
        await asyncio.wait_for(follower.reached(lines + 1), 60)
        live_ms = 1000 * (time.perf_counter() - t1)
    follower.close()
    return {"workflow": wf, "lines": lines, "seconds": seconds, "rate": lines / seconds,
            "bytes": follower.bytes, "copy_rate": lines / copy_seconds, "copy_bytes": copy_bytes,
            "live_ms": live_ms, "cpu": h.CpuMeter.share(c0, c1), "other_lines": others}


def cli_available() -> bool:
    """Whether this install has the `logs` command (client/logs.py)."""
    return importlib.util.find_spec("reana_log_sse.client.logs") is not None


async def cli(server: h.Server, meter: h.CpuMeter, *, lines: int) -> dict[str, Any]:
    """`reana-log-sse logs WF --follow --json` to a pipe on a finished workflow: lines/s
    from its first line to its last, vs a raw socket reading the same stream."""
    wf = await asyncio.to_thread(store_lines, server.database_url, lines)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        r = await client.post(f"/api/workflows/{wf}/status", json={"status": "finished"},
                              headers={"Authorization": f"Bearer {h.TOKEN}"})
        r.raise_for_status()
    await asyncio.sleep(1.0)  # past the end grace: the stream ends right after the lines
    t0 = time.perf_counter()
    follower = await open_follower(server.url, f"/api/workflows/{wf}/logs/stream")
    await asyncio.wait_for(follower.ended, 600)
    follower.close()
    raw_seconds = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "reana_log_sse", "logs", wf, "--follow", "--json",
           "--server", server.url]
    c0 = meter.sample()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    assert proc.stdout is not None
    count, tail, first = 0, b"", None
    while chunk := await proc.stdout.read(1 << 20):
        last = time.perf_counter()
        first = first or last
        data = tail + chunk
        count += data.count(b'{"event":"log"')
        tail = data[-16:]
        count -= tail.count(b'{"event":"log"')
    err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
    code = await proc.wait()
    seconds = time.perf_counter() - t0
    c1 = meter.sample()
    # the rate between the first and the last line: the interpreter's start-up is not in it
    streaming = (last - first) if first is not None else seconds
    return {"workflow": wf, "lines": lines, "printed": count, "exit": code,
            "stderr": err[-500:], "seconds": seconds, "rate": count / max(streaming, 1e-9),
            "startup": (first - t0) if first is not None else None,
            "raw_rate": lines / raw_seconds, "cpu": h.CpuMeter.share(c0, c1)}
