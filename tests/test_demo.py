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
from tests.test_widget_browser import WIDGET, browser, page, prop, wait_state  # noqa: F401


async def test_demo_streams_one_simulated_workflow_after_another(tmp_path):
    port = free_port()
    data_dir = tmp_path / "demo"
    opened = tmp_path / "opened"
    opener = tmp_path / "browser"  # what webbrowser runs for --open, given $BROWSER
    opener.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    opener.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    env.update(BROWSER=str(opener), REANA_LOG_SSE_OPEN="1",
               REANA_LOG_SSE_DEMO_CYCLE_SECONDS="6")  # the setting, as its env var
    proc = subprocess.Popen(  # the default log level: info
        [sys.executable, "-m", "reana_log_sse", "demo", "--port", str(port), "--data-dir",
         str(data_dir), "--lines-per-second", "400"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    printed: list[str] = []

    def read_until(text: str) -> str:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in:\n" + "".join(printed))

    base = f"http://127.0.0.1:{port}"
    try:
        read_until("Ctrl-C to stop")
        said = "".join(printed)
        page = re.search(r"open in a browser: +(http://127\.0\.0\.1:\d+/live) ", said)
        assert page, "demo printed no page:\n" + said
        assert f"logs $WF --follow --server {base}" in said
        first = read_until("Simulated workflow 1 is live: WF=").split("WF=")[1].strip()
        async with httpx.AsyncClient(base_url=base) as http:  # /live: the running one
            live = await http.get("/live")
        assert live.status_code == 307 and live.headers["location"] == f"./?workflow={first}"
        async with Follower(f"{base}/api/workflows/{first}/logs/stream") as f:
            await f.wait_closed(timeout=90)
        assert f.named("end"), (f.status_code, f.events[-3:])
        assert f.named("end")[-1]["status"] == "finished"
        steps = {x["step"] for x in f.logs}
        assert steps == {None, "gendata", "fitdata", "plot"}
        assert f.ids == sorted(set(f.ids))
        assert len(f.ids) > 30  # each job posts for about 2 s: as fast as the machine allows
        read_until("Simulated workflow 1 finished")
        second = read_until("Simulated workflow 2 is live: WF=").split("WF=")[1].strip()
        assert second != first
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/live")).headers["location"] == f"./?workflow={second}"
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
    jobs = [line.strip() for line in said.splitlines() if line.startswith("  job ")]
    assert jobs[:3] == ["job gendata is running", "job fitdata is running",
                        "job plot is running"]
    assert re.search(r"^Stopped simulated workflow \d+ \([0-9a-f-]{36}(, job \w+ running)?\)",
                     said, re.M), said  # Ctrl-C says what it stopped
    assert "HTTP/1.1" not in said and "uvicorn" not in said, said
    assert "Traceback" not in said, said


def _demo(port: int, data_dir, rate: str, cycle_seconds: str = "36") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "reana_log_sse", "demo", "--port", str(port), "--data-dir",
         str(data_dir), "--lines-per-second", rate, "--cycle-seconds", cycle_seconds],
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
    html = live_server.get("/").text
    assert '<link rel="icon" href="static/favicon.svg" type="image/svg+xml">' in html
    svg = live_server.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    ico = live_server.get("/favicon.ico")
    assert ico.status_code == 200 and ico.content[:4] == b"\0\0\1\0"  # an ICO header


def test_demo_page_opened_after_several_cycles_shows_live_lines(tmp_path, page):  # noqa: F811
    # a page opened long after start (here after two whole 3-s cycles, as after 5 minutes
    # of the default 36 s) follows the workflow running then, not an ended one
    data_dir = tmp_path / "demo"
    port = free_port()
    proc = _demo(port, data_dir, "20", cycle_seconds="3")
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("Simulated workflow 3 is live: WF="):
                break
        live = printed[-1].split("WF=")[1].strip()
        page.goto(f"http://127.0.0.1:{port}/live")
        assert page.url.endswith(f"/?workflow={live}")
        wait_state(page, "live")
        seen = prop(page, "lineCount")
        page.wait_for_function(  # and lines keep arriving while it is open
            f"document.querySelector('{WIDGET}').lineCount > {seen}")
        assert prop(page, "state") == "live"
    finally:
        proc.send_signal(signal.SIGINT)
        printed.append(proc.communicate(timeout=60)[0])
        for p in _postmasters(data_dir):
            p.kill()
    said = "".join(printed)
    assert "Simulated workflow 2 finished" in said, said
    assert proc.returncode == 0, said
