"""Fault scenarios (issue 11), each printing its figures: lines sent, stored and delivered,
lost, duplicated, HTTP status counts, RSS before and after. README "Reliability" lists
them. The soak's length is REANA_LOG_SSE_SOAK_SECONDS (default 60: the suite stays under
15 minutes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from reana_log_sse.store import db
from reana_log_sse.store.embedded import embedded_postgres
from tests.conftest import LiveServer, make_settings
from tests.faultkit import Follow, Sender, SenderThread, batch, check, follow, rss_mb, stored
from tests.serve_process import ServeProcess

SOAK_SECONDS = float(os.environ.get("REANA_LOG_SSE_SOAK_SECONDS", "60"))


async def _until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await asyncio.sleep(0.02)


def _finish(sender: Sender, urls: list[str], workflows: list[uuid.UUID]) -> None:
    for wf in workflows:
        for attempt in range(200):
            try:
                r = httpx.post(f"{urls[attempt % len(urls)]}/api/workflows/{wf}/status",
                               json={"status": "finished"}, timeout=10,
                               headers={"Authorization": sender.headers["Authorization"]})
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)


def _report(name: str, sender: Sender, sql, workflows, records: dict[uuid.UUID, list[Follow]],
            sent: dict[uuid.UUID, int], rss: tuple[float, float], extra: str = "") -> None:
    """Print the scenario's figures, then assert nothing was lost or duplicated."""
    rows = lost = dup = delivered = resumes = 0
    problems = []
    for wf in workflows:
        n, distinct, last = stored(sql, wf)
        rows += n
        if (n, distinct) != (sent[wf], sent[wf]):
            problems.append(f"{wf}: sent {sent[wf]}, stored {n} ({distinct} distinct)")
        for record in records.get(wf, []):
            lo, du = check(record, last)
            lost, dup = lost + lo, dup + du
            delivered += len(record.ids)
            resumes += record.resumes
            if not record.ended:
                problems.append(f"{wf}: a follower never got `end`")
    errors: dict[str, int] = {}
    for recs in records.values():
        for record in recs:
            for k, v in record.errors.items():
                errors[k] = errors.get(k, 0) + v
    print(f"\n[{name}] lines sent {sum(sent.values())} (answered 200), stored {rows}, "
          f"dropped by 4xx {sender.dropped}; followers {sum(map(len, records.values()))}: "
          f"delivered {delivered}, lost {lost}, duplicated {dup}, resumes {resumes}; "
          f"ingest HTTP {dict(sorted(sender.statuses.items()))}; follower errors "
          f"{dict(sorted(errors.items()))}; RSS {rss[0]:.0f} -> {rss[1]:.0f} MB{extra}")
    assert not problems, problems
    assert (lost, dup, sender.dropped) == (0, 0, 0)


async def test_fault_postgres_killed_with_sigkill_mid_ingest(tmp_path: Path):
    import embedded_postgres as ep

    with embedded_postgres(tmp_path / "pg") as url:
        await db.migrate(url)
        server = LiveServer(make_settings(url, db_timeout_seconds=1)).start()
        try:
            workflows = [uuid.uuid4() for _ in range(3)]
            sender = Sender([server.url], server.ingest_token)
            thread = SenderThread(sender, workflows, per_batch=200, pause=0.005)
            rss_before = rss_mb()
            thread.start()
            await _until(lambda: sender.sent >= 1200, what="first lines")
            records = {wf: [Follow(), Follow()] for wf in workflows}
            tasks = [asyncio.create_task(follow([server.url], wf, r, deadline=120))
                     for wf, recs in records.items() for r in recs]
            await _until(lambda: sender.sent >= 3000, what="lines before the kill")
            pgdata = tmp_path / "pg" / "pgdata"
            postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
            children = postmaster.children(recursive=True)
            killed_at = time.monotonic()
            os.kill(postmaster.pid, signal.SIGKILL)
            await asyncio.to_thread(psutil.wait_procs, [postmaster, *children], 20)
            await _until(lambda: sender.statuses["503"] >= 1, what="a 503 while down")
            await asyncio.to_thread(ep.get_server(pgdata).ensure_postgres_running)
            outage = time.monotonic() - killed_at
            after_restart = sender.sent
            await _until(lambda: sender.sent >= after_restart + 2000, what="lines after")
            thread.stop.set()
            await asyncio.to_thread(thread.join, 60)
            assert thread.error is None, thread.error
            await asyncio.to_thread(_finish, sender, [server.url], workflows)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            _report("PostgreSQL SIGKILL mid-ingest", sender, server.sql, workflows, records,
                    thread.next, (rss_before, rss_mb()),
                    f"; PostgreSQL down {outage:.1f} s, lines after the restart "
                    f"{sender.sent - after_restart}")
        finally:
            server.stop()


async def test_fault_two_replicas_one_sigtermed_mid_stream(database_url: str, tmp_path: Path):
    a = ServeProcess(database_url, tmp_path).start()
    b = ServeProcess(database_url, tmp_path).start()
    try:
        workflows = [uuid.uuid4() for _ in range(3)]
        sender = Sender([a.url, b.url], a.ingest_token)
        thread = SenderThread(sender, workflows, per_batch=100, pause=0.005)
        rss_before = rss_mb(b.proc.pid)
        thread.start()
        await _until(lambda: sender.sent >= 600, what="first lines")
        records = {wf: [Follow(), Follow()] for wf in workflows}  # all on A first
        tasks = [asyncio.create_task(follow([a.url, b.url], wf, r, deadline=120))
                 for wf, recs in records.items() for r in recs]
        await _until(lambda: all(r.ids for recs in records.values() for r in recs),
                     what="every follower streaming from A")
        await _until(lambda: sender.sent >= 2000, what="lines before SIGTERM")
        a.terminate()
        assert await asyncio.to_thread(a.wait) == 0
        switched = sender.sent
        await _until(lambda: sender.sent >= switched + 2000, what="lines on B")
        thread.stop.set()
        await asyncio.to_thread(thread.join, 60)
        assert thread.error is None, thread.error
        await asyncio.to_thread(_finish, sender, [b.url], workflows)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        incomplete = "without completing response" in a.output()
        _report("two replicas, A SIGTERM'd mid-stream", sender, lambda q, p: _sql(
            database_url, q, p), workflows, records, thread.next,
            (rss_before, rss_mb(b.proc.pid)), f"; A cut a response: {incomplete}")
        assert not incomplete
    finally:
        for s in (a, b):
            s.terminate()
            s.kill()


def _sql(url: str, query: str, params):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall()


@pytest.mark.timeout(SOAK_SECONDS + 240)  # the soak's own length, plus setup and checks
async def test_fault_soak_with_followers_resuming_at_random(database_url: str, tmp_path: Path):
    server = ServeProcess(database_url, tmp_path).start()
    try:
        workflows = [uuid.uuid4() for _ in range(4)]
        sender = Sender([server.url], server.ingest_token)
        thread = SenderThread(sender, workflows, per_batch=20, pause=0.03)
        thread.start()
        await _until(lambda: sender.sent >= 200, what="first lines")
        rss_before = rss_mb(server.proc.pid)
        rng = random.Random(11)
        records = {wf: [Follow() for _ in range(3)] for wf in workflows}
        tasks = [asyncio.create_task(follow([server.url], wf, r, resume_every=(0.2, 3.0),
                                            rng=random.Random(rng.random()),
                                            deadline=SOAK_SECONDS + 120))
                 for wf, recs in records.items() for r in recs]
        await asyncio.sleep(SOAK_SECONDS)  # the soak's length is its point, not a wait
        thread.stop.set()
        await asyncio.to_thread(thread.join, 60)
        assert thread.error is None, thread.error
        rss_after = rss_mb(server.proc.pid)
        await asyncio.to_thread(_finish, sender, [server.url], workflows)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        _report(f"soak {SOAK_SECONDS:.0f} s, followers resuming at random", sender,
                lambda q, p: _sql(database_url, q, p), workflows, records, thread.next,
                (rss_before, rss_after))
    finally:
        server.terminate()
        server.kill()


def _slow_reader(port: int, wf: uuid.UUID, stop: threading.Event, received: list[int]) -> None:
    """A reader on a small receive buffer taking 4 KiB every 0.1 s."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET /api/workflows/{wf}/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.settimeout(1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                received[0] += len(sock.recv(4096))
            time.sleep(0.1)


async def test_fault_slow_readers_beside_fast_ones(server_factory):
    bound = 1024 * 1024
    server = server_factory(follower_queue_bytes=bound)
    hub = server.app.state.hub
    wf = uuid.uuid4()
    sender = Sender([server.url], server.ingest_token)
    await asyncio.to_thread(sender.post, batch(wf, 0, 1))
    stop = threading.Event()
    slow_bytes = [[0] for _ in range(4)]
    slow = [threading.Thread(target=_slow_reader, args=(server.port, wf, stop, got), daemon=True)
            for got in slow_bytes]
    for t in slow:
        t.start()
    fast = [Follow() for _ in range(8)]
    tasks = [asyncio.create_task(follow([server.url], wf, r, deadline=120)) for r in fast]
    await _until(lambda: all(r.ids for r in fast) and len(hub.feeds[wf].subscribers) == 12,
                 what="12 readers subscribed")
    rss_before = rss_mb()
    posted_at: list[float] = [time.time()]  # id n was posted at posted_at[n - 1]
    peak = 0
    for b in range(60):
        t0 = time.time()
        await asyncio.to_thread(sender.post, batch(wf, 1 + b * 50, 50, size=2000))
        posted_at += [t0] * 50
        for sub in list(hub.feeds[wf].subscribers):
            peak = max(peak, sub.queued_bytes)
        await asyncio.sleep(0.02)
    await asyncio.to_thread(_finish, sender, [server.url], [wf])
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    stop.set()
    delays = sorted(t - posted_at[i - 1] for r in fast for i, t in zip(r.ids, r.times,
                                                                       strict=True) if i > 1)
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99)]
    _report("4 slow readers beside 8 fast ones", sender, server.sql, [wf], {wf: fast},
            {wf: 1 + 60 * 50}, (rss_before, rss_mb()),
            f"; fast followers post->delivery p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
            f"(reported, not asserted); slow readers read {[g[0] >> 10 for g in slow_bytes]} "
            f"KiB; largest follower queue {peak / 2**20:.2f} MiB (bound {bound >> 20} MiB)")
    assert peak <= bound
