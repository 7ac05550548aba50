"""REANA_LOG_SSE_AUTH=reana against a fake reana-server that answers as reana-server does
(tests/fake_reana.py: Host check, 429, session cookies, token only from the query)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from reana_log_sse.reana.auth import Denied, ReanaAuth, ReanaUnavailable, ReanaWorkflow
from reana_log_sse.reana.server import Credentials, ReanaServer
from reana_log_sse.settings import Settings
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer
from tests.helpers import Follower, event, post_batch


@pytest.fixture
def reana():
    fake = FakeReanaServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def world(reana, server_factory):
    """The service with auth=reana, Alice's workflow with lines, and Bob."""
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME,
                            reana_auth_cache_seconds=600, reana_auth_timeout_seconds=0.5)
    alice_token, alice = reana.add_user()
    bob_token, bob = reana.add_user()
    wf = reana.add_workflow(alice, "myanalysis.3")
    r = post_batch(server.url, server.ingest_token, [event(wf.id, f"line {i}") for i in range(3)])
    assert r.status_code == 200
    return server, wf, alice_token, bob_token


def _get(server, path, **params):
    return server.get(path, params={"format": "json", **params})


async def test_reana_auth_owner_reads_by_id_or_name_and_follows(world):
    server, wf, alice, _ = world
    r = _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice)
    assert r.status_code == 200, r.text
    assert [x["message"] for x in r.json()["lines"]] == ["line 0", "line 1", "line 2"]
    r = server.get(f"/api/workflows/{wf.id}/logs?format=text",
                   headers={"Authorization": f"Bearer {alice}"})
    assert [x.split("] ", 1)[1] for x in r.text.splitlines()] == ["line 0", "line 1", "line 2"]
    for name in ("myanalysis.3", "myanalysis"):  # reana-server resolves the name
        r = _get(server, f"/api/workflows/{name}/logs", access_token=alice)
        assert r.status_code == 200, r.text
        assert r.json()["workflow_id"] == wf.id
    async with Follower(f"{server.url}/api/workflows/myanalysis.3/logs/stream",
                        headers={"Authorization": f"Bearer {alice}"}) as f:
        await f.wait_logs(3)
    assert f.status_code == 200
    assert [x["message"] for x in f.logs] == ["line 0", "line 1", "line 2"]


def test_reana_auth_refuses_others_403_bad_token_401_unknown_404(world, reana):
    server, wf, alice, bob = world
    for path in (f"/api/workflows/{wf.id}/logs", f"/api/workflows/{wf.id}/logs/stream"):
        assert _get(server, path, access_token=bob).status_code == 403
    r = _get(server, f"/api/workflows/{wf.id}/logs", access_token="not-a-token")
    assert r.status_code == 401
    assert "Token not valid" in r.json()["error"]
    asked = len(reana.requests)
    r = _get(server, f"/api/workflows/{wf.id}/logs")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert len(reana.requests) == asked  # no credentials: reana-server is not even asked
    assert _get(server, f"/api/workflows/{uuid.uuid4()}/logs",
                access_token=alice).status_code == 404
    assert _get(server, "/api/workflows/myanalysis.3/logs", access_token=bob).status_code == 404


def test_reana_auth_shared_workflow_is_readable_by_whom_it_is_shared_with(world, reana):
    server, wf, _, bob = world
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=bob).status_code == 403
    reana.workflows[0].shared_with.add(reana.users[bob])
    r = _get(server, f"/api/workflows/{wf.id}/logs", access_token=bob + "")
    assert r.status_code == 403  # the refusal is cached for the TTL (600 s here) ...
    server2_auth = ReanaAuth(reana.url, ttl=0, host=REANA_HOSTNAME)
    answer = asyncio.run(server2_auth.check(bob, wf.id))  # ... a fresh question says yes
    assert isinstance(answer, ReanaWorkflow) and str(answer.id) == wf.id


def test_reana_auth_token_travels_only_as_access_token_with_reanas_host(world, reana):
    server, wf, alice, _ = world
    r = server.get(f"/api/workflows/{wf.id}/logs?format=json",
                   headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 200, r.text
    asked = reana.seen[-1]
    assert asked.path == f"/api/workflows/{wf.id}/parameters"
    assert asked.query["access_token"] == [alice]
    assert "authorization" not in asked.headers
    assert asked.host == REANA_HOSTNAME


def test_reana_auth_wrong_host_is_503_naming_the_setting(reana, server_factory):
    """reana-server answers 400 to a Host other than REANA_HOSTNAME (config.py
    TRUSTED_HOSTS): every read would fail, so the service says why."""
    server = server_factory(auth="reana", reana_server_url=reana.url)  # Host 127.0.0.1:port
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "fit.1")
    post_batch(server.url, server.ingest_token, [event(wf.id, "x")])
    r = _get(server, f"/api/workflows/{wf.id}/logs", access_token=token)
    assert r.status_code == 503
    assert "REANA_LOG_SSE_REANA_SERVER_HOST" in r.json()["error"]


def test_reana_auth_host_defaults_to_reana_hostname():
    env = {"REANA_LOG_SSE_AUTH": "reana", "REANA_LOG_SSE_REANA_SERVER_URL": "http://reana-server",
           "REANA_HOSTNAME": "reana.example.org"}
    assert Settings.from_env(env).reana_server_host == "reana.example.org"
    env["REANA_LOG_SSE_REANA_SERVER_HOST"] = "other.example.org"
    assert Settings.from_env(env).reana_server_host == "other.example.org"
    assert ReanaServer("http://reana-server:80").host == "reana-server:80"  # neither set


def test_reana_auth_rate_limit_is_503_with_retry_after_never_cached_never_403(world, reana):
    server, wf, alice, bob = world
    reana.rate_limited = True
    for token in (alice, bob):
        r = _get(server, f"/api/workflows/{wf.id}/logs", access_token=token)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "7"  # reana-server's own Retry-After
        r = _get(server, f"/api/workflows/{wf.id}/logs/stream", access_token=token)
        assert (r.status_code, r.headers["retry-after"]) == (503, "7")
    reana.rate_limited = False  # nothing was cached: the next question is asked
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice).status_code == 200
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=bob).status_code == 403


async def test_reana_auth_session_cookie_is_checked_with_reana_server(world, reana):
    """reana-ui's pages send REANA's session cookie, not a token: the widget on such a
    page reads without a token."""
    server, wf, _, _ = world
    cookie = reana.sign_in(wf.owner)
    r = server.get(f"/api/workflows/{wf.id}/logs?format=json", cookies={"session": cookie})
    assert r.status_code == 200, r.text
    assert len(r.json()["lines"]) == 3
    asked = reana.seen[-1]
    assert asked.headers["cookie"] == f"session={cookie}"
    assert "access_token" not in asked.query
    async with Follower(f"{server.url}/api/workflows/{wf.id}/logs/stream",
                        headers={"Cookie": f"session={cookie}"}) as f:
        await f.wait_logs(3)
    stranger = reana.sign_in(str(uuid.uuid4()))
    r = server.get(f"/api/workflows/{wf.id}/logs?format=json", cookies={"session": stranger})
    assert r.status_code == 403
    r = server.get(f"/api/workflows/{wf.id}/logs?format=json", cookies={"session": "forged"})
    assert r.status_code == 401  # reana-server: not signed in


async def test_reana_auth_keeps_no_cookie_from_reana_server(reana):
    """reana-server sets cookies on its answers; one reader's must never reach another's
    request."""
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "fit.1")
    server = ReanaServer(reana.url, host=REANA_HOSTNAME)
    await server.workflow(Credentials(token=token), wf.id)
    await server.workflow(Credentials(token="other"), wf.id)
    await server.close()
    assert [s.headers.get("cookie") for s in reana.seen] == [None, None]


def test_reana_auth_reana_server_down_erring_or_slow_is_503_never_open(world, reana):
    server, wf, alice, _ = world
    reana.mode = "error"
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice).status_code == 503
    reana.mode, reana.delay = "slow", 2.0  # the service waits 0.5 s
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice).status_code == 503
    reana.mode = "ok"  # failures were not cached: the next question is asked again
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice).status_code == 200
    reana.stop()
    r = _get(server, f"/api/workflows/{wf.id}/logs", access_token="another-token")
    assert r.status_code == 503
    assert r.headers["retry-after"]
    r = _get(server, f"/api/workflows/{wf.id}/logs/stream", access_token="another-token")
    assert r.status_code == 503


def test_reana_auth_answers_are_cached_for_the_ttl(world, reana):
    server, wf, alice, bob = world
    for _ in range(3):
        assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice).status_code == 200
        assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=bob).status_code == 403
    assert len(reana.requests) == 2  # one question per (token, workflow)
    reana.stop()  # within the TTL the cached answers still hold, both ways
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice).status_code == 200
    assert _get(server, f"/api/workflows/{wf.id}/logs", access_token=bob).status_code == 403


async def test_reana_auth_cache_expires_after_the_ttl(reana):
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "fit.1")
    now = [1000.0]
    auth = ReanaAuth(reana.url, ttl=30, timeout=30, host=REANA_HOSTNAME, clock=lambda: now[0])
    answer = await auth.check(token, wf.id)
    assert answer == ReanaWorkflow(uuid.UUID(wf.id), "fit.1")
    assert isinstance(await auth.check("bad", wf.id), Denied)
    now[0] += 29
    await auth.check(token, wf.id)
    await auth.check("bad", wf.id)
    assert auth.asked == 2
    now[0] += 2  # past the TTL: asked again, and with reana-server gone, no answer
    await auth.check(token, wf.id)
    assert auth.asked == 3
    reana.stop()
    with pytest.raises(ReanaUnavailable):
        await auth.check("bad", wf.id)


async def test_reana_auth_concurrent_questions_are_asked_once(reana):
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "fit.1")
    reana.mode, reana.delay = "slow", 0.2
    auth = ReanaAuth(reana.url, ttl=30, timeout=30, host=REANA_HOSTNAME)
    answers = await asyncio.gather(*(auth.check(token, wf.id) for _ in range(20)))
    assert {a.id for a in answers} == {uuid.UUID(wf.id)}  # type: ignore[union-attr]
    assert auth.asked == 1


async def test_reana_auth_asks_the_cheapest_endpoint_measured(reana):
    """The permission check costs reana-server one workflow lookup (/parameters), not a
    build of every job's logs (/status, what the check asked before)."""
    token, user = reana.add_user()
    wf = reana.add_workflow(user, "big.1")
    for i in range(200):
        wf.add_job(f"step{i}", logs="a finished job's log line\n" * 50)
    server = ReanaServer(reana.url, host=REANA_HOSTNAME)
    creds = Credentials(token=token)
    assert isinstance(await server.workflow(creds, wf.id), ReanaWorkflow)
    cheap_jobs, cheap_bytes = reana.jobs_built, reana.bytes_sent["parameters"]
    async with httpx.AsyncClient() as client:  # what the check used to ask
        r = await client.get(f"{reana.url}/api/workflows/{wf.id}/status",
                             params={"access_token": token}, headers={"Host": REANA_HOSTNAME})
        assert r.status_code == 200
    await server.close()
    print(f"\nreana-server per check, 200 jobs: /parameters builds {cheap_jobs} job logs and "
          f"answers {cheap_bytes} B; /status builds {reana.jobs_built - cheap_jobs} and answers "
          f"{reana.bytes_sent['status']} B")
    assert cheap_jobs == 0
    assert reana.jobs_built == 200
    assert cheap_bytes * 100 < reana.bytes_sent["status"]
