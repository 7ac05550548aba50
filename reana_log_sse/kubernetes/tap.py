"""The live tap: while someone follows a workflow here, read its running containers' new
lines from the apiserver (pods/log?follow=true) and store them ahead of Vector.

Vector stays the path of record. The tap exists because Vector's file reader re-reads a
file that was idle for 10 s only every 10 s (lib/file-source/src/file_watcher/mod.rs
should_read), so a quiet job's next line can wait ~10-12 s for Vector. Each chunk the
apiserver sends is stored like a Vector batch with `line_key` (identity.py) as its
identity, so whichever copy comes second is a duplicate; Vector's copy then corrects the
fields the tap cannot know (adopt.sql). The chunks of all follows are stored together
(store/coalesce.py): at most one transaction and one NOTIFY per window
(REANA_LOG_SSE_KUBERNETES_TAP_WINDOW_SECONDS), however many follows are open, and the
chunk of a follow that was quiet goes at once, at most once per
REANA_LOG_SSE_KUBERNETES_TAP_QUIET_SECONDS.

- stream: the merged log (no `stream=`, which needs the PodLogsQuerySplitStreams gate)
  does not say stdout or stderr; a tapped line is stored as "stdout" until Vector's copy
  corrects it (followers that got it live saw "stdout").
- resuming: a follow ends on log rotation (kubernetes#59902), when the pod goes (404),
  or when the apiserver restarts. It is opened again with sinceTime = the last stored
  line's second (the apiserver passes sinceTime on to the kubelet with second precision,
  pkg/registry/core/pod/strategy.go LogLocation: Format(time.RFC3339)), and the lines up
  to the last stored nanosecond (counting identical timestamps) are dropped.
- identical lines (same nanosecond and text): a follow reads one container's log in
  order, so it numbers them by their true occurrence for line_key, carried in the cursor
  across chunks (however the HTTP reads cut the stream) and resumes; numbered per chunk,
  a pair split over two chunks would both be 0 and the second dropped as a duplicate.
- a line of 16 KiB or more may be a CRI partial line, which the merged log splices with
  the next fragment's timestamp in it (pkg/kubelet/kuberuntime/logs/logs.go); the tap
  leaves those to Vector, which merges partials. Under a MAX_LINE_BYTES below 16 KiB it
  stores the line's head, cut and marked truncated, as ingest cuts Vector's copy.
- a line without end (a job writing 200 MB and no newline) is never held whole: the
  follow's reader keeps at most MAX_LINE_BYTES (and the timestamp) of it and drops the
  rest as it comes (client.line_chunks).
- a follow has connect and read timeouts (REANA_LOG_SSE_KUBERNETES_FOLLOW_TIMEOUT_SECONDS)
  and its own connection pool, so a silent follow frees its connection and the pod watch
  never waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from reana_log_sse.ingest.prepare import prepare
from reana_log_sse.kubernetes.client import ApiError, Kube
from reana_log_sse.kubernetes.pods import PodView, PodWatcher
from reana_log_sse.metrics import Metrics
from reana_log_sse.store.coalesce import Coalescer
from reana_log_sse.store.errors import ServiceError
from reana_log_sse.store.identity import LineKeys, parse_ns
from reana_log_sse.store.partitions import Window
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")

LOOKBACK_NS = 15 * 1_000_000_000  # a new follow starts this far back: lines Vector may not
# have read yet (its idle re-read is up to ~12 s late); older ones it has, or will
CRI_MAX_LINE = 16 * 1024  # containerd/CRI-O split longer lines into partials
AHEAD_NS = 60 * 1_000_000_000  # a line stamped further ahead of our clock does not move
# the cursor (it is stored all the same)
_MAX_CHUNK = 5000
_FLUSH_LINES = 5000  # a flush of the follows' chunks goes at once past this many lines

Key = tuple[str, str]  # (pod uid, container)


@dataclasses.dataclass(slots=True)
class Replay:
    """The head of a resumed follow: lines up to the cursor, which were stored before."""

    ns: int
    seen: int
    here: int = 0  # lines at exactly ns in this response so far


@dataclasses.dataclass(slots=True)
class Cursor:
    ns: int  # timestamp of the last line stored from this container
    seen: int = 0  # how many lines with exactly that timestamp were stored
    # the ordinals of identical lines stored at that timestamp (line_key, identity.py)
    keys: LineKeys = dataclasses.field(default_factory=LineKeys.follow)


class Tap:
    def __init__(
        self, kube: Kube, namespace: str, store: Store, metrics: Metrics, pods: PodWatcher, *,
        window: Callable[[], Window],
        max_line_bytes: int, max_follows: int, flush_window: float = 0.0,
        flush_quiet: float = 0.0, clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """flush_window: seconds between the commits of the follows' chunks
        (store/coalesce.py); 0: each loop pass commits what came in it. flush_quiet: a
        follow silent this long has its next chunk committed at once, at most once per
        this many seconds (0: never before the window)."""
        self.kube = kube
        self.namespace = namespace
        self.store = store
        self.metrics = metrics
        self.pods = pods
        self.window = window
        self.max_line_bytes = max_line_bytes
        self.max_follows = max_follows
        self.clock = clock
        self.writer = Coalescer(store, window=flush_window, max_lines=_FLUSH_LINES,
                                quiet=flush_quiet, stored=metrics.tap_lines.inc)
        self.followed: set[uuid.UUID] = set()
        self.follows: dict[Key, asyncio.Task[None]] = {}
        self.cursors: dict[Key, Cursor] = {}
        self.gone: set[Key] = set()  # answered 404: not asked again while the pod is listed
        self.open = 0
        self.visited = 0  # pods looked at to decide what to follow

    # -- what to follow ----------------------------------------------------------------
    # Each change looks at one workflow's pods only (PodWatcher.of), so a pod event costs
    # the same however many pods are known; `visited` counts the pods looked at.

    def followed_changed(self, workflow_id: uuid.UUID, followed: bool) -> None:
        """Hub hook: a workflow's feed got its first follower, or lost its last."""
        if followed:
            self.followed.add(workflow_id)
        else:
            self.followed.discard(workflow_id)
        self.reconcile(workflow_id)

    async def pod_changed(self, pod: PodView) -> None:
        if pod.deleted:  # gone: its follows end, and nothing about it is kept
            ended = False
            for container in pod.containers:
                key = (pod.uid, container.name)
                task = self.follows.pop(key, None)
                if task is not None:
                    task.cancel()
                    ended = True
                self.cursors.pop(key, None)
                self.gone.discard(key)
            if ended:
                self._fill()
        self.reconcile(pod.workflow_id)

    def reconcile(self, workflow_id: uuid.UUID) -> None:
        """Follow the running containers of the workflow if it is followed (while fewer
        than max_follows are open); else stop its follows."""
        pods = self.pods.of(workflow_id)
        self.visited += len(pods)
        if workflow_id not in self.followed:
            ended = False
            for pod in pods.values():
                for container in pod.containers:
                    task = self.follows.pop((pod.uid, container.name), None)
                    if task is not None:
                        task.cancel()
                        ended = True
            if ended:
                self._fill()  # their slots go to followed workflows waiting for one
            return
        for pod in pods.values():
            for name in pod.tappable():
                key = (pod.uid, name)
                if (key not in self.follows and key not in self.gone
                        and len(self.follows) < self.max_follows):
                    self.follows[key] = asyncio.create_task(self._follow(key),
                                                            name=f"tap-{key}")

    def _fill(self) -> None:
        """A follow ended: start those that waited for a slot (followed workflows only)."""
        for workflow_id in list(self.followed):
            if len(self.follows) >= self.max_follows:
                return
            self.reconcile(workflow_id)

    async def stop(self) -> None:
        tasks = list(self.follows.values())
        self.follows.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.close()  # the chunks of cancelled follows are stored still

    # -- one container -----------------------------------------------------------------

    async def _follow(self, key: Key) -> None:
        delay = 0.2
        try:
            while True:
                pod = self.pods.pods.get(key[0])
                if pod is None:
                    return
                cursor = self.cursors.setdefault(key, Cursor(self.clock() - LOOKBACK_NS))
                try:
                    got = await self._follow_once(pod, key[1], cursor)
                except ApiError as exc:
                    if exc.code == 404:  # the pod is gone (the watch will say so too)
                        self.gone.add(key)
                        return
                    self.metrics.tap_errors.labels(f"http {exc.code}").inc()
                    got = False
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    self.metrics.tap_errors.labels(type(exc).__name__).inc()
                    logger.info("tap %s/%s: %s; resuming", pod.name, key[1], exc)
                    got = False
                except ServiceError as exc:
                    self.metrics.tap_errors.labels("database").inc()
                    logger.info("tap %s/%s: %s; resuming", pod.name, key[1], exc.detail)
                    got = False
                pod = self.pods.pods.get(key[0])
                if pod is None or key[1] not in pod.tappable():
                    return  # the container ended: its follow ran to the end
                # rotation or apiserver restart: resume at once, but not in a tight loop
                delay = 0.05 if got else min(delay * 2, 5.0)
                await asyncio.sleep(delay)
        finally:
            if self.follows.get(key) is asyncio.current_task():
                del self.follows[key]
                self._fill()  # a slot is free

    async def _follow_once(self, pod: PodView, container: str, cursor: Cursor) -> bool:
        """One follow request until the server ends it; True if it brought lines."""
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cursor.ns // 1_000_000_000))
        got = False
        async with self.kube.follow_log(self.namespace, pod.name, container, since,
                                        max_line_bytes=self.max_line_bytes) as chunks:
            self.open += 1
            self.metrics.tap_follows.set(self.open)
            try:
                replay: Replay | None = Replay(cursor.ns, cursor.seen)
                async for chunk in chunks:
                    for start in range(0, len(chunk), _MAX_CHUNK):
                        events, replay, after = self._parse(pod, container,
                                                            chunk[start:start + _MAX_CHUNK],
                                                            cursor, replay)
                        if events:
                            keys = cursor.keys.copy()  # kept once the lines are stored
                            await self._store(events, keys, (pod.uid, container))
                            cursor.keys = keys
                            got = True
                        cursor.ns, cursor.seen = after
            finally:
                self.open -= 1
                self.metrics.tap_follows.set(self.open)
        return got

    def _parse(
        self, pod: PodView, container: str, chunk: list[bytes], cursor: Cursor,
        replay: Replay | None,
    ) -> tuple[list[dict[str, Any]], Replay | None, tuple[int, int]]:
        """The chunk's new lines as compact events, what is left of the replay, and the
        cursor after them (applied once they are stored).

        Only the head of a response is compared with the cursor: the lines the server
        repeats because sinceTime has second precision. Past the first new line every
        line is new, whatever its timestamp says (a clock that jumped, a line stamped an
        hour ahead). The cursor never moves past the clock (plus AHEAD_NS): a resume from
        a line stamped ahead would have the kubelet skip every line after it."""
        events: list[dict[str, Any]] = []
        last, seen = cursor.ns, cursor.seen
        ahead = self.clock() + AHEAD_NS
        workflow = str(pod.workflow_id)
        for raw in chunk:
            stamp, _, message = raw.partition(b" ")
            text = stamp.decode("ascii", "replace")
            ns = parse_ns(text)
            if ns is None:
                continue
            if replay is not None:
                if ns < replay.ns:
                    continue  # stored before the follow broke
                if ns == replay.ns:
                    replay.here += 1
                    if replay.here <= replay.seen:
                        continue  # stored before the follow broke
                replay = None
            if ns <= ahead:
                if ns == last:
                    seen += 1
                else:
                    last, seen = ns, 1
            if len(message) >= CRI_MAX_LINE and self.max_line_bytes >= CRI_MAX_LINE:
                # maybe spliced CRI partials: Vector's merged copy is the right one. (Under
                # a smaller cap the line's head, all the tap and Vector keep, precedes any
                # splice; line_chunks cut it already, prepare marks it truncated.)
                continue
            events.append({
                "workflow_id": workflow, "kind": pod.kind, "job_id": pod.job_id,
                "pod": pod.name, "container": container, "stream": "stdout",
                "timestamp": text, "message": message.decode("utf-8", "replace"),
            })
        return events, replay, (last, seen)

    async def _store(self, events: list[dict[str, Any]], keys: LineKeys, source: Key) -> None:
        lines, _ = prepare(events, max_line_bytes=self.max_line_bytes, window=self.window(),
                           keys=keys)
        # the tap cannot compute Vector's digest: its lines are known by line_key alone
        lines = [line._replace(dedupe=line.line_key) for line in lines if line.line_key]
        if lines:
            # a follow quiet for a while goes early (coalesce.py)
            await self.writer.submit(lines, source=source)  # counts tap_lines
