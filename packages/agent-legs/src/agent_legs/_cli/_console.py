"""The ``console`` command: serve the web console (the live action feed, sessions and approvals).

The console itself lives in ``agent_legs._console`` (the ``[console]`` extra); this module only reads
the configuration as every command does and hands over. Binding to a non-loopback address needs
``--allow-remote``; the login token comes from ``--token``, ``AGENT_LEGS_CONSOLE_TOKEN``, or is made up
and printed with a ready login URL.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from .._legs import resolve_dirs
from ._app import app, cli_config, err

__all__ = ["console_command"]


@app.command("console")
def console_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback unless --allow-remote)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on")] = 8765,
    token: Annotated[
        str | None, typer.Option("--token", help="Login token (default: $AGENT_LEGS_CONSOLE_TOKEN, else a random one printed)")
    ] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow binding to a non-loopback address (reachable from the network)")
    ] = False,
) -> None:
    """Serve the web console: the live action feed, sessions and approvals (pip install 'agent-legs[console]')."""
    from .._console._command import run_console

    conf = cli_config()
    workspace, state_dir = resolve_dirs(conf.get("workspace"), conf.get("state_dir"))

    def say(line: str) -> None:
        err.print(escape(line), highlight=False, soft_wrap=True)

    raise typer.Exit(run_console(conf, workspace, state_dir, host, port, token, allow_remote, say))
