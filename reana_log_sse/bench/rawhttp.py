"""Cheap clients for the load generator: thousands of SSE followers and pollers in one
asyncio process.

A follower does not decode every event: it keeps the bytes after the last complete frame
and, per read, extracts the id of the last complete `log` frame (`bytes.rfind`, in C).
That is enough to know which lines it has parsed and when, which is all the latency
figures need, and it lets one process keep up with thousands of streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import typing
from array import array
from collections.abc import Iterable
from urllib.parse import urlsplit

_ID = b"\nid: "


def _request(method: str, host: str, path: str, headers: dict[str, str] | None = None,
             body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: reana-log-sse-bench"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def last_id(buf: bytes, end: int, marker: bytes = _ID) -> int:
    """The number that follows the last `marker` (the `id:` field) before `end` (-1 if
    none). Another marker reads a peer that carries the id elsewhere: nginx + nchan's
    EventSource sends its own `id: <time>:<tag>`, so its batches start their one `data:`
    line with the batch's last id (bench/nchan.py)."""
    i = buf.rfind(marker, 0, end)
    if i < 0:
        return -1
    i += len(marker)
    j = i
    while buf[j:j + 1].isdigit():
        j += 1
    return int(buf[i:j]) if j > i else -1


class Follower(asyncio.Protocol):
    """One SSE stream over a raw socket. Records (id, time) each time its highest
    parsed id advances: `ids` and `times` (time.time())."""

    marker = _ID  # what precedes a frame's id (bench/nchan.py: `\ndata: `)

    def __init__(self, host: str, path: str, headers: dict[str, str] | None = None) -> None:
        self.request = _request("GET", host, path,
                                {"Accept": "text/event-stream", **(headers or {})})
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.max_id = 0
        self.bytes = 0
        self.ids = array("q")
        self.times = array("d")
        self.closed = asyncio.get_running_loop().create_future()
        self.ended = asyncio.get_running_loop().create_future()  # `end` event parsed
        self.started = asyncio.get_running_loop().create_future()  # first frame parsed
        self._head = b""
        self._tail = b""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses (bench/opener.py)
        self.transport = typing.cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.bytes += len(data)
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self._head.split(b" ", 2)[1])
            data, self._head = self._head[end + 4:], b""
            if self.status != 200 and self.transport is not None:
                self.transport.close()
                return
        buf = self._tail + data if self._tail else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._tail = buf
            return
        self._tail = buf[end + 2:]
        if not self.started.done():
            self.started.set_result(None)
        if b"event: end\n" in buf and not self.ended.done():
            self.ended.set_result(None)
        seq = last_id(buf, end, self.marker)
        if seq > self.max_id:
            self.max_id = seq
            self.ids.append(seq)
            self.times.append(now)
            if self._waiters:
                self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(ConnectionError(f"stream closed (HTTP {self.status})"))
        for fut in (self.closed, self.ended):
            if not fut.done():
                fut.set_result(None)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConnectionError("stream closed"))
        self._waiters = []

    # -- helpers -----------------------------------------------------------------------

    def _wake(self) -> None:
        keep = []
        for target, fut in self._waiters:
            if self.max_id >= target:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    async def reached(self, seq: int) -> None:
        if self.max_id >= seq:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        await fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_follower(base_url: str, path: str, headers: dict[str, str] | None = None,
                        timeout: float = 60.0, cls: type[Follower] = Follower) -> Follower:
    parts = urlsplit(base_url)
    loop = asyncio.get_running_loop()
    _, follower = await loop.create_connection(
        lambda: cls(parts.netloc, path, headers), parts.hostname, parts.port or 80)
    await asyncio.wait_for(follower.started, timeout)
    return follower


async def open_followers(base_url: str, paths: Iterable[str], *, concurrency: int = 200,
                         timeout: float = 120.0, cls: type[Follower] = Follower
                         ) -> tuple[list[Follower], list[str]]:
    """Open many streams, at most `concurrency` connecting at once. Returns the streams
    that sent their first frame, and why the others did not."""
    sem = asyncio.Semaphore(concurrency)

    async def one(path: str) -> Follower:
        async with sem:
            return await open_follower(base_url, path, timeout=timeout, cls=cls)

    results = await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)
    opened = [r for r in results if isinstance(r, Follower)]
    errors = [str(r) or type(r).__name__ for r in results if not isinstance(r, Follower)]
    return opened, errors


def close_all(followers: Iterable[Follower]) -> None:
    for f in followers:
        f.close()


class KeepAlive:
    """A keep-alive HTTP/1.1 connection for small GETs (the polling clients)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port, self.netloc = parts.hostname, parts.port or 80, parts.netloc
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(_request("GET", self.netloc, path))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None
