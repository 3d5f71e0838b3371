"""The ``log`` command: the action log as a table or JSON lines, filtered, and followed (``--follow``).

It reads the log a library ``Legs()`` writes under the same configuration (``cli_state_dir``);
fixed column widths keep ``--follow``'s rows, printed one by one, under the header.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ._app import app, cli_state_dir, console, err

__all__ = ["log"]

# (column, fixed width): fixed so that --follow's rows, printed one by one, line up under the header.
_LOG_WIDE = (
    ("time", 23),
    ("session", 14),
    ("action", 18),
    ("decision", 15),
    ("outcome", 15),
    ("duration", 9),
    ("trace", 8),
    ("target", None),
)
_LOG_NARROW = (("time", 8), ("session", 10), ("action", 14), ("decision", 8), ("outcome", 13), ("duration", 8), ("target", None))


def _log_wide() -> bool:
    return console.width >= 130


def _log_time(value: Any, wide: bool) -> str:
    # Stored in UTC (ISO 8601); shown in local time, as the user reads a clock.
    from datetime import datetime

    try:
        t = datetime.fromisoformat(str(value)).astimezone()
    except ValueError:
        return str(value or "")
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if wide else t.strftime("%H:%M:%S")


def _log_duration(ms: Any) -> str:
    try:
        value = float(ms)
    except (TypeError, ValueError):
        return ""
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _log_cells(e: dict[str, Any], wide: bool) -> list[str]:

    outcome = str(e.get("outcome") or "")
    color = {"ok": "green", "running": "yellow"}.get(outcome, "red")  # "unfinished": cut short by a crash
    target = escape(str(e.get("target") or ""))
    if outcome != "ok" and e.get("error"):  # why it failed, under what it touched
        target += ("\n" if target else "") + f"[dim red]{escape(str(e['error']))}[/dim red]"
    cells = [
        _log_time(e.get("time"), wide),
        escape(str(e.get("session") or "")),
        escape(str(e.get("action") or "")),
        escape(str(e.get("decision") or "")),
        f"[{color}]{escape(outcome)}[/{color}]",
        _log_duration(e.get("duration_ms")),
    ]
    if wide:
        cells.append(str(e.get("trace_id") or "")[:8])
    return [*cells, target]


def _log_table(title: str | None, wide: bool, show_header: bool = True) -> Table:
    # No box: its separators cost width, and --follow prints its rows as one-row tables that must line up.
    table = Table(
        title=title,
        show_header=show_header,
        box=None,
        padding=(0, 2 if wide else 1, 0, 0),
        pad_edge=False,
        expand=True,
        header_style="bold underline",
    )
    for name, width in _LOG_WIDE if wide else _LOG_NARROW:
        if width is None:
            table.add_column(name, overflow="fold", ratio=1, min_width=12)
        else:
            table.add_column(
                name, width=width, no_wrap=True, overflow="ellipsis", justify="right" if name == "duration" else "left"
            )
    return table


@app.command()
def log(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing new calls as they happen")] = False,
    session: Annotated[str | None, typer.Option("--session", help="Only this session")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only calls that did not succeed")] = False,
    trace: Annotated[str | None, typer.Option("--trace", help="Only this trace id (a prefix is enough)")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Last N calls (default: 50 in the table, all with --json)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, as stored")] = False,
) -> None:
    """Show the action log: every call, allowed or denied, from <state_dir>/actions.jsonl and its backups.

    Calls still in flight show as outcome "running"; calls whose process died before they finished
    (killed, crashed) as "unfinished": their effect may or may not have happened.
    """
    from collections import deque

    from .._telemetry import follow_log, read_log

    path = cli_state_dir() / "actions.jsonl"
    trace_prefix = trace.lower() if trace else None

    def keep(e: dict[str, Any]) -> bool:
        return (
            (session is None or e.get("session") == session)
            and (not failed or e.get("outcome") not in ("ok", "running"))
            and (trace_prefix is None or str(e.get("trace_id") or "").startswith(trace_prefix))
        )

    def emit_json(e: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(e, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    try:
        if not follow:
            count = limit if limit is not None else (None if as_json else 50)
            entries = deque((e for e in read_log(path) if keep(e)), maxlen=count or None)
            if as_json:
                for e in entries:
                    emit_json(e)
                return
            if not entries:
                err.print(f"no matching calls in {path}" if path.exists() else f"no action log yet at {path}")
                return
            wide = _log_wide()
            table = _log_table(f"Action log ({path})", wide)
            for e in entries:
                table.add_row(*_log_cells(e, wide))
            console.print(table)
            return

        # --follow: the last few calls, then each new one as it is written (across rotations).
        if not path.exists():
            err.print(f"waiting for {path} ...")
        backlog: deque[dict[str, Any]] = deque(maxlen=(limit or None) if limit is not None else 10)
        live = False
        wide = _log_wide()

        def show(e: dict[str, Any]) -> None:
            if as_json:
                emit_json(e)
            else:
                row = _log_table(None, wide, show_header=False)
                row.add_row(*_log_cells(e, wide))
                console.print(row)

        if not as_json:
            console.print(_log_table(None, wide))  # the header once; each row below lines up with it
        for item in follow_log(path):
            if item is None:  # the end of what was already written
                for old in backlog:
                    show(old)
                live = True
            elif keep(item):
                if live:
                    show(item)
                else:
                    backlog.append(item)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `agent-legs log --json | head`: stop quietly, also at interpreter exit
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
