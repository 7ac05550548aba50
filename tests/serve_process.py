"""`reana-log-sse serve` as a real process on a given database (SIGTERM-able)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import INGEST_TOKEN, free_port


class ServeProcess:
    def __init__(self, database_url: str, log_dir: Path, *, log_level: str = "info",
                 **env_vars: str) -> None:
        self.database_url = database_url
        self.log_level = log_level
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ingest_token = INGEST_TOKEN
        self.log_path = log_dir / f"serve-{self.port}.log"
        self.env_vars = env_vars
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_LOG_SSE_")}
        env.pop("DATABASE_URL", None)
        env.update({"REANA_LOG_SSE_INGEST_TOKENS": INGEST_TOKEN,
                    "REANA_LOG_SSE_END_GRACE_SECONDS": "0.2", **self.env_vars})
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reana_log_sse", "serve", "--port", str(self.port),
             "--database-url", self.database_url, "--log-level", self.log_level],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not become ready: {self.output()}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
