"""How to reach things (as opposed to what is allowed: that is the policy).

``Settings`` reads ``AGENT_LEGS_*`` environment variables (nested with ``__``, e.g.
``AGENT_LEGS_CODE__IMAGE``); explicit arguments win over the environment. String values may hold
``{secret:NAME}`` references, resolved only where they are used (never stored resolved).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "BrowserSettings",
    "CodeSettings",
    "EmailSettings",
    "HttpAuth",
    "HttpSettings",
    "MailServer",
    "Settings",
    "TelemetrySettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpAuth(_Section):
    hosts: list[str] = Field(description="Host globs (optional ':port') that receive these headers.")
    headers: dict[str, str] = Field(description="Header values; use {secret:NAME} for credentials.")


class HttpSettings(_Section):
    auth: list[HttpAuth] = Field(default_factory=list)
    user_agent: str = "agent-legs/0.1 (+https://github.com/agent-legs/agent-legs)"
    max_connections: int = 100
    retries: int = Field(2, ge=0, description="Retries of idempotent requests on transient errors.")
    transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="Connection layer: aiohttp, driven directly (measured ~2x the sequential speed and "
        "~9x the concurrent throughput), or httpx's own pool.")


class BrowserSettings(_Section):
    executable_path: str | None = Field(None, description="Chromium binary; with ws_endpoint, its path on the "
                                        "server's machine (sent as a launch option).")
    ws_endpoint: str | None = Field(None, description="A Playwright server (playwright run-server --unsafe, so it "
                                    "applies our launch flags; or launch-server pre-launched with them).")
    cdp_url: str | None = Field(None, description="A Chromium reachable over CDP.")
    proxy_bind: str = Field("127.0.0.1", description="Address each session's egress proxy listens on. Change it "
                            "only for a browser on another host, to an address only that host can reach.")
    proxy_host: str | None = Field(None, description="Address the browser is told to reach the proxies at "
                                   "(default: proxy_bind; required when proxy_bind is 0.0.0.0 or ::).")
    headless: bool = True
    profile: str | None = Field(None, description="Named profile whose cookies persist in the state dir.")
    max_content_chars: int = 20_000
    max_concurrent_loads: int = Field(0, ge=0, description="Page loads (navigate, click, fill with submit, back) "
                                      "one browser runs at once; others wait their turn within their timeout. "
                                      "0: twice the CPU count.")


class CodeSettings(_Section):
    docker_host: str | None = Field(None, description="Docker daemon URL; default DOCKER_HOST or the local socket.")
    image: str = "agent-legs-sandbox:latest"
    pool_size: int = Field(2, ge=0, description="Pre-started containers ready for new sessions.")
    session_ttl_s: float = Field(1800, gt=0)
    runtime: Literal["runc", "runsc"] = Field(
        "runc", description="Container runtime: runc (Docker's default) or runsc (gVisor: a user-space kernel "
        "between the code and the host's, for stronger isolation; slower to start, hidden by the pool). runsc must be "
        "registered with Docker (shared/sandbox/ensure-runsc.sh; `agent-legs doctor` checks it).")
    uid: int = Field(1000, ge=1, lt=2**31, description="The user (and group) id the sandbox runs as when the "
                     "workspace is owned by root; it gets access through POSIX ACLs, never by chown. Pick an id no "
                     "host account uses. (A workspace owned by another user is worked on as that user.)")


class MailServer(_Section):
    host: str
    port: int | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, description="Use {secret:NAME}.")
    timeout_s: float = 30
    ca_file: str | None = Field(None, description="Extra CA bundle to trust (e.g. a private CA).")


class EmailSettings(_Section):
    from_address: str | None = None
    smtp: MailServer | None = None
    imap: MailServer | None = None


class TelemetrySettings(_Section):
    service_name: str = "agent-legs"
    capture_content: bool = True
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP base URL, e.g. http://localhost:4318.")
    span_name_prefix: str = Field("execute_tool", description="Span name is '<prefix> <tool_name>'.")
    max_attribute_chars: int = 4096


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENT_LEGS_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    http: HttpSettings = Field(default_factory=HttpSettings)
    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    code: CodeSettings = Field(default_factory=CodeSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    session_ttl_s: float = Field(1800, gt=0, description="Idle sessions are closed after this.")
    max_output_chars: int = Field(20_000, gt=0, description="Bound on ActionResult.output.")
