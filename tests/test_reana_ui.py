"""reana-ui's live logs (integrations/reana-ui/): the patch carries the current element; the
element mounted exactly as the patch's LiveLog mounts it, in a React 18 + semantic-ui-react 2
page built by Vite from npm packages (integrations/reana-ui/host/), in Chromium against the
real service; and check.sh on a real checkout of reana-ui, when REANA_UI_CHECKOUT names one
(reana-ui is on no package registry, so CI has none)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from tests.browser import chromium_problem, launch
from tests.conftest import free_port
from tests.helpers import event, post_batch, post_status

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "integrations" / "reana-ui"
PATCH = HERE / "live-logs.patch"
ELEMENT = ROOT / "reana_log_sse" / "static" / "reana-live-log.js"
WIDGET = "document.querySelector('reana-live-log')"


def added_file(patch: str, path: str) -> str:
    """The text of a file that the patch adds (its "+" lines)."""
    start = patch.index(f"+++ b/{path}\n")
    hunk = patch[start:].split("\n@@ ", 1)[1].split("\n", 1)[1]
    lines = []
    for line in hunk.split("\n"):
        if not line.startswith("+"):
            break
        lines.append(line[1:])
    return "\n".join(lines) + "\n"


def test_reana_ui_patch_vendors_the_current_element():
    vendored = added_file(PATCH.read_text(), "reana-ui/src/vendor/reana-live-log.js")
    assert vendored == ELEMENT.read_text(), (
        "live-logs.patch carries an old reana-live-log.js: copy the element into reana-ui's "
        "src/vendor/ again and regenerate the patch (docs/reana-integration.md)")


def _metric(server: Any, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", server.get("/metrics").text, re.M)
    return float(match.group(1)) if match else -1


def _wait(what: str, condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _host_build() -> Path:
    """integrations/reana-ui/host installed (npm ci, cached by its lock file) and built with
    the patch's LiveLog.js and the element."""
    if not shutil.which("npm"):
        if os.environ.get("CI"):
            pytest.fail("the React host test must run in CI: npm is missing")
        pytest.skip("npm is not installed (apt-get install -y nodejs npm)")
    source = HERE / "host"
    lock = (source / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    work = cache / "reana-log-sse" / f"reana-ui-host-{hashlib.sha256(lock).hexdigest()[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "vite.config.js", "index.html"):
        shutil.copy(source / name, work / name)
    shutil.copytree(source / "src", work / "src", dirs_exist_ok=True)
    if not (work / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                       cwd=work, check=True, timeout=800)
    patch = PATCH.read_text()
    (work / "src" / "components").mkdir(exist_ok=True)
    (work / "src" / "vendor").mkdir(exist_ok=True)
    (work / "src" / "components" / "LiveLog.js").write_text(
        added_file(patch, "reana-ui/src/components/LiveLog.js"))
    shutil.copy(ELEMENT, work / "src" / "vendor" / "reana-live-log.js")
    subprocess.run(["npm", "run", "build"], cwd=work, check=True, timeout=300,
                   capture_output=True)
    return work / "dist"


@pytest.fixture
def host(live_server: Any) -> Iterator[str]:
    sys.path.insert(0, str(HERE))
    try:
        from ingress import ingress
    finally:
        sys.path.remove(str(HERE))
    front = uvicorn.Server(uvicorn.Config(
        # no CSP: Playwright's wait_for_function evaluates strings, which it forbids
        ingress(_host_build(), live_server.url, live_server.url, None, csp=None),
        host="127.0.0.1",
        port=free_port(), log_level="warning"))
    thread = threading.Thread(target=front.run, daemon=True)
    thread.start()
    _wait("the host page's server", lambda: front.started)
    yield f"http://127.0.0.1:{front.config.port}"
    front.should_exit = True
    thread.join(10)


@pytest.mark.timeout(900)
def test_reana_ui_host_mounts_live_log_as_the_patch_does(live_server, host):
    problem = chromium_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    wf = uuid.uuid4()
    fit = {"job": "reana-run-job-fit", "step": "fitdata"}
    gen = {"job": "reana-run-job-gen", "step": "gendata"}
    r = post_batch(live_server.url, live_server.ingest_token,
                   [event(wf, "engine: started", job=None, kind="workflow")]
                   + [event(wf, f"gendata {i}", **gen) for i in range(3)]
                   + [event(wf, f"fitdata {i}", **fit) for i in range(2)])
    assert r.status_code == 200, r.text
    streams = lambda: _metric(live_server, "reana_log_sse_active_streams")  # noqa: E731
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
        page.goto(f"{host}/?workflow={wf}")
        # StrictMode mounted everything twice: one element, one stream, every line once
        page.wait_for_function(f"{WIDGET}?.state === 'live'")
        page.wait_for_function(f"{WIDGET}.lineCount === 6")
        assert page.evaluate("window.__host.effects") == 2
        assert page.locator("reana-live-log").count() == 1
        assert page.locator("reana-live-log").get_attribute("class") == "logs"
        _wait("one open stream", lambda: streams() == 1)
        # jobchange reaches the page through the ref's listener, once
        page.locator("reana-live-log").get_by_role("tab", name=re.compile("^fitdata")).click()
        page.wait_for_function("window.__host.jobChanges.length > 0")
        assert page.evaluate("window.__host.jobChanges") == [fit["job"]]
        assert page.locator("reana-live-log").get_attribute("job") == fit["job"]
        page.wait_for_function(f"{WIDGET}.viewLineCount === 2")
        # tabs: the engine's log (kind=workflow), a tab without a log, back to the jobs
        page.get_by_text("Engine logs", exact=True).click()
        page.wait_for_function(f"{WIDGET}?.state === 'live' && {WIDGET}.lineCount === 1")
        _wait("one open stream (engine)", lambda: streams() == 1)
        page.get_by_text("Workspace", exact=True).click()
        page.wait_for_function(f"!{WIDGET}")
        _wait("no open stream (workspace)", lambda: streams() == 0)
        page.get_by_text("Job logs", exact=True).click()
        page.wait_for_function(f"{WIDGET}?.state === 'live'")
        _wait("one open stream (jobs)", lambda: streams() == 1)
        # unmount: nothing left open
        page.get_by_role("button", name="Unmount").click()
        page.wait_for_function(f"!{WIDGET}")
        _wait("no open stream (unmounted)", lambda: streams() == 0)
        page.get_by_role("button", name="Mount").click()
        page.wait_for_function(f"{WIDGET}?.state === 'live'")
        _wait("one open stream (mounted again)", lambda: streams() == 1)
        # the end event, once, to the page's handler; the stream closes
        post_status(live_server.url, live_server.ingest_token, wf, "finished")
        page.wait_for_function("window.__host.ends.length > 0")
        ended = {"workflow_id": str(wf), "status": "finished"}
        assert page.evaluate("window.__host.ends") == [ended]
        assert page.evaluate(f"{WIDGET}.state") == "ended"
        _wait("no open stream (ended)", lambda: streams() == 0)
        browser.close()
    assert not errors, errors
    # stream-only: nothing but the stream path, which is all REANA's Ingress sends to us
    paths = {urlsplit(u).path for u in asked}
    assert paths == {f"/api/workflows/{wf}/logs/stream"}, asked


@pytest.mark.timeout(900)
def test_reana_ui_check_sh_on_a_reana_ui_checkout(tmp_path):
    checkout = os.environ.get("REANA_UI_CHECKOUT")
    if not checkout:
        pytest.skip("REANA_UI_CHECKOUT is unset: reana-ui's source is on no package "
                    "registry, so its build is checked only on a fetched checkout "
                    "(integrations/reana-ui/check.sh)")
    shot = tmp_path / "reana-ui-live-log.png"
    run = subprocess.run([str(HERE / "check.sh"), checkout], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable, "SCREENSHOT": str(shot)},
                         timeout=880)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "drive.py: OK" in run.stdout
    assert shot.stat().st_size > 0
