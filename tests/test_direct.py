"""Live batches written by the feed straight to caught-up followers (follow/direct.py).

Every test checks that the direct path was taken (the follower's `Direct.writes`, or the
`direct_writes` metric), so none passes on the stream task's path alone; the followers
read on raw sockets and parse the chunked body strictly, so a direct chunk interleaved
with (or cut into) one of the task's would fail the framing, not only the ids.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import uuid
from typing import Any

import httpx

from reana_log_sse.client import SSEDecoder
from tests.helpers import event, post_batch, post_status


class RawStream:
    """One follower on a raw socket: it reads only when told, parses the chunked body
    strictly (each chunk's size line and CRLF), and records the SSE events."""

    def __init__(self, port: int, path: str, *, headers: dict[str, str] | None = None,
                 version: str = "1.1", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connect: the window is agreed at the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode())
        self.addr = self.sock.getsockname()
        self.raw = b""  # everything received
        self.head: bytes | None = None
        self.chunked = False
        self._buf = b""
        self.body = b""  # the de-chunked body
        self.ids: list[int] = []
        self.events: list[tuple[str, bytes, int | None]] = []
        self.complete = False  # the last chunk (0 CRLF CRLF) arrived
        self.eof = False
        self._decoder = SSEDecoder()

    def read_until(self, predicate: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.eof:
                raise AssertionError(f"closed by the server; got {len(self.ids)} ids")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {len(self.ids)} ids")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                self.eof = True
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        self.raw += data
        self._buf += data
        if self.head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head, self._buf = self._buf[:end], self._buf[end + 4:]
            assert self.head.startswith(b"HTTP/1.1 200"), self.head
            self.chunked = b"transfer-encoding: chunked" in self.head.lower()
        if not self.chunked:
            self._body(self._buf)
            self._buf = b""
            return
        while not self.complete:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self._buf[:line_end], 16)  # a cut or mixed chunk fails here...
            start = line_end + 2
            if size == 0:
                if len(self._buf) < start + 2:
                    return
                assert self._buf[start:start + 2] == b"\r\n"
                self.complete = True
                self._buf = self._buf[start + 2:]
                assert self._buf == b""
                return
            if len(self._buf) < start + size + 2:
                return
            assert self._buf[start + size:start + size + 2] == b"\r\n"  # ...or here
            self._body(self._buf[start:start + size])
            self._buf = self._buf[start + size + 2:]

    def _body(self, data: bytes) -> None:
        self.body += data
        for name, payload, eid in self._decoder.feed(data):
            self.events.append((name.decode(), payload, int(eid) if eid else None))
            if name == b"log":
                assert eid is not None
                self.ids.append(int(eid))

    def named(self, name: str) -> list[bytes]:
        return [payload for n, payload, _ in self.events if n == name]

    def reset(self) -> None:
        """Gone at once (RST), as a client killed mid-read."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def _path(wf: uuid.UUID, query: str = "") -> str:
    return f"/api/workflows/{wf}/logs/stream{query}"


def _metric(server: Any, name: str) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _subs(server: Any, wf: uuid.UUID) -> list[Any]:
    feed = server.app.state.hub.feeds.get(wf)
    while feed is not None:
        try:
            return list(feed.subscribers)
        except RuntimeError:  # changed by the server's thread while copied
            continue
    return []


def _sub_of(server: Any, wf: uuid.UUID, stream: RawStream) -> Any:
    """The server's subscription of a raw follower (by its address), once it has a Direct."""
    for sub in _subs(server, wf):
        direct = sub.direct
        if direct is not None and tuple(direct.cycle.scope["client"]) == stream.addr:
            return sub
    return None


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _post(server: Any, events: list[dict[str, Any]]) -> None:
    response = post_batch(server.url, server.ingest_token, events)
    assert response.status_code == 200, response.text


def _stored(server: Any, wf: uuid.UUID) -> list[int]:
    rows = server.sql("SELECT seq FROM log_lines WHERE workflow_id = %s ORDER BY seq", (wf,))
    return [seq for (seq,) in rows]


async def test_direct_writes_keep_commit_order_and_a_resume_gets_every_line_once(
        server_factory):
    server = server_factory()
    wf = uuid.uuid4()
    _post(server, [event(wf, "first", job="w")])
    a = RawStream(server.port, _path(wf))
    b = RawStream(server.port, _path(wf))
    for s in (a, b):
        await asyncio.to_thread(s.read_until, lambda s: len(s.ids) == 1)
    stop = asyncio.Event()

    async def writer(name: str) -> None:  # two writers: commits interleave
        n = 0
        while not stop.is_set():
            await asyncio.to_thread(_post, server, [event(wf, f"{name}-{n}-{i}", job=name)
                                                    for i in range(7)])
            n += 1

    writers = [asyncio.create_task(writer("w1")), asyncio.create_task(writer("w2"))]
    try:
        await asyncio.to_thread(a.read_until, lambda s: len(s.ids) >= 150)
        sub_a = _sub_of(server, wf, a)
        assert sub_a is not None and sub_a.direct.writes > 0, "a took the direct path"
        a.close()  # a leaves mid-flow, and resumes from its last id while lines still come
        last = a.ids[-1]
        c = RawStream(server.port, _path(wf), headers={"Last-Event-ID": str(last)})
        await asyncio.to_thread(c.read_until, lambda s: len(s.ids) >= 150)
        sub_c = _sub_of(server, wf, c)
        assert sub_c is not None and sub_c.direct.writes > 0, "the resumed one did too"
    finally:
        stop.set()
        await asyncio.gather(*writers)
    stored = _stored(server, wf)
    for s in (b, c):
        await asyncio.to_thread(s.read_until, lambda s: s.ids and s.ids[-1] == stored[-1])
    assert b.ids == stored  # commit order, none twice, none missing
    assert a.ids + c.ids == stored  # across the resume: every line exactly once
    sub_b = _sub_of(server, wf, b)
    assert sub_b.direct.writes > 0
    assert _metric(server, "reana_log_sse_direct_writes_total") >= (
        sub_b.direct.writes + sub_c.direct.writes)
    b.close()
    c.close()


async def test_direct_follower_that_stops_reading_is_bounded_and_catches_up_from_the_database(
        server_factory):
    bound = 256 * 1024
    server = server_factory(follower_queue_bytes=bound, follower_queue_lines=100_000,
                            ping_seconds=3600)  # no ping between a batch and its count
    wf = uuid.uuid4()
    _post(server, [event(wf, "first")])
    s = RawStream(server.port, _path(wf), rcvbuf=4096)
    await asyncio.to_thread(s.read_until, lambda s: len(s.ids) == 1)
    sub = await asyncio.to_thread(lambda: (_wait(lambda: _sub_of(server, wf, s), "a Direct"),
                                           _sub_of(server, wf, s))[1])
    # while it reads, live batches go straight to it
    await asyncio.to_thread(_post, server, [event(wf, "live")])
    await asyncio.to_thread(s.read_until, lambda s: len(s.ids) == 2)
    assert sub.direct.writes == 1
    # then it reads nothing: its transport fills and pauses, later batches queue (bounded
    # in bytes), overflow, and it leaves live delivery
    line = "x" * (16 * 1024)
    direct = sub.direct
    transport = direct.transport
    batches, per_batch = 40, 8
    peak_queue = peak_buffer = 0
    paused = False
    for n in range(batches):
        await asyncio.to_thread(_post, server, [event(wf, f"{n}.{i} {line}")
                                                for i in range(per_batch)])
        peak_queue = max(peak_queue, sub.queued_bytes)
        peak_buffer = max(peak_buffer, transport.get_write_buffer_size())
        paused = paused or direct.flow.write_paused
    overflows = _metric(server, "reana_log_sse_follower_overflows_total")
    reads_before = _metric(server, "reana_log_sse_catchup_reads_total")
    assert paused, "its transport paused: direct writes stopped there"
    assert peak_queue <= bound
    # a direct write goes only to an unpaused transport: at most one batch over the mark
    assert peak_buffer <= 64 * 1024 + per_batch * (len(line) + 400)
    assert overflows >= 1
    # it reads again: the gap comes from the database, every line exactly once, in order
    total = 2 + batches * per_batch
    await asyncio.to_thread(s.read_until, lambda s: len(s.ids) >= total, 60)
    assert s.ids == list(range(1, total + 1))
    assert _metric(server, "reana_log_sse_catchup_reads_total") > reads_before - 1
    # and once caught up it is back on the direct path
    writes = sub.direct.writes
    await asyncio.to_thread(_post, server, [event(wf, "again")])
    await asyncio.to_thread(s.read_until, lambda s: len(s.ids) == total + 1)
    assert sub.direct.writes == writes + 1
    s.close()


async def test_direct_follower_gone_mid_batch_leaves_others_whole_and_no_subscription(
        server_factory, caplog):
    caplog.set_level(logging.WARNING)
    uvicorn_logger = logging.getLogger("uvicorn")  # it does not propagate to the root
    uvicorn_logger.addHandler(caplog.handler)
    server = server_factory()
    wf = uuid.uuid4()
    _post(server, [event(wf, "first")])
    streams = [RawStream(server.port, _path(wf), rcvbuf=4096) for _ in range(6)]
    for s in streams:
        await asyncio.to_thread(s.read_until, lambda s: len(s.ids) == 1)
    await asyncio.to_thread(_wait, lambda: all(_sub_of(server, wf, s) for s in streams),
                            "every follower on the direct path")
    gone = streams[2]
    gone_sub = _sub_of(server, wf, gone)
    line = "y" * (8 * 1024)
    # big batches, larger than the gone client's window: it resets while one is being
    # written to it (the rest of the batch waits in its transport's buffer)
    await asyncio.to_thread(_post, server, [event(wf, f"a{i} {line}") for i in range(40)])
    await asyncio.to_thread(gone.read_until, lambda s: len(s.ids) >= 3)
    gone.reset()
    for n in range(5):
        await asyncio.to_thread(_post, server, [event(wf, f"b{n}.{i} {line}") for i in range(40)])
    stored = _stored(server, wf)
    others = [s for s in streams if s is not gone]
    for s in others:
        await asyncio.to_thread(s.read_until, lambda s: s.ids and s.ids[-1] == stored[-1])
        assert s.ids == stored
        assert _sub_of(server, wf, s).direct.writes > 0
    assert gone_sub.direct is None or gone_sub.direct.writes > 0  # it had direct writes...
    await asyncio.to_thread(_wait, lambda: gone_sub.closed and gone_sub not in _subs(server, wf),
                            "the gone follower's subscription closed")
    assert gone_sub.direct is None and gone_sub.response is None  # ...and holds nothing now
    await asyncio.to_thread(
        _wait, lambda: _metric(server, "reana_log_sse_active_streams") == len(others),
        "active streams to count the others only")
    uvicorn_logger.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    for s in others:
        s.close()


async def test_direct_follower_switching_replicas_with_last_event_id_gets_every_line_once(
        server_factory):
    a = server_factory()
    b = server_factory()  # a second replica on the same database
    wf = uuid.uuid4()
    _post(a, [event(wf, "first", job="w")])
    stop = asyncio.Event()

    async def writer(server: Any, name: str) -> None:
        n = 0
        while not stop.is_set():
            await asyncio.to_thread(_post, server, [event(wf, f"{name}-{n}-{i}", job=name)
                                                    for i in range(5)])
            n += 1

    writers = [asyncio.create_task(writer(a, "wa")), asyncio.create_task(writer(b, "wb"))]
    try:
        on_a = RawStream(a.port, _path(wf))
        await asyncio.to_thread(on_a.read_until, lambda s: len(s.ids) >= 100)
        assert _sub_of(a, wf, on_a).direct.writes > 0
        on_a.close()
        on_b = RawStream(b.port, _path(wf), headers={"Last-Event-ID": str(on_a.ids[-1])})
        await asyncio.to_thread(on_b.read_until, lambda s: len(s.ids) >= 100)
        sub_b = _sub_of(b, wf, on_b)
        assert sub_b is not None and sub_b.direct.writes > 0
    finally:
        stop.set()
        await asyncio.gather(*writers)
    stored = _stored(a, wf)
    await asyncio.to_thread(on_b.read_until, lambda s: s.ids[-1] == stored[-1])
    assert on_a.ids + on_b.ids == stored
    on_b.close()


async def _followed_through_batches(server: Any, wf: uuid.UUID, batches: int) -> RawStream:
    """A stream of `wf` that got its first line, then `batches` batches of 10 lines, each
    read before the next is POSTed (so that each can be written straight to it)."""
    _post(server, [event(wf, "first")])
    stream = RawStream(server.port, _path(wf))
    await asyncio.to_thread(stream.read_until, lambda s: len(s.ids) == 1)
    for n in range(batches):
        await asyncio.to_thread(_post, server, [event(wf, f"b{n}.{i}") for i in range(10)])
        await asyncio.to_thread(stream.read_until, lambda s, n=n: len(s.ids) == 11 + 10 * n)
    return stream


async def test_direct_writes_then_end_finish_the_chunked_body_cleanly(
        server_factory):
    server = server_factory(ping_seconds=3600)  # no ping between a batch and its count
    wf = uuid.uuid4()
    ending = await _followed_through_batches(server, wf, 5)
    assert _sub_of(server, wf, ending).direct.writes == 5
    await asyncio.to_thread(post_status, server.url, server.ingest_token, wf, "finished")
    await asyncio.to_thread(ending.read_until, lambda s: s.eof)
    assert ending.complete, "the last chunk, then close"
    assert ending.ids == list(range(1, 52))
    assert [n for n, _, _ in ending.events][-1] == "end"


async def test_direct_writes_then_shutdown_finish_the_chunked_body_cleanly(
        database_url, tmp_path):
    # a real `serve` process: sse-starlette sees the server's exit through its signal
    # handler, which a server in a test's thread does not install
    from tests.serve_process import ServeProcess

    server = ServeProcess(database_url, tmp_path, REANA_LOG_SSE_PING_SECONDS="3600").start()
    try:
        wf = uuid.uuid4()
        leaving = await _followed_through_batches(server, wf, 3)
        assert _metric(server, "reana_log_sse_direct_writes_total") == 3
        server.terminate()
        await asyncio.to_thread(leaving.read_until, lambda s: s.eof)
        assert await asyncio.to_thread(server.wait) == 0
        assert leaving.complete, "the last chunk, then close"
        assert leaving.ids == list(range(1, 32))
        assert leaving.named("end") == []  # not ended: the client resumes from its last id
        assert "Traceback" not in server.output()
        leaving.close()
    finally:
        server.terminate()
        server.kill()


async def test_direct_filtered_and_http10_followers_get_their_bytes_through_their_task(
        server_factory):
    server = server_factory(ping_seconds=3600)
    wf = uuid.uuid4()
    _post(server, [event(wf, "first", job="j1")])
    filtered = RawStream(server.port, _path(wf, "?job=j2"))
    old = RawStream(server.port, _path(wf), version="1.0")
    await asyncio.to_thread(old.read_until, lambda s: len(s.ids) == 1)
    await asyncio.to_thread(filtered.read_until, lambda s: b"retry:" in s.body)
    for n in range(4):
        await asyncio.to_thread(_post, server, [event(wf, f"{n}.{i}", job=f"j{1 + i % 2}")
                                                for i in range(6)])
    await asyncio.to_thread(old.read_until, lambda s: len(s.ids) == 25)
    await asyncio.to_thread(filtered.read_until, lambda s: len(s.ids) == 12)
    assert old.ids == list(range(1, 26))
    assert filtered.ids == [i for i in range(2, 26) if (i - 2) % 6 % 2 == 1]
    assert _metric(server, "reana_log_sse_direct_writes_total") == 0
    assert all(sub.direct is None for sub in _subs(server, wf))
    # an unfiltered HTTP/1.1 follower of the same feed, and the same bytes: direct
    new = RawStream(server.port, _path(wf))
    await asyncio.to_thread(new.read_until, lambda s: len(s.ids) == 25)
    await asyncio.to_thread(_post, server, [event(wf, "last", job="j2")])
    for s in (new, old, filtered):
        await asyncio.to_thread(s.read_until, lambda s: s.ids[-1] == 26)
    assert _metric(server, "reana_log_sse_direct_writes_total") == 1
    tail = old.body[old.body.index(b"event: log\nid: 26\n"):]
    assert new.body.endswith(tail) and filtered.body.endswith(tail)
    for s in (filtered, old, new):
        s.close()


async def test_direct_follower_that_reads_nothing_is_still_ended_after_the_send_timeout(
        server_factory):
    server = server_factory(ping_seconds=0.2, send_timeout_seconds=1.0)
    wf = uuid.uuid4()
    _post(server, [event(wf, "first")])
    s = RawStream(server.port, _path(wf), rcvbuf=4096)
    await asyncio.to_thread(s.read_until, lambda s: len(s.ids) == 1)
    sub = await asyncio.to_thread(lambda: (_wait(lambda: _sub_of(server, wf, s), "a Direct"),
                                           _sub_of(server, wf, s))[1])
    direct = sub.direct
    assert direct is not None
    line = "z" * (16 * 1024)
    n = 0
    # it reads nothing: direct writes until its transport pauses...
    while not direct.flow.write_paused:
        await asyncio.to_thread(_post, server, [event(wf, f"{n}.{i} {line}") for i in range(8)])
        n += 1
    assert direct.writes >= 1
    # ...then the next batch queues, its task's send waits, and the hub's timer ends it
    await asyncio.to_thread(_post, server, [event(wf, f"{n}.{i} {line}") for i in range(8)])
    await asyncio.to_thread(_wait, lambda: sub.closed, "the stalled stream to be ended")
    assert sub.direct is None
    await asyncio.to_thread(
        _wait, lambda: _metric(server, "reana_log_sse_active_streams") == 0, "the stream ended")
    assert _metric(server, "reana_log_sse_direct_writes_total") >= 1
    s.close()


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


async def test_direct_deliver_writes_only_while_the_task_idles_on_an_empty_queue():
    """Each guard of direct.deliver alone sends the batch to the task's queue instead."""
    import datetime as dt
    from types import SimpleNamespace

    from reana_log_sse.follow.direct import Direct, chunk, deliver
    from reana_log_sse.follow.queue import Batch, End, StatusItem, Subscription
    from reana_log_sse.metrics import Metrics
    from reana_log_sse.store.lines import Line
    from reana_log_sse.store.snapshot import StatusRow

    metrics = Metrics()
    wf = uuid.uuid4()
    feed = SimpleNamespace(hub=SimpleNamespace(metrics=metrics), unsubscribe=lambda s: None)
    ts = dt.datetime.now(dt.UTC)
    lines = [Line(i, str(wf), "job", "j", None, "stdout", ts, f"l{i}", False) for i in (11, 12)]

    async def follower(**change: Any) -> tuple[Subscription, Any]:
        sub = Subscription(feed, 1000, 1 << 20)  # type: ignore[arg-type]
        transport = _Transport()
        cycle = SimpleNamespace(transport=transport, flow=SimpleNamespace(write_paused=False),
                                disconnected=False, response_complete=False)
        sub.direct = Direct(cycle, SimpleNamespace(cursor=10))  # type: ignore[arg-type]
        if not change.pop("busy", False):  # it waits on its waiter, as follow() does
            sub.waiter()
        return sub, (transport, cycle, change)

    def alter(sub: Subscription, transport: _Transport, cycle: Any, change: dict[str, Any]) -> None:
        """No await from here to deliver(): a woken task stays woken, not yet run."""
        for what, value in change.items():
            if what == "cursor":
                sub.direct.follower.cursor = value
            elif what == "closing":
                transport.closing = value
            elif what == "paused":
                cycle.flow.write_paused = value
            elif what == "queued":
                sub.push(value)
            elif what == "woken":
                sub._wake()
            else:
                setattr(cycle, what, value)

    status = StatusItem(10, StatusRow(1, 10, "j", "s", "running"))
    cases = {
        "idle": {}, "busy": {"busy": True}, "woken": {"woken": True},
        "status queued": {"queued": status}, "ended": {"queued": End(10, "finished")},
        "behind": {"cursor": 9}, "paused": {"paused": True}, "closing": {"closing": True},
        "gone": {"disconnected": True}, "complete": {"response_complete": True},
    }
    made = {name: await follower(**change) for name, change in cases.items()}
    for sub, (transport, cycle, change) in made.values():
        alter(sub, transport, cycle, change)
    subs = {name: (sub, transport) for name, (sub, (transport, _, _)) in made.items()}
    batch = Batch(10, 12, lines, 0.0, None)
    batch.pending = len(subs)
    rest = deliver([sub for sub, _ in subs.values()], batch, metrics)
    written = {name for name, (_, transport) in subs.items() if transport.written}
    assert written == {"idle"}
    idle, transport = subs["idle"]
    assert transport.written == [chunk(b"".join(line.frame for line in lines))]
    assert idle.direct.follower.cursor == 12 and idle.direct.writes == 1
    assert rest == [sub for name, (sub, _) in subs.items() if name != "idle"]
    assert batch.pending == len(subs) - 1  # settled for the one written
