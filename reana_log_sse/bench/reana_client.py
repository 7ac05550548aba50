"""REANA's own `reana-client logs --follow`: line latency from commit, three ways, in one run.

    python -m reana_log_sse.bench.reana_client [--lines 40] [--gap 0.5] [--interval 10]
    reana-log-sse bench --only reana-client      # the same, as row 9 of the bench's table

From a checkout: it uses tests/ (the fake reana-server, the reana-client venv, made once).
Runs the real service in this process (auth=reana; on the bench's database, else an
embedded PostgreSQL in a temporary directory) and the fake reana-server, then follows one
running job with, side by side:

  patched   the real reana-client 0.95.0a6 (PyPI), patched by
            integrations/reana-client/apply.py: `logs --follow` over the stream
  polled    the same client against reana-server alone (no stream, so the patch's fallback:
            REANA's own `follow_workflow_logs` loop, unchanged, every --interval s; its
            logs answer is this service's, as with `logs-route`)
  ours      `reana-log-sse logs --follow`

while --lines lines are posted, one batch each, --gap s apart. A line's latency is from
the time the service takes just before its COMMIT (carried by its NOTIFY, read here on a
LISTEN connection: harness.CommitLog) to the moment the follower's process writes it to
its stdout pipe. All three followers share the 2 cores with the service and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from reana_log_sse.bench.harness import CommitLog
from reana_log_sse.store import db
from reana_log_sse.store.embedded import embedded_postgres
from tests.conftest import LiveServer, make_settings
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer
from tests.helpers import event, post_batch, post_status
from tests.reana_client import configure_reana_client, reana_client_executable

VERSION = "0.95.0a6"
APPLY = Path(__file__).resolve().parents[2] / "integrations" / "reana-client" / "apply.py"


class Follower:
    """A follower process; when each `lat <i>` line first reached our end of its pipe."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.seen: dict[int, float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.time()
            head, _, number = raw.rstrip("\n").rpartition(" ")
            if head.endswith("lat") and number.lstrip("-").isdigit():
                self.seen.setdefault(int(number), now)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _jwt() -> str:
    return "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9." + uuid.uuid4().hex


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def summary(name: str, lat_s: list[float], lines: int) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in lat_s)
    pick = (lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)) if ms else (
        lambda q: None)
    return {"follower": name, "lines": len(ms), "of": lines,
            "median_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": pick(0.99), "max_ms": round(ms[-1], 1) if ms else None}


def run(lines: int, gap: float, interval: int, database_url: str | None = None
        ) -> list[dict[str, Any]]:
    exe = reana_client_executable(VERSION)
    subprocess.run([sys.executable, str(APPLY), "--venv", str(Path(exe).parent.parent)],
                   check=True, capture_output=True, timeout=300)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = database_url or stack.enter_context(
            embedded_postgres(tmp, "bench_reana_client"))
        if database_url is None:
            asyncio.run(db.migrate(url))
        return _measure(exe, url, Path(tmp), lines, gap, interval)


def _measure(exe: str, url: str, home: Path, lines: int, gap: float, interval: int
             ) -> list[dict[str, Any]]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    reana = FakeReanaServer().start()
    reana.trusted_hosts.add("127.0.0.1")  # the polled client reaches it by address
    server = LiveServer(make_settings(url, auth="reana", reana_server_url=reana.url,
                                      reana_server_host=REANA_HOSTNAME)).start()
    reana.logs_backend = server.url
    commits = CommitLog(url)
    asyncio.run_coroutine_threadsafe(commits.__aenter__(), loop).result(30)
    followers: dict[str, Follower] = {}
    try:
        token, user = _jwt(), str(uuid.uuid4())
        reana.users[token] = user
        wf = reana.add_workflow(user, "latency.1")
        job = wf.add_job("fitdata")
        tok = server.ingest_token

        def post(message: str) -> None:
            r = post_batch(server.url, tok, [event(wf.id, message, step="fitdata",
                                                   job=job.backend_job_id)])
            assert r.status_code == 200, r.text

        post_status(server.url, tok, wf.id, "running")
        post_status(server.url, tok, wf.id, "running", job_id=job.backend_job_id,
                    step="fitdata")
        client = [exe, "logs", "-w", wf.name, "--follow", "--filter", "step=fitdata",
                  "-i", str(interval)]
        ours = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
        ours.update(REANA_ACCESS_TOKEN=token, REANA_LOG_SSE_URL=server.url)
        followers = {
            "reana-client, patched (SSE)": Follower(client, configure_reana_client(
                exe, home / "patched", server_url=server.url, token=token)),
            f"reana-client, REANA's {interval} s poll": Follower(
                client, configure_reana_client(exe, home / "polled",
                                               server_url=reana.url, token=token)),
            "reana-log-sse logs --follow": Follower(
                [sys.executable, "-m", "reana_log_sse", "logs", wf.name, "--follow",
                 "--job", "fitdata"], ours),
        }
        post("lat -1")  # every follower is reading before the measured lines
        if not _wait(lambda: all(-1 in f.seen for f in followers.values()),
                     interval + 60):
            raise RuntimeError("a follower never printed the first line")
        t0 = time.time()
        for i in range(lines):
            post(f"lat {i}")
            time.sleep(gap)
        t1 = time.time()
        _wait(lambda: all(len(f.seen) > lines for f in followers.values()),
              interval + 30)
    finally:
        for f in followers.values():
            f.stop()
        asyncio.run_coroutine_threadsafe(commits.__aexit__(None, None, None),
                                         loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        server.stop()
        reana.stop()
    times = [t for t in commits.times.get(wf.id, []) if t0 <= t <= t1]
    return [summary(name, [f.seen[i] - t for i, t in enumerate(times) if i in f.seen],
                    lines) for name, f in followers.items()]


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| follower | lines | median | p99 | max |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['follower']} | {r['lines']}/{r['of']} | {r['median_ms']} ms | "
                   f"{r['p99_ms']} ms | {r['max_ms']} ms |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=40, help="measured lines")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between lines")
    parser.add_argument("--interval", type=int, default=10,
                        help="the polled client's -i (REANA's default: 10)")
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args(argv)
    rows = run(args.lines, args.gap, args.interval)
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
