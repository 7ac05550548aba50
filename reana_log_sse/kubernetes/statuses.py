"""Job and workflow statuses from pod changes, stored once (Store.record_pod_status)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from reana_log_sse.kubernetes.pods import PodView, engine_status, job_status
from reana_log_sse.metrics import Metrics
from reana_log_sse.store.errors import ServiceError
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")

Key = tuple[uuid.UUID, str | None]  # (workflow, job id; None for the workflow itself)


class PodStatuses:
    """A pod listener: derives the status, skips what this replica already stored, and
    retries what the database refused until it takes it."""

    def __init__(self, store: Store, metrics: Metrics, retry_seconds: float = 2.0) -> None:
        self.store = store
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.sent: dict[Key, str] = {}
        self.failed: dict[Key, PodView] = {}

    async def __call__(self, pod: PodView) -> None:
        if pod.kind == "job" and pod.job_id is not None:
            key: Key = (pod.workflow_id, pod.job_id)
            status = job_status(pod)
        elif pod.kind == "workflow":
            key, status = (pod.workflow_id, None), engine_status(pod)
        else:
            return  # Dask pods: their lines are tapped, their phases are no REANA status
        if status is not None and self.sent.get(key) != status:
            await self._record(key, pod, status)
        if pod.deleted:
            self.sent.pop(key, None)

    async def _record(self, key: Key, pod: PodView, status: str) -> None:
        try:
            event_id = await self.store.record_pod_status(
                key[0], status=status, job_id=key[1], pod=pod.name,
                unless_a_job_failed=key[1] is None)
        except ServiceError as exc:
            logger.warning("pod %s: status %s not stored (%s); retrying", pod.name, status,
                           exc.detail)
            self.failed[key] = pod
            return
        self.failed.pop(key, None)
        self.sent[key] = status
        if event_id is not None:
            self.metrics.pod_statuses.inc()

    async def run(self) -> None:
        """Retry statuses the database refused (it was down)."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            for pod in list(self.failed.values()):
                await self(pod)
