"""`POST <prefix>/<index>/_search`: REANA's OpenSearch searches answered from the store.

What reana-workflow-controller sends (reana_workflow_controller/opensearch.py
`build_opensearch_client`, opensearch-py 2.7 as its setup.py pins it): `http_compress=True`
(the JSON body gzip'd, `Content-Encoding: gzip`), Basic auth from `REANA_OPENSEARCH_USER`
and `_PASSWORD`, `size=5000&timeout=5` in the query string. What it reads of the answer
(`fetch_logs`, `_concat_rows`): `hits.hits[*]._source.log`, every hit returned, joined with
a newline after each. So the answer holds every line of the job, in id order (commit
order: for one container, the order it wrote them), whatever `size` says; the fetcher's
cap of 5,000 lines was OpenSearch's, not REANA's.

Bounds: the body is read within REANA_LOG_SSE_BODY_TIMEOUT_SECONDS and at most
SEARCH_BODY_BYTES, compressed and decompressed; the credentials are checked before it is
read. The answer is streamed from reads sized in bytes (follow/hub.py ReadSize), and
capped at REANA_LOG_SSE_OPENSEARCH_MAX_ANSWER_BYTES: past it, one last hit says what was
left out and where to get it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from reana_log_sse.follow.queue import ReadSize
from reana_log_sse.opensearch.query import INDICES, BadQuery, Target, parse
from reana_log_sse.settings import Settings
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import Filters
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")

SEARCH_BODY_BYTES = 64 * 1024  # REANA's searches are some 200 bytes
READ_BUDGET = 4 * 1024 * 1024  # bytes of lines per database read
READ_MOST = 10_000  # lines per database read, at most
WRITE_BYTES = 256 * 1024  # the answer goes out in writes of about this size
_TAIL_RESERVE = 4096  # room kept under the cap for the last hit and the closing fields


def routes(settings: Settings) -> list[BaseRoute]:
    """The seam's routes, or none when it is off (no password set)."""
    credentials = settings.opensearch_credentials()
    if credentials is None:
        return []
    seam = Seam(credentials, body_timeout=settings.body_timeout_seconds,
                max_answer_bytes=settings.opensearch_max_answer_bytes,
                line_bytes=settings.max_line_bytes)
    prefix = "/" + settings.opensearch_prefix.strip("/")
    return [Mount(prefix, routes=[Route("/{index}/_search", seam.search,
                                        methods=["GET", "POST"])])]


def _error(status: int, kind: str, reason: str, **headers: str) -> Response:
    """An error as OpenSearch writes it (opensearch-py raises TransportError with it)."""
    cause = {"type": kind, "reason": reason}
    return JSONResponse({"error": {"root_cause": [cause], **cause}, "status": status},
                        status_code=status, headers=headers or None)


class Seam:
    def __init__(self, credentials: tuple[str, str], *, body_timeout: float,
                 max_answer_bytes: int, line_bytes: int) -> None:
        user, password = credentials
        self._expected = f"{user}:{password}".encode()
        self.body_timeout = body_timeout
        self.max_answer_bytes = max(max_answer_bytes, 2 * _TAIL_RESERVE)
        self.line_bytes = line_bytes

    def allowed(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)

    async def search(self, request: Request) -> Response:
        if not self.allowed(request):
            return _error(401, "security_exception", "missing or wrong credentials",
                          **{"WWW-Authenticate": 'Basic realm="reana-log-sse"'})
        index = request.path_params["index"]
        if index not in INDICES:
            return _error(404, "index_not_found_exception", f"no such index [{index}]")
        try:
            raw = await asyncio.wait_for(self._body(request), self.body_timeout)
        except TimeoutError:
            return _error(408, "timeout_exception", "the body did not arrive in time")
        except _TooBig:
            return _error(413, "content_too_long_exception",
                          f"a search body is at most {SEARCH_BODY_BYTES} bytes")
        except _BadEncoding as exc:
            return _error(exc.status, "parse_exception", str(exc))
        try:
            target = parse(index, orjson.loads(raw) if raw.strip() else None)
        except orjson.JSONDecodeError:
            return _error(400, "parse_exception", "the body is not JSON")
        except BadQuery as exc:
            return _error(400, "parsing_exception", str(exc))
        store: Store = request.app.state.store
        workflow_id, after, upto = await _span_of(store, target)
        logger.debug("opensearch: %s %s -> workflow %s, ids %d..%d", index, target.key,
                     workflow_id, after + 1, upto)
        return StreamingResponse(self._answer(store, target, workflow_id, after, upto),
                                 media_type="application/json")

    async def _body(self, request: Request) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _BadEncoding(415, f"unknown Content-Encoding {encoding}")
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > SEARCH_BODY_BYTES:
                raise _TooBig
        if encoding == "identity":
            return bytes(received)
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(bytes(received), SEARCH_BODY_BYTES + 1)
        except zlib.error as exc:
            raise _BadEncoding(400, f"corrupt gzip body: {exc}") from None
        if len(out) > SEARCH_BODY_BYTES or inflate.unconsumed_tail:
            raise _TooBig
        return out

    async def _answer(self, store: Store, target: Target, workflow_id: uuid.UUID | None,
                      after: int, upto: int) -> AsyncIterator[bytes]:
        started = time.monotonic()
        index = orjson.dumps(target.index)
        head = (b'{"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,'
                b'"failed":0},"hits":{"max_score":null,"hits":[')
        pending, size, sent, count = [head], len(head), len(head), 0
        cap = self.max_answer_bytes - _TAIL_RESERVE
        async for line in self._lines(store, target, workflow_id, after, upto):
            hit = (b"," if count else b"") + _hit(index, line)
            if sent + len(hit) > cap:
                note = (f"[reana-log-sse: this answer reached its cap of "
                        f"{self.max_answer_bytes} bytes; the lines after this one are left "
                        f"out. All of them: GET /api/workflows/{workflow_id}/logs?format=text]")
                hit = (b"," if count else b"") + _hit(index, line, log=note)
                pending.append(hit)
                count += 1
                break
            pending.append(hit)
            size += len(hit)
            sent += len(hit)
            count += 1
            if size >= WRITE_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
        took = int((time.monotonic() - started) * 1000)
        pending.append(b'],"total":{"value":%d,"relation":"eq"}},"took":%d}' % (count, took))
        yield b"".join(pending)

    async def _lines(self, store: Store, target: Target, workflow_id: uuid.UUID | None,
                     after: int, upto: int) -> AsyncIterator[Line]:
        if workflow_id is None:
            return
        if target.kind == "job":
            filters = Filters(jobs=(target.key,), kind="job")
        else:
            filters = Filters(kind=target.kind)
        size = ReadSize(READ_MOST, READ_BUDGET, self.line_bytes)
        while after < upto:
            snap = await store.snapshot(workflow_id, after=after, limit=size.lines,
                                        filters=filters, upto=upto)
            if snap is None or snap.horizon <= after:
                return
            size.observe(snap.lines)
            for line in snap.lines:
                if target.kind == "job" and line.job_id != target.key:
                    continue  # a line whose step has the job's name
                if target.component is not None and line.step != target.component:
                    continue
                yield line
            after = snap.horizon


async def _span_of(store: Store, target: Target) -> tuple[uuid.UUID | None, int, int]:
    """The workflow holding the target's lines and the ids to read: after .. upto."""
    if target.kind == "job":  # only the job's own stretch of ids (sql/0005)
        span = await store.job_span(target.key)
        return (span[0], span[1] - 1, span[2]) if span else (None, 0, 0)
    if target.kind == "workflow":
        workflow_id: uuid.UUID | None = uuid.UUID(target.key)
    else:
        workflow_id = await store.workflow_starting(target.key + "-")
    head = await store.snapshot(workflow_id, limit=0) if workflow_id else None
    return (workflow_id, 0, head.last_seq) if head is not None else (None, 0, 0)


def _hit(index: bytes, line: Line, log: str | None = None) -> bytes:
    source: dict[str, Any] = {"@timestamp": line.ts, "stream": line.stream,
                              "log": line.text()[:-1] if log is None else log}
    return (b'{"_index":%s,"_id":"%s.%d","_score":null,"_source":%s,"sort":[%d]}'
            % (index, line.workflow_id.encode(), line.seq,
               orjson.dumps(source, option=orjson.OPT_UTC_Z),
               int(line.ts.timestamp() * 1000)))


class _TooBig(Exception):
    pass


class _BadEncoding(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
