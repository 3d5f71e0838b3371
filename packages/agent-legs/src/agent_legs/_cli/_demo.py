"""The ``demo`` command: the demo package's agent against services it starts on 127.0.0.1.

The demo is its own distribution (it drives a LangChain agent; the core imports no adapter): without
it, one line says how to install it (exit code 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .._legs import STATE_DIR_ENV, WORKSPACE_ENV
from ._app import G, app, console, err

__all__ = ["demo"]


@app.command()
def demo(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="provider:name, e.g. openai:gpt-4o-mini (needs the provider's key and its "
            "LangChain package); without it a scripted model plays the agent",
        ),
    ] = None,
    inbox: Annotated[bool, typer.Option("--inbox/--no-inbox", help="start the IMAP mailbox (Dovecot)")] = True,
) -> None:
    """Watch an agent do a real job with all five action families, against services the demo starts on 127.0.0.1."""
    # The demo is its own distribution (it drives a LangChain agent; the core imports no adapter).
    try:
        import agent_legs_demo
    except ModuleNotFoundError as exc:
        if exc.name != "agent_legs_demo":
            raise
        err.print(
            "[red]error:[/red] the demo is its own package: pip install agent-legs-demo "
            "(in a clone of the repository: bash shared/demo.sh)"
        )
        raise typer.Exit(2) from None
    workspace = (G.workspace or Path(os.environ.get(WORKSPACE_ENV, "").strip() or "agent-workspace-demo")).resolve()
    state_dir = (G.state_dir or Path(os.environ.get(STATE_DIR_ENV, "").strip() or ".agent-legs-demo-state")).resolve()
    raise typer.Exit(agent_legs_demo.main(workspace, state_dir, model=model, inbox=inbox, console=console, err=err))
