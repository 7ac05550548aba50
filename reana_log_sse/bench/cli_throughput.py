"""How many lines a second `reana-log-sse logs --follow` writes to a pipe.

    python -m reana_log_sse.bench.cli_throughput [--lines 300000] [--database-url URL]

Two measurements, each the real CLI in its own process, its stdout a pipe read here:

- canned: a tiny HTTP server here answers the stream with N pre-encoded `event: log`
  frames then `end`, so only the CLI (HTTP, SSE parsing, formatting, writing) is measured;
- service: the real service (uvicorn + PostgreSQL, embedded unless --database-url) with N
  stored lines of a finished workflow, so the CLI follows a catch-up from the database.

The rate is taken between the first and the last line read from the pipe, so the
interpreter's start-up is not counted; the wall time including it is printed too.
Target (issue 6): at least 50,000 lines/s.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import httpx
import orjson

MESSAGE = "fitdata: processing chunk {i} of the input sample, 42% done"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _frames(workflow_id: str, n: int) -> bytes:
    parts = [b"retry: 2000\n\n"]
    for i in range(1, n + 1):
        data = orjson.dumps({"id": i, "workflow_id": workflow_id, "kind": "job",
                             "job_id": "reana-run-job-1", "step": "fitdata", "stream": "stdout",
                             "timestamp": "2026-11-25T12:00:00.123456Z",
                             "message": MESSAGE.format(i=i)})
        parts.append(b"event: log\nid: %d\ndata: %s\n\n" % (i, data))
    parts.append(b'event: end\ndata: {"workflow_id": "%s", "status": "finished"}\n\n'
                 % workflow_id.encode())
    return b"".join(parts)


def run_cli(server: str, workflow_id: str, *args: str) -> dict[str, float]:
    """The CLI with its stdout a pipe; returns lines, seconds and lines/s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reana_log_sse", "logs", workflow_id, "--follow",
         "--server", server, *args],
        env=env, stdout=subprocess.PIPE, bufsize=0,
    )
    assert proc.stdout is not None
    lines, first, last = 0, 0.0, 0.0
    while True:
        chunk = proc.stdout.read(1 << 20)
        if not chunk:
            break
        now = time.perf_counter()
        if not first:
            first = now
        last = now
        lines += chunk.count(b"\n")
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the CLI failed"
    proc.returncode = 0
    wall = time.perf_counter() - started
    return {"lines": lines, "wall_s": wall, "stream_s": last - first,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "lines_per_s": (lines - 1) / max(last - first, 1e-9)}


def canned(n: int, *args: str) -> dict[str, float]:
    wf = str(uuid.uuid4())
    body = _frames(wf, n)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            view = memoryview(body)
            for i in range(0, len(body), 1 << 16):
                self.wfile.write(view[i:i + (1 << 16)])

    port = _free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        return run_cli(f"http://127.0.0.1:{port}", wf, *args)
    finally:
        httpd.shutdown()
        httpd.server_close()


def service(n: int, database_url: str | None, *args: str) -> dict[str, float]:
    """`reana-log-sse serve` in its own process (embedded PostgreSQL unless a URL)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    env.update(REANA_LOG_SSE_INGEST_TOKENS="bench", REANA_LOG_SSE_END_GRACE_SECONDS="0",
               REANA_LOG_SSE_LOG_LEVEL="warning")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "reana_log_sse", "serve", "--port", str(port),
               "--data-dir", tmp]
        if database_url:
            cmd += ["--database-url", database_url]
        proc = subprocess.Popen(cmd, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the service did not start")
                time.sleep(0.1)
            return _service(n, base, *args)
        finally:
            proc.terminate()
            proc.wait(60)


def _service(n: int, base: str, *args: str) -> dict[str, float]:
    wf = str(uuid.uuid4())
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json",
               "Content-Encoding": "gzip"}
    ts = "2026-11-25T12:00:00.{:09d}Z"
    with httpx.Client(base_url=base, timeout=120) as client:
        for start in range(0, n, 10_000):
            batch = [{"workflow_id": wf, "kind": "job", "job_id": "reana-run-job-1",
                      "step": "fitdata", "stream": "stdout", "timestamp": ts.format(i),
                      "message": MESSAGE.format(i=i)} for i in range(start, min(n, start + 10_000))]
            r = client.post("/ingest/vector", content=gzip.compress(orjson.dumps(batch)),
                            headers=headers)
            r.raise_for_status()
        client.post(f"/api/workflows/{wf}/status", json={"status": "finished"},
                    headers={"Authorization": "Bearer bench"}).raise_for_status()
    return run_cli(base, wf, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--skip-service", action="store_true")
    opts = parser.parse_args()
    rows = []
    for label, fn in (("canned", lambda *a: canned(opts.lines, *a)),
                      ("service", lambda *a: service(opts.lines, opts.database_url, *a))):
        if label == "service" and opts.skip_service:
            continue
        for mode, args in (("--json", ("--json",)), ("human", ())):
            result = fn(*args)
            assert result["lines"] >= opts.lines, result
            rows.append((label, mode, result))
            print(f"{label:8} {mode:7} {result['lines']:>9,} lines  "
                  f"{result['lines_per_s']:>10,.0f} lines/s  "
                  f"(stream {result['stream_s']:.2f} s, wall {result['wall_s']:.2f} s, "
                  f"CLI CPU {result['cpu_s']:.2f} s)",
                  flush=True)
    cli = [r for label, _, r in rows if label == "canned"]
    print("the CLI itself (canned), target >= 50,000 lines/s:",
          "met" if all(r["lines_per_s"] >= 50_000 for r in cli) else "NOT met")
    print("(service rows: end to end; where the CLI's CPU time is well below the stream "
          "time, the service's catch-up is what limits them)")


if __name__ == "__main__":
    main()
