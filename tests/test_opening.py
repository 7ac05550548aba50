"""Opening streams (follow/opening.py): the streams of a workflow that open together share
one opening read, which holds their first lines too; each still gets exactly its lines."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.helpers import Follower, event, post_batch, post_status


def stream_url(server: Any, wf: uuid.UUID) -> str:
    return f"{server.url}/api/workflows/{wf}/logs/stream"


async def apost(server: Any, events: list[dict[str, Any]]) -> None:
    response = await asyncio.to_thread(post_batch, server.url, server.ingest_token, events)
    assert response.status_code == 200, response.text


async def astatus(server: Any, wf: uuid.UUID, status: str, job: str) -> None:
    response = await asyncio.to_thread(post_status, server.url, server.ingest_token, wf,
                                       status, job_id=job, step=job)
    assert response.status_code == 200, response.text


class Gate:
    """Holds the service's reads of its store (run in the server's loop) until released,
    and counts the streams that subscribed and the opening reads: a stream's own opening
    snapshot (before: store.snapshot with job_statuses) or a shared one (store.opening)."""

    def __init__(self, server: Any) -> None:
        state = server.app.state
        self.loop = asyncio.get_running_loop()
        self.open = asyncio.Event()
        self.server_open: asyncio.Event | None = None
        self.subscribed = 0
        self.opening_reads = 0
        hub, store = state.hub, state.store
        subscribe = hub.subscribe

        def counting_subscribe(workflow_id: uuid.UUID) -> Any:
            self.subscribed += 1
            return subscribe(workflow_id)

        hub.subscribe = counting_subscribe
        for name in ("snapshot", "opening"):
            read = getattr(store, name, None)
            if read is None:
                continue

            async def held(*args: Any, _read: Any = read, _name: str = name,
                           **kwargs: Any) -> Any:
                if _name == "opening" or kwargs.get("job_statuses"):
                    self.opening_reads += 1
                if self.server_open is None:
                    self._server_loop = asyncio.get_running_loop()
                    self.server_open = asyncio.Event()  # then the flag: see release()
                    if self.open.is_set():
                        self.server_open.set()
                await self.server_open.wait()
                return await _read(*args, **kwargs)

            setattr(store, name, held)

    def release(self) -> None:
        self.open.set()
        if self.server_open is not None:
            self._server_loop.call_soon_threadsafe(self.server_open.set)

    async def wait_subscribed(self, n: int) -> None:
        while self.subscribed < n:  # a condition, checked as the server's thread runs
            await asyncio.sleep(0.005)


def statuses_of(f: Follower, job: str) -> list[str]:
    return [s["status"] for s in f.named("status") if s.get("job_id") == job]


async def test_opening_streams_opening_together_share_reads_and_get_their_lines_once(
        live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, f"a{i}") for i in range(30)])
    await astatus(live_server, wf, "running", "job-1")
    gate = Gate(live_server)
    fresh = [Follower(stream_url(live_server, wf)) for _ in range(10)]
    resumed = [Follower(stream_url(live_server, wf), {"Last-Event-ID": "20"})
               for _ in range(10)]
    opening = asyncio.gather(*(f.__aenter__() for f in fresh + resumed))
    try:
        await gate.wait_subscribed(20)
        # committed after every stream subscribed, before any opening read ran
        await apost(live_server, [event(wf, f"b{i}") for i in range(5)])
        await astatus(live_server, wf, "running", "job-2")
        gate.release()
        await opening
        for f in fresh + resumed:
            await f.wait_for(lambda f: 35 in f.ids and statuses_of(f, "job-2"))
        # two reads per `since` at most: the first, and the one all the others joined
        assert gate.opening_reads <= 4
        await apost(live_server, [event(wf, f"c{i}") for i in range(5)])
        await astatus(live_server, wf, "finished", "job-1")
        for f in fresh + resumed:
            await f.wait_for(lambda f: 40 in f.ids and statuses_of(f, "job-1") == [
                "running", "finished"])
    finally:
        opening.cancel()
        for f in fresh + resumed:
            await f.stop()
    for f in fresh:
        assert f.ids == list(range(1, 41))
        assert [x["message"] for x in f.logs[:30]] == [f"a{i}" for i in range(30)]
    for f in resumed:
        assert f.ids == list(range(21, 41))
    for f in fresh + resumed:
        assert statuses_of(f, "job-1") == ["running", "finished"]
        assert statuses_of(f, "job-2") == ["running"]


async def test_opening_a_stream_needs_no_catch_up_read_for_what_its_opening_read_held(
        live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, f"a{i}") for i in range(20)])
    metrics = live_server.app.state.metrics
    before = metrics.catchup_reads._value.get()
    async with Follower(stream_url(live_server, wf)) as f, \
            Follower(stream_url(live_server, wf), {"Last-Event-ID": "20"}) as g:
        await f.wait_logs(20)
        await apost(live_server, [event(wf, "b")])
        await f.wait_logs(21)
        await g.wait_logs(1)
    assert f.ids == list(range(1, 22)) and g.ids == [21]
    # the lines came with the opening read (since=0) or were none (resumed at the newest)
    assert metrics.catchup_reads._value.get() == before


async def test_opening_a_read_that_began_before_a_stream_subscribed_is_never_shared_with_it(
        live_server):
    """A stream that asks while another's opening read is running waits for the next read:
    the running one's snapshot may predate its subscription, and a status committed in
    between (and already broadcast to the feed's earlier subscribers) would be lost."""
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, "a")])
    state = live_server.app.state
    store, hub = state.store, state.hub
    opening = store.opening
    hold = asyncio.Event()
    held_loop: list[asyncio.AbstractEventLoop] = []
    reads = []

    async def held_after_reading(*args: Any, **kwargs: Any) -> Any:
        snap = await opening(*args, **kwargs)  # the snapshot is taken: hold it back
        reads.append(snap)
        if len(reads) == 1:
            held_loop.append(asyncio.get_running_loop())
            await hold.wait()
        return snap

    store.opening = held_after_reading
    first = Follower(stream_url(live_server, wf))
    first_open = asyncio.ensure_future(first.__aenter__())
    second = Follower(stream_url(live_server, wf))
    second_open: asyncio.Future[Any] | None = None
    try:
        while not held_loop:  # the first stream's read has its snapshot
            await asyncio.sleep(0.005)
        feed = hub.feeds[wf]
        await astatus(live_server, wf, "running", "job-s")
        while not any(getattr(i, "status", None) is not None
                      and i.status.job_id == "job-s"
                      for sub in list(feed.subscribers) for i in list(sub.items)):
            await asyncio.sleep(0.005)  # the feed has broadcast it to the first stream
        second_open = asyncio.ensure_future(second.__aenter__())
        while len(feed.subscribers) < 2:  # the second stream subscribed and asked
            await asyncio.sleep(0.005)
        held_loop[0].call_soon_threadsafe(hold.set)
        await asyncio.gather(first_open, second_open)
        for f in (first, second):
            await f.wait_for(lambda f: statuses_of(f, "job-s") == ["running"])
        await apost(live_server, [event(wf, "b")])
        for f in (first, second):
            await f.wait_logs(2)
    finally:
        if held_loop:
            held_loop[0].call_soon_threadsafe(hold.set)
        for f in (first, second):
            await f.stop()
    assert len(reads) == 2
    for f in (first, second):
        assert f.ids == [1, 2] and statuses_of(f, "job-s") == ["running"]
