"""Hostile bodies and bodies over the cap (issue 19, findings 2, 8, 12): every body is read
within its caps in bytes and time before the request is authenticated, and a body over the
cap gets a 413 its sender can read (httpx, curl, Vector's http sink)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import uuid

import httpx
import pytest

from tests import vectorsim
from tests.fake_reana import REANA_HOSTNAME, FakeReanaServer
from tests.helpers import event


@pytest.fixture
def reana():
    fake = FakeReanaServer().start()
    yield fake
    fake.stop()


def _raw_answer(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request's head and the start of its body, and read the answer's status line
    (the client never sends the rest). A server that waits for the body times out here."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]


def _get_logs_head(wf: str, length: int) -> bytes:
    return (f"GET /api/workflows/{wf}/logs HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def test_hostile_read_body_on_logs_route_huge_is_413_before_auth(reana, server_factory):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME)
    wf = str(uuid.uuid4())
    # 400 MB announced, anonymous: refused at once, not read whole before the 401
    status = _raw_answer(server.port, _get_logs_head(wf, 400_000_000), b"[" * 65536)
    assert status.startswith(b"HTTP/1.1 413"), status
    # over the cap but within what is drained: the client reads its 413 (httpx)
    r = httpx.request("GET", f"{server.url}/api/workflows/{wf}/logs",
                      content=b"[" + b'"s",' * 100_000 + b'"s"]', timeout=30)
    assert r.status_code == 413, r.text
    assert not reana.seen  # reana-server was never asked


def test_hostile_read_body_on_logs_route_trickled_is_408(reana, server_factory):
    server = server_factory(auth="reana", reana_server_url=reana.url,
                            reana_server_host=REANA_HOSTNAME, body_timeout_seconds=1)
    # 1 byte of 100, then nothing: answered 408 after BODY_TIMEOUT_SECONDS, not held open
    status = _raw_answer(server.port, _get_logs_head(str(uuid.uuid4()), 100), b"[")
    assert status.startswith(b"HTTP/1.1 408"), status


def _incompressible_batch(wf: uuid.UUID, n: int, size: int) -> list[dict]:
    return [event(wf, os.urandom(size // 2).hex()) for _ in range(n)]


def _cap_server(server_factory):
    return server_factory(max_body_bytes=200_000, max_status_body_bytes=4096)


def test_hostile_ingest_body_over_cap_is_a_413_httpx_reads(server_factory):
    server = _cap_server(server_factory)
    wf = uuid.uuid4()
    body = json.dumps(_incompressible_batch(wf, 10, 100_000)).encode()  # 1 MB, 10 events
    headers = {"Authorization": f"Bearer {server.ingest_token}",
               "Content-Type": "application/json"}
    with httpx.Client(timeout=30) as client:
        for _ in range(5):  # 5 of 5: a 413, never a reset connection
            r = client.post(f"{server.url}/ingest/vector", content=body, headers=headers)
            assert r.status_code == 413, r.text
        r = client.post(f"{server.url}/api/workflows/{wf}/status", headers=headers,
                        content=json.dumps({"status": "running", "cmd": "x" * 50_000}))
        assert r.status_code == 413, r.text


def test_hostile_ingest_body_over_cap_is_a_413_curl_reads(server_factory, tmp_path):
    server = _cap_server(server_factory)
    path = tmp_path / "body.json"
    path.write_bytes(json.dumps(_incompressible_batch(uuid.uuid4(), 25, 100_000)).encode())
    for _ in range(5):  # without `Expect: 100-continue` (which Vector does not send)
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60",
             "-H", f"Authorization: Bearer {server.ingest_token}", "-H", "Expect:",
             "-H", "Content-Type: application/json", "--data-binary", f"@{path}",
             f"{server.url}/ingest/vector"], capture_output=True, text=True, check=False)
        assert (out.returncode, out.stdout) == (0, "413"), out.stderr


def test_hostile_ingest_body_over_cap_is_a_413_vector_reads_and_drops(server_factory):
    server = _cap_server(server_factory)
    # Vector's request (gzip, vectorsim.vector_request) of a batch over the cap even
    # compressed: its http sink sees 413, which it does not retry (not a reset, retried
    # for ever: src/http.rs HttpError::is_retriable)
    headers, body = vectorsim.vector_request(
        _incompressible_batch(uuid.uuid4(), 25, 100_000), server.ingest_token)
    assert len(body) > 200_000
    with httpx.Client(timeout=30) as client:
        for _ in range(5):
            r = client.post(f"{server.url}/ingest/vector", content=body, headers=headers)
            assert r.status_code == 413
    assert not vectorsim.should_retry(r.status_code, vectorsim.sink_retry_strategy())


def test_hostile_uncompressed_single_event_over_cap_is_cut_not_dropped(server_factory):
    server = server_factory(max_body_bytes=200_000, max_line_bytes=4096)
    wf = uuid.uuid4()
    body = json.dumps([event(wf, "z" * 300_000, step="fit")], sort_keys=True).encode()
    r = httpx.post(f"{server.url}/ingest/vector", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {server.ingest_token}",
                            "Content-Type": "application/json"})
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    [(stored, truncated)] = server.sql(
        "SELECT message, truncated FROM log_lines WHERE workflow_id = %s", (wf,))
    assert truncated and stored == "z" * len(stored) and len(stored) <= 4096
    # gzip, as Vector sends it, is cut the same way
    gz = gzip.compress(json.dumps([event(wf, "y" * 300_000)], sort_keys=True).encode())
    r = httpx.post(f"{server.url}/ingest/vector", content=gz, timeout=30,
                   headers={"Authorization": f"Bearer {server.ingest_token}",
                            "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.json()["accepted"] == 1


def test_hostile_deeply_nested_event_in_a_batch_is_rejected_alone(server_factory):
    server = server_factory()
    wf = uuid.uuid4()
    deep = b'{"message":"deep","x":' + b"[" * 1100 + b"]" * 1100 + b"}"
    headers = {"Authorization": f"Bearer {server.ingest_token}",
               "Content-Type": "application/json", "Content-Encoding": "gzip"}
    sent = 0
    for batch in range(6):  # one-line arrays, as Vector sends them
        good = [json.dumps(event(wf, f"ok {batch}.{i}"), sort_keys=True).encode()
                for i in range(5 + batch)]
        body = b"[" + b",".join(good[:2] + [deep] + good[2:]) + b"]"
        r = httpx.post(f"{server.url}/ingest/vector", content=gzip.compress(body),
                       headers=headers, timeout=30)
        assert r.json() == {"accepted": len(good), "duplicates": 0, "rejected": 1}, r.text
        sent += len(good)
    stored = server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s", (wf,))
    assert stored == [(sent,)]
    reasons = server.sql("SELECT DISTINCT reason FROM rejected_events"
                         " WHERE event LIKE '{\"message\":\"deep\"%%'")
    assert reasons == [("event is not JSON: nested too deeply",)]
