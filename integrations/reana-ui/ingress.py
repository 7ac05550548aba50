"""One origin for a reana-ui build, as REANA's Ingress gives it: the stream path to
reana-log-sse (manifests/overlays/example/ingress-reana-log-sse.yaml: only
`/api/workflows/<id or name>/logs/stream`), the rest of `/api` to reana-server (here the fake
of tests/fake_reana.py, asked with REANA's host name), everything else to reana-ui's nginx
(reana-ui `nginx/reana-ui.conf`: the file if there is one, else `/index.html`), with the
Content-Security-Policy that reana-server sends (reana-server `reana_server/config.py`
`APP_DEFAULT_SECURE_HEADERS["content_security_policy"]`, which says to keep it in sync with
reana-ui's nginx)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

STREAM_PATH = re.compile(r"/api/workflows/[^/]+/logs/stream")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
       "object-src 'none'; base-uri 'self'")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "host", "content-length"}


def ingress(build: Path, service_url: str, reana_url: str, reana_host: str | None,
            csp: str | None = CSP) -> Starlette:
    client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
    root = build.resolve()

    async def proxy(request: Request, upstream: str, host: str | None) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if host:
            headers["host"] = host
        url = upstream + request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
        sent = client.build_request(request.method, url, headers=headers,
                                    content=await request.body())
        answer = await client.send(sent, stream=True)
        kept = {k: v for k, v in answer.headers.items()
                if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        # streamed and decoded (content-encoding dropped): SSE events pass as they come,
        # and the browser closing the stream closes it upstream too
        return StreamingResponse(answer.aiter_bytes(), status_code=answer.status_code,
                                 headers=kept, background=BackgroundTask(answer.aclose))

    async def route(request: Request) -> Response:
        path = request.url.path
        if STREAM_PATH.fullmatch(path):
            return await proxy(request, service_url, None)
        if path == "/api" or path.startswith("/api/"):
            return await proxy(request, reana_url, reana_host)
        file = (root / path.lstrip("/")).resolve()
        if not file.is_file() or root not in file.parents:
            file = root / "index.html"
        return FileResponse(file, headers={"Content-Security-Policy": csp} if csp else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", route, methods=methods)],
                     lifespan=lifespan)
