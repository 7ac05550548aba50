"""The real reana-client 0.9.6 (PyPI's stable release), unchanged, in a venv of its own:
its pins (reana-commons 0.9.x, bravado, setuptools < 81 for pkg_resources) are not ours.
Another version (0.95.0a6, PyPI's newest) gets a venv of its own too.

`REANA_CLIENT` may name a 0.9.6 executable to use instead. Otherwise the venv
`.venv-reana-client` (`.venv-reana-client-<version>` for another version) is made once,
with `python -m venv` and pip, and reused by later runs. If it cannot be made, the tests
that need it fail: they are never skipped."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

VERSION = "0.9.6"
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-reana-client"


def reana_client_venv(version: str = VERSION) -> Path:
    return VENV if version == VERSION else ROOT / f".venv-reana-client-{version}"


def reana_client_executable(version: str = VERSION) -> str:
    if version == VERSION and os.environ.get("REANA_CLIENT"):
        return os.environ["REANA_CLIENT"]
    venv = reana_client_venv(version)
    exe = venv / "bin" / "reana-client"
    marker = venv / f"reana-client-{version}.installed"
    with open(ROOT / ".venv-reana-client.lock", "w") as lock:  # one installer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and exe.exists()):
            _install(venv, version, marker)
    return str(exe)


def _install(venv: Path, version: str, marker: Path) -> None:
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", f"reana-client=={version}"]]
    for step in steps:
        run = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            pytest.fail(f"cannot install reana-client {version} ({' '.join(step)}):\n"
                        f"{run.stdout[-2000:]}{run.stderr[-2000:]}", pytrace=False)
    marker.write_text(version + "\n", encoding="utf-8")


def configure_reana_client(exe: str, home: Path, *, server_url: str, token: str
                           ) -> dict[str, str]:
    """The environment to run `exe` with, configured as its users do. 0.9.6:
    REANA_SERVER_URL and REANA_ACCESS_TOKEN. 0.95 retires both: `server-add` and
    `server-use` with HOME=home, and the token stored in the client's own credential store
    (reana_client/auth/storage.py `upsert_server_entry`, where `login` puts it;
    reana_client/auth/oidc.py `get_access_token` reads it back), never in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
    env["PYTHONWARNINGS"] = "ignore"
    if Path(exe).parent.parent == VENV or os.environ.get("REANA_CLIENT") == exe:
        return {**env, "REANA_SERVER_URL": server_url, "REANA_ACCESS_TOKEN": token}
    env["HOME"] = str(home)
    python = str(Path(exe).with_name("python"))
    store = ("import sys\nfrom reana_client.auth.storage import upsert_server_entry\n"
             "upsert_server_entry(sys.argv[1], {'access_token': sys.stdin.read()}, "
             "make_active=False)")
    for step, stdin in (([exe, "server-add", server_url], None),
                        ([exe, "server-use", server_url], None),
                        ([python, "-c", store, server_url], token)):
        run = subprocess.run(step, env=env, input=stdin, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, f"{step[1]}: {run.stdout}{run.stderr}"
    return env


def run_reana_client(exe: str, *args: str, server_url: str, token: str | None,
                     timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
    env.update({"REANA_SERVER_URL": server_url, "PYTHONWARNINGS": "ignore"})
    if token:
        env["REANA_ACCESS_TOKEN"] = token
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
