"""SSE followers: each follows one workflow's stream, records the delivery latency of
every line (`sent_at` in the message -> event parsed here) as the custom request
"SSE / delivery latency" (in ms, in the response time columns), and reconnects with
Last-Event-ID, checking that ids only grow (a repeated or older id is reported as a
failure "SSE / order"). A new follower starts live (`tail=0`).

    locust -f locustfiles/follow.py --headless -u 1000 -r 100 -t 5m -H http://127.0.0.1:8000 \\
        --workflows 100 [--read-token T] [--reconnect-after 60]

Run together with ingest.py (`-f locustfiles/ingest.py,locustfiles/follow.py`) or on its
own against a cluster that already receives logs.
"""

from __future__ import annotations

import itertools
import re
import time

from _common import workflow_ids
from locust import HttpUser, constant, task

SENT_AT = re.compile(r"sent_at=(\d+\.\d+)")


class SSEFollower(HttpUser):
    """One browser tab or `reana-log-sse logs --follow` on one workflow."""

    weight = 10
    wait_time = constant(1)  # before reconnecting
    _ids = itertools.count()

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.options = o
        workflows = workflow_ids(o)
        self.workflow = workflows[next(self._ids) % len(workflows)]
        self.last_id: int | None = None

    def _report(self, name: str, ms: float, length: int = 0, error: str | None = None) -> None:
        self.environment.events.request.fire(
            request_type="SSE", name=name, response_time=ms, response_length=length,
            exception=Exception(error) if error else None, context={}, response=None)

    @task
    def follow(self) -> None:
        o = self.options
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        query = ""
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        else:
            query = "?tail=0"  # a new follower starts live, as `logs --follow` does
        if o.read_token:
            headers["Authorization"] = f"Bearer {o.read_token}"
        path = f"/api/workflows/{self.workflow}/logs/stream{query}"
        with self.client.get(path, headers=headers, stream=True, catch_response=True,
                             name="GET /logs/stream", timeout=(10, 60)) as r:
            if r.status_code == 404:
                # no line of this workflow stored yet: not an error, wait and retry
                r.request_meta["name"] = "GET /logs/stream (unknown yet)"
                r.success()
                return
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            r.success()
        try:
            self._read(r, time.monotonic())
        finally:
            r.close()

    def _read(self, response, started: float) -> None:  # type: ignore[no-untyped-def]
        reconnect_after = self.options.reconnect_after
        buf, event, data, ident = b"", "", [], None
        for chunk in response.iter_content(chunk_size=None):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            now = time.time()
            for raw in lines:
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                if line == "":
                    if event == "log" or (data and event == ""):
                        self._log(ident, "\n".join(data), now)
                    elif event == "end":
                        return
                    event, data, ident = "", [], None
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id":
                        ident = value
            if reconnect_after and time.monotonic() - started > reconnect_after:
                self._report("reconnect (Last-Event-ID)", 0)
                return

    def _log(self, ident: str | None, data: str, now: float) -> None:
        if ident is not None and ident.isdigit():
            seq = int(ident)
            if self.last_id is not None and seq <= self.last_id:
                self._report("order", 0, error=f"id {seq} after {self.last_id}")
            self.last_id = seq
        m = SENT_AT.search(data)  # the message is inside the JSON; no need to decode it
        if m:
            latency_ms = max(0.0, (now - float(m.group(1))) * 1000)
            self._report("delivery latency", latency_ms, len(data))
