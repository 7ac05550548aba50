"""End to end without a cluster: CRI log lines -> kubernetes_logs events -> vector.yaml's VRL
(vrl-python) -> the http sink's gzip'd JSON array with Vector's headers -> a real running
service -> an SSE follower. And Vector's retry of a batch the service refused with 503."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import uuid

import httpx

from tests.conftest import LiveServer
from tests.helpers import Follower, settle
from tests.vectorsim import (
    VECTOR_USER_AGENT,
    HttpSink,
    Pipeline,
    Pod,
    cri_line,
    cri_split,
    kubernetes_logs_events,
    vector_request,
)


def _now(offset_ms: int = 0) -> str:
    """A CRI timestamp (nanoseconds) near now: the service stores only recent days."""
    t = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=offset_ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def _pods(workflow: str) -> tuple[Pod, Pod, str]:
    job = f"reana-run-job-{uuid.uuid4()}"
    job_pod = Pod(name=f"{job}-b4c5d", labels={
        "reana-run-job-workflow-uuid": workflow, "user-uuid": "u",
        "batch.kubernetes.io/job-name": job, "job-name": job})
    batch_pod = Pod(name=f"reana-run-batch-{workflow}-h7j8k", labels={
        "reana_workflow_mode": "batch", "reana-run-batch-workflow-uuid": workflow,
        "user-uuid": "u", "job-name": f"reana-run-batch-{workflow}"})
    return job_pod, batch_pod, job


def _stream_url(server, workflow: str) -> str:
    return f"{server.url}/api/workflows/{workflow}/logs/stream"


def _post(server, events: list[dict]) -> httpx.Response:
    headers, body = vector_request(events, server.ingest_token)
    return httpx.post(f"{server.url}/ingest/vector", content=body, headers=headers, timeout=30)


async def test_vector_e2e_cri_lines_reach_the_follower(live_server):
    pipeline = Pipeline()
    workflow = str(uuid.uuid4())
    job_pod, batch_pod, job = _pods(workflow)
    long_line = "x" * (100 * 1024)
    unicode_line = "résumé ✓ 日本語 🚀"

    engine = kubernetes_logs_events(
        [cri_line("Workflow started", stream="stderr", timestamp=_now())],
        batch_pod, "workflow-engine")
    # reana-commons' REANA_LOG_FORMAT; only WARNING and worse are kept
    sidecar = kubernetes_logs_events(
        [cri_line(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S},123 | root | MainThread | INFO"
                  " | Starting a new stream request to watch Jobs", timestamp=_now())],
        batch_pod, "job-controller")
    stranger = kubernetes_logs_events(
        [cri_line("GET / 200", timestamp=_now())], Pod(name="web-1", labels={"app": "web"}),
        "nginx")
    job_lines = kubernetes_logs_events(
        [cri_line("step 1", timestamp=_now(1)),
         cri_line("warning: low statistics", stream="stderr", timestamp=_now(2)),
         *cri_split(long_line, timestamp=_now(3)),
         cri_line(unicode_line, timestamp=_now(4))],
        job_pod, "job")

    sidecar_error = kubernetes_logs_events(
        [cri_line("2026-11-24 12:00:05,321 | root | Thread-2 (watch_jobs) | ERROR | Unexpected"
                  " error: boom", stream="stderr", timestamp=_now(5))],
        batch_pod, "job-controller")
    dask = kubernetes_logs_events(
        [cri_line("distributed.scheduler - INFO - State start", stream="stderr",
                  timestamp=_now(6))],
        Pod(name=f"reana-run-dask-{workflow[:-4]}-scheduler-6f7d9c8b5-k2x9q", labels={
            "user-uuid": "u", "reana-run-dask-workflow-uuid": workflow,
            "dask.org/component": "scheduler"}), "scheduler")

    outcomes = pipeline.run_all(engine + sidecar + stranger + job_lines + sidecar_error + dask)
    assert [o.route for o in outcomes] == ["sent", "dropped", "dropped"] + ["sent"] * 6
    sent = [o.event for o in outcomes if o.route == "sent"]

    # First batch, then a follower, then the second batch while it follows.
    first = await asyncio.to_thread(_post, live_server, sent[:1])
    assert first.status_code == 200
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    async with Follower(_stream_url(live_server, workflow)) as follower:
        await follower.wait_logs(1)
        second = await asyncio.to_thread(_post, live_server, sent[1:])
        assert second.json() == {"accepted": 6, "duplicates": 0, "rejected": 0}
        await follower.wait_logs(7)
        await settle(follower, live_server.url, live_server.ingest_token, workflow)

    got = follower.logs
    assert follower.ids == [1, 2, 3, 4, 5, 6, 7]
    assert [(x["kind"], x["job_id"], x["stream"]) for x in got] == [
        ("workflow", None, "stderr"),
        ("job", job, "stdout"),
        ("job", job, "stderr"),
        ("job", job, "stdout"),
        ("job", job, "stdout"),
        ("workflow", None, "stderr"),
        # REANA's service_logs key (reana-commons get_dask_component_name)
        ("service", "dask-service-" + workflow.split("-")[0], "stderr"),
    ]
    assert got[5]["message"].endswith("| ERROR | Unexpected error: boom")
    assert got[6]["message"] == "distributed.scheduler - INFO - State start"
    assert got[6]["step"] == "scheduler"  # the pod's dask.org/component
    assert [x["message"] for x in got[:3]] == ["Workflow started", "step 1",
                                               "warning: low statistics"]
    # the 100 KiB line arrived whole and the service cut it at 64 KiB, marked, not dropped
    assert got[3]["message"] == long_line[:64 * 1024]
    assert got[3]["truncated"] is True
    assert got[4]["message"] == unicode_line
    assert {x["workflow_id"] for x in got} == {workflow}


def test_vector_e2e_headers_are_vectors(live_server):
    headers, _ = vector_request([], live_server.ingest_token)
    assert headers["User-Agent"] == VECTOR_USER_AGENT
    assert headers["Content-Type"] == "application/json"
    bad = dict(headers, Authorization="Bearer wrong")
    response = httpx.post(f"{live_server.url}/ingest/vector", content=b"", headers=bad)
    # 401 for a wrong token: vector.yaml's retry_strategy retries it (the default would
    # drop the batch); other 4xx are only for requests that can never succeed.
    assert response.status_code == 401
    # vector.yaml's healthcheck: HEAD on /healthz must answer exactly 200
    # (src/sinks/http/config.rs healthcheck: StatusCode::OK => Ok)
    assert httpx.head(f"{live_server.url}/healthz").status_code == 200


async def test_vector_e2e_retry_after_503_stores_every_line_once(live_server):
    pipeline = Pipeline()
    workflow = str(uuid.uuid4())
    job_pod, _, _ = _pods(workflow)
    lines = [cri_line(f"line {i}", timestamp=_now(i)) for i in range(50)]
    batch = [o.event for o in pipeline.run_all(kubernetes_logs_events(lines, job_pod, "job"))]
    assert len(batch) == 50

    first_answer = threading.Event()
    sink = HttpSink(f"{live_server.url}/ingest/vector", live_server.ingest_token,
                    initial_backoff=0.3, max_backoff=1.0,
                    on_response=lambda response: first_answer.set())
    with live_server.database_down():
        sending = asyncio.ensure_future(asyncio.to_thread(sink.send, batch))
        assert await asyncio.to_thread(first_answer.wait, 20)
    # the database is back; the sink's next try (0.3 s later) goes through
    response = await asyncio.wait_for(sending, 30)
    assert sink.statuses[0] == 503
    assert response.status_code == 200
    assert set(sink.statuses[:-1]) == {503}
    assert response.json() == {"accepted": 50, "duplicates": 0, "rejected": 0}

    # The response was lost and Vector sends the same batch again: nothing is stored twice.
    again = await asyncio.to_thread(sink.send, batch)
    assert again.json() == {"accepted": 0, "duplicates": 50, "rejected": 0}

    async with Follower(_stream_url(live_server, workflow)) as follower:
        await follower.wait_logs(50)
        await settle(follower, live_server.url, live_server.ingest_token, workflow)
    assert [x["message"] for x in follower.logs] == [f"line {i}" for i in range(50)]
    assert follower.ids == list(range(1, 51))


async def test_vector_e2e_rotated_token_is_retried_until_the_service_accepts_it(
        server_factory):
    # Token rotation done in the wrong order: Vector restarted with the new token before
    # the service's replicas were. Each batch is answered 401, retried with the same
    # request (vector.yaml retry_strategy), and goes through once the service restarts
    # with the new token; nothing is dropped.
    old = server_factory(ingest_tokens="old-token")
    pipeline = Pipeline()
    workflow = str(uuid.uuid4())
    job_pod, _, _ = _pods(workflow)
    lines = [cri_line(f"line {i}", timestamp=_now(i)) for i in range(20)]
    batch = [o.event for o in pipeline.run_all(kubernetes_logs_events(lines, job_pod, "job"))]
    url = f"{old.url}/ingest/vector"

    # Vector's default strategy would have dropped this batch at the first 401.
    dropped = await asyncio.to_thread(
        HttpSink(url, "new-token", retry_strategy={"type": "default"}).send, batch)
    assert dropped.status_code == 401

    refused = threading.Event()
    sink = HttpSink(url, "new-token", initial_backoff=0.1, max_backoff=0.3,
                    on_response=lambda r: r.status_code == 401 and refused.set())
    sending = asyncio.ensure_future(asyncio.to_thread(sink.send, batch))
    assert await asyncio.to_thread(refused.wait, 20)
    await asyncio.to_thread(old.stop)
    rotated = LiveServer(dataclasses.replace(old.settings,
                                             ingest_tokens="old-token,new-token"))
    await asyncio.to_thread(rotated.start)
    try:
        response = await asyncio.wait_for(sending, 30)
        assert response.status_code == 200
        assert response.json() == {"accepted": 20, "duplicates": 0, "rejected": 0}
        assert sink.statuses[0] == 401 and set(sink.statuses[:-1]) == {401}
        async with Follower(_stream_url(rotated, workflow)) as follower:
            await follower.wait_logs(20)
        assert [x["message"] for x in follower.logs] == [f"line {i}" for i in range(20)]
    finally:
        await asyncio.to_thread(rotated.stop)
