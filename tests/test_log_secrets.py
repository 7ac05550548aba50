"""No secret in any log line (issue #19, finding 1): the real `reana-log-sse serve`, under
every auth mode, is sent a reader token in every spelling, at the default and at DEBUG log
level, with its pod watch on a fake apiserver that takes a bearer token; then its WHOLE
output (stdout and stderr, every logger: ours, uvicorn's access and error logs,
httpx/httpcore's, kubernetes-asyncio's and aiohttp's) is searched for every token."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests import fake_apiserver
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer
from tests.helpers import event, post_batch, post_status
from tests.serve_process import ServeProcess

# a token per spelling, so that a leak names its road
SPELLINGS = ("query", "query_upper", "query_semicolon", "query_encoded", "bearer",
             "session_cookie", "reana_at_cookie")


def _tokens() -> dict[str, str]:
    # JWT-shaped, as REANA 0.95's are, with the characters a token may hold
    return {s: f"eyJ{s}.eyJ{uuid.uuid4().hex}.sig-{uuid.uuid4().hex[:10]}_~x"
            for s in SPELLINGS}


def _request(spelling: str, token: str) -> tuple[str, dict[str, str]]:
    """The query to append and the headers to send, for one spelling of a token."""
    return {
        "query": (f"access_token={token}", {}),
        "query_upper": (f"Access_Token={token}", {}),  # does not authenticate
        "query_semicolon": (f"page=1;access_token={token}", {}),  # nor does this
        "query_encoded": (f"access%5Ftoken={token}", {}),  # Starlette decodes the name
        "bearer": ("", {"Authorization": f"Bearer {token}"}),
        "session_cookie": ("", {"Cookie": f"session={token}"}),
        "reana_at_cookie": ("", {"Cookie": f"reana_at={token}"}),
    }[spelling]


def _attack(url: str, wf: str, tokens: dict[str, str]) -> list[httpx.Response]:
    """Every read route, each spelling, on a known and an unknown workflow."""
    answers = []
    with httpx.Client(timeout=30) as client:
        for spelling, token in tokens.items():
            query, headers = _request(spelling, token)
            for path, own in ((f"/api/workflows/{wf}/logs", "format=json"),
                              (f"/api/workflows/{wf}/logs", "format=text"),
                              (f"/api/workflows/{wf}/logs", ""),  # REANA-shaped
                              (f"/api/workflows/{wf}/logs/stream", "tail=5"),
                              (f"/api/workflows/{uuid.uuid4()}/logs", "format=json")):
                both = "&".join(p for p in (own, query) if p)
                answers.append(client.get(f"{url}{path}{'?' + both if both else ''}",
                                          headers=headers))
    return answers


def _until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


MODES = ("none", "tokens", "reana-query", "reana-header")


@pytest.mark.parametrize("log_level", ["info", "debug"])
@pytest.mark.parametrize("mode", MODES)
def test_log_secrets_token_in_every_spelling_never_in_the_services_output(
        mode: str, log_level: str, database_url: str, tmp_path: Path) -> None:
    tokens = _tokens()
    apiserver = fake_apiserver.FakeApiserver().start()  # its bearer token: kubernetes-asyncio
    env: dict[str, str] = {"REANA_LOG_SSE_KUBERNETES": "on",
                           "REANA_LOG_SSE_KUBERNETES_NAMESPACE": apiserver.namespace,
                           "KUBECONFIG": str(apiserver.kubeconfig(tmp_path / "kubeconfig"))}
    reana: FakeReanaServer | None = None
    wf = str(uuid.uuid4())
    if mode == "tokens":
        env.update(REANA_LOG_SSE_AUTH="tokens",
                   REANA_LOG_SSE_READ_TOKENS=",".join(tokens.values()))
    elif mode.startswith("reana"):
        reana = FakeReanaServer().start()
        reana.token_in = mode.removeprefix("reana-")
        user = str(uuid.uuid4())
        for token in tokens.values():  # each one authenticates, wherever it is read
            reana.users[token] = user
            reana.sessions[token] = user
        reana.add_workflow(user, "roofit.1", wf)
        env.update(REANA_LOG_SSE_AUTH="reana", REANA_LOG_SSE_REANA_SERVER_URL=reana.url,
                   REANA_LOG_SSE_REANA_SERVER_HOST=REANA_HOSTNAME,
                   REANA_LOG_SSE_REANA_AUTH_CACHE_SECONDS="0",
                   REANA_LOG_SSE_REANA_TOKEN_IN=mode.removeprefix("reana-"))
    server = ServeProcess(database_url, tmp_path, log_level=log_level, **env).start()
    try:
        _until(lambda: apiserver.watch_requests, "the pod watch to start")
        assert post_batch(server.url, server.ingest_token,
                          [event(wf, f"line {i}") for i in range(3)]).status_code == 200
        assert post_status(server.url, server.ingest_token, wf,
                           "finished").status_code == 200  # so every stream ends
        answers = _attack(server.url, wf, tokens)
    finally:
        server.terminate()
        server.wait()
        if reana is not None:
            reana.stop()
        apiserver.stop()
    statuses = {r.status_code for r in answers}
    assert 200 in statuses, statuses  # the attack reached the routes, not only refusals
    output = server.output()
    assert f"/api/workflows/{wf}/logs" in output  # the access log was written, and read
    if reana is not None:
        assert "HTTP Request: GET" in output  # httpx logged what it sent to reana-server
        assert reana.seen, "reana-server was never asked"
    secrets = {**tokens, "ingest": server.ingest_token, "apiserver": fake_apiserver.TOKEN}
    leaked = {name for name, token in secrets.items() if token in output}
    assert not leaked, f"tokens in the log: {sorted(leaked)}"
    echoed = {name for name, token in secrets.items() for r in answers if token in r.text}
    assert not echoed, f"tokens in an answer: {sorted(echoed)}"
