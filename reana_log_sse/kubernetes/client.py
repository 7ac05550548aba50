"""Talking to the Kubernetes API: configuration, the pod list/watch and pods/log requests.

The library is kubernetes-asyncio (the official client's generated API on aiohttp): it
loads both an in-cluster service account (with its rotating token) and a KUBECONFIG
(contexts, exec plugins, client certificates), and its generated methods stream a watch
(`watch=True`, `allow_watch_bookmarks`, `resource_version`) or a log follow when called
with `_preload_content=False`. This module reads those streams itself, so the watch
loop (pods.py) decides how to handle resourceVersion, BOOKMARK and 410 Gone, and the tap
(tap.py) can pass `sinceTime`, a PodLogOptions field the generated method does not expose.
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

from reana_log_sse.settings import Settings

logger = logging.getLogger("reana_log_sse")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# a watch request asks the apiserver to end it after this long (the loop watches again
# from the last resourceVersion); reads time out a bit later so a dead peer is noticed
WATCH_SECONDS = 240
_WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
_FOLLOW_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
_LIST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)


class ApiError(Exception):
    """The apiserver answered with an error status (or a watch ERROR event)."""

    def __init__(self, code: int, reason: str, message: str = "") -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason


def enabled(settings: Settings, service_account: Path = SERVICE_ACCOUNT) -> bool:
    if settings.kubernetes == "off":
        return False
    if settings.kubernetes == "on":
        return True
    return (service_account / "token").exists()


async def connect(service_account: Path = SERVICE_ACCOUNT) -> Kube:
    """In a pod with a service account: that; elsewhere KUBECONFIG (or ~/.kube/config)."""
    configuration = k8s.Configuration()
    if (service_account / "token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        # read KUBECONFIG now (the library reads it once, at import)
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        await k8s_config.load_kube_config(config_file=path, client_configuration=configuration,
                                          persist_config=False)
    return Kube(k8s.ApiClient(configuration=configuration))


class Kube:
    """The few requests this service makes, as raw streams of the client's session."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    async def list_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        """A PodList as JSON (items and metadata.resourceVersion)."""
        resp = await self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False,
            _request_timeout=_LIST_TIMEOUT)
        async with _released(resp):
            body = await resp.read()
            if resp.status >= 400:
                raise _api_error(resp.status, body)
            data: dict[str, Any] = orjson.loads(body)
            return data

    @contextlib.asynccontextmanager
    async def watch_pods(
        self, namespace: str, selector: str, resource_version: str
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The watch events after resource_version, one JSON object a line
        (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go)."""
        resp = await self.core.list_namespaced_pod(
            namespace, label_selector=selector, watch=True, resource_version=resource_version,
            allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
            _preload_content=False, _request_timeout=_WATCH_TIMEOUT)
        async with _released(resp):
            if resp.status >= 400:
                raise _api_error(resp.status, await resp.read())

            async def events() -> AsyncIterator[dict[str, Any]]:
                async for line in lines(resp):
                    if line.strip():
                        yield orjson.loads(line)

            yield events()

    @contextlib.asynccontextmanager
    async def follow_log(
        self, namespace: str, pod: str, container: str, since_time: str | None
    ) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        """GET pods/{pod}/log?follow=true&timestamps=true&container=..&sinceTime=.. as lines.
        The generated read_namespaced_pod_log has no since_time; call_api takes it."""
        query: list[tuple[str, Any]] = [("container", container), ("follow", "true"),
                                        ("timestamps", "true")]
        if since_time is not None:
            query.append(("sinceTime", since_time))
        resp = await self.api.call_api(
            "/api/v1/namespaces/{namespace}/pods/{name}/log", "GET",
            path_params={"namespace": namespace, "name": pod}, query_params=query,
            header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"],
            response_types_map={200: "str"}, _return_http_data_only=True,
            _preload_content=False, _request_timeout=_FOLLOW_TIMEOUT)
        async with _released(resp):
            if resp.status >= 400:
                raise _api_error(resp.status, await resp.read())
            yield line_chunks(resp)


async def line_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The complete lines (without newline) of each chunk of a streamed body as it arrives
    (a pod's JSON can exceed aiohttp's readline limit). A last line without newline is
    dropped: a follow cut mid-line is resumed from that line's timestamp."""
    rest = b""
    async for chunk in resp.content.iter_any():
        *complete, rest = (rest + chunk).split(b"\n")
        if complete:
            yield complete


async def lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in line_chunks(resp):
        for line in chunk:
            yield line


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


def status_error(status: dict[str, Any]) -> ApiError:
    """A watch ERROR event's object (a metav1.Status, e.g. code 410 reason Expired)."""
    return ApiError(int(status.get("code") or 500), str(status.get("reason") or ""),
                    str(status.get("message") or ""))
