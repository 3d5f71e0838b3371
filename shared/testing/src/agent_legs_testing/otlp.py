"""A real OTLP/HTTP backend for tests: Phoenix (own virtualenv), started on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._net import free_port
from ._require import component_missing

PHOENIX = Path(os.environ.get("AGENT_LEGS_PHOENIX_VENV", "/opt/agent-legs-phoenix")) / "bin" / "phoenix"


@dataclass
class OtlpBackend:
    base: str

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return self.base

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            url = f"{self.base}/v1/projects/{project}/spans?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            with urllib.request.urlopen(url, timeout=10) as r:  # loopback only
                page = json.load(r)
            out += page.get("data", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def wait_for(self, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.3)
        raise AssertionError(f"the backend did not receive the expected spans; it has {len(spans)}")



@pytest.fixture(scope="session")
def otlp_backend() -> Iterator[OtlpBackend]:
    if not PHOENIX.exists():
        component_missing("an OTLP backend (Phoenix)", f"{PHOENIX} is not installed", "bash shared/otlp/install-phoenix.sh")
    workdir = Path(tempfile.mkdtemp(prefix="agent-legs-phoenix-"))
    port, grpc = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc),
           "PHOENIX_HOST": "127.0.0.1", "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = open(workdir / "phoenix.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{base}/v1/projects", timeout=2).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
    if proc.poll() is not None:
        component_missing("an OTLP backend (Phoenix)", (workdir / "phoenix.log").read_text()[-2000:],
                          "bash shared/otlp/install-phoenix.sh")
    try:
        yield OtlpBackend(base)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
