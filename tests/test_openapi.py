"""The interface as an OpenAPI 3.1 document (issue #19, "What to build" 7): it names
every route of the app and no other, and schemathesis runs it against a live service
(real uvicorn, embedded PostgreSQL): no 5xx, every answer as the document says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from starlette.routing import Mount, Route

from tests.helpers import event, post_batch, post_status

MAX_EXAMPLES = 10  # per operation and phase: the run takes about half a minute here


def app_routes(app) -> set[tuple[str, str]]:
    """(path, method) of every route, a Mount as the files it serves (HEAD is GET's)."""
    found = set()
    for route in app.routes:
        if isinstance(route, Route):
            found |= {(route.path, m.lower()) for m in route.methods or {"GET"} if m != "HEAD"}
        elif isinstance(route, Mount):
            found.add((route.path.rstrip("/") + "/{file}", "get"))
            if route.path == "":  # the root mount: its index.html at /
                found.add(("/", "get"))
    return found


def documented(doc) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in doc["paths"].items() for method in ops}


def test_openapi_document_names_every_route_and_no_other(live_server):
    doc = live_server.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert documented(doc) == app_routes(live_server.app)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["in"] == "path" and p["name"] == name
                           for p in op.get("parameters", [])), (path, method, name)


def schemathesis(server, tmp_path, name: str, *select: str) -> tuple[int, str, dict]:
    """One schemathesis run against the live service: (exit code, output, JSON report)."""
    report = tmp_path / f"{name}.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        f"{server.url}/openapi.json", *select, "--checks", "all",
        # these assume a CRUD API (a valid input is accepted, an invalid one refused); the
        # ingest keeps invalid events with their reason, and reads 404 unknown workflows
        "--exclude-checks", "positive_data_acceptance,negative_data_rejection,"
        "use_after_free,ensure_resource_availability,object_level_authorization",
        "--max-examples", str(MAX_EXAMPLES), "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "20", "--workers", "1", "--no-color",
        "--generation-database", "none", "--report", "json",
        "--report-json-path", str(report),
        "-H", f"Authorization: Bearer {server.ingest_token}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "NO_COLOR": "1"})
    return run.returncode, run.stdout + run.stderr, json.loads(report.read_text())


def test_openapi_schemathesis_run_against_a_live_service_finds_no_5xx_nor_undocumented_answer(
        live_server, tmp_path):
    started = time.monotonic()
    # the event stream first, while no workflow exists: once the fuzzer has stored lines,
    # a stream of that workflow follows it for ever (until the workflow ends)
    streams = schemathesis(live_server, tmp_path, "stream", "--include-path-regex", "stream$")
    rest = schemathesis(live_server, tmp_path, "rest", "--exclude-path-regex", "stream$")
    took = time.monotonic() - started
    cases = sum(r[2]["test_cases"]["generated"] for r in (streams, rest))
    failures = [f for r in (streams, rest) for f in r[2]["failures"] + r[2]["errors"]]
    print(f"schemathesis: {cases} cases in {took:.1f} s, {len(failures)} failures")  # -s
    for code, output, _ in (streams, rest):
        assert code == 0, output[-20000:]


def test_openapi_event_stream_answers_as_documented(live_server):
    """The fuzzer sees streams of unknown workflows only (above): a whole stream, here."""
    import jsonschema

    wf = uuid.uuid4()
    post_batch(live_server.url, live_server.ingest_token, [event(wf, "a line")])
    assert post_status(live_server.url, live_server.ingest_token, wf, "finished"
                       ).status_code == 200
    doc = live_server.get("/openapi.json").json()
    schema = {**doc["components"]["schemas"]["Event"], "components": doc["components"]}
    r = live_server.get(f"/api/workflows/{wf}/logs/stream")
    assert r.status_code == 200
    events = []
    for block in r.text.split("\n\n"):
        fields = [line.partition(": ") for line in block.splitlines()
                  if line and not line.startswith(":")]
        data = [v for k, _, v in fields if k == "data"]
        if data:
            events.append({**{k: v for k, _, v in fields if k in ("event", "id")},
                           "data": "\n".join(data)})
    assert sorted(e["event"] for e in events) == ["end", "log", "status"]
    assert events[-1]["event"] == "end"
    for e in events:
        jsonschema.validate(e, schema)
        json.loads(e["data"])


def test_openapi_wrong_method_on_a_route_answers_its_own_405_not_the_static_files(live_server):
    """schemathesis found `OPTIONS /ingest/vector` answered by the static files at `/`
    (405 `Allow: GET, HEAD`, and GET a 404): a route's path is the route's."""
    for method, path, allow in [("OPTIONS", "/ingest/vector", "POST"),
                                ("GET", "/ingest/vector", "POST"),
                                ("GET", f"/api/workflows/{uuid.uuid4()}/status", "POST"),
                                ("POST", "/healthz", "GET, HEAD")]:
        r = httpx.request(method, live_server.url + path)
        # Starlette builds Allow from a set: its order changes with string hashing
        allowed = set((r.headers.get("allow") or "").split(", "))
        assert (r.status_code, allowed) == (405, set(allow.split(", "))), (method, path)
    assert live_server.get("/reana-live-log.js").status_code == 200  # the files still are
    assert live_server.get("/").headers["content-type"].startswith("text/html")
