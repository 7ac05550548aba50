"""Test helpers: Vector-shaped batches, and an SSE follower over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from reana_log_sse.client import SSEDecoder

VECTOR_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                  "User-Agent": "Vector/0.51.0 (x86_64-unknown-linux-gnu)"}


def now_iso(offset_ns: int = 0) -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{offset_ns % 1000:03d}Z"


def event(workflow_id: uuid.UUID | str, message: str, *, job: str | None = "reana-run-job-1",
          step: str | None = None, kind: str = "job", stream: str = "stdout",
          timestamp: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"workflow_id": str(workflow_id), "kind": kind, "job_id": job, "step": step,
            "pod": f"{job}-abcde" if job else None, "container": "job", "stream": stream,
            "timestamp": timestamp or now_iso(), "message": message, **extra}


def vector_body(events: list[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps(events).encode())


def post_batch(base_url: str, token: str, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{base_url}/ingest/vector", content=vector_body(events),
                      headers={**VECTOR_HEADERS, "Authorization": f"Bearer {token}"},
                      timeout=30)


def post_status(base_url: str, token: str, workflow_id: uuid.UUID | str, status: str,
                **body: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/api/workflows/{workflow_id}/status",
                      json={"status": status, **body},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)


@dataclasses.dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None


class Follower:
    """Reads one SSE stream in the background and records every event."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.events: list[SSEEvent] = []
        self.retry: int | None = None
        self.status_code: int | None = None
        self.closed_by_server = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Follower:
        """Returns once the response's headers arrived: the service answers only after
        it subscribed and read the workflow, so whatever a test does next reaches this
        stream live. (Not waiting made a stream opened "before" a status miss it: a
        stream that starts late shows each job's latest status, not its history.)"""
        self._task = asyncio.create_task(self._run())
        try:
            await self.wait_for(lambda f: f.status_code is not None)
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task

    async def _run(self) -> None:
        timeout = httpx.Timeout(60, read=None)
        async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
            "GET", self.url, headers=self.headers
        ) as response:
            self.status_code = response.status_code
            self._changed.set()
            decoder = SSEDecoder()
            with contextlib.suppress(httpx.RemoteProtocolError):
                async for chunk in response.aiter_raw():
                    for name, data, eid in decoder.feed(chunk):
                        self.events.append(SSEEvent(name.decode(), data.decode(),
                                                    eid.decode() if eid is not None else None))
                    self.retry = decoder.retry
                    self._changed.set()
            self.closed_by_server = True
            self._changed.set()

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.event == "log"]

    @property
    def ids(self) -> list[int]:
        return [int(e.id) for e in self.events if e.event == "log" and e.id is not None]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.event == name]

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        async def loop() -> None:
            while not predicate(self):
                if self._task is not None and self._task.done():
                    self._task.result()
                    if not predicate(self):
                        raise AssertionError(f"stream closed; got {len(self.events)} events")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_logs(self, n: int, timeout: float = 20.0) -> None:
        await self.wait_for(lambda f: len(f.ids) >= n, timeout)

    async def wait_closed(self, timeout: float = 20.0) -> None:
        await self.wait_for(lambda f: f.closed_by_server, timeout)


async def settle(follower: Follower, base_url: str, token: str,
                 workflow_id: uuid.UUID | str) -> None:
    """Wait until the follower has everything the service sent it so far: a job status
    posted now reaches every stream of the workflow (statuses are not filtered) after the
    lines committed before it. Instead of sleeping to see that nothing more arrives."""
    marker = f"settle-{uuid.uuid4()}"
    response = await asyncio.to_thread(post_status, base_url, token, workflow_id, "running",
                                       job_id=marker, step=marker)
    assert response.status_code == 200, response.text
    await follower.wait_for(lambda f: any(s.get("job_id") == marker for s in f.named("status")))


class BackgroundLines:
    """A command run in the background, its stdout collected line by line (a thread reads
    it), for CLI tests that act while it runs and then wait for what it printed."""

    def __init__(self, cmd: list[str], env: dict[str, str], *, text: bool = False) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=text)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw if isinstance(raw, str) else raw.decode()
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_until(self, ready: Callable[[list[str]], bool], timeout: float) -> bool:
        """True once `ready(lines)`; False if the process ended first or time ran out."""
        with self._cond:
            self._cond.wait_for(lambda: ready(self.lines) or self.proc.poll() is not None,
                                timeout)
            return ready(self.lines)

    def wait_exit(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.asynccontextmanager
async def store_on(database_url: str) -> AsyncIterator[Any]:
    """A real Store (group commit on) on its own pool, with today's partitions."""
    from reana_log_sse.store import db, partitions
    from reana_log_sse.store.store import Store

    today = dt.datetime.now(dt.UTC).date()
    await partitions.maintain(database_url, partitions.Window.around(
        today, retention_days=2, ahead_days=1), wait=True)
    pool = db.make_pool(database_url, max_size=4, timeout=10)
    await pool.open()
    store = Store(pool, group_lines=10_000)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()
