"""OTLP receivers for tests, both real HTTP servers on loopback.

* ``otlp_backend``: Phoenix (its own virtualenv, ``shared/otlp/install-phoenix.sh``), a real trace store
  whose REST API returns what it kept: names, parent links, attributes, status.
* ``otlp_receiver``: a small OTLP/HTTP endpoint in this process that decodes each protobuf request and
  keeps it with its path and headers (what Phoenix does not show: headers, resource attributes), and
  can be told to answer slowly or with an error to play a sick collector.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ._net import free_port
from ._require import component_missing


def _phoenix() -> Path:
    """Where shared/otlp/install-phoenix.sh puts Phoenix (same order of places)."""
    if venv := os.environ.get("AGENT_LEGS_PHOENIX_VENV"):
        return Path(venv) / "bin" / "phoenix"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for venv_dir in (Path("/opt/agent-legs-phoenix"), cache / "agent-legs-phoenix"):
        if (venv_dir / "bin" / "phoenix").exists():
            return venv_dir / "bin" / "phoenix"
    return Path("/opt/agent-legs-phoenix/bin/phoenix")


PHOENIX = _phoenix()


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


def _start_phoenix(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start ``phoenix serve`` on free loopback ports; returns the process, its base URL and, on failure, why."""
    port, grpc = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PHOENIX_COLLECTOR_ENDPOINT"):
        env.pop(name, None)  # Phoenix must not trace itself into anything
    logfile = workdir / f"phoenix-{port}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # first start runs its database migrations
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/v1/projects", timeout=2).close()
            return proc, base, ""
        except OSError:
            time.sleep(0.5)
    why = "did not answer within 120 s" if proc.poll() is None else f"exited with {proc.returncode}"
    proc.kill()
    proc.wait()
    return proc, base, f"phoenix serve {why}: {logfile.read_text(errors='replace')[-2000:]}"


@pytest.fixture(scope="session")
def otlp_backend() -> Iterator[OtlpBackend]:
    if not PHOENIX.exists():
        component_missing("an OTLP backend (Phoenix)", f"{PHOENIX} is not installed", "bash shared/otlp/install-phoenix.sh")
    workdir = Path(tempfile.mkdtemp(prefix="agent-legs-phoenix-"))
    why = ""
    for _attempt in range(2):  # a free port can be taken between our check and Phoenix's bind
        proc, base, why = _start_phoenix(workdir)
        if not why:
            break
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        component_missing("an OTLP backend (Phoenix)", why, "bash shared/otlp/install-phoenix.sh")
    try:
        yield OtlpBackend(base)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# -- a capturing OTLP/HTTP receiver ---------------------------------------------------------------


@dataclass
class OtlpRequest:
    path: str
    headers: dict[str, str]
    body: Any  # ExportTraceServiceRequest

    @property
    def resource_attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rs in self.body.resource_spans:
            out.update({kv.key: _any_value(kv.value) for kv in rs.resource.attributes})
        return out

    @property
    def span_names(self) -> list[str]:
        return [s.name for rs in self.body.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class OtlpReceiver:
    """A live OTLP/HTTP endpoint. ``delay_s`` makes every answer late (a slow or hung collector),
    ``status`` makes it answer with that HTTP status (503: retryable, 400: not)."""

    port: int = 0
    delay_s: float = 0.0
    status: int = 200
    requests: list[OtlpRequest] = field(default_factory=list)
    attempts: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def span_names(self) -> list[str]:
        with self._lock:
            return [n for r in self.requests for n in r.span_names]

    def wait_for_spans(self, count: int, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = self.span_names()
            if len(names) >= count:
                return names
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {self.span_names()} instead of {count} spans")

    def start(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.attempts += 1
                if receiver.delay_s:
                    receiver._stop.wait(receiver.delay_s)  # released at teardown
                if receiver.status == 200:
                    msg = ExportTraceServiceRequest()
                    msg.ParseFromString(body)
                    with receiver._lock:
                        receiver.requests.append(OtlpRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, msg))
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the exporter gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True, name="otlp-receiver").start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
