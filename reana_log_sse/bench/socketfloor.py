"""The fan-out floor: what delivering one committed batch to N followers costs a bare
asyncio process that does nothing else.

A subprocess (like the service, it does not share the load generator's GIL) holds N
HTTP connections and one LISTEN connection. On each NOTIFY it writes the same bytes the
service would write for a batch (the batch's frames, as one HTTP chunk) to every socket
with `transport.write`. The load generator sends the NOTIFYs at the latency run's pace
(time taken just before each, committed) and its followers, the same raw sockets as the
latency runs use, timestamp each complete frame. So the floor and the service are timed
by the same clock, the same readers and the same machine, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import Any

import orjson
import psycopg

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import close_all, open_followers
from reana_log_sse.store.db import conninfo

CHANNEL = "bench_socket_floor"

# argv: database URL, lines per batch, bytes per frame. Prints its port, then serves.
_BARE = r"""
import asyncio, json, resource, sys
import psycopg
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
URL, LINES, SIZE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
socks = []
def chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"
def batch(last):
    out = []
    for seq in range(last - LINES + 1, last + 1):
        head = b"event: log\nid: %d\ndata: " % seq
        out.append(head + b"x" * max(1, SIZE - len(head) - 2) + b"\n\n")
    return chunk(b"".join(out))
async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEAD + chunk(b"retry: 2000\n\n"))
    socks.append(writer.transport)
    await reader.read()
    socks.remove(writer.transport)
    writer.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    await conn.execute("LISTEN @CHANNEL@")
    print(srv.sockets[0].getsockname()[1], flush=True)
    async for n in conn.notifies():
        data = batch(json.loads(n.payload)["seq"])
        for t in socks:
            t.write(data)
asyncio.run(main())
""".replace("@CHANNEL@", CHANNEL)


async def socket_floor(database_url: str, *, followers: int, rate: float, duration: float,
                       batch: int, frame_bytes: int) -> dict[str, Any]:
    """p50/p99 of commit -> parsed for `followers` sockets written by a bare asyncio
    process, at `rate` lines/s in `batch`-line batches of `frame_bytes`-byte frames."""
    proc = subprocess.Popen([sys.executable, "-c", _BARE, conninfo(database_url), str(batch),
                             str(frame_bytes)], stdout=subprocess.PIPE)
    held: list[Any] = []
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60))
        held, refused = await open_followers(f"http://127.0.0.1:{port}", ["/"] * followers)
        await asyncio.sleep(0.5)
        sent: list[tuple[float, int]] = []
        interval = batch / rate
        async with await psycopg.AsyncConnection.connect(conninfo(database_url),
                                                         autocommit=True) as conn:
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < duration:
                k += 1
                t = time.time()
                await conn.execute("SELECT pg_notify(%s, %s)",
                                   (CHANNEL, orjson.dumps({"seq": k * batch}).decode()))
                sent.append((t, k * batch))
                delay = t0 + k * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        last = sent[-1][1] if sent else 0
        for f in held:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(f.reached(last), 30)
        samples, missing = [], 0
        for f in held:
            j = 0
            for t, seq in sent:
                while j < len(f.ids) and f.ids[j] < seq:
                    j += 1
                if j == len(f.ids):
                    missing += 1
                    continue
                samples.append(f.times[j] - t)
        return {"followers": followers, "opened": len(held), "refused": len(refused),
                "batches": len(sent), "undelivered": missing, **h.summary_ms(samples)}
    finally:
        close_all(held)
        proc.kill()
        proc.wait()
