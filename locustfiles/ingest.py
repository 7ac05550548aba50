"""Vector-like senders: gzip'd JSON batches of compact events, a bearer token, and
Vector's retry rules (408, 429 and 5xx except 501 are retried with backoff; any other
4xx drops the batch).

    locust -f locustfiles/ingest.py --headless -u 4 -r 4 -t 5m -H http://127.0.0.1:8000 \\
        --ingest-token "$TOKEN" --workflows 100 --batch-lines 1000 --batch-interval 1

Each message carries `sent_at=<epoch seconds>`: follow.py turns it into the delivery
latency (the clocks of the load machines must agree, e.g. through NTP).
"""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
import random
import time

import gevent
from _common import workflow_ids
from locust import FastHttpUser, events, task

RETRY = {408, 429}


@events.init.add_listener
def _counts(environment, **_) -> None:  # type: ignore[no-untyped-def]
    if environment.parsed_options is not None:
        VectorSender.fixed_count = max(0, environment.parsed_options.senders)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class VectorSender(FastHttpUser):
    """One Vector agent: every --batch-interval seconds, one batch of --batch-lines lines
    spread over the workflows' jobs."""

    fixed_count = 1
    _ids = itertools.count()

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.options = o
        self.workflows = workflow_ids(o)
        self.sender = next(self._ids)
        self.seq = 0
        self.next_at = time.monotonic() + random.uniform(0, o.batch_interval)

    def wait_time(self) -> float:
        self.next_at += self.options.batch_interval
        return max(0.0, self.next_at - time.monotonic())

    def batch(self) -> bytes:
        o, out, now = self.options, [], time.time()
        ts = _now()
        for _ in range(o.batch_lines):
            self.seq += 1
            wf = self.workflows[self.seq % len(self.workflows)]
            job = f"reana-run-job-{wf[:8]}-{self.seq % 3}"
            out.append({
                "workflow_id": wf, "kind": "job", "job_id": job, "step": f"step{self.seq % 3}",
                "pod": f"{job}-locust", "container": "job", "stream": "stdout",
                "timestamp": ts, "collected_at": ts,
                "message": f"locust sender={self.sender} seq={self.seq} sent_at={now:.6f} "
                           "INFO processing event chunk, chi2/ndf = 1.02",
            })
        return gzip.compress(json.dumps(out).encode(), compresslevel=o.gzip_level)

    @task
    def send(self) -> None:
        o = self.options
        body = self.batch()
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                   "Authorization": f"Bearer {o.ingest_token}",
                   "User-Agent": "Vector/0.51.0 (locust)"}
        for attempt in range(o.max_retries + 1):
            with self.client.post("/ingest/vector", data=body, headers=headers,
                                  name="POST /ingest/vector", catch_response=True) as r:
                code = r.status_code
                if code == 200:
                    r.success()
                    return
                retry = code in RETRY or code == 0 or (code >= 500 and code != 501)
                r.failure(f"HTTP {code}: {'retrying' if retry else 'batch dropped'}")
            if not retry or attempt == o.max_retries:
                return
            gevent.sleep(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
