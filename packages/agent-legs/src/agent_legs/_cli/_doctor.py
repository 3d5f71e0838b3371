"""The ``doctor`` and ``sandbox build`` commands: check the environment, and build the sandbox image.

``doctor`` exits 1 when a check fails, and says how to fix each problem.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ._app import app, cli_config, console, err, sandbox_app, settings_and_dirs

__all__ = ["doctor", "sandbox_build"]


@sandbox_app.command("build")
def sandbox_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the image is up to date")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Skip docker build; use mmdebstrap")] = False,
) -> None:
    """Build the code sandbox image (offline from Debian packages when no registry is reachable)."""
    from ..actions.code._sandbox.build import build_image

    settings = cli_config()["settings"]
    with console.status("building the sandbox image...") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.print(f"[dim]{message}[/dim]")

        try:
            tag = build_image(settings.code.image, progress=progress, force=force, offline=offline or None)
        except RuntimeError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(f"[green]ready[/green] {tag}")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per check")] = False,
) -> None:
    """Check the directories, Docker and the sandbox image, the browser, SMTP/IMAP and OTLP; say how to fix."""
    from .._doctor import run_checks
    from .._secrets import Secrets

    settings, workspace, state_dir = settings_and_dirs()
    checks = run_checks(settings, workspace, state_dir, secrets=Secrets.from_env())
    if as_json:
        for c in checks:
            print(json.dumps(asdict(c)))
    else:
        table = Table(title="agent-legs doctor", title_justify="left")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in checks:
            style = {"ok": "green", "warn": "yellow", "fail": "red"}[c.status]
            table.add_row(c.name, f"[{style}]{c.status}[/{style}]", c.detail, c.fix or "")
        console.print(table)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)
