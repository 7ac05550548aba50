"""The pod watch, the statuses it yields and the tap, started and stopped as one unit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from reana_log_sse.follow.hub import Hub
from reana_log_sse.kubernetes.client import Kube, connect
from reana_log_sse.kubernetes.pods import PodWatcher
from reana_log_sse.kubernetes.statuses import PodStatuses
from reana_log_sse.kubernetes.tap import Tap
from reana_log_sse.metrics import Metrics
from reana_log_sse.settings import Settings
from reana_log_sse.store.partitions import Window
from reana_log_sse.store.store import Store

__all__ = ["KubernetesLink"]

logger = logging.getLogger("reana_log_sse")


class KubernetesLink:
    """The pod watch, the statuses it yields and the tap, as one running unit."""

    def __init__(self, kube: Kube, settings: Settings, store: Store, hub: Hub,
                 metrics: Metrics, *, window: Callable[[], Window]) -> None:
        self.kube = kube
        self.hub = hub
        self.statuses = PodStatuses(store, metrics)
        self.pods = PodWatcher(kube, settings.kubernetes_namespace, metrics, [],
                               stale_seconds=settings.kubernetes_stale_seconds)
        self.tap = Tap(kube, settings.kubernetes_namespace, store, metrics, self.pods,
                       window=window,
                       max_line_bytes=settings.max_line_bytes,
                       max_follows=settings.kubernetes_max_follows,
                       flush_window=settings.kubernetes_tap_window_seconds,
                       flush_quiet=settings.kubernetes_tap_quiet_seconds)
        self.pods.listeners.extend([self.statuses, self.tap.pod_changed])
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, settings: Settings, store: Store, hub: Hub, metrics: Metrics, *,
                    window: Callable[[], Window]) -> KubernetesLink | None:
        try:
            kube = await connect(max_follows=settings.kubernetes_max_follows,
                                 follow_timeout=settings.kubernetes_follow_timeout_seconds)
        except Exception as exc:  # no kubeconfig, unreadable token: serve without it
            logger.error("kubernetes: cannot load a configuration (%s); no pod statuses "
                         "and no live tap", exc)
            metrics.kubernetes_up.set(0)
            return None
        link = cls(kube, settings, store, hub, metrics, window=window)
        hub.on_followed = link.tap.followed_changed
        for workflow_id in list(hub.feeds):
            link.tap.followed_changed(workflow_id, True)
        link._tasks = [asyncio.create_task(link.pods.run(), name="pod-watch"),
                       asyncio.create_task(link.statuses.run(), name="pod-status-retry")]
        logger.info("kubernetes: watching REANA's pods in namespace %s",
                    settings.kubernetes_namespace)
        return link

    async def stop(self) -> None:
        self.hub.on_followed = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.tap.stop()
        await self.kube.close()
