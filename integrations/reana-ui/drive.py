"""Drive a patched build of reana-ui in Chromium, served as REANA serves it (ingress.py):
the workflow page of a running workflow follows its job's lines live through
`<reana-live-log>`, a new line shows within 1 s of its ingest, the job's end shows, the 15 s
re-download of the log stops while the view is live, switching tabs leaves no stream open
(counted on the service: reana_log_sse_active_streams), and when the workflow ends the
finished log shows as before. Run by check.sh; exits 1 with what failed."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from ingress import ingress  # noqa: E402

from reana_log_sse.store.embedded import embedded_postgres  # noqa: E402
from tests.browser import chromium_problem, launch  # noqa: E402
from tests.conftest import LiveServer, free_port, make_settings  # noqa: E402
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer  # noqa: E402
from tests.helpers import event, post_batch, post_status  # noqa: E402

WIDGET = "document.querySelector('reana-live-log')"
TAB_TEXT = (f"(name) => [...({WIDGET})?.shadowRoot.querySelectorAll('.job') ?? []]"
            ".find((b) => b.textContent.startsWith(name))?.textContent ?? ''")


class Failed(Exception):
    pass


def wait(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Failed(f"timed out waiting for {what}")
        time.sleep(0.05)


def until(page: Any, js: str, timeout: float = 20) -> None:
    """Wait until a JS expression is true in the page. Not page.wait_for_function: it
    evaluates a string in the page, which REANA's CSP (no 'unsafe-eval') forbids."""
    wait(js, lambda: bool(page.evaluate(f"() => Boolean({js})")), timeout)


def active_streams(service: LiveServer) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    match = re.search(r"^reana_log_sse_active_streams ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else -1


def post(service: LiveServer, events: list[dict[str, Any]]) -> None:
    r = post_batch(service.url, service.ingest_token, events)
    if r.status_code != 200:
        raise Failed(f"ingest answered {r.status_code}: {r.text}")


def drive(build: Path, screenshot: Path, report: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp) / "pg") as db:
        fake = FakeReanaServer().start()
        # poll every second (REANA's default is 15 s), so that a re-download would be seen
        fake.ui_config.update(polling_secs=1, live_logs_stream=True)
        _, user = fake.add_user()
        wf = fake.add_workflow(user, "myanalysis.42")
        gen, fit = wf.add_job("gendata"), wf.add_job("fitdata")
        service = LiveServer(make_settings(db, auth="reana", reana_server_url=fake.url,
                                           reana_server_host=REANA_HOSTNAME)).start()
        on = {"job": fit.backend_job_id, "step": "fitdata"}
        post(service, [event(wf.id, "engine: workflow started", job=None, kind="workflow")]
             + [event(wf.id, f"gendata {i}", job=gen.backend_job_id, step="gendata")
                for i in range(3)]
             + [event(wf.id, f"fitdata {i}", **on) for i in range(2)])
        port = free_port()
        front = uvicorn.Server(uvicorn.Config(
            ingress(build, service.url, fake.url, REANA_HOSTNAME), host="127.0.0.1",
            port=port, log_level="warning"))
        threading.Thread(target=front.run, daemon=True).start()
        wait("the ingress", lambda: front.started)
        origin = f"http://127.0.0.1:{port}"
        problems: list[str] = []
        with sync_playwright() as playwright:
            browser = launch(playwright)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "session", "value": fake.sign_in(user),
                                  "url": origin}])
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            # REANA's CSP against what the patch adds (reana-ui's own fonts and Google
            # Fonts stylesheet are refused too, as on any REANA: counted, not ours)
            report.setdefault("csp_refusals_of_reana_ui_fonts_and_styles", 0)

            def console(m: Any) -> None:
                if "Content Security Policy" not in m.text:
                    return
                if re.search(r"script-src|connect-src|default-src", m.text):
                    problems.append(f"CSP: {m.text[:300]}")
                else:
                    report["csp_refusals_of_reana_ui_fonts_and_styles"] += 1
            page.on("console", console)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 else None)
            streams: list[str] = []
            page.on("request", lambda r: streams.append(r.url)
                    if "/logs/stream" in r.url else None)

            try:
                steps(page, origin, service, fake, wf, streams, screenshot, report)
            except Failed:
                page.screenshot(path=str(screenshot.with_suffix(".failed.png")))
                report["problems"] = problems
                report["page_text"] = page.inner_text("body")[:1500]
                raise
            context.close()
            browser.close()
        front.should_exit = True
        service.stop()
        fake.stop()
        if problems:
            raise Failed("; ".join(problems))


def steps(page: Any, origin: str, service: LiveServer, fake: FakeReanaServer, wf: Any,
          streams: list[str], screenshot: Path, report: dict[str, Any]) -> None:
    gen, fit = wf.jobs
    on = {"job": fit.backend_job_id, "step": "fitdata"}
    if True:
        if True:
            # 1. a running workflow's page, on a job's logs
            page.goto(f"{origin}/workflows/{wf.id}/job-logs/{fit.backend_job_id}")
            until(page, f"{WIDGET}?.state === 'live'")
            until(page, f"{WIDGET}.viewLineCount === 2")
            report["stream_url"] = streams[0].replace(origin, "")

            # 2. each new line within 1 s of its ingest (the ingest answers after commit)
            latencies = []
            for i in range(2, 12):
                post(service, [event(wf.id, f"fitdata {i}", **on)])
                committed = time.monotonic()
                until(page, f"{WIDGET}.viewLineCount === {i + 1}", timeout=5)
                latencies.append(time.monotonic() - committed)
            report["line_latency_ms"] = {
                "median": round(statistics.median(latencies) * 1000, 1),
                "max": round(max(latencies) * 1000, 1), "lines": len(latencies)}
            if max(latencies) >= 1:
                raise Failed(f"a line took {max(latencies):.3f} s to show")

            # 3. the job's end
            post_status(service.url, service.ingest_token, wf.id, "finished", **{
                "job_id": fit.backend_job_id, "step": "fitdata"})
            until(page, f"(({TAB_TEXT})('fitdata')).includes('finished')")
            page.screenshot(path=str(screenshot))

            # 4. no re-download of the log while live: the workflow is polled, its log not
            logs_path = f"/api/workflows/{wf.id}/logs"
            logs_before = fake.requests.count(logs_path)
            polls = fake.requests.count("/api/workflows")
            wait("three polls of the workflow",
                 lambda: fake.requests.count("/api/workflows") >= polls + 3)
            report["log_downloads_during_3_polls"] = fake.requests.count(logs_path) - logs_before
            if report["log_downloads_during_3_polls"]:
                raise Failed("the log was downloaded again while live")

            # 5. tabs: one stream while a log tab shows, none on another tab
            counts = {}
            for tab, live in [("Engine logs", True), ("Workspace", False),
                              ("Service logs", False), ("Job logs", True)]:
                page.get_by_role("tab", name=tab).or_(page.get_by_text(tab, exact=True)
                                                      ).first.click()
                if live:
                    until(page, f"{WIDGET}?.state === 'live'")
                else:
                    until(page, f"!{WIDGET}")
                want = 1 if live else 0
                wait(f"{want} open stream(s) on the {tab} tab",
                     lambda want=want: active_streams(service) == want)
                counts[tab] = active_streams(service)
            report["open_streams_by_tab"] = counts
            if "kind=workflow" not in streams[-2]:
                raise Failed(f"the engine tab streamed {streams[-2]}")
            if "kind=" in streams[-1]:
                raise Failed(f"the job tab streamed {streams[-1]}")

            # 6. the workflow ends: the element ends, the finished log shows as before
            for job in wf.jobs:
                job.status, job.logs = "finished", f"{job.job_name}: the log REANA kept\n"
            wf.status, wf.logs = "finished", "engine: the log REANA kept\n"
            post_status(service.url, service.ingest_token, wf.id, "finished")
            until(page, f"!{WIDGET}")
            # (the job shown is reana-ui's default: the first running one when the view
            # opened without a job in its URL)
            until(page, "document.body.innerText.includes(': the log REANA kept')")
            wait("no open stream", lambda: active_streams(service) == 0)
            report["streams_opened"] = len(streams)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("build", type=Path, help="reana-ui's build directory")
    parser.add_argument("--screenshot", type=Path,
                        default=ROOT / "docs/screenshots/reana-ui-live-log.png")
    args = parser.parse_args()
    problem = chromium_problem()
    if problem:
        print(f"drive.py: {problem}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {}
    try:
        drive(args.build, args.screenshot, report)
    except Failed as exc:
        print(json.dumps(report, indent=1))
        print(f"drive.py: FAILED: {exc}", file=sys.stderr)
        return 1
    report["screenshot"] = str(args.screenshot)
    print(json.dumps(report, indent=1))
    print("drive.py: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
