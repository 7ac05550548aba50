"""Driving Debian's Chromium with Playwright (never a downloaded browser), for the widget's
browser tests, its benchmark (reana_log_sse/bench/widget.py) and the demo screenshots
(web_widget/screenshots.py)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("REANA_LOG_SSE_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return (f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set "
                "REANA_LOG_SSE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)


# Installed before any page script: the longest main-thread task (Long Tasks API) and the
# longest gap between two animation frames, from the moment the page starts.
PERF_PROBE = """
window.__perf = {longestTask: 0, longTasks: 0, maxFrameGap: 0, frames: 0};
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      __perf.longTasks++;
      __perf.longestTask = Math.max(__perf.longestTask, e.duration);
    }
  }).observe({type: "longtask", buffered: true});
} catch (e) {}
(() => {
  let prev = 0;
  const tick = (t) => {
    if (prev && !document.hidden) __perf.maxFrameGap = Math.max(__perf.maxFrameGap, t - prev);
    prev = t;
    __perf.frames++;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


def seed_lines(server: Any, workflow_id: uuid.UUID, n: int, jobs: int = 4) -> None:
    """Store n lines for a workflow straight in the database (ingesting them through the
    HTTP endpoint is the ingest benchmark's business, and slow on a small machine). Ids
    1..n, timestamps within the last few minutes, a mix of jobs, ANSI and stderr."""
    server.sql(
        "INSERT INTO workflows (workflow_id, last_seq, status, status_at, ts_first, ts_last) "
        "VALUES (%s, %s, 'running', now(), '-infinity', 'infinity')",  # lines of any day
        (workflow_id, n))
    server.sql(
        """
        INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step, pod,
                               container, stream, message)
        SELECT %(wf)s, g, now() - interval '300 seconds' + g * interval '1 millisecond',
               gen_random_uuid(), 'job', 'reana-run-job-' || (g %% %(jobs)s),
               'step' || (g %% %(jobs)s), 'reana-run-job-' || (g %% %(jobs)s) || '-abcde',
               'job', CASE WHEN g %% 97 = 0 THEN 'stderr' ELSE 'stdout' END,
               'step' || (g %% %(jobs)s) || ': processing event ' || g || ' of '
               || %(n)s || E' \\x1b[32mok\\x1b[0m pt=' || (g * 7919 %% 1000) / 10.0
               || ' eta=' || (g %% 61) || ' phi=' || (g %% 314) / 100.0
        FROM generate_series(1, %(n)s) AS g
        """,
        {"wf": workflow_id, "n": n, "jobs": jobs})


def perf(page: Any) -> dict[str, float]:
    return page.evaluate("({...window.__perf})")
