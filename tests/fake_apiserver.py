"""A fake Kubernetes apiserver: a real HTTP server on a free port (aiohttp, in a thread),
speaking the parts of the protocol this service uses, reached through a KUBECONFIG file by
the same client library production uses (kubernetes-asyncio).

What it reproduces, and from where (kubernetes/kubernetes):
- list: a PodList with metadata.resourceVersion; label selectors `key`, `key=value`,
  `key!=value` (staging/src/k8s.io/apimachinery/pkg/labels/selector.go).
- watch (`?watch=true`): HTTP 200, chunked, one JSON event per line, types ADDED,
  MODIFIED, DELETED, BOOKMARK (only with allowWatchBookmarks; the object is a Pod with
  only metadata.resourceVersion), and ERROR whose object is a metav1.Status
  (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go, ServeHTTP). A watch from
  a compacted resourceVersion gets an ERROR event with Status code 410 reason Expired
  "too old resource version" (staging/src/k8s.io/apiserver/pkg/storage/cacher/
  watch_cache.go, getAllEventsSinceLocked -> errors.NewResourceExpired). The server ends a
  watch after timeoutSeconds.
- pods/log: text/plain, chunked; with timestamps=true each line starts with its time in
  RFC3339Nano (Go's time.RFC3339Nano: trailing zeros trimmed) and a space
  (pkg/kubelet/kuberuntime/logs/logs.go, timeFormatOut and writeLogs); lines before
  sinceTime are skipped (logs.go: `opts.since.After(msg.timestamp)`), and sinceTime
  reaches the kubelet with second precision (pkg/registry/core/pod/strategy.go
  LogLocation: Format(time.RFC3339)); a follow ends when the container exits or the log
  file is rotated (kubernetes#59902); a missing pod is 404 NotFound and a container still
  waiting is 400 BadRequest (pkg/kubelet/kubelet_pods.go, validateContainerLogStatus).
- a CRI log entry tagged P (partial, pkg/kubelet/kuberuntime/logs/logs.go parseCRILog:
  runtimeapi.LogTagPartial) is written without its newline (writeLogs: `if !msg.partial`
  ... the newline is only for a full line), after its own timestamp: a line with no end
  reaches the follow as timestamped pieces and no newline (`write(..., partial=True)`).
- a watch may be answered with an HTTP error instead of a stream: ListResource
  (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/get.go) answers `scope.err(err)`,
  the error's Status and code, when rw.Watch returns an error rather than an errWatcher
  (a storage that returns errors.NewResourceExpired directly): `watch_answer = "410-http"`.
  `"410-event"` answers every watch with the ERROR 410 event; `"hang"` never answers.
- `inject(label, event)`: sends an event as given (for example a Pod whose labels are a
  list, which no real apiserver would send) to the watches of that label.
- `log_answer = "silent"`: a follow sends its headers and then nothing; `"no-headers"`:
  a follow is never answered (a kubelet that hangs: the apiserver proxies its stream,
  pkg/registry/core/pod/rest/log.go, LogREST.Get -> genericrest.LocationStreamer).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from reana_log_sse.store.identity import format_ns, parse_ns
from tests.conftest import free_port

TOKEN = "fake-apiserver-token"
_RAW = "(as injected)"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _flag(value: str | None) -> bool:
    """A bool query parameter (staging/src/k8s.io/apimachinery/pkg/runtime/conversion.go
    Convert_Slice_string_To_bool: "", "0" and "false", in any case, are false)."""
    return value is not None and value.strip().lower() not in ("", "0", "false")


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    labels = pod["metadata"].get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    return True


class FakeApiserver:
    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.RLock()
        self._rv = itertools.count(1000)
        self.version = 999
        self.pods: dict[str, dict[str, Any]] = {}
        # (resourceVersion, type, object, labels it is selected by), in resourceVersion order
        self.history: list[tuple[int, str, Any, dict[str, str]]] = []
        self.watch_answer: str | None = None  # None, "410-event", "410-http" or "hang"
        # a BOOKMARK to every watch this often, as the watch cache sends one each
        # defaultBookmarkFrequency (1 min; storage/cacher/cacher.go); None: only when the
        # store moved on for other pods
        self.bookmark_seconds: float | None = None
        self.log_answer: str | None = None  # None, "silent" or "no-headers"
        self.compacted = 0  # watches from a resourceVersion below this get 410
        # the watch cache keeps a bounded window of events (storage/cacher/watch_cache.go:
        # a ring of `capacity` events; getAllEventsSinceLocked answers a resourceVersion
        # older than its oldest with errors.NewResourceExpired): None keeps them all
        self.history_limit: int | None = None
        self.logs: dict[tuple[str, str], list[tuple[int, str, bool]]] = {}  # (ns, text, partial)
        self.rotations: dict[tuple[str, str], int] = {}
        self.open_follows: dict[tuple[str, str], int] = {}
        self.follow_requests: list[dict[str, str]] = []
        self.open_watches = 0
        self._transports: set[Any] = set()  # of open watch and log streams
        self.watch_requests: list[dict[str, str]] = []
        self.list_requests: list[dict[str, str]] = []
        self.request_times: list[tuple[str, str, float]] = []  # (list|watch, selector, t)
        self._generation = 0  # bumped to expire open watches (ERROR 410)
        self._ended = 0  # bumped to end open watches normally, as timeoutSeconds does
        self.bookmarks: list[tuple[str, int]] = []  # (selector, resourceVersion) sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        # one per container whose log a follow waits on (the loop's thread only): a write
        # wakes the follows of its container, not every follow (the bench's busy tap)
        self._log_changed: dict[tuple[str, str], asyncio.Event] = {}
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeApiserver:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "fake apiserver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._runner = None
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._pods)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self._log)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        self._started.set()
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {self.url}\n"
            f"users:\n- name: reader\n  user:\n    token: {TOKEN}\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: reader\n"
            f"    namespace: {self.namespace}\ncurrent-context: fake\n")
        return path

    def _wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_changed)

    def _set_changed(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()
        self._set_logs_changed(list(self._log_changed))

    def _wake_logs(self, keys: set[tuple[str, str]]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_logs_changed, keys)

    def _set_logs_changed(self, keys: Any) -> None:
        for key in keys:
            event = self._log_changed.pop(key, None)
            if event is not None:
                event.set()

    async def _wait_log(self, key: tuple[str, str], timeout: float) -> None:
        """Until the container's log changes (or anything else does: _set_changed)."""
        event = self._log_changed.get(key)
        if event is None:
            event = self._log_changed[key] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _wait(self, timeout: float) -> None:
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # -- what tests do -----------------------------------------------------------------

    def put_pod(self, pod: dict[str, Any]) -> None:
        with self._lock:
            name = pod["metadata"]["name"]
            kind = "MODIFIED" if name in self.pods else "ADDED"
            pod = copy.deepcopy(pod)
            pod["metadata"].setdefault("uid", str(uuid.uuid4()))
            if name in self.pods:
                pod["metadata"]["uid"] = self.pods[name]["metadata"]["uid"]
            self.version = next(self._rv)
            pod["metadata"]["resourceVersion"] = str(self.version)
            self.pods[name] = pod
            self.history.append((self.version, kind, pod, _labels(pod)))
            self._trim()
        self._wake()

    def delete_pod(self, name: str) -> None:
        with self._lock:
            pod = copy.deepcopy(self.pods.pop(name))
            self.version = next(self._rv)
            pod["metadata"]["resourceVersion"] = str(self.version)
            self.history.append((self.version, "DELETED", pod, _labels(pod)))
        self._wake()

    def _trim(self) -> None:
        limit = self.history_limit
        if limit is not None and len(self.history) > 2 * limit:  # trimmed in steps
            del self.history[:-limit]
            self.compacted = self.history[0][0] - 1

    def inject(self, label: str, event: Any) -> None:
        """Send `event` (any JSON) as it is, one line, to the watches of `label`."""
        with self._lock:
            self.version = next(self._rv)
            self.history.append((self.version, _RAW, event, {label: "x"}))
        self._wake()

    def compact(self) -> None:
        """Forget the event history (etcd compaction): resuming watches get 410."""
        with self._lock:
            self.compacted = self.version + 1
            self.history.clear()

    def expire_watches(self) -> None:
        """Open watches get an ERROR 410 event in their stream, as after a compaction."""
        with self._lock:
            self.compact()
            self._generation += 1
        self._wake()

    def end_watches(self) -> None:
        """Open watches end normally, as when their timeoutSeconds is up."""
        with self._lock:
            self._ended += 1
        self._wake()

    def write(self, pod: str, container: str, message: str, ns: int,
              partial: bool = False) -> None:
        """A log entry; a partial one has no newline (the line goes on in the next)."""
        with self._lock:
            self.logs.setdefault((pod, container), []).append((ns, message, partial))
        self._wake_logs({(pod, container)})

    def write_many(self, entries: list[tuple[str, str, str, int]]) -> None:
        """Log entries (pod, container, message, ns) of many containers, with one wake-up
        of their follows (the bench's busy tap: a wake-up per line costs a follow a look
        at its log, for each line; a write wakes only the follows of its containers)."""
        with self._lock:
            for pod, container, message, ns in entries:
                self.logs.setdefault((pod, container), []).append((ns, message, False))
        self._wake_logs({(pod, container) for pod, container, _, _ in entries})

    def rotate(self, pod: str, container: str) -> None:
        """The kubelet's follow stops at a log rotation (kubernetes#59902)."""
        with self._lock:
            self.rotations[(pod, container)] = self.rotations.get((pod, container), 0) + 1
        self._wake()

    def drop_connections(self) -> None:
        """An apiserver restart: every open watch and log stream is cut (TCP reset)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drop)

    def _drop(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def follows(self) -> int:
        with self._lock:
            return sum(self.open_follows.values())

    # -- handlers ----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        selector = request.query.get("labelSelector", "")
        watch = _flag(request.query.get("watch"))
        self.request_times.append(("watch" if watch else "list", selector, time.monotonic()))
        if not watch:
            self.list_requests.append(dict(request.query))
            return self._list(request, selector)
        return await self._watch(request, selector)

    def _list(self, request: web.Request, selector: str) -> web.Response:
        """A PodList; with `limit`, in pages: metadata.continue is an opaque token holding
        the list's resourceVersion and the next key (storage/continue.go EncodeContinue),
        absent on the last page; a token older than the compaction is 410 Expired
        (storage/etcd3/store.go GetList). Unlike etcd, a later page shows the pods as
        they are now, not as they were at the first page's resourceVersion."""
        limit = int(request.query.get("limit") or 0)
        token = request.query.get("continue")
        with self._lock:
            version, start = self.version, ""
            if token:
                state = orjson.loads(base64.urlsafe_b64decode(token))
                version, start = int(state["rv"]), state["start"]
                if version < self.compacted:
                    return web.json_response(_status(
                        410, "Expired", "The provided continue parameter is too old to "
                        "display a consistent list result. You can start a new list without "
                        "the continue parameter."), status=410)
            items = sorted((p for p in self.pods.values()
                            if _matches(_labels(p), selector)
                            and p["metadata"]["name"] >= start),
                           key=lambda p: p["metadata"]["name"])
        meta: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and len(items) > limit:
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(orjson.dumps({
                "v": "meta.k8s.io/v1", "rv": version,
                "start": items[-1]["metadata"]["name"] + "\x00"})).decode()
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": meta,
                                  "items": items})

    async def _watch(self, request: web.Request, selector: str) -> web.StreamResponse:
        self.watch_requests.append(dict(request.query))
        if self.watch_answer == "410-http":
            return web.json_response(_status(410, "Expired", "too old resource version"),
                                     status=410)
        if self.watch_answer == "hang":
            await asyncio.Event().wait()  # until the client leaves (the task is cancelled)
        since = int(request.query.get("resourceVersion") or self.version)
        bookmarks = _flag(request.query.get("allowWatchBookmarks"))
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._transports.add(request.transport)
        self.open_watches += 1
        try:
            return await self._watch_events(request, response, selector, since, bookmarks,
                                            timeout)
        except ConnectionError:
            return response
        finally:
            self.open_watches -= 1

    async def _watch_events(self, request: web.Request, response: web.StreamResponse,
                            selector: str, since: int, bookmarks: bool,
                            timeout: float) -> web.StreamResponse:
        if True:
            generation, ended = self._generation, self._ended
            if since < self.compacted or self.watch_answer == "410-event":
                await self._send(response, {"type": "ERROR", "object": _status(
                    410, "Expired", f"too old resource version: {since} ({self.compacted})")})
                return response
            deadline = asyncio.get_running_loop().time() + timeout
            sent = since
            bookmarked = asyncio.get_running_loop().time()
            while asyncio.get_running_loop().time() < deadline:
                with self._lock:
                    if self._generation != generation:
                        events: list[dict[str, Any]] = [{"type": "ERROR", "object": _status(
                            410, "Expired", "too old resource version")}]
                        done = True
                    else:
                        done = False
                        start = bisect.bisect_right(self.history, sent, key=lambda h: h[0])
                        picked = [(rv, obj if kind == _RAW else {"type": kind, "object": obj})
                                  for rv, kind, obj, labels in self.history[start:]
                                  if _matches(labels, selector)]
                        events = [event for _, event in picked]
                        sent = max(sent, self.version)
                for event in events:
                    await self._send(response, event)
                if done:
                    return response
                if events:  # the client knows it is at the last event's resourceVersion
                    since = picked[-1][0]
                # nothing for this selector, but the store moved on (other pods changed):
                # a BOOKMARK carries the newer resourceVersion (watch.go, cacher.go)
                every = self.bookmark_seconds
                if (bookmarks and every is not None and not events
                        and asyncio.get_running_loop().time() - bookmarked >= every):
                    since = min(since, sent - 1)  # send one now, at the current version
                if bookmarks and not events and sent > since:
                    bookmarked = asyncio.get_running_loop().time()
                    await self._send(response, {"type": "BOOKMARK", "object": {
                        "kind": "Pod", "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(sent)}}})
                    since = sent
                    self.bookmarks.append((selector, sent))
                if self._ended != ended:
                    return response
                await self._wait(min(1.0 if every is None else every,
                                      deadline - asyncio.get_running_loop().time()))
            return response

    async def _send(self, response: web.StreamResponse, event: dict[str, Any]) -> None:
        await response.write(orjson.dumps(event) + b"\n")  # the client left: ConnectionError

    async def _log(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        name = request.match_info["name"]
        container = request.query.get("container", "")
        key = (name, container)
        self.follow_requests.append(dict(request.query, pod=name))
        with self._lock:
            pod = self.pods.get(name)
        if pod is None:
            return web.json_response(_status(404, "NotFound", f'pods "{name}" not found'),
                                     status=404)
        if self.log_answer == "no-headers":
            await asyncio.Event().wait()  # until the client leaves (the task is cancelled)
        if self._state(name, container) == "waiting":
            return web.json_response(_status(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to '
                "start: ContainerCreating"), status=400)
        since_ns = 0
        if "sinceTime" in request.query:
            parsed = parse_ns(request.query["sinceTime"])
            since_ns = (parsed // 1_000_000_000) * 1_000_000_000 if parsed else 0
        follow = _flag(request.query.get("follow"))
        stamps = _flag(request.query.get("timestamps"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._transports.add(request.transport)
        with self._lock:
            self.open_follows[key] = self.open_follows.get(key, 0) + 1
            rotation = self.rotations.get(key, 0)
        try:
            position = 0
            while self.log_answer == "silent":
                if request.transport is None or request.transport.is_closing():
                    return response
                await self._wait(0.2)
            while True:
                with self._lock:
                    lines = self.logs.get(key, [])[position:]
                    position += len(lines)
                    rotated = self.rotations.get(key, 0) != rotation
                    gone = name not in self.pods
                out: list[bytes] = []
                size = 0
                for ns, m, partial in lines:
                    if ns < since_ns:
                        continue
                    piece = ((format_ns(ns) + " ").encode() if stamps else b"") + m.encode()
                    out.append(piece if partial else piece + b"\n")
                    size += len(out[-1])
                    if size >= 1 << 20:  # in pieces, as the kubelet's copy buffer sends
                        try:
                            await response.write(b"".join(out))
                        except ConnectionError:  # the client left
                            return response
                        out, size = [], 0
                if out:
                    try:
                        await response.write(b"".join(out))
                    except ConnectionError:  # the client left
                        return response
                if not follow or rotated or gone or self._state(name, container) != "running":
                    return response
                if request.transport is None or request.transport.is_closing():
                    return response  # the client left (Go's net/http cancels the request)
                await self._wait_log(key, 0.2)
        finally:
            with self._lock:
                self.open_follows[key] -= 1

    def _state(self, name: str, container: str) -> str:
        with self._lock:
            pod = self.pods.get(name)
            if pod is None:
                return "gone"
            status = pod.get("status") or {}
            for c in (status.get("containerStatuses") or []) + (
                    status.get("initContainerStatuses") or []):
                if c.get("name") == container:
                    return next(iter(c.get("state") or {"waiting": {}}))
        return "waiting"


# -- REANA-shaped pods ---------------------------------------------------------------------


def container_status(name: str, state: str, exit_code: int = 0) -> dict[str, Any]:
    if state == "running":
        body: dict[str, Any] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    elif state == "terminated":
        body = {"terminated": {"exitCode": exit_code,
                               "reason": "Completed" if exit_code == 0 else "Error"}}
    else:
        body = {"waiting": {"reason": "ContainerCreating"}}
    # image and imageID are always set (kubelet_pods.go convertToAPIContainerStatuses;
    # imageID is "" until the image is pulled): kubernetes-asyncio's V1ContainerStatus
    # refuses a status without them
    return {"name": name, "state": body, "ready": state == "running", "restartCount": 0,
            "image": "docker.io/library/python:3.12",
            "imageID": "" if state == "waiting" else "docker.io/library/python@sha256:0"}


def job_pod(workflow_id: uuid.UUID | str, job: str, *, phase: str = "Pending",
            state: str = "waiting", exit_code: int = 0, scheduled: bool = True,
            suffix: str = "abcde") -> dict[str, Any]:
    """A job pod as reana-job-controller's KubernetesJobManager creates it."""
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": f"{job}-{suffix}", "namespace": "default", "labels": {
            "reana-run-job-workflow-uuid": str(workflow_id), "job-name": job,
            "batch.kubernetes.io/job-name": job, "controller-uid": "x"}},
        "spec": {"containers": [{"name": "job"}], "nodeName": "node-1" if scheduled else None},
        "status": {"phase": phase,
                   "conditions": [{"type": "PodScheduled",
                                   "status": "True" if scheduled else "False"}],
                   "containerStatuses": [container_status("job", state, exit_code)]},
    }


def batch_pod(workflow_id: uuid.UUID | str, *, phase: str = "Running", engine: str = "running",
              exit_code: int = 0) -> dict[str, Any]:
    """A workflow-engine pod as reana-workflow-controller's workflow_run_manager creates it."""
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": f"reana-run-batch-{workflow_id}-x7k2p", "namespace": "default",
                     "labels": {"reana_workflow_mode": "batch",
                                "reana-run-batch-workflow-uuid": str(workflow_id)}},
        "spec": {"containers": [{"name": "workflow-engine"}, {"name": "job-controller"}],
                 "nodeName": "node-1"},
        "status": {"phase": phase,
                   "conditions": [{"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [container_status("workflow-engine", engine, exit_code),
                                         container_status("job-controller", "running")]},
    }


@contextlib.contextmanager
def running(namespace: str = "default") -> Iterator[FakeApiserver]:
    server = FakeApiserver(namespace).start()
    try:
        yield server
    finally:
        server.stop()
