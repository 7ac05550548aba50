"""REANA's pods through the Kubernetes API: statuses from pod phases (pods.py,
statuses.py) and the live tap of followed workflows' logs (tap.py). Started by the app's
lifespan (link.py) when REANA_LOG_SSE_KUBERNETES allows (`enabled` below). Nothing here
imports kubernetes-asyncio: its generated client costs a process about 64 MB, paid only
where the link runs.

May import: store, ingest, follow, settings, metrics.
"""

from __future__ import annotations

from pathlib import Path

from reana_log_sse.settings import Settings

__all__ = ["SERVICE_ACCOUNT", "enabled"]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def enabled(settings: Settings, service_account: Path = SERVICE_ACCOUNT) -> bool:
    if settings.kubernetes == "off":
        return False
    if settings.kubernetes == "on":
        return True
    return (service_account / "token").exists()
