"""The bench's baselines: the socket floor's flow control (a paused follower is owed its
batches and gets them joined, in order, its buffer bounded in bytes) and the nginx +
nchan peer (every published batch reaches every follower; skipped without nginx and
its nchan module, as in CI). Times are printed, never asserted."""

from __future__ import annotations

import asyncio
import re
import socket

import psycopg
import pytest

from reana_log_sse.bench import nchan
from reana_log_sse.bench.socketfloor import CHANNEL, FloorProcess
from reana_log_sse.store.db import conninfo

LINES, SIZE, BATCHES = 50, 300, 1000  # 15 MB in all: more than loopback's buffers hold


def _chunks(body: bytes) -> list[bytes]:
    """The data of each HTTP/1.1 chunk of a chunked body (the tail may be cut)."""
    out, i = [], 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            return out
        size = int(body[i:j], 16)
        if len(body) < j + 2 + size + 2:
            return out
        out.append(body[j + 2:j + 2 + size])
        i = j + 2 + size + 2


@pytest.mark.timeout(180)
def test_bench_floor_coalesces_a_paused_followers_batches_in_order_and_bounded(database_url):
    async def run() -> tuple[dict[str, object], bytes]:
        floor = FloorProcess(database_url, LINES, SIZE)
        try:
            await floor.start()
            # a follower that reads nothing, with a small receive window: the floor's
            # transport fills the kernel's buffers, then pauses
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", floor.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            head = await loop.sock_recv(sock, 4096)  # the headers: it is a follower now
            async with await psycopg.AsyncConnection.connect(
                    conninfo(database_url), autocommit=True) as conn:
                await conn.execute(
                    "SELECT pg_notify(%s, json_build_object('seq', k * %s)::text) "
                    "FROM generate_series(1, %s) AS k", (CHANNEL, LINES, BATCHES))
                stats = await floor.stats(conn)  # after every batch was handed over
            body = bytearray(head)
            want = b"id: %d\n" % (LINES * BATCHES)
            while not (body.endswith(b"\n\n\r\n") and want in body[-2 * SIZE:]):  # read all
                data = await loop.sock_recv(sock, 1 << 20)
                assert data, "the floor closed the stream"
                body += data
            sock.close()
            return stats, bytes(body)
        finally:
            floor.stop()

    stats, body = asyncio.run(run())
    print(stats)
    assert stats["paused"] == 1 and stats["joined_batches"] > 0
    assert 0 < stats["max_buffered"] <= stats["bound"] < 200_000  # not the 15 MB sent
    chunks = _chunks(body.split(b"\r\n\r\n", 1)[1])
    ids = [[int(x) for x in re.findall(rb"\nid: (\d+)\n", b"\n" + c)] for c in chunks[1:]]
    assert [i for c in ids for i in c] == list(range(1, LINES * BATCHES + 1))  # each once
    assert max(len(c) for c in ids) > LINES  # owed batches went out joined


@pytest.mark.timeout(180)
@pytest.mark.skipif(nchan.find() is None, reason=nchan.INSTALL)
def test_bench_nchan_delivers_every_published_batch_to_every_follower(tmp_path):
    async def run() -> dict[str, object]:
        return await nchan.nchan_run(tmp_path, followers=5, rate=500.0, duration=1.0,
                                     batch=10, frame_bytes=SIZE)

    r = asyncio.run(run())
    print(r)
    assert r["opened"] == 5 and r["refused"] == 0 and r["batches"] >= 40
    assert r["undelivered"] == 0 and r["n"] == 5 * r["batches"]
    assert r["cpu_us_per_delivery"] >= 0 and "nginx" in str(r["server"])  # 0: under a tick


def test_bench_nchan_goal_rows_compare_same_run_figures_or_say_no_peer():
    ours = [{"layout": "one workflow", "followers": n, "workflows": 1, "p99": p99,
             "from_post": {"p50": 1.0, "p99": p99 + 5}, "batches": 100,
             "cpu_seconds": {"service": 0.002 * n}}  # 20 µs per follower per batch
            for n, p99 in ((100, 10.0), (1000, 40.0))]
    peer = {n: {"server": "nginx/1.22.1 + nchan", "followers": n, "p50": 1.0, "p99": p99,
                "max": 50.0, "rate": 1000.0, "achieved_rate": 1000.0, "undelivered": 0,
                "refused": 0, "refusals": [], "cpu_share": 30.0, "cpu_us_per_delivery": cpu}
            for n, p99, cpu in ((100, 12.0, 30.0), (1000, 30.0, 18.0))}
    rows = nchan.rows(peer, ours, {1000: {"cpu_us_per_delivery": 11.0}})
    goals = {r.figure.split(":")[0]: r for r in rows if r.scenario == "2 vs nchan"}
    cpu = goals["server CPU per follower per batch, 1,000 followers"]
    assert (round(cpu.value, 1), cpu.base_value, cpu.met) == (20.0, 18.0, False)
    assert "bare floor" in cpu.note
    assert goals["p99 from commit, 100 followers"].met is True  # 10 <= 12
    assert goals["p99 from commit, 1,000 followers"].met is False  # 40 > 30
    assert sum(1 for r in rows if r.figure.startswith("nginx + nchan")) == 2
    absent = nchan.rows(None, ours, {})
    assert [r.met for r in absent] == [None, None, None]
    assert all(r.goal == "<= nchan's: no peer" for r in absent)


def test_bench_posted_pairs_each_post_with_the_commits_inside_its_span():
    from array import array

    from reana_log_sse.bench.harness import CommitLog, arrivals

    log = CommitLog.__new__(CommitLog)
    log.seqs = {"w": array("q", [10, 20, 30])}
    log.times = {"w": array("d", [100.2, 101.3, 103.5])}
    # POST 1 committed id 10, POST 2 committed 20, POST 3 (102.0-102.5) nothing of w
    seqs, starts = log.posted("w", [(100.0, 100.4), (101.0, 101.6), (102.0, 102.5)])
    assert (seqs, starts) == ([10, 20], [100.0, 101.0])
    got, missing = arrivals(seqs, starts, array("q", [10, 25]), array("d", [100.5, 101.9]))
    assert [round(x, 3) for x in got] == [0.5, 0.9] and missing == 0
