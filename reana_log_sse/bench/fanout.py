"""Scenario 3: how many streams one service process holds, and RSS per stream, vs a bare
asyncio server holding as many connections."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import psutil

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import close_all, open_followers

# A bare SSE holder: answers each connection with headers and one frame, then keeps a
# task waiting on it. What one idle stream costs an asyncio process with nothing else.
_BARE = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
FRAME = b"retry: 2000\n\n"
async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEAD + b"%x\r\n" % len(FRAME) + FRAME + b"\r\n")
    await reader.read()
    writer.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def bare_rss_per_stream(streams: int) -> float:
    proc = subprocess.Popen([sys.executable, "-c", _BARE], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(await asyncio.to_thread(proc.stdout.readline))
        ps = psutil.Process(proc.pid)
        rss0 = ps.memory_info().rss
        held, _ = await open_followers(f"http://127.0.0.1:{port}", ["/"] * streams)
        await asyncio.sleep(0.5)
        rss1 = ps.memory_info().rss
        close_all(held)
        return (rss1 - rss0) / streams
    finally:
        proc.kill()
        proc.wait()


async def fanout(server: h.Server, meter: h.CpuMeter, *, streams: int,
                 workflows: int) -> dict[str, Any]:
    """Open `streams` streams over `workflows` workflows, deliver one line to each."""
    wfs = h.new_workflows(workflows)
    await h.seed(server.url, wfs)
    await asyncio.sleep(0.5)
    rss0 = server.rss()
    c0 = meter.sample()
    t0 = time.perf_counter()
    held, refused = await open_followers(
        server.url, [f"/api/workflows/{wfs[i % workflows]}/logs/stream" for i in range(streams)])
    open_seconds = time.perf_counter() - t0
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            t1 = time.perf_counter()
            await h.post(client, h.body(h.events(wfs, workflows, 1000)))
            delivered = 0
            for f in held:  # every stream gets its workflow's new line (id 2)
                try:
                    await asyncio.wait_for(f.reached(2), max(0.01, 60 - (time.perf_counter() - t1)))
                    delivered += 1
                except (TimeoutError, ConnectionError):
                    pass
            deliver_seconds = time.perf_counter() - t1
        c1 = meter.sample()
        await asyncio.sleep(0.5)
        rss1 = server.rss()
        active = await server.metric("reana_log_sse_active_streams")
    finally:
        close_all(held)
    bare = await bare_rss_per_stream(streams)
    return {"streams": streams, "workflows": workflows, "open_seconds": open_seconds,
            "connects_per_s": streams / open_seconds, "delivered": delivered,
            "deliver_seconds": deliver_seconds, "active": active, "rss_before": rss0,
            "rss_after": rss1, "rss_per_stream": (rss1 - rss0) / max(1, len(held)),
            "refused": len(refused), "refusals": sorted(set(refused))[:5],
            "bare_rss_per_stream": bare, "cpu": h.CpuMeter.share(c0, c1)}


OPEN_GOAL_SECONDS = 2.0  # issue 22: 5,000 streams opened within 2 s


async def opening(server: h.Server, meter: h.CpuMeter, *, streams: int,
                  workflows: int) -> dict[str, Any]:
    """`streams` streams opened at once over `workflows` workflows (each with one stored
    line), timed from the first connect until every stream has sent its first frame
    (headers and its opening chunk) and then a line posted after that has reached every
    one of them: the streams are live, not just answered. The streams are opened by
    bench/opener.py in its own process (uvloop, every connect in flight), so that this
    process's loop is not the limit; its CPU counts as the load generator's."""
    wfs = h.new_workflows(workflows)
    await h.seed(server.url, wfs)
    await asyncio.sleep(0.5)
    reads0 = await server.db_reads()
    opens0 = await server.metric("reana_log_sse_opening_reads_total")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reana_log_sse.bench.opener", stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        paths = [f"/api/workflows/{wfs[i % workflows]}/logs/stream" for i in range(streams)]
        c0 = meter.sample()
        proc.stdin.write(json.dumps({"url": server.url, "paths": paths, "until": 2}).encode()
                         + b"\n")
        await proc.stdin.drain()
        first = json.loads(await proc.stdout.readline())
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            await h.post(client, h.body(h.events(wfs, workflows, 1000)))
        live = json.loads(await proc.stdout.readline())  # every stream got its new line
        c1 = meter.sample()
    finally:
        proc.stdin.close()
        await proc.wait()
    reads = await server.db_reads() - reads0
    opening_reads = await server.metric("reana_log_sse_opening_reads_total") - opens0
    # the opener is this process's child, not waited for yet at c1: its CPU moves from
    # "other" to the load generator
    cpu = h.CpuMeter.share(c0, c1)
    moved = round(100 * live["cpu_seconds"] / max(1e-9, c1[0] - c0[0]))
    cpu["loadgen"] += moved
    cpu["other"] = max(0, cpu["other"] - moved)
    seconds = first["first_seconds"] + live["live_seconds"]
    return {"streams": streams, "workflows": workflows, "seconds": seconds,
            "first_seconds": first["first_seconds"], "live_seconds": live["live_seconds"],
            "rate": streams / seconds, "opened": first["opened"], "live": live["live"],
            "refused": first["refused"], "refusals": first["errors"],
            "db_reads": reads, "opening_reads": opening_reads, "cpu": cpu,
            "service_cpu_us_per_stream":
                (c1[1]["service"] - c0[1]["service"]) / streams * 1e6,
            "loadgen_cpu_us_per_stream": live["cpu_seconds"] / streams * 1e6}
