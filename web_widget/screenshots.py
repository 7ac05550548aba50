"""Screenshots of the demo page: live, reconnecting, ended (and a job filter with a search).

    python -m web_widget.screenshots [--out docs/screenshots]

Runs the real service (embedded PostgreSQL in a temporary directory) and Debian's Chromium
(see tests/browser.py), plays a small REANA-like workflow into it through the ingest
endpoint, and writes live.png, reconnecting.png, ended.png and search.png.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from reana_log_sse.store import db
from reana_log_sse.store.embedded import embedded_postgres
from tests.browser import chromium_problem, launch
from tests.conftest import LiveServer, make_settings
from tests.helpers import event, post_batch, post_status

GEN = {"job": "reana-run-job-4f1c2a9e", "step": "gendata"}
FIT = {"job": "reana-run-job-8d03b7c1", "step": "fitdata"}
PLOT = {"job": "reana-run-job-c5e91f02", "step": "plot"}


def engine(wf: uuid.UUID, message: str) -> dict[str, Any]:
    return event(wf, message, job=None, kind="workflow")


RULE = "\x1b[1m   " + "-" * 60 + "\x1b[0m"


def gendata(wf: uuid.UUID) -> list[dict[str, Any]]:
    out = [event(wf, "root -b -q 'gendata.C(20000,\"results/data.root\")'", **GEN),
           event(wf, RULE, **GEN),
           event(wf, "\x1b[1m  | Welcome to ROOT 6.30/04" + " " * 16 + "https://root.cern |\x1b[0m",
                 **GEN),
           event(wf, RULE, **GEN),
           event(wf, "Processing gendata.C(20000,\"results/data.root\")...", **GEN)]
    for i in range(1, 13):
        out.append(event(wf, f"\x1b[32mINFO\x1b[0m  generated {i * 1000:>6} / 20000 events"
                              f"  mean={4.9 + i / 100:.3f}", **GEN))
    out.append(event(wf, "Warning in <TFile::Init>: no StreamerInfo found in results/data.root",
                     stream="stderr", **GEN))
    bar = "".join(f"writing results/data.root [{'#' * k}{'.' * (20 - k)}] {k * 5:3d}%\r"
                  for k in range(0, 21, 4))
    out.append(event(wf, bar, **GEN))
    out.append(event(wf, "\x1b[32mINFO\x1b[0m  wrote 20000 events to results/data.root", **GEN))
    return out


def fitdata(wf: uuid.UUID, part: int) -> list[dict[str, Any]]:
    if part == 0:
        out = [event(wf, "root -b -q 'fitdata.C(\"results/data.root\",\"results/plot.png\")'",
                     **FIT),
               event(wf, "[#1] INFO:Minimization -- RooAbsMinimizerFcn::setOptimizeConst: "
                         "activating const optimization", **FIT)]
        for i in range(1, 9):
            out.append(event(wf, f" **** {i:>2} **MIGRAD   FCN={-31042.7 - i * 3.1:.4f}  "
                                 f"EDM={10.0 ** -i:.3e}  STRATEGY= 1", **FIT))
        out.append(event(wf, "\x1b[33mWARNING\x1b[0m  covariance matrix not positive definite, "
                             "forcing", stream="stderr", **FIT))
        return out
    return [event(wf, " MIGRAD MINIMIZATION HAS CONVERGED.", **FIT),
            event(wf, "   1  mean         4.99871e+00   1.48710e-02", **FIT),
            event(wf, "   2  sigma        1.01202e+00   1.06311e-02", **FIT),
            event(wf, "\x1b[32mINFO\x1b[0m  fit status \x1b[1;32mOK\x1b[0m, chi2/ndf = 0.97",
                  **FIT)]


def plot(wf: uuid.UUID) -> list[dict[str, Any]]:
    return [event(wf, "python plot.py results/fit.json results/plot.png", **PLOT),
            event(wf, "Info in <TCanvas::Print>: png file results/plot.png has been created",
                  **PLOT)]


def take(out: Path) -> list[Path]:
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(tmp, "screenshots") as url:
        asyncio.run(db.migrate(url))
        server = LiveServer(make_settings(url, end_grace_seconds=0.3)).start()
        wf = uuid.uuid4()
        tok = server.ingest_token

        posted = 0

        def post(events: list[dict[str, Any]]) -> None:
            nonlocal posted
            post_batch(server.url, tok, events).raise_for_status()
            posted += len(events)

        def status(value: str, **job: str) -> None:
            body = {"job_id": job["job"], "step": job["step"]} if job else {}
            post_status(server.url, tok, wf, value, **body).raise_for_status()

        status("running")
        post([engine(wf, "Workflow engine started (serial), workflow 'roofit'"),
              engine(wf, "Publishing step:gendata to job controller")])
        status("running", **GEN)
        post(gendata(wf))
        status("finished", **GEN)
        post([engine(wf, "Publishing step:fitdata to job controller")])
        status("running", **FIT)
        post(fitdata(wf, 0))
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"{server.url}/?workflow={wf}&timestamps")
            widget = "document.querySelector('reana-live-log')"
            page.wait_for_function(f"{widget}?.state === 'live' && {widget}.lineCount >= {posted}")
            page.wait_for_timeout(400)
            shots.append(out / "live.png")
            page.screenshot(path=shots[-1])

            server.stop()
            page.wait_for_function(f"{widget}.state === 'reconnecting'")
            page.wait_for_timeout(400)
            shots.append(out / "reconnecting.png")
            page.screenshot(path=shots[-1])

            server.start()
            post(fitdata(wf, 1))
            status("finished", **FIT)
            post([engine(wf, "Publishing step:plot to job controller")])
            status("running", **PLOT)
            post(plot(wf))
            status("finished", **PLOT)
            post([engine(wf, "Workflow finished. Publishing status.")])
            status("finished")
            page.wait_for_function(f"{widget}.state === 'ended' && {widget}.lineCount >= {posted}")
            page.wait_for_timeout(400)
            shots.append(out / "ended.png")
            page.screenshot(path=shots[-1])

            log = page.locator("reana-live-log")
            log.get_by_role("tab", name=re.compile("^fitdata")).click()
            log.get_by_role("searchbox").fill("migrad")
            log.get_by_role("searchbox").press("Enter")
            page.wait_for_timeout(400)
            shots.append(out / "search.png")
            page.screenshot(path=shots[-1])
            browser.close()
        server.stop()
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    problem = chromium_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    for path in take(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
