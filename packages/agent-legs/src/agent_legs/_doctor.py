"""``agent-legs doctor``: is every backend reachable, and if not, how to fix it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._settings import Settings

Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


def _docker(settings: Settings) -> list[Check]:
    try:
        import docker

        client = docker.DockerClient(base_url=settings.code.docker_host, timeout=5) if settings.code.docker_host \
            else docker.from_env(timeout=5)
        version = client.version().get("Version", "?")
    except Exception as exc:
        return [Check("docker", "fail", f"the engine does not answer: {exc}",
                      "start dockerd (bash shared/sandbox/ensure-docker.sh) or set settings.code.docker_host")]
    checks = [Check("docker", "ok", f"engine {version}")]
    try:
        image = client.images.get(settings.code.image)
        labels = {k: v for k, v in (image.labels or {}).items() if k.startswith("agent-legs")}
        checks.append(Check("sandbox image", "ok", f"{settings.code.image} {labels or ''}".strip(),
                            "if code.run reports it outdated: agent-legs sandbox build"))
    except Exception:
        checks.append(Check("sandbox image", "fail", f"{settings.code.image} is missing", "agent-legs sandbox build"))
    client.close()
    return checks


def _chromium(settings: Settings) -> Check:
    if settings.browser.ws_endpoint or settings.browser.cdp_url:
        return Check("browser", "ok", f"remote: {settings.browser.ws_endpoint or settings.browser.cdp_url}")
    from .actions._browser import _find_chromium

    path = _find_chromium(settings.browser.executable_path)
    if path is None or not os.path.exists(path):
        return Check("browser", "fail", "no Chromium found", "apt-get install -y chromium, or set "
                     "settings.browser.executable_path / ws_endpoint")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("browser", "fail", f"{path} does not run: {exc}", "reinstall chromium")
    return Check("browser", "ok", out or path)


def _reach(name: str, host: str, port: int) -> Check:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return Check(name, "fail", f"{host}:{port} unreachable: {exc}", f"check settings.email.{name.lower()}")
    return Check(name, "ok", f"{host}:{port} answers")


def _mail(settings: Settings) -> list[Check]:
    out = []
    smtp, imap = settings.email.smtp, settings.email.imap
    if smtp is None:
        out.append(Check("SMTP", "warn", "not configured (email.send unavailable)", "set settings.email.smtp"))
    else:
        out.append(_reach("SMTP", smtp.host, smtp.port or {"tls": 465, "starttls": 587, "none": 25}[smtp.security]))
    if imap is None:
        out.append(Check("IMAP", "warn", "not configured (email.list/read unavailable)", "set settings.email.imap"))
    else:
        out.append(_reach("IMAP", imap.host, imap.port or {"tls": 993, "starttls": 143, "none": 143}[imap.security]))
    return out


def _otlp(settings: Settings) -> Check:
    endpoint = settings.telemetry.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return Check("OTLP", "warn", "no endpoint: spans only reach the local action log",
                     "docker compose -f shared/compose.yaml up -d; export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318")
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    check = _reach("OTLP", parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 4318))
    check.fix = "start the collector (Jaeger: docker compose -f shared/compose.yaml up -d)" if check.status != "ok" else None
    return check


def _dirs(workspace: Path, state_dir: Path) -> list[Check]:
    ws, st = workspace.resolve(), state_dir.resolve()
    if ws == st or ws in st.parents or st in ws.parents:
        return [Check("directories", "fail", f"{st} and {ws} contain each other", "use separate directories")]
    out = []
    for name, path in (("workspace", ws), ("state dir", st)):
        probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
        ok = os.access(probe, os.W_OK)
        out.append(Check(name, "ok" if ok else "fail", str(path), None if ok else f"make {probe} writable"))
    return out


def run_checks(settings: Settings, workspace: Path, state_dir: Path) -> list[Check]:
    checks = [*_dirs(workspace, state_dir), *_docker(settings), _chromium(settings), *_mail(settings), _otlp(settings)]
    if shutil.which("mmdebstrap") is None:
        checks.append(Check("offline image build", "warn", "mmdebstrap missing", "apt-get install -y mmdebstrap"))
    return checks
