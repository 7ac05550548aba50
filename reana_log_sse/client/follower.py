"""Follow a workflow's logs from Python: the importable client behind `reana-log-sse logs`.

    from reana_log_sse.client import End, LogFollower, LogLine, StatusChange

    follower = LogFollower("https://logs.example.org", "myanalysis.42", token=token)
    for event in follower:  # LogLine, StatusChange, then one End
        if isinstance(event, LogLine):
            print(event.step or event.job_id, event.message)
    print(follower.status)  # "finished", "failed", ...

It reconnects by itself (exponential backoff with jitter) after network errors, 408, 429
and 5xx answers, and streams that close without `end`, always resuming after the last
line id it yielded: no line is lost or repeated across reconnects. It stops after `end`.
401/403 raise `AuthError`, 404 `NotFound`, other 4xx `RequestError`; `Unreachable` when
`retries` attempts in a row made no progress, or at once when a one-shot read
(follow=False) never reached the server. With wait=True, a workflow the server does not
know yet (404: no line nor status stored) is asked for again every `wait_interval`
seconds, for ever, and `on_wait` hears of it once. `on_retry` hears of each failed attempt
(the cause in plain words), `on_reconnect` of the first stream back after failures.
`async for` works the same way.

Lines from pods carry the Kubernetes Job name, not the step name: when `jobs` names a step,
the status event that pairs it with a job id (REANA's status POST) widens the filter to
that job id, and the follower reconnects at once from where it was. Status events of jobs
not asked for are not yielded.

Only httpx and orjson are needed; the SSE parser (`SSEDecoder`) and the event types live
in `eventstream.py` (sans I/O) and are importable from here too.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from reana_log_sse.client.eventstream import End, Event, LogLine, RawEvent, SSEDecoder, StatusChange

__all__ = [
    "AuthError", "ClientError", "End", "Event", "LogFollower", "LogLine", "NotFound",
    "RawEvent", "RequestError", "SSEDecoder", "StatusChange", "Unreachable",
    "TERMINAL_STATUSES",
]

DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL_STATUSES = frozenset({"finished", "failed", "stopped", "deleted"})
READ_PAGE = 10_000  # the read endpoint's largest `limit`


# -- errors --------------------------------------------------------------------------------

class ClientError(Exception):
    """The server refused the request, or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class AuthError(ClientError):
    """401 (no or bad token) or 403 (this token may not read this workflow)."""


class NotFound(ClientError):
    """404: the server knows no such workflow."""


class RequestError(ClientError):
    """Another 4xx: the request itself is wrong (a bad parameter); retrying cannot help."""


class Unreachable(ClientError):
    """`retries` attempts in a row failed without receiving anything new."""


class _Retry(Exception):
    """A failure worth another attempt (network error, 408, 429, 5xx, early close)."""


# -- the follower --------------------------------------------------------------------------

RetryHook = Callable[[str, float, int], None]  # (reason, delay seconds, attempt)
DEFAULT_RETRIES = 10  # about 30 s of backoff (0.25 s doubling to 8 s, with jitter)
DEFAULT_TIMEOUT = 10.0  # seconds to connect, and for a one-shot read's answer
STREAM_READ_TIMEOUT = 60.0  # a stream silent this long (4 missed pings) is reconnected


class LogFollower:
    """Follows (or, with follow=False, reads) one workflow's logs. Iterate it once.

    server: base URL of reana-log-sse; workflow: UUID, or a REANA name such as
    `myanalysis.42` when the server runs with REANA_LOG_SSE_AUTH=reana; token: sent as
    `Authorization: Bearer`; jobs: job ids or step names; kind: "job" or "workflow";
    tail: start with the last N lines; since: start after that line id.
    After iteration, `status` is the workflow's last known status and `ended` says
    whether the server sent `end`.
    """

    def __init__(
        self,
        server: str,
        workflow: str,
        *,
        token: str | None = None,
        jobs: Sequence[str] = (),
        kind: Literal["job", "workflow"] | None = None,
        tail: int | None = None,
        since: int | None = None,
        follow: bool = True,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        connect_timeout: float = DEFAULT_TIMEOUT,
        read_timeout: float | None = None,
        verify: bool | ssl.SSLContext = True,
        on_retry: RetryHook | None = None,
        on_reconnect: Callable[[], None] | None = None,
        wait: bool = False,
        wait_interval: float = 2.0,
        on_wait: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.workflow = workflow
        self.token = token
        self.jobs = tuple(jobs)
        self.kind = kind
        self.tail = tail
        self.follow = follow
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        if read_timeout is None:
            read_timeout = STREAM_READ_TIMEOUT if follow else connect_timeout
        self.timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self.verify = verify
        self.on_retry = on_retry
        self.on_reconnect = on_reconnect
        self.wait = wait
        self.wait_interval = wait_interval
        self.on_wait = on_wait
        self._waited = False  # on_wait was called
        self.transport = transport
        self.last_id: int | None = since  # every line up to here was yielded (or skipped)
        self.status: str | None = None  # the workflow's last known status
        self.ended = False
        self.reconnects = 0
        self.reached = False  # the server answered at least once
        self._failures = 0  # failed attempts in a row without progress
        self._lost = False  # an attempt failed since the last stream opened
        self._statuses: dict[tuple[str | None, str | None], str] = {}
        self._progress = False
        # Lines from pods carry the Kubernetes Job name, not the step: a status event that
        # pairs a requested step with its job id widens the filter (reconnecting at once).
        self._job_ids: set[str] = set()
        self._refilter = False

    # -- what both loops share -----------------------------------------------------------

    def _path(self, suffix: str) -> str:
        return f"{self.server}/api/workflows/{quote(self.workflow, safe='')}/{suffix}"

    def _filters(self) -> list[tuple[str, str]]:
        params = [("job", j) for j in (*self.jobs, *sorted(self._job_ids - set(self.jobs)))]
        if self.kind:
            params.append(("kind", self.kind))
        return params

    def _stream_request(self) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
        params = self._filters()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        elif self.tail is not None:
            params.append(("tail", str(self.tail)))
        return self._path("logs/stream"), params, headers

    def _read_request(self) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
        params = [*self._filters(), ("format", "json")]
        if self.last_id is None and self.tail is not None:
            params.append(("tail", str(self.tail)))
        else:
            params += [("since", str(self.last_id or 0)), ("limit", str(READ_PAGE))]
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self._path("logs"), params, headers

    @staticmethod
    def _refusal(status: int, body: bytes) -> ClientError | _Retry:
        try:
            detail = orjson.loads(body)
            message = str(detail.get("error") or detail.get("message") or detail)
        except (orjson.JSONDecodeError, AttributeError):
            message = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
        if status in (401, 403):
            return AuthError(message, status)
        if status == 404:
            return NotFound(message, status)
        if status in (408, 429) or status >= 500:
            return _Retry(f"it answered HTTP {status}: {message}")
        return RequestError(message, status)

    def _events(self, raw: list[RawEvent]) -> list[Event]:
        out: list[Event] = []
        last = self.last_id
        for name, data, eid in raw:
            if name == b"log":
                seq = int(eid) if eid else 0
                if seq:
                    if last is not None and seq <= last:
                        continue  # already yielded before a reconnect
                    last = seq
                out.append(LogLine(seq, data))
            elif name == b"status":
                d = orjson.loads(data)
                key = (d.get("job_id"), d.get("step"))
                if self._statuses.get(key) == d.get("status"):
                    continue  # the same status again, as a new connection's first frames
                self._statuses[key] = d["status"]
                self._progress = True
                change = StatusChange(d.get("workflow_id"), key[0], key[1], d["status"])
                if key == (None, None):
                    self.status = d["status"]
                elif key[0] and key[1] in self.jobs and key[0] not in self._job_ids:
                    self._job_ids.add(key[0])
                    self._refilter = True
                    out.append(change)
                    break  # what follows is read again, with the wider filter
                elif self.jobs and not {key[0], key[1]} & ({*self.jobs} | self._job_ids):
                    continue  # another job's (the server filters lines, not statuses)
                out.append(change)
            elif name == b"end":
                d = orjson.loads(data)
                self.status = d.get("status", self.status)
                self.ended = True
                out.append(End(d.get("workflow_id"), d.get("status")))
                break
        if last != self.last_id:
            self.last_id = last
            self._progress = True
        return out

    def _page(self, body: bytes) -> tuple[list[Event], bool]:
        """A read endpoint page: its lines, and whether more may follow."""
        page = orjson.loads(body)
        self.status = page.get("status")
        lines = page.get("lines") or []
        out: list[Event] = [LogLine(line["id"], None, line) for line in lines]
        if out:
            self.last_id = out[-1].id  # type: ignore[union-attr]
        more = self.tail is None and len(lines) >= READ_PAGE
        self.tail = None
        return out, more

    def _failed(self, exc: Exception) -> float:
        """After a failed attempt: the seconds to wait before the next, or raise."""
        if isinstance(exc, httpx.UnsupportedProtocol):
            raise RequestError(f"{self.server} is not an http:// or https:// URL") from None
        reason = describe(exc, self.timeout)
        if not self.follow and not self.reached and isinstance(exc, httpx.TransportError):
            # a one-shot read that never had an answer: say so now, not after retries
            raise Unreachable(f"cannot reach {self.server}: {reason}") from None
        if self._progress:
            self._failures, self._progress = 0, False
        self._failures += 1
        if self._failures > self.retries:
            attempts = f"{self._failures} attempt{'s' if self._failures > 1 else ''}"
            raise Unreachable(f"gave up on {self.server} after {attempts}: {reason}") from None
        delay = min(self.max_backoff, self.backoff * 2 ** (self._failures - 1))
        delay *= 0.5 + random.random() / 2  # jitter: [delay/2, delay)
        self.reconnects += 1
        self._lost = True
        if self.on_retry is not None:
            self.on_retry(reason, delay, self._failures)
        return delay

    def _not_yet(self, exc: NotFound) -> float:
        """A 404 with wait=True: the seconds until asking again (once said), or raise."""
        if not self.wait:
            raise exc
        if not self._waited and self.on_wait is not None:
            self.on_wait(exc.message)
        self._waited = True
        return self.wait_interval

    def _answered(self, status: int) -> None:
        self.reached = True
        if status == 200 and self.follow and self._lost:
            self._lost = False
            if self.on_reconnect is not None:
                self.on_reconnect()

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout, "verify": self.verify}
        if self.transport is not None:
            kwargs["transport"] = self.transport
        return kwargs

    # -- blocking ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Event]]:
        """Events as they arrive, one list per network read (write, then flush, per list)."""
        with httpx.Client(**self._client_kwargs()) as client:
            while True:
                try:
                    if self.follow:
                        yield from self._stream_once(client)
                        if self.ended:
                            return
                        if self._refilter:
                            self._refilter = False
                            continue
                        raise _Retry(CLOSED)
                    more = yield from self._read_once(client)
                    if not more:
                        return
                    self._failures = 0
                    continue
                except (_Retry, httpx.TransportError) as exc:
                    delay = self._failed(exc)
                except NotFound as exc:
                    delay = self._not_yet(exc)
                time.sleep(delay)

    def _stream_once(self, client: httpx.Client) -> Iterator[list[Event]]:
        url, params, headers = self._stream_request()
        with client.stream("GET", url, params=params, headers=headers) as response:
            self._answered(response.status_code)
            if response.status_code != 200:
                raise self._refusal(response.status_code, response.read())
            decoder = SSEDecoder()
            for chunk in response.iter_bytes():
                events = self._events(decoder.feed(chunk))
                if events:
                    yield events
                if self.ended or self._refilter:
                    return

    def _read_once(self, client: httpx.Client) -> Iterator[list[Event]]:
        url, params, headers = self._read_request()
        response = client.get(url, params=params, headers=headers)
        self._answered(response.status_code)
        if response.status_code != 200:
            raise self._refusal(response.status_code, response.content)
        events, more = self._page(response.content)
        if events:
            yield events
        return more

    # -- asyncio -------------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[Event]:
        async for batch in self.abatches():
            for event in batch:
                yield event

    async def abatches(self) -> AsyncIterator[list[Event]]:
        """`batches()` for asyncio."""
        async with httpx.AsyncClient(**self._client_kwargs()) as client:
            while True:
                try:
                    if self.follow:
                        async for events in self._astream_once(client):
                            yield events
                        if self.ended:
                            return
                        if self._refilter:
                            self._refilter = False
                            continue
                        raise _Retry(CLOSED)
                    url, params, headers = self._read_request()
                    response = await client.get(url, params=params, headers=headers)
                    self._answered(response.status_code)
                    if response.status_code != 200:
                        raise self._refusal(response.status_code, response.content)
                    events, more = self._page(response.content)
                    if events:
                        yield events
                    if not more:
                        return
                    self._failures = 0
                    continue
                except (_Retry, httpx.TransportError) as exc:
                    delay = self._failed(exc)
                except NotFound as exc:
                    delay = self._not_yet(exc)
                await asyncio.sleep(delay)

    async def _astream_once(self, client: httpx.AsyncClient) -> AsyncIterator[list[Event]]:
        url, params, headers = self._stream_request()
        async with client.stream("GET", url, params=params, headers=headers) as response:
            self._answered(response.status_code)
            if response.status_code != 200:
                raise self._refusal(response.status_code, await response.aread())
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                events = self._events(decoder.feed(chunk))
                if events:
                    yield events
                if self.ended or self._refilter:
                    return


CLOSED = "the server closed the stream"


def describe(exc: BaseException, timeout: httpx.Timeout | None = None) -> str:
    """What went wrong, in plain words (no exception class names), for the user."""
    if isinstance(exc, _Retry):
        return str(exc)
    text = str(exc)
    low = text.lower()
    if isinstance(exc, httpx.ConnectTimeout):
        after = f" within {timeout.connect:g} s" if timeout and timeout.connect else ""
        return f"no answer to the connection{after}"
    if isinstance(exc, httpx.TimeoutException):
        after = f" for {timeout.read:g} s" if timeout and timeout.read else ""
        return f"the server sent nothing{after}"
    if isinstance(exc, httpx.ConnectError):
        causes, cause = [], exc.__cause__ or exc.__context__
        while cause is not None and len(causes) < 5:  # asyncio's own error sits below
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        if "refused" in low or any(isinstance(c, ConnectionRefusedError) for c in causes):
            return "connection refused: nothing listens on that port"
        if any(w in low for w in ("name or service", "nodename", "name resolution",
                                  "getaddrinfo", "no address")):
            return "unknown host name"
        if "certificate" in low:
            return "its TLS certificate is not trusted"
        if "unreachable" in low:
            return "network unreachable"
        return f"could not connect ({_plain(text)})" if text else "could not connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return CLOSED
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "the connection was cut"
    return _plain(text) or "a network error"


def _plain(text: str) -> str:
    """'[Errno 99] Cannot assign requested address' -> 'cannot assign requested address'."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.strip())
    return text[:1].lower() + text[1:]
