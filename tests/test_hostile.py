"""Hostile input (issue 11): every class answers without a 5xx, and loses no valid line."""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
import zstandard

from tests.helpers import VECTOR_HEADERS, event, post_batch, post_status


def _post(server, body: bytes, **headers: str) -> httpx.Response:
    hdrs = {**VECTOR_HEADERS, "Authorization": f"Bearer {server.ingest_token}", **headers}
    return httpx.post(f"{server.url}/ingest/vector", content=body, headers=hdrs, timeout=60)


def _ndjson(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def _status(server, path: str, params: dict | None = None, **kwargs) -> tuple[int, str]:
    """A GET's status and the start of its body, without reading a stream to its end."""
    with httpx.stream("GET", server.url + path, params=params, timeout=30, **kwargs) as r:
        text = "" if r.status_code == 200 else r.read().decode()[:300]
        return r.status_code, text


def _count(server, wf: uuid.UUID) -> int:
    return server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s", (wf,))[0][0]


# -- 1. NUL bytes ------------------------------------------------------------------------

def test_hostile_nul_in_any_event_field_is_replaced_and_the_batch_stored(live_server):
    wf = uuid.uuid4()
    batch = [event(wf, "ok before")]
    for name in ("job_id", "step", "pod", "container"):
        batch.append({**event(wf, f"nul in {name}"), name: "a\x00b"})
    batch.append({**event(wf, "nul in an extra field"), "extra\x00": "x\x00"})
    batch.append({**event(wf, "bad"), "workflow_id": "\x00"})  # rejected, kept with NUL
    batch.append(event(wf, "ok after"))
    response = post_batch(live_server.url, live_server.ingest_token, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 7, "duplicates": 0, "rejected": 1}
    rows = live_server.sql("SELECT job_id, step, pod, container FROM log_lines"
                           " WHERE workflow_id = %s ORDER BY seq", (wf,))
    assert [r.count("a\ufffdb") for r in rows[1:5]] == [1, 1, 1, 1]
    # a retry of the same batch is still a duplicate, line by line
    again = post_batch(live_server.url, live_server.ingest_token, batch)
    assert again.json() == {"accepted": 0, "duplicates": 7, "rejected": 1}


def test_hostile_nul_in_status_fields_is_not_a_500(live_server):
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
    response = post_status(live_server.url, live_server.ingest_token, wf, "running",
                           job_id="job\x00", step="st\x00ep", cmd="echo \x00",
                           docker_img="img\x00", job_name="n\x00")
    assert response.status_code < 500, response.text
    read = live_server.get(f"/api/workflows/{wf}/logs", params={"format": "reana"})
    assert read.status_code == 200, read.text


def test_hostile_nul_in_read_parameters_is_400(live_server):
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
    for path, extra in ((f"/api/workflows/{wf}/logs", {}),
                        (f"/api/workflows/{wf}/logs", {"format": "text"}),
                        (f"/api/workflows/{wf}/logs", {"format": "reana"}),
                        (f"/api/workflows/{wf}/logs/stream", {})):
        for name in ("job", "kind", "since", "tail", "limit", "format", "access_token"):
            code, text = _status(live_server, path, {**extra, name: "a\x00"})
            ignored = name == "access_token" or (name in ("limit", "format") and "stream" in path)
            assert 400 <= code < 500 or (ignored and code == 200), (path, name, code, text)


# -- 3. zstd of several frames -------------------------------------------------------------

def test_hostile_zstd_body_of_several_frames_is_read_whole(live_server):
    wf = uuid.uuid4()
    compressor = zstandard.ZstdCompressor()
    body = b"".join(compressor.compress(json.dumps(event(wf, f"frame {i}")).encode() + b"\n")
                    for i in range(10))
    response = _post(live_server, body, **{"Content-Encoding": "zstd",
                                            "Content-Type": "application/x-ndjson"})
    assert response.json()["accepted"] == 10
    array = gzip.compress(b"[" + json.dumps(event(wf, "member 1")).encode()) + gzip.compress(
        b"," + json.dumps(event(wf, "member 2")).encode() + b"]")
    assert _post(live_server, array).json()["accepted"] == 2  # gzip members too
    assert _count(live_server, wf) == 12


# -- 4. malformed bodies -------------------------------------------------------------------

def test_hostile_top_level_scalars_are_rejected_not_500(live_server):
    for body in (b"42", b'"x"', b"null", b"true", b"  7  ", b"1e999999"):
        response = _post(live_server, gzip.compress(body))
        assert response.status_code in (200, 400), (body, response.text)
        if response.status_code == 200:
            assert response.json()["accepted"] == 0
    reasons = live_server.sql("SELECT reason FROM rejected_events")
    assert reasons, "a scalar body is kept as a rejected event"


def test_hostile_deep_nesting_is_rejected_not_500(live_server):
    wf = uuid.uuid4()
    deep = b"[" * 5000 + b"]" * 5000  # kept as one rejected line, not refused whole
    assert _post(live_server, gzip.compress(deep)).json() == {
        "accepted": 0, "duplicates": 0, "rejected": 1}
    deep_event = json.dumps(event(wf, "x")).encode()[:-1] + b', "x": ' + b"[" * 3000 + \
        b"]" * 3000 + b"}"
    deep_obj = b'{"a":' * 3000 + b"1" + b"}" * 3000
    for body in (b"[" + deep_event + b"]", deep_obj):
        response = _post(live_server, gzip.compress(body))
        assert response.status_code in (200, 400), response.text
    body = _ndjson(json.dumps(event(wf, "ok 1")).encode(), deep_event, deep_obj,
                   json.dumps(event(wf, "ok 2")).encode())
    response = _post(live_server, gzip.compress(body),
                     **{"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": 2}


def test_hostile_tail_and_ids_past_bigint_are_400(live_server):
    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [event(wf, "x")])
    for path in (f"/api/workflows/{wf}/logs", f"/api/workflows/{wf}/logs/stream"):
        for name in ("tail", "since") + (() if "stream" in path else ("limit",)):
            for value in (str(2**63), str(2**64), "9" * 5000, "-1"):
                code, text = _status(live_server, path, {name: value})
                assert code == 400, (path, name, value, text)
    code, _ = _status(live_server, f"/api/workflows/{wf}/logs/stream",
                      headers={"Last-Event-ID": str(2**63)})
    assert code == 400
    ok = live_server.get(f"/api/workflows/{wf}/logs", params={"tail": str(2**63 - 1)})
    assert ok.status_code == 200 and len(ok.json()["lines"]) == 1


# -- 5. one bad part costs only itself -----------------------------------------------------

def test_hostile_bad_ndjson_lines_are_rejected_one_by_one(live_server):
    wf = uuid.uuid4()
    good = [json.dumps(event(wf, f"ok {i}")).encode() for i in range(5)]
    huge_int = json.dumps(event(wf, "huge int")).encode()[:-1] + b', "n": ' + b"9" * 10**6 + b"}"
    body = _ndjson(good[0], b"this is not json", good[1], huge_int, good[2],
                   b'{"workflow_id": "x", "message": "\xff\xfe", "trunc', good[3],
                   b"[1, 2]", b"\x00\x00", good[4])
    response = _post(live_server, gzip.compress(body), **{"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 6  # the huge integer sits in an ignored extra field
    assert result["rejected"] == 4
    reasons = [r for (r,) in live_server.sql("SELECT reason FROM rejected_events ORDER BY id")]
    assert len(reasons) == 4 and all(reasons)
    stored = live_server.sql("SELECT event FROM rejected_events ORDER BY id")
    assert stored[0][0] == "this is not json"
    # the same body again: every accepted line is a duplicate
    assert _post(live_server, gzip.compress(body)).json()["duplicates"] == 6


def test_hostile_ndjson_is_told_apart_by_its_content(live_server):
    wf = uuid.uuid4()
    lines = [json.dumps(event(wf, f"nd {i}")).encode() for i in range(3)]
    for content_type in ("application/json", "text/plain", ""):
        response = _post(live_server, gzip.compress(b"\r\n".join(lines)),
                         **{"Content-Type": content_type})
        assert response.status_code == 200, (content_type, response.text)
    array = b"  \n[" + b",\n".join(lines) + b"]"
    response = _post(live_server, gzip.compress(array), **{"Content-Type": "application/x-ndjson"})
    assert response.json() == {"accepted": 0, "duplicates": 3, "rejected": 0}
    single = _post(live_server, gzip.compress(json.dumps(event(wf, "one"), indent=2).encode()))
    assert single.json()["accepted"] == 1  # one (pretty-printed) object is one event
    assert _count(live_server, wf) == 4


def test_hostile_parsing_keeps_the_dedupe_digests_of_accepted_input():
    # Digests computed by the parser before issue 11 (ingest.parse_events of ad9d172):
    # a batch retried across the upgrade must still be a duplicate.
    import datetime as dt

    from reana_log_sse.ingest.body import parse_events
    from reana_log_sse.ingest.prepare import prepare
    from reana_log_sse.store.partitions import Window

    wf = "7b2e5c0a-0000-4000-8000-000000000001"

    def ev(message: str) -> dict:
        return {"workflow_id": wf, "kind": "job", "job_id": "reana-run-job-1", "pod": "p",
                "container": "job", "stream": "stdout",
                "timestamp": "2026-12-01T12:00:00.123456789Z", "message": message}

    bodies = {
        json.dumps([ev("a"), ev("a"), ev("b\u00e9"), ev("nul \u0000 x")]).encode(): [
            "6b2709a791273fb8289066838f8234d5", "1626f28c5fc90208795ac506286acd3c",
            "c7595b1596cf426b0ea660d8ca97e66e", "78d4e81ba55f8df05286635ccf8bd363"],
        json.dumps([ev("MARK")]).encode().replace(b"MARK", b"bad \xff\xfe bytes \\ud800"): [
            "1edbb35f84450d986df7e51033abb36d"],
        b"\n".join(json.dumps(ev(f"nd {i}")).encode() for i in range(3)) + b"\n"
        + json.dumps(ev("X")).encode().replace(b"X", b"\xff"): [
            "3249317d65c639deaff672553759d8e9", "dd39a3740f5848d4104bda5de7e6e60a",
            "17231c0977d3ecdfcd64404c8ce0378c", "9ff29f61df7e95033a39ca44d4ddd5c1"],
    }
    window = Window.around(dt.date(2026, 12, 1), retention_days=30, ahead_days=2)
    for body, digests in bodies.items():
        events, rejected = parse_events(body)
        lines, _ = prepare(events, max_line_bytes=65536, window=window)
        assert ([line.dedupe.hex for line in lines], rejected) == (digests, [])


# -- 8. read timeouts and caps -------------------------------------------------------------

def _closed_by_server(sock, timeout: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""

    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open; got {got[:200]!r}") from None
    except ConnectionResetError:
        pass
    return got


def test_hostile_slow_or_huge_headers_are_cut(server_factory):
    import socket
    import time

    server = server_factory(header_timeout_seconds=0.5)
    # headers that never end
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock) == b""
    # headers trickled a byte at a time: the deadline covers all of them, not each byte
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.01)
        assert closed or _closed_by_server(sock) == b""
    # a connection that sends nothing
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        assert _closed_by_server(sock) == b""
    # headers past the cap
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        answer = _closed_by_server(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]
    # an ordinary keep-alive client is served throughout
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert client.get(f"{server.url}/healthz").status_code == 200


def test_hostile_slow_body_is_408_and_status_body_is_capped(server_factory):
    import socket

    server = server_factory(body_timeout_seconds=0.5, header_timeout_seconds=30)
    wf = uuid.uuid4()
    for path in ("/ingest/vector", f"/api/workflows/{wf}/status"):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                         f"Authorization: Bearer {server.ingest_token}\r\n"
                         "Content-Type: application/json\r\n\r\n[".encode())
            answer = _closed_by_server(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    big = post_status(server.url, server.ingest_token, wf, "running", cmd="x" * 1_000_000)
    assert big.status_code == 413, big.text
    ok = post_status(server.url, server.ingest_token, wf, "running", cmd="x" * 1000)
    assert ok.status_code == 200, ok.text


def test_hostile_client_gone_mid_body_is_an_info_line_not_a_traceback(live_server):
    import logging
    import socket
    import time

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    records = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "reana_log_sse")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(records)
    loggers[1].setLevel(logging.INFO)
    try:
        wf = uuid.uuid4()
        paths = ("/ingest/vector", f"/api/workflows/{wf}/status")
        for path in paths:  # half a body, then the sender is gone (a timeout, a Ctrl-C)
            with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                             f"Authorization: Bearer {live_server.ingest_token}\r\n"
                             "Content-Type: application/json\r\n\r\n[".encode())
        deadline = time.monotonic() + 20
        while sum("went away" in r.getMessage() for r in records.records) < len(paths):
            errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
            assert not errors, errors
            assert time.monotonic() < deadline, [r.getMessage() for r in records.records]
            time.sleep(0.02)
        assert not [r for r in records.records if r.levelno >= logging.WARNING]
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(records)
            lg.setLevel(level)
    assert post_batch(live_server.url, live_server.ingest_token,
                      [event(wf, "still served")]).status_code == 200


def test_hostile_single_event_over_the_body_cap_is_cut_not_dropped(server_factory):
    # Vector sends an event larger than its batch.max_bytes alone (vector-stream's
    # SizeLimit: "the first element in a batch is not subject to this limit"), keys in
    # sorted order; the body is then over the cap and is that one event.
    server = server_factory(max_body_bytes=200_000, max_line_bytes=4096)
    wf = uuid.uuid4()
    message = ('quote " back \\ tab \t é \u2603 \U0001f600 ' * 40_000)
    body = gzip.compress(json.dumps([event(wf, message, step="fit")], sort_keys=True).encode())
    response = _post(server, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    [(stored, truncated, step, stream)] = server.sql(
        "SELECT message, truncated, step, stream FROM log_lines WHERE workflow_id = %s", (wf,))
    assert truncated and message.startswith(stored) and len(stored.encode()) <= 4096
    assert (step, stream) == ("fit", "stdout")
    assert _post(server, body).json()["duplicates"] == 1  # a retry is still a duplicate
    # several events over the cap cannot be cut into one: refused whole, nothing stored
    many = gzip.compress(json.dumps([event(wf, "x" * 150_000), event(wf, "y" * 150_000)],
                                    sort_keys=True).encode())
    assert _post(server, many).status_code == 413
    plain = json.dumps([event(wf, "z" * 300_000)]).encode()  # uncompressed: cut the same
    assert _post(server, plain, **{"Content-Encoding": "identity"}).status_code == 200
    assert _count(server, wf) == 2


def test_hostile_event_cut_at_the_body_cap_is_marked_even_under_the_line_cap(server_factory):
    server = server_factory(max_body_bytes=100_000, max_line_bytes=1_000_000)
    wf = uuid.uuid4()
    message = "z" * 500_000
    body = gzip.compress(json.dumps([event(wf, message)], sort_keys=True).encode())
    assert _post(server, body).json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    [(stored, truncated)] = server.sql(
        "SELECT message, truncated FROM log_lines WHERE workflow_id = %s", (wf,))
    assert truncated is True and 50_000 < len(stored) < 100_000 and message.startswith(stored)
