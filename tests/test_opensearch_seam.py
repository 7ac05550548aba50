"""REANA's OpenSearch seam (reana_log_sse/opensearch), asked by the real opensearch-py at
the version reana-workflow-controller pins (setup.py: `opensearch-py>=2.7.0,<2.8.0`),
built as its reana_workflow_controller/opensearch.py `build_opensearch_client` builds it,
sending the queries its `OpenSearchLogFetcher.fetch_logs` sends and read as its
`_concat_rows` reads the answer."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opensearchpy import OpenSearch
from opensearchpy.exceptions import AuthenticationException

from reana_log_sse.settings import Settings
from reana_log_sse.store import partitions
from tests.helpers import event, post_batch
from tests.serve_process import ServeProcess

USER, PASSWORD = "reana", "s3cret-seam-password"
JOB_INDEX, WORKFLOW_INDEX = "fluentbit-job_log", "fluentbit-workflow_log"
JOB_FIELD = "kubernetes.labels.job-name.keyword"
WORKFLOW_FIELD = "kubernetes.labels.reana-run-batch-workflow-uuid.keyword"


def reana_client(server: Any, password: str = PASSWORD) -> OpenSearch:
    """reana_workflow_controller/opensearch.py build_opensearch_client, with the values
    of docs/reana-integration.md (REANA_OPENSEARCH_HOST/_PORT/_URL_PREFIX, USE_SSL false;
    the chart's REANA_OPENSEARCH_CA_CERTS stays, unused without TLS)."""
    return OpenSearch(hosts=f"127.0.0.1:{server.port}", http_compress=True,
                      http_auth=(USER, password), use_ssl=False,
                      ca_certs="/code/certs/ca.crt", url_prefix="/opensearch",
                      verify_certs=True)


def fetch_logs(client: OpenSearch, id: str, index: str, match: str) -> str:
    """OpenSearchLogFetcher.fetch_logs with its defaults (max_rows 5000, order asc,
    timeout 5, log_key "log"), and _concat_rows."""
    query = {"query": {"match": {match: id}}, "sort": [{"@timestamp": {"order": "asc"}}]}
    response = client.search(index=index, body=query, size=5000, timeout=5)
    logs = ""
    for hit in response["hits"]["hits"]:
        logs += hit["_source"]["log"] + "\n"
    return logs


@pytest.fixture
def seam(server_factory: Any) -> Any:
    return server_factory(opensearch_user=USER, opensearch_password=PASSWORD)


def _ingest(server: Any, events: list[dict[str, Any]], per_batch: int = 5000) -> None:
    for i in range(0, len(events), per_batch):
        r = post_batch(server.url, server.ingest_token, events[i:i + per_batch])
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text


def test_opensearch_seam_answers_a_20000_line_job_whole_and_in_order(seam):
    wf, job, other = uuid.uuid4(), f"reana-run-job-{uuid.uuid4()}", f"reana-run-job-{uuid.uuid4()}"
    lines = [f"line {i:05d} of the job" for i in range(20_000)]
    events = []
    for i, text in enumerate(lines):
        events.append(event(wf, text, job=job))
        if i % 1000 == 0:  # another job's lines in between
            events.append(event(wf, f"other {i}", job=other))
    _ingest(seam, events)
    logs = fetch_logs(reana_client(seam), job, JOB_INDEX, JOB_FIELD)
    assert logs == "".join(t + "\n" for t in lines)  # 20,000 lines, not 5,000


def test_opensearch_seam_job_after_a_retried_batch_is_whole(seam):
    """A batch that is partly a retry takes the staged path (Store._ingest_staged): the
    job's span of ids (sql/0005) still covers its new lines."""
    wf, job = uuid.uuid4(), f"reana-run-job-{uuid.uuid4()}"
    first = [event(wf, f"a{i}", job=job) for i in range(3)]
    _ingest(seam, first)
    _ingest(seam, [event(wf, "engine", job=None, kind="workflow")])
    r = post_batch(seam.url, seam.ingest_token, first + [event(wf, "b0", job=job)])
    assert r.json() == {"accepted": 1, "duplicates": 3, "rejected": 0}
    assert fetch_logs(reana_client(seam), job, JOB_INDEX, JOB_FIELD) == "a0\na1\na2\nb0\n"


def test_opensearch_seam_refuses_a_wrong_password(seam):
    wf, job = uuid.uuid4(), f"reana-run-job-{uuid.uuid4()}"
    _ingest(seam, [event(wf, "secret line", job=job)])
    with pytest.raises(AuthenticationException) as refused:
        fetch_logs(reana_client(seam, "wrong"), job, JOB_INDEX, JOB_FIELD)
    assert refused.value.status_code == 401
    assert "secret line" not in str(refused.value.info)
    r = httpx.post(f"{seam.url}/opensearch/{JOB_INDEX}/_search", json={})  # no credentials
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")


def test_opensearch_seam_answers_the_engines_index(seam):
    wf = uuid.uuid4()
    _ingest(seam, [event(wf, "job line", job="reana-run-job-x"),
                   event(wf, "engine starts", job=None, kind="workflow"),
                   event(wf, "engine ends", job=None, kind="workflow", stream="stderr")])
    logs = fetch_logs(reana_client(seam), str(wf), WORKFLOW_INDEX, WORKFLOW_FIELD)
    assert logs == "engine starts\nengine ends\n"


def test_opensearch_seam_unknown_job_has_no_hits(seam):
    # no hits: REANA's fetcher returns "" and build_workflow_logs shows its own job.logs
    assert fetch_logs(reana_client(seam), "reana-run-job-unknown", JOB_INDEX, JOB_FIELD) == ""
    assert fetch_logs(reana_client(seam), str(uuid.uuid4()), WORKFLOW_INDEX,
                      WORKFLOW_FIELD) == ""


def test_opensearch_seam_is_off_without_a_password(live_server):
    r = httpx.post(f"{live_server.url}/opensearch/{JOB_INDEX}/_search", json={},
                   auth=(USER, ""))
    assert r.status_code in (404, 405)  # nothing there: the static files' answer to POST
    assert "hits" not in r.text


def test_opensearch_seam_answer_is_capped_in_bytes(server_factory):
    server = server_factory(opensearch_user=USER, opensearch_password=PASSWORD,
                            opensearch_max_answer_bytes=64 * 1024)
    wf, job = uuid.uuid4(), f"reana-run-job-{uuid.uuid4()}"
    _ingest(server, [event(wf, f"{i:04d} " + "x" * 200, job=job) for i in range(2000)])
    query = {"query": {"match": {JOB_FIELD: job}}, "sort": [{"@timestamp": {"order": "asc"}}]}
    r = httpx.post(f"{server.url}/opensearch/{JOB_INDEX}/_search?size=5000&timeout=5",
                   json=query, auth=(USER, PASSWORD), headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and len(r.content) <= 64 * 1024
    hits = r.json()["hits"]["hits"]
    assert [h["_source"]["log"][:4] for h in hits[:-1]] == [f"{i:04d}" for i in
                                                           range(len(hits) - 1)]
    assert "reached its cap" in hits[-1]["_source"]["log"]
    assert f"/api/workflows/{wf}/logs?format=text" in hits[-1]["_source"]["log"]


def test_opensearch_seam_cost_of_a_200_job_workflow_logs_request(seam):
    """One REANA logs request: the engine's search and one search per job
    (rest/workflows_status.py get_workflow_logs, rest/utils.py build_workflow_logs).
    Figures are printed, not asserted; the baseline is this service's own whole-workflow
    read of the same lines (format=text), in the same run."""
    wf = uuid.uuid4()
    jobs = [f"reana-run-job-{uuid.uuid4()}" for _ in range(200)]
    events = [event(wf, f"engine {i}", job=None, kind="workflow") for i in range(100)]
    events += [event(wf, f"{job} line {i}", job=job) for job in jobs for i in range(100)]
    _ingest(seam, events)
    client = reana_client(seam)
    fetch_logs(client, jobs[0], JOB_INDEX, JOB_FIELD)  # connection and first reads warm
    started = time.perf_counter()
    engine = fetch_logs(client, str(wf), WORKFLOW_INDEX, WORKFLOW_FIELD)
    answers = [fetch_logs(client, job, JOB_INDEX, JOB_FIELD) for job in jobs]
    seam_seconds = time.perf_counter() - started
    assert engine.count("\n") == 100
    assert all(a.count("\n") == 100 and a.startswith(f"{j} line 0\n")
               for a, j in zip(answers, jobs, strict=True))
    started = time.perf_counter()
    text = httpx.get(f"{seam.url}/api/workflows/{wf}/logs?format=text", timeout=60).text
    base_seconds = time.perf_counter() - started
    assert text.count("\n") == 20_100
    received = len(engine) + sum(len(a) for a in answers)
    print(f"\nOpenSearch seam, one REANA logs request of a 200-job workflow (100 lines a "
          f"job, {received / 1024:.0f} KiB of log text): 201 searches in "
          f"{seam_seconds * 1000:.0f} ms "
          f"({seam_seconds / 201 * 1000:.1f} ms a search); baseline, the same 20,100 lines "
          f"as one format=text read: {base_seconds * 1000:.0f} ms")


def test_opensearch_seam_serve_reads_the_password_file_and_never_logs_it(database_url,
                                                                          tmp_path):
    """`reana-log-sse serve` as deployed: user and password from files (a mounted
    Secret), a search with a wrong password and one with the right one, and neither
    password in anything the process wrote (its log, the access log included)."""
    (tmp_path / "user").write_text(USER + "\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    serve = ServeProcess(database_url, tmp_path,
                         REANA_LOG_SSE_OPENSEARCH_USER_FILE=str(tmp_path / "user"),
                         REANA_LOG_SSE_OPENSEARCH_PASSWORD_FILE=str(tmp_path / "password")
                         ).start()
    try:
        wf, job = uuid.uuid4(), f"reana-run-job-{uuid.uuid4()}"
        _ingest(serve, [event(wf, "from a file", job=job)])
        with pytest.raises(AuthenticationException):
            fetch_logs(reana_client(serve, "wrong-" + PASSWORD), job, JOB_INDEX, JOB_FIELD)
        assert fetch_logs(reana_client(serve), job, JOB_INDEX, JOB_FIELD) == "from a file\n"
    finally:
        serve.terminate()
        serve.wait()
    output = serve.output()
    assert "/opensearch/fluentbit-job_log/_search" in output  # the access log was on
    assert PASSWORD not in output and "wrong-" not in output


def test_opensearch_seam_helm_values_in_the_docs_point_at_the_service():
    """The Helm values docs/reana-integration.md gives (and the component repeats) reach
    the Service of manifests/base on its port, under the seam's default prefix, without
    TLS: what reana_client() above is built with."""
    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "reana-integration.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S)
                if "reana_workflow_controller:" in b]
    env = yaml.safe_load(textwrap.dedent(block))[
        "components"]["reana_workflow_controller"]["environment"]
    service = yaml.safe_load((root / "manifests/base/service-reana-log-sse.yaml").read_text())
    namespace = yaml.safe_load((root / "manifests/overlays/example/kustomization.yaml")
                               .read_text())["namespace"]
    assert env == {
        "REANA_OPENSEARCH_ENABLED": True,
        "REANA_OPENSEARCH_HOST": f"{service['metadata']['name']}.{namespace}.svc.cluster.local",
        "REANA_OPENSEARCH_PORT": str(service["spec"]["ports"][0]["port"]),
        "REANA_OPENSEARCH_URL_PREFIX": Settings().opensearch_prefix,
        "REANA_OPENSEARCH_USE_SSL": False,
    }
    component = (root / "manifests/overlays/example/opensearch-seam/kustomization.yaml")
    for key, value in env.items():
        assert f"#         {key}: " in component.read_text(), key
        assert str(value).lower() in component.read_text().lower(), key


def test_opensearch_seam_jobs_go_with_their_workflows_lines(seam):
    """job_workflows (sql/0005) keeps no row for lines that are gone: a workflow's
    `deleted`, or maintenance dropping the days it wrote in."""
    gone, old = uuid.uuid4(), uuid.uuid4()
    _ingest(seam, [event(gone, "x", job="reana-run-job-gone"),
                   event(old, "y", job="reana-run-job-old")])
    r = httpx.post(f"{seam.url}/api/workflows/{gone}/status", json={"status": "deleted"},
                   headers={"Authorization": f"Bearer {seam.ingest_token}"})
    assert r.status_code == 200
    assert seam.sql("SELECT job_id FROM job_workflows WHERE job_id LIKE 'reana-run-job-%%'"
                    " ORDER BY 1") == [("reana-run-job-old",)]
    later = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=40)
    asyncio.run(partitions.maintain(seam.database_url, partitions.Window.around(
        later, retention_days=30, ahead_days=1)))
    assert seam.sql("SELECT count(*) FROM job_workflows WHERE workflow_id = %s",
                    (old,)) == [(0,)]
