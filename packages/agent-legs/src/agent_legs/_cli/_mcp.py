"""The ``mcp`` command: serve the allowed actions as MCP tools (stdio, or streamable HTTP).

Over HTTP every request needs the bearer token, and a non-loopback address needs ``--allow-remote``;
every bad combination of flags is a usage error (exit code 2) before anything is served.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape

from ._app import app, err, open_legs

__all__ = ["mcp_command"]


@app.command("mcp")
def mcp_command(
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (e.g. 127.0.0.1:8765)",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="HTTP bearer token (default: $AGENT_LEGS_MCP_TOKEN, else a random one printed on stderr)"),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", help="Another Origin allowed over HTTP (repeatable), e.g. https://app.example.com"),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="Another Host header value allowed over HTTP (repeatable), e.g. mcp.internal:8765"),
    ] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow binding --http to a non-loopback address (reachable from the network)")
    ] = False,
    approval_queue: Annotated[
        bool,
        typer.Option(
            "--approval-queue",
            help="When a client cannot be asked (no elicitation), a call that needs approval waits "
            "in the approval queue (agent-legs approvals / approve / reject) instead of being refused",
        ),
    ] = False,
) -> None:
    """Serve the allowed actions as MCP tools: stdio by default (one client), or --http HOST:PORT.

    Over HTTP every request needs Authorization: Bearer <token>; a foreign Origin or Host is refused.
    Approvals: the client's elicitation when it supports it, else (--approval-queue) the approval
    queue, else approval_denied with the rule.
    """
    import asyncio
    import secrets as _secrets

    try:
        import mcp  # noqa: F401

        from .._mcp_server import TOKEN_ENV, McpApprovals, is_loopback, parse_host_port, serve_http, serve_stdio
    except ImportError as exc:
        err.print(f"[red]error:[/red] agent-legs mcp needs the MCP SDK ({exc}): pip install 'agent-legs\\[mcp]'", highlight=False)
        raise typer.Exit(2) from None

    def usage(message: str) -> typer.Exit:
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        return typer.Exit(2)

    address: tuple[str, int] | None = None
    secret: str | None = None
    if http is not None:
        try:
            address = parse_host_port(http)
        except ValueError as exc:
            raise usage(str(exc)) from None
        if not is_loopback(address[0]):
            if not allow_remote:
                raise usage(
                    f"--http {http} is not a loopback address: the server would be reachable from the "
                    "network; pass --allow-remote to mean it (and put TLS in front of it)"
                )
            err.print(
                f"[yellow]warning:[/yellow] serving MCP on {escape(address[0])}, reachable from the network; "
                "the bearer token travels in clear text unless a TLS proxy is in front",
                highlight=False,
            )
        secret = token if token is not None else os.environ.get(TOKEN_ENV)
        if secret is not None and not secret.strip():
            raise usage(f"the MCP token ({'--token' if token is not None else TOKEN_ENV}) is empty")
        if secret is None:
            secret = _secrets.token_urlsafe(32)
            err.print(f"agent-legs mcp: bearer token (set {TOKEN_ENV} to choose one): {secret}", highlight=False, soft_wrap=True)
        secret = secret.strip()
    elif token is not None or allow_origin or allow_host or allow_remote:
        raise usage("--token, --allow-origin, --allow-host and --allow-remote apply only with --http HOST:PORT")

    approvals = McpApprovals()
    with open_legs(approver=approvals.approve) as legs:
        if approval_queue:
            from .._approval_queue import QueueApprover

            approvals.fallback = QueueApprover(legs._runtime)
        try:
            if address is None:
                asyncio.run(serve_stdio(legs, approvals))
            else:
                assert secret is not None
                asyncio.run(
                    serve_http(
                        legs, approvals, address[0], address[1], secret, allow_origins=allow_origin, allow_hosts=allow_host
                    )
                )
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            raise usage(f"cannot serve on {http}: {exc}") from None
