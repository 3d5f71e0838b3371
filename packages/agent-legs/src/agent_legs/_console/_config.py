"""What a console serves and how it is reached: the state directory, the token, the host.

Invariants: a token is never empty (``resolve_token``: the flag, else ``AGENT_LEGS_CONSOLE_TOKEN``,
else 32 random bytes); the console binds to a loopback address unless the caller passes
``allow_remote`` (``check_host``), since the page can approve actions.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from .._policy import Policy
    from .._secrets import Secrets
    from .._settings import Settings

__all__ = ["TOKEN_ENV", "ConsoleConfig", "check_host", "default_user", "is_loopback", "login_url", "resolve_token"]

TOKEN_ENV = "AGENT_LEGS_CONSOLE_TOKEN"  # noqa: S105 - the variable's name, not a secret


def default_user() -> str:
    """Who the decisions are recorded as (``by``): ``console:<OS user>``."""
    try:
        name = getpass.getuser()
    except Exception:  # no user name in this environment (a container without /etc/passwd entry)
        name = "unknown"
    return f"console:{name}"


@dataclass(frozen=True)
class ConsoleConfig:
    state_dir: Path
    workspace: Path
    settings: Settings
    token: str
    policy: Policy | None = None
    secrets: Secrets | None = None
    user: str = field(default_factory=default_user)
    host: str = "127.0.0.1"
    port: int = 8765
    recent: int = 5000  # log entries kept in memory for the pages (the feed shows the newest 200)

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the console token must not be empty")


def resolve_token(given: str | None = None) -> tuple[str, bool]:
    """The token (``--token``, else ``$AGENT_LEGS_CONSOLE_TOKEN``, else a random one) and whether it was generated."""
    for value in (given, os.environ.get(TOKEN_ENV)):
        if value is not None and value.strip():
            return value.strip(), False
    return secrets.token_urlsafe(32), True


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> str | None:
    """``None`` when the console may bind to ``host``, else why not."""
    if is_loopback(host) or allow_remote:
        return None
    return (
        f"{host} is not a loopback address: the console can approve actions, so it binds to 127.0.0.1 unless "
        "--allow-remote is given (then put it behind TLS)"
    )


def login_url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if shown in ("0.0.0.0", "[::]"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/?token={quote(token, safe='')}"
