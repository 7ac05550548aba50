"""REANA_LOG_SSE_AUTH=reana: ask reana-server whether a REANA access token may read a workflow.

The question is the one reana-client itself asks: `GET {reana-server}/api/workflows/
{id_or_name}/status?access_token=...` (reana-server rest/workflows.py
`get_workflow_status`, answered by reana-workflow-controller rest/workflows_status.py).
reana-server answers the owner (or a user the workflow is shared with) 200
`{"id", "name", "status", "user", "progress", "created", "logs"}`; everyone else an error:

- 401 `{"message": "User not signed in"}` (no token) or "User has no active tokens";
- 403 `{"message": "Token not valid."}` / "User access token revoked." (bad token:
  reana-server decorators.py `signin_required` turns utils.py `get_user_from_token`'s
  ValueError into 403);
- 404 "REANA_WORKON is set to X, but that workflow does not exist..." for a workflow the
  user may not see (reana-db utils.py `_get_workflow_with_uuid_or_name` filters by owner
  and shares, so someone else's workflow looks like a missing one).

We answer 401 for a missing or bad token, 403 when the token is good but the workflow
(which we hold logs of) is not theirs, 404 when neither we nor they know it, and 503 when
reana-server cannot answer (down, timeout, 5xx): never an open door. Positive and
negative answers are cached for `ttl` seconds per (token, workflow); failures are not.
The same answer resolves a workflow name (`myanalysis.42`) to its UUID.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .auth import reader_token

logger = logging.getLogger("reana_log_sse")

MAX_ENTRIES = 10_000  # cached answers kept at most; expired ones are dropped first


@dataclasses.dataclass(frozen=True)
class ReanaWorkflow:
    """What reana-server told the reader about the workflow (used by format=reana)."""

    id: uuid.UUID
    name: str | None
    user: str | None
    status: str | None


@dataclasses.dataclass(frozen=True)
class Denied:
    """reana-server said no: `status` is ours (401, 403 or 404)."""

    status: int
    message: str
    not_found: bool = False  # reana-server said "does not exist" (for this user)


Answer = ReanaWorkflow | Denied


class ReanaUnavailable(Exception):
    pass


class ReanaAuth:
    """A `ReaderAuth` that defers to reana-server, with a TTL cache and a timeout."""

    def __init__(
        self, server_url: str, *, ttl: float, timeout: float,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.transport = transport
        self.asked = 0  # questions sent to reana-server (for tests and debugging)
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._client: httpx.AsyncClient | None = None

    # -- the ReaderAuth protocol ---------------------------------------------------------

    async def authorize(self, request: Request, workflow_id: uuid.UUID) -> None:
        info = await self._allowed(request, str(workflow_id), workflow_id)
        if info.id != workflow_id:
            raise HTTPException(403, f"reana-server names another workflow {info.id}")

    async def resolve(self, request: Request, id_or_name: str) -> uuid.UUID:
        """A REANA workflow name (`myanalysis.42`, or `myanalysis` for its latest run)
        to the UUID it names for this reader, who may then read it."""
        return (await self._allowed(request, id_or_name, None)).id

    # -- the question, cached ------------------------------------------------------------

    async def _allowed(self, request: Request, id_or_name: str,
                       workflow_id: uuid.UUID | None) -> ReanaWorkflow:
        token = reader_token(request)
        if not token:
            raise HTTPException(401, "a REANA access token is required (access_token= or "
                                "Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})
        try:
            answer = await self.check(token, id_or_name)
        except ReanaUnavailable as exc:
            raise HTTPException(503, f"cannot check the access token: {exc}",
                                headers={"Retry-After": "2"}) from None
        if isinstance(answer, ReanaWorkflow):
            request.state.reana_workflow = answer
            return answer
        status = answer.status
        if answer.not_found:
            # Someone else's workflow looks missing to reana-server; if we hold its logs,
            # it exists, and this reader may not read it.
            known = workflow_id is not None and await _known(request, workflow_id)
            status = 403 if known else 404
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        raise HTTPException(status, answer.message, headers=headers)

    async def check(self, token: str, id_or_name: str) -> Answer:
        """reana-server's answer for this token and workflow, from the cache if fresh.
        Raises ReanaUnavailable when reana-server cannot answer."""
        key = (hashlib.sha256(token.encode()).hexdigest(), id_or_name)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        future = self._inflight.get(key)
        if future is None:  # one question at a time per key; the others wait for it
            future = asyncio.ensure_future(self._ask(token, id_or_name))
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        answer = await asyncio.shield(future)
        self._store(key, answer)
        return answer

    def _store(self, key: tuple[str, str], answer: Answer) -> None:
        now = self.clock()
        if len(self._cache) >= MAX_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= MAX_ENTRIES:  # still full: drop the oldest
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (now + self.ttl, answer)

    async def _ask(self, token: str, id_or_name: str) -> Answer:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
        url = f"{self.server_url}/api/workflows/{quote(id_or_name, safe='')}/status"
        self.asked += 1
        try:
            response = await self._client.get(url, params={"access_token": token},
                                              headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            logger.warning("reana-server %s: %s", self.server_url, type(exc).__name__)
            raise ReanaUnavailable(f"reana-server unreachable ({type(exc).__name__})") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500 or not isinstance(body, dict):
            logger.warning("reana-server %s answered %d", self.server_url, response.status_code)
            raise ReanaUnavailable(f"reana-server answered {response.status_code}")
        message = str(body.get("message") or "")
        if response.status_code == 200:
            try:
                workflow_id = uuid.UUID(str(body["id"]))
            except (KeyError, ValueError):
                raise ReanaUnavailable("reana-server's answer has no workflow id") from None
            return ReanaWorkflow(workflow_id, body.get("name"), body.get("user"),
                                 body.get("status"))
        if response.status_code == 401:
            return Denied(401, f"reana-server: {message or 'not signed in'}")
        if response.status_code == 403 and "token" in message.lower():
            return Denied(401, f"reana-server: {message}")
        if response.status_code == 404:
            return Denied(404, f"unknown workflow {id_or_name}, or not yours to read",
                          not_found=True)
        return Denied(403, f"reana-server: {message or 'may not read this workflow'}")


async def _known(request: Request, workflow_id: uuid.UUID) -> bool:
    snap = await request.app.state.store.snapshot(workflow_id, limit=0)
    return snap is not None
