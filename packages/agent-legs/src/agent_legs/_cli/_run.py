"""The ``actions`` and ``run`` commands: the catalog, and one action run from the command line.

``run`` parses ``key=value`` (a string) and ``key:=json`` (a JSON value) arguments; an unknown action
or a bad argument is a usage error (exit code 2) before anything is created. The approver asks on
the terminal (``--yes`` approves); without a terminal, a call that needs approval is rejected.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .._models import ApprovalRequest
from ._app import app, console, err, open_legs

__all__ = ["actions", "run"]


@app.command()
def actions(as_json: Annotated[bool, typer.Option("--json", help="The catalog with input schemas, as JSON")] = False) -> None:
    """List the action catalog."""
    from .._registry import REGISTRY

    specs = list(REGISTRY)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "tool_name": s.tool_name,
                        "read_only": s.read_only,
                        "description": s.description,
                        "input_schema": s.input_model.model_json_schema(),
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
        return
    table = Table(
        title="Agent Legs actions",
        caption=f"optional arguments in {escape('[brackets]')}; "
        "descriptions and input schemas in full: agent-legs actions --json",
    )
    table.add_column("action", style="bold")
    table.add_column("tool")
    table.add_column("ro")
    table.add_column("arguments")
    table.add_column("description")
    for s in specs:
        fields = s.input_model.model_fields
        # Optional arguments in brackets, escaped: rich would read "[offset]" as markup and drop it.
        args = ", ".join((f.alias or n) if f.is_required() else escape(f"[{f.alias or n}]") for n, f in fields.items())
        table.add_row(s.name, s.tool_name, "yes" if s.read_only else "", args, escape(_summary(s.description)))
    console.print(table)


def _summary(description: str) -> str:
    """The description's first sentence, whole (descriptions wrap lines mid-sentence in the source)."""
    text = " ".join(description.split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z])", text)
    return text[: m.start()] if m else text


def _parse_args(items: list[str]) -> dict[str, Any]:
    """``key=value`` gives the string ``value`` (numbers and booleans are converted where the action's
    schema asks for them); ``key:=json`` gives a JSON value (lists, objects, ``null``, a number where any
    type is accepted), as httpie spells it. ``name=123`` is the string "123", ``count:=123`` the number."""
    payload: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise _UsageError(f"expected key=value or key:=json, got {item!r}")
        if key.endswith(":"):
            key = key[:-1]
            try:
                payload[key] = json.loads(value)
            except ValueError as exc:
                raise _UsageError(f"{key}:= needs a JSON value ({exc}); for a string use {key}=...") from None
        else:
            payload[key] = value
    return payload


class _UsageError(Exception):
    pass


@app.command()
def run(
    action: Annotated[str, typer.Argument(help="Action name, e.g. files.read")],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value (a string) or key:=json (a JSON value: key:=123, tags:='[\"a\"]', json:='{\"a\": 1}')",
            show_default=False,
        ),
    ] = None,
    session: Annotated[str, typer.Option("--session", help="Session name (browser tab, sandbox kernel, budgets)")] = "cli",
    call_id: Annotated[str | None, typer.Option("--call-id", help="Idempotency key (email.send sends once per id)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve actions that need approval")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole ActionResult as JSON")] = False,
) -> None:
    """Run one action and print its result (exit code 0 when ok, 1 when not, 2 for a usage error).

    Example: agent-legs run files.read path=notes.txt limit=20; agent-legs run http.request method=POST
    url=https://api.example.com/items json:='{"name": "123"}'
    """
    try:
        payload = _parse_args(args or [])
    except _UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    status: Any = None

    def approver(req: ApprovalRequest) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        from rich.prompt import Confirm

        if status is not None:
            status.stop()  # the prompt must not fight the spinner for the terminal
        try:
            return Confirm.ask(f"Approve {req.action}? {escape(req.reason)}", console=err)
        finally:
            if status is not None:
                status.start()

    from .._registry import REGISTRY

    spec = REGISTRY.get(action)  # an unknown name: UnknownActionError, one line, exit 2, before anything is created
    with open_legs(approver=approver) as legs:
        # Long actions (a sandbox start, a page load) show they are running: a spinner on stderr, only
        # when stderr is a terminal (never in a pipe or a log file).
        with contextlib.ExitStack() as stack:
            if err.is_terminal:
                status = stack.enter_context(err.status(f"running {escape(spec.name)}...", spinner="dots"))
            result = legs.run(action, payload, session=session, call_id=call_id)
        status = None
    if (
        not result.ok
        and result.error is not None
        and result.error.type == "invalid_input"
        and any(isinstance(v, str) and v[:1] in "[{" for v in payload.values())
    ):
        err.print("[dim]hint: key=value passes a string; pass lists and objects as key:=json[/dim]")
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        style = "green" if result.ok else "red"
        err.print(
            f"[{style}]{result.action}: {'ok' if result.ok else result.error.type if result.error else 'failed'}"
            f"[/{style}] ({result.duration_ms:.1f} ms, trace {result.trace_id})"
        )
        print(result.output)
        for a in result.artifacts:
            err.print(f"artifact: {a.path} ({a.mime_type}, {a.size} bytes)")
    raise typer.Exit(0 if result.ok else 1)
