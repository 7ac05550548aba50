"""reana-server, as this service talks to it: one HTTP client, REANA's own rules.

What reana-server expects of a caller, and where REANA says so:

- **Host.** reana-server `reana_server/config.py` sets `TRUSTED_HOSTS = [REANA_HOSTNAME]`
  (`REANA_HOSTNAME` defaults to `localhost` there; the helm chart sets it from
  `reana_hostname`, reana `helm/reana/templates/reana-server.yaml`), and Flask answers any
  other Host with 400. So every request carries `Host: <REANA's hostname>`, whatever URL
  it is sent to (the in-cluster `http://reana-server` included).
- **Credentials.** A reader brings a REANA token (`Authorization: Bearer`, as reana-client
  0.95 sends it, reana-client `api/client.py` `_auth_request_options`; or `access_token=`, as
  0.9 sends it), REANA 0.9's signed-in web session (Flask's `session` cookie, which reana-ui
  sends with `withCredentials`, reana-ui `src/client.js`), or REANA 0.95's `reana_at`
  (the httpOnly cookie holding the access JWT on path `/api`, reana-server development code
  `reana_server/auth/sessions.py` `AUTH_COOKIE`, read by `auth/deps.py` `get_current_user`).
  Each goes on the way that reana-server reads it. A token goes in ONE place, chosen by
  `token_in` (REANA_LOG_SSE_REANA_TOKEN_IN): reana-server 0.9 and master
  `reana_server/decorators.py` `signin_required` read the session, else
  `request.args["access_token"]`, and never a header ("query"); the development server's
  `auth/deps.py` reads only `Authorization: Bearer` (OAuth2AuthorizationCodeBearer), else
  the `reana_at` cookie, and never the query ("header"). Sending both would buy nothing
  from either server, and would put a 0.95 JWT in every URL that reana-server and any proxy
  before it log. Cookies go on under their own names. This client keeps no cookie jar: a
  cookie one reader sent (or reana-server set) never rides along with another reader's
  request. No log line or error of ours names a credential (redact.py covers a library's).
- **Rate limits.** reana-server `config.py` `RATELIMIT_GUEST_USER` /
  `RATELIMIT_AUTHENTICATED_USER` ("20 per second"; REANA 0.95's chart sets "40 per
  second", reana `helm/reana/values.yaml`), keyed by client address and user agent by
  invenio-app, so all of one replica's checks share one budget. A 429 is
  `ReanaUnavailable` with reana-server's `Retry-After`: the caller answers 503, never a
  refusal, and caches nothing.
- **Failures.** A connection error, a timeout or a 5xx is `ReanaUnavailable` too.

What each question costs reana-server (the reason `workflow()` asks `/parameters`):

- `GET /api/workflows/{id}/parameters`: reana-workflow-controller `rest/workflows.py`
  `get_workflow_parameters` looks the workflow up once (owned or shared:
  `_get_workflow_with_uuid_or_name(.., True)`) and answers its stored inputs. No job is read.
- `GET /api/workflows/{id}/status` (what reana-client's `status` asks, and what this check
  asked before): `rest/workflows_status.py` `get_workflow_status` runs
  `build_workflow_logs` (every job row with its logs, one OpenSearch query per job when
  OpenSearch is on) and `get_workflow_progress`.
- `GET /api/workflows/{id}/logs`: `get_workflow_logs`, the same per page of jobs, plus the
  engine's and the services' logs.
- `GET /api/workflows?workflow_id_or_name=`: `rest/workflows.py` `get_workflows`, shared
  workflows only with `shared=true`, a paginated query plus owner and share lookups per row.

tests/test_reana_auth.py `test_reana_auth_asks_the_cheapest_endpoint_measured` measures
the first two against the fake reana-server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.cookiejar
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from starlette.requests import Request

from reana_log_sse.auth import reader_token

logger = logging.getLogger("reana_log_sse")

SESSION_COOKIE = "session"  # Flask's SESSION_COOKIE_NAME; reana-server config.py keeps it
AT_COOKIE = "reana_at"  # reana-server development code auth/sessions.py AUTH_COOKIE
TOKEN_IN = ("query", "header")  # where a token goes to reana-server (see above)
DEFAULT_RETRY_AFTER = 2


class ReanaUnavailable(Exception):
    """reana-server cannot answer now (down, slow, 5xx, or rate-limiting us)."""

    def __init__(self, message: str, retry_after: int = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Who a reader is to reana-server: a REANA access token, REANA 0.9's session cookie
    and/or REANA 0.95's `reana_at` cookie. The repr names none of them."""

    token: str | None = dataclasses.field(default=None, repr=False)
    session: str | None = dataclasses.field(default=None, repr=False)
    at: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, request: Request, *, cookie: str = SESSION_COOKIE) -> Credentials:
        return cls(reader_token(request), request.cookies.get(cookie) or None,
                   request.cookies.get(AT_COOKIE) or None)

    def __bool__(self) -> bool:
        return bool(self.token or self.session or self.at)

    def cache_key(self) -> str:
        kind, secret = (("t", self.token) if self.token else
                        ("s", self.session) if self.session else ("a", self.at or ""))
        return hashlib.sha256(f"{kind}:{secret}".encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ReanaWorkflow:
    """What reana-server told this reader about the workflow."""

    id: uuid.UUID
    name: str | None
    user: str | None = None
    status: str | None = None


@dataclasses.dataclass(frozen=True)
class Denied:
    """reana-server said no: `status` is what we answer (401, 403 or 404)."""

    status: int
    message: str
    not_found: bool = False  # reana-server said "does not exist" (for this user)


Answer = ReanaWorkflow | Denied


def _no_cookies() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class ReanaServer:
    """An async client of one reana-server."""

    def __init__(self, url: str, *, host: str | None = None, timeout: float = 5.0,
                 session_cookie: str = SESSION_COOKIE, token_in: str = "query",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if token_in not in TOKEN_IN:
            raise ValueError(f"token_in must be one of {TOKEN_IN}, not {token_in!r}")
        self.url = url.rstrip("/")
        self.token_in = token_in
        self.host = host or urlsplit(self.url).netloc
        self.timeout = timeout
        self.session_cookie = session_cookie
        self.transport = transport
        self.sent: dict[str, int] = {}  # requests sent, per endpoint (tests, debugging)
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get(self, path: str, creds: Credentials, *,
                  params: Sequence[tuple[str, str]] = (), content: bytes | None = None,
                  endpoint: str = "") -> httpx.Response:
        """GET `path` as this reader. Raises ReanaUnavailable; other answers are returned."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport,
                                             cookies=_no_cookies())
        query = [*params]
        headers = {"Host": self.host, "Accept": "application/json"}
        if creds.token and self.token_in == "header":
            headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.token:
            query.append(("access_token", creds.token))
        cookies = [(self.session_cookie, creds.session), (AT_COOKIE, creds.at)]
        if any(value for _, value in cookies):
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies if value)
        if content:
            headers["Content-Type"] = "application/json"
        self.sent[endpoint or path] = self.sent.get(endpoint or path, 0) + 1
        try:
            response = await self._client.request("GET", self.url + path, params=query,
                                                  headers=headers, content=content)
        except httpx.HTTPError as exc:
            logger.warning("reana-server %s: %s", self.url, type(exc).__name__)
            raise ReanaUnavailable(f"reana-server unreachable ({type(exc).__name__})") from exc
        if response.status_code == 429:
            retry = _retry_after(response.headers)
            logger.warning("reana-server %s is rate-limiting (retry after %d s)", self.url, retry)
            raise ReanaUnavailable("reana-server is rate-limiting", retry_after=retry)
        if response.status_code == 400 and "json" not in response.headers.get(
                "content-type", ""):  # Flask's answer to a Host not in TRUSTED_HOSTS
            logger.warning("reana-server %s refused Host %r", self.url, self.host)
            raise ReanaUnavailable(
                f"reana-server refused Host {self.host!r}: set REANA_LOG_SSE_REANA_SERVER_HOST "
                "to REANA's hostname (its REANA_HOSTNAME)")
        if response.status_code >= 500:
            logger.warning("reana-server %s answered %d", self.url, response.status_code)
            raise ReanaUnavailable(f"reana-server answered {response.status_code}")
        return response

    async def workflow(self, creds: Credentials, id_or_name: str) -> Answer:
        """May this reader see this workflow? The cheapest question that answers for
        shared workflows too (see the table above)."""
        response = await self.get(f"/api/workflows/{quote(id_or_name, safe='')}/parameters",
                                  creds, endpoint="parameters")
        body = _json(response)
        if response.status_code == 200:
            try:
                workflow_id = uuid.UUID(str(body["id"]))
            except (KeyError, ValueError):
                raise ReanaUnavailable("reana-server's answer has no workflow id") from None
            return ReanaWorkflow(workflow_id, body.get("name"))
        return denied(response.status_code, body, id_or_name)

    async def workflow_user(self, creds: Credentials, id_or_name: str) -> str | None:
        """The reader's REANA user id, as reana-server's status answer names it."""
        response = await self.get(f"/api/workflows/{quote(id_or_name, safe='')}/status",
                                  creds, endpoint="status")
        body = _json(response)
        user = body.get("user") if response.status_code == 200 else None
        return str(user) if user else None

    async def workflow_logs(self, creds: Credentials, id_or_name: str, *,
                            params: Sequence[tuple[str, str]] = (),
                            steps: bytes | None = None) -> httpx.Response:
        """reana-server's own logs answer for this reader (rest/workflows.py
        `get_workflow_logs`): `page`/`size` in the query, `steps` as a JSON body."""
        return await self.get(f"/api/workflows/{quote(id_or_name, safe='')}/logs", creds,
                              params=params, content=steps, endpoint="logs")


def denied(status: int, body: Mapping[str, Any], id_or_name: str) -> Denied:
    """reana-server's refusal, as we answer it (decorators.py `signin_required`:
    401 no user or no active token, 403 bad or revoked token; reana-db utils.py
    `_get_workflow_with_uuid_or_name`: someone else's workflow looks missing, 404)."""
    message = str(body.get("message") or "")
    if status == 401:
        return Denied(401, f"reana-server: {message or 'not signed in'}")
    if status == 403 and "token" in message.lower():
        return Denied(401, f"reana-server: {message}")
    if status == 404:
        return Denied(404, f"unknown workflow {id_or_name}, or not yours to read",
                      not_found=True)
    return Denied(403, f"reana-server: {message or 'may not read this workflow'}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ReanaUnavailable(f"reana-server answered {response.status_code} without JSON")
    return body


def _retry_after(headers: httpx.Headers) -> int:
    try:
        return max(1, min(int(headers.get("retry-after", "")), 300))
    except ValueError:
        return DEFAULT_RETRY_AFTER
