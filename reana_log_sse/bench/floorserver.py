"""The socket floor's server (bench/socketfloor.py runs this file as a script, in its own
process): on each NOTIFY it writes one batch's frames, as one HTTP chunk built once, to
every follower socket, with the flow control any real server has.

Flow control: asyncio calls a protocol's `pause_writing` when its transport's buffer
passes the high-water mark (64 KiB by default) and `resume_writing` when it drains below
the low-water mark (asyncio/selector_events.py, `_SelectorTransport` with
`transports._FlowControlMixin`, the same callbacks uvicorn's protocols/http/
flow_control.py relies on). While a follower is paused, its batches are not written:
the follower keeps only the range of line ids it has not been sent (two integers), and
on `resume_writing` the floor writes that range's frames joined, in order, as HTTP
chunks of at most one batch or `HIGH_WATER` bytes each, until the range is sent or the
transport pauses again. So a follower's buffer stays under the high-water mark plus one
such chunk (`bound`), however far behind it is, as the service catches a slow follower
up from the database instead of queueing its frames without bound.

Standard library and psycopg only: it runs as a script (`python floorserver.py URL LINES
SIZE CHANNEL`), prints its port, then serves. A NOTIFY `{"seq": N}` is the batch of lines
N - LINES + 1 .. N; `{"stats": 1}` makes it print one JSON line of per-follower figures.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

import psycopg

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
HIGH_WATER = 64 * 1024  # asyncio's default high-water mark (selector_events.py)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


class Floor:
    """The followers and the bytes of any range of lines (the same bytes for the same
    ids, as the service's frames of a committed line never change)."""

    def __init__(self, lines: int, size: int) -> None:
        self.lines = lines
        self.size = size
        self.followers: set[Conn] = set()
        self.gone: list[Conn] = []  # closed followers, kept for their figures
        batch_bytes = lines * size
        # a coalesced write holds at most this many lines: one batch, or HIGH_WATER bytes
        self.cap_lines = max(lines, HIGH_WATER // max(1, size))
        self.bound = HIGH_WATER + max(batch_bytes, self.cap_lines * size) + 64

    def frames(self, lo: int, hi: int) -> bytes:
        out = []
        for seq in range(lo, hi + 1):
            head = b"event: log\nid: %d\ndata: " % seq
            out.append(head + b"x" * max(1, self.size - len(head) - 2) + b"\n\n")
        return b"".join(out)

    def publish(self, last: int) -> None:
        """Line ids last - lines + 1 .. last: built once, written to every follower."""
        lo = last - self.lines + 1
        data = chunk(self.frames(lo, last))
        for f in self.followers:
            f.send(lo, last, data)

    def stats(self) -> dict[str, Any]:
        every = [*self.followers, *self.gone]
        peaks = sorted(f.max_buffered for f in every)
        return {"followers": len(every), "max_buffered": peaks[-1] if peaks else 0,
                "median_max_buffered": peaks[len(peaks) // 2] if peaks else 0,
                "bound": self.bound, "paused": sum(1 for f in every if f.pauses),
                "pauses": sum(f.pauses for f in every),
                "joined_writes": sum(f.joined for f in every),
                "joined_batches": sum(f.joined_batches for f in every)}


class Conn(asyncio.Protocol):
    """One follower: an HTTP/1.1 request, then the event stream."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.transport: asyncio.Transport | None = None
        self.head: bytes | None = b""  # the request, until it is read
        self.paused = False
        self.pending: tuple[int, int] | None = None  # line ids not yet written
        self.max_buffered = 0
        self.pauses = 0
        self.joined = 0  # writes of coalesced batches
        self.joined_batches = 0  # batches that went out in them

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            return  # the request was read; a follower sends nothing more
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.head = None
            self._write(HEAD + chunk(b"retry: 2000\n\n"))
            self.floor.followers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.floor.followers:
            self.floor.followers.discard(self)
            self.floor.gone.append(self)

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self.flush()

    def send(self, lo: int, hi: int, data: bytes) -> None:
        """A live batch (lines lo..hi, `data` its chunk): written now if the transport
        takes it, else added to the range this follower is owed."""
        if self.paused or self.pending is not None:
            self.pending = (self.pending[0] if self.pending else lo, hi)
            self.joined_batches += 1
            return
        self._write(data)

    def flush(self) -> None:
        """Write what this follower is owed, joined, in order, until it is all written
        or the transport pauses (pause_writing is called from inside write())."""
        while self.pending is not None and not self.paused:
            lo, hi = self.pending
            end = min(hi, lo + self.floor.cap_lines - 1)
            self.pending = None if end == hi else (end + 1, hi)
            self.joined += 1
            self._write(chunk(self.floor.frames(lo, end)))

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.transport.write(data)
        size = self.transport.get_write_buffer_size()
        if size > self.max_buffered:
            self.max_buffered = size


async def serve(url: str, lines: int, size: int, channel: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    floor = Floor(lines, size)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(floor), "127.0.0.1", 0, backlog=4096)
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(f"LISTEN {channel}")
    print(server.sockets[0].getsockname()[1], flush=True)
    async for n in conn.notifies():
        msg = json.loads(n.payload)
        if "stats" in msg:
            print(json.dumps(floor.stats()), flush=True)
        else:
            floor.publish(int(msg["seq"]))


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
