"""``agent-legs console``: check the options, say how to log in, serve until interrupted.

The CLI's command function only passes its options here (the CLI is being split: this keeps the
edit there to one small function). Exit codes: 0 after Ctrl-C, 1 when the ``[console]`` extra is
missing, 2 for a usage problem (a non-loopback host without ``--allow-remote``, an empty token, a
port that cannot be bound).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._extras import EXTRAS, missing
from ._config import TOKEN_ENV, ConsoleConfig, check_host, is_loopback, login_url, resolve_token

__all__ = ["run_console"]


def run_console(
    conf: dict[str, Any],
    workspace: Path,
    state_dir: Path,
    host: str,
    port: int,
    token: str | None,
    allow_remote: bool,
    say: Callable[[str], None],
) -> int:
    absent = missing("console")
    if absent:
        say(f"error: agent-legs console needs {', '.join(absent)}: {EXTRAS['console'].hint}")
        return 1
    problem = check_host(host, allow_remote)
    if problem is not None:
        say(f"error: {problem}")
        return 2
    if token is not None and not token.strip():
        say("error: the console token (--token) is empty")
        return 2
    secret, generated = resolve_token(token)
    from .._secrets import Secrets
    from ._server import serve

    config = ConsoleConfig(
        state_dir=state_dir,
        workspace=workspace,
        settings=conf["settings"],
        policy=conf.get("policy"),
        secrets=Secrets.from_env(),
        token=secret,
        host=host,
        port=port,
    )
    if not is_loopback(host):
        say(f"warning: the console on {host} is reachable from the network; put TLS in front of it")
    say(f"agent-legs console: state directory {state_dir}")
    say(f"open {login_url(host, port, secret)}" + (f"  (set {TOKEN_ENV} to choose the token)" if generated else ""))
    try:
        serve(config, allow_remote=allow_remote)
    except KeyboardInterrupt:
        pass
    except (OSError, SystemExit) as exc:
        say(f"error: cannot serve on {host}:{port}: {exc}")
        return 2
    return 0
