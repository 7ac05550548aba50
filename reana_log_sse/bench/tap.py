"""Scenario 7: write -> follower for a quiet job's line, through the live tap and through
Vector.

Tap: a real service (`serve` with REANA_LOG_SSE_KUBERNETES=on) follows a running job pod
of the fake apiserver (tests/fake_apiserver.py, so a source checkout) through
kubernetes-asyncio; each sample is one line the fake's kubelet writes, timed from the
write to its arrival at an SSE follower.

Vector: its file reader is not run here; its idle behaviour is simulated from its source
(vectordotdev/vector 0.57):
- lib/file-source/src/file_watcher/mod.rs `should_read()`: `last_read_success.elapsed() <
  10 s || last_read_attempt.elapsed() > 10 s`: a file idle for 10 s or more is read only
  when the last attempt is more than 10 s old;
- lib/file-source/src/file_server.rs: when a pass over the files reads nothing, the loop
  sleeps with a backoff doubling up to 2,048 ms.
On a quiet node the loop wakes every 2.048 s, so an idle file is tried every 5 wakes
(10.24 s); a line written at a uniformly random moment waits U(0, 10.24 s) to be read,
then up to vector.yaml's `batch.timeout_secs: 0.2`. The rest (POST, commit, NOTIFY,
fan-out) is measured: each sample is one real POST timed to its arrival at a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import Follower, close_all, open_followers
from reana_log_sse.client import SSEDecoder

ATTEMPT_PERIOD = 5 * 2.048  # seconds between read attempts of an idle file, quiet node
BATCH_TIMEOUT = 0.2  # vector/vector.yaml sinks.reana_log_sse.batch.timeout_secs


def _fake_apiserver() -> Any:
    root = Path(__file__).resolve().parents[2]
    if not (root / "tests" / "fake_apiserver.py").exists():
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import tests.fake_apiserver as fake  # a source checkout's test fake

    return fake


class _Arrivals:
    """One SSE stream; the arrival time of each message."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        import orjson

        decoder = SSEDecoder()
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client, \
                client.stream("GET", self.url) as response:
            async for chunk in response.aiter_raw():
                now = time.perf_counter()
                for name, data, _ in decoder.feed(chunk):
                    if name == b"log":
                        self.times[orjson.loads(data)["message"]] = now
                self.changed.set()

    async def wait(self, message: str, timeout: float = 30.0) -> float:
        async def loop() -> float:
            while message not in self.times:
                self.changed.clear()
                await self.changed.wait()
            return self.times[message]

        return await asyncio.wait_for(loop(), timeout)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await self.task


async def tap_vs_vector(database_url: str, *, samples: int, seed: int = 7,
                        tree: Path | None = None) -> dict[str, Any]:
    fake_mod = _fake_apiserver()
    if fake_mod is None:
        return {"skipped": "needs a source checkout (tests/fake_apiserver.py)"}
    rng = random.Random(seed)
    wf, vector_wf = uuid.uuid4(), str(uuid.uuid4())
    job = "reana-run-job-bench"
    pod = f"{job}-abcde"
    with fake_mod.running() as fake, tempfile.TemporaryDirectory() as tmp:
        config = fake.kubeconfig(Path(tmp) / "kubeconfig")
        server = h.Server(database_url, tree=tree, env={"REANA_LOG_SSE_KUBERNETES": "on",
                                             "KUBECONFIG": str(config),
                                             "REANA_LOG_SSE_WAIT_FOR_UNKNOWN": "true"}).start()
        try:
            fake.put_pod(fake_mod.job_pod(wf, job, phase="Running", state="running"))
            await h.seed(server.url, [vector_wf])
            tapped = _Arrivals(f"{server.url}/api/workflows/{wf}/logs/stream")
            shipped = _Arrivals(f"{server.url}/api/workflows/{vector_wf}/logs/stream")
            deadline = time.monotonic() + 30
            while fake.follows() < 1:  # the tap opened its follow
                if time.monotonic() > deadline:
                    raise RuntimeError("the tap did not open a follow in 30 s")
                await asyncio.sleep(0.02)
            tap_ms, ingest_ms, vector_ms = [], [], []
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                pause = random.Random(seed + 1)
                for i in range(samples):
                    # quiet: longer than the tap's window since its last line (the first
                    # chunk after a quiet window is stored at once, store/coalesce.py)
                    await asyncio.sleep(pause.uniform(0.05, 0.15))
                    message = f"quiet line {i}"
                    t0 = time.perf_counter()
                    fake.write(pod, "job", message, time.time_ns())
                    tap_ms.append(1000 * (await tapped.wait(message) - t0))
                    t0 = time.perf_counter()
                    await h.post(client, h.body([{
                        "workflow_id": vector_wf, "kind": "job", "job_id": job, "pod": pod,
                        "container": "job", "stream": "stdout",
                        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "message": message}]))
                    measured = await shipped.wait(message) - t0
                    ingest_ms.append(1000 * measured)
                    simulated = rng.uniform(0, ATTEMPT_PERIOD) + rng.uniform(0, BATCH_TIMEOUT)
                    vector_ms.append(1000 * (simulated + measured))
            await tapped.close()
            await shipped.close()
            tapped_lines = await server.metric("reana_log_sse_tap_lines_total")
        finally:
            server.stop()
    return {"samples": samples, "tap": h.summary_ms([x / 1000 for x in sorted(tap_ms)]),
            "vector": h.summary_ms([x / 1000 for x in sorted(vector_ms)]),
            "ingest": h.summary_ms([x / 1000 for x in sorted(ingest_ms)]),
            "tapped_lines": tapped_lines}


async def busy(database_url: str, commits: h.CommitLog, *, follows: int, rate: float,
               seconds: float, tree: Path | None = None, seed: int = 7,
               measured: Callable[[int], contextlib.AbstractContextManager[None]] =
               lambda pid: contextlib.nullcontext()) -> dict[str, Any]:
    """`follows` running job pods (one workflow each, each followed), each writing `rate`
    lines/s, and one quiet pod: NOTIFYing commits/s (counted by `commits`, the bench's
    LISTEN), the service's CPU, and write -> follower for single lines on the quiet pod,
    one every 0.1-0.3 s. tree: the service's source tree (--service-tree); measured: given
    this scenario's service pid, wraps the measured phase (e.g. a profiler)."""
    fake_mod = _fake_apiserver()
    if fake_mod is None:
        return {"skipped": "needs a source checkout (tests/fake_apiserver.py)"}
    rng = random.Random(seed)
    workflows = [uuid.uuid4() for _ in range(follows)]
    pods = [f"reana-run-job-b{i:05d}-abcde" for i in range(follows)]
    quiet_wf, quiet_pod = uuid.uuid4(), "reana-run-job-quiet-abcde"
    with fake_mod.running() as fake, tempfile.TemporaryDirectory() as tmp:
        config = fake.kubeconfig(Path(tmp) / "kubeconfig")
        server = h.Server(database_url, tree=tree, env={
            "REANA_LOG_SSE_KUBERNETES": "on", "KUBECONFIG": str(config),
            "REANA_LOG_SSE_WAIT_FOR_UNKNOWN": "true",
            "REANA_LOG_SSE_KUBERNETES_MAX_FOLLOWS": str(follows + 1)}).start()
        stop = threading.Event()
        writer = threading.Thread(target=_write_busy, args=(fake, pods, rate, stop))
        readers: list[Follower] = []
        quiet: _Arrivals | None = None
        try:
            meter = h.CpuMeter(server)
            for i, wf in enumerate(workflows):
                fake.put_pod(fake_mod.job_pod(wf, pods[i][:-6], phase="Running",
                                              state="running"))
            fake.put_pod(fake_mod.job_pod(quiet_wf, quiet_pod[:-6], phase="Running",
                                          state="running"))
            # the busy follows' followers: raw sockets that only note their highest id
            # (rawhttp.Follower): with an SSE client each, this process's loop, which
            # also times the quiet line, was busier than the service (80% of a core)
            readers, refused = await open_followers(
                server.url, [f"/api/workflows/{wf}/logs/stream" for wf in workflows])
            if refused:
                raise RuntimeError(f"{len(refused)} followers refused: {refused[:3]}")
            quiet = _Arrivals(f"{server.url}/api/workflows/{quiet_wf}/logs/stream")
            deadline = time.monotonic() + 60
            while fake.follows() < follows + 1:  # the tap opened every follow
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the tap opened {fake.follows()} of {follows + 1} "
                                       "follows in 60 s")
                await asyncio.sleep(0.05)
            writer.start()
            await asyncio.sleep(min(2.0, seconds / 4))  # warm-up: every follow is storing
            lines0 = await server.metric("reana_log_sse_tap_lines_total")
            received0 = sum(r.max_id for r in readers)  # each line's id: +1 per workflow
            with measured(server.proc.pid if server.proc else 0):
                cpu0, t0 = meter.sample(), time.time()
                quiet_ms: list[float] = []
                to_commit: list[float] = []  # write -> just before the COMMIT that stored it
                i = 0
                while time.time() - t0 < seconds:
                    await asyncio.sleep(rng.uniform(0.1, 0.3))
                    message = f"quiet line {i}"
                    i += 1
                    w0, wall0 = time.perf_counter(), time.time()
                    fake.write(quiet_pod, "job", message, time.time_ns())
                    quiet_ms.append(1000 * (await quiet.wait(message) - w0))
                    # its commit: the quiet workflow's NOTIFY after the write (t: before COMMIT)
                    stamps = commits.times.get(str(quiet_wf), [])
                    to_commit.append(1000 * (next((t for t in reversed(stamps) if t >= wall0),
                                                  math.nan) - wall0))
                cpu1, t1 = meter.sample(), time.time()
            lines1 = await server.metric("reana_log_sse_tap_lines_total")
            received1 = sum(r.max_id for r in readers)
        finally:
            stop.set()
            if writer.is_alive():
                await asyncio.to_thread(writer.join)
            close_all(readers)
            if quiet is not None:
                await quiet.close()
            server.stop()
    wall = t1 - t0
    cpu = h.CpuMeter.share(cpu0, cpu1)
    notifies = len(commits.notify_delays(t0, t1))
    return {"follows": follows, "rate": rate, "seconds": wall, "cpu": cpu,
            "commits_per_s": notifies / wall, "notifies": notifies,
            "tapped_per_s": (lines1 - lines0) / wall,
            "delivered_per_s": (received1 - received0) / wall,
            "quiet": h.summary_ms([x / 1000 for x in sorted(quiet_ms)]),
            "quiet_to_commit": h.summary_ms([x / 1000 for x in sorted(to_commit)
                                             if not math.isnan(x)]),
            "samples": len(quiet_ms)}


def _write_busy(fake: Any, pods: list[str], rate: float, stop: threading.Event) -> None:
    """`rate` lines/s to each pod, round robin in 10 ms ticks (each pod's lines evenly
    spaced, the pods staggered), until `stop`."""
    start = time.monotonic()
    total, written, tick = rate * len(pods), 0, 0
    while not stop.is_set():
        tick += 1
        delay = start + tick * 0.01 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due = int((time.monotonic() - start) * total)
        now = time.time_ns()
        fake.write_many([(pods[n % len(pods)], "job", f"busy line {n}", now)
                         for n in range(written, due)])
        written = due
