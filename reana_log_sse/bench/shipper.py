"""The shipper, as a worker node runs it (`python3 -I reana_log_sse/ship.py`): lines/s from
a file to committed rows, and the delay from a line written to the file to the line on a
follower's stream, each beside the same lines posted straight to the ingest."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from pathlib import Path
from typing import Any

import httpx
import psycopg

from reana_log_sse import ship
from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import open_follower

SHIP_PY = Path(ship.__file__)
LINE = "line {i} of the job's output, about as long as a typical log line: {i:08d}"


def _start(server: h.Server, wf: str, spool: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REANA_LOG_SSE_URL": server.url,
           "REANA_LOG_SSE_INGEST_TOKEN": h.TOKEN}
    return subprocess.Popen([sys.executable, "-I", str(SHIP_PY), "--workflow", wf,
                             "--job", "bench-ship", "--spool-dir", spool, *args],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _count(url: str, wf: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                           (wf,)).fetchone()
        return int(row[0]) if row else 0


def _events(wf: str, start: int, n: int) -> list[dict[str, Any]]:
    now = time.time_ns()
    return [{"workflow_id": wf, "kind": "job", "job_id": "bench-direct", "stream": "stdout",
             "timestamp": ship.rfc3339(now + i), "message": LINE.format(i=i)}
            for i in range(start, start + n)]


async def throughput(server: h.Server, meter: h.CpuMeter, *, lines: int) -> dict[str, Any]:
    """A finished job's output file of `lines` lines: from the shipper's start to its exit
    (every line acknowledged, the status posted), vs 5,000-line POSTs of the same lines."""
    wf = str(uuid.uuid4())
    with tempfile.TemporaryDirectory() as tmp:
        out, done = Path(tmp, "job.out"), Path(tmp, "job.exit")
        out.write_text("".join(LINE.format(i=i) + "\n" for i in range(lines)))
        done.write_text("0\n")
        c0 = meter.sample()
        t0 = time.perf_counter()
        proc = _start(server, wf, str(Path(tmp, "spool")), str(out),
                      "--exit-code-file", str(done))
        try:
            code = await asyncio.to_thread(proc.wait, 600)
        finally:
            proc.kill()
        seconds = time.perf_counter() - t0
        c1 = meter.sample()
    stored = await asyncio.to_thread(_count, server.database_url, wf)
    direct = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        t1 = time.perf_counter()
        for start in range(0, lines, 5000):
            await h.post(client, h.body(_events(direct, start, min(5000, lines - start))))
        direct_seconds = time.perf_counter() - t1
    return {"lines": lines, "stored": stored, "exit": code, "seconds": seconds,
            "rate": lines / seconds, "direct_rate": lines / direct_seconds,
            "cpu": h.CpuMeter.share(c0, c1)}


async def _paced(rate: float, duration: float, write: Any) -> list[float]:
    """Calls write(first, n) every 10 ms with the lines due; returns each line's time."""
    times: list[float] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        due = int((time.monotonic() - t0) * rate) + 1 - len(times)
        if due > 0:
            now = time.time()
            await write(len(times), due)
            times += [now] * due
        await asyncio.sleep(0.01)
    return times


def _delays(follower: Any, times: list[float], first_id: int) -> tuple[list[float], int]:
    ids, seen = list(follower.ids), list(follower.times)
    out, missing = [], 0
    for i, written in enumerate(times):
        k = bisect_left(ids, first_id + i)
        if k == len(ids):
            missing += 1
        else:
            out.append(seen[k] - written)
    return out, missing


async def latency(server: h.Server, meter: h.CpuMeter, *, rate: float,
                  duration: float) -> dict[str, Any]:
    """A job writing `rate` lines/s to its output file for `duration` s, the shipper
    following it, one SSE follower: write -> on the stream. Baseline: the same pacing
    POSTed straight to the ingest (no file, no shipper)."""
    wf, direct = str(uuid.uuid4()), str(uuid.uuid4())
    await h.seed(server.url, [wf, direct])  # id 1 of each: the streams can open
    result: dict[str, Any] = {"rate": rate, "duration": duration}
    with tempfile.TemporaryDirectory() as tmp:
        out, done = Path(tmp, "job.out"), Path(tmp, "job.exit")
        out.touch()
        proc = _start(server, wf, str(Path(tmp, "spool")), str(out),
                      "--exit-code-file", str(done))
        try:
            follower = await open_follower(server.url, f"/api/workflows/{wf}/logs/stream")
            c0 = meter.sample()
            with open(out, "a") as f:

                async def to_file(first: int, n: int) -> None:
                    f.write("".join(LINE.format(i=i) + "\n" for i in range(first, first + n)))
                    f.flush()

                times = await _paced(rate, duration, to_file)
            await asyncio.wait_for(follower.reached(1 + len(times)), 120)
            c1 = meter.sample()
            follower.close()
            done.write_text("0\n")
            await asyncio.to_thread(proc.wait, 120)
        finally:
            proc.kill()
    delays, missing = _delays(follower, times, 2)
    result.update(h.summary_ms(delays), undelivered=missing, cpu=h.CpuMeter.share(c0, c1))
    follower = await open_follower(server.url, f"/api/workflows/{direct}/logs/stream")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

        async def to_ingest(first: int, n: int) -> None:
            await h.post(client, h.body(_events(direct, first, n)))

        times = await _paced(rate, duration, to_ingest)
    await asyncio.wait_for(follower.reached(1 + len(times)), 120)
    follower.close()
    delays, _ = _delays(follower, times, 2)
    result["direct"] = h.summary_ms(delays)
    return result
