"""The real reana-client 0.9.6 (PyPI's stable release), unchanged, in a venv of its own:
its pins (reana-commons 0.9.x, bravado, setuptools < 81 for pkg_resources) are not ours.

`REANA_CLIENT` may name an executable to use instead. Otherwise the venv
`.venv-reana-client` is made once, with `python -m venv` and pip, and reused by later runs.
If it cannot be made, the tests that need it fail: they are never skipped."""

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


def reana_client_executable() -> str:
    if os.environ.get("REANA_CLIENT"):
        return os.environ["REANA_CLIENT"]
    exe = VENV / "bin" / "reana-client"
    marker = VENV / f"reana-client-{VERSION}.installed"
    with open(ROOT / ".venv-reana-client.lock", "w") as lock:  # one installer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and exe.exists()):
            _install(marker)
    return str(exe)


def _install(marker: Path) -> None:
    steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
             [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", f"reana-client=={VERSION}"]]
    for step in steps:
        run = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            pytest.fail(f"cannot install reana-client {VERSION} ({' '.join(step)}):\n"
                        f"{run.stdout[-2000:]}{run.stderr[-2000:]}", pytrace=False)
    marker.write_text(VERSION + "\n", encoding="utf-8")


def run_reana_client(exe: str, *args: str, server_url: str, token: str | None,
                     timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
    env.update({"REANA_SERVER_URL": server_url, "PYTHONWARNINGS": "ignore"})
    if token:
        env["REANA_ACCESS_TOKEN"] = token
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
