"""The <reana-live-log> widget in a real browser (Debian's Chromium driven by Playwright)
against the real service: lines appear, jobs filter, ANSI colours, HTML shown as text,
resuming after a restart and after 503s, `end`, search/follow, and 200,000 lines."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import PERF_PROBE, chromium_problem, launch, perf, seed_lines
from tests.helpers import event, post_batch, post_status

WIDGET = "reana-live-log"

# Each visible row as {id, cls, text}: the message only (no timestamp, no job column).
ROWS_OF = """(el) => [...el.shadowRoot.querySelectorAll('.rows .row')].map(r => ({
  id: Number(r.dataset.id), cls: r.className,
  text: [...r.childNodes].filter(n => !(n.classList && (n.classList.contains('ts')
        || n.classList.contains('jobcol')))).map(n => n.textContent).join('')}))"""
ROWS_JS = f"""async el => {{
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return ({ROWS_OF})(el);
}}"""
# Every EventSource the page makes, to check that none is left open (one that is not
# CLOSED reconnects by itself after the server's `retry:`).
TRACK_EVENT_SOURCES = """
window.__sources = [];
const Original = window.EventSource;
window.EventSource = class extends Original {
  constructor(...args) { super(...args); window.__sources.push(this); }
};
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = chromium_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        b = launch(playwright)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.api_requests = []  # type: ignore[attr-defined]
    pg.stream_requests = []  # type: ignore[attr-defined]

    def note(request: Any) -> None:
        if "/api/workflows/" in request.url:
            pg.api_requests.append(request.url)
        if "/logs/stream" in request.url:
            pg.stream_requests.append(request.url)

    pg.on("request", note)
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"


def post(server: Any, events: list[dict[str, Any]]) -> None:
    r = post_batch(server.url, server.ingest_token, events)
    assert r.status_code == 200, r.text


def open_widget(page: Any, server: Any, wf: uuid.UUID, query: str = "") -> Any:
    page.goto(f"{server.url}/?workflow={wf}{query}")
    return page.locator(WIDGET)


def wait_lines(page: Any, n: int, timeout: float = 20_000) -> None:
    page.wait_for_function(f"document.querySelector('{WIDGET}')?.lineCount >= {n}",
                           timeout=timeout)
    page.wait_for_function(  # and rendered
        f"""() => {{ const el = document.querySelector('{WIDGET}');
              return el.shadowRoot.querySelectorAll('.rows .row').length
                     >= Math.min({n}, el.viewLineCount, 40); }}""")


def wait_state(page: Any, state: str, timeout: float = 20_000) -> None:
    page.wait_for_function(f"document.querySelector('{WIDGET}')?.state === '{state}'",
                           timeout=timeout)


def expect(target: Any) -> Any:
    """Playwright's auto-waiting assertions (imported late: the module loads without it)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def rows(page: Any) -> list[dict[str, Any]]:
    return page.locator(WIDGET).evaluate(ROWS_JS)


def wait_texts(page: Any, texts: list[str], timeout: float = 20_000) -> None:
    """Wait until the visible rows show exactly these messages (then check, for the
    message if they never do)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    js = f"""(want) => {{ const el = document.querySelector('{WIDGET}');
        return el && JSON.stringify(({ROWS_OF})(el).map(r => r.text)) === JSON.stringify(want);
    }}"""
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(js, arg=texts, timeout=timeout)
    assert [r["text"] for r in rows(page)] == texts


def prop(page: Any, name: str) -> Any:
    return page.locator(WIDGET).evaluate(f"el => el.{name}")


def test_widget_shows_posted_lines(live_server, page):
    wf = uuid.uuid4()
    post(live_server, [event(wf, f"before {i}") for i in range(3)])
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 3)
    wait_state(page, "live")
    post(live_server, [event(wf, f"after {i}") for i in range(2)])
    wait_lines(page, 5)
    wait_texts(page, [f"before {i}" for i in range(3)] + [f"after {i}" for i in range(2)])
    assert [r["id"] for r in rows(page)] == [1, 2, 3, 4, 5]
    assert widget.get_by_role("log").count() == 1
    assert widget.get_by_role("status").first.inner_text().startswith("Live")
    download = widget.get_by_role("link", name="Download full log")
    assert download.get_attribute("href").endswith(f"/api/workflows/{wf}/logs?format=text")
    text = live_server.get(f"/api/workflows/{wf}/logs?format=text").text
    assert text.splitlines()[-1] == "[reana-run-job-1] after 1"  # prefixed as the CLI does
    assert len(page.stream_requests) == 1


def test_widget_filters_by_job(live_server, page):
    wf = uuid.uuid4()
    gen = {"job": "reana-run-job-aaaa", "step": "gendata"}
    fit = {"job": "reana-run-job-bbbb", "step": "fitdata"}
    post(live_server, [event(wf, "engine: started", job=None, kind="workflow")]
         + [event(wf, f"gendata {i}", **gen) for i in range(3)]
         + [event(wf, f"fitdata {i}", **fit) for i in range(2)])
    post_status(live_server.url, live_server.ingest_token, wf, "finished",
                job_id=gen["job"], step="gendata")
    post_status(live_server.url, live_server.ingest_token, wf, "running",
                job_id=fit["job"], step="fitdata")
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 6)
    tab = widget.get_by_role("tab", name=re.compile(r"^fitdata"))
    tab.wait_for()
    assert "running" in tab.inner_text()
    assert "finished" in widget.get_by_role("tab", name=re.compile(r"^gendata")).inner_text()
    tab.click()
    wait_texts(page, ["fitdata 0", "fitdata 1"])
    assert widget.get_attribute("job") == fit["job"]
    href = widget.get_by_role("link", name="Download job log").get_attribute("href")
    assert f"job={fit['job']}" in href and "format=text" in href
    # a later line of another job stays out; one of this job comes in
    post(live_server, [event(wf, "gendata late", **gen), event(wf, "fitdata 2", **fit)])
    wait_lines(page, 8)
    wait_texts(page, ["fitdata 0", "fitdata 1", "fitdata 2"])
    # keyboard: arrows move along the job list and select
    tab.focus()
    page.keyboard.press("ArrowUp")
    wait_texts(page, ["gendata 0", "gendata 1", "gendata 2", "gendata late"])
    # the job attribute (job id or step name) selects too; all jobs again without it
    widget.evaluate("el => el.setAttribute('job', 'Workflow engine')")  # matches nothing
    wait_texts(page, [])
    widget.evaluate("el => el.setAttribute('job', '@workflow')")
    wait_texts(page, ["engine: started"])
    widget.evaluate("el => el.removeAttribute('job')")
    wait_texts(page, ["engine: started", "gendata 0", "gendata 1", "gendata 2", "fitdata 0",
                      "fitdata 1", "gendata late", "fitdata 2"])
    assert len(page.stream_requests) == 1  # one EventSource per workflow, never one per job


def test_widget_token_and_tail(server_factory, page):
    server = server_factory(auth="tokens", read_tokens="reader-secret")
    wf = uuid.uuid4()
    post(server, [event(wf, f"line {i}") for i in range(30)])
    widget = open_widget(page, server, wf, "&token=reader-secret&tail=5")
    wait_lines(page, 5)
    wait_state(page, "live")
    post(server, [event(wf, "line 30")])
    wait_lines(page, 6)
    assert [r["id"] for r in rows(page)] == list(range(26, 32))
    assert page.api_requests and all("access_token=reader-secret" in u
                                     for u in page.api_requests)
    assert "access_token=reader-secret" in widget.get_by_role(
        "link", name="Download full log").get_attribute("href")
    # without the token: an error, and no retrying
    open_widget(page, server, wf)
    wait_state(page, "error")
    expect(widget.get_by_role("status").first).to_contain_text("401")
    assert prop(page, "lineCount") == 0


def test_widget_stream_only_asks_nothing_but_the_stream(live_server, page):
    """On REANA's host only `.../logs/stream` reaches the service (the stream-only Ingress
    of manifests/overlays/example): with `stream-only` the widget backfills from the
    stream's own `tail=` and shows no download link (`.../logs` is reana-server's)."""
    wf = uuid.uuid4()
    post(live_server, [event(wf, f"line {i}") for i in range(30)])
    widget = open_widget(page, live_server, wf, "&tail=5&stream-only")
    wait_lines(page, 5)
    wait_state(page, "live")
    post(live_server, [event(wf, "line 30")])
    wait_lines(page, 6)
    wait_texts(page, [f"line {i}" for i in range(25, 31)])
    assert [r["id"] for r in rows(page)] == list(range(26, 32))
    assert page.api_requests and all(
        urlsplit(u).path == f"/api/workflows/{wf}/logs/stream" for u in page.api_requests
    ), page.api_requests
    assert "tail=5" in page.api_requests[0]
    assert widget.locator("a.download").get_attribute("href") is None
    assert not widget.locator("a.download").is_visible()


def test_widget_renders_ansi_progress_and_stderr(live_server, page):
    wf = uuid.uuid4()
    post(live_server, [
        event(wf, "\x1b[31mERROR\x1b[0m plain"),
        event(wf, "\x1b[1;38;5;46mbold 256-green\x1b[0m"),
        event(wf, "Downloading  10%\rDownloading  50%\rDownloading 100%\r"),
        event(wf, "warning: disk almost full", stream="stderr"),
        event(wf, "\x1b]0;title\x07\x1b[2Kcleared"),
    ])
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 5)
    wait_texts(page, ["ERROR plain", "bold 256-green", "Downloading 100%",
                      "warning: disk almost full", "cleared"])
    red = widget.locator(".row span", has_text="ERROR").evaluate(
        "e => getComputedStyle(e).color")
    r, g, b = map(int, re.findall(r"\d+", red)[:3])
    assert r > 180 and g < 90 and b < 90, red
    plain = widget.locator(".row", has_text="ERROR plain").evaluate(
        "e => getComputedStyle(e).color")
    assert plain != red
    green = widget.locator(".row span", has_text="bold 256-green")
    assert green.evaluate("e => getComputedStyle(e).color") == "rgb(0, 255, 0)"
    assert int(green.evaluate("e => getComputedStyle(e).fontWeight")) >= 700
    kinds = [r["cls"] for r in rows(page)]
    assert "err" in kinds[3].split() and all("err" not in k.split() for k in kinds[:3])
    err_row = widget.locator(".row.err")
    assert err_row.evaluate("e => getComputedStyle(e).color") != plain
    # timestamps are optional
    assert widget.locator(".row .ts").count() == 0
    widget.get_by_role("checkbox", name="Timestamps").check()
    # the rows are drawn again on the next animation frame: wait for them, not for a time
    expect(widget.locator(".row .ts")).to_have_count(5)
    expect(widget.locator(".row .ts").first).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))


def test_widget_shows_html_as_text(live_server, page):
    wf = uuid.uuid4()
    nasty = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>b</b>'
    post(live_server, [event(wf, nasty)])
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 1)
    assert [r["text"] for r in rows(page)] == [nasty]
    row = widget.locator(".rows .row").first
    assert row.evaluate("e => e.children.length") == 0  # a text node, no elements
    # no element was made from the text anywhere, so no script or handler can ever run
    assert widget.evaluate("el => el.shadowRoot.querySelectorAll('script, img, b').length") == 0
    assert page.locator("img").count() == 0
    assert not page.evaluate("[...document.scripts].some((s) => s.text.includes('__pwned'))")
    assert page.evaluate("window.__pwned") is None


def test_widget_resumes_after_restart_with_every_line_once(live_server, page):
    wf = uuid.uuid4()
    post(live_server, [event(wf, f"first {i}") for i in range(20)])
    open_widget(page, live_server, wf)
    wait_lines(page, 20)
    wait_state(page, "live")
    live_server.stop()
    wait_state(page, "reconnecting")
    live_server.start()
    post(live_server, [event(wf, f"second {i}") for i in range(20)])
    wait_lines(page, 40)
    wait_state(page, "live")
    # a line posted last arrives after anything the resumed stream could repeat
    post(live_server, [event(wf, "last")])
    expected = [f"first {i}" for i in range(20)] + [f"second {i}" for i in range(20)]
    wait_texts(page, [*expected, "last"])
    assert [r["id"] for r in rows(page)] == list(range(1, 42))
    assert prop(page, "lineCount") == 41
    assert len(page.stream_requests) >= 2


class _Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_widget_reconnects_after_503_with_since(live_server, page):
    """EventSource gives up for good on a non-200 answer (a 502/503 during a rollout): the
    widget reconnects by itself, with backoff, from the last id it has."""
    wf = uuid.uuid4()
    post(live_server, [event(wf, f"first {i}") for i in range(10)])
    open_widget(page, live_server, wf)
    wait_lines(page, 10)
    live_server.stop()
    stub = ThreadingHTTPServer(("127.0.0.1", live_server.port), _Unavailable)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        page.wait_for_function(f"document.querySelector('{WIDGET}').shadowRoot"
                               ".querySelector('.state').textContent.includes('503')",
                               timeout=15_000)
        assert prop(page, "state") == "reconnecting"
    finally:
        stub.shutdown()
        stub.server_close()
    live_server.start()
    post(live_server, [event(wf, f"second {i}") for i in range(5)])
    wait_lines(page, 15)
    wait_state(page, "live")
    wait_texts(page, [f"first {i}" for i in range(10)] + [f"second {i}" for i in range(5)])
    assert [r["id"] for r in rows(page)] == list(range(1, 16))
    # resumed from the last id it had, not from the start
    resumed = [u for u in page.api_requests if "since=" in u and "since=0" not in u]
    assert resumed and "since=10" in resumed[0], page.api_requests


def test_widget_end_shows_ended_and_never_reconnects(live_server, page):
    wf = uuid.uuid4()
    post(live_server, [event(wf, f"line {i}") for i in range(3)])
    page.add_init_script(TRACK_EVENT_SOURCES)
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 3)
    wait_state(page, "live")
    post(live_server, [event(wf, "last words")])
    post_status(live_server.url, live_server.ingest_token, wf, "finished")
    wait_state(page, "ended")
    assert prop(page, "lineCount") == 4
    expect(widget.get_by_role("status").first).to_have_text(re.compile("^Ended"))
    assert prop(page, "workflowStatus") == "finished"
    # what would reconnect is an EventSource left open (it retries by itself after the
    # server's `retry:`): every one the page made is CLOSED, at once
    assert page.evaluate("window.__sources.map((s) => s.readyState)") == [2]
    assert len(page.stream_requests) == 1
    assert prop(page, "state") == "ended"


def test_widget_search_highlights_and_follow_pauses(live_server, page):
    wf = uuid.uuid4()
    post(live_server, [event(wf, f"line token-{i:03d}") for i in range(200)])
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 200)
    last = rows(page)[-1]
    assert last["text"] == "line token-199"  # following: the newest line is in view
    assert prop(page, "following") is True
    viewport = widget.get_by_role("log")
    viewport.focus()
    page.keyboard.press("/")  # focuses the search box
    page.keyboard.type("TOKEN-017")
    page.keyboard.press("Enter")
    mark = widget.locator("mark", has_text=re.compile("token-017", re.I))
    mark.wait_for()
    expect(widget.locator(".matches")).to_have_text("1 / 1")
    assert prop(page, "following") is False
    jump = widget.get_by_role("button", name=re.compile("Jump to latest"))
    assert jump.is_visible()
    post(live_server, [event(wf, f"more {i}") for i in range(3)])
    wait_lines(page, 203)
    page.wait_for_function(f"document.querySelector('{WIDGET}').shadowRoot"
                           ".querySelector('.jump').textContent.includes('3 new')")
    assert "token-017" in " ".join(r["text"] for r in rows(page))  # did not scroll away
    jump.click()
    page.wait_for_function(f"document.querySelector('{WIDGET}').following")
    page.wait_for_function(f"""() => {{ const el = document.querySelector('{WIDGET}');
        const r = [...el.shadowRoot.querySelectorAll('.rows .row')];
        return r.length && r[r.length - 1].textContent === 'more 2'; }}""")
    assert not jump.is_visible()
    # scrolling up with the keyboard pauses following too
    viewport.focus()
    page.keyboard.press("PageUp")
    page.wait_for_function(f"!document.querySelector('{WIDGET}').following")


def test_widget_loads_200k_lines(live_server, page, record_property):
    """200,000 lines arrive (catching up from the database); the page stays responsive. The
    longest task and frame gap are reported, not asserted (reana_log_sse/bench/widget.py)."""
    n = 200_000
    wf = uuid.uuid4()
    seed_lines(live_server, wf, n)
    page.add_init_script(PERF_PROBE)
    t0 = time.monotonic()
    open_widget(page, live_server, wf)
    wait_lines(page, n, timeout=90_000)
    loaded = time.monotonic() - t0
    post(live_server, [event(wf, "live after the catch-up", job="reana-run-job-1",
                             step="step1")])
    post_status(live_server.url, live_server.ingest_token, wf, "finished")
    wait_state(page, "ended")
    check = page.locator(WIDGET).evaluate("""el => {
        const ids = el.lines.map((l) => l.id);
        let ordered = true;
        for (let i = 1; i < ids.length; i++) if (ids[i] !== ids[i - 1] + 1) ordered = false;
        return {count: el.lineCount, first: ids[0], last: ids[ids.length - 1], ordered,
                rows: el.shadowRoot.querySelectorAll('.rows .row').length};
    }""")
    assert check == {"count": n + 1, "first": 1, "last": n + 1, "ordered": True,
                     "rows": check["rows"]}
    assert check["rows"] < 200  # virtualized: the DOM holds what is on screen
    assert rows(page)[-1]["text"] == "live after the catch-up"
    measured = perf(page)
    report = {"lines": n, "load_seconds": round(loaded, 2),
              "longest_task_ms": measured["longestTask"], "long_tasks": measured["longTasks"],
              "max_frame_gap_ms": round(measured["maxFrameGap"], 1),
              "frames": measured["frames"]}
    record_property("widget_200k", json.dumps(report))
    print(f"\nwidget 200k lines: {json.dumps(report)}")


STATE_TEXT = f"document.querySelector('{WIDGET}').shadowRoot.querySelector('.state').textContent"


def test_widget_waits_for_a_workflow_not_started_yet_then_shows_it_live(live_server, page):
    wf = uuid.uuid4()
    open_widget(page, live_server, wf)
    wait_state(page, "waiting")  # not "Reconnecting ... retry in 2 s" for ever
    assert page.evaluate(STATE_TEXT) == (
        f"Waiting \u00b7 unknown workflow {wf}: no line nor status stored for it yet (a wrong "
        "id, or it has not started); waiting for its first line")
    post(live_server, [event(wf, "at last")])
    wait_state(page, "live")
    wait_texts(page, ["at last"])


def test_widget_no_wait_says_an_unknown_workflow_in_the_cli_words(live_server, page):
    wf = uuid.uuid4()
    open_widget(page, live_server, wf, "&no-wait")
    wait_state(page, "error")
    # the words of `reana-log-sse logs` (tests/test_cli_logs.py, exit statuses)
    assert page.evaluate(STATE_TEXT) == (
        f"Error \u00b7 unknown workflow {wf}: no line nor status stored for it yet (a wrong "
        "id, or it has not started)")
    assert prop(page, "state") == "error"


def test_widget_sidebar_tells_two_jobs_of_one_step_apart(live_server, page):
    wf = uuid.uuid4()
    first = {"job": "reana-run-job-1a2b3c4d-0000", "step": "fitdata"}
    second = {"job": "reana-run-job-9f8e7d6c-0000", "step": "fitdata"}  # a retried job
    post(live_server, [event(wf, "try 1", **first)])
    widget = open_widget(page, live_server, wf)
    wait_lines(page, 1)
    expect(widget.get_by_role("tab", name=re.compile(r"^fitdata"))).to_have_count(1)
    post(live_server, [event(wf, "try 2", **second)])
    wait_lines(page, 2)
    tabs = widget.get_by_role("tab", name=re.compile(r"^fitdata"))
    expect(tabs).to_have_count(2)
    expect(tabs.nth(0).locator(".job-name")).to_have_text("fitdata \u00b7 1a2b3c4d")
    expect(tabs.nth(1).locator(".job-name")).to_have_text("fitdata \u00b7 9f8e7d6c")
    tabs.nth(1).click()
    wait_texts(page, ["try 2"])
