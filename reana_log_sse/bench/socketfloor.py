"""The fan-out floor: what delivering one committed batch to N followers costs a bare
asyncio process that does nothing else.

A subprocess (bench/floorserver.py; like the service, it does not share the load
generator's GIL) holds N HTTP connections and one LISTEN connection. On each NOTIFY it
writes the same bytes the service would write for a batch (the batch's frames, as one
HTTP chunk) to every socket with `transport.write`, with flow control: a follower whose
transport is paused is owed its batches and gets them joined when it resumes, so its
buffer stays bounded in bytes (floorserver.py says how). The load generator sends the
NOTIFYs at the latency run's pace (time taken just before each, committed) and its
followers, the same raw sockets as the latency runs use, timestamp each complete frame.
So the floor and the service are timed by the same clock, the same readers and the same
machine, in the same run. The floor's own CPU time, per follower per batch, is the
figure a busy machine disturbs least.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import close_all, open_followers
from reana_log_sse.store.db import conninfo

CHANNEL = "bench_socket_floor"
SERVER = Path(__file__).with_name("floorserver.py")


class FloorProcess:
    """bench/floorserver.py in its own process: its port, its CPU time, its figures."""

    def __init__(self, database_url: str, batch: int, frame_bytes: int) -> None:
        self.url = conninfo(database_url)
        self.proc = subprocess.Popen([sys.executable, str(SERVER), self.url, str(batch),
                                      str(frame_bytes), CHANNEL], stdout=subprocess.PIPE)
        self.port = 0

    async def start(self) -> str:
        self.port = int(await self._line())
        return f"http://127.0.0.1:{self.port}"

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        if not line:
            raise RuntimeError(f"the floor server exited ({self.proc.poll()})")
        return line.decode()

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    async def stats(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        """Its per-follower figures, asked for after the batches (NOTIFYs keep order)."""
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, '{"stats": 1}'))
        return dict(json.loads(await self._line()))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def socket_floor(database_url: str, *, followers: int, rate: float, duration: float,
                       batch: int, frame_bytes: int) -> dict[str, Any]:
    """p50/p99 of commit -> parsed for `followers` sockets written by a bare asyncio
    process, at `rate` lines/s in `batch`-line batches of `frame_bytes`-byte frames."""
    floor = FloorProcess(database_url, batch, frame_bytes)
    held: list[Any] = []
    try:
        base = await floor.start()
        held, refused = await open_followers(base, ["/"] * followers)
        await asyncio.sleep(0.5)
        sent: list[tuple[float, int]] = []
        async with await psycopg.AsyncConnection.connect(conninfo(database_url),
                                                         autocommit=True) as conn:
            async def send(lines: int) -> None:
                t = time.time()
                seq = lines + batch
                await conn.execute("SELECT pg_notify(%s, %s)",
                                   (CHANNEL, orjson.dumps({"seq": seq}).decode()))
                sent.append((t, seq))

            cpu0, t0 = floor.cpu_seconds(), time.monotonic()
            await h.paced(send, rate, duration, batch)
            cpu1, t1 = floor.cpu_seconds(), time.monotonic()
            stats = await h.delivery_stats(held, sent, batch, t1 - t0, cpu1 - cpu0)
            stats.update(await floor.stats(conn))
        return {"followers": followers, "opened": len(held), "refused": len(refused),
                "rate": rate, **stats}
    finally:
        close_all(held)
        floor.stop()


def note(f: dict[str, Any]) -> str:
    """The floor's flow control and CPU: per-follower buffers stay bounded in bytes."""
    rate = f.get("achieved_rate")
    return "; ".join(x for x in (
        f"RATE MISSED: {rate:,.0f} of {f['rate']:,.0f} lines/s sent (the load generator's "
        "loop was busy)" if rate is not None and rate < 0.95 * f.get("rate", 0) else "",
        f"{f['undelivered']:,} batch deliveries missing" if f["undelivered"] else "",
        f"max buffered per follower {f['max_buffered'] / 1024:,.0f} KiB (bound "
        f"{f['bound'] / 1024:,.0f} KiB; {f['paused']:,} paused, {f['joined_batches']:,} "
        "batches sent joined)" if "max_buffered" in f else "",
        f"floor CPU {f['cpu_us_per_delivery']:.1f} µs per follower per batch"
        if "cpu_us_per_delivery" in f else "") if x)
