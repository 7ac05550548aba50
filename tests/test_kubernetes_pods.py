"""Pod states -> REANA job and workflow statuses (reana_log_sse/kubernetes/pods.py), by
reana-job-controller's rules: reana_job_controller/job_monitor.py `get_job_status`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from reana_log_sse.kubernetes.pods import (
    BATCH_LABEL,
    FAILED_WAITING_REASONS,
    JOB_LABEL,
    engine_status,
    job_status,
    view,
)
from tests.fake_apiserver import batch_pod, container_status, job_pod, running
from tests.helpers import Follower

WF = uuid.UUID("7b2e5c0a-4d1f-4e8a-9c3b-2f1e0d9c8b7a")
JOB = "reana-run-job-3f1c"


def _waiting(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": "m"}},
            "ready": False, "restartCount": 0}


def _terminated(name: str, reason: str | None, exit_code: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"exitCode": exit_code}
    if reason is not None:
        body["reason"] = reason
    return {"name": name, "state": {"terminated": body}, "ready": False, "restartCount": 0}


def _job(phase: str, *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()
         ) -> str | None:
    pod = job_pod(WF, JOB, phase=phase)
    pod["status"]["containerStatuses"] = list(containers)
    if init:
        pod["status"]["initContainerStatuses"] = list(init)
    pv = view(pod, JOB_LABEL)
    assert pv is not None
    return job_status(pv)


def test_job_status_lists_every_waiting_reason_reana_fails():
    # job_monitor.py get_job_status, phase "Pending": exactly these three
    assert FAILED_WAITING_REASONS == ("ErrImagePull", "InvalidImageName",
                                      "CreateContainerConfigError")


@pytest.mark.parametrize("reason", ["ErrImagePull", "InvalidImageName",
                                    "CreateContainerConfigError"])
def test_job_status_pending_pod_waiting_for_a_failed_reason_is_failed(reason):
    assert _job("Pending", _waiting("job", reason)) == "failed"


@pytest.mark.parametrize("reason", ["ErrImagePull", "InvalidImageName",
                                    "CreateContainerConfigError"])
def test_job_status_pending_pod_whose_init_container_waits_for_it_is_failed(reason):
    # job_monitor.py reads init containers' statuses too (_get_job_container_statuses)
    assert _job("Pending", _waiting("job", "PodInitializing"),
                init=(_waiting("kerberos-init", reason),)) == "failed"


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing",
                                    "ImagePullBackOff"])
def test_job_status_pending_pod_waiting_otherwise_is_still_pending(reason):
    # ImagePullBackOff does not contain "ErrImagePull": REANA waits, and so do we
    assert _job("Pending", _waiting("job", reason)) == "pending"


def test_job_status_succeeded_pod_with_a_sidecar_not_completed_is_failed():
    assert _job("Succeeded", _terminated("job", "Completed"),
                _terminated("krb5-renew", "Error", 143)) == "failed"


def test_job_status_succeeded_pod_with_an_oomkilled_container_is_failed():
    assert _job("Succeeded", _terminated("job", "OOMKilled", 0)) == "failed"


def test_job_status_succeeded_pod_all_completed_or_without_reason_is_finished():
    assert _job("Succeeded", _terminated("job", "Completed"),
                _terminated("krb5-renew", None)) == "finished"


def test_job_status_exit_zero_beside_a_running_sidecar_waits_for_the_phase():
    assert _job("Running", _terminated("job", "Completed"),
                container_status("krb5-renew", "running")) == "running"


def test_job_status_exit_zero_alone_is_finished():
    assert _job("Running", _terminated("job", "Completed")) == "finished"


@pytest.mark.parametrize("reason", ["ErrImagePull", "InvalidImageName",
                                    "CreateContainerConfigError"])
def test_engine_status_pending_engine_pod_that_cannot_start_is_failed(reason):
    pod = batch_pod(WF, phase="Pending", engine="waiting")
    pod["status"]["containerStatuses"][0] = _waiting("workflow-engine", reason)
    pv = view(pod, BATCH_LABEL)
    assert pv is not None and engine_status(pv) == "failed"


def _statuses(f: Follower) -> list[tuple[str | None, str]]:
    return [(s["job_id"], s["status"]) for s in f.named("status")]


async def test_kubernetes_image_pull_failure_fails_the_job_and_the_engine_exit_0_too(
        tmp_path, monkeypatch, server_factory):
    with running() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        server = server_factory(kubernetes="on", wait_for_unknown=True)
        wf = uuid.uuid4()
        async with Follower(f"{server.url}/api/workflows/{wf}/logs/stream") as follower:
            fake.put_pod(batch_pod(wf))
            await follower.wait_for(lambda f: (None, "running") in _statuses(f))
            pod = job_pod(wf, JOB)
            pod["status"]["containerStatuses"] = [_waiting("job", "ErrImagePull")]
            fake.put_pod(pod)
            await follower.wait_for(lambda f: (JOB, "failed") in _statuses(f))
            # the engine publishes failed and exits 0 (reana-commons workflow_engine.py)
            fake.put_pod(batch_pod(wf, engine="terminated", exit_code=0))
            await follower.wait_closed()
    assert follower.named("end") == [{"workflow_id": str(wf), "status": "failed"}]
    assert [s for j, s in _statuses(follower) if j == JOB] == ["failed"]
