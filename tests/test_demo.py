"""`reana-log-sse demo` shows a whole simulated workflow through the real endpoints."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from reana_log_sse.demo import DemoServer
from tests.conftest import free_port
from tests.helpers import Follower
from tests.test_cli_serve import _postmasters, _wait_gone


async def test_demo_streams_a_simulated_workflow_to_its_end(tmp_path):
    port = free_port()
    data_dir = tmp_path / "demo"
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"  # what webbrowser runs for --open, given $BROWSER
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    browser.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    env.update(BROWSER=str(browser), REANA_LOG_SSE_OPEN="1")
    proc = subprocess.Popen(  # the default log level: info
        [sys.executable, "-m", "reana_log_sse", "demo", "--port", str(port), "--data-dir",
         str(data_dir), "--lines-per-second", "400"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("Ctrl-C to stop"):
                break
        said = "".join(printed)
        stream = re.search(r"follow with curl: +curl -N (\S+/logs/stream)\n", said)
        page = re.search(r"open in a browser: +(http://127\.0\.0\.1:\d+/\?workflow=\S+)\n",
                         said)
        assert stream and page, "demo printed no URLs:\n" + said
        assert f"logs {page.group(1).split('=')[1]} --follow --server http://127.0.0.1:{port}" \
            in said
        async with Follower(stream.group(1)) as f:
            await f.wait_closed(timeout=90)
        assert f.named("end"), (f.status_code, f.events[-3:])
        assert f.named("end")[-1]["status"] == "finished"
        steps = {x["step"] for x in f.logs}
        assert steps == {None, "gendata", "fitdata", "plot"}
        assert f.ids == sorted(set(f.ids))
        assert len(f.ids) > 180
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        printed.append(rest)
        for p in _postmasters(data_dir):
            p.kill()
    assert proc.returncode == 0
    assert _wait_gone(data_dir) == []
    said = "".join(printed)
    assert opened.read_text().strip() == page.group(1)  # --open (REANA_LOG_SSE_OPEN)
    # what it is doing, in a few lines; no access log (only with --log-level debug)
    assert [line.strip() for line in said.splitlines() if line.startswith("  job ")] == [
        "job gendata is running", "job fitdata is running", "job plot is running"]
    assert "The workflow finished" in said
    assert "HTTP/1.1" not in said and "uvicorn" not in said, said
    assert len(said.splitlines()) < 25, said


def _demo(port: int, data_dir, rate: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "reana_log_sse", "demo", "--port", str(port), "--data-dir",
         str(data_dir), "--lines-per-second", rate],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_demo_stopped_by_ctrl_c_while_a_job_posts_exits_0_without_traceback(tmp_path):
    # a slow job: the simulator mostly waits between its posts, so (before the fix) the
    # service had shut down before its next one, which met a closed port: ConnectError, exit 1
    data_dir = tmp_path / "demo"
    proc = _demo(free_port(), data_dir, "2")
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if "job gendata is running" in line:
                break
        assert "job gendata is running" in printed[-1], "".join(printed)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        printed.append(proc.communicate(timeout=60)[0])
        for p in _postmasters(data_dir):
            p.kill()
    said = "".join(printed)
    assert proc.returncode == 0, said
    assert "Traceback" not in said and "Error" not in said, said
    assert _wait_gone(data_dir) == []


def _app() -> Starlette:
    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])


async def test_demo_server_runs_its_client_only_while_it_listens():
    port = free_port()
    answers: list[int] = []
    errors: list[BaseException] = []

    async def client() -> None:  # requests back to back, as a fast simulated job posts
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    answers.append((await http.get("/")).status_code)
                except httpx.HTTPError as exc:  # e.g. ConnectError: a closed port
                    errors.append(exc)
                if len(answers) == 20:
                    server.should_exit = True  # as uvicorn's Ctrl-C handler does

    server = DemoServer(uvicorn.Config(_app(), port=port, lifespan="off", log_config=None,
                                       log_level="warning"), client)
    await asyncio.wait_for(server.serve(), 60)
    assert errors == []  # none before the bind, none after shutdown began
    assert len(answers) >= 20 and set(answers) == {200}
    assert server.client_error is None


async def test_demo_server_stops_when_its_client_fails_and_keeps_why():
    async def client() -> None:
        raise httpx.HTTPStatusError("403 Forbidden", request=httpx.Request("POST", "http://x/"),
                                    response=httpx.Response(403))

    server = DemoServer(uvicorn.Config(_app(), port=free_port(), lifespan="off",
                                       log_config=None, log_level="warning"), client)
    await asyncio.wait_for(server.serve(), 60)
    assert isinstance(server.client_error, httpx.HTTPStatusError)  # run_demo raises it


def test_demo_page_has_a_favicon(live_server):
    # the page names one (so browsers ask for nothing else), and /favicon.ico is there too
    page = live_server.get("/").text
    assert '<link rel="icon" href="static/favicon.svg" type="image/svg+xml">' in page
    svg = live_server.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    ico = live_server.get("/favicon.ico")
    assert ico.status_code == 200 and ico.content[:4] == b"\0\0\1\0"  # an ICO header
