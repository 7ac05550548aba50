"""`reana-log-sse demo` shows a whole simulated workflow through the real endpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from tests.conftest import free_port
from tests.helpers import Follower
from tests.test_cli_serve import _postmasters, _wait_gone


async def test_demo_streams_a_simulated_workflow_to_its_end(tmp_path):
    port = free_port()
    data_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reana_log_sse", "demo", "--port", str(port), "--data-dir",
         str(data_dir), "--lines-per-second", "400", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        workflow, printed = None, []
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            match = re.search(r"curl -N (\S+/logs/stream)", line)
            if match:
                workflow = match.group(1)
                break
        assert workflow, "demo printed no stream URL:\n" + "".join(printed)
        async with Follower(workflow) as f:
            await f.wait_closed(timeout=90)
        assert f.named("end"), (f.status_code, f.events[-3:])
        assert f.named("end")[-1]["status"] == "finished"
        steps = {x["step"] for x in f.logs}
        assert steps == {None, "gendata", "fitdata", "plot"}
        assert f.ids == sorted(set(f.ids))
        assert len(f.ids) > 180
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        for p in _postmasters(data_dir):
            p.kill()
    assert proc.returncode == 0
    assert _wait_gone(data_dir) == []


def test_demo_page_has_a_favicon(live_server):
    # the page names one (so browsers ask for nothing else), and /favicon.ico is there too
    page = live_server.get("/").text
    assert '<link rel="icon" href="static/favicon.svg" type="image/svg+xml">' in page
    svg = live_server.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    ico = live_server.get("/favicon.ico")
    assert ico.status_code == 200 and ico.content[:4] == b"\0\0\1\0"  # an ICO header
