"""The live tap with many busy follows: their chunks share commits (store/coalesce.py),
a quiet follow's line still comes through, and Vector's copies stay duplicates.

Commits are counted, not timed: the rows one transaction stored share its xmin."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.fake_apiserver import FakeApiserver, job_pod, running
from tests.helpers import Follower, post_batch
from tests.test_kubernetes_statuses import until
from tests.test_kubernetes_tap import cri_ts


@pytest.fixture
def apiserver(tmp_path, monkeypatch) -> Iterator[FakeApiserver]:
    with running() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        yield fake


def _job(i: int) -> str:
    return f"reana-run-job-{i:04x}"


def _pods(apiserver: FakeApiserver, n: int) -> list[uuid.UUID]:
    workflows = [uuid.uuid4() for _ in range(n)]
    for i, wf in enumerate(workflows):
        apiserver.put_pod(job_pod(wf, _job(i), phase="Running", state="running"))
    return workflows


def _vector_event(wf: uuid.UUID, i: int, message: str, ns: int) -> dict:
    """Vector's copy of a tapped line (vector.yaml's remap; see test_kubernetes_tap)."""
    return {"workflow_id": str(wf), "kind": "job", "job_id": _job(i), "step": None,
            "pod": f"{_job(i)}-abcde", "container": "job", "stream": "stderr",
            "timestamp": cri_ts(ns), "message": message}


async def test_kubernetes_tap_busy_follows_share_commits_in_order_and_vector_copies_dedupe(
        apiserver, server_factory):
    # 10 follows, 10 lines each, written one at a time 10 ms apart, each line its own
    # chunk: one transaction per chunk made a commit per line, and group commit alone
    # shares only what comes while a commit is in flight (a commit under 10 ms: one line
    # each); the tap's window (0.2 s here, to be far from what main's commit time would
    # reach on a loaded machine) shares them
    server = server_factory(kubernetes="on", wait_for_unknown=True,
                            kubernetes_tap_window_seconds=0.2)
    n, k = 10, 10
    workflows = _pods(apiserver, n)
    followers = [Follower(f"{server.url}/api/workflows/{wf}/logs/stream") for wf in workflows]
    for follower in followers:
        await follower.__aenter__()
    try:
        await until(lambda: apiserver.follows() == n)
        base = time.time_ns()
        written: list[tuple[int, str, int]] = []  # (follow, message, ns)

        def write() -> None:  # the load's shape: one line every 10 ms, round robin
            for j in range(k):
                for i in range(n):
                    ns = base + (j * n + i) * 1000
                    message = f"busy {i} line {j}"
                    written.append((i, message, ns))
                    apiserver.write(f"{_job(i)}-abcde", "job", message, ns)
                    time.sleep(0.01)

        writer = threading.Thread(target=write)
        writer.start()
        await asyncio.to_thread(writer.join)
        for follower in followers:
            await follower.wait_logs(k, timeout=60)
    finally:
        for follower in followers:
            await follower.stop()
    (commits,), = server.sql("SELECT count(DISTINCT xmin::text) FROM log_lines"
                             " WHERE workflow_id = ANY(%s)", (workflows,))
    print(f"\n{n * k} tapped lines of {n} follows in {commits} commits")
    assert commits <= n * k // 5  # one per chunk: about n * k
    for i, wf in enumerate(workflows):  # each follow's lines in order, once
        rows = server.sql("SELECT message FROM log_lines WHERE workflow_id = %s ORDER BY seq",
                          (wf,))
        assert [m for (m,) in rows] == [m for f, m, _ in written if f == i]
    # Vector's copies come after: each is a duplicate, and corrects the stream
    answer = post_batch(server.url, server.ingest_token,
                        [_vector_event(workflows[i], i, m, ns) for i, m, ns in written])
    assert answer.json() == {"accepted": 0, "duplicates": n * k, "rejected": 0}
    rows = server.sql("SELECT stream, count(*) FROM log_lines WHERE workflow_id = ANY(%s)"
                      " GROUP BY stream", (workflows,))
    assert rows == [("stderr", n * k)]


async def test_kubernetes_tap_quiet_line_arrives_while_other_follows_are_busy(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    busy = _pods(apiserver, 10)
    quiet = uuid.uuid4()
    apiserver.put_pod(job_pod(quiet, "reana-run-job-quiet", phase="Running", state="running"))
    followers = [Follower(f"{server.url}/api/workflows/{wf}/logs/stream") for wf in busy]
    for follower in followers:
        await follower.__aenter__()
    stop = threading.Event()

    def write() -> None:  # busy until the quiet line arrived
        j = 0
        while not stop.is_set():
            for i in range(len(busy)):
                apiserver.write(f"{_job(i)}-abcde", "job", f"busy {i} line {j}",
                                time.time_ns())
            j += 1
            time.sleep(0.001)

    try:
        async with Follower(f"{server.url}/api/workflows/{quiet}/logs/stream") as follower:
            await until(lambda: apiserver.follows() == len(busy) + 1)
            writer = threading.Thread(target=write)
            writer.start()
            try:
                await followers[0].wait_logs(20)  # the busy follows are storing
                apiserver.write("reana-run-job-quiet-abcde", "job", "the quiet line",
                                time.time_ns())
                await follower.wait_logs(1)
            finally:
                stop.set()
                await asyncio.to_thread(writer.join)
            assert [line["message"] for line in follower.logs] == ["the quiet line"]
            assert all(not f.closed_by_server for f in followers)
    finally:
        for f in followers:
            await f.stop()
    assert server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                      (quiet,)) == [(1,)]


async def test_kubernetes_tap_a_quiet_follows_line_does_not_wait_for_the_window(
        apiserver, server_factory):
    # an hour's window: the first line goes at once (the tap was quiet), and the next
    # follows' lines only because each follow was quiet (store/coalesce.py): one at once,
    # the next at the following express flush, 0.2 s on
    server = server_factory(kubernetes="on", wait_for_unknown=True,
                            kubernetes_tap_window_seconds=3600,
                            kubernetes_tap_quiet_seconds=0.2)
    workflows = _pods(apiserver, 3)
    followers = [Follower(f"{server.url}/api/workflows/{wf}/logs/stream") for wf in workflows]
    for follower in followers:
        await follower.__aenter__()
    try:
        await until(lambda: apiserver.follows() == len(workflows))
        for i, follower in enumerate(followers):
            apiserver.write(f"{_job(i)}-abcde", "job", f"line of {i}", time.time_ns())
            await follower.wait_logs(1, timeout=30)
            assert [line["message"] for line in follower.logs] == [f"line of {i}"]
    finally:
        for follower in followers:
            await follower.stop()
    (commits,), = server.sql("SELECT count(DISTINCT xmin::text) FROM log_lines"
                             " WHERE workflow_id = ANY(%s)", (workflows,))
    assert commits == 3
