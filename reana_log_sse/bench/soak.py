"""Soak: the service's RSS over a long run under the fault soak's load shape (tests/
test_faults.py `test_fault_soak_with_followers_resuming_at_random`): one sender posting
20-line batches round robin over 4 workflows with a 0.03 s pause, and 3 followers per
workflow, each hanging up at a random moment 0.2-3 s into a stream and resuming with
Last-Event-ID. RSS is sampled every 10 s; the figure is its slope after warm-up."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import httpx

from reana_log_sse.bench import harness as h
from reana_log_sse.client import SSEDecoder

FLAT_MB_PER_MIN = 0.5  # "flat": RSS grows less than this after warm-up


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, RSS bytes) samples, in MiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    cov = sum((t - mt) * (r - mr) for t, r in samples)
    return cov / var / 2**20 * 60 if var else 0.0


class _Load:
    def __init__(self, base_url: str, workflows: list[str], seed: int = 11) -> None:
        self.base_url, self.workflows = base_url, workflows
        self.stop = asyncio.Event()
        self.sent = self.received = self.resumes = self.errors = self.out_of_order = 0
        self.rng = random.Random(seed)

    async def send(self, per_batch: int = 20, pause: float = 0.03) -> None:
        nxt = dict.fromkeys(self.workflows, 0)
        k = 0
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as client:
            while not self.stop.is_set():
                wf = self.workflows[k % len(self.workflows)]
                await h.post(client, h.body(h.events([wf], per_batch, nxt[wf])))
                nxt[wf] += per_batch
                self.sent += per_batch
                k += 1
                await asyncio.sleep(pause)

    async def follow(self, wf: str, rng: random.Random) -> None:
        last: int | None = None
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
            while not self.stop.is_set():
                headers = {"Last-Event-ID": str(last)} if last is not None else {}
                hang_up = time.monotonic() + rng.uniform(0.2, 3.0)
                try:
                    async with client.stream("GET", f"{self.base_url}/api/workflows/{wf}"
                                             "/logs/stream", headers=headers) as response:
                        if response.status_code != 200:
                            self.errors += 1
                            await response.aread()
                            await asyncio.sleep(0.05)
                            continue
                        decoder = SSEDecoder()
                        async for chunk in response.aiter_raw():
                            for name, _, eid in decoder.feed(chunk):
                                if name == b"log" and eid is not None:
                                    self.received += 1
                                    if last is not None and int(eid) <= last:
                                        self.out_of_order += 1
                                    last = int(eid)
                            if self.stop.is_set() or time.monotonic() > hang_up:
                                break
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(0.05)
                self.resumes += 1


async def soak(server: h.Server, meter: h.CpuMeter, *, seconds: float,
               workflows: int = 4, followers: int = 3,
               echo: Any = None) -> dict[str, Any]:
    """Run the load for `seconds`, sampling the service's RSS; warm-up is the first
    60 s (a third of shorter runs), samples every 10 s (a twentieth of shorter runs)."""
    warmup = min(60.0, seconds / 3)
    every = min(10.0, max(0.5, seconds / 20))
    wfs = h.new_workflows(workflows)
    await h.seed(server.url, wfs)
    load = _Load(server.url, wfs)
    tasks = [asyncio.create_task(load.send())]
    tasks += [asyncio.create_task(load.follow(wf, random.Random(load.rng.random())))
              for wf in wfs for _ in range(followers)]
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    cpu0 = meter.sample()
    try:
        k = 0
        while True:
            elapsed = time.monotonic() - t0
            samples.append((round(elapsed, 1), server.rss()))
            if echo is not None:
                echo(f"  soak {elapsed:7.1f} s: RSS {samples[-1][1] / 2**20:.1f} MiB, "
                     f"{load.sent:,} lines sent, {load.resumes:,} resumes")
            if any(t.done() for t in tasks):  # a load task failed: report it, not a slope
                break
            k += 1
            if k * every > seconds + 1e-6:
                break
            await asyncio.sleep(max(0.0, t0 + k * every - time.monotonic()))
    finally:
        cpu = meter.share(cpu0, meter.sample())
        elapsed = time.monotonic() - t0
        load.stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        for t in tasks:
            t.cancel()
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise RuntimeError("soak load failed") from t.exception()
    per_minute = [min(samples, key=lambda s, m=m: abs(s[0] - 60 * m))
                  for m in range(int(samples[-1][0] // 60) + 1)]
    after = [s for s in samples if s[0] >= warmup]
    warm = after[0] if after else samples[-1]
    return {"seconds": elapsed, "warmup": warmup, "every": every, "samples": samples,
            "per_minute": per_minute,
            "rss_warm": warm[1], "rss_warm_at": warm[0], "rss_end": samples[-1][1],
            "rss_start": samples[0][1], "slope": slope_mb_per_min(after),
            "rate": load.sent / elapsed, "sent": load.sent, "received": load.received,
            "resumes": load.resumes, "errors": load.errors,
            "out_of_order": load.out_of_order, "followers": workflows * followers,
            "workflows": workflows, "cpu": cpu}
