"""GET /api/workflows/{id_or_name}/logs shaped like reana-client's and reana-ui's requests:
reana-server's own answer (asked with the caller's credentials) with our complete lines."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
import uuid

import httpx
import pytest

from reana_log_sse.ingest.models import LogEvent
from reana_log_sse.reana import format as reana_format
from reana_log_sse.store import db
from reana_log_sse.store.snapshot import Filters
from reana_log_sse.store.store import Store
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer
from tests.helpers import event, post_batch
from tests.reana_client import (
    NEWEST,
    configure_reana_client,
    jwt_shaped,
    reana_client_executable,
    run_configured,
    run_reana_client,
)

BIG = 20_000  # lines of one job
REPEATS = 1_000  # one progress line, repeated


@pytest.fixture
def reana():
    fake = FakeReanaServer().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def reana_client() -> str:
    return reana_client_executable()


def _ok(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text


def _post_many(server, events, batch=5_000):
    for i in range(0, len(events), batch):
        _ok(post_batch(server.url, server.ingest_token, events[i:i + batch]))


@pytest.fixture
def world(reana, server_factory):
    """A REANA workflow with four jobs in REANA's database, of which this service holds
    the lines of three, and the engine's lines."""
    return _world(reana, server_factory)


def _world(reana, server_factory, *, token_in="query", token=None):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME, reana_token_in=token_in)
    reana.token_in = token_in
    if token is None:
        token, user = reana.add_user()
    else:
        user = str(uuid.uuid4())
        reana.users[token] = user
    wf = reana.add_workflow(user, "roofit.7")
    wf.logs = "REANA's engine log, written at the end\n"
    gen = wf.add_job("gendata", status="finished", logs="REANA's copy of gendata\n",
                     finished_at="2026-11-25T12:01:00")
    fit = wf.add_job("fitdata", status="running", logs="")
    plot = wf.add_job("plot", status="running", logs="")
    old = wf.add_job("old", status="finished", logs="REANA's log of a job we never saw\n")
    events = [event(wf.id, "engine: publishing gendata", job=None, kind="workflow")]
    events += [event(wf.id, f"gen {i}", job=gen.backend_job_id) for i in range(BIG)]
    events += [event(wf.id, "progress 50%", job=fit.backend_job_id) for _ in range(REPEATS)]
    events += [event(wf.id, "fit done \"quoted\" \\ é", job=fit.backend_job_id,
                     stream="stderr")]
    events += [event(wf.id, "plot 1", job=plot.backend_job_id)]
    events += [event(wf.id, "engine: publishing plot", job=None, kind="workflow")]
    _post_many(server, events)
    return server, wf, token, {"gen": gen, "fit": fit, "plot": plot, "old": old}


def _expected_logs(jobs) -> dict[str, str]:
    return {
        jobs["gen"].id: "".join(f"gen {i}\n" for i in range(BIG)),
        jobs["fit"].id: "progress 50%\n" * REPEATS + "fit done \"quoted\" \\ é\n",
        jobs["plot"].id: "plot 1\n",
        jobs["old"].id: "REANA's log of a job we never saw\n",
    }


def _logs(server, wf_id, **kwargs):
    return server.get(f"/api/workflows/{wf_id}/logs", **kwargs)


def test_reana_logs_answer_is_reana_servers_with_our_complete_lines(world, reana):
    server, wf, token, jobs = world
    r = _logs(server, "roofit.7", params={"access_token": token})
    _ok(r)
    answer = r.json()
    assert list(answer) == sorted(answer)  # jsonify's order
    assert answer["live_logs_enabled"] is True
    assert (answer["workflow_id"], answer["workflow_name"]) == (wf.id, "roofit.7")
    assert answer["user"] == reana.users[token]
    logs = json.loads(answer["logs"])
    assert list(logs) == ["workflow_logs", "job_logs", "service_logs", "engine_specific"]
    assert logs["workflow_logs"] == "engine: publishing gendata\nengine: publishing plot\n"
    assert list(logs["job_logs"]) == [j.id for j in jobs.values()]  # REANA's keys, order
    assert {k: v["logs"] for k, v in logs["job_logs"].items()} == _expected_logs(jobs)
    gen = logs["job_logs"][jobs["gen"].id]
    assert (gen["status"], gen["finished_at"], gen["backend_job_id"]) == (
        "finished", "2026-11-25T12:01:00", jobs["gen"].backend_job_id)  # REANA's fields
    assert reana.seen[-1].host == REANA_HOSTNAME
    assert reana.seen[-1].query["access_token"] == [token]


def test_reana_logs_pages_and_steps_are_reanas(world, reana):
    server, wf, token, jobs = world
    r = _logs(server, wf.id, params={"access_token": token, "page": 2, "size": 1})
    logs = json.loads(r.json()["logs"])
    assert {k: v["logs"] for k, v in logs["job_logs"].items()} == {
        jobs["fit"].id: _expected_logs(jobs)[jobs["fit"].id]}
    assert reana.seen[-1].query["page"] == ["2"] and reana.seen[-1].query["size"] == ["1"]
    # reana-client's steps filter is a JSON body on the GET
    r = httpx.request("GET", f"{server.url}/api/workflows/{wf.id}/logs",
                      params={"access_token": token}, content=json.dumps(["plot"]),
                      headers={"Content-Type": "application/json"}, timeout=30)
    logs = json.loads(r.json()["logs"])
    assert logs == {"workflow_logs": None,
                    "job_logs": {jobs["plot"].id: logs["job_logs"][jobs["plot"].id]},
                    "engine_specific": None}
    assert logs["job_logs"][jobs["plot"].id]["logs"] == "plot 1\n"


def test_reana_logs_reana_ui_session_cookie_and_reana_refusals_pass_through(world, reana):
    server, wf, token, jobs = world
    cookie = reana.sign_in(wf.owner)  # reana-ui: no query at all, the session cookie
    r = _logs(server, wf.id, cookies={"session": cookie})
    _ok(r)
    assert json.loads(r.json()["logs"])["job_logs"][jobs["plot"].id]["logs"] == "plot 1\n"
    assert "access_token" not in reana.seen[-1].query
    for params, status, message in (({}, 401, "User not signed in"),
                                    ({"access_token": "bad"}, 403, "Token not valid.")):
        r = _logs(server, wf.id, params=params)
        assert (r.status_code, r.json()) == (status, {"message": message})
    other, _ = reana.add_user()
    r = _logs(server, wf.id, params={"access_token": other})
    assert r.status_code == 404 and "REANA_WORKON" in r.json()["message"]
    reana.rate_limited = True
    r = _logs(server, wf.id, params={"access_token": token})
    assert (r.status_code, r.headers["retry-after"]) == (503, "7")


def test_reana_logs_workflow_we_hold_nothing_of_is_reanas_answer_said_live(reana,
                                                                          server_factory):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME)
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "quiet.1")
    job = wf.add_job("only", logs="REANA's\n")
    answer = _logs(server, wf.id, params={"access_token": token}).json()
    assert answer["live_logs_enabled"] is True
    assert json.loads(answer["logs"])["job_logs"][job.id]["logs"] == "REANA's\n"


@pytest.mark.skipif("service" not in str(LogEvent.model_fields["kind"].annotation),
                    reason="LogEvent.kind has no 'service' yet (added by the Dask work)")
def test_reana_logs_service_lines_fill_service_logs_scheduler_first(world, reana):
    server, wf, token, _ = world
    # as vector/vector.yaml sends a Dask pod's lines: REANA's service name as job id
    # (reana-commons get_dask_component_name(id, "database_model_service")), the pod's
    # dask.org/component as step
    dask = "dask-service-" + str(wf.id).split("-")[0]
    _post_many(server, [event(wf.id, "worker up", job=dask, step="worker", kind="service"),
                        event(wf.id, "scheduler up", job=dask, step="scheduler",
                              kind="service"),
                        event(wf.id, "worker 2 up", job=dask, step="worker", kind="service")])
    logs = json.loads(_logs(server, wf.id, params={"access_token": token}).json()["logs"])
    assert logs["service_logs"] == {dask: [
        {"component": "scheduler", "content": "scheduler up\n"},
        {"component": "worker", "content": "worker up\nworker 2 up\n"}]}


def test_reana_logs_service_lines_without_a_name_go_under_reanas_service_name(world, reana):
    # lines stored before vector/vector.yaml named them (or tapped, not yet adopted)
    server, wf, token, _ = world
    _post_many(server, [event(wf.id, "early", job=None, kind="service")])
    logs = json.loads(_logs(server, wf.id, params={"access_token": token}).json()["logs"])
    name = "dask-service-" + str(wf.id).split("-")[0]
    assert logs["service_logs"] == {name: [{"component": "service", "content": "early\n"}]}


# -- the real reana-client 0.9.6, unchanged, through the route -------------------------------

def _friendly_job_logs(stdout: str) -> dict[str, str]:
    """What `reana-client logs` printed under each step (cli/utils.py
    output_user_friendly_logs: "==> Step: <name>", fields, "==> Logs:", the log)."""
    out: dict[str, str] = {}
    for block in stdout.split("==> Step: ")[1:]:
        name, _, rest = block.partition("\n")
        _, found, text = rest.partition("==> Logs:\n")
        assert found, block[:500]
        out[name] = text[:-1] if text.endswith("\n\n") else text  # secho's own newline
    return out


@pytest.mark.timeout(900)  # the first use installs reana-client in its venv (about 70 s)
def test_reana_logs_real_reana_client_prints_every_line_ingested(world, reana, reana_client):
    server, wf, token, jobs = world
    expected = _expected_logs(jobs)
    assert reana.token_in == "query"  # reana-server 0.9: access_token only, never a header
    run = run_reana_client(reana_client, "logs", "-w", "roofit.7", "--json",
                           server_url=server.url, token=token)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert reana.seen[-1].query["access_token"] == [token]
    assert "authorization" not in reana.seen[-1].headers
    printed = json.loads(run.stdout)
    assert {k: v["logs"] for k, v in printed["job_logs"].items()} == expected
    assert printed["workflow_logs"] == "engine: publishing gendata\nengine: publishing plot\n"
    run = run_reana_client(reana_client, "logs", "-w", wf.id, server_url=server.url,
                           token=token)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.count("progress 50%\n") == REPEATS
    by_step = _friendly_job_logs(run.stdout)
    assert by_step == {j.job_name: expected[j.id] for j in jobs.values()}
    assert "==> Workflow engine logs\nengine: publishing gendata\n" in run.stdout
    run = run_reana_client(reana_client, "logs", "-w", wf.id, "--json", "--filter",
                           "step=fitdata", server_url=server.url, token=token)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(json.loads(run.stdout)["job_logs"]) == [jobs["fit"].id]
    run = run_reana_client(reana_client, "logs", "-w", wf.id, server_url=server.url,
                           token="not-a-token")
    assert run.returncode == 1 and "Token not valid." in run.stdout + run.stderr


@pytest.mark.timeout(900)  # the first use installs reana-client 0.95.0a6 (about 70 s)
def test_reana_logs_real_reana_client_095_bearer_to_a_bearer_only_server_prints_every_line(
        reana, server_factory, tmp_path):
    """reana-client 0.95.0a6 sends `Authorization: Bearer <JWT>` (api/client.py
    `_auth_request_options`), configured with server-add/server-use; the reana-server
    behind reads only the header (auth/deps.py), as REANA_LOG_SSE_REANA_TOKEN_IN=header
    forwards it."""
    server, wf, token, jobs = _world(reana, server_factory, token_in="header",
                                     token=jwt_shaped("alice"))
    expected = _expected_logs(jobs)
    exe = reana_client_executable(NEWEST)
    env = configure_reana_client(exe, tmp_path / "home", server_url=server.url, token=token)
    assert not any(k.startswith("REANA_") for k in env)  # 0.95 refuses REANA_SERVER_URL
    run = run_configured(exe, env, "logs", "-w", "roofit.7", "--json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    printed = json.loads(run.stdout)
    assert {k: v["logs"] for k, v in printed["job_logs"].items()} == expected
    assert printed["workflow_logs"] == "engine: publishing gendata\nengine: publishing plot\n"
    asked = reana.seen[-1]
    assert asked.headers["authorization"] == f"Bearer {token}"
    assert "access_token" not in asked.query  # never in a URL to a 0.95 server
    run = run_configured(exe, env, "logs", "-w", wf.id)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.count("progress 50%\n") == REPEATS
    assert _friendly_job_logs(run.stdout) == {j.job_name: expected[j.id]
                                              for j in jobs.values()}
    run = run_configured(exe, env, "logs", "-w", wf.id, "--json", "--filter",
                         "step=fitdata")
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(json.loads(run.stdout)["job_logs"]) == [jobs["fit"].id]


def test_reana_logs_reana_at_cookie_and_bearer_reach_a_095_server_as_it_reads_them(
        reana, server_factory):
    """REANA 0.95's web session is the httpOnly `reana_at` cookie on /api (reana-server
    auth/sessions.py); sent on as that cookie. A 0.95 server never reads access_token=, so
    with token_in=header a query token is sent on as a Bearer header."""
    server, wf, token, jobs = _world(reana, server_factory, token_in="header",
                                     token=jwt_shaped("alice"))
    at = jwt_shaped("alice-web")
    reana.sessions[at] = wf.owner
    r = _logs(server, wf.id, cookies={"reana_at": at})
    _ok(r)
    assert json.loads(r.json()["logs"])["job_logs"][jobs["plot"].id]["logs"] == "plot 1\n"
    assert reana.seen[-1].headers["cookie"] == f"reana_at={at}"
    assert "authorization" not in reana.seen[-1].headers
    for creds in ({"params": {"access_token": token}},
                  {"headers": {"Authorization": f"Bearer {token}"}}):
        r = _logs(server, wf.id, **creds)
        _ok(r)
        assert reana.seen[-1].headers["authorization"] == f"Bearer {token}"
        assert reana.seen[-1].query.get("access_token") is None
    r = server.get(f"/api/workflows/{wf.id}/logs?format=json",
                   cookies={"reana_at": at})  # our own read route: the same check
    _ok(r)
    assert reana.seen[-1].path.endswith("/parameters")
    assert reana.seen[-1].headers["cookie"] == f"reana_at={at}"
    r = _logs(server, wf.id)
    assert r.status_code == 401 and "detail" in r.json()  # FastAPI's refusal, as it is


# -- memory per request --------------------------------------------------------------------

def _peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _drain(url, params):
    with httpx.stream("GET", url, params=params, timeout=300) as r:
        assert r.status_code == 200
        for _ in r.iter_bytes():
            pass


def test_reana_logs_memory_is_bounded_by_the_page_not_the_workflow(reana, server_factory):
    """200,000 lines in one job. Both REANA answers (the REANA-shaped route and
    format=reana) are streamed, a chunk of lines at a time; the baseline is the same
    document built in memory (reana_format.build_logs, how format=reana answered before),
    which the streamed one must equal. tracemalloc counts what the server (a thread of
    this process) allocates while answering."""
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME)
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "huge.1")
    job = wf.add_job("big")
    _post_many(server, [event(wf.id, f"line {i:06d} of a long job", job=job.backend_job_id)
                        for i in range(200_000)], batch=20_000)
    url = f"{server.url}/api/workflows/{wf.id}/logs"
    route = _peak_mib(lambda: _drain(url, {"access_token": token}))
    streamed = _peak_mib(lambda: _drain(url, {"access_token": token, "format": "reana"}))
    wf_id = uuid.UUID(wf.id)

    async def built_in_memory() -> dict:
        pool = db.make_pool(server.database_url, max_size=2, timeout=30)
        await pool.open(wait=True)
        try:
            store = Store(pool)
            head = await store.snapshot(wf_id, limit=0)
            lines = [line async for line in reana_format._lines(
                store, wf_id, head.last_seq, Filters())]
            statuses = await reana_format.job_statuses(store, wf_id)
            return reana_format.build_logs(wf_id, statuses, lines, Filters())
        finally:
            await pool.close()

    box: list[dict] = []
    baseline = _peak_mib(lambda: box.append(asyncio.run(built_in_memory())))
    answer = httpx.get(url, params={"access_token": token, "format": "reana"}, timeout=300)
    assert json.loads(answer.json()["logs"]) == box[0]
    assert len(box[0]["job_logs"][job.backend_job_id]["logs"]) > 5_000_000
    print(f"\npeak traced memory, 200,000 lines: REANA-shaped route {route:.1f} MiB, "
          f"format=reana streamed {streamed:.1f} MiB; built in memory {baseline:.1f} MiB")
    assert route < 40 and streamed < 40
    assert baseline > 3 * max(route, streamed)

