"""Dask lines keyed as REANA keys its `service_logs`: by its service's name, with the
component from the Dask operator's `dask.org/component` label (vector/vector.yaml), also
when the live tap stored a line first and Vector's copy arrives after it (adopt.sql)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reana_log_sse.reana.logs import dask_service_name
from tests.fake_apiserver import FakeApiserver, container_status, running
from tests.helpers import Follower
from tests.test_kubernetes_statuses import until
from tests.test_kubernetes_tap import cri_ts
from tests.vectorsim import Pipeline, Pod, cri_line, kubernetes_logs_events, vector_request


@pytest.fixture
def apiserver(tmp_path, monkeypatch) -> Iterator[FakeApiserver]:
    with running() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        yield fake


def _labels(wf: uuid.UUID) -> dict[str, str]:
    # reana_workflow_controller/dask.py (the cluster's labels, copied onto its pods by
    # the Dask operator with its own: dask_kubernetes/operator/controller/controller.py)
    cluster = "reana-run-dask-" + str(wf).split("-")[0]
    return {"reana-run-dask-workflow-uuid": str(wf), "dask.org/cluster-name": cluster,
            "dask.org/component": "scheduler"}


def _scheduler_pod(wf: uuid.UUID, name: str) -> dict[str, Any]:
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "default", "labels": _labels(wf)},
            "spec": {"containers": [{"name": "scheduler"}], "nodeName": "node-1"},
            "status": {"phase": "Running",
                       "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [container_status("scheduler", "running")]}}


def test_dask_service_name_is_reanas():
    # reana-commons get_dask_component_name(id, "database_model_service")
    assert dask_service_name(uuid.UUID("9eef9a08-5629-420d-8e97-29d498d88e20")) == \
        "dask-service-9eef9a08"


async def test_dask_tapped_line_takes_vectors_service_name_and_component(
        apiserver, server_factory):
    server = server_factory(kubernetes="on", wait_for_unknown=True)
    wf = uuid.uuid4()
    name = "reana-run-dask-" + str(wf).split("-")[0] + "-scheduler-6f7d9c8b5-k2x9q"
    apiserver.put_pod(_scheduler_pod(wf, name))
    async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
        await until(lambda: apiserver.follows() == 1)
        ns = time.time_ns()
        apiserver.write(name, "scheduler", "distributed.scheduler - INFO - up", ns)
        await follower.wait_logs(1)
    events = kubernetes_logs_events([cri_line("distributed.scheduler - INFO - up",
                                              stream="stderr", timestamp=cri_ts(ns))],
                                    Pod(name=name, labels=_labels(wf)), "scheduler")
    sent = [o.event for o in Pipeline().run_all(events) if o.route == "sent"]
    headers, body = vector_request(sent, server.ingest_token)
    answer = httpx.post(f"{server.url}/ingest/vector", content=body, headers=headers)
    assert answer.json() == {"accepted": 0, "duplicates": 1, "rejected": 0}
    rows = server.sql("SELECT kind, job_id, step, stream FROM log_lines"
                      " WHERE workflow_id = %s", (wf,))
    assert rows == [("service", dask_service_name(wf), "scheduler", "stderr")]
