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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

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


class PodWatcher:
    """Keeps `pods` current for the three labels and tells the listeners of each change."""

    def __init__(self, kube: Kube, namespace: str, metrics: Metrics,
                 listeners: list[Listener]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.metrics = metrics
        self.listeners = listeners
        self.pods: dict[str, PodView] = {}
        self.relists = 0
        self._up: dict[str, bool] = {label: False for label in KINDS}
        metrics.kubernetes_up.set(0)

    @property
    def up(self) -> bool:
        return all(self._up.values())

    def running(self, workflow_id: uuid.UUID) -> list[PodView]:
        return [p for p in self.pods.values() if p.workflow_id == workflow_id]

    async def run(self) -> None:
        await asyncio.gather(*(self._watch(label) for label in KINDS))

    async def _watch(self, label: str) -> None:
        version: str | None = None
        delay = 0.2
        while True:
            try:
                if version is None:
                    version = await self._relist(label)
                started = asyncio.get_running_loop().time()
                async with self.kube.watch_pods(self.namespace, label, version) as events:
                    self._set_up(label, True)
                    async for event in events:
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise status_error(obj)
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind == "BOOKMARK":
                            continue
                        await self._apply(label, obj, deleted=kind == "DELETED")
                # the server ended the watch (timeoutSeconds): watch again, but never in a
                # tight loop against a server that ends every watch at once
                if asyncio.get_running_loop().time() - started < 1.0:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                else:
                    delay = 0.2
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.code == 410:  # resourceVersion too old: list again
                    logger.info("pod watch %s: %s; listing again", label, exc)
                    version = None
                    continue
                await self._down(label, exc, delay)
                delay = min(delay * 2, 10.0)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                await self._down(label, exc, delay)
                delay = min(delay * 2, 10.0)

    async def _relist(self, label: str) -> str:
        listing = await self.kube.list_pods(self.namespace, label)
        self.relists += 1
        seen = set()
        for item in listing.get("items") or ():
            pod = await self._apply(label, item, deleted=False)
            if pod is not None:
                seen.add(pod.uid)
        for uid, pod in list(self.pods.items()):  # deleted while we were not watching
            if KINDS[label] == pod.kind and uid not in seen:
                await self._forget(dataclasses.replace(pod, deleted=True))
        self._set_up(label, True)
        return str((listing.get("metadata") or {}).get("resourceVersion") or "0")

    async def _apply(self, label: str, obj: dict[str, Any], *, deleted: bool) -> PodView | None:
        pod = view(obj, label)
        if pod is None:
            return None
        if deleted:
            await self._forget(dataclasses.replace(pod, deleted=True))
            return pod
        self.pods[pod.uid] = pod
        await self._tell(pod)
        return pod

    async def _forget(self, pod: PodView) -> None:
        self.pods.pop(pod.uid, None)
        await self._tell(pod)

    async def _tell(self, pod: PodView) -> None:
        for listener in self.listeners:
            try:
                await listener(pod)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pod %s: listener failed", pod.name)

    def _set_up(self, label: str, up: bool) -> None:
        self._up[label] = up
        self.metrics.kubernetes_up.set(1 if self.up else 0)

    async def _down(self, label: str, exc: BaseException, delay: float) -> None:
        if self._up[label]:
            logger.warning("pod watch %s: %s; retrying", label, exc)
        self._set_up(label, False)
        await asyncio.sleep(delay)
