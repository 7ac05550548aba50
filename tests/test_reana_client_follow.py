"""REANA's own `reana-client logs --follow`, patched by integrations/reana-client/apply.py:
the real reana-client 0.95.0a6 from PyPI, in its own venv, configured as a 0.95 user does
(`server-add`, `server-use`, a JWT-shaped token in its credential store), following a
running workflow over this service's stream (auth=reana, asking the fake reana-server
who the token is), through a restart of the service; and falling back to REANA's own
polling, saying so, where there is no stream."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer
from tests.helpers import BackgroundLines, event, post_batch, post_status
from tests.reana_client import configure_reana_client, reana_client_executable

VERSION = "0.95.0a6"
APPLY = Path(__file__).resolve().parent.parent / "integrations" / "reana-client" / "apply.py"
BIG = 20_000  # lines of one job
REPEATS = 1_000  # one progress line, repeated
COMPLETED = ("==> Workflow has completed, you might want to rerun the command without the "
             "--follow flag.")
FALLBACK = "==> The server does not stream live logs, falling back to polling."


def _apply(venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(APPLY), "--venv", str(venv)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def patched_client() -> str:
    exe = reana_client_executable(VERSION)
    run = _apply(Path(exe).parent.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    return exe


@pytest.fixture
def reana():
    fake = FakeReanaServer().start()
    yield fake
    fake.stop()


def _jwt(user: str) -> str:
    """A token shaped as a JWT (three base64url segments), as reana-client 0.95 insists
    on (reana_client/cli/utils.py `_looks_like_jwt`)."""
    def seg(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'RS256', 'typ': 'JWT'})}.{seg({'sub': user})}.{uuid.uuid4().hex}"


def _user(reana: FakeReanaServer) -> tuple[str, str]:
    user = str(uuid.uuid4())
    token = _jwt(user)
    reana.users[token] = user
    return token, user


class Follow(BackgroundLines):
    """`reana-client logs --follow` in the background; stdout collected line by line."""

    def __init__(self, exe: str, env: dict[str, str], *args: str) -> None:
        super().__init__([exe, "logs", "--follow", *args], env, text=True)

    def wait_for(self, line: str, count: int = 1, timeout: float = 120) -> None:
        assert self.wait_until(lambda lines: lines.count(line) >= count, timeout), (
            self.lines[-5:], self.proc.poll())

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        code = self.wait_exit(timeout)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


def _ok(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text


def _post_many(server, events, batch=5_000):
    for i in range(0, len(events), batch):
        _ok(post_batch(server.url, server.ingest_token, events[i:i + batch]))


@pytest.mark.timeout(900)  # the first use installs reana-client 0.95.0a6 (about 70 s)
def test_reana_client_follow_prints_every_line_once_through_a_restart(
        patched_client, reana, server_factory, tmp_path):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME)
    token, user = _user(reana)
    wf = reana.add_workflow(user, "roofit.7")
    jobs = {name: wf.add_job(name) for name in ("gendata", "fitdata", "plot")}
    url, tok = server.url, server.ingest_token

    def line(message: str, step: str | None) -> dict:
        if step is None:
            return event(wf.id, message, job=None, kind="workflow")
        return event(wf.id, message, job=jobs[step].backend_job_id, step=step)

    _ok(post_status(url, tok, wf.id, "running"))
    for name, job in jobs.items():
        _ok(post_status(url, tok, wf.id, "running", job_id=job.backend_job_id, step=name))
    before = ([("engine: publishing gendata", None)]
              + [(f"gen {i}", "gendata") for i in range(BIG)]
              + [("progress 50%", "fitdata")] * REPEATS)
    _post_many(server, [line(m, s) for m, s in before])

    env = configure_reana_client(patched_client, tmp_path / "home", server_url=url,
                                 token=token)
    follow = Follow(patched_client, env, "-w", "roofit.7")
    try:
        follow.wait_for("[fitdata] progress 50%", REPEATS)
        server.stop()  # the service restarts mid-follow: same port, same database
        server.start()
        after = ([(f"plot {i}", "plot") for i in range(500)]
                 + [("progress 50%", "fitdata"), ("engine: done", None)])
        _post_many(server, [line(m, s) for m, s in after])
        for name, job in jobs.items():
            _ok(post_status(url, tok, wf.id, "finished", job_id=job.backend_job_id,
                            step=name))
        _ok(post_status(url, tok, wf.id, "finished"))
        code, stderr = follow.finish()
    finally:
        follow.kill()
    assert code == 0, stderr[-2000:]
    printed = [x for x in follow.lines if not x.startswith("==> ")]
    expected = [f"[{s or 'workflow engine'}] {m}" for m, s in before + after]
    assert printed == expected  # every line once, in order, the repeated ones each time
    notes = [x for x in follow.lines if x.startswith("==> ")]
    assert notes[-1] == COMPLETED
    for name in jobs:
        assert notes.count(f"==> SUCCESS: {name} is running") == 1  # not again on resume
        assert f"==> SUCCESS: {name} has finished" in notes
    assert "==> SUCCESS: roofit.7 has finished" in notes
    assert FALLBACK not in follow.lines
    assert token not in stderr


@pytest.mark.timeout(900)
def test_reana_client_follow_one_step_prints_its_lines_bare(patched_client, reana,
                                                          server_factory, tmp_path):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME)
    token, user = _user(reana)
    wf = reana.add_workflow(user, "fit.1")
    fit, plot = wf.add_job("fitdata"), wf.add_job("plot")
    _post_many(server, [event(wf.id, "fit 1", job=fit.backend_job_id, step="fitdata"),
                        event(wf.id, "plot 1", job=plot.backend_job_id, step="plot"),
                        event(wf.id, "fit 1", job=fit.backend_job_id, step="fitdata")])
    _ok(post_status(server.url, server.ingest_token, wf.id, "finished"))
    env = configure_reana_client(patched_client, tmp_path / "home", server_url=server.url,
                                 token=token)
    run = subprocess.run([patched_client, "logs", "-w", "fit.1", "--follow", "--filter",
                          "step=fitdata"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [x for x in run.stdout.splitlines() if not x.startswith("==> ")] == [
        "fit 1", "fit 1"]
    assert run.stdout.splitlines()[-1] == COMPLETED.replace("Workflow", "Job")


@pytest.mark.timeout(900)
def test_reana_client_follow_without_the_stream_falls_back_to_polling(
        patched_client, reana, server_factory, tmp_path):
    """reana-server alone (the fake, whose logs answer is this service's, as a reana-server
    passing format=reana through would give) has no stream: 404."""
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME)
    reana.logs_backend = server.url
    reana.trusted_hosts.add("127.0.0.1")  # the client reaches it by address
    token, user = _user(reana)
    wf = reana.add_workflow(user, "old.3")
    wf.status = "finished"
    _post_many(server, [event(wf.id, f"engine {i}", job=None, kind="workflow")
                        for i in range(3)])
    env = configure_reana_client(patched_client, tmp_path / "home", server_url=reana.url,
                                 token=token)
    run = subprocess.run([patched_client, "logs", "-w", "old.3", "--follow", "-i", "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [FALLBACK, "engine 0", "engine 1", "engine 2",
                                       COMPLETED]
    assert "/api/workflows/old.3/logs/stream" in reana.requests  # asked once, then polled
    assert reana.requests.count("/api/workflows/old.3/logs/stream") == 1

    # nothing listens on the stream's path at all: the same one line, then REANA's polling
    nothing = f"http://127.0.0.1:{free_port()}"
    env = configure_reana_client(patched_client, tmp_path / "home2", server_url=nothing,
                                 token=token)
    run = subprocess.run([patched_client, "logs", "-w", "old.3", "--follow", "-i", "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.stdout.splitlines()[0] == FALLBACK
    assert run.returncode == 1 and "Cannot retrieve logs for workflow old.3" in run.stderr


@pytest.mark.timeout(900)
def test_reana_client_apply_is_idempotent_and_refuses_other_versions(patched_client):
    again = _apply(Path(patched_client).parent.parent)
    assert (again.returncode, again.stdout.strip()) == (
        0, f"reana-client {VERSION} in {Path(patched_client).parent.parent.resolve()} "
        "is already patched")
    old = Path(reana_client_executable()).parent.parent  # reana-client 0.9.6
    refused = _apply(old)
    assert refused.returncode == 1
    assert "reana-client 0.9.6 is installed" in refused.stderr
    assert VERSION in refused.stderr
    assert os.access(APPLY, os.R_OK)
