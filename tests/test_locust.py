"""locustfiles/ run headless against `reana-log-sse serve` for 30 s in a test-size
configuration: senders post, followers follow, reconnect with Last-Event-ID, and report
the custom delivery latency metric. Times are reported, never asserted."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import INGEST_TOKEN, free_port

ROOT = Path(__file__).resolve().parent.parent

# Never import locust here: it monkey-patches the whole process with gevent (threads
# included), which breaks every later test. Locust runs in its own process. CI installs
# the test extras, locust included, so it never skips there.
if not os.environ.get("CI") and importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[test]')", allow_module_level=True)


@pytest.fixture
def served(database_url: str):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
    env.update(REANA_LOG_SSE_INGEST_TOKENS=INGEST_TOKEN, REANA_LOG_SSE_AUTH="none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reana_log_sse", "serve", "--port", str(port),
         "--database-url", database_url, "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "serve exited"
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve not ready in 60 s"
        time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_locust_headless_senders_and_followers_report_delivery_latency(served, tmp_path):
    prefix = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "locustfiles/ingest.py,locustfiles/follow.py",
         "--headless", "--users", "5", "--spawn-rate", "5", "--run-time", "30s",
         "--host", served, "--ingest-token", INGEST_TOKEN, "--senders", "1",
         "--workflows", "2", "--batch-lines", "20", "--batch-interval", "0.5",
         "--reconnect-after", "8", "--csv", str(prefix), "--only-summary"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0
    with open(f"{prefix}_stats.csv", newline="") as f:
        stats = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    latency = stats[("SSE", "delivery latency")]
    assert int(latency["Request Count"]) > 0 and int(latency["Failure Count"]) == 0
    assert float(latency["99%"]) > 0
    ingest = stats[("POST", "POST /ingest/vector")]
    assert int(ingest["Request Count"]) > 0 and int(ingest["Failure Count"]) == 0
    assert int(stats[("SSE", "reconnect (Last-Event-ID)")]["Request Count"]) > 0
    assert ("SSE", "order") not in stats  # resuming never repeated nor reordered an id
    assert "delivery latency" in proc.stderr + proc.stdout
