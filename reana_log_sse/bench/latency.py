"""Scenarios 2 and 5: delivery latency at N followers vs the NOTIFY floor, and the
polling baseline (today's REANA way) vs SSE, with the database reads of each."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson
import psycopg

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import Follower, KeepAlive, close_all, open_followers
from reana_log_sse.store.db import conninfo


class _Arrivals(asyncio.Protocol):
    def __init__(self) -> None:
        self.times: list[tuple[float, bytes]] = []
        self.got = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        for line in data.splitlines():
            self.times.append((now, line))
        self.got.set()


async def floor(database_url: str, samples: int) -> dict[str, Any]:
    """A bare NOTIFY round trip plus one socket write: the time is taken just before a
    committed `NOTIFY`; a LISTEN connection writes the payload to a loopback TCP socket;
    the reader timestamps its arrival."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.StreamWriter] = loop.create_future()

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    transport, arrivals = await loop.create_connection(_Arrivals, "127.0.0.1", port)
    writer = await accepted
    listen = await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True)
    send = await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True)
    await listen.execute("LISTEN bench_floor")

    async def relay() -> None:
        async for n in listen.notifies():
            writer.write(n.payload.encode() + b"\n")

    task = asyncio.create_task(relay())
    try:
        for _ in range(samples):
            arrivals.got.clear()
            await send.execute("SELECT pg_notify('bench_floor', %s)", (repr(time.time()),))
            await asyncio.wait_for(arrivals.got.wait(), 10)
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listen.close()
        await send.close()
        transport.close()
        writer.close()
        srv.close()
    return h.summary_ms([t - float(p) for t, p in arrivals.times])


async def _settle(server: h.Server, timeout: float = 60) -> None:
    """Wait until the service has closed every stream of the previous run."""
    deadline = time.monotonic() + timeout
    while await server.metric("reana_log_sse_active_streams") > 0:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)


async def sse_run(server: h.Server, meter: h.CpuMeter, commits: h.CommitLog, *,
                  followers: int, workflows: int, rate: float, duration: float,
                  batch: int, layout: str,
                  measured: Callable[[], contextlib.AbstractContextManager[None]] =
                  contextlib.nullcontext) -> dict[str, Any]:
    """`followers` streams spread over `workflows` workflows while ingest runs at `rate`
    lines/s: commit -> parsed latency (and POST -> parsed: `from_post`), completeness,
    database reads, CPU seconds, RSS."""
    wfs = h.new_workflows(workflows)
    await h.seed(server.url, wfs)
    rss0 = server.rss()
    t_open = time.perf_counter()
    paths = [f"/api/workflows/{wfs[i % workflows]}/logs/stream" for i in range(followers)]
    streams, refused = await open_followers(server.url, paths)
    open_seconds = time.perf_counter() - t_open
    try:
        await asyncio.sleep(0.5)
        reads0 = await server.db_reads()
        c0 = meter.sample()
        t0 = time.time()
        posts: list[tuple[float, float]] = []
        with measured():  # e.g. a profiler, over the live phase only
            sent = await h.paced_ingest(server.url, wfs, rate, duration, batch, posts)
        t1 = time.time()
        c1 = meter.sample()
        rss1 = server.rss()
        deadline = time.monotonic() + max(30.0, 2 * duration)
        for f in streams:  # drain: everything committed must arrive
            left = deadline - time.monotonic()
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(f.reached(commits.last(_wf(f))), max(left, 0.01))
        reads1 = await server.db_reads()
        samples: list[float] = []
        from_post: list[float] = []
        missing = 0
        posted = {wf: commits.posted(wf, posts) for wf in wfs}
        for f in streams:
            got, lost = commits.latencies(_wf(f), f.ids, f.times, t0, t1)
            samples += got
            missing += lost
            from_post += h.arrivals(*posted[_wf(f)], f.ids, f.times)[0]
    finally:
        close_all(streams)
    await _settle(server)
    return {"layout": layout, "followers": followers, "workflows": workflows, "rate": rate,
            "sent": sent, "seconds": t1 - t0, "achieved_rate": sent / max(1e-9, t1 - t0),
            **h.summary_ms(samples), "undelivered": missing,
            "from_post": h.summary_ms(from_post), "batches": len(posts),
            "notify": h.summary_ms(commits.notify_delays(t0, t1)),
            "db_reads_per_s": (reads1 - reads0) / (t1 - t0), "cpu": h.CpuMeter.share(c0, c1),
            "cpu_seconds": {k: c1[1][k] - c0[1][k] for k in c0[1]},
            "rss_per_follower_kib": (rss1 - rss0) / max(1, len(streams)) / 1024,
            "connects_per_s": followers / open_seconds, "opened": len(streams),
            "refused": len(refused), "refusals": sorted(set(refused))[:5]}


def _wf(stream: Follower) -> str:
    """The workflow id in a stream's request line."""
    return stream.request.split(b"/api/workflows/", 1)[1].split(b"/", 1)[0].decode()


async def polling_run(server: h.Server, meter: h.CpuMeter, commits: h.CommitLog, *,
                      clients: int, interval: float, rate: float, duration: float,
                      batch: int) -> dict[str, Any]:
    """`clients` pollers of one workflow, each GET /logs?since= every `interval` s."""
    wf = h.new_workflows(1)[0]
    await h.seed(server.url, [wf])
    stop = asyncio.Event()
    arrivals: list[tuple[array[int], array[float]]] = []
    requests = 0

    async def poller() -> None:
        nonlocal requests
        ids, times = array("q"), array("d")
        arrivals.append((ids, times))
        conn = KeepAlive(server.url)
        since = commits.last(wf)
        await asyncio.sleep(random.uniform(0, interval))
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                status, data = await conn.get(
                    f"/api/workflows/{wf}/logs?format=json&limit=10000&since={since}")
                now = time.time()
                requests += 1
                if status == 200:
                    nxt = orjson.loads(data)["next_since"]
                    if nxt is not None and nxt > since:
                        since = nxt
                        ids.append(nxt)
                        times.append(now)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            await conn.close()

    tasks = [asyncio.create_task(poller()) for _ in range(clients)]
    try:
        await asyncio.sleep(interval + 0.2)
        c0 = meter.sample()
        r0, t0 = requests, time.time()
        sent = await h.paced_ingest(server.url, [wf], rate, duration, batch)
        t1 = time.time()
        r1 = requests
        c1 = meter.sample()
        await asyncio.sleep(2 * interval)  # the last lines are fetched by the next polls
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    samples: list[float] = []
    missing = 0
    for ids, times in arrivals:
        got, lost = commits.latencies(wf, ids, times, t0, t1)
        samples += got
        missing += lost
    return {"followers": clients, "interval": interval, "sent": sent, "seconds": t1 - t0,
            **h.summary_ms(samples), "undelivered": missing,
            "db_reads_per_s": (r1 - r0) / (t1 - t0), "cpu": h.CpuMeter.share(c0, c1)}
