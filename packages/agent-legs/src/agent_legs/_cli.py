"""The ``agent-legs`` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
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


def _log_lines(path: Path, follow: bool) -> Iterator[dict[str, Any]]:
    if not path.exists() and not follow:
        return
    while not path.exists():
        time.sleep(0.2)
    rotated = [path.with_name(f"{path.name}.{i}") for i in range(5, 0, -1)]
    if not follow:
        for p in [*rotated, path]:
            if p.exists():
                yield from _parse_lines(p.read_text(encoding="utf-8").splitlines())
        return
    with open(path, encoding="utf-8") as f:
        yield from _parse_lines(f.read().splitlines())
        inode = os.fstat(f.fileno()).st_ino
        buf = ""
        while True:
            chunk = f.readline()
            if chunk:
                buf += chunk
                if buf.endswith("\n"):
                    yield from _parse_lines([buf])
                    buf = ""
                continue
            time.sleep(0.2)
            try:
                if os.stat(path).st_ino != inode:  # rotated: continue with the new file
                    f.close()
                    f = open(path, encoding="utf-8")  # noqa: SIM115
                    inode = os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                pass


def _parse_lines(lines: list[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if line:
            try:
                yield json.loads(line)
            except ValueError:
                continue


@app.command()
def log(
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    session: Annotated[str | None, typer.Option("--session")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only calls that did not succeed")] = False,
    trace: Annotated[str | None, typer.Option("--trace", help="Only this trace id")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the action log (every action, allowed or denied)."""
    path = _state_dir() / "actions.jsonl"

    def keep(e: dict[str, Any]) -> bool:
        return ((session is None or e.get("session") == session)
                and (not failed or e.get("outcome") != "ok")
                and (trace is None or e.get("trace_id") == trace))

    entries = (e for e in _log_lines(path, follow) if keep(e))
    if as_json:
        for e in entries:
            print(json.dumps(e), flush=True)
        return
    if follow:
        for e in entries:
            console.print(_row_text(e))
        return
    selected = list(entries)[-limit:] if limit > 0 else list(entries)
    table = Table(title=f"Action log ({path})")
    for col in ("time", "session", "action", "decision", "outcome", "ms", "target"):
        table.add_column(col, overflow="fold")
    for e in selected:
        outcome = e.get("outcome", "")
        table.add_row(
            str(e.get("time", ""))[:23].replace("T", " "), str(e.get("session", "")), str(e.get("action", "")),
            str(e.get("decision", "")), f"[green]{outcome}[/green]" if outcome == "ok" else f"[red]{outcome}[/red]",
            f"{e.get('duration_ms', 0):.1f}", str(e.get("target") or e.get("error") or ""),
        )
    console.print(table)


def _row_text(e: dict[str, Any]) -> str:
    outcome = e.get("outcome", "")
    color = "green" if outcome == "ok" else "red"
    return (f"{str(e.get('time', ''))[:23]} {e.get('session')} {e.get('action')} {e.get('decision')} "
            f"[{color}]{outcome}[/{color}] {e.get('duration_ms', 0):.1f}ms {e.get('target') or e.get('error') or ''}")


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
    model: Annotated[str | None, typer.Option("--model", help="provider:name, e.g. openai:gpt-4o-mini (needs its key)")]
    = None,
) -> None:
    """Watch an agent do a real job with all five action families, against local demo services."""
    try:
        import langchain  # noqa: F401

        import langchain_agent_legs  # noqa: F401
    except ImportError:
        err.print("[red]error:[/red] the demo needs LangChain: pip install langchain langchain-agent-legs "
                  "(or run: bash shared/demo.sh)")
        raise typer.Exit(2) from None
    from ._demo import run_demo

    workspace = G.workspace or Path("agent-workspace-demo")
    state_dir = G.state_dir or Path(".agent-legs-demo-state")
    report = run_demo(workspace.resolve(), state_dir.resolve(), model=model, console=console)
    raise typer.Exit(0 if report.mails and report.posts else 1)


@app.command()
def doctor() -> None:
    """Check Docker, the sandbox image, Chromium, SMTP/IMAP, OTLP and the directories; say how to fix."""
    from ._doctor import run_checks

    legs_settings, workspace, state_dir = _settings_and_dirs()
    checks = run_checks(legs_settings, workspace, state_dir)
    table = Table(title="agent-legs doctor")
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
