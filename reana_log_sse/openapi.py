"""The interface as an OpenAPI 3.1 document, served at GET /openapi.json.

One document for every route of app.py (tests/test_openapi.py checks both ways and runs
schemathesis against a live service with it). The prose of each answer is the README's
"The interface"; the shapes are those of ingest/models.py, follow/read.py,
store/lines.py and reana/format.py.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from reana_log_sse.ingest.models import StatusUpdate

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, **headers: Schema) -> Schema:
    answer: Schema = {"description": description,
                      "content": {JSON: {"schema": _ref("Error")}}}
    if headers:
        answer["headers"] = {name: {"schema": s} for name, s in headers.items()}
    return answer


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


UUID = {"type": "string", "format": "uuid"}
TEXT_253 = _nullable({"type": "string", "maxLength": 253})
RETRY_AFTER = {"type": "string", "pattern": "^[0-9]+$"}
UNAUTHORIZED = _error("missing or wrong token", **{"WWW-Authenticate": {"type": "string"}})
UNAVAILABLE = _error("the database is unavailable: retry after Retry-After seconds",
                     **{"Retry-After": RETRY_AFTER})
BAD_INPUT = _error("a parameter out of range, or a value the database refuses")
NO_WORKFLOW = _error("unknown workflow: not a UUID (nor, with auth=reana, a REANA name), "
                     "or nothing stored for it")
FORBIDDEN = _error("the token may not do this (auth=reana: reana-server said no; a "
                   "workflow token: another workflow)")
REANA_UNAVAILABLE = _error("the database, or with auth=reana reana-server, is "
                           "unavailable: retry after Retry-After seconds",
                           **{"Retry-After": RETRY_AFTER})

WORKFLOW_ID = {
    "name": "workflow_id", "in": "path", "required": True,
    "description": "the workflow UUID; with auth=reana also a REANA name (`myanalysis.42`)",
    "schema": {"type": "string"},
}
READ_FILTERS = [
    {"name": "job", "in": "query", "style": "form", "explode": True,
     "description": "job id or step; repeat for several",
     "schema": {"type": "array", "items": {"type": "string"}}},
    {"name": "kind", "in": "query", "schema": {"enum": ["job", "workflow", "service", ""]}},
    {"name": "since", "in": "query", "description": "lines after this id",
     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
    {"name": "tail", "in": "query", "description": "only the last N lines",
     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
    {"name": "access_token", "in": "query", "description": "the reader's token (auth=tokens "
     "or reana); the access log redacts it", "schema": {"type": "string"}},
]
READER_SECURITY = [{}, {"readerBearer": []}, {"readerQuery": []}, {"reanaSession": []}]
READ_ERRORS = {"400": BAD_INPUT, "401": UNAUTHORIZED, "403": FORBIDDEN, "404": NO_WORKFLOW,
               "503": REANA_UNAVAILABLE}

SCHEMAS: dict[str, Schema] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "LogEvent": {
        "type": "object", "description": "one line, as vector/vector.yaml's remap emits it; "
        "an invalid one is stored in rejected_events with its reason, not refused",
        "required": ["workflow_id", "stream", "timestamp", "message"],
        "properties": {
            "workflow_id": UUID, "kind": {"enum": ["job", "workflow", "service"]},
            "job_id": TEXT_253, "step": TEXT_253, "pod": TEXT_253, "container": TEXT_253,
            "stream": {"enum": ["stdout", "stderr"]},
            "timestamp": {"type": "string", "format": "date-time"},
            "message": {"type": "string"},
            "collected_at": _nullable({"type": "string", "format": "date-time"}),
        },
    },
    "IngestResult": {
        "type": "object", "required": ["accepted", "duplicates", "rejected"],
        "properties": {k: {"type": "integer", "minimum": 0}
                       for k in ("accepted", "duplicates", "rejected")},
    },
    "StatusUpdate": StatusUpdate.model_json_schema(ref_template="#/components/schemas/{model}"),
    "StatusStored": {
        "type": "object", "required": ["workflow_id", "status", "job_id", "step", "id"],
        "properties": {"workflow_id": UUID, "status": {"type": "string"},
                       "job_id": _nullable({"type": "string"}),
                       "step": _nullable({"type": "string"}), "id": {"type": "integer"}},
    },
    "Line": {
        "type": "object",
        "required": ["id", "workflow_id", "kind", "job_id", "step", "stream", "timestamp",
                     "message"],
        "properties": {
            "id": {"type": "integer", "minimum": 1}, "workflow_id": UUID,
            "kind": {"type": "string"}, "job_id": _nullable({"type": "string"}),
            "step": _nullable({"type": "string"}), "stream": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "message": {"type": "string"}, "truncated": {"const": True},
        },
    },
    "LogsPage": {
        "type": "object", "required": ["workflow_id", "status", "lines", "next_since"],
        "properties": {"workflow_id": UUID, "status": _nullable({"type": "string"}),
                       "lines": {"type": "array", "items": _ref("Line")},
                       "next_since": _nullable({"type": "integer"})},
    },
    "ReanaLogs": {
        "type": "object", "description": "reana-server's workflow logs answer "
        "(docs/reana-integration.md, section 3): `logs` is a JSON document in a string",
        "required": ["workflow_id", "logs"],
        "properties": {"workflow_id": {"type": "string"},
                       "workflow_name": _nullable({"type": "string"}),
                       "logs": {"type": "string", "contentMediaType": JSON},
                       "user": _nullable({"type": "string"}),
                       "live_logs_enabled": {"type": "boolean"}},
    },
    "Event": {
        "type": "object", "required": ["event", "data"],
        "properties": {"event": {"enum": ["log", "status", "end"]},
                       "data": {"type": "string", "contentMediaType": JSON},
                       "id": {"type": "string", "pattern": "^[0-9]+$"},
                       "retry": {"type": "integer", "minimum": 0}},
    },
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"},
                              "problems": {"type": "array", "items": {"type": "string"}}}},
}
SCHEMAS.update(SCHEMAS["StatusUpdate"].pop("$defs", {}))

INGEST = {
    "summary": "Vector's and ship's batches of lines",
    "description": "A JSON array or NDJSON of events (README, \"The interface\"), gzip, zstd "
    "or none, told apart by the body, not the Content-Type. 200 only after commit; retried "
    "batches store nothing twice. A workflow token (REANA_LOG_SSE_WORKFLOW_TOKEN_KEY) "
    "writes its workflow only: one line of another workflow refuses the whole batch (403).",
    "security": [{"ingestToken": []}, {"workflowToken": []}],
    "parameters": [{"name": "Content-Encoding", "in": "header",
                    "schema": {"enum": ["gzip", "zstd", "identity"]}}],
    "requestBody": {"required": True, "content": {
        JSON: {"schema": {"anyOf": [{"type": "array", "items": _ref("LogEvent")},
                                    _ref("LogEvent")]}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    }},
    "responses": {
        "200": {"description": "stored (committed)",
                "content": {JSON: {"schema": _ref("IngestResult")}}},
        "400": _error("a corrupt gzip or zstd stream"),
        "401": UNAUTHORIZED,
        "403": _error("a workflow token and a line of another workflow: nothing stored"),
        "408": _error("the body did not arrive within REANA_LOG_SSE_BODY_TIMEOUT_SECONDS"),
        "413": _error("over REANA_LOG_SSE_MAX_BODY_BYTES decompressed"),
        "415": _error("a Content-Encoding other than gzip, zstd or none"),
        "503": UNAVAILABLE,
    },
}

STATUS = {
    "summary": "a workflow's or a job's status, from REANA or ship",
    "description": "A terminal workflow status ends the streams; `deleted` removes the "
    "workflow's lines. With REANA_LOG_SSE_STATUS_TOKENS set, a workflow's status and "
    "`deleted` take a status token; an ingest or workflow token posts a job's status.",
    "security": [{"ingestToken": []}, {"statusToken": []}, {"workflowToken": []}],
    "parameters": [{**WORKFLOW_ID, "schema": UUID, "description": "the workflow UUID"}],
    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("StatusUpdate")}}},
    "responses": {
        "200": {"description": "stored", "content": {JSON: {"schema": _ref("StatusStored")}}},
        "400": BAD_INPUT, "401": UNAUTHORIZED,
        "403": _error("this token may post a job's status only, or another workflow's none"),
        "404": _error("the workflow id is not a UUID"),
        "408": _error("the body did not arrive within REANA_LOG_SSE_BODY_TIMEOUT_SECONDS"),
        "413": _error("over REANA_LOG_SSE_MAX_STATUS_BODY_BYTES"),
        "422": _error("not a status update (pydantic's message)"),
        "503": UNAVAILABLE,
    },
}

STREAM = {
    "summary": "Server-Sent Events: the lines, then live ones, statuses and the end",
    "description": "`event: log` with `id:` (per workflow, strictly increasing in commit "
    "order), `event: status`, `event: end`; `retry:` first, `: ping` every "
    "REANA_LOG_SSE_PING_SECONDS. Last-Event-ID wins over `since`.",
    "security": READER_SECURITY,
    "parameters": [WORKFLOW_ID, *READ_FILTERS,
                   {"name": "Last-Event-ID", "in": "header",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}}],
    "responses": {"200": {"description": "the event stream; `schema` is one event's (OpenAPI "
                          "3.1: no itemSchema yet)",
                          "content": {"text/event-stream": {"schema": _ref("Event")}}},
                  **READ_ERRORS},
}

LOGS = {
    "summary": "the stored lines: json pages, streamed text, or REANA's answer",
    "description": "With auth=reana a request shaped like reana-client's or reana-ui's (no "
    "format, since, tail, limit, job nor kind) gets reana-server's own answer with this "
    "service's lines in it; reana-server's 4xx pass through.",
    "security": READER_SECURITY,
    "parameters": [
        WORKFLOW_ID, *READ_FILTERS,
        {"name": "limit", "in": "query", "description": "json: lines per page (<= 10,000)",
         "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
        {"name": "format", "in": "query", "schema": {"enum": ["json", "text", "reana", ""]}},
        {"name": "page", "in": "query", "description": "auth=reana: REANA's, passed on",
         "schema": {"type": "string"}},
        {"name": "size", "in": "query", "description": "auth=reana: REANA's, passed on",
         "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {"description": "format=json (LogsPage) or reana (ReanaLogs); format=text",
                "content": {JSON: {"schema": {"anyOf": [_ref("LogsPage"), _ref("ReanaLogs")]}},
                            "text/plain": {"schema": {"type": "string"}}}},
        **READ_ERRORS,
    },
}


def _get(summary: str, responses: Schema, **extra: Any) -> Schema:
    return {"get": {"summary": summary, "responses": responses, **extra}}


def _static(summary: str, files: list[str], prefix: str) -> Schema:
    return _get(summary, {
        "200": {"description": "the file", "content": {"*/*": {"schema": {}}}},
        "404": _error("no such file"),
    }, parameters=[{"name": "file", "in": "path", "required": True,
                    "description": f"a file of reana_log_sse/static/ under {prefix}",
                    "schema": {"enum": files}}])


def document(static_dir: str) -> Schema:
    """The whole document; the static files are those in `static_dir`."""
    files = sorted(f for f in os.listdir(static_dir)
                   if os.path.isfile(os.path.join(static_dir, f)))
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "reana-log-sse", "version": _version(),
                 "description": "Live job logs for REANA (README, \"The interface\"). "
                 "Every GET is also answered to HEAD."},
        "paths": {
            "/ingest/vector": {"post": INGEST},
            "/api/workflows/{workflow_id}/status": {"post": STATUS},
            "/api/workflows/{workflow_id}/logs/stream": {"get": STREAM},
            "/api/workflows/{workflow_id}/logs": {"get": LOGS},
            "/healthz": _get("the process is up", {"200": {
                "description": "up", "content": {JSON: {"schema": _ref("Health")}}}}),
            "/readyz": _get("database and LISTEN connection up", {
                "200": {"description": "ready", "content": {JSON: {"schema": _ref("Health")}}},
                "503": {"description": "not ready",
                        "content": {JSON: {"schema": _ref("Health")}}}}),
            "/metrics": _get("Prometheus text", {
                "200": {"description": "the metrics", "content": text},
                "401": UNAUTHORIZED}, security=[{}, {"metricsToken": []}]),
            "/openapi.json": _get("this document", {"200": {
                "description": "OpenAPI 3.1", "content": {JSON: {"schema": {
                    "type": "object"}}}}}),
            "/": _get("the demo page", {"200": {"description": "index.html", "content": {
                "text/html": {"schema": {"type": "string"}}}}}),
            "/{file}": _static("the demo page's files", files, "/"),
            "/static/{file}": _static("the <reana-live-log> widget and its files", files,
                                      "/static/"),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "ingestToken": {"type": "http", "scheme": "bearer",
                                "description": "REANA_LOG_SSE_INGEST_TOKENS"},
                "statusToken": {"type": "http", "scheme": "bearer",
                                "description": "REANA_LOG_SSE_STATUS_TOKENS"},
                "workflowToken": {"type": "http", "scheme": "bearer", "description":
                                  "`reana-log-sse token --workflow W`: that workflow only"},
                "readerBearer": {"type": "http", "scheme": "bearer", "description":
                                 "auth=tokens: REANA_LOG_SSE_READ_TOKENS; auth=reana: a "
                                 "REANA access token"},
                "readerQuery": {"type": "apiKey", "in": "query", "name": "access_token"},
                "reanaSession": {"type": "apiKey", "in": "cookie", "name": "session",
                                 "description": "auth=reana: REANA's web session "
                                 "(REANA_LOG_SSE_REANA_SESSION_COOKIE)"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "REANA_LOG_SSE_METRICS_TOKEN, if set"},
            },
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reana-log-sse")
    except PackageNotFoundError:
        return "0"


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)
