"""Statuses and `end` from REANA's pods, through a fake apiserver and kubernetes-asyncio."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from reana_log_sse.kubernetes.backoff import Backoff
from tests.fake_apiserver import FakeApiserver, batch_pod, job_pod, running
from tests.helpers import Follower, event, post_batch, post_status

JOB = "reana-run-job-3f1c"


@pytest.fixture
def apiserver(tmp_path, monkeypatch) -> Iterator[FakeApiserver]:
    with running() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        yield fake


async def until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    """Wait for a condition the service reaches on its own (polled, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _statuses(f: Follower) -> list[tuple[str | None, str]]:
    return [(s["job_id"], s["status"]) for s in f.named("status")]


def _cli(url: str, wf: uuid.UUID) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "reana_log_sse", "logs", str(wf), "--follow",
                             "--server", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _run_workflow(fake: FakeApiserver, wf: uuid.UUID, job_exit: int,
                        follower: Follower) -> None:
    fake.put_pod(batch_pod(wf))
    await follower.wait_for(lambda f: (None, "running") in _statuses(f))
    fake.put_pod(job_pod(wf, JOB, scheduled=False))
    await follower.wait_for(lambda f: (JOB, "queued") in _statuses(f))
    fake.put_pod(job_pod(wf, JOB))
    await follower.wait_for(lambda f: (JOB, "pending") in _statuses(f))
    fake.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    await follower.wait_for(lambda f: (JOB, "running") in _statuses(f))
    phase = "Succeeded" if job_exit == 0 else "Failed"
    fake.put_pod(job_pod(wf, JOB, phase=phase, state="terminated", exit_code=job_exit))
    job_end = "finished" if job_exit == 0 else "failed"
    await follower.wait_for(lambda f: (JOB, job_end) in _statuses(f))
    fake.delete_pod(f"{JOB}-abcde")  # reana-job-controller cleans the job up
    # the engine exits 0 whether it published finished or failed (reana-commons
    # workflow_engine.py); the job's failure decides
    fake.put_pod(batch_pod(wf, engine="terminated", exit_code=0))


@pytest.mark.parametrize("job_exit, status, code", [(0, "finished", 0), (2, "failed", 1)])
async def test_kubernetes_pod_phases_give_statuses_then_end_and_the_cli_exit_code(
        apiserver, server_factory, job_exit, status, code):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await follower.wait_for(lambda f: f.status_code == 200)
        fake = apiserver
        fake.put_pod(batch_pod(wf))
        await follower.wait_for(lambda f: (None, "running") in _statuses(f))
        cli = _cli(server.url, wf)
        await _run_workflow(fake, wf, job_exit, follower)
        await follower.wait_closed()
    assert follower.named("end") == [{"workflow_id": str(wf), "status": status}]
    job_seq = [s for j, s in _statuses(follower) if j == JOB]
    assert job_seq == ["queued", "pending", "running", "finished" if job_exit == 0 else "failed"]
    assert [s for j, s in _statuses(follower) if j is None] == ["running", status]
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == code, err.decode()
    assert f"==> workflow: {status}" in out.decode()


async def test_kubernetes_two_replicas_store_and_send_each_status_once(apiserver,
                                                                       server_factory):
    first = server_factory(kubernetes="on", wait_for_unknown=True)
    second = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    streams = [Follower(f"{s.url}/api/workflows/{wf}/logs/stream") for s in (first, second)]
    async with streams[0] as one, streams[1] as two:
        await _run_workflow(apiserver, wf, 0, one)
        await one.wait_closed()
        await two.wait_closed()
    rows = first.sql("SELECT job_id, status, count(*) FROM status_events WHERE workflow_id = %s"
                     " GROUP BY job_id, status ORDER BY 1, 2", (wf,))
    assert all(n == 1 for _, _, n in rows), rows
    assert len(rows) == 6
    assert _statuses(one) == _statuses(two)
    assert len(_statuses(one)) == 6


async def test_kubernetes_reana_posted_terminal_status_wins_over_pods(apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
        await follower.wait_for(lambda f: (JOB, "running") in _statuses(f))
        assert post_status(server.url, server.ingest_token, wf, "failed", job_id=JOB,
                           ).status_code == 200
        await follower.wait_for(lambda f: (JOB, "failed") in _statuses(f))
        # the pod says the job succeeded after REANA said failed: REANA's word stands
        apiserver.put_pod(job_pod(wf, JOB, phase="Succeeded", state="terminated"))
        apiserver.put_pod(batch_pod(wf))  # a later change that must come through
        await follower.wait_for(lambda f: (None, "running") in _statuses(f))
    assert [s for j, s in _statuses(follower) if j == JOB] == ["running", "failed"]


async def test_kubernetes_watch_resumes_after_bookmarks_and_lists_again_after_410(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        apiserver.put_pod(job_pod(wf, JOB))
        await follower.wait_for(lambda f: (JOB, "pending") in _statuses(f))
        requests = apiserver.watch_requests
        assert all(r.get("allowWatchBookmarks", "").lower() == "true" for r in requests)
        # etcd compacted: the open watches get ERROR 410; a change made meanwhile is found
        # by listing again
        watches = len(apiserver.watch_requests)
        apiserver.expire_watches()
        apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
        await follower.wait_for(lambda f: (JOB, "running") in _statuses(f))
        await until(lambda: len(apiserver.watch_requests) >= watches + 3)
        # the new watches start from the listed resourceVersion, not the expired one
        versions = [int(r["resourceVersion"]) for r in apiserver.watch_requests[watches:]]
        assert min(versions) >= apiserver.compacted - 1
    assert [s for j, s in _statuses(follower) if j == JOB] == ["pending", "running"]


async def test_kubernetes_watch_resumes_from_a_bookmark_without_listing_again(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        apiserver.put_pod(job_pod(wf, JOB))
        await follower.wait_for(lambda f: (JOB, "pending") in _statuses(f))
        lists = len(apiserver.list_requests)
        # a pod the job watch does not select moves the resourceVersion on; the job watch
        # hears of it only by a BOOKMARK
        dask = batch_pod(wf)
        dask["metadata"] = {"name": "reana-run-dask-x-scheduler", "namespace": "default",
                            "labels": {"reana-run-dask-workflow-uuid": str(wf)}}
        apiserver.put_pod(dask)
        bookmarked = apiserver.version
        watches = len(apiserver.watch_requests)
        selector = "reana-run-job-workflow-uuid"
        await until(lambda: (selector, bookmarked) in apiserver.bookmarks)
        apiserver.end_watches()  # as timeoutSeconds does: watch again, from where?
        await until(lambda: len(apiserver.watch_requests) >= watches + 3)
        job_watches = [r for r in apiserver.watch_requests[watches:]
                       if r["labelSelector"] == selector]
        assert job_watches and job_watches[0]["resourceVersion"] == str(bookmarked)
        assert len(apiserver.list_requests) == lists  # no relist: the version was current
        apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
        await follower.wait_for(lambda f: (JOB, "running") in _statuses(f))


async def test_kubernetes_apiserver_unreachable_streams_work_from_vector_and_readyz_ok(
        tmp_path, monkeypatch, server_factory):
    fake = FakeApiserver()  # never started: nothing listens on its port
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
    server = server_factory(kubernetes="on")
    wf = uuid.uuid4()
    assert post_batch(server.url, server.ingest_token, [event(wf, "first")]).status_code == 200
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await follower.wait_logs(1)
        post_batch(server.url, server.ingest_token, [event(wf, "second")])
        await follower.wait_logs(2)
    assert [line["message"] for line in follower.logs] == ["first", "second"]
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "reana_log_sse_kubernetes_api_up 0.0" in metrics


def _metric(server: Any, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_kubernetes_100_follows_cannot_take_the_watch_connections(apiserver,
                                                                       server_factory):
    # Finding 4: 100 followed running containers = KUBERNETES_MAX_FOLLOWS = the client's
    # connection pool. When the apiserver ends the watches (timeoutSeconds), the watch
    # must get a connection again: statuses and `end` go on.
    server = server_factory(kubernetes="on", wait_for_unknown=True, kubernetes_max_follows=100)
    wf = uuid.uuid4()
    for i in range(100):
        apiserver.put_pod(job_pod(wf, f"reana-run-job-{i:03d}", phase="Running",
                                  state="running"))
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() >= 97, timeout=60)
        watches = len(apiserver.watch_requests)
        apiserver.end_watches()
        await until(lambda: len(apiserver.watch_requests) >= watches + 3)
        apiserver.put_pod(batch_pod(wf))
        await follower.wait_for(lambda f: (None, "running") in _statuses(f))
        apiserver.put_pod(batch_pod(wf, engine="terminated", exit_code=0))
        await follower.wait_closed()
    assert follower.named("end") == [{"workflow_id": str(wf), "status": "finished"}]


@pytest.mark.parametrize("event", [
    {"type": "ADDED", "object": {"kind": "Pod", "metadata": {
        "name": "evil", "labels": ["reana-run-job-workflow-uuid"]}}},
    {"type": "MODIFIED", "object": {"kind": "Pod", "metadata": ["evil"], "status": 3}},
    {"type": "ADDED", "object": "a string"},
    ["not", "an", "event"],
], ids=["labels-as-a-list", "metadata-as-a-list", "object-a-string", "event-a-list"])
async def test_kubernetes_watch_malformed_object_is_skipped_and_the_watch_lives(
        apiserver, server_factory, event):
    # Finding 9: one malformed object killed that watch for good; kubernetes_api_up
    # stayed 1
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        apiserver.put_pod(job_pod(wf, JOB))
        await follower.wait_for(lambda f: (JOB, "pending") in _statuses(f))
        apiserver.inject("reana-run-job-workflow-uuid", event)
        apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
        await follower.wait_for(lambda f: (JOB, "running") in _statuses(f))
    assert _metric(server, "reana_log_sse_kubernetes_api_up") == 1
    assert _metric(server, "reana_log_sse_kubernetes_malformed_total") == 1


def test_kubernetes_backoff_doubles_with_jitter_up_to_its_cap():
    low, high = Backoff(first=0.2, cap=30, rng=lambda: 0.0), Backoff(first=0.2, cap=30,
                                                                      rng=lambda: 1.0)
    assert [round(low.next(), 3) for _ in range(10)] == [
        0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 15.0, 15.0]
    assert [round(high.next(), 3) for _ in range(10)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    low.reset()
    assert low.next() == 0.1
    jittered = Backoff(rng=random.Random(7).random)
    assert len({jittered.next() / 2 ** n for n in range(8)}) == 8  # never in step


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


@pytest.mark.parametrize("answer", ["410-event", "410-http"])
async def test_kubernetes_every_watch_answering_410_backs_off_with_jitter(
        apiserver, server_factory, answer):
    # Finding 6: every watch answered 410 and the service listed and watched again at
    # once: 399 LIST/s and 399 WATCH/s. Now each retry waits at least half of
    # 0.2 s * 2**n (backoff.py); the lower bounds below cannot fail on a slow machine.
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    await until(lambda: _metric(server, "reana_log_sse_kubernetes_api_up") == 1)
    apiserver.watch_answer = answer
    mark = len(apiserver.request_times)
    apiserver.expire_watches()  # the open watches get ERROR 410 too

    def lists(selector: str) -> list[float]:
        return [t for kind, s, t in apiserver.request_times[mark:]
                if kind == "list" and s == selector]

    selectors = ["reana-run-job-workflow-uuid", "reana-run-batch-workflow-uuid",
                 "reana-run-dask-workflow-uuid"]
    await until(lambda: all(len(lists(s)) >= 5 for s in selectors), timeout=60)
    for selector in selectors:
        gaps = _gaps(lists(selector)[:5])  # after the 2nd .. 5th failed watch
        assert all(gap >= 0.5 * 0.2 * 2 ** (n + 1) for n, gap in enumerate(gaps)), gaps
    watches = [t for kind, _, t in apiserver.request_times[mark:] if kind == "watch"]
    lists_all = [t for kind, _, t in apiserver.request_times[mark:] if kind == "list"]
    assert len(watches) <= len(lists_all) + 3  # one watch per listing, no more
    # jitter: without it every gap would be its full 0.2 s * 2**(n+1) or more; with it
    # each falls in the upper tenth only with chance 1/5, all twelve with 1/5**12
    ratios = [gap / (0.2 * 2 ** (n + 1)) for s in selectors
              for n, gap in enumerate(_gaps(lists(s)[:5]))]
    assert min(ratios) < 0.9, ratios


async def test_kubernetes_watch_that_hangs_sets_api_up_to_0_after_the_stale_bound(
        apiserver, server_factory):
    # Findings 4 and 9: a watch that no longer hears from the apiserver (starved of
    # connections, dead, or answered never) left kubernetes_api_up at 1
    apiserver.bookmark_seconds = 0.2  # a live watch hears a BOOKMARK this often
    server = server_factory(kubernetes="on", wait_for_unknown=True,
                            kubernetes_stale_seconds=2.0)
    await until(lambda: _metric(server, "reana_log_sse_kubernetes_api_up") == 1)
    watches = len(apiserver.watch_requests)
    apiserver.watch_answer = "hang"
    apiserver.end_watches()
    await until(lambda: len(apiserver.watch_requests) >= watches + 3)
    await until(lambda: _metric(server, "reana_log_sse_kubernetes_api_up") == 0, timeout=30)


@pytest.mark.timeout(300)  # 50,000 events through the fake, the service and the GIL they share
async def test_kubernetes_burst_of_50000_pod_events_costs_the_same_per_event(
        apiserver, server_factory):
    # Finding 10: every event re-scanned every known pod (n^2): 35,388 of 50,000 handled
    # in 300 s, the rate falling from 580/s to 60/s. Now an event looks at its own
    # workflow's pods only: the work is counted (pods visited per event), never timed.
    apiserver.history_limit = 10_000  # the fake's memory is the test process's
    followed = uuid.uuid4()
    for i in range(5):
        apiserver.put_pod(job_pod(followed, f"reana-run-job-f{i}", phase="Running",
                                  state="running"))
    workflows = [uuid.uuid4() for _ in range(200)]
    pods = [job_pod(wf, f"reana-run-job-{n:02d}-{i:04d}") for n, wf in enumerate(workflows)
            for i in range(10)]  # 2,000 pods, 10 a workflow
    for pod in pods:
        apiserver.put_pod(pod)
    server = server_factory(kubernetes="on", wait_for_unknown=True)  # lists them: 5 pages
    link = server.app.state.kubernetes
    told = [0]

    async def count(pod: Any) -> None:  # a listener beside the service's own
        told[0] += 1

    link.pods.listeners.append(count)
    async with Follower(f"{server.url}/api/workflows/{followed}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 5, timeout=60)
        await until(lambda: len(link.pods.pods) == 2005, timeout=120)
        # listed in pages of 500 (client.LIST_PAGE), each read bounded in bytes
        assert any(r.get("continue") for r in apiserver.list_requests)
        events, visited = told[0], getattr(link.tap, "visited", 0)

        def burst() -> None:  # 48,000 changes that change no status (as kubelet heartbeats)
            for round_ in range(24):
                # the writer keeps at most 4 rounds (8,000 events) ahead of the service: the
                # fake keeps the last 10,000 events (history_limit), and a watch further
                # behind would skip the trimmed ones, so fewer than 48,000 would ever arrive
                while told[0] - events < (round_ - 4) * len(pods):
                    time.sleep(0.005)
                for pod in pods:
                    pod["metadata"]["annotations"] = {"round": str(round_)}
                    apiserver.put_pod(pod)

        writer = asyncio.create_task(asyncio.to_thread(burst))
        samples: list[tuple[float, int]] = []

        def handled() -> bool:
            samples.append((time.monotonic(), told[0] - events))
            return samples[-1][1] >= 48_000

        await until(handled, timeout=240)  # within the test's own timeout: a clear failure
        await writer
        assert follower.status_code == 200
    total = told[0] - events
    first = next(s for s in samples if s[1] >= 10_000)
    last_start = next(s for s in samples if s[1] >= 38_000)
    rate_first = first[1] / (first[0] - samples[0][0])
    rate_last = (samples[-1][1] - last_start[1]) / (samples[-1][0] - last_start[0])
    print(f"\nburst: {total} pod events (2,005 pods known); {rate_first:.0f}/s over the "
          f"first 10,000, {rate_last:.0f}/s over the last 10,000")
    per_event = (link.tap.visited - visited) / total
    print(f"burst: {per_event:.1f} pods visited per event")
    assert total >= 48_000
    assert per_event < 11  # the 10 pods of its workflow (and a follow ending now and then)
    # statuses: the 2,000 pods' first "pending" only (heartbeats change none)
    assert server.sql("SELECT count(*) FROM status_events") == [(2_005,)]
