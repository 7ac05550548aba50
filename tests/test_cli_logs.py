"""`reana-log-sse logs` as a user runs it: a real process against the live service."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from reana_log_sse.client import LogFollower, LogLine, SSEDecoder, StatusChange
from tests.conftest import free_port
from tests.fake_reana import FakeReanaServer
from tests.helpers import BackgroundLines, event, post_batch, post_status

JOB = "reana-run-job-1"  # tests.helpers.event's default job
_CLASS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception|Timeout)\b|Errno")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REANA_") and k not in ("NO_COLOR", "TERM")}
    env.update(extra)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "reana_log_sse", "logs", *args]


def logs(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(_cmd(*args), env=_env(**env), capture_output=True, timeout=120)


class Cli(BackgroundLines):
    """`reana-log-sse logs` in the background; its stdout collected line by line."""

    def __init__(self, *args: str, **env: str) -> None:
        super().__init__(_cmd(*args), _env(**env))

    def wait_lines(self, n: int, timeout: float = 60) -> None:
        assert self.wait_until(lambda lines: len(lines) >= n, timeout), (
            self.lines[-5:], self.stderr())

    def finish(self, timeout: float = 60) -> int:
        return self.wait_exit(timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode()


@pytest.fixture
def cli_procs():
    procs: list[Cli] = []
    yield procs
    for p in procs:
        p.kill()


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text


def _logs_only(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("==>")]


# -- 1. follow a live workflow -------------------------------------------------------------

def test_cli_logs_follow_prints_every_line_once_in_order_and_exits_0(live_server, cli_procs):
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    _ok(post_status(url, tok, wf, "running"))
    cli = Cli(wf, "--follow", "--server", url)
    cli_procs.append(cli)
    cli.wait_lines(1)  # connected: from here on, everything arrives live
    _ok(post_batch(url, tok, [event(wf, "engine started", job=None, kind="workflow")]))
    _ok(post_status(url, tok, wf, "running", job_id=JOB, step="fitdata"))
    _ok(post_batch(url, tok, [event(wf, f"fit {i}", job=JOB) for i in range(50)]))
    cli.wait_lines(1 + 1 + 1 + 50)  # printed while the workflow is still running
    _ok(post_batch(url, tok, [event(wf, "oops", job=JOB, stream="stderr")] +
                   [event(wf, f"fit {i}", job=JOB) for i in range(50, 100)]))
    _ok(post_status(url, tok, wf, "finished", job_id=JOB, step="fitdata"))
    _ok(post_status(url, tok, wf, "finished"))
    assert cli.finish() == 0, cli.stderr()
    assert cli.lines == (
        ["==> workflow: running", "[workflow] engine started", "==> fitdata: running"]
        + [f"[fitdata] fit {i}" for i in range(50)]
        + ["[fitdata:stderr] oops"] + [f"[fitdata] fit {i}" for i in range(50, 100)]
        + ["==> fitdata: finished", "==> workflow: finished"]
    )


def test_cli_logs_follow_exit_status_follows_the_workflow(live_server):
    url, tok = live_server.url, live_server.ingest_token
    for status, code in (("failed", 1), ("stopped", 1), ("finished", 0)):
        wf = str(uuid.uuid4())
        _ok(post_batch(url, tok, [event(wf, "only line")]))
        _ok(post_status(url, tok, wf, status))
        run = logs(wf, "--follow", "--server", url)
        assert run.returncode == code, run.stderr
        # a terminal workflow status is said once, at the end
        assert run.stdout.decode().splitlines() == [f"[{JOB}] only line",
                                                    f"==> workflow: {status}"]


def test_cli_logs_without_follow_prints_what_is_stored_and_exits(live_server):
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    n = 10_010  # more than one page of the read endpoint (10,000)
    _ok(post_batch(url, tok, [event(wf, f"l{i}", step="gen") for i in range(n)]))
    run = logs(wf, "--server", url)  # running (no status): 0, and no waiting
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().splitlines() == [f"[gen] l{i}" for i in range(n)]
    run = logs(wf, "--server", url, "--tail", "2", "--timestamps")
    lines = run.stdout.decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [f"[gen] l{n - 2}", f"[gen] l{n - 1}"]
    assert lines[0].split(" ", 1)[0].endswith("Z")
    run = logs(wf, "--server", url, "--since", str(n - 10), "--kind", "job", "--job", "gen")
    assert run.stdout.decode().splitlines() == [f"[gen] l{i}" for i in range(n - 10, n)]
    _ok(post_status(url, tok, wf, "failed"))
    assert logs(wf, "--server", url, "--tail", "0").returncode == 1


# -- 2. the service dies and comes back mid-follow -----------------------------------------

def test_cli_logs_follow_survives_a_server_restart_with_every_line_once(server_factory,
                                                                        cli_procs):
    server = server_factory()
    url, tok, wf = server.url, server.ingest_token, str(uuid.uuid4())
    _ok(post_batch(url, tok, [event(wf, f"before {i}") for i in range(500)]))
    cli = Cli(wf, "--follow", "--json", "--server", url)
    cli_procs.append(cli)
    cli.wait_lines(500)
    server.stop()  # killed mid-follow: the CLI keeps trying
    server.start()  # same port, same database
    _ok(post_batch(url, tok, [event(wf, f"after {i}") for i in range(500)]))
    cli.wait_lines(1000)
    _ok(post_batch(url, tok, [event(wf, f"last {i}") for i in range(10)]))
    _ok(post_status(url, tok, wf, "finished"))
    assert cli.finish() == 0
    objs = [json.loads(line) for line in cli.lines]
    logs_ = [o for o in objs if o["event"] == "log"]
    assert [o["message"] for o in logs_] == ([f"before {i}" for i in range(500)]
                                             + [f"after {i}" for i in range(500)]
                                             + [f"last {i}" for i in range(10)])
    assert [o["id"] for o in logs_] == list(range(1, 1011))
    assert objs[-1] == {"event": "end", "workflow_id": wf, "status": "finished"}
    notes = cli.stderr().splitlines()
    # one calm line when the stream is cut, the cause in plain words; one when it is back
    cut = "(the server closed the stream|the connection was cut)"
    assert re.fullmatch(f"reana-log-sse: connection to {re.escape(url)} lost \\({cut}\\); "
                        "reconnecting", notes[0]), notes
    assert notes[-1] == f"reana-log-sse: reconnected to {url}", notes
    assert all(line.startswith("reana-log-sse: ") for line in notes), notes
    assert not any(_CLASS_NAME.search(line) for line in notes), notes


def _follow_until_it_gives_up(server_factory, stderr: Any) -> subprocess.Popen[bytes]:
    """A follow whose service stops for good after its first line: it retries 3 times."""
    server = server_factory()
    url, wf = server.url, str(uuid.uuid4())
    _ok(post_batch(url, server.ingest_token, [event(wf, "first")]))
    proc = subprocess.Popen(_cmd(wf, "--follow", "--retries", "3", "--server", url),
                            env=_env(), stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout is not None
    assert proc.stdout.readline() == f"[{JOB}] first\n".encode()  # it follows
    server.stop()
    return proc


def test_cli_logs_retry_message_is_one_line_per_state_change_in_a_pipe(server_factory):
    proc = _follow_until_it_gives_up(server_factory, subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5
    notes = err.decode().splitlines()
    # lost (the stream was cut), then refused: each said once, not "retry 2 of 3", "3 of 3"
    assert len(notes) == 3, notes
    assert " lost (" in notes[0] and notes[0].endswith("; reconnecting"), notes
    assert "still no connection" in notes[1] and "connection refused" in notes[1], notes
    assert notes[2].startswith("reana-log-sse logs: gave up on "), notes


def _read_terminal(leader: int) -> bytes:
    """Everything a process wrote to its terminal until it closed it; closes our end."""
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # EIO: the process closed the terminal
            chunk = b""
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return out


def test_cli_logs_retry_message_is_rewritten_in_place_on_a_terminal(server_factory):
    leader, follower = pty.openpty()
    proc = _follow_until_it_gives_up(server_factory, follower)
    os.close(follower)
    err = _read_terminal(leader)
    assert proc.wait(60) == 5
    text = re.sub(rb"\x1b\[[0-9;]*m", b"", err).decode()  # its colours aside
    lines = text.split("\r\n")  # what stays on the terminal, line by line
    assert len([line for line in lines if line]) == 1, lines  # only the verdict
    assert text.count("\r\x1b[K") == 4, text  # each of 3 retries rewrote the line, then it
    assert lines[0].rsplit("\r\x1b[K", 1)[1].startswith("reana-log-sse logs: gave up on ")


# -- 3. --json and escape codes ------------------------------------------------------------

def test_cli_logs_json_parses_line_by_line_and_pipes_carry_no_escape_codes(live_server):
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    colored = "\x1b[32m50%\x1b[0m done \x1b]0;title\x07\x1b[2K"
    _ok(post_status(url, tok, wf, "running", job_id=JOB, step="plot"))
    _ok(post_batch(url, tok, [event(wf, colored, job=JOB), event(wf, "err", job=JOB,
                                                                  stream="stderr")]))
    _ok(post_status(url, tok, wf, "finished"))
    for args in ([], ["--follow"]):
        run = logs(wf, "--json", "--server", url, *args)
        assert run.returncode == 0
        assert b"\x1b" not in run.stdout
        objs = [json.loads(line) for line in run.stdout.decode().splitlines()]
        log_lines = [o for o in objs if o["event"] == "log"]
        assert [o["message"] for o in log_lines] == [colored, "err"]  # kept, JSON-escaped
        assert set(log_lines[0]) == {"event", "id", "workflow_id", "kind", "job_id", "step",
                                     "stream", "timestamp", "message"}
    assert objs[-1] == {"event": "end", "workflow_id": wf, "status": "finished"}
    assert {"event": "status", "workflow_id": wf, "job_id": JOB, "step": "plot",
            "status": "running"} in objs
    run = logs(wf, "--follow", "--server", url)  # human output to a pipe: plain text
    assert b"\x1b" not in run.stdout
    assert "[plot] 50% done \n[plot:stderr] err" in run.stdout.decode()


def test_cli_logs_on_a_tty_colors_and_passes_ansi_through(live_server):
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    _ok(post_batch(url, tok, [event(wf, "\x1b[32mgreen\x1b[0m\x1b]52;c;aGk=\x07\x1b[1A",
                                    step="plot")]))
    _ok(post_status(url, tok, wf, "finished"))

    def on_tty(*args: str) -> bytes:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(_cmd(wf, "--follow", "--server", url, *args), env=_env(),
                                stdout=follower, stderr=subprocess.DEVNULL)
        os.close(follower)
        out = _read_terminal(leader)
        assert proc.wait(60) == 0
        return out

    out = on_tty()
    assert b"\x1b[32mgreen\x1b[0m\r\n" in out  # the job's own colours pass through,
    assert b"\x1b]52" not in out and b"\x1b[1A" not in out  # not clipboard, cursor moves
    assert b"\x1b[" in out.split(b"green")[0]  # and the prefix is coloured
    out = on_tty("--no-color")
    assert b"\x1b" not in out
    assert b"[plot] green" in out


# -- exit statuses -------------------------------------------------------------------------

def test_cli_logs_exit_statuses_for_refusals(server_factory):
    server = server_factory(auth="tokens", read_tokens="reader-secret")
    url, wf = server.url, str(uuid.uuid4())
    _ok(post_batch(url, server.ingest_token, [event(wf, "x")]))
    run = logs(wf, "--server", url, "--token", "wrong")
    assert run.returncode == 3
    assert run.stderr.decode().startswith(
        f"reana-log-sse logs: {url} wants a valid token to read {wf} (HTTP 401: "), run.stderr
    run = logs(wf, "--server", url, REANA_ACCESS_TOKEN="reader-secret")
    assert run.returncode == 0 and run.stdout == f"[{JOB}] x\n".encode()
    unknown = str(uuid.uuid4())
    run = logs(unknown, "--follow", "--server", url, "--token", "reader-secret")
    assert run.returncode == 4
    assert run.stderr.decode().splitlines() == [  # the widget's words (test_widget_browser)
        f"reana-log-sse logs: {url}: unknown workflow {unknown}: no line nor status stored "
        "for it yet (a wrong id, or it has not started); --wait waits for it"], run.stderr
    assert logs(wf, "--kind", "nope", "--server", url).returncode == 2
    assert logs("--server", url).returncode == 2  # no workflow
    run = logs(wf, "--follow", REANA_LOG_SSE_RETRIES="1",
               REANA_LOG_SSE_URL=f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 5
    notes = run.stderr.decode().splitlines()
    assert len(notes) == 2, notes  # retries=1: one retry, then the verdict
    assert "cannot reach http://127.0.0.1:" in notes[0] and "retry 1 of 1" in notes[0]
    assert notes[-1].startswith("reana-log-sse logs: gave up on http://127.0.0.1:"), notes
    assert "connection refused" in notes[-1]
    assert not any(_CLASS_NAME.search(line) for line in notes), notes


def test_cli_logs_follow_wait_waits_for_a_workflow_not_started_yet_saying_so_once(
        live_server):
    url, wf = live_server.url, str(uuid.uuid4())
    cli = Cli(wf, "--follow", "--wait", "--server", url)
    try:
        assert cli.proc.stderr is not None
        said = cli.proc.stderr.readline().decode()  # said once it knows, before any line
        assert said == (f"reana-log-sse logs: {url}: unknown workflow {wf}: no line nor "
                        "status stored for it yet (a wrong id, or it has not started); "
                        "waiting for its first line (Ctrl-C to stop)\n")
        _ok(post_batch(url, live_server.ingest_token, [event(wf, "first")]))
        cli.wait_lines(1)
        _ok(post_status(url, live_server.ingest_token, wf, "finished"))
        assert cli.finish() == 0
    finally:
        cli.kill()
    assert cli.lines[0] == f"[{JOB}] first"
    assert cli.stderr() == ""  # said once only, however long it waited


def test_cli_logs_says_why_it_exits_1(live_server):
    url, wf = live_server.url, str(uuid.uuid4())
    _ok(post_batch(url, live_server.ingest_token, [event(wf, "oops")]))
    _ok(post_status(url, live_server.ingest_token, wf, "failed"))
    for args in ((), ("--follow",), ("--json",)):
        run = logs(wf, "--server", url, *args)
        assert run.returncode == 1
        assert run.stderr.decode().splitlines() == [
            f"reana-log-sse logs: workflow {wf} failed: exit 1"], (args, run.stderr)


def test_cli_logs_without_follow_fails_at_once_when_the_service_was_never_reached():
    # no --follow and nothing ever answered: one clear line, exit 5, no retries
    url = f"http://127.0.0.1:{free_port()}"
    run = logs(str(uuid.uuid4()), "--server", url)
    assert run.returncode == 5
    assert run.stderr.decode().splitlines() == [
        f"reana-log-sse logs: cannot reach {url}: connection refused: nothing listens on "
        "that port"]
    run = logs(str(uuid.uuid4()), "--server", "http://no-such-host.invalid")
    assert (run.returncode, run.stderr.decode().splitlines()) == (5, [
        "reana-log-sse logs: cannot reach http://no-such-host.invalid: unknown host name"])
    run = logs(str(uuid.uuid4()), "--server", "ftp://127.0.0.1")
    assert run.returncode == 2 and b"not an http:// or https:// URL" in run.stderr


def test_cli_logs_timeout_bounds_the_wait_for_a_silent_server():
    # a socket that accepts connections and never answers (a hung proxy)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        run = logs(str(uuid.uuid4()), "--server", url, REANA_LOG_SSE_TIMEOUT="0.3")
        assert run.returncode == 5
        assert run.stderr.decode().splitlines() == [
            f"reana-log-sse logs: cannot reach {url}: the server sent nothing for 0.3 s"]


def test_cli_logs_ctrl_c_exits_quietly(live_server, cli_procs):
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    _ok(post_batch(url, tok, [event(wf, "running...")]))
    cli = Cli(wf, "--follow", "--server", url)
    cli_procs.append(cli)
    cli.wait_lines(1)
    cli.proc.send_signal(signal.SIGINT)
    assert cli.finish() == 130
    assert cli.stderr() == ""


# -- 4. auth=reana: names, and a REANA token -----------------------------------------------

def test_cli_logs_follows_a_reana_workflow_by_name(server_factory):
    reana = FakeReanaServer().start()
    try:
        server = server_factory(auth="reana", reana_server_url=reana.url,
                                reana_server_host=reana.hostname)
        token, user = reana.add_user()
        wf = reana.add_workflow(user, "myanalysis.3")
        _ok(post_batch(server.url, server.ingest_token, [event(wf.id, "hello")]))
        _ok(post_status(server.url, server.ingest_token, wf.id, "finished"))
        run = logs("myanalysis.3", "--follow", "--json", REANA_LOG_SSE_URL=server.url,
                   REANA_ACCESS_TOKEN=token)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout.splitlines()[-2])["message"] == "hello"
        other_token, _ = reana.add_user()
        assert logs(wf.id, "--server", server.url, "--token", other_token).returncode == 3
        reana.stop()
        assert logs(wf.id, "--server", server.url, "--token", "new", "--retries", "1"
                    ).returncode == 5  # 503 from the service: retried, then given up
    finally:
        reana.stop()


# -- 6. what REANA's own follower loses ----------------------------------------------------

def test_cli_logs_repeated_line_printed_every_time_and_20000_line_job_complete(live_server,
                                                                            cli_procs):
    """reana-client --follow prints only lines it has not seen (cli/utils.py
    follow_workflow_logs) and OpenSearch returns at most 5,000 lines a job
    (reana-workflow-controller opensearch.py max_rows): neither limit applies here."""
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    cli = Cli(wf, "--follow", "--json", "--server", url)
    cli_procs.append(cli)
    for _ in range(4):
        _ok(post_batch(url, tok, [event(wf, "progress: 42%", job="reana-run-job-a")] * 250))
    for n in range(4):
        _ok(post_batch(url, tok, [event(wf, f"big {n * 5000 + i}", job="reana-run-job-b")
                                  for i in range(5000)]))
    _ok(post_status(url, tok, wf, "finished"))
    assert cli.finish() == 0
    objs = [json.loads(line) for line in cli.lines]
    repeated = [o for o in objs if o.get("job_id") == "reana-run-job-a"]
    big = [o["message"] for o in objs if o.get("job_id") == "reana-run-job-b"]
    assert [o["message"] for o in repeated] == ["progress: 42%"] * 1000
    assert big == [f"big {i}" for i in range(20_000)]


def test_cli_logs_follows_several_jobs_at_once_by_step_name(live_server, cli_procs):
    """reana-client --follow follows one step only; --job is repeatable here. Lines from
    pods carry only the Kubernetes Job name: the status POSTs tie it to the step."""
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    for s in ("gen", "fit"):
        _ok(post_status(url, tok, wf, "running", job_id=f"reana-run-job-{s}", step=s))
    _ok(post_batch(url, tok, [event(wf, f"{s} {i}", job=f"reana-run-job-{s}")
                              for i in range(3) for s in ("gen", "fit")]))
    cli = Cli(wf, "--follow", "--job", "gen", "--job", "plot", "--server", url)
    cli_procs.append(cli)
    cli.wait_lines(4)  # gen's status and lines
    _ok(post_status(url, tok, wf, "running", job_id="reana-run-job-plot", step="plot"))
    _ok(post_batch(url, tok, [event(wf, f"{s} {i}", job=f"reana-run-job-{s}")
                              for i in range(3, 5) for s in ("gen", "fit", "plot")]))
    _ok(post_status(url, tok, wf, "finished"))
    assert cli.finish() == 0
    assert cli.lines == ["==> gen: running", "[gen] gen 0", "[gen] gen 1", "[gen] gen 2",
                         "==> plot: running", "[gen] gen 3", "[plot] plot 3", "[gen] gen 4",
                         "[plot] plot 4", "==> workflow: finished"]


# -- the client library itself -------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_client_sse_decoder_handles_any_split_and_line_ending(size):
    text = (b"\xef\xbb\xbfretry: 2000\n\n: ping\r\nevent: log\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n"
            b"event: status\rdata: x\rdata: y\r\rdata\n\nid: 7\nevent: end\ndata: {}\n\n")
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(text), size):
        events += decoder.feed(text[i:i + size])
    assert events == [(b"log", b'{"a":1}', b"1"), (b"status", b"x\ny", b"1"),
                      (b"message", b"", b"1"), (b"end", b"{}", b"7")]
    assert decoder.retry == 2000


def test_client_follower_resumes_with_the_last_id_and_stops_on_end(server_factory):
    server = server_factory()
    url, tok, wf = server.url, server.ingest_token, str(uuid.uuid4())
    _ok(post_status(url, tok, wf, "running", job_id=JOB, step="fit"))
    _ok(post_batch(url, tok, [event(wf, f"a{i}", job=JOB) for i in range(5)]))
    retries: list[Any] = []
    back: list[int] = []
    follower = LogFollower(url, wf, tail=3, backoff=0.05,
                           on_retry=lambda *a: retries.append(a),
                           on_reconnect=lambda: back.append(follower.reconnects))
    seen: list[Any] = []
    for ev in follower:
        seen.append(ev)
        if isinstance(ev, LogLine) and ev.message == "a4":
            server.stop()
            server.start()
            _ok(post_batch(url, tok, [event(wf, "b0", job=JOB)]))
            _ok(post_status(url, tok, wf, "failed"))
    assert [e.message for e in seen if isinstance(e, LogLine)] == ["a2", "a3", "a4", "b0"]
    statuses = [e for e in seen if isinstance(e, StatusChange)]
    assert statuses[0] == StatusChange(wf, JOB, "fit", "running")  # said once, not per connect
    assert [s.status for s in statuses].count("running") == 1
    assert (follower.status, follower.ended, follower.last_id) == ("failed", True, 6)
    assert retries and follower.reconnects == len(retries)
    assert back == [len(retries)]  # said once, when the stream was back


async def test_client_follower_async_iteration(live_server):
    url, tok, wf = live_server.url, live_server.ingest_token, str(uuid.uuid4())
    _ok(post_batch(url, tok, [event(wf, f"l{i}") for i in range(3)]))
    _ok(post_status(url, tok, wf, "finished"))
    follower = LogFollower(url, wf)
    got = [ev async for ev in follower]
    assert [e.message for e in got if isinstance(e, LogLine)] == ["l0", "l1", "l2"]
    assert follower.status == "finished"
    stored = [ev async for ev in LogFollower(url, wf, follow=False)]
    assert [e.id for e in stored if isinstance(e, LogLine)] == [1, 2, 3]


def test_client_follower_gives_up_when_nothing_answers():
    follower = LogFollower(f"http://127.0.0.1:{free_port()}", str(uuid.uuid4()), retries=2,
                           backoff=0.01)
    from reana_log_sse.client import Unreachable

    with pytest.raises(Unreachable, match="gave up on .* after 3 attempts"):
        list(follower)
    assert follower.reconnects == 2


async def test_client_one_shot_read_never_reached_fails_at_once():
    from reana_log_sse.client import Unreachable

    url = f"http://127.0.0.1:{free_port()}"
    refused = f"^cannot reach {re.escape(url)}: connection refused"
    blocking = LogFollower(url, str(uuid.uuid4()), follow=False)
    with pytest.raises(Unreachable, match=refused):
        list(blocking)
    looping = LogFollower(url, str(uuid.uuid4()), follow=False)
    with pytest.raises(Unreachable, match=refused):
        [e async for e in looping]
    assert blocking.reconnects == looping.reconnects == 0  # no retries
