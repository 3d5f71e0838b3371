"""The ``agent-legs`` command line."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ._errors import AgentLegsError
from ._legs import Legs, default_state_dir
from ._models import ApprovalRequest

app = typer.Typer(
    name="agent-legs",
    help="Agent Legs: permissioned, logged, bounded actions for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="The code sandbox image.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
console = Console()
err = Console(stderr=True)


class _Globals:
    config: Path | None = None
    workspace: Path | None = None
    state_dir: Path | None = None


G = _Globals()


@app.callback()
def _options(
    config: Annotated[
        Path | None, typer.Option("--config", help="agent-legs.toml (default: ./agent-legs.toml if present)")
    ] = None,
    workspace: Annotated[Path | None, typer.Option("--workspace", envvar="AGENT_LEGS_WORKSPACE")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", envvar="AGENT_LEGS_STATE_DIR")] = None,
) -> None:
    G.config = config if config is not None else (Path("agent-legs.toml") if Path("agent-legs.toml").exists() else None)
    G.workspace = workspace
    G.state_dir = state_dir


def _open_legs(**kwargs: Any) -> Legs:
    from ._secrets import Secrets

    # AGENT_LEGS_SECRET_<NAME> variables: usable as {secret:NAME} and scrubbed from what we print and log.
    kwargs.setdefault("secrets", Secrets.from_env())
    try:
        if G.config is not None:
            return Legs.from_config(G.config, workspace=G.workspace, state_dir=G.state_dir, **kwargs)
        return Legs(workspace=G.workspace or "agent-workspace", state_dir=G.state_dir, **kwargs)
    except AgentLegsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _state_dir() -> Path:
    if G.state_dir is not None:
        return G.state_dir
    if G.config is not None:
        import tomllib

        data = tomllib.loads(G.config.read_text(encoding="utf-8"))
        if "state_dir" in data:
            return G.config.resolve().parent / str(data["state_dir"])
    return default_state_dir()


@app.command()
def actions(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the action catalog."""
    from ._registry import REGISTRY

    specs = list(REGISTRY)
    if as_json:
        print(json.dumps([
            {"name": s.name, "tool_name": s.tool_name, "read_only": s.read_only, "description": s.description,
             "input_schema": s.input_model.model_json_schema()} for s in specs
        ], indent=2))
        return
    table = Table(title="Agent Legs actions")
    table.add_column("action", style="bold")
    table.add_column("tool")
    table.add_column("ro")
    table.add_column("arguments")
    table.add_column("description")
    for s in specs:
        fields = s.input_model.model_fields
        args = ", ".join(n if f.is_required() else f"[{n}]" for n, f in fields.items())
        table.add_row(s.name, s.tool_name, "yes" if s.read_only else "", args, s.description.splitlines()[0])
    console.print(table)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@app.command()
def run(
    action: Annotated[str, typer.Argument(help="Action name, e.g. files.read")],
    args: Annotated[list[str] | None, typer.Argument(help="key=value pairs; values are JSON when they parse")] = None,
    session: Annotated[str, typer.Option("--session")] = "cli",
    call_id: Annotated[str | None, typer.Option("--call-id")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve actions that need approval")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run one action and print its result."""
    payload: dict[str, Any] = {}
    for item in args or []:
        key, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]error:[/red] expected key=value, got {item!r}")
            raise typer.Exit(2)
        payload[key] = _parse_value(value)

    def approver(req: ApprovalRequest) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        from rich.prompt import Confirm

        return Confirm.ask(f"Approve {req.action}? {req.reason}", console=err)

    with _open_legs(approver=approver) as legs:
        try:
            result = legs.run(action, payload, session=session, call_id=call_id)
        except AgentLegsError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        style = "green" if result.ok else "red"
        err.print(f"[{style}]{result.action}: {'ok' if result.ok else result.error.type if result.error else 'failed'}"
                  f"[/{style}] ({result.duration_ms:.1f} ms, trace {result.trace_id})")
        print(result.output)
        for a in result.artifacts:
            err.print(f"artifact: {a.path} ({a.mime_type}, {a.size} bytes)")
    raise typer.Exit(0 if result.ok else 1)


# (column, fixed width): fixed so that --follow's rows, printed one by one, line up under the header.
_LOG_WIDE = (("time", 23), ("session", 14), ("action", 18), ("decision", 15), ("outcome", 15),
             ("duration", 9), ("trace", 8), ("target", None))
_LOG_NARROW = (("time", 8), ("session", 10), ("action", 14), ("decision", 8), ("outcome", 13),
               ("duration", 8), ("target", None))


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
    from rich.markup import escape

    outcome = str(e.get("outcome") or "")
    color = {"ok": "green", "running": "yellow"}.get(outcome, "red")  # "unfinished": cut short by a crash
    target = escape(str(e.get("target") or ""))
    if outcome != "ok" and e.get("error"):  # why it failed, under what it touched
        target += ("\n" if target else "") + f"[dim red]{escape(str(e['error']))}[/dim red]"
    cells = [_log_time(e.get("time"), wide), escape(str(e.get("session") or "")),
             escape(str(e.get("action") or "")), escape(str(e.get("decision") or "")),
             f"[{color}]{escape(outcome)}[/{color}]", _log_duration(e.get("duration_ms"))]
    if wide:
        cells.append(str(e.get("trace_id") or "")[:8])
    return [*cells, target]


def _log_table(title: str | None, wide: bool, show_header: bool = True) -> Table:
    # No box: its separators cost width, and --follow prints its rows as one-row tables that must line up.
    table = Table(title=title, show_header=show_header, box=None, padding=(0, 2 if wide else 1, 0, 0),
                  pad_edge=False, expand=True, header_style="bold underline")
    for name, width in _LOG_WIDE if wide else _LOG_NARROW:
        if width is None:
            table.add_column(name, overflow="fold", ratio=1, min_width=12)
        else:
            table.add_column(name, width=width, no_wrap=True, overflow="ellipsis",
                             justify="right" if name == "duration" else "left")
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

    from ._telemetry import follow_log, read_log

    path = _state_dir() / "actions.jsonl"
    trace_prefix = trace.lower() if trace else None

    def keep(e: dict[str, Any]) -> bool:
        return ((session is None or e.get("session") == session)
                and (not failed or e.get("outcome") not in ("ok", "running"))
                and (trace_prefix is None or str(e.get("trace_id") or "").startswith(trace_prefix)))

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


@sandbox_app.command("build")
def sandbox_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the image is up to date")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Skip docker build; use mmdebstrap")] = False,
) -> None:
    """Build the code sandbox image (offline from Debian packages when no registry is reachable)."""
    import tomllib

    from ._sandbox.build import build_image
    from ._settings import Settings

    data = tomllib.loads(G.config.read_text(encoding="utf-8")) if G.config is not None else {}
    settings = Settings.model_validate(data.get("settings", {}))
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
def demo(
    model: Annotated[
        str | None,
        typer.Option("--model", help="provider:name, e.g. openai:gpt-4o-mini (needs the provider's key and its "
                     "LangChain package); without it a scripted model plays the agent"),
    ] = None,
    inbox: Annotated[bool, typer.Option("--inbox/--no-inbox", help="start the IMAP mailbox (Dovecot)")] = True,
) -> None:
    """Watch an agent do a real job with all five action families, against services the demo starts on 127.0.0.1."""
    try:
        import langchain.agents  # noqa: F401

        import langchain_agent_legs  # noqa: F401
    except ImportError as exc:
        err.print(f"[red]error:[/red] the demo needs LangChain ({exc}): pip install 'langchain>=1,<2' "
                  "langchain-agent-legs  (or run: bash shared/demo.sh, which installs everything)")
        raise typer.Exit(2) from None
    from ._demo import run_demo

    workspace = (G.workspace or Path("agent-workspace-demo")).resolve()
    state_dir = (G.state_dir or Path(".agent-legs-demo-state")).resolve()
    report = run_demo(workspace, state_dir, model=model, console=console, inbox=inbox)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per check")] = False,
) -> None:
    """Check the directories, Docker and the sandbox image, the browser, SMTP/IMAP and OTLP; say how to fix."""
    from ._doctor import run_checks
    from ._secrets import Secrets

    settings, workspace, state_dir = _settings_and_dirs()
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


def _settings_and_dirs() -> tuple[Any, Path, Path]:
    import tomllib

    from ._settings import Settings

    data = tomllib.loads(G.config.read_text(encoding="utf-8")) if G.config is not None else {}
    base = G.config.resolve().parent if G.config is not None else Path.cwd()
    workspace = G.workspace or base / data.get("workspace", "agent-workspace")
    state_dir = G.state_dir or (base / data["state_dir"] if "state_dir" in data else default_state_dir())
    return Settings.model_validate(data.get("settings", {})), Path(workspace), Path(state_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
