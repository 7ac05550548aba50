"""REANA_LOG_SSE_AUTH=reana against a fake reana-server that answers as reana-server does."""

from __future__ import annotations

import uuid

import pytest

from reana_log_sse.reana_auth import Denied, ReanaAuth, ReanaUnavailable, ReanaWorkflow
from tests.fake_reana import FakeReanaServer
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
                            reana_auth_cache_seconds=600, reana_auth_timeout_seconds=0.5)
    alice_token, alice = reana.add_user()
    bob_token, bob = reana.add_user()
    wf = reana.add_workflow(alice, "myanalysis.3")
    r = post_batch(server.url, server.ingest_token, [event(wf.id, f"line {i}") for i in range(3)])
    assert r.status_code == 200
    return server, wf, alice_token, bob_token


def _get(server, path, **params):
    return server.get(path, params=params)


async def test_reana_auth_owner_reads_by_id_or_name_and_follows(world):
    server, wf, alice, _ = world
    r = _get(server, f"/api/workflows/{wf.id}/logs", access_token=alice)
    assert r.status_code == 200, r.text
    assert [x["message"] for x in r.json()["lines"]] == ["line 0", "line 1", "line 2"]
    r = server.get(f"/api/workflows/{wf.id}/logs?format=text",
                   headers={"Authorization": f"Bearer {alice}"})
    assert r.text == "line 0\nline 1\nline 2\n"
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
    assert len(reana.requests) == asked  # no token: reana-server is not even asked
    assert _get(server, f"/api/workflows/{uuid.uuid4()}/logs",
                access_token=alice).status_code == 404
    assert _get(server, "/api/workflows/myanalysis.3/logs", access_token=bob).status_code == 404


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
    auth = ReanaAuth(reana.url, ttl=30, timeout=30, clock=lambda: now[0])
    answer = await auth.check(token, wf.id)
    assert answer == ReanaWorkflow(uuid.UUID(wf.id), "fit.1", user, "running")
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
    import asyncio

    token, user = reana.add_user()
    wf = reana.add_workflow(user, "fit.1")
    reana.mode, reana.delay = "slow", 0.2  # all 20 ask while the first waits
    auth = ReanaAuth(reana.url, ttl=30, timeout=30)  # a busy machine answers late
    answers = await asyncio.gather(*(auth.check(token, wf.id) for _ in range(20)))
    assert {a.id for a in answers} == {uuid.UUID(wf.id)}  # type: ignore[union-attr]
    assert auth.asked == 1
