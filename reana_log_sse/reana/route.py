"""GET /api/workflows/{id}/logs with REANA beside it: REANA's own logs request, routed here,
gets reana-server's answer with this service's lines (logs.py); every other read is
follow/read.py's, with `format=reana` (format.py) beside json and text."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from reana_log_sse.follow import read
from reana_log_sse.reana.format import reana_logs
from reana_log_sse.reana.logs import is_reana_request, reana_server_logs

FORMATS = {"reana": reana_logs}


async def read_logs(request: Request) -> Response:
    server = getattr(request.app.state.reader_auth, "server", None)
    if server is not None and is_reana_request(request):
        return await reana_server_logs(request, server)
    return await read.read_logs(request, FORMATS)
