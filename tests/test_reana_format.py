"""GET .../logs?format=reana: reana-server's workflow logs answer, field by field."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.fake_reana import FakeReanaServer
from tests.helpers import event, post_batch, post_status
from tests.reana_client import reana_client_executable, run_reana_client

RECORDED = json.loads((Path(__file__).parent / "data" / "reana_server_workflow_logs.json")
                      .read_text())["response"]
JOB_A, JOB_B, JOB_C = (f"reana-run-job-{uuid.uuid4()}" for _ in range(3))
RJ_A, RJ_B = str(uuid.uuid4()), str(uuid.uuid4())
IMG = "docker.io/reanahub/reana-env-root6:6.18.04"


@pytest.fixture
def reana():
    fake = FakeReanaServer().start()
    yield fake
    fake.stop()


def _run_workflow(server, wf_id: str) -> None:
    """Engine lines, gendata (finished), fitdata (running), and a job nobody described."""
    url, tok = server.url, server.ingest_token

    def ok(r):
        assert r.status_code == 200, r.text

    ok(post_status(url, tok, wf_id, "running"))
    ok(post_batch(url, tok, [event(wf_id, "engine: publishing gendata", job=None,
                                   kind="workflow")]))
    ok(post_status(url, tok, wf_id, "running", job_id=JOB_A, step="gendata", reana_job_id=RJ_A,
                   job_name="gendata", compute_backend="Kubernetes", docker_img=IMG,
                   cmd="root -b -q gendata.C", started_at="2026-11-25T12:00:05Z"))
    ok(post_batch(url, tok, [event(wf_id, "gen 1", job=JOB_A),
                             event(wf_id, "gen warning", job=JOB_A, stream="stderr"),
                             event(wf_id, "gen 2", job=JOB_A)]))
    ok(post_status(url, tok, wf_id, "finished", job_id=JOB_A, step="gendata",
                   finished_at="2026-11-25T13:00:35+01:00"))
    ok(post_batch(url, tok, [event(wf_id, "engine: publishing fitdata", job=None,
                                   kind="workflow")]))
    ok(post_status(url, tok, wf_id, "running", job_id=JOB_B, step="fitdata", reana_job_id=RJ_B,
                   job_name="fitdata", compute_backend="Kubernetes", docker_img=IMG,
                   cmd="root -b -q fitdata.C", started_at="2026-11-25T12:00:40Z"))
    ok(post_batch(url, tok, [event(wf_id, "fit 1", job=JOB_B), event(wf_id, "other 1", job=JOB_C),
                             event(wf_id, "fit 2", job=JOB_B)]))


def _expected_job_logs(wf_id: str) -> dict:
    return {
        RJ_A: {"workflow_uuid": wf_id, "job_name": "gendata", "compute_backend": "Kubernetes",
               "backend_job_id": JOB_A, "docker_img": IMG, "cmd": "root -b -q gendata.C",
               "status": "finished", "logs": "gen 1\ngen warning\ngen 2\n",
               "started_at": "2026-11-25T12:00:05", "finished_at": "2026-11-25T12:00:35"},
        RJ_B: {"workflow_uuid": wf_id, "job_name": "fitdata", "compute_backend": "Kubernetes",
               "backend_job_id": JOB_B, "docker_img": IMG, "cmd": "root -b -q fitdata.C",
               "status": "running", "logs": "fit 1\nfit 2\n",
               "started_at": "2026-11-25T12:00:40", "finished_at": None},
        # lines only, no status POST: keyed by its Kubernetes Job name; the rest unknown
        JOB_C: {"workflow_uuid": wf_id, "job_name": None, "compute_backend": None,
                "backend_job_id": JOB_C, "docker_img": None, "cmd": None, "status": None,
                "logs": "other 1\n", "started_at": None, "finished_at": None},
    }


@pytest.fixture
def reana_world(reana, server_factory):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=reana.hostname)
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "roofit.1")
    _run_workflow(server, wf.id)
    return server, wf, token, user


def _types(value):
    return type(value).__name__


def test_reana_format_matches_reana_server_shape_field_by_field(reana_world):
    server, wf, token, user = reana_world
    r = server.get(f"/api/workflows/{wf.id}/logs", params={"format": "reana",
                                                          "access_token": token})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    answer = r.json()
    # outer: the same fields, the same types, and in jsonify's (sorted) order
    assert list(answer) == list(RECORDED) == sorted(RECORDED)
    assert {k: _types(v) for k, v in answer.items()} == {k: _types(v) for k, v in RECORDED.items()}
    assert answer == {"live_logs_enabled": True, "logs": answer["logs"], "user": user,
                      "workflow_id": wf.id, "workflow_name": "roofit.1"}
    # inner: a JSON string with the same keys in the same order
    logs, recorded = json.loads(answer["logs"]), json.loads(RECORDED["logs"])
    assert list(logs) == list(recorded)
    recorded_job = next(iter(recorded["job_logs"].values()))
    for job in logs["job_logs"].values():
        assert list(job) == list(recorded_job)
        for field, value in job.items():  # a known value has REANA's type; unknown is null
            assert value is None or _types(value) == _types(recorded_job[field]), field
    assert logs == {
        "workflow_logs": "engine: publishing gendata\nengine: publishing fitdata\n",
        "job_logs": _expected_job_logs(wf.id),
        "service_logs": {},
        "engine_specific": None,
    }
    assert list(logs["job_logs"]) == [RJ_A, RJ_B, JOB_C]  # ordered by job start


def test_reana_format_works_with_reana_clients_own_parsing(reana_world):
    """The steps reana-client takes (cli/utils.py retrieve_workflow_logs,
    output_user_friendly_logs and follow_workflow_logs), on our answer."""
    server, wf, token, _ = reana_world
    response = server.get(f"/api/workflows/{wf.id}/logs",
                          params={"format": "reana", "access_token": token}).json()
    workflow_logs = json.loads(response["logs"])
    assert workflow_logs["workflow_logs"].startswith("engine: publishing gendata")
    # --filter compute_backend=kubernetes / status=running: v[available_filters[key]] != value
    available_filters = {"step": "job_name", "compute_backend": "compute_backend",
                         "docker_img": "docker_img", "status": "status"}
    for key, value, kept in (("compute_backend", "Kubernetes", [RJ_A, RJ_B]),
                             ("status", "running", [RJ_B])):
        jobs = dict(workflow_logs["job_logs"])
        for job_id in [k for k, v in jobs.items() if v[available_filters[key]] != value]:
            del jobs[job_id]
        assert list(jobs) == kept
    # the friendly output titles every other truthy field through this mapping
    key_to_description_mapping = {"workflow_uuid", "compute_backend", "backend_job_id",
                                  "docker_img", "cmd", "status", "started_at", "finished_at"}
    for job_id, logs_info in workflow_logs["job_logs"].items():
        assert (logs_info["job_name"] or job_id)
        assert set(logs_info) - {"logs", "job_name"} <= key_to_description_mapping
    assert response.get("live_logs_enabled", False) is True  # --follow refuses otherwise
    # --follow --filter step=fitdata asks with steps=[step] and reads the first job
    step = server.get(f"/api/workflows/{wf.id}/logs",
                      params={"format": "reana", "access_token": token, "job": "fitdata"}).json()
    parsed = json.loads(step["logs"])
    job = next(iter(parsed["job_logs"].values()))
    assert (job["logs"], job["status"]) == ("fit 1\nfit 2\n", "running")


def test_reana_format_job_filter_answers_as_reana_does_for_steps(reana_world):
    server, wf, token, _ = reana_world
    for job in ("fitdata", JOB_B, RJ_B):  # step name, Kubernetes Job name, REANA job id
        r = server.get(f"/api/workflows/{wf.id}/logs",
                       params={"format": "reana", "access_token": token, "job": job})
        logs = json.loads(r.json()["logs"])
        assert logs == {"workflow_logs": None,
                        "job_logs": {RJ_B: _expected_job_logs(wf.id)[RJ_B]},
                        "engine_specific": None}


def test_reana_format_without_reana_auth_leaves_name_and_user_null(live_server):
    wf = str(uuid.uuid4())
    _run_workflow(live_server, wf)
    answer = live_server.get(f"/api/workflows/{wf}/logs?format=reana").json()
    assert (answer["workflow_name"], answer["user"]) == (None, None)
    assert json.loads(answer["logs"])["job_logs"] == _expected_job_logs(wf)
    assert live_server.get(f"/api/workflows/{uuid.uuid4()}/logs?format=reana").status_code == 404


@pytest.fixture(scope="module")
def reana_client() -> str:
    return reana_client_executable()


@pytest.mark.timeout(900)  # the first use installs reana-client in its venv (about 70 s)
def test_reana_format_real_reana_client_prints_it(reana, reana_world, reana_client):
    """reana-client, unchanged, against a reana-server changed to pass our answer through."""
    server, wf, token, _ = reana_world
    reana.logs_backend = server.url
    reana.trusted_hosts.add("127.0.0.1")  # reana-client sends the URL's host
    run = run_reana_client(reana_client, "logs", "-w", wf.id, server_url=reana.url,
                           token=token)
    assert run.returncode == 0, run.stdout + run.stderr
    for text in ("engine: publishing fitdata", "Step: gendata", "gen warning", "Step: fitdata",
                 "fit 2", f"Step: {JOB_C}", "other 1", "Docker image: " + IMG):
        assert text in run.stdout
    run = run_reana_client(reana_client, "logs", "-w", "roofit.1", "--json", "--filter",
                           "status=running", server_url=reana.url, token=token)
    assert run.returncode == 0, run.stdout + run.stderr
    assert list(json.loads(run.stdout)["job_logs"]) == [RJ_B]


def test_reana_format_leaves_service_lines_out_of_job_logs(live_server):
    # Dask pods' lines (kind "service", vector/vector.yaml) are no job's: REANA answers
    # them as service_logs from its own database records
    # (reana_workflow_controller/rest/workflows_status.py get_workflow_logs), which this
    # service does not reproduce, so they stay out of job_logs and workflow_logs.
    wf = str(uuid.uuid4())
    _run_workflow(live_server, wf)
    scheduler = event(wf, "distributed.scheduler - INFO - Receive client connection",
                      job=None, kind="service", stream="stderr")
    assert post_batch(live_server.url, live_server.ingest_token,
                      [scheduler]).json()["accepted"] == 1
    logs = json.loads(live_server.get(f"/api/workflows/{wf}/logs?format=reana").json()["logs"])
    assert logs["job_logs"] == _expected_job_logs(wf)
    assert "distributed.scheduler" not in logs["workflow_logs"]
    assert logs["service_logs"] == {}
    # the other formats carry them, marked
    lines = live_server.get(f"/api/workflows/{wf}/logs?format=json&kind=service").json()["lines"]
    assert [(x["kind"], x["message"]) for x in lines] == [("service", scheduler["message"])]


def test_reana_format_step_only_and_jobless_lines_land_where_they_belong(live_server):
    """Lines that name only a step (e.g. from `reana-log-sse ship`) join the job a status
    paired with that step, in order; lines naming neither job nor step form their own
    entry; each job's lines are read back from the database on their own."""
    wf = str(uuid.uuid4())
    url, tok = live_server.url, live_server.ingest_token
    assert post_status(url, tok, wf, "running", job_id=JOB_A, step="fit",
                       reana_job_id=RJ_A).status_code == 200
    batch = [event(wf, "a1", job=JOB_A), event(wf, "s1", job=None, step="fit"),
             event(wf, "n1", job=None), event(wf, "a2", job=JOB_A),
             event(wf, "o1", job=None, step="other"), event(wf, "s2", job=None, step="fit")]
    assert post_batch(url, tok, batch).status_code == 200
    answer = live_server.get(f"/api/workflows/{wf}/logs?format=reana").json()
    logs = {k: v["logs"] for k, v in json.loads(answer["logs"])["job_logs"].items()}
    assert logs == {RJ_A: "a1\ns1\na2\ns2\n", "": "n1\n", "other": "o1\n"}


def test_reana_format_job_status_is_one_reana_knows(live_server):
    # reana-db reana_db/models.py JobStatus has no `pending` (nor `deleted`), and reana-ui
    # fails on a status it cannot colour (statusMapping[status].color)
    wf = str(uuid.uuid4())
    url, tok = live_server.url, live_server.ingest_token
    assert post_status(url, tok, wf, "pending", job_id=JOB_A).status_code == 200
    assert post_status(url, tok, wf, "deleted", job_id=JOB_B).status_code == 200
    answer = live_server.get(f"/api/workflows/{wf}/logs?format=reana").json()
    statuses = {v["backend_job_id"]: v["status"]
                for v in json.loads(answer["logs"])["job_logs"].values()}
    assert statuses == {JOB_A: "queued", JOB_B: "stopped"}
