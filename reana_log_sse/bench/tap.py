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
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from reana_log_sse.bench import harness as h
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


async def tap_vs_vector(database_url: str, *, samples: int, seed: int = 7) -> dict[str, Any]:
    fake_mod = _fake_apiserver()
    if fake_mod is None:
        return {"skipped": "needs a source checkout (tests/fake_apiserver.py)"}
    rng = random.Random(seed)
    wf, vector_wf = uuid.uuid4(), str(uuid.uuid4())
    job = "reana-run-job-bench"
    pod = f"{job}-abcde"
    with fake_mod.running() as fake, tempfile.TemporaryDirectory() as tmp:
        config = fake.kubeconfig(Path(tmp) / "kubeconfig")
        server = h.Server(database_url, env={"REANA_LOG_SSE_KUBERNETES": "on",
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
                for i in range(samples):
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
