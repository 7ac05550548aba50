"""POST /ingest/vector: what Vector's http sink sends, and what it must be answered."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid

import httpx
import psycopg
import zstandard

from reana_log_sse.store.db import NOTIFY_CHANNEL
from tests.helpers import VECTOR_HEADERS, event, post_batch, vector_body


def _post(server, body: bytes, **headers: str) -> httpx.Response:
    hdrs = {**VECTOR_HEADERS, "Authorization": f"Bearer {server.ingest_token}", **headers}
    return httpx.post(f"{server.url}/ingest/vector", content=body, headers=hdrs, timeout=30)


def test_ingest_same_batch_twice_stores_once_and_reports_duplicates(live_server):
    wf = uuid.uuid4()
    batch = [event(wf, f"line {i}") for i in range(50)]
    first = post_batch(live_server.url, live_server.ingest_token, batch)
    second = post_batch(live_server.url, live_server.ingest_token, batch)
    assert first.json() == {"accepted": 50, "duplicates": 0, "rejected": 0}
    assert second.json() == {"accepted": 0, "duplicates": 50, "rejected": 0}
    rows = live_server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s", (wf,))
    assert rows == [(50,)]


def test_ingest_identical_lines_in_one_batch_are_all_kept(live_server):
    wf = uuid.uuid4()
    ts = event(wf, "x")["timestamp"]
    batch = [event(wf, "progress 50%", timestamp=ts) for _ in range(3)]
    assert post_batch(live_server.url, live_server.ingest_token, batch).json()["accepted"] == 3
    assert post_batch(live_server.url, live_server.ingest_token, batch).json()["duplicates"] == 3


def test_ingest_retry_after_midnight_lands_in_the_same_partition(server_factory):
    # The first attempt is received on day D, the retry on D+1 (another "today"): the
    # line's own timestamp picks the partition, so the retry still meets the original.
    day = dt.datetime.now(dt.UTC).date()
    ts = (dt.datetime.combine(day, dt.time(23, 59, 59, 999999), dt.UTC)
          .strftime("%Y-%m-%dT%H:%M:%S.%f123Z"))
    wf = uuid.uuid4()
    batch = [event(wf, f"late line {i}", timestamp=ts) for i in range(5)]
    before = server_factory(today=lambda: day)
    assert post_batch(before.url, before.ingest_token, batch).json()["accepted"] == 5
    before.stop()
    after = server_factory(today=lambda: day + dt.timedelta(days=1))
    assert post_batch(after.url, after.ingest_token, batch).json() == {
        "accepted": 0, "duplicates": 5, "rejected": 0}
    parts = after.sql("SELECT DISTINCT tableoid::regclass::text FROM log_lines"
                      " WHERE workflow_id = %s", (wf,))
    assert parts == [(f"log_lines_p{day:%Y%m%d}",)]


def test_ingest_accepts_ndjson_zstd_and_plain(live_server):
    wf = uuid.uuid4()
    ndjson = b"\n".join(json.dumps(event(wf, f"nd {i}")).encode() for i in range(3))
    r1 = _post(live_server, zstandard.ZstdCompressor().compress(ndjson),
               **{"Content-Type": "application/x-ndjson", "Content-Encoding": "zstd"})
    r2 = _post(live_server, json.dumps([event(wf, "plain")]).encode(),
               **{"Content-Encoding": "identity"})
    assert (r1.status_code, r1.json()["accepted"]) == (200, 3)
    assert (r2.status_code, r2.json()["accepted"]) == (200, 1)


def test_ingest_rejects_what_can_never_succeed(live_server):
    wf = uuid.uuid4()
    # not JSON at all: read as one NDJSON line, kept as a rejected event (Vector drops a 400)
    garbage = _post(live_server, gzip.compress(b"this is not json"))
    assert garbage.json() == {"accepted": 0, "duplicates": 0, "rejected": 1}
    assert _post(live_server, gzip.compress(b"[this is not json")).json()["rejected"] == 1
    assert _post(live_server, b"\x1f\x8b\x08\x00garbage").status_code == 400
    bad_token = _post(live_server, vector_body([event(wf, "x")]),
                      Authorization="Bearer wrong")
    assert bad_token.status_code == 401
    no_token = httpx.post(f"{live_server.url}/ingest/vector", content=vector_body([]),
                          headers=VECTOR_HEADERS)
    assert no_token.status_code == 401
    assert live_server.sql("SELECT count(*) FROM log_lines") == [(0,)]


def test_ingest_body_over_the_cap_is_413_after_decompression(server_factory):
    server = server_factory(max_body_bytes=100_000)
    wf = uuid.uuid4()
    # 1 MB of JSON that compresses to a few KB: the cap applies to what it inflates to
    events = [event(wf, "a" * 1000) for _ in range(1000)]
    body = vector_body(events)
    assert len(body) < 100_000
    response = _post(server, body)
    assert response.status_code == 413
    assert server.sql("SELECT count(*) FROM log_lines") == [(0,)]


def test_ingest_default_cap_admits_a_full_default_vector_batch(live_server):
    wf = uuid.uuid4()
    # Vector's default batch.max_bytes is 10,000,000 bytes of encoded events
    events, size = [], 2
    while size < 9_900_000:
        e = event(wf, "x" * 2000 + str(len(events)))
        size += len(json.dumps(e)) + 1
        events.append(e)
    response = post_batch(live_server.url, live_server.ingest_token, events)
    assert response.status_code == 200
    assert response.json()["accepted"] == len(events)


def test_ingest_keeps_invalid_events_with_a_reason(live_server):
    wf = uuid.uuid4()
    batch = [event(wf, f"ok {i}") for i in range(99)]
    batch.insert(42, {"workflow_id": "not-a-uuid", "stream": "stdout", "message": "bad",
                      "timestamp": "2026-11-25T00:00:00Z"})
    response = post_batch(live_server.url, live_server.ingest_token, batch)
    assert response.json() == {"accepted": 99, "duplicates": 0, "rejected": 1}
    [(reason, raw)] = live_server.sql("SELECT reason, event FROM rejected_events")
    assert "workflow_id" in reason
    assert json.loads(raw)["message"] == "bad"
    metrics = live_server.get("/metrics").text
    assert 'reana_log_sse_rejected_events_total{reason="workflow_id"} 1.0' in metrics


def test_ingest_truncates_a_long_line_with_a_marker(live_server):
    wf = uuid.uuid4()
    response = post_batch(live_server.url, live_server.ingest_token,
                          [event(wf, "é" * (1024 * 1024))])
    assert response.json()["accepted"] == 1
    [(length, truncated)] = live_server.sql(
        "SELECT octet_length(message), truncated FROM log_lines WHERE workflow_id = %s", (wf,))
    assert truncated is True
    assert 64 * 1024 - 1 <= length <= 64 * 1024
    read = live_server.get(f"/api/workflows/{wf}/logs").json()
    assert read["lines"][0]["truncated"] is True


def test_ingest_replaces_invalid_utf8_instead_of_failing(live_server):
    wf = uuid.uuid4()
    raw = json.dumps([event(wf, "MARK")]).encode().replace(b"MARK", b"bad \xff\xfe bytes \\u0000")
    response = _post(live_server, gzip.compress(raw))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [(message,)] = live_server.sql("SELECT message FROM log_lines WHERE workflow_id = %s", (wf,))
    assert message == "bad \ufffd\ufffd bytes \ufffd"


def test_ingest_notifies_once_per_committed_batch(live_server):
    wf = uuid.uuid4()
    with psycopg.connect(live_server.database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        post_batch(live_server.url, live_server.ingest_token,
                   [event(wf, f"l{i}") for i in range(500)])
        marker = uuid.uuid4()  # notifies arrive in commit order: all of wf's come before
        post_batch(live_server.url, live_server.ingest_token, [event(marker, "after")])
        payloads = []
        for n in listener.notifies(timeout=60):
            payloads.append(json.loads(n.payload)["w"])
            if str(marker) in payloads[-1]:
                break
    assert payloads == [{str(wf): 500}, {str(marker): 1}]


def test_ingest_answers_503_with_retry_after_when_the_database_is_down(live_server):
    wf = uuid.uuid4()
    with live_server.database_down():
        response = post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert live_server.get("/readyz").status_code == 503
    # Vector retries the same batch: it is stored once the database is back
    response = post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
    assert response.status_code == 200
    assert response.json()["accepted"] == 1


def test_ingest_partly_stored_batch_stores_only_the_new_lines(live_server):
    # the new lines go straight into log_lines by COPY; a batch with lines stored already
    # takes the staged path, which skips exactly those
    wf = uuid.uuid4()
    old = [event(wf, f"old {i}") for i in range(5)]
    new = [event(wf, f"new {i}") for i in range(3)]
    assert post_batch(live_server.url, live_server.ingest_token, old).json()["accepted"] == 5
    assert post_batch(live_server.url, live_server.ingest_token, new + old).json() == {
        "accepted": 3, "duplicates": 5, "rejected": 0}
    rows = live_server.sql("SELECT seq, message FROM log_lines WHERE workflow_id = %s"
                           " ORDER BY seq", (wf,))
    assert [m for _, m in rows] == [e["message"] for e in old + new]
    assert [s for s, _ in rows][:5] == [1, 2, 3, 4, 5] and min(s for s, _ in rows[5:]) > 5
