"""The fake apiserver checked against kubernetes-asyncio, the client production uses: its
Watch (kubernetes_asyncio/watch/watch.py) and its generated methods read what the fake
sends as they read a real apiserver."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fake_apiserver import FakeApiserver, job_pod, running

LABEL = "reana-run-job-workflow-uuid"


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[tuple[FakeApiserver, k8s.CoreV1Api]]:
    with running() as fake:
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(config_file=str(fake.kubeconfig(tmp_path / "kc")),
                                          client_configuration=configuration,
                                          persist_config=False)
        async with k8s.ApiClient(configuration) as client:
            yield fake, k8s.CoreV1Api(client)


async def test_fake_apiserver_watch_events_and_bookmarks_read_by_kubernetes_asyncio(api):
    fake, core = api
    wf = uuid.uuid4()
    fake.put_pod(job_pod(wf, "job-a"))
    listing = await core.list_namespaced_pod("default", label_selector=LABEL)
    assert [p.metadata.name for p in listing.items] == ["job-a-abcde"]
    fake.put_pod(job_pod(wf, "job-a", phase="Running", state="running"))
    fake.bookmark_seconds = 0.05
    seen = []
    async with k8s_watch.Watch() as watch:
        async for event in watch.stream(core.list_namespaced_pod, "default",
                                        label_selector=LABEL, allow_watch_bookmarks=True,
                                        resource_version=listing.metadata.resource_version,
                                        timeout_seconds=5):
            seen.append(event["type"])
            if event["type"] == "MODIFIED":
                assert event["object"].status.phase == "Running"
            if event["type"] == "BOOKMARK":
                assert watch.resource_version == str(fake.version)
                break
    assert seen == ["MODIFIED", "BOOKMARK"]


@pytest.mark.parametrize("answer", ["410-event", "410-http"])
async def test_fake_apiserver_410_as_event_and_as_http_is_410_for_kubernetes_asyncio(api,
                                                                                     answer):
    fake, core = api
    fake.watch_answer = answer
    with pytest.raises(ApiException) as raised:
        async with k8s_watch.Watch() as watch:
            async for _ in watch.stream(core.list_namespaced_pod, "default",
                                        label_selector=LABEL, resource_version="1000",
                                        timeout_seconds=5):
                pass
    assert raised.value.status == 410


async def test_fake_apiserver_partial_log_entries_reach_a_follow_without_newline(api):
    fake, core = api
    wf = uuid.uuid4()
    fake.put_pod(job_pod(wf, "job-a", phase="Running", state="running"))
    fake.write("job-a-abcde", "job", "abc", 1_800_000_000_000_000_001, partial=True)
    fake.write("job-a-abcde", "job", "def", 1_800_000_000_000_000_002)
    fake.put_pod(job_pod(wf, "job-a", phase="Succeeded", state="terminated"))  # follow ends
    text = await core.read_namespaced_pod_log("job-a-abcde", "default", container="job",
                                              follow=True, timestamps=True)
    assert text == ("2027-01-15T08:00:00.000000001Z abc"
                    "2027-01-15T08:00:00.000000002Z def\n")


async def test_fake_apiserver_list_pages_read_by_kubernetes_asyncio(api):
    fake, core = api
    wf = uuid.uuid4()
    for i in range(5):
        fake.put_pod(job_pod(wf, f"job-{i}"))
    first = await core.list_namespaced_pod("default", label_selector=LABEL, limit=2)
    names = [p.metadata.name for p in first.items]
    token = first.metadata._continue
    while token:
        page = await core.list_namespaced_pod("default", label_selector=LABEL, limit=2,
                                              _continue=token)
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
    assert names == [f"job-{i}-abcde" for i in range(5)]
    fake.compact()
    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_pod("default", label_selector=LABEL, limit=2,
                                       _continue=first.metadata._continue)
    assert raised.value.status == 410
