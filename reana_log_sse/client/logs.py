"""`reana-log-sse logs WORKFLOW [--follow]`: a workflow's logs in the terminal or a pipe.

Exit status: 0 the workflow finished (or, without --follow, is not over), 1 it failed,
was stopped or deleted, 2 usage, 3 not allowed (401/403), 4 unknown workflow, 5 server
unreachable (without --follow at once when it was never reached; with --follow after
--retries attempts in a row), 130 Ctrl-C.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from collections.abc import Sequence
from typing import IO, Any

import click
import orjson

from reana_log_sse.client.follower import (
    DEFAULT_RETRIES,
    DEFAULT_SERVER,
    DEFAULT_TIMEOUT,
    TERMINAL_STATUSES,
    AuthError,
    ClientError,
    End,
    Event,
    LogFollower,
    LogLine,
    NotFound,
    RequestError,
    StatusChange,
    Unreachable,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
# what a 404 means, in the same words as the widget's (static/reana-live-log.js)
NOT_YET = "no line nor status stored for it yet (a wrong id, or it has not started)"

# CSI (colours, cursor moves), OSC (titles, links) and the other two-byte escapes
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_PALETTE = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")
_STATUS_COLOR = {"finished": "32", "failed": "31", "stopped": "31", "deleted": "31",
                 "running": "94"}


# the same, less SGR (colours, bold): what a job may show on a terminal
NOT_SGR = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-ln-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text) if "\x1b" in text else text


def colours_only(text: str) -> str:
    """Job logs are written by anyone's code: on a terminal their colours pass, but not
    title or clipboard (OSC) sequences nor cursor moves that could hide earlier lines."""
    return NOT_SGR.sub("", text) if "\x1b" in text else text


class Printer:
    """Turns events into output bytes: human lines, or one JSON object per line."""

    def __init__(self, *, as_json: bool, color: bool, keep_ansi: bool, timestamps: bool) -> None:
        self.as_json = as_json
        self.color = color
        self.keep_ansi = keep_ansi
        self.timestamps = timestamps
        self.step_of: dict[str, str] = {}  # job id -> step name, learnt from status events
        self._prefix: dict[tuple[str | None, str | None, str | None, str | None], str] = {}

    def render(self, events: Sequence[Event]) -> bytes:
        if self.as_json:
            return b"".join([self._json(e) for e in events])
        return "".join([self._human(e) for e in events]).encode("utf-8", "replace")

    # -- --json ----------------------------------------------------------------------------

    @staticmethod
    def _json(event: Event) -> bytes:
        if isinstance(event, LogLine):
            data = event.data  # the server's object, passed through as it came
            if data[:1] == b"{" and data[1:2] != b"}":
                return b'{"event":"log",' + data[1:] + b"\n"
            return orjson.dumps({"event": "log", **event.fields}) + b"\n"
        if isinstance(event, StatusChange):
            return orjson.dumps({"event": "status", "workflow_id": event.workflow_id,
                                 "job_id": event.job_id, "step": event.step,
                                 "status": event.status}) + b"\n"
        return orjson.dumps({"event": "end", "workflow_id": event.workflow_id,
                             "status": event.status}) + b"\n"

    # -- human -----------------------------------------------------------------------------

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _label(self, job_id: str | None, step: str | None, kind: str | None) -> str:
        if step:
            return step
        if job_id:
            return self.step_of.get(job_id, job_id)
        return "workflow" if kind == "workflow" else "job"

    def _human(self, event: Event) -> str:
        if isinstance(event, LogLine):
            f = event.fields
            job_id, step, kind, stream = f.get("job_id"), f.get("step"), f.get("kind"), \
                f.get("stream")
            pkey = (job_id, step, kind, stream)
            prefix = self._prefix.get(pkey)
            if prefix is None:
                label = self._label(job_id, step, kind)
                prefix = self._paint(f"[{label}", self._color_of(label))
                if stream == "stderr":
                    prefix += self._paint(":stderr", "31")
                prefix += self._paint("]", self._color_of(label)) + " "
                self._prefix[pkey] = prefix
            message = f.get("message") or ""
            message = colours_only(message) if self.keep_ansi else strip_ansi(message)
            if f.get("truncated"):
                message += " [truncated]"
            if self.timestamps:
                return f"{f.get('timestamp')} {prefix}{message}\n"
            return f"{prefix}{message}\n"
        if isinstance(event, StatusChange):
            if event.job_id and event.step and self.step_of.get(event.job_id) != event.step:
                self.step_of[event.job_id] = event.step
                self._prefix.clear()
            if event.is_workflow:
                if event.status in TERMINAL_STATUSES:
                    return ""  # said once, at the end
                return self._status_line("workflow", event.status)
            return self._status_line(self._label(event.job_id, event.step, "job"), event.status)
        assert isinstance(event, End)
        return self._status_line("workflow", event.status)

    def _status_line(self, label: str, status: str) -> str:
        code = _STATUS_COLOR.get(status, "33")
        return self._paint("==>", "1;" + code) + f" {label}: " + self._paint(status, code) + "\n"

    def _color_of(self, label: str) -> str:
        return _PALETTE[zlib.crc32(label.encode()) % len(_PALETTE)]


class StatusLine:
    """Notes on stderr. `update` lines (a retry's countdown) are rewritten in place on a
    terminal, and written to a pipe only when `changed`; `say` writes a line that stays."""

    def __init__(self, stream: IO[str], *, color: bool) -> None:
        self.stream = stream
        self.color = color
        self.tty = stream.isatty()
        self._open = False  # a rewritten line is on the terminal, without its newline

    def _style(self, text: str) -> str:
        return click.style(text, fg="yellow") if self.color else text

    def update(self, text: str, *, changed: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self._style(text))
            self.stream.flush()
            self._open = True
        elif changed:
            self.say(text)

    def say(self, text: str) -> None:
        if self._open:  # the next line replaces the countdown
            self.stream.write("\r\x1b[K")
            self._open = False
        self.stream.write(self._style(text) + "\n")
        self.stream.flush()


def exit_code(status: str | None) -> int:
    return EXIT_FAILED if status in ("failed", "stopped", "deleted") else EXIT_OK


def _wants_color(stream: IO[Any], no_color: bool) -> bool:
    if no_color or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


@click.command("logs")
@click.argument("workflow", envvar="REANA_WORKON")
@click.option("-f", "--follow", is_flag=True,
              help="keep printing new lines until the workflow ends")
@click.option("--job", "jobs", multiple=True, metavar="J",
              help="only this job (job id or step name); repeatable")
@click.option("--kind", type=click.Choice(["job", "workflow"]),
              help="only job logs, or only the workflow engine's")
@click.option("--tail", type=click.IntRange(min=0), metavar="N",
              help="start with the last N lines")
@click.option("--since", type=click.IntRange(min=0), metavar="ID",
              help="start after the line with this id")
@click.option("-w", "--wait", is_flag=True,
              help="a workflow with no line yet (not started): wait for it, saying so once")
@click.option("--json", "as_json", is_flag=True,
              help="one JSON object per line (event: log, status or end), for jq")
@click.option("-t", "--timestamps", is_flag=True, help="prefix each line with its timestamp")
@click.option("--no-color", is_flag=True,
              help="no colours, and escape codes in the logs removed (also NO_COLOR)")
@click.option("--server", envvar="REANA_LOG_SSE_URL", default=DEFAULT_SERVER,
              show_default=True, show_envvar=True, help="reana-log-sse base URL")
@click.option("--token", envvar="REANA_ACCESS_TOKEN", show_envvar=True,
              help="your REANA access token (or a reader token)")
@click.option("--retries", type=click.IntRange(min=0), default=DEFAULT_RETRIES,
              envvar="REANA_LOG_SSE_RETRIES", show_default=True, show_envvar=True,
              help="--follow: failed reconnects in a row (about 30 s for 10) before giving "
                   "up with exit 5")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_TIMEOUT, envvar="REANA_LOG_SSE_TIMEOUT", show_default=True,
              show_envvar=True, metavar="SECONDS",
              help="wait this long to connect (and, without --follow, for the answer)")
def logs(workflow: str, follow: bool, jobs: tuple[str, ...], kind: str | None,
         tail: int | None, since: int | None, wait: bool, as_json: bool, timestamps: bool,
         no_color: bool, server: str, token: str | None, retries: int,
         timeout: float) -> None:
    """Print the logs of WORKFLOW (a UUID, or with REANA auth a name such as
    myanalysis.42; default $REANA_WORKON), and with --follow keep printing until it ends.

    Exit status: 0 finished (or still running, without --follow), 1 failed or stopped,
    2 usage, 3 not allowed, 4 unknown workflow, 5 server unreachable, 130 Ctrl-C.
    """
    out = sys.stdout.buffer
    tty = sys.stdout.isatty()
    printer = Printer(as_json=as_json, color=_wants_color(sys.stdout, no_color),
                      keep_ansi=tty and not no_color, timestamps=timestamps)
    err_color = _wants_color(sys.stderr, no_color)
    status_line = StatusLine(sys.stderr, color=err_color)
    note = status_line.say

    where = server.rstrip("/")
    outage: str | None = None  # the reason of the failed attempts so far

    def on_retry(reason: str, delay: float, attempt: int) -> None:
        # one line per outage: rewritten in place on a terminal, and in a pipe repeated
        # only when the reason changes
        nonlocal outage
        then = f"retry {attempt} of {retries} in {delay:.1f} s"
        if outage is not None:
            text = f"reana-log-sse: still no connection to {where} ({reason}); {then}"
        elif follower.reached:
            text = f"reana-log-sse: connection to {where} lost ({reason}); reconnecting"
        else:
            text = f"reana-log-sse: cannot reach {where} ({reason}); {then}"
        status_line.update(text, changed=reason != outage)
        outage = reason

    def on_reconnect() -> None:
        nonlocal outage
        outage = None
        note(f"reana-log-sse: reconnected to {where}")

    def on_wait(message: str) -> None:
        note(f"reana-log-sse logs: {where}: {message}: {NOT_YET}; waiting for its first "
             "line (Ctrl-C to stop)")

    follower = LogFollower(server, workflow, token=token, jobs=jobs,
                           kind=kind, tail=tail,  # type: ignore[arg-type]
                           since=since, follow=follow, retries=retries,
                           connect_timeout=timeout, on_retry=on_retry,
                           on_reconnect=on_reconnect, wait=wait, on_wait=on_wait)
    code = EXIT_OK
    try:
        for batch in follower.batches():
            out.write(printer.render(batch))
            out.flush()
        code = exit_code(follower.status)
        if code == EXIT_FAILED:  # say why, whatever stdout shows (a pipe, --json, --job)
            note(f"reana-log-sse logs: workflow {workflow} {follower.status}: exit 1")
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head`: the reader has all it wanted
        code = EXIT_OK
        _silence_stdout()
    except ClientError as exc:
        code = {AuthError: EXIT_AUTH, NotFound: EXIT_NOT_FOUND, Unreachable: EXIT_UNREACHABLE,
                RequestError: EXIT_USAGE}.get(type(exc), EXIT_UNREACHABLE)
        status_line.say(f"reana-log-sse logs: {_explain(exc, where, workflow)}")
    sys.exit(code)


def _explain(exc: ClientError, server: str, workflow: str) -> str:
    """The refusal in plain words, naming the server; the server's own reason after it."""
    why = f" (HTTP {exc.status_code}: {exc.message})" if exc.status_code else ""
    if exc.status_code == 401:
        return f"{server} wants a valid token to read {workflow}{why}; set --token or " \
               "REANA_ACCESS_TOKEN"
    if exc.status_code == 403:
        return f"{server} does not let this token read {workflow}{why}"
    if isinstance(exc, NotFound):
        return f"{server}: {exc.message}: {NOT_YET}; --wait waits for it"
    if isinstance(exc, RequestError) and exc.status_code:
        return f"{server} refused the request{why}"
    return exc.message


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass

