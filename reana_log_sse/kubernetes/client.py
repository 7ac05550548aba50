"""Talking to the Kubernetes API: configuration, the pod list/watch and pods/log requests.

The library is kubernetes-asyncio (the official client's generated API on aiohttp): it
loads both an in-cluster service account (with its rotating token) and a KUBECONFIG
(contexts, exec plugins, client certificates), and its generated methods stream a watch
(`watch=True`, `allow_watch_bookmarks`, `resource_version`) or a log follow when called
with `_preload_content=False`. This module reads those streams itself, so the watch
loop (pods.py) decides how to handle resourceVersion, BOOKMARK and 410 Gone, and the tap
(tap.py) can pass `sinceTime`, a PodLogOptions field the generated method does not expose.

Two connection pools: the library's ApiClient owns one aiohttp connector whose `limit` is
Configuration.connection_pool_maxsize (kubernetes_asyncio/client/rest.py,
RESTClientObject). The list/watch requests get a client of their own, so the tap's
follows, however many, can never take the connections the pod watch needs; the follows'
client holds at most as many connections as the tap may open follows.

Every request is bounded in time: a list in total, a watch and a follow by connect and
read timeouts (aiohttp's sock_read also covers the wait for the response's headers), so a
follow that goes silent or never answers frees its connection and is opened again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from reana_log_sse.kubernetes import SERVICE_ACCOUNT

logger = logging.getLogger("reana_log_sse")

# a watch request asks the apiserver to end it after this long (the loop watches again
# from the last resourceVersion); reads time out a bit later so a dead peer is noticed
WATCH_SECONDS = 240
_WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=10,
                                       sock_read=WATCH_SECONDS + 30)
_LIST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
# an object in etcd is at most 1.5 MiB (its default --max-request-bytes); a longer watch
# line is cut there and skipped as malformed
WATCH_LINE_BYTES = 8 * 1024 * 1024
# a listing comes in pages of this many pods, as client-go's reflector lists
# (staging/src/k8s.io/client-go/tools/pager/pager.go: defaultPageSize = 500); a page is
# read up to LIST_PAGE_BYTES (500 pods of at most 1.5 MiB would be 750 MiB: real pods are
# a few KiB, and a page past the bound is an error, retried with backoff)
LIST_PAGE = 500
LIST_PAGE_BYTES = 64 * 1024 * 1024
WATCH_POOL = 6  # three label watches (each holds one list or watch at a time), and spare
# a timestamp prefix (RFC3339Nano with a zone, ~35 bytes) and its space fit in this
_STAMP_ROOM = 64


class ApiError(Exception):
    """The apiserver answered with an error status (or a watch ERROR event)."""

    def __init__(self, code: int, reason: str, message: str = "") -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason


async def connect(service_account: Path = SERVICE_ACCOUNT, *, max_follows: int = 100,
                  follow_timeout: float = 300.0) -> Kube:
    """In a pod with a service account: that; elsewhere KUBECONFIG (or ~/.kube/config)."""
    configuration = k8s.Configuration()
    if (service_account / "token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        # read KUBECONFIG now (the library reads it once, at import)
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        await k8s_config.load_kube_config(config_file=path, client_configuration=configuration,
                                          persist_config=False)
    # RESTClientObject sizes its connector from the configuration when the client is made
    configuration.connection_pool_maxsize = WATCH_POOL
    watch_api = k8s.ApiClient(configuration=configuration)
    configuration.connection_pool_maxsize = max(1, max_follows)
    follow_api = k8s.ApiClient(configuration=configuration)
    return Kube(watch_api, follow_api, follow_timeout=follow_timeout)


class Kube:
    """The few requests this service makes, as raw streams of the clients' sessions: the
    pod list and watch on `api`, the log follows on `follow_api` (their own pool)."""

    def __init__(self, api: k8s.ApiClient, follow_api: k8s.ApiClient | None = None, *,
                 follow_timeout: float = 300.0) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.follow_api = api if follow_api is None else follow_api
        self.follow_timeout = aiohttp.ClientTimeout(
            total=None, connect=follow_timeout, sock_connect=10, sock_read=follow_timeout)

    async def close(self) -> None:
        await self.api.close()
        if self.follow_api is not self.api:
            await self.follow_api.close()

    async def list_pods(self, namespace: str, selector: str) -> AsyncIterator[Any]:
        """The PodList as JSON pages of at most LIST_PAGE pods (`limit` and `continue`),
        each read up to LIST_PAGE_BYTES; the first page's metadata.resourceVersion is the
        list's. An expired continue token is a 410, as for a watch."""
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"_continue": token} if token else {}
            resp = await self.core.list_namespaced_pod(
                namespace, label_selector=selector, limit=LIST_PAGE, _preload_content=False,
                _request_timeout=_LIST_TIMEOUT, **paging)
            async with _released(resp):
                if resp.status >= 400:
                    raise _api_error(resp.status, await _bounded_read(resp))
                page = orjson.loads(await _bounded_read(resp, LIST_PAGE_BYTES, strict=True))
            yield page
            meta = page.get("metadata") if isinstance(page, dict) else None
            token = meta.get("continue") if isinstance(meta, dict) else None
            if not token or not isinstance(token, str):
                return

    @contextlib.asynccontextmanager
    async def watch_pods(
        self, namespace: str, selector: str, resource_version: str
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """The watch events after resource_version, one JSON object a line
        (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go); a line that is
        not JSON is logged and skipped. Each event is what the server sent: the caller
        checks its shape."""
        resp = await self.core.list_namespaced_pod(
            namespace, label_selector=selector, watch=True, resource_version=resource_version,
            allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
            _preload_content=False, _request_timeout=_WATCH_TIMEOUT)
        async with _released(resp):
            if resp.status >= 400:
                raise _api_error(resp.status, await _bounded_read(resp))

            async def events() -> AsyncIterator[Any]:
                async for line in lines(resp, WATCH_LINE_BYTES):
                    if not line.strip():
                        continue
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as exc:  # or cut at WATCH_LINE_BYTES
                        logger.warning("pod watch: an event that is not JSON skipped (%s, "
                                       "%d bytes)", exc, len(line))

            yield events()

    @contextlib.asynccontextmanager
    async def follow_log(
        self, namespace: str, pod: str, container: str, since_time: str | None, *,
        max_line_bytes: int,
    ) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        """GET pods/{pod}/log?follow=true&timestamps=true&container=..&sinceTime=.. as lines,
        each cut after its timestamp and max_line_bytes of message (line_chunks).
        The generated read_namespaced_pod_log has no since_time; call_api takes it."""
        query: list[tuple[str, Any]] = [("container", container), ("follow", "true"),
                                        ("timestamps", "true")]
        if since_time is not None:
            query.append(("sinceTime", since_time))
        resp = await self.follow_api.call_api(
            "/api/v1/namespaces/{namespace}/pods/{name}/log", "GET",
            path_params={"namespace": namespace, "name": pod}, query_params=query,
            header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"],
            response_types_map={200: "str"}, _return_http_data_only=True,
            _preload_content=False, _request_timeout=self.follow_timeout)
        async with _released(resp):
            if resp.status >= 400:
                raise _api_error(resp.status, await _bounded_read(resp))
            yield line_chunks(resp, max_line_bytes + _STAMP_ROOM)


async def line_chunks(resp: aiohttp.ClientResponse,
                      limit: int | None = None) -> AsyncIterator[list[bytes]]:
    """The complete lines (without newline) of each chunk of a streamed body as it arrives
    (a pod's JSON can exceed aiohttp's readline limit). A last line without newline is
    dropped: a follow cut mid-line is resumed from that line's timestamp.

    With a limit, a line is never held longer than that: its first `limit` bytes are
    yielded as the line (longer than the caller's cap, so it is cut and marked truncated
    there) and the rest, up to its newline, is dropped as it comes. Each chunk is split
    once: the bytes before a line's end are kept, never split again."""
    rest = bytearray()
    skipping = False  # inside a line already cut
    async for chunk in resp.content.iter_any():
        complete: list[bytes] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not skipping:
                if limit is not None and len(rest) + len(piece) > limit:
                    rest += piece[:limit - len(rest)]
                    complete.append(bytes(rest))
                    rest.clear()
                    skipping = True
                else:
                    rest += piece
            if end < 0:
                break
            if skipping:
                skipping = False
            else:
                complete.append(bytes(rest))
                rest.clear()
            start = end + 1
        if complete:
            yield complete


async def lines(resp: aiohttp.ClientResponse, limit: int | None = None) -> AsyncIterator[bytes]:
    async for chunk in line_chunks(resp, limit):
        for line in chunk:
            yield line


async def _bounded_read(resp: aiohttp.ClientResponse, limit: int = 64 * 1024, *,
                        strict: bool = False) -> bytes:
    """A body, at most `limit` bytes of it (an error's metav1.Status is small); strict:
    a longer body is an error (ValueError) rather than cut."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            if strict:
                raise ValueError(f"an answer of the apiserver over {limit} bytes")
            break
    return b"".join(parts)[:limit]


@contextlib.asynccontextmanager
async def _released(resp: aiohttp.ClientResponse) -> AsyncIterator[None]:
    try:
        yield
    finally:
        resp.release()
        resp.close()


def _api_error(status: int, body: bytes) -> ApiError:
    """A metav1.Status body (kind Status, reason, message, code) or whatever came."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ApiError(status, "Unknown", body[:200].decode("utf-8", "replace"))
    if isinstance(data, dict):
        return ApiError(int(data.get("code") or status), str(data.get("reason") or ""),
                        str(data.get("message") or ""))
    return ApiError(status, "Unknown")


def status_error(status: Any) -> ApiError:
    """A watch ERROR event's object (a metav1.Status, e.g. code 410 reason Expired)."""
    if not isinstance(status, dict):
        return ApiError(500, "Unknown", "an ERROR event without a Status")
    code = status.get("code")
    return ApiError(code if isinstance(code, int) and 100 <= code < 600 else 500,
                    str(status.get("reason") or ""), str(status.get("message") or ""))
