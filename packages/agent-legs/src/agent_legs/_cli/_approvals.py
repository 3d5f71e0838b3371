"""The ``approvals``, ``approve`` and ``reject`` commands: the approval queue of the configured state store.

A person decides here what a ``Legs(approver="queue")`` is waiting for; an unknown, decided or
expired id is exit code 2, a store that is down exit code 1.
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ._app import app, console, err, settings_and_dirs

__all__ = ["approvals", "approve", "reject"]


@contextlib.contextmanager
def _approval_queue() -> Any:
    """The approval queue of the configured state store (state directory, or settings.state.url); a
    store that is down is one line on stderr and exit code 1 (an unknown or decided id: exit 2)."""
    from .._approval_queue import ApprovalQueue
    from .._errors import ActionError
    from .._secrets import Secrets

    settings, _, state_dir = settings_and_dirs()
    try:
        with ApprovalQueue.open(state_dir, settings, Secrets.from_env()) as queue:
            yield queue
    except ActionError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def approvals(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of the pending requests")] = False,
) -> None:
    """List the calls waiting for approval (Legs(approver="queue")), oldest first."""
    with _approval_queue() as queue:
        rows = queue.pending()
    if as_json:
        print(json.dumps([r.public() for r in rows], indent=2))
        return
    if not rows:
        err.print("no pending approvals")
        return
    table = Table(title="pending approvals", title_justify="left")
    for col in ("id", "action", "session", "created", "reason", "arguments"):
        table.add_column(col, overflow="fold")
    for r in rows:
        p = r.public()
        table.add_row(
            r.id,
            r.action,
            escape(r.session),
            p["created"],
            escape(r.reason),
            escape(json.dumps(r.arguments, ensure_ascii=False)[:400]),
        )
    console.print(table)
    err.print("decide: agent-legs approve ID [--by NAME] / agent-legs reject ID [--message TEXT] [--by NAME]")


@app.command()
def approve(
    approval_id: Annotated[str, typer.Argument(help="The id agent-legs approvals shows")],
    by: Annotated[str | None, typer.Option("--by", help="Who decided (recorded)")] = None,
) -> None:
    """Approve a waiting call: it runs once (exit 2 for an unknown, decided or expired id)."""
    with _approval_queue() as queue:
        row = queue.approve(approval_id, by=by)
    err.print(f"approved {row.id}: {row.action} (session {escape(row.session)})" + (f" by {escape(by)}" if by else ""))


@app.command()
def reject(
    approval_id: Annotated[str, typer.Argument(help="The id agent-legs approvals shows")],
    message: Annotated[str | None, typer.Option("--message", help="What the agent is told")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who decided (recorded)")] = None,
) -> None:
    """Reject a waiting call: it does not run (exit 2 for an unknown, decided or expired id)."""
    with _approval_queue() as queue:
        row = queue.reject(approval_id, message=message, by=by)
    err.print(f"rejected {row.id}: {row.action} (session {escape(row.session)})" + (f" by {escape(by)}" if by else ""))
