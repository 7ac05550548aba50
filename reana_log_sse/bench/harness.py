"""What every scenario stands on: the database, the service in its own process, the
commit log (NOTIFY payloads), CPU accounting and Vector-shaped batches."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import uuid
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg

from reana_log_sse.store.db import NOTIFY_CHANNEL, conninfo

TOKEN = "bench-ingest-token"
BENCH_DB = "reana_log_sse_bench"
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip",
           "Authorization": f"Bearer {TOKEN}"}


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- database ------------------------------------------------------------------------------

@contextlib.contextmanager
def database(url: str | None, data_dir: Path) -> Iterator[tuple[str, bool]]:
    """(url, embedded): the given database, or a fresh database on an embedded server."""
    if url:
        yield url, False
        return
    from reana_log_sse.store.embedded import embedded_postgres

    with embedded_postgres(data_dir, database="postgres") as admin:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
        yield psycopg.conninfo.make_conninfo(admin, dbname=BENCH_DB), True


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def machine_info(url: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "postgresql": server_version(url),
        "os": f"{platform.system()} {platform.release()}",
    }


# -- the service ---------------------------------------------------------------------------

class Server:
    """`reana-log-sse serve` in its own process (not sharing the load generator's GIL)."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None,
                 tree: Path | None = None) -> None:
        self.tree = tree  # run the service from this source tree (cwd and PYTHONPATH)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.env = {**os.environ, "REANA_LOG_SSE_INGEST_TOKENS": TOKEN,
                    "REANA_LOG_SSE_AUTH": "none", "REANA_LOG_SSE_END_GRACE_SECONDS": "0.5",
                    **(env or {}), **({"PYTHONPATH": str(tree)} if tree else {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "reana_log_sse", "serve", "--port", str(self.port),
               "--database-url", self.database_url, "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, cwd=self.tree)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    async def metric(self, name: str) -> float:
        """Sum of a Prometheus series (all labels) from /metrics."""
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(self.url + "/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def db_reads(self) -> float:
        """The feeds' reads (or the handoffs of a local commit's lines that take their
        place, follow/handoff.py) and the followers' catch-up reads."""
        return (await self.metric("reana_log_sse_feed_reads_total")
                + await self.metric("reana_log_sse_feed_handoffs_total")
                + await self.metric("reana_log_sse_catchup_reads_total"))


class CpuMeter:
    """CPU seconds used by the service, its PostgreSQL, the load generator, and anything
    else on the machine (other users' processes disturb the figures: this shows it)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.me = psutil.Process()
        self.postmaster: psutil.Process | None = None
        with contextlib.suppress(psycopg.Error, psutil.Error), \
                psycopg.connect(conninfo(server.database_url)) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            backend = psutil.Process(int(row[0])) if row else None
            if backend is not None and backend.name() in ("postgres", "postmaster"):
                self.postmaster = backend.parent()

    def _pg_seconds(self) -> float:
        """The postmaster, its live children, and its exited children (which the kernel
        adds to the postmaster's children times), so the sum never goes down."""
        pm = self.postmaster
        if pm is None:
            return 0.0
        try:
            t = pm.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for child in pm.children():
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        except psutil.Error:
            return 0.0
        return total

    def sample(self) -> tuple[float, dict[str, float]]:
        assert self.server.ps is not None
        s, m = self.server.ps.cpu_times(), self.me.cpu_times()
        ours = {"service": s.user + s.system, "postgres": self._pg_seconds(),
                "loadgen": m.user + m.system + m.children_user + m.children_system}
        sys_t = psutil.cpu_times()
        busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
        return time.monotonic(), {**ours, "other": busy - sum(ours.values())}

    @staticmethod
    def share(a: tuple[float, dict[str, float]],
              b: tuple[float, dict[str, float]]) -> dict[str, float]:
        """% of one core each used between two samples."""
        wall = max(1e-9, b[0] - a[0])
        return {k: max(0, round(100 * (b[1][k] - a[1][k]) / wall)) for k in a[1]}


# -- when each line was committed -------------------------------------------------------------

class CommitLog:
    """Listens on the service's channel: each NOTIFY carries, per workflow, the last id
    of a committed batch and the time (`t`) taken just before COMMIT."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.seqs: dict[str, array[int]] = {}
        self.times: dict[str, array[float]] = {}
        self.delays = array("d")  # NOTIFY received here - t: commit + delivery
        self.delay_at = array("d")
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> CommitLog:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with await psycopg.AsyncConnection.connect(conninfo(self.url),
                                                         autocommit=True) as conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._ready.set()
            async for n in conn.notifies():
                now = time.time()
                msg = orjson.loads(n.payload)
                t = msg.get("t")
                if t is not None:
                    self.delays.append(now - t)
                    self.delay_at.append(t)
                for wf, seq in msg.get("w", {}).items():
                    if wf not in self.seqs:
                        self.seqs[wf], self.times[wf] = array("q"), array("d")
                    self.seqs[wf].append(seq)
                    self.times[wf].append(t)

    def last(self, wf: str) -> int:
        seqs = self.seqs.get(wf)
        return seqs[-1] if seqs else 0

    def notify_delays(self, t0: float, t1: float) -> list[float]:
        """Commit + NOTIFY delivery delays of the batches committed in [t0, t1]."""
        return [d for d, t in zip(self.delays, self.delay_at, strict=True) if t0 <= t <= t1]

    def latencies(self, wf: str, ids: Sequence[int], times: Sequence[float], t0: float,
                  t1: float) -> tuple[list[float], int]:
        """Commit -> parsed delays of the batches of `wf` committed in [t0, t1], given a
        follower's (id, time) arrivals; and how many of them never arrived."""
        seqs, commits = self.seqs.get(wf, array("q")), self.times.get(wf, array("d"))
        lo, hi = bisect_left(commits, t0), bisect_right(commits, t1)
        return arrivals(seqs[lo:hi], commits[lo:hi], ids, times)

    def posted(self, wf: str, posts: Sequence[tuple[float, float]]
               ) -> tuple[list[int], list[float]]:
        """Per POST (time before it, time after its answer), the last id of `wf` it
        committed and the time before it: a POST's commit lies inside its span."""
        seqs, commits = self.seqs.get(wf, array("q")), self.times.get(wf, array("d"))
        out_seqs: list[int] = []
        out_times: list[float] = []
        for before, after in posts:
            lo, hi = bisect_left(commits, before), bisect_right(commits, after)
            if hi > lo:
                out_seqs.append(max(seqs[lo:hi]))
                out_times.append(before)
        return out_seqs, out_times


def arrivals(seqs: Sequence[int], starts: Sequence[float], ids: Sequence[int],
             times: Sequence[float]) -> tuple[list[float], int]:
    """For batches (last id, start time) in id order and a follower's (id, time)
    arrivals: each batch's delay to the first arrival that reaches its id, and how many
    batches never arrived."""
    out, missing, j = [], 0, 0
    for seq, start in zip(seqs, starts, strict=True):
        j = bisect_left(ids, seq, j)
        if j == len(ids):
            missing += 1
            continue
        out.append(times[j] - start)
    return out, missing



async def delivery_stats(held: Sequence[Any], sent: Sequence[tuple[float, int]], batch: int,
                         seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """A paced run's figures, the same for every server (ours' floor, a peer): once each
    follower reached the last batch sent (or 30 s passed), each batch's delay to each
    follower, the batches that never arrived, the rate achieved and the server's CPU
    per follower per batch."""
    last = sent[-1][1] if sent else 0
    for f in held:
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(f.reached(last), 30)
    samples: list[float] = []
    missing = 0
    seqs, starts = [seq for _, seq in sent], [t for t, _ in sent]
    for f in held:
        got, lost = arrivals(seqs, starts, f.ids, f.times)
        samples += got
        missing += lost
    deliveries = max(1, len(held) * len(sent))
    return {"batches": len(sent), "undelivered": missing, **summary_ms(samples),
            "achieved_rate": len(sent) * batch / max(1e-9, seconds),
            "cpu_us_per_delivery": cpu_seconds / deliveries * 1e6,
            "cpu_share": 100 * cpu_seconds / max(1e-9, seconds)}

# -- Vector-shaped batches ------------------------------------------------------------------

_TEXT = ("INFO  [fitdata] iteration {i}: chi2/ndf = 1.0{r:03d}, "
         "params = [0.4{r:02d}, 12.{r:03d}, 7.1e-3] converged")


def events(workflows: Sequence[str], n: int, start: int = 0, *,
           stamp: str | None = None) -> list[dict[str, Any]]:
    """n compact events (as vector/vector.yaml emits them), round robin over workflows."""
    now = dt.datetime.now(dt.UTC)
    ts = stamp or now.strftime("%Y-%m-%dT%H:%M:%S.%f")
    out = []
    for i in range(start, start + n):
        wf = workflows[i % len(workflows)]
        job = f"reana-run-job-{wf[:8]}"
        out.append({
            "workflow_id": wf, "kind": "job", "job_id": job, "step": "fitdata",
            "pod": f"{job}-x7k2p", "container": "job", "stream": "stdout",
            "timestamp": f"{ts}{i % 1000:03d}Z", "collected_at": f"{ts}Z",
            "message": _TEXT.format(i=i, r=i % 997),
        })
    return out


def body(evts: list[dict[str, Any]]) -> bytes:
    return gzip.compress(orjson.dumps(evts), compresslevel=6)


def new_workflows(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def post(client: httpx.AsyncClient, data: bytes) -> dict[str, Any]:
    for attempt in range(20):  # as Vector: retry 5xx and 429
        r = await client.post("/ingest/vector", content=data, headers=HEADERS)
        if r.status_code < 500 and r.status_code != 429:
            r.raise_for_status()
            return dict(r.json())
        await asyncio.sleep(0.1 * (attempt + 1))
    raise RuntimeError(f"ingest kept failing: {r.status_code} {r.text}")


async def seed(base_url: str, workflows: Sequence[str]) -> None:
    """One line per workflow, so that streams of them open (unknown workflows are 404)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for i in range(0, len(workflows), 500):
            chunk = workflows[i:i + 500]
            await post(client, body(events(chunk, len(chunk), stamp=None)))


def frame_bytes() -> int:
    """The size of one `log` frame of a line of events(), as the service sends it."""
    from reana_log_sse.store.lines import Line

    e = events(new_workflows(1), 1, 123_456)[0]
    when = dt.datetime.fromisoformat(e["timestamp"][:26]).replace(tzinfo=dt.UTC)
    line = Line(1_234_567, e["workflow_id"], e["kind"], e["job_id"], e["step"], e["stream"],
                when, e["message"], False)
    return len(line.frame)


async def paced(send: Callable[[int], Awaitable[None]], rate: float, duration: float,
                batch: int) -> int:
    """Call `send(lines sent so far)` for one `batch`-line batch every `batch / rate`
    seconds for `duration` seconds; returns the lines sent. One sender: when a send takes
    longer than its interval the achieved rate falls short, which callers report. Our
    ingest and the nchan peer (bench/nchan.py) are paced by this same loop."""
    interval = batch / rate
    sent = 0
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < duration:
        await send(sent)
        sent += batch
        k += 1
        delay = t0 + k * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def paced_ingest(base_url: str, workflows: Sequence[str], rate: float, duration: float,
                       batch: int, posts: list[tuple[float, float]] | None = None) -> int:
    """Post `rate` lines/s for `duration` seconds, `batch` lines per POST, spread round
    robin over `workflows`. Returns the lines posted. `posts` gets each POST's
    (time.time() just before it, just after its answer): its commit lies between."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async def send(sent: int) -> None:
            data = body(events(workflows, batch, sent))
            t = time.time()
            await post(client, data)
            if posts is not None:
                posts.append((t, time.time()))

        return await paced(send, rate, duration, batch)


# -- statistics -----------------------------------------------------------------------------

def pct(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of already sorted samples."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"n": len(s), "p50": 1000 * pct(s, 50), "p99": 1000 * pct(s, 99),
            "max": 1000 * s[-1] if s else math.nan}
