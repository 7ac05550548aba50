"""How smooth is <reana-live-log> with a big log? Prints the longest main-thread task and the
longest gap between animation frames while the lines arrive.

    python -m reana_log_sse.bench.widget [--lines 200000] [--live 10000] [--raw-eventsource]

Runs the real service (embedded PostgreSQL in a temporary directory) and Debian's Chromium
(tests/browser.py). Phases:
  catch-up  --lines stored lines, then the demo page opens the workflow and loads them all
  live      --live lines posted through the ingest endpoint, in batches of 500, while the
            page follows them
  raw       (--raw-eventsource) a bare EventSource reading the same --lines, no widget: what
            the browser's own event dispatch costs, for comparison
The numbers depend on the machine (and on the service sharing it); the browser test
tests/test_widget_browser.py::test_widget_loads_200k_lines records the same measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from reana_log_sse.store import db
from reana_log_sse.store.embedded import embedded_postgres
from tests.browser import PERF_PROBE, chromium_problem, launch, perf, seed_lines
from tests.conftest import LiveServer, make_settings
from tests.helpers import event, post_batch

WIDGET = "document.querySelector('reana-live-log')"
RESET = "Object.assign(window.__perf, {longestTask: 0, longTasks: 0, maxFrameGap: 0, frames: 0})"


def summary(phase: str, lines: int, seconds: float, measured: dict[str, float]) -> dict[str, Any]:
    return {"phase": phase, "lines": lines, "seconds": round(seconds, 2),
            "lines_per_second": round(lines / seconds) if seconds else None,
            "longest_task_ms": round(measured["longestTask"], 1),
            "long_tasks": measured["longTasks"],
            "max_frame_gap_ms": round(measured["maxFrameGap"], 1),
            "frames": measured["frames"]}


def run(lines: int, live: int, raw: bool) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    results = []
    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(tmp, "bench_widget") as url:
        asyncio.run(db.migrate(url))
        server = LiveServer(make_settings(url)).start()
        wf = uuid.uuid4()
        seed_lines(server, wf, lines)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(PERF_PROBE)

            t0 = time.monotonic()
            page.goto(f"{server.url}/?workflow={wf}")
            page.wait_for_function(f"{WIDGET}?.lineCount >= {lines}", timeout=600_000,
                                   polling=100)
            results.append(summary("catch-up", lines, time.monotonic() - t0, perf(page)))
            print(json.dumps(results[-1]), flush=True)

            if live:
                page.wait_for_function(f"{WIDGET}.state === 'live'")
                page.evaluate(RESET)
                t0 = time.monotonic()

                def post_live() -> None:
                    for start in range(0, live, 500):
                        batch = [event(wf, f"live line {i} \x1b[36mcyan\x1b[0m",
                                       job=f"reana-run-job-{i % 4}", step=f"step{i % 4}")
                                 for i in range(start, min(live, start + 500))]
                        post_batch(server.url, server.ingest_token, batch).raise_for_status()

                poster = threading.Thread(target=post_live)
                poster.start()
                page.wait_for_function(f"{WIDGET}.lineCount >= {lines + live}",
                                       timeout=600_000, polling=100)
                poster.join()
                results.append(summary("live", live, time.monotonic() - t0, perf(page)))
                print(json.dumps(results[-1]), flush=True)

            if raw:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.add_init_script(PERF_PROBE)
                page.goto(f"{server.url}/healthz")
                t0 = time.monotonic()
                page.evaluate(f"""() => {{
                    window.received = 0;
                    const es = new EventSource('/api/workflows/{wf}/logs/stream');
                    es.addEventListener('log', (e) => {{ JSON.parse(e.data); window.received++; }});
                }}""")
                page.wait_for_function(f"window.received >= {lines}", timeout=600_000,
                                       polling=100)
                results.append(summary("raw EventSource", lines, time.monotonic() - t0,
                                       perf(page)))
                print(json.dumps(results[-1]), flush=True)
            browser.close()
        server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--live", type=int, default=10_000)
    parser.add_argument("--raw-eventsource", action="store_true")
    args = parser.parse_args()
    problem = chromium_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    results = run(args.lines, args.live, args.raw_eventsource)
    print()
    for r in results:
        print(f"{r['phase']:>16}: {r['lines']:,} lines in {r['seconds']} s; longest task "
              f"{r['longest_task_ms']} ms ({r['long_tasks']} over 50 ms); longest frame gap "
              f"{r['max_frame_gap_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
