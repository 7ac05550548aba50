"""Fault-scenario kit: a Vector-like sender that retries until 200, followers that resume
with Last-Event-ID across failures, and the figures each scenario prints."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gzip
import json
import random
import threading
import time
import uuid
from typing import Any

import httpx
import psutil

from reana_log_sse.client import SSEDecoder
from tests.helpers import VECTOR_HEADERS, event


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


class Sender:
    """Posts batches as Vector's http sink does: a 5xx, 408, 429 or a transport error is
    retried (the same batch, next URL) until it is answered 200; a 4xx is a drop."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.headers = {**VECTOR_HEADERS, "Authorization": f"Bearer {token}"}
        self.statuses: collections.Counter[str] = collections.Counter()
        self.sent = 0  # lines answered 200
        self.dropped = 0  # lines of batches answered a non-retried 4xx
        self._turn = 0
        self._client = httpx.Client(timeout=10)

    def post(self, events: list[dict[str, Any]], give_up_after: float = 120.0) -> None:
        body = gzip.compress(json.dumps(events).encode())
        deadline = time.monotonic() + give_up_after
        delay = 0.05
        while True:
            url = self.urls[self._turn % len(self.urls)]
            try:
                response = self._client.post(f"{url}/ingest/vector", content=body,
                                             headers=self.headers)
                code = response.status_code
                self.statuses[str(code)] += 1
                if code == 200:
                    self.sent += len(events)
                    return
                if 400 <= code < 500 and code not in (408, 429):
                    self.dropped += len(events)
                    return
            except httpx.TransportError as exc:
                self.statuses[type(exc).__name__] += 1
            self._turn += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"batch not accepted in {give_up_after} s: {self.statuses}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def close(self) -> None:
        self._client.close()


def batch(wf: uuid.UUID, start: int, n: int, size: int = 0) -> list[dict[str, Any]]:
    pad = "x" * size
    return [event(wf, f"{wf} {i} {pad}") for i in range(start, start + n)]


class SenderThread(threading.Thread):
    """Sends batches for the workflows, round robin, until stopped."""

    def __init__(self, sender: Sender, workflows: list[uuid.UUID], per_batch: int,
                 pause: float = 0.0, size: int = 0) -> None:
        super().__init__(daemon=True)
        self.sender, self.workflows, self.per_batch = sender, workflows, per_batch
        self.pause, self.size = pause, size
        self.next = {wf: 0 for wf in workflows}
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                wf = self.workflows[self.batches % len(self.workflows)]
                self.sender.post(batch(wf, self.next[wf], self.per_batch, self.size))
                self.next[wf] += self.per_batch
                self.batches += 1
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.error = exc


@dataclasses.dataclass
class Follow:
    """One follower's record: every id received (in order), its resumes, its errors."""

    ids: list[int] = dataclasses.field(default_factory=list)
    resumes: int = 0
    ended: bool = False
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    times: list[float] = dataclasses.field(default_factory=list)  # when each id came


async def follow(urls: list[str], wf: uuid.UUID, record: Follow, *,
                 resume_every: tuple[float, float] | None = None,
                 rng: random.Random | None = None, deadline: float = 300.0) -> Follow:
    """Follow until `end`, resuming with the last id after any close or error (on the next
    URL); with resume_every, also hang up at random moments in that range of seconds."""
    rng = rng or random.Random(0)
    stop_at = time.monotonic() + deadline
    turn = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
        while not record.ended and time.monotonic() < stop_at:
            url = urls[turn % len(urls)]
            headers = {"Last-Event-ID": str(record.ids[-1])} if record.ids else {}
            hang_up = (time.monotonic() + rng.uniform(*resume_every)) if resume_every else None
            try:
                async with client.stream("GET", f"{url}/api/workflows/{wf}/logs/stream",
                                         headers=headers) as response:
                    if response.status_code != 200:  # 503 while the database is down
                        record.errors[f"HTTP {response.status_code}"] += 1
                        await response.aread()
                        turn += 1
                        await asyncio.sleep(0.05)
                        record.resumes += 1
                        continue
                    decoder = SSEDecoder()
                    async for chunk in response.aiter_raw():
                        now = time.time()
                        for name, _, eid in decoder.feed(chunk):
                            if name == b"log" and eid is not None:
                                record.ids.append(int(eid))
                                record.times.append(now)
                            elif name == b"end":
                                record.ended = True
                        if record.ended or (hang_up is not None and time.monotonic() > hang_up):
                            break
            except httpx.HTTPError as exc:
                record.errors[type(exc).__name__] += 1
                turn += 1
                await asyncio.sleep(0.05)
            if not record.ended:
                record.resumes += 1
    return record


def check(record: Follow, last_seq: int) -> tuple[int, int]:
    """(lost, duplicated) ids of a follower of a workflow whose ids are 1..last_seq."""
    seen = collections.Counter(record.ids)
    lost = sum(1 for i in range(1, last_seq + 1) if i not in seen)
    duplicated = sum(c - 1 for c in seen.values() if c > 1)
    return lost, duplicated


def stored(sql: Any, wf: uuid.UUID) -> tuple[int, int, int]:
    """(rows, distinct messages, last_seq) of a workflow."""
    [(rows, distinct)] = sql("SELECT count(*), count(DISTINCT message) FROM log_lines"
                             " WHERE workflow_id = %s", (wf,))
    [(last,)] = sql("SELECT last_seq FROM workflows WHERE workflow_id = %s", (wf,)) or [(0,)]
    return rows, distinct, last
