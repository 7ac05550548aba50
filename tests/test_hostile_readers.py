"""Hostile readers (issue 11): HEADs, never-reading followers, tokens in logs, /metrics."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from typing import Any

import httpx

from reana_log_sse.follow.queue import Batch
from tests.helpers import event, post_batch


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_stream_head_requests_leave_no_feed_behind(live_server):
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
    hub = live_server.app.state.hub
    rss_before = _rss_mb()
    with httpx.Client(timeout=30) as client:
        for _ in range(100):
            response = client.head(f"{live_server.url}/api/workflows/{wf}/logs/stream")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
    _wait(lambda: not hub.feeds)
    print(f"\n100 HEADs on a stream: feeds left {len(hub.feeds)}; RSS {rss_before:.0f} -> "
          f"{_rss_mb():.0f} MB")
    metrics = live_server.get("/metrics").text
    assert "reana_log_sse_followed_workflows 0.0" in metrics


def _queued(sub: Any) -> tuple[int, int]:
    """(lines, frame bytes) in a subscription's queue, read from the server's thread."""
    while True:
        try:
            items = list(sub.items)
            break
        except RuntimeError:  # mutated while copied
            continue
    batches = [i for i in items if isinstance(i, Batch)]
    return (sum(len(b.lines) for b in batches),
            sum(len(line.frame) for b in batches for line in b.lines))


async def test_stream_never_reading_follower_is_bounded_in_bytes(server_factory):
    bound = 1024 * 1024
    server = server_factory(follower_queue_bytes=bound, follower_queue_lines=100_000)
    hub = server.app.state.hub
    store = server.app.state.store
    reads: list[int] = []  # bytes of lines each catch-up read brought into memory
    snapshot = store.snapshot

    async def recording_snapshot(*args: Any, **kwargs: Any) -> Any:
        snap = await snapshot(*args, **kwargs)
        if snap is not None and kwargs.get("upto") is not None:  # catch-up reads only
            # Line objects, or frames built by PostgreSQL (frames=True): what it holds
            reads.append(sum(len(line.message) for line in snap.lines)
                         + sum(len(frame) for _, frame in snap.frames))
        return snap

    store.snapshot = recording_snapshot
    wf = uuid.uuid4()
    post_batch(server.url, server.ingest_token, [event(wf, "first")])
    line = "x" * (64 * 1024 - 100)
    batches, per_batch = 40, 8
    rss_before = _rss_mb()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None)) as client, \
            client.stream("GET", f"{server.url}/api/workflows/{wf}/logs/stream") as response:
        assert response.status_code == 200
        await asyncio.to_thread(_wait, lambda: wf in hub.feeds and hub.feeds[wf].subscribers)
        [sub] = hub.feeds[wf].subscribers
        peak = 0
        for b in range(batches):  # the follower reads nothing meanwhile
            await asyncio.to_thread(post_batch, server.url, server.ingest_token,
                                    [event(wf, f"{b}.{i} {line}") for i in range(per_batch)])
            peak = max(peak, _queued(sub)[1])
        rss_peak = _rss_mb()
        overflows = server.get("/metrics").text.count("follower_overflows_total 0.0") == 0
        # now it reads: it catches up from the database, every line exactly once
        ids: list[int] = []
        from reana_log_sse.client import SSEDecoder

        decoder = SSEDecoder()
        async for chunk in response.aiter_raw():
            ids += [int(eid) for name, _, eid in decoder.feed(chunk) if name == b"log"]
            if len(ids) >= 1 + batches * per_batch:
                break
    sent = batches * per_batch * len(line)
    print(f"\nnever-reading follower: sent {sent / 2**20:.1f} MiB in {batches * per_batch} "
          f"lines; queue peak {peak / 2**20:.2f} MiB (bound {bound / 2**20:.0f} MiB); "
          f"RSS {rss_before:.0f} -> {rss_peak:.0f} MB; delivered {len(ids)}, "
          f"duplicated {len(ids) - len(set(ids))}; catch-up reads {len(reads)}, largest "
          f"{max(reads, default=0) / 2**20:.2f} MiB")
    assert peak <= bound
    # catching up reads the database in pieces of about the queue's bound, not 2000 lines
    assert reads and max(reads) <= bound + 64 * 1024
    assert overflows
    assert ids == sorted(set(ids)) and len(ids) == 1 + batches * per_batch


async def test_serve_sigterm_finishes_open_streams_cleanly(database_url, tmp_path):
    from reana_log_sse.client import SSEDecoder
    from tests.serve_process import ServeProcess

    server = ServeProcess(database_url, tmp_path).start()
    try:
        wf = uuid.uuid4()
        post_batch(server.url, server.ingest_token, [event(wf, f"l{i}") for i in range(10)])

        async def follow(started: asyncio.Event) -> tuple[list[int], str | None]:
            ids: list[int] = []
            decoder = SSEDecoder()
            try:
                async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client, \
                        client.stream("GET", f"{server.url}/api/workflows/{wf}/logs/stream",
                                      params={"tail": "10"}) as response:
                    async for chunk in response.aiter_raw():
                        ids += [int(e) for n, _, e in decoder.feed(chunk) if n == b"log"]
                        if len(ids) == 10:
                            started.set()
            except httpx.HTTPError as exc:
                return ids, f"{type(exc).__name__}: {exc}"
            return ids, None

        # a reader's token, spelled as Starlette decodes it, never reaches the access log
        assert httpx.get(f"{server.url}/api/workflows/{wf}/logs?access%5Ftoken=SECRET-XYZ"
                         ).status_code == 200
        events = [asyncio.Event() for _ in range(3)]
        tasks = [asyncio.create_task(follow(e)) for e in events]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 30)
        server.terminate()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert await asyncio.to_thread(server.wait) == 0
        print(f"\nSIGTERM with 3 open streams: {[(len(i), err) for i, err in results]}")
        assert [err for _, err in results] == [None] * 3  # last chunk, then close
        assert all(ids == list(range(1, 11)) for ids, _ in results)
        assert "without completing response" not in server.output()
        assert "access%5Ftoken=***" in server.output()
        assert "SECRET-XYZ" not in server.output()
        # the client resumes on the next server with its last id
        server = ServeProcess(database_url, tmp_path).start()
        post_batch(server.url, server.ingest_token, [event(wf, f"m{i}") for i in range(5)])
        page = httpx.get(f"{server.url}/api/workflows/{wf}/logs", params={"since": "10"}).json()
        assert [line["id"] for line in page["lines"]] == [11, 12, 13, 14, 15]
    finally:
        server.terminate()
        server.kill()


def test_redact_tokens_by_parameter_name_after_decoding_in_any_spelling():
    import logging

    from reana_log_sse.redact import RedactFilter

    paths = {
        "/api/workflows/w/logs/stream?access_token=SECRET": "access_token=***",
        "/x?tail=5&access%5Ftoken=SECRET&job=a": "tail=5&access%5Ftoken=***&job=a",
        "/x?%61ccess_token=SECRET": "%61ccess_token=***",
        # a credential only its decoding shows is shown decoded, and redacted
        "/x?page=1%3Baccess_token%3DSECRET": "page=1;access_token=***",
        "/x?access_token=SECRET&access_token=SECRET2": "access_token=***&access_token=***",
        "/x?access_token=": "access_token=",
        "/x?Access_Token=SECRET&ACCESS_TOKEN=SECRET": "Access_Token=***&ACCESS_TOKEN=***",
        "/x?format=json;access_token=SECRET": "format=json;access_token=***",
        "/x?my_access_token=SECRET&password=SECRET&job=a":
            "my_access_token=***&password=***&job=a",  # anything credential-named
    }
    for path, expected in paths.items():
        record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                                   '%s - "%s %s HTTP/%s" %d',
                                   ("127.0.0.1:1", "GET", path, "1.1", 200), None)
        assert RedactFilter().filter(record)
        assert record.args[2] == path.split("?")[0] + "?" + expected
        assert record.args[4] == 200  # %d still formats
        assert "SECRET" not in record.getMessage()


def test_metrics_open_on_purpose_or_behind_its_own_token(server_factory):
    # auth=tokens guards the logs; /metrics holds counts only and is open unless a
    # metrics token is set (Prometheus then sends it as a bearer token)
    opened = server_factory(auth="tokens", read_tokens="reader")
    assert opened.get("/metrics").status_code == 200
    assert "reader" not in opened.get("/metrics").text
    guarded = server_factory(auth="tokens", read_tokens="reader", metrics_token="scrape-me")
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer reader"}).status_code == 401
    ok = guarded.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200 and "reana_log_sse_" in ok.text


async def test_stream_feed_reads_a_big_burst_in_pieces_that_fit_a_queue(server_factory):
    # One batch of 12 MiB in 64 KiB lines: the feed reads it in pieces that fit a
    # follower's queue (so a live follower is not sent to the database for all of it).
    bound = 2 * 1024 * 1024
    server = server_factory(follower_queue_bytes=bound, max_body_bytes=32 * 1024 * 1024)
    store = server.app.state.store
    reads: list[int] = []
    live = store.live

    async def recording_live(*args: Any, **kwargs: Any) -> Any:
        snap = await live(*args, **kwargs)  # the feed's reads (store/live.py)
        if snap is not None:
            reads.append(sum(len(line.message) for line in snap.lines))
        return snap

    store.live = recording_live
    wf = uuid.uuid4()
    post_batch(server.url, server.ingest_token, [event(wf, "first")])
    from tests.helpers import Follower

    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await follower.wait_logs(1)
        line = "y" * (64 * 1024 - 100)
        await asyncio.to_thread(post_batch, server.url, server.ingest_token,
                                [event(wf, f"{i} {line}") for i in range(200)])
        await follower.wait_logs(201, timeout=60)
        assert follower.ids == list(range(1, 202))
    overflows = server.get("/metrics").text.count("follower_overflows_total 0.0") == 0
    print(f"\n12.5 MiB burst: feed reads {len(reads)}, largest {max(reads) / 2**20:.2f} MiB "
          f"(queue bound {bound >> 20} MiB); a follower overflowed: {overflows}")
    assert max(reads) <= bound // 2 + 64 * 1024
