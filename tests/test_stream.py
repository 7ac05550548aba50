"""GET .../logs/stream against a real uvicorn: order, resume, concurrency, end."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg

from tests.helpers import Follower, event, post_batch, post_status, settle


def stream_url(server, wf, query: str = "") -> str:
    return f"{server.url}/api/workflows/{wf}/logs/stream{query}"


async def apost(server, events):
    return await asyncio.to_thread(post_batch, server.url, server.ingest_token, events)


async def test_stream_vector_batch_reaches_follower_in_order(live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, "first")])
    async with Follower(stream_url(live_server, wf)) as f:
        await f.wait_logs(1)
        await apost(live_server, [event(wf, f"line {i}") for i in range(200)])
        await f.wait_logs(201)
    assert [x["message"] for x in f.logs] == ["first"] + [f"line {i}" for i in range(200)]
    assert f.ids == list(range(1, 202))
    assert f.retry == 2000


async def test_stream_headers_and_frames(live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, "x", step="fitdata")])
    async with httpx.AsyncClient() as client, client.stream(
        "GET", stream_url(live_server, wf)
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            if "event: log" in text and text.endswith("\n\n"):
                break
    assert text.startswith("retry: 2000\n\n")
    assert f'event: log\nid: 1\ndata: {{"id":1,"workflow_id":"{wf}","kind":"job",' in text
    assert '"step":"fitdata","stream":"stdout"' in text


async def test_stream_ping_frames_end_in_lf_like_every_other_frame(server_factory):
    server = server_factory(ping_seconds=0.1)
    wf = uuid.uuid4()
    await apost(server, [event(wf, "x")])
    async with httpx.AsyncClient() as client, client.stream(
        "GET", stream_url(server, wf)
    ) as response:
        raw = b""
        async for chunk in response.aiter_raw():
            raw += chunk
            if raw.count(b": ping") >= 2:
                break
    assert b"\r" not in raw and b"\n\n: ping\n\n" in raw  # sse-starlette's default: CRLF


async def test_stream_resumes_after_last_event_id_exactly_once(live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, f"a{i}") for i in range(10)])
    async with Follower(stream_url(live_server, wf)) as f:
        await f.wait_logs(10)
    k = f.ids[6]
    await apost(live_server, [event(wf, f"b{i}") for i in range(5)])
    async with Follower(stream_url(live_server, wf), {"Last-Event-ID": str(k)}) as g:
        await g.wait_logs(8)
        await apost(live_server, [event(wf, "c")])
        await g.wait_logs(9)
    assert g.ids == list(range(k + 1, 17))
    # Last-Event-ID wins over since
    async with Follower(stream_url(live_server, wf, "?since=1"), {"Last-Event-ID": "14"}) as h:
        await h.wait_logs(2)
        await settle(h, live_server.url, live_server.ingest_token, wf)
    assert h.ids == [15, 16]


async def test_stream_concurrent_ingest_from_two_replicas_no_gap_no_duplicate(server_factory):
    # Two service replicas on one database, four writers, one follower per replica.
    a = server_factory()
    b = server_factory()
    wf = uuid.uuid4()
    await apost(a, [event(wf, "start", job="w")])
    per_writer, batches = 150, 10

    async def writer(server, name):
        for n in range(batches):
            await apost(server, [event(wf, f"{name}-{n}-{i}", job=name)
                                 for i in range(per_writer // batches)])

    total = 1 + 4 * per_writer
    async with Follower(stream_url(a, wf)) as fa, Follower(stream_url(b, wf)) as fb:
        await fa.wait_logs(1)
        await fb.wait_logs(1)
        await asyncio.gather(writer(a, "w1"), writer(b, "w2"), writer(a, "w3"), writer(b, "w4"))
        await fa.wait_logs(total, timeout=60)
        await fb.wait_logs(total, timeout=60)
        await settle(fa, a.url, a.ingest_token, wf)  # nothing more may arrive
        await settle(fb, b.url, b.ingest_token, wf)
    for f in (fa, fb):
        assert len(f.ids) == total
        assert f.ids == sorted(set(f.ids)), "ids strictly increase, none twice"
        messages = [x["message"] for x in f.logs]
        assert len(set(messages)) == total
        for name in ("w1", "w2", "w3", "w4"):  # each writer's lines keep their order
            mine = [m for m in messages if m.startswith(name + "-")]
            assert mine == [f"{name}-{n}-{i}" for n in range(batches)
                            for i in range(per_writer // batches)]
    stored = a.sql("SELECT seq FROM log_lines WHERE workflow_id = %s ORDER BY seq", (wf,))
    assert [s for (s,) in stored] == fa.ids


async def test_stream_follower_resumes_across_a_service_restart(live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, f"before {i}") for i in range(5)])
    async with Follower(stream_url(live_server, wf)) as f:
        await f.wait_logs(5)
        live_server.stop()
        await f.wait_closed()
    last = f.ids[-1]
    live_server.start()
    await apost(live_server, [event(wf, f"after {i}") for i in range(5)])
    async with Follower(stream_url(live_server, wf), {"Last-Event-ID": str(last)}) as g:
        await g.wait_logs(5)
        await settle(g, live_server.url, live_server.ingest_token, wf)
    assert [x["message"] for x in f.logs + g.logs] == (
        [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)])


async def test_stream_terminal_status_sends_all_lines_then_end_then_closes(live_server):
    wf = uuid.uuid4()
    token = live_server.ingest_token
    await apost(live_server, [event(wf, "x0")])
    async with Follower(stream_url(live_server, wf)) as f:
        await f.wait_logs(1)
        await asyncio.to_thread(post_status, live_server.url, token, wf, "running",
                                job_id="reana-run-job-1", step="fitdata")
        await apost(live_server, [event(wf, f"x{i}") for i in range(1, 50)])
        await asyncio.to_thread(post_status, live_server.url, token, wf, "finished")
        await f.wait_closed()
    names = [e.event for e in f.events]
    assert names[-1] == "end"
    assert f.named("end") == [{"workflow_id": str(wf), "status": "finished"}]
    assert [x["message"] for x in f.logs] == [f"x{i}" for i in range(50)]
    statuses = f.named("status")
    assert {"workflow_id": str(wf), "job_id": "reana-run-job-1", "step": "fitdata",
            "status": "running"} in statuses
    assert statuses[-1]["status"] == "finished"
    # a follower arriving later gets the whole log, then end, at once
    async with Follower(stream_url(live_server, wf)) as late:
        await late.wait_closed()
    assert late.ids == f.ids
    assert late.named("end")[0]["status"] == "finished"


async def test_stream_lines_arriving_within_the_end_grace_are_sent_before_end(server_factory):
    server = server_factory(end_grace_seconds=1.0)
    wf = uuid.uuid4()
    await apost(server, [event(wf, "a")])
    async with Follower(stream_url(server, wf)) as f:
        await f.wait_logs(1)
        await asyncio.to_thread(post_status, server.url, server.ingest_token, wf, "failed")
        await apost(server, [event(wf, "late line")])  # Vector's last batch
        await f.wait_closed()
    assert [x["message"] for x in f.logs] == ["a", "late line"]
    assert f.named("end")[0]["status"] == "failed"


async def test_stream_filters_tail_since_job_kind(live_server):
    wf = uuid.uuid4()
    batch = []
    for i in range(10):
        batch.append(event(wf, f"gen {i}", job="reana-run-job-a", step="gendata"))
        batch.append(event(wf, f"fit {i}", job="reana-run-job-b", step="fitdata"))
    batch.append(event(wf, "engine", job=None, kind="workflow"))
    await apost(live_server, batch)

    async def first(query, n):
        async with Follower(stream_url(live_server, wf, query)) as f:
            await f.wait_logs(n)
            await settle(f, live_server.url, live_server.ingest_token, wf)
        return [x["message"] for x in f.logs]

    assert await first("?tail=3", 3) == ["gen 9", "fit 9", "engine"]
    assert await first("?since=18", 3) == ["gen 9", "fit 9", "engine"]
    assert await first("?job=fitdata&tail=2", 2) == ["fit 8", "fit 9"]
    assert await first("?job=reana-run-job-a", 10) == [f"gen {i}" for i in range(10)]
    assert await first("?kind=workflow", 1) == ["engine"]
    both = await first("?job=gendata&job=reana-run-job-b&tail=4", 4)
    assert both == ["gen 8", "fit 8", "gen 9", "fit 9"]
    # the filters hold for live lines too
    async with Follower(stream_url(live_server, wf, "?job=fitdata&tail=0")) as f:
        await apost(live_server, [event(wf, "gen live", step="gendata"),
                                  event(wf, "fit live", step="fitdata")])
        await f.wait_logs(1)
        await settle(f, live_server.url, live_server.ingest_token, wf)
    assert [x["message"] for x in f.logs] == ["fit live"]


async def test_stream_slow_follower_catches_up_from_the_database(server_factory):
    # A queue of 5 lines: every batch overflows it, so every line after the first must
    # come from the database catch-up path, once and in order. (Direct writes would take
    # every batch past the queue to this follower, which reads as fast as lines come.)
    server = server_factory(follower_queue_lines=5, direct_writes=False)
    wf = uuid.uuid4()
    await apost(server, [event(wf, "start")])
    async with Follower(stream_url(server, wf)) as f:
        await f.wait_logs(1)
        for n in range(10):
            await apost(server, [event(wf, f"{n}-{i}") for i in range(100)])
        await f.wait_logs(1001)
        await settle(f, server.url, server.ingest_token, wf)
    assert f.ids == list(range(1, 1002))
    metrics = server.get("/metrics").text
    overflows = [line for line in metrics.splitlines()
                 if line.startswith("reana_log_sse_follower_overflows_total")]
    assert overflows and float(overflows[0].split()[-1]) >= 1


async def test_stream_survives_losing_the_listen_connection(live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, "one")])
    async with Follower(stream_url(live_server, wf)) as f:
        await f.wait_logs(1)
        with psycopg.connect(live_server.database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()")
        await apost(live_server, [event(wf, f"during {i}") for i in range(3)])
        await f.wait_logs(4)
    assert [x["message"] for x in f.logs] == ["one", "during 0", "during 1", "during 2"]


async def test_stream_unknown_workflow_is_404_unless_waiting_is_allowed(server_factory):
    strict = server_factory()
    wf = uuid.uuid4()
    assert strict.get(f"/api/workflows/{wf}/logs/stream").status_code == 404
    assert strict.get("/api/workflows/not-a-uuid/logs/stream").status_code == 404
    waiting = server_factory(wait_for_unknown=True)
    async with Follower(stream_url(waiting, wf)) as f:
        await apost(waiting, [event(wf, "hello")])
        await f.wait_logs(1)
    assert f.logs[0]["message"] == "hello"


async def test_stream_token_auth_refuses_without_a_reader_token(server_factory):
    server = server_factory(auth="tokens", read_tokens="reader-1")
    wf = uuid.uuid4()
    await apost(server, [event(wf, "secret")])
    assert server.get(f"/api/workflows/{wf}/logs/stream").status_code == 401
    async with Follower(stream_url(server, wf, "?access_token=reader-1")) as f:
        await f.wait_logs(1)
    ok = server.get(f"/api/workflows/{wf}/logs", headers={"Authorization": "Bearer reader-1"})
    assert ok.json()["lines"][0]["message"] == "secret"


async def test_stream_idle_follower_gets_pings_from_the_hub_timer(server_factory):
    server = server_factory(ping_seconds=0.1)
    wf = uuid.uuid4()
    await apost(server, [event(wf, "first")])
    seen = b""
    async with httpx.AsyncClient(timeout=30) as client, \
            client.stream("GET", stream_url(server, wf)) as r:
        async for chunk in r.aiter_raw():
            seen += chunk
            if seen.count(b"\n: ping\n\n") >= 2:  # two ticks of the one timer
                break
    assert b"event: log\nid: 1\n" in seen and seen.index(b"id: 1") < seen.index(b": ping")


def _metric(server, name: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_stream_client_that_reads_nothing_is_dropped_and_resumes(server_factory):
    import socket

    server = server_factory(ping_seconds=0.1, send_timeout_seconds=0.5)
    wf = uuid.uuid4()
    await apost(server, [event(wf, "first")])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.settings.port))
    sock.sendall(f"GET /api/workflows/{wf}/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        big = "x" * 60_000
        for k in range(10):  # ~12 MB: more than the socket buffers hold; never read
            await apost(server, [event(wf, f"{big} {k} {i}") for i in range(20)])
        for _ in range(600):  # the stalled write is given up: the stream closes
            if await asyncio.to_thread(_metric, server, "reana_log_sse_active_streams") == 0:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_metric, server, "reana_log_sse_active_streams") == 0
    finally:
        sock.close()
    async with Follower(stream_url(server, wf), headers={"Last-Event-ID": "1"}) as f:
        await f.wait_logs(200)  # resuming gets every line
    assert f.ids == list(range(2, 202))


async def test_stream_delay_histograms_count_batches_not_batches_times_followers(live_server):
    wf = uuid.uuid4()
    await apost(live_server, [event(wf, "first")])
    name = 'reana_log_sse_stage_delay_seconds_count{stage="committed_to_sent"}'
    before = await asyncio.to_thread(_metric, live_server, name)
    async with Follower(stream_url(live_server, wf)) as a, \
            Follower(stream_url(live_server, wf)) as b, \
            Follower(stream_url(live_server, wf)) as c:
        for f in (a, b, c):
            await f.wait_logs(1)
        for k in range(2):
            await apost(live_server, [event(wf, f"batch {k} line {i}") for i in range(5)])
            for f in (a, b, c):
                await f.wait_logs(1 + 5 * (k + 1))
        for _ in range(200):  # observed once the last follower has written each batch
            if await asyncio.to_thread(_metric, live_server, name) >= before + 2:
                break
            await asyncio.sleep(0.02)
    assert await asyncio.to_thread(_metric, live_server, name) == before + 2


async def test_stream_follower_behind_sends_its_queued_batches_in_one_write():
    import datetime as dt
    from types import SimpleNamespace

    from reana_log_sse.follow.queue import Batch, StatusItem, Subscription
    from reana_log_sse.follow.stream import Follower, follow
    from reana_log_sse.metrics import Metrics
    from reana_log_sse.store.lines import Line
    from reana_log_sse.store.snapshot import Filters, StatusRow

    metrics = Metrics()
    wf = uuid.uuid4()
    left: list[Subscription] = []
    feed = SimpleNamespace(hub=SimpleNamespace(metrics=metrics), unsubscribe=left.append)
    sub = Subscription(feed, 1000, 1 << 20)  # type: ignore[arg-type]
    ts = dt.datetime.now(dt.UTC)

    def batch(first: int, last: int) -> Batch:
        lines = [Line(i, str(wf), "job", "j", None, "stdout", ts, f"l{i}", False)
                 for i in range(first, last + 1)]
        b = Batch(first - 1, last, lines, 0.0, None)
        b.pending = 1
        return b

    batches = [batch(1, 2), batch(3, 3), batch(4, 6)]
    status = StatusRow(id=1, after_seq=6, job_id="j", step=None, status="running")
    for b in batches:
        sub.push(b)
    sub.push(StatusItem(6, status))
    sub.push(batch(7, 7))
    follower = Follower(None, wf, Filters(), 0, 0, 100, metrics)  # type: ignore[arg-type]
    stream = follow(follower, sub, b"", 1000)
    assert (await anext(stream)).startswith(b"retry: 1000")
    chunk = await anext(stream)  # the three batches queued in a row: one write
    assert chunk == b"".join(line.frame for b in batches for line in b.lines)
    assert [b.pending for b in batches] == [1, 1, 1]  # not settled before it is written
    assert b"event: status" in await anext(stream)  # a status is not folded into it
    assert [b.pending for b in batches] == [0, 0, 0]  # each settled once, once written
    assert (await anext(stream)).count(b"event: log") == 1
    assert sub.queued_lines == 0 and sub.queued_bytes == 0
    await stream.aclose()
    assert left == [sub]


async def test_stream_followers_hanging_up_leave_no_cycles_for_the_gc(live_server):
    """A soak's followers hang up and resume every few seconds (tests/test_faults.py
    soak): each closed stream must be freed as its request ends, by reference counting.
    In a cycle (response <-> subscription) each waited for a full cyclic collection,
    which ran only every few thousand streams: RSS crept up between collections."""
    import gc

    from reana_log_sse.follow.stream import FollowResponse

    wf = uuid.uuid4()
    await apost(live_server, [event(wf, "first")])

    def responses() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, FollowResponse))

    gc.collect()
    gc.disable()  # what the cyclic GC would free is counted, not freed
    try:
        for _ in range(10):
            async with Follower(stream_url(live_server, wf)) as f:
                await f.wait_logs(1)
        for _ in range(200):  # the server ends each request once it sees the hang-up
            if responses() == 0:
                break
            await asyncio.sleep(0.05)
        assert responses() == 0
    finally:
        gc.enable()
