"""The real reana-client, unchanged, each version in a venv of its own: 0.9.6 (PyPI's stable
release; its pins, reana-commons 0.9.x, bravado, setuptools < 81 for pkg_resources, are not
ours) and 0.95.0a6 (PyPI's newest, a pre-release, pinned exactly).

`reana_client_executable(version)` makes the venv once (`.venv-reana-client` for 0.9.6,
`.venv-reana-client-<version>` otherwise), with `python -m venv` and pip, and reuses it
later. `REANA_CLIENT` may name a 0.9.6 executable to use instead. If a venv cannot be made,
the tests that need it fail: they are never skipped.

`configure_reana_client(exe, home, server_url=, token=)` configures one as its users do:
0.9.6 by REANA_SERVER_URL and REANA_ACCESS_TOKEN; 0.95 by its own `server-add` and
`server-use` in a HOME of the test's own (0.95 refuses REANA_SERVER_URL: reana-client
`reana_client/config.py` `check_retired_environment`), then the access token stored where
`reana-client login` stores it (`reana_client/auth/oidc.py` `_store_token_response` ->
`auth/storage.py` `upsert_server_entry`, in `~/.config/reana/reana-client.json`), since
`login` itself needs an OIDC issuer. Both the branch `tokens` and the branch `reana-client`
use these two names."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

VERSION = "0.9.6"
NEWEST = "0.95.0a6"
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-reana-client"


def _venv(version: str) -> Path:
    return VENV if version == VERSION else ROOT / f".venv-reana-client-{version}"


def reana_client_executable(version: str = VERSION) -> str:
    if version == VERSION and os.environ.get("REANA_CLIENT"):
        return os.environ["REANA_CLIENT"]
    venv = _venv(version)
    exe = venv / "bin" / "reana-client"
    marker = venv / f"reana-client-{version}.installed"
    with open(f"{venv}.lock", "w") as lock:  # one installer at a time, per version
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


def client_version(exe: str) -> str:
    """The version of the reana-client that `exe` runs (its venv's own python says)."""
    python = Path(exe).parent / "python"
    run = subprocess.run([str(python), "-c", "import reana_client.version as v; "
                          "print(v.__version__)"], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        pytest.fail(f"cannot tell the version of {exe}: {run.stderr[-2000:]}", pytrace=False)
    return run.stdout.strip()


def jwt_shaped(subject: str, *, lifetime: float = 86_400) -> str:
    """A token shaped as REANA 0.95's are (a JWT: header.claims.signature, base64url),
    which reana-client 0.95 requires of REANA_ACCESS_TOKEN (`cli/utils.py`
    `_looks_like_jwt`) and reads the expiry of. Its signature is not checked by the fake."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = part(json.dumps({"sub": subject, "iss": "https://sso.example.org",
                              "exp": int(time.time() + lifetime)}).encode())
    return f"{header}.{claims}.{part(os.urandom(32))}"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}


def configure_reana_client(exe: str, home: Path, *, server_url: str,
                           token: str) -> dict[str, str]:
    """The environment to run `exe` with, configured for `server_url` and `token` the way
    that version's users do (see the module's docstring). The token never goes in argv."""
    env = _clean_env()
    env["PYTHONWARNINGS"] = "ignore"
    if client_version(exe).startswith("0.9."):
        return {**env, "REANA_SERVER_URL": server_url, "REANA_ACCESS_TOKEN": token}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    for command in (["server-add", server_url], ["server-use", server_url]):
        run = subprocess.run([exe, *command], env=env, capture_output=True, text=True,
                             timeout=120)
        if run.returncode != 0:
            pytest.fail(f"reana-client {' '.join(command)}: {run.stdout}{run.stderr}",
                        pytrace=False)
    store = ("import sys\nfrom reana_client.auth.storage import upsert_server_entry\n"
             "upsert_server_entry(sys.argv[1], {'access_token': sys.stdin.read()},"
             " make_active=False)\n")
    run = subprocess.run([str(Path(exe).parent / "python"), "-c", store, server_url],
                         input=token, env=env, capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        pytest.fail(f"cannot store the token as reana-client login does: {run.stderr}",
                    pytrace=False)
    return env


def run_reana_client(exe: str, *args: str, server_url: str, token: str | None,
                     timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """reana-client 0.9.6 configured by its environment (as before 0.95)."""
    env = _clean_env()
    env.update({"REANA_SERVER_URL": server_url, "PYTHONWARNINGS": "ignore"})
    if token:
        env["REANA_ACCESS_TOKEN"] = token
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_configured(exe: str, env: dict[str, str], *args: str,
                   timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`exe` with an environment from configure_reana_client."""
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
