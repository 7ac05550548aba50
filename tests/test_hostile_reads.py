"""Hostile reads (issue 19, finding 3): every read is sized in bytes, whatever `tail` and
`limit` say, and what is bigger is streamed."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from reana_log_sse.client import LogFollower, LogLine
from tests.helpers import VECTOR_HEADERS, event, post_status
from tests.serve_process import ServeProcess

LINES = 200_000
MESSAGE = 500  # bytes: 200,000 lines hold 100 MB of messages


def _ingest(server: ServeProcess, wf: uuid.UUID) -> None:
    headers = {**VECTOR_HEADERS, "Authorization": f"Bearer {server.ingest_token}"}
    with httpx.Client(timeout=120) as client:
        for start in range(0, LINES, 10_000):
            batch = [event(wf, f"{i:09d} " + "x" * (MESSAGE - 10))
                     for i in range(start, start + 10_000)]
            r = client.post(f"{server.url}/ingest/vector", headers=headers,
                            content=gzip.compress(json.dumps(batch).encode(), 1))
            assert r.status_code == 200, r.text
    assert post_status(server.url, server.ingest_token, wf, "finished").status_code == 200


def _read_all(url: str, params: dict[str, str], out: dict[str, int], name: str) -> None:
    size = 0
    with httpx.stream("GET", url, params=params, timeout=300) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            size += len(chunk)
    out[name] = size


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.timeout(600)  # 100 MB ingested, then four reads of it: about 2 min on 2 cores
def test_hostile_reads_huge_tail_and_limit_four_at_once_stay_bounded_in_memory(
        database_url: str, tmp_path: Path):
    server = ServeProcess(database_url, tmp_path).start()
    try:
        wf = uuid.uuid4()
        _ingest(server, wf)
        url = f"{server.url}/api/workflows/{wf}/logs"
        baseline = _rss(server.proc.pid)
        done: dict[str, int] = {}
        reads = {
            "text tail": (url, {"format": "text", "tail": "10000000"}),
            "json tail": (url, {"format": "json", "tail": "10000000"}),
            "reana": (url, {"format": "reana"}),
            "stream tail": (url + "/stream", {"tail": "10000000"}),
        }
        threads = [threading.Thread(target=_read_all, args=(u, p, done, name), daemon=True)
                   for name, (u, p) in reads.items()]
        peak = baseline
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):  # sampled until every read has ended
            peak = max(peak, _rss(server.proc.pid))
            threads[0].join(0.05)
        assert set(done) == set(reads), done
        assert done["text tail"] > LINES * MESSAGE  # every line, streamed
        assert done["stream tail"] > LINES * MESSAGE
        grown = (peak - baseline) / 2**20
        sent = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in done.items())
        print(f"\n4 hostile reads of {LINES:,} lines ({LINES * MESSAGE / 2**20:.0f} MiB of "
              f"messages): RSS {baseline / 2**20:.0f} -> peak {peak / 2**20:.0f} MB "
              f"(+{grown:.0f} MB); sent {sent}")
        # Each read holds at most MAX_READ_BYTES (4 MiB) of messages as Line objects (about
        # 3x that in Python) and one written chunk; the stream's catch-up holds half its
        # follower budget (FOLLOWER_QUEUE_BYTES 8 MiB). Four such reads: well under 100 MB,
        # where one unsized read of these 100 MiB of messages alone takes several hundred.
        assert grown < 100, f"RSS grew {grown:.0f} MB"
        # json with limit=10 and a tail past the workflow: 10 lines, the first of the tail
        page = httpx.get(url, params={"format": "json", "limit": "10", "tail": "10000000"},
                         timeout=120).json()
        assert [line["message"][:9] for line in page["lines"]] == [
            f"{i:09d}" for i in range(10)]
    finally:
        server.terminate()
        server.kill()


def test_hostile_reads_a_page_cut_by_bytes_is_paged_on_by_the_client(live_server):
    wf = uuid.uuid4()
    headers = {**VECTOR_HEADERS, "Authorization": f"Bearer {live_server.ingest_token}"}
    for start in (0, 500):  # 1,000 lines of 8 KiB: 8 MiB, over one read's bytes
        batch = [event(wf, f"{i:04d} " + "y" * 8187) for i in range(start, start + 500)]
        r = httpx.post(f"{live_server.url}/ingest/vector", headers=headers, timeout=60,
                       content=gzip.compress(json.dumps(batch).encode(), 1))
        assert r.status_code == 200, r.text
    page = live_server.get(f"/api/workflows/{wf}/logs?format=json&limit=10000").json()
    assert page["more"] and 0 < len(page["lines"]) < 1000  # cut by bytes, not by limit
    for tail, expected in ((None, range(1000)), (900, range(100, 1000))):
        follower = LogFollower(live_server.url, str(wf), follow=False, tail=tail)
        got = [e.fields["message"][:4] for e in follower if isinstance(e, LogLine)]
        assert got == [f"{i:04d}" for i in expected]
