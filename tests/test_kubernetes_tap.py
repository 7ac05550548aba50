"""The live tap: followed workflows' lines from pods/log, ahead of Vector, stored once."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from reana_log_sse.kubernetes.tap import CRI_MAX_LINE
from reana_log_sse.store.identity import format_ns
from tests.fake_apiserver import FakeApiserver, job_pod, running
from tests.faultkit import rss_mb
from tests.helpers import Follower, post_batch
from tests.serve_process import ServeProcess
from tests.test_kubernetes_statuses import until
from tests.vectorsim import Pipeline, Pod, cri_line, kubernetes_logs_events, vector_request

JOB = "reana-run-job-7d2e"
POD = f"{JOB}-abcde"


@pytest.fixture
def apiserver(tmp_path, monkeypatch) -> Iterator[FakeApiserver]:
    with running() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        yield fake


def cri_ts(ns: int) -> str:
    """containerd's timestamp text: all nine fraction digits (Vector keeps that text)."""
    return format_ns(ns - ns % 1_000_000_000).rstrip("Z") + f".{ns % 1_000_000_000:09d}Z"


def compact(wf: uuid.UUID, message: str, ns: int, stream: str = "stdout") -> dict:
    """What vector.yaml's remap emits for a job pod line (see test_vector_e2e)."""
    return {"workflow_id": str(wf), "kind": "job", "job_id": JOB, "step": None, "pod": POD,
            "container": "job", "stream": stream, "timestamp": cri_ts(ns), "message": message}


def _metric(server, name: str) -> float:
    """A series' value, summed over its labels."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_kubernetes_tap_quiet_line_reaches_the_follower_and_vectors_copy_is_a_duplicate(
        apiserver, server_factory):
    # The 15 s of silence matter only to Vector's file reader (a file idle >= 10 s is read
    # every 10 s: bench's tap scenario simulates that); the tap reads the apiserver's
    # follow, which sends a line when the kubelet sees it, however long the job was
    # quiet. Here Vector's copy simply arrives later.
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        ns = time.time_ns()
        written = time.monotonic()
        apiserver.write(POD, "job", "fit converged after 15 s", ns)
        await follower.wait_logs(1)
        print(f"\ntap: written -> follower {1000 * (time.monotonic() - written):.1f} ms")
        assert follower.logs[0]["message"] == "fit converged after 15 s"
        assert follower.logs[0]["stream"] == "stdout"  # provisional: the API has no stream
    # Vector's copy, through the real remap and http sink request shape
    pod = Pod(name=POD, labels={"reana-run-job-workflow-uuid": str(wf), "user-uuid": "u",
                                "job-name": JOB, "batch.kubernetes.io/job-name": JOB})
    events = kubernetes_logs_events([cri_line("fit converged after 15 s", stream="stderr",
                                              timestamp=cri_ts(ns))], pod, "job")
    sent = [o.event for o in Pipeline().run_all(events) if o.route == "sent"]
    headers, body = vector_request(sent, server.ingest_token)
    answer = httpx.post(f"{server.url}/ingest/vector", content=body, headers=headers)
    assert answer.json() == {"accepted": 0, "duplicates": 1, "rejected": 0}
    rows = server.sql("SELECT stream, count(*) FROM log_lines WHERE workflow_id = %s"
                      " GROUP BY stream", (wf,))
    assert rows == [("stderr", 1)]  # Vector's copy corrected the stream
    again = httpx.post(f"{server.url}/ingest/vector", content=body, headers=headers)
    assert again.json()["duplicates"] == 1  # a retry: still once
    assert _metric(server, "reana_log_sse_tap_vector_duplicates_total") == 1
    assert _metric(server, "reana_log_sse_tap_lines_total") == 1


async def test_kubernetes_tap_and_vector_overlap_on_20000_lines_store_each_once_in_order(
        apiserver, server_factory):
    """Tap chunks follow the kubelet's writes (bursts of 500) and whatever the HTTP reads
    return, so a pair of identical lines with identical timestamps (every 1,000th line
    doubled) may be split over two tap chunks: the tap numbers identical lines over its
    whole follow, so it keeps both. Vector numbers them within a batch; its batches (cut
    at 1,337) never split a pair here, the one case that would merge them (documented in
    docs/reana-integration.md), so every line is stored once, in order."""
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    base = time.time_ns()
    lines: list[tuple[int, str]] = []
    for i in range(20_000):
        ns = base + i * 1000
        lines.append((ns, f"event {i} chi2={i % 97}"))
        if i % 1000 == 500:
            lines.append((ns, f"event {i} chi2={i % 97}"))
    assert all(lines[cut - 1] != lines[cut] for cut in range(1337, len(lines), 1337))
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)

        def vector() -> None:
            for start in range(0, len(lines), 1337):
                batch = [compact(wf, m, ns) for ns, m in lines[start:start + 1337]]
                assert post_batch(server.url, server.ingest_token, batch).status_code == 200

        shipper = threading.Thread(target=vector)
        for start in range(0, len(lines), 500):
            for ns, message in lines[start:start + 500]:
                apiserver.write(POD, "job", message, ns)
            if start == 5000:
                shipper.start()  # Vector starts behind the tap and overtakes it
            await asyncio.sleep(0)
        await asyncio.to_thread(shipper.join)
        await follower.wait_logs(len(lines), timeout=60)
    stored = server.sql("SELECT message FROM log_lines WHERE workflow_id = %s ORDER BY seq",
                        (wf,))
    assert [m for (m,) in stored] == [m for _, m in lines]
    assert [line["message"] for line in follower.logs] == [m for _, m in lines]
    assert follower.ids == sorted(set(follower.ids))
    assert _metric(server, "reana_log_sse_tap_lines_total") > 0


async def test_kubernetes_tap_identical_lines_split_over_chunks_and_a_resume_all_stored(
        apiserver, server_factory):
    # Three identical lines (same nanosecond, same text) reach the tap in three pieces: a
    # chunk, a later chunk, and a follow resumed after a rotation. Numbered per chunk they
    # would all be the first; the follow numbers them 0, 1, 2 as Vector's one batch does.
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    ns = time.time_ns()
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        apiserver.write(POD, "job", "retrying", ns)
        await follower.wait_logs(1)
        apiserver.write(POD, "job", "retrying", ns)
        await follower.wait_logs(2)
        apiserver.rotate(POD, "job")  # the kubelet ends the follow (kubernetes#59902)
        await until(lambda: len(apiserver.follow_requests) == 2 and apiserver.follows() == 1)
        apiserver.write(POD, "job", "retrying", ns)
        apiserver.write(POD, "job", "gave up", ns + 1)
        await follower.wait_logs(4)
        answer = post_batch(server.url, server.ingest_token,
                            [compact(wf, "retrying", ns, "stderr")] * 3
                            + [compact(wf, "gave up", ns + 1, "stderr")])
        assert answer.json() == {"accepted": 0, "duplicates": 4, "rejected": 0}
    expected = ["retrying"] * 3 + ["gave up"]
    assert [line["message"] for line in follower.logs] == expected
    assert server.sql("SELECT message, stream FROM log_lines WHERE workflow_id = %s"
                      " ORDER BY seq", (wf,)) == [(m, "stderr") for m in expected]
    assert _metric(server, "reana_log_sse_tap_vector_duplicates_total") == 4


async def test_kubernetes_tap_resumes_after_log_rotation_with_no_line_doubled(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    second = (time.time_ns() // 1_000_000_000) * 1_000_000_000
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        for i, message in enumerate(["a", "b", "b", "c"]):  # "b" twice at one instant
            apiserver.write(POD, "job", message, second + 100 + (i if i != 2 else 1))
        await follower.wait_logs(4)
        apiserver.rotate(POD, "job")  # the kubelet ends the follow (kubernetes#59902)
        await until(lambda: len(apiserver.follow_requests) == 2 and apiserver.follows() == 1)
        apiserver.write(POD, "job", "d", second + 200)  # same second as before
        await follower.wait_logs(5)
        apiserver.delete_pod(POD)  # gone: 404 for the log, no more follows
        await until(lambda: apiserver.follows() == 0)
    assert [line["message"] for line in follower.logs] == ["a", "b", "b", "c", "d"]
    resumed = apiserver.follow_requests[1]
    assert resumed["sinceTime"] == format_ns(second)  # second precision, as the API has it
    assert server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s", (wf,)) == [(5,)]


async def test_kubernetes_tap_resumes_after_an_apiserver_restart_with_no_line_doubled(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    second = (time.time_ns() // 1_000_000_000) * 1_000_000_000
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        apiserver.write(POD, "job", "before", second + 10)
        await follower.wait_logs(1)
        apiserver.drop_connections()  # watches and follows are cut mid-stream
        await until(lambda: len(apiserver.follow_requests) >= 2 and apiserver.follows() == 1)
        apiserver.write(POD, "job", "after", second + 20)
        await follower.wait_logs(2)
    assert [line["message"] for line in follower.logs] == ["before", "after"]
    assert _metric(server, "reana_log_sse_tap_lines_total") == 2
    assert _metric(server, "reana_log_sse_tap_errors_total") >= 1  # the cut follow


async def test_kubernetes_tap_follows_only_while_someone_follows_and_up_to_the_cap(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True, kubernetes_max_follows=1)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    apiserver.put_pod(job_pod(wf, "reana-run-job-8e3f", phase="Running", state="running"))
    # the watch has seen both pods (their statuses are stored), yet nobody follows
    await until(lambda: server.sql("SELECT count(*) FROM status_events WHERE workflow_id = %s",
                                   (wf,)) == [(2,)])
    assert apiserver.follow_requests == []
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        await follower.wait_for(lambda f: len(f.named("status")) == 2)
        assert apiserver.follows() == 1  # the cap: one of the two running containers
        assert _metric(server, "reana_log_sse_tap_follows") == 1
    left = time.monotonic()
    await until(lambda: apiserver.follows() == 0)
    print(f"\ntap: last follower left -> follow closed {1000 * (time.monotonic() - left):.0f} ms")
    await until(lambda: _metric(server, "reana_log_sse_tap_follows") == 0)


@pytest.mark.parametrize("answer", ["silent", "no-headers"])
async def test_kubernetes_tap_follow_silent_or_without_headers_times_out_and_reopens(
        apiserver, server_factory, answer):
    # Finding 11: a follow that went silent, or never sent its headers, had no read
    # timeout: it held a pooled connection until the pod was deleted
    server = server_factory(kubernetes="on", wait_for_unknown=True,
                            kubernetes_follow_timeout_seconds=1.0)
    wf = uuid.uuid4()
    apiserver.log_answer = answer
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: len(apiserver.follow_requests) >= 3, timeout=60)
        assert _metric(server, "reana_log_sse_tap_errors_total") >= 2
        apiserver.log_answer = None  # the kubelet answers again
        await until(lambda: apiserver.follows() == 1, timeout=60)
        apiserver.write(POD, "job", "after the silence", time.time_ns())
        await follower.wait_logs(1)
    assert [line["message"] for line in follower.logs] == ["after the silence"]


async def test_kubernetes_tap_line_stamped_an_hour_ahead_hides_none_of_the_next_20_lines(
        apiserver, server_factory):
    # Finding 11: after a line stamped an hour ahead, the tap stored none of the next 20
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        now = time.time_ns()
        apiserver.write(POD, "job", "from the future", now + 3600 * 1_000_000_000)
        for i in range(20):
            apiserver.write(POD, "job", f"line {i}", now + i)
        await follower.wait_logs(21)
        # the follow breaks: it resumes from the last line the clock allows, not from an
        # hour ahead (which would skip every line until then)
        apiserver.rotate(POD, "job")
        await until(lambda: len(apiserver.follow_requests) == 2 and apiserver.follows() == 1)
        apiserver.write(POD, "job", "after the resume", time.time_ns())
        await follower.wait_logs(22)
    assert [line["message"] for line in follower.logs] == (
        ["from the future"] + [f"line {i}" for i in range(20)] + ["after the resume"])
    assert server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s", (wf,)) == [(22,)]


async def test_kubernetes_tap_200_mb_without_newline_is_cut_and_memory_stays_bounded(
        apiserver, database_url, tmp_path):
    # Finding 5: a followed job writing 200 MB with no newline: the tap kept the line whole
    # and split it again on every chunk (RSS 673 MB). The containerd log holds it as 16 KiB
    # partial entries, which the merged follow sends with no newline between them. Now the
    # tap keeps MAX_LINE_BYTES of it, stores that cut and marked truncated (as ingest
    # cuts Vector's copy), and drops the rest as it comes. On the real service process.
    service = ServeProcess(database_url, tmp_path, REANA_LOG_SSE_KUBERNETES="on",
                           REANA_LOG_SSE_MAX_LINE_BYTES="4096",
                           REANA_LOG_SSE_WAIT_FOR_UNKNOWN="true").start()
    try:
        wf = uuid.uuid4()
        apiserver.put_pod(job_pod(wf, JOB, phase="Running", state="running"))
        async with Follower(f"{service.url}/api/workflows/{wf}/logs/stream") as follower:
            await until(lambda: apiserver.follows() == 1, timeout=60)
            assert service.proc is not None
            before = rss_mb(service.proc.pid)
            peak = [before]
            done = threading.Event()

            def sample() -> None:  # the process's RSS, polled while the line streams
                while not done.is_set():
                    peak[0] = max(peak[0], rss_mb(service.proc.pid))  # type: ignore[union-attr]
                    done.wait(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            piece = "x" * CRI_MAX_LINE
            ns = time.time_ns()
            started = time.monotonic()
            for i in range(200 * 2**20 // CRI_MAX_LINE):
                apiserver.write(POD, "job", piece, ns + i, partial=True)
            apiserver.write(POD, "job", "end of the long line", ns + 20_000)
            apiserver.write(POD, "job", "the next line", ns + 20_001)
            await follower.wait_logs(2, timeout=300)
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
        print(f"\ntap: 200 MiB without newline in {elapsed:.1f} s; service RSS "
              f"{before:.0f} -> peak {peak[0]:.0f} MB")
        assert [line["message"] for line in follower.logs] == ["x" * 4096, "the next line"]
        rows = service_sql(database_url, wf)
        assert rows == [(4096, True), (13, False)]
        assert peak[0] - before < 64, (before, peak[0])
    finally:
        service.terminate()
        service.wait()


def service_sql(database_url: str, wf: uuid.UUID) -> list[tuple[int, bool]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT octet_length(message), truncated FROM log_lines"
                            " WHERE workflow_id = %s ORDER BY seq", (wf,)).fetchall()


async def test_kubernetes_tap_slot_of_an_unfollowed_workflow_goes_to_a_waiting_one(
        apiserver, server_factory):
    # each change now looks at one workflow only: the slots a workflow frees when its last
    # follower leaves must still reach a followed workflow that waits for one
    server = server_factory(kubernetes="on", wait_for_unknown=True, kubernetes_max_follows=1)
    first, second = uuid.uuid4(), uuid.uuid4()
    apiserver.put_pod(job_pod(first, JOB, phase="Running", state="running"))
    apiserver.put_pod(job_pod(second, "reana-run-job-8e3f", phase="Running", state="running"))
    leaving = await Follower(f"{server.url}/api/workflows/{first}/logs/stream").__aenter__()
    try:
        await until(lambda: apiserver.follows() == 1)
        async with Follower(f"{server.url}/api/workflows/{second}/logs/stream") as waiting:
            await waiting.wait_for(lambda f: len(f.named("status")) == 1)
            assert [r["pod"] for r in apiserver.follow_requests] == [POD]  # the cap
            await leaving.stop()
            await until(lambda: any(r["pod"] == "reana-run-job-8e3f-abcde"
                                    for r in apiserver.follow_requests))
            apiserver.write("reana-run-job-8e3f-abcde", "job", "now followed", time.time_ns())
            await waiting.wait_logs(1)
    finally:
        await leaving.stop()
