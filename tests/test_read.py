"""GET .../logs (json, text), POST .../status, and the operations endpoints."""

from __future__ import annotations

import uuid

import httpx

from tests.helpers import event, post_batch, post_status

JOB = "reana-run-job-1"  # tests.helpers.event's default job (no step: its label)


def test_read_json_pages_with_next_since(live_server):
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [event(wf, f"l{i}") for i in range(25)])
    page = live_server.get(f"/api/workflows/{wf}/logs?limit=10").json()
    assert [x["message"] for x in page["lines"]] == [f"l{i}" for i in range(10)]
    assert page["next_since"] == 10
    assert page["status"] is None
    rest = live_server.get(f"/api/workflows/{wf}/logs?since={page['next_since']}&limit=100").json()
    assert [x["id"] for x in rest["lines"]] == list(range(11, 26))
    line = rest["lines"][0]
    assert set(line) == {"id", "workflow_id", "kind", "job_id", "step", "stream", "timestamp",
                         "message"}
    assert line["timestamp"].endswith("Z")


def test_read_text_streams_a_download_of_any_size(live_server):
    wf = uuid.uuid4()
    for n in range(3):  # more lines than one read chunk (5,000)
        post_batch(live_server.url, live_server.ingest_token,
                   [event(wf, f"{n}-{i}") for i in range(4000)])
    with httpx.stream("GET", f"{live_server.url}/api/workflows/{wf}/logs?format=text") as r:
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        text = r.read().decode()
    assert text.splitlines() == [f"[{JOB}] {n}-{i}" for n in range(3) for i in range(4000)]


def test_read_text_prefixes_lines_by_step_or_job_as_the_cli_does(live_server):
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [
        event(wf, "engine up", job=None, kind="workflow"),
        event(wf, "fit a", job="reana-run-job-a", step="fitdata"),
        event(wf, "fit b", job="reana-run-job-b", step="fitdata", stream="stderr"),
        event(wf, "no step", job="reana-run-job-c")])

    def text(**params: str) -> list[str]:
        r = live_server.get(f"/api/workflows/{wf}/logs", params={"format": "text", **params})
        assert r.status_code == 200, r.text
        return r.text.splitlines()

    assert text() == text(prefix="step") == [  # as `reana-log-sse logs` prints them
        "[workflow] engine up", "[fitdata] fit a", "[fitdata:stderr] fit b",
        "[reana-run-job-c] no step"]
    assert text(prefix="job") == [  # two jobs of one step told apart
        "[workflow] engine up", "[reana-run-job-a] fit a", "[reana-run-job-b:stderr] fit b",
        "[reana-run-job-c] no step"]
    assert text(prefix="none") == ["engine up", "fit a", "fit b", "no step"]
    r = live_server.get(f"/api/workflows/{wf}/logs", params={"format": "text",
                                                             "prefix": "pod"})
    assert r.status_code == 400 and "prefix must be step, job or none" in r.text


def test_read_unknown_workflow_and_bad_parameters(live_server):
    wf = uuid.uuid4()
    assert live_server.get(f"/api/workflows/{wf}/logs").status_code == 404
    post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
    assert live_server.get(f"/api/workflows/{wf}/logs?tail=abc").status_code == 400
    assert live_server.get(f"/api/workflows/{wf}/logs?kind=pod").status_code == 400
    assert live_server.get(f"/api/workflows/{wf}/logs?format=xml").status_code == 400


def test_status_requires_the_ingest_token_and_a_known_status(live_server):
    wf = uuid.uuid4()
    no_auth = httpx.post(f"{live_server.url}/api/workflows/{wf}/status",
                         json={"status": "running"})
    assert no_auth.status_code == 401
    bad = post_status(live_server.url, live_server.ingest_token, wf, "exploded")
    assert bad.status_code == 422
    ok = post_status(live_server.url, live_server.ingest_token, wf, "running")
    assert ok.status_code == 200
    assert live_server.get(f"/api/workflows/{wf}/logs").json()["status"] == "running"


def test_status_deleted_removes_the_workflows_lines(live_server):
    keep, gone = uuid.uuid4(), uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token,
               [event(keep, "k"), event(gone, "g1"), event(gone, "g2")])
    post_status(live_server.url, live_server.ingest_token, gone, "deleted")
    assert live_server.get(f"/api/workflows/{gone}/logs").json()["lines"] == []
    assert len(live_server.get(f"/api/workflows/{keep}/logs").json()["lines"]) == 1


def test_operations_endpoints(live_server):
    assert live_server.get("/healthz").json() == {"status": "ok"}
    assert live_server.get("/readyz").json() == {"status": "ready"}
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token,
               [event(wf, "x", collected_at=event(wf, "")["timestamp"])])
    metrics = live_server.get("/metrics").text
    assert "reana_log_sse_lines_ingested_total 1.0" in metrics
    assert 'reana_log_sse_stage_delay_seconds_count{stage="written_to_collected"} 1.0' in metrics
    assert "reana_log_sse_active_streams 0.0" in metrics
    assert live_server.ingest_token not in metrics


def test_status_names_the_step_of_a_jobs_lines_before_and_after(live_server):
    wf = uuid.uuid4()
    job = "reana-run-job-0f0e"
    token = live_server.ingest_token
    post_batch(live_server.url, token, [event(wf, "early", job=job)])  # pods carry no step
    post_status(live_server.url, token, wf, "running", job_id=job, step="fitdata")
    post_batch(live_server.url, token, [event(wf, "later", job=job),
                                        event(wf, "other", job="reana-run-job-else")])
    lines = live_server.get(f"/api/workflows/{wf}/logs?job=fitdata").json()["lines"]
    assert [(x["message"], x["step"]) for x in lines] == [("early", "fitdata"),
                                                         ("later", "fitdata")]


def test_cors_lets_only_the_configured_origin_embed_the_widget(server_factory):
    server = server_factory(cors_origins="https://reana.example.org")
    wf = uuid.uuid4()
    post_batch(server.url, server.ingest_token, [event(wf, "x")])
    path = f"/api/workflows/{wf}/logs"
    ok = server.get(path, headers={"Origin": "https://reana.example.org"})
    assert ok.headers["access-control-allow-origin"] == "https://reana.example.org"
    other = server.get(path, headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
    widget = server.get("/static/reana-live-log.js", headers={"Origin": "https://reana.example.org"})
    assert widget.status_code == 200
    assert widget.headers["access-control-allow-origin"] == "https://reana.example.org"
    # the event stream, which the app runs before its middleware stack (app.LogsApp)
    with httpx.stream("GET", server.url + path + "/stream", timeout=30,
                      headers={"Origin": "https://reana.example.org"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == "https://reana.example.org"
    with httpx.stream("GET", server.url + path + "/stream", timeout=30,
                      headers={"Origin": "https://evil.example.com"}) as stream:
        assert stream.status_code == 200 and "access-control-allow-origin" not in stream.headers
    preflight = httpx.options(server.url + path + "/stream", headers={
        "Origin": "https://reana.example.org", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, last-event-id"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://reana.example.org"
    unknown = server.get(f"/api/workflows/{uuid.uuid4()}/logs/stream",
                         headers={"Origin": "https://reana.example.org"})
    assert unknown.status_code == 404  # answered by the endpoint, still with CORS headers
    assert unknown.headers["access-control-allow-origin"] == "https://reana.example.org"


def test_read_status_tokens_split_the_rights_ingest_token_refused_on_status(server_factory):
    """Job pods share REANA's runtime namespace and shipped jobs hold the lines' token;
    with REANA_LOG_SSE_STATUS_TOKENS set, a workflow's status and `deleted` (which erases
    a workflow's logs) take a status token; the ingest token may post only a job's status
    (what `reana-log-sse ship` sends), and a status token cannot ingest lines."""
    server = server_factory(status_tokens="status-secret")
    wf = str(uuid.uuid4())
    assert post_batch(server.url, server.ingest_token, [event(wf, "kept")]).status_code == 200
    for body in ({}, {"job_id": "reana-run-job-1"}):
        r = post_status(server.url, server.ingest_token, wf, "deleted", **body)
        assert r.status_code == 403 and "status token" in r.json()["error"]
    r = post_status(server.url, server.ingest_token, wf, "finished")
    assert r.status_code == 403
    assert post_status(server.url, "wrong", wf, "finished").status_code == 401
    assert post_batch(server.url, "status-secret", [event(wf, "x")]).status_code == 401
    lines = server.get(f"/api/workflows/{wf}/logs?format=json").json()["lines"]
    assert [x["message"] for x in lines] == ["kept"]
    r = post_status(server.url, server.ingest_token, wf, "failed", job_id="reana-run-job-1",
                    exit_code=3)
    assert r.status_code == 200, r.text  # a job's status, as ship posts it
    assert post_status(server.url, "status-secret", wf, "finished").status_code == 200
