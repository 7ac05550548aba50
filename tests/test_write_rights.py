"""Write rights per workflow (issue #19, finding 14): the ingest token that HTCondor and
Slurm jobs hold could write any user's workflow; a workflow token writes one only."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.helpers import event, post_batch, post_status

KEY = "k" * 16 + "-workflow-token-key-for-tests"
JOB = "reana-run-job-1"


def mint(workflow: str, key: str = KEY) -> str:
    """The token, as REANA or an admin mints it: the real command."""
    out = subprocess.run([sys.executable, "-m", "reana_log_sse", "token", "--workflow",
                          workflow], env={"REANA_LOG_SSE_WORKFLOW_TOKEN_KEY": key,
                                          "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def messages(server, wf: str) -> list[str]:
    return [m for (m,) in server.sql(
        "SELECT message FROM log_lines WHERE workflow_id = %s ORDER BY seq", (wf,))]


def test_write_rights_workflow_token_adding_lines_to_another_workflow_is_refused(
        server_factory):
    server = server_factory(workflow_token_key=KEY)
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    token = mint(mine)
    assert post_batch(server.url, token, [event(mine, "mine")]).status_code == 200
    r = post_batch(server.url, token, [event(theirs, "injected")])
    assert r.status_code == 403 and theirs in r.json()["error"]
    # one foreign line refuses the whole batch (it can never succeed): nothing stored
    r = post_batch(server.url, token, [event(mine, "mine 2"), event(theirs, "smuggled")])
    assert r.status_code == 403
    assert messages(server, mine) == ["mine"] and messages(server, theirs) == []
    # the shared ingest token still writes every workflow (Vector's DaemonSet)
    assert post_batch(server.url, server.ingest_token, [event(theirs, "vector")]
                      ).status_code == 200


def test_write_rights_workflow_token_setting_another_workflows_job_status_is_refused(
        server_factory):
    server = server_factory(workflow_token_key=KEY)
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    token = mint(mine)
    assert post_status(server.url, token, theirs, "failed", job_id=JOB).status_code == 403
    for status in ("finished", "deleted"):  # its own workflow's status: a status token's
        assert post_status(server.url, token, mine, status).status_code == 403
    assert post_status(server.url, token, mine, "deleted", job_id=JOB).status_code == 403
    r = post_status(server.url, token, mine, "failed", job_id=JOB, exit_code=2)
    assert r.status_code == 200, r.text  # what ship posts when its job ends
    assert server.sql("SELECT workflow_id::text, status FROM status_events") == [
        (mine, "failed")]


def test_write_rights_forged_workflow_token_is_refused(server_factory):
    wf = str(uuid.uuid4())
    server = server_factory(workflow_token_key=KEY)
    good = mint(wf)
    forged = [mint(wf, key="another key, also long enough to mint"),
              good[:-1] + ("1" if good.endswith("0") else "0"),
              f"wf1.{wf}", "wf1." + good.split(".", 1)[1].upper()]
    for token in forged:
        assert post_batch(server.url, token, [event(wf, "x")]).status_code == 401, token
        assert post_status(server.url, token, wf, "failed", job_id=JOB).status_code == 401
    keyless = server_factory()  # no key configured: no workflow token is accepted
    assert post_batch(keyless.url, good, [event(wf, "x")]).status_code == 401
    assert messages(server, wf) == []
