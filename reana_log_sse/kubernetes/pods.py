"""REANA's pods as the Kubernetes API reports them: list + watch, and what their states mean.

Which pods (verified in REANA's sources; docs/reana-integration.md section 0):
- job pods: label `reana-run-job-workflow-uuid` (reana-job-controller
  reana_job_controller/kubernetes_job_manager.py, KubernetesJobManager.execute; its
  job_monitor.py watches pods by the same label). The Job is named backend_job_id, which
  Kubernetes puts on the pod as `job-name`; the user's command runs in container `job`.
- workflow-engine ("batch") pods: label `reana-run-batch-workflow-uuid`
  (reana-workflow-controller workflow_run_manager.py, _create_job_spec); containers
  `workflow-engine` and the `job-controller` sidecar.
- Dask pods: label `reana-run-dask-workflow-uuid` (reana-workflow-controller dask.py).

A label selector cannot OR two labels, so there is one list + watch per label. Each
follows the apiserver's protocol (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
watch.go, .../storage/cacher/cacher.go): list for a resourceVersion, watch from it with
allowWatchBookmarks, move the resourceVersion on every event and BOOKMARK, watch again
from it when the server ends the request, and list again on 410 Gone (an ERROR event
whose Status has code 410, or an HTTP 410).

The watch cannot die, storm or go stale unnoticed:
- an object that is not the Pod expected (labels as a list, a missing metadata) is logged
  and skipped, and the watch goes on; any other error watches again;
- a 410, an error or a watch the server ends at once wait before the next try,
  exponentially longer with jitter (backoff.py); a watch that brought events resets it;
- `kubernetes_api_up` is 0 when any label's watch has heard nothing from the apiserver
  (a listing, a watch opened, an event or BOOKMARK) for longer than stale_seconds
  (REANA_LOG_SSE_KUBERNETES_STALE_SECONDS): the apiserver ends a watch every WATCH_SECONDS
  and the next one opens, so a live watch is never silent longer than that;
- pods are indexed by workflow, so an event costs the same however many pods are known.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from reana_log_sse.kubernetes.backoff import Backoff
from reana_log_sse.kubernetes.client import ApiError, Kube, status_error
from reana_log_sse.metrics import Metrics

logger = logging.getLogger("reana_log_sse")

JOB_LABEL = "reana-run-job-workflow-uuid"
BATCH_LABEL = "reana-run-batch-workflow-uuid"
DASK_LABEL = "reana-run-dask-workflow-uuid"
KINDS = {JOB_LABEL: "job", BATCH_LABEL: "workflow", DASK_LABEL: "service"}
ENGINE_CONTAINER = "workflow-engine"
JOB_CONTAINER = "job"


@dataclasses.dataclass(frozen=True, slots=True)
class Container:
    name: str
    state: str  # waiting | running | terminated
    exit_code: int | None = None
    reason: str | None = None
    init: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PodView:
    """What this service needs of one pod."""

    uid: str
    name: str
    workflow_id: uuid.UUID
    kind: str  # job | workflow | service (the `kind` of its lines)
    job_id: str | None
    phase: str
    scheduled: bool
    deleting: bool
    containers: tuple[Container, ...]
    deleted: bool = False

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    def tappable(self) -> list[str]:
        """Running containers whose lines the Vector remap keeps (vector/vector.yaml
        reana_only): all of a job or Dask pod's, only `workflow-engine` of a batch pod."""
        if self.deleted:
            return []
        return [c.name for c in self.containers if c.state == "running"
                and (self.kind != "workflow" or c.name == ENGINE_CONTAINER)]


def view(pod: dict[str, Any], label: str) -> PodView | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        workflow_id = uuid.UUID(str(labels.get(label)))
    except ValueError:
        return None
    kind = KINDS[label]
    job_id = None
    if kind == "job":
        job_id = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    status = pod.get("status") or {}
    containers = tuple(
        _container(c, init) for init, key in ((True, "initContainerStatuses"),
                                              (False, "containerStatuses"))
        for c in status.get(key) or ()
    )
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    scheduled = conditions.get("PodScheduled") == "True" or bool(
        (pod.get("spec") or {}).get("nodeName"))
    return PodView(str(meta.get("uid") or meta.get("name")), str(meta.get("name")),
                   workflow_id, kind, job_id, str(status.get("phase") or "Pending"), scheduled,
                   bool(meta.get("deletionTimestamp")), containers)


def _container(c: dict[str, Any], init: bool) -> Container:
    state = c.get("state") or {}
    if "terminated" in state:
        t = state["terminated"] or {}
        return Container(c.get("name", ""), "terminated", t.get("exitCode"), t.get("reason"),
                         init)
    if "running" in state:
        return Container(c.get("name", ""), "running", init=init)
    return Container(c.get("name", ""), "waiting", reason=(state.get("waiting") or {})
                     .get("reason"), init=init)


# reana-job-controller reana_job_controller/job_monitor.py `get_job_status`: a Pending pod
# one of whose containers (init containers included) waits for a reason that contains one
# of these is failed (REANA then deletes the Job); it tests `"ErrImagePull" in reason`, so
# the match is by substring, as there.
FAILED_WAITING_REASONS = ("ErrImagePull", "InvalidImageName", "CreateContainerConfigError")


def waiting_failure(pod: PodView) -> str | None:
    """The waiting reason for which REANA fails a Pending pod, or None."""
    if pod.phase != "Pending":
        return None
    for c in pod.containers:
        if c.state == "waiting" and c.reason and any(r in c.reason
                                                     for r in FAILED_WAITING_REASONS):
            return c.reason
    return None


def succeeded_but_failed(pod: PodView) -> bool:
    """job_monitor.py `get_job_status` on a `Succeeded` pod: failed when any container
    (a sidecar such as `krb5-renew`, an init container, or one OOMKilled with exit code 0)
    terminated with a reason other than `Completed`; no reason counts as success."""
    return pod.phase == "Succeeded" and any(
        c.state == "terminated" and c.reason and c.reason != "Completed"
        for c in pod.containers)


def job_status(pod: PodView) -> str | None:
    """A job pod's status, by REANA's rules (job_monitor.py `get_job_status`) where they
    decide, else by its `job` container (docs/reana-integration.md has the table)."""
    main = pod.container(JOB_CONTAINER) or next(
        (c for c in pod.containers if not c.init), None)
    failed_init = any(c.init and c.state == "terminated" and c.exit_code not in (0, None)
                      for c in pod.containers)
    if pod.phase == "Failed" or failed_init or waiting_failure(pod) is not None:
        return "failed"
    if pod.phase == "Succeeded":
        return "failed" if succeeded_but_failed(pod) else "finished"
    if main is not None and main.state == "terminated":
        if main.exit_code != 0:
            return "failed"
        # exit 0 while another container still runs: REANA judges the pod once it has
        # Succeeded (a sidecar may yet end badly), so wait for the phase
        others = any(c is not main and not c.init and c.state == "running"
                     for c in pod.containers)
        return "running" if others else "finished"
    if pod.deleted or pod.deleting:
        # gone before its command ended: REANA stopped it (or the workflow was deleted)
        return "stopped" if main is not None and main.state == "running" else None
    if main is not None and main.state == "running":
        return "running"
    return "pending" if pod.scheduled else "queued"


def engine_status(pod: PodView) -> str | None:
    """A batch pod's workflow status; "finished" may become "failed" when a job of the
    workflow failed (the engine exits 0 after publishing either, reana-commons
    workflow_engine.py), which Store.record_pod_status decides. A Pending pod that waits
    for a reason REANA fails a job pod for (FAILED_WAITING_REASONS) will never start: failed."""
    engine = pod.container(ENGINE_CONTAINER)
    if engine is not None and engine.state == "terminated":
        return "finished" if engine.exit_code == 0 else "failed"
    if pod.phase == "Failed" or waiting_failure(pod) is not None:
        return "failed"
    if pod.deleted or pod.deleting:
        return "stopped" if engine is not None and engine.state == "running" else None
    if engine is not None and engine.state == "running":
        return "running"
    return "pending"


Listener = Callable[[PodView], Awaitable[None]]
_NO_PODS: Mapping[str, PodView] = {}


class PodWatcher:
    """Keeps `pods` current for the three labels and tells the listeners of each change."""

    def __init__(self, kube: Kube, namespace: str, metrics: Metrics,
                 listeners: list[Listener], *, stale_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.namespace = namespace
        self.metrics = metrics
        self.listeners = listeners
        self.stale_seconds = stale_seconds
        self.clock = clock
        self.pods: dict[str, PodView] = {}
        self._by_workflow: dict[uuid.UUID, dict[str, PodView]] = {}
        self.relists = 0
        self.events = 0  # pod events applied (listed or watched)
        self.skipped = 0  # malformed objects logged and skipped
        self._up: dict[str, bool] = {label: False for label in KINDS}
        self._heard: dict[str, float] = {label: -math.inf for label in KINDS}
        self._published: bool | None = None
        metrics.kubernetes_up.set(0)

    @property
    def up(self) -> bool:
        now = self.clock()
        return all(self._up.values()) and all(
            now - heard <= self.stale_seconds for heard in self._heard.values())

    def of(self, workflow_id: uuid.UUID) -> Mapping[str, PodView]:
        """The workflow's known pods by uid (read only)."""
        return self._by_workflow.get(workflow_id, _NO_PODS)

    def running(self, workflow_id: uuid.UUID) -> list[PodView]:
        return list(self.of(workflow_id).values())

    async def run(self) -> None:
        await asyncio.gather(self._watch_freshness(), *(self._watch(label) for label in KINDS))

    async def _watch_freshness(self) -> None:
        """Publish staleness even while no watch has anything to say."""
        period = min(max(self.stale_seconds / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            self._publish()

    async def _watch(self, label: str) -> None:
        version: str | None = None
        backoff = Backoff()
        while True:
            brought = False  # did this watch bring anything (then it was healthy)
            try:
                if version is None:
                    version = await self._relist(label)
                started = self.clock()
                async with self.kube.watch_pods(self.namespace, label, version) as events:
                    self._heard_from(label)
                    self._set_up(label, True)
                    async for event in events:
                        self._heard_from(label)
                        kind, obj = _parts(event)
                        if kind == "ERROR":
                            raise status_error(obj)
                        version = _version(obj) or version
                        if kind == "BOOKMARK":
                            continue
                        if kind not in ("ADDED", "MODIFIED", "DELETED"):
                            self._skip(label, obj, f"a watch event of type {kind!r}")
                            continue
                        await self._apply(label, obj, deleted=kind == "DELETED")
                        brought = True
                # the server ended the watch (timeoutSeconds): watch again, but never in a
                # tight loop against a server that ends every watch at once
                if brought or self.clock() - started >= 1.0:
                    backoff.reset()
                else:
                    await asyncio.sleep(backoff.next())
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if brought:
                    backoff.reset()
                if exc.code == 410:  # resourceVersion too old: list again, after a wait
                    logger.info("pod watch %s: %s; listing again", label, exc)
                    version = None
                    await asyncio.sleep(backoff.next())
                    continue
                await self._down(label, exc, backoff.next())
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                await self._down(label, exc, backoff.next())
            except Exception as exc:  # a defect here must not end the watch for good
                logger.exception("pod watch %s: unexpected error; watching again", label)
                await self._down(label, exc, backoff.next())

    async def _relist(self, label: str) -> str:
        version: str | None = None
        seen = set()
        async for page in self.kube.list_pods(self.namespace, label):
            self._heard_from(label)
            if version is None:
                version = _version(page) or "0"
            items = page.get("items") if isinstance(page, dict) else None
            for item in items if isinstance(items, list) else ():
                pod = await self._apply(label, item, deleted=False)
                if pod is not None:
                    seen.add(pod.uid)
        self.relists += 1
        for uid, pod in list(self.pods.items()):  # deleted while we were not watching
            if KINDS[label] == pod.kind and uid not in seen:
                await self._forget(dataclasses.replace(pod, deleted=True))
        self._set_up(label, True)
        return version or "0"

    async def _apply(self, label: str, obj: Any, *, deleted: bool) -> PodView | None:
        try:
            pod = view(obj, label)
        except Exception as exc:  # not the Pod shape we read: skip it, keep watching
            self._skip(label, obj, exc)
            return None
        if pod is None:
            return None
        self.events += 1
        if deleted:
            await self._forget(dataclasses.replace(pod, deleted=True))
            return pod
        old = self.pods.get(pod.uid)
        if old is not None and old.workflow_id != pod.workflow_id:
            self._unindex(old)
        self.pods[pod.uid] = pod
        self._by_workflow.setdefault(pod.workflow_id, {})[pod.uid] = pod
        await self._tell(pod)
        return pod

    async def _forget(self, pod: PodView) -> None:
        old = self.pods.pop(pod.uid, None)
        if old is not None:
            self._unindex(old)
        await self._tell(pod)

    def _unindex(self, pod: PodView) -> None:
        pods = self._by_workflow.get(pod.workflow_id)
        if pods is not None:
            pods.pop(pod.uid, None)
            if not pods:
                del self._by_workflow[pod.workflow_id]

    def _skip(self, label: str, obj: Any, why: object) -> None:
        self.skipped += 1
        self.metrics.kubernetes_malformed.inc()
        logger.warning("pod watch %s: skipped an object that is not a pod as expected "
                       "(%s: %s)", label, _name(obj), why)

    async def _tell(self, pod: PodView) -> None:
        for listener in self.listeners:
            try:
                await listener(pod)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pod %s: listener failed", pod.name)

    def _heard_from(self, label: str) -> None:
        self._heard[label] = self.clock()
        if not self._published:
            self._publish()

    def _set_up(self, label: str, up: bool) -> None:
        self._up[label] = up
        self._publish()

    def _publish(self) -> None:
        up = self.up
        if up == self._published:
            return
        if not up and self._published and all(self._up.values()):
            logger.warning("pod watch: nothing heard from the apiserver for over %g s",
                           self.stale_seconds)
        self._published = up
        self.metrics.kubernetes_up.set(1 if up else 0)

    async def _down(self, label: str, exc: BaseException, delay: float) -> None:
        if self._up[label]:
            logger.warning("pod watch %s: %s; retrying", label, exc)
        self._set_up(label, False)
        await asyncio.sleep(delay)


def _parts(event: Any) -> tuple[Any, Any]:
    """A watch event's type and object, whatever the line held."""
    if not isinstance(event, dict):
        return None, event
    return event.get("type"), event.get("object")


def _version(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


def _name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"pod {name[:253]}" if isinstance(name, str) else type(obj).__name__
