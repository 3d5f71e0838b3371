"""The ``agent-legs`` command line.

Invariants: every command reads the configuration the way ``Legs.from_config`` does (``--workspace`` /
``--state-dir``, then ``AGENT_LEGS_*``, then ``--config`` / ``./agent-legs.toml``, then the defaults), so
``agent-legs log`` reads the log a library ``Legs()`` writes under the same environment. A configuration
problem (or an unknown action) is one line on stderr and exit code 2, raised before anything is created.
What is printed on stdout is the result; progress and status go to stderr, decorations only on a terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from ._errors import AgentLegsError
from ._legs import STATE_DIR_ENV, WORKSPACE_ENV, Legs, config_kwargs, resolve_dirs
from ._models import ApprovalRequest


class _Group(TyperGroup):
    """Every configuration problem (bad --config file, bad AGENT_LEGS_* value, directories that
    contain each other) ends as one line on stderr and exit code 2: no traceback, nothing written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _quiet_flags(self)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except AgentLegsError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def _quiet_flags(command: Any) -> None:
    """Flags (``--json``, ``--yes``, ``--help``) show no ``<bool>`` in the help: they take no value."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None) and param.metavar is None:
            param.metavar = ""
    original = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _quiet_flags(sub)


app = typer.Typer(
    cls=_Group,
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
    # Not typer's envvar=: the variables are read where Legs reads them (one precedence, and an error
    # names the variable a bad value came from).
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", help="Default: $AGENT_LEGS_WORKSPACE, else workspace in the config, else ./agent-workspace"),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", help="Default: $AGENT_LEGS_STATE_DIR, else state_dir in the config, else $XDG_STATE_HOME/agent-legs"
        ),
    ] = None,
) -> None:
    G.config = config if config is not None else (Path("agent-legs.toml") if Path("agent-legs.toml").exists() else None)
    G.workspace = workspace
    G.state_dir = state_dir


def _config() -> dict[str, Any]:
    """``Legs`` keyword arguments from --config / the environment / the flags, as ``Legs.from_config``
    builds them (one precedence for the library and the CLI); a bad value is a ``ConfigError``."""
    return config_kwargs(G.config, workspace=G.workspace, state_dir=G.state_dir)


def _open_legs(**kwargs: Any) -> Legs:
    from ._secrets import Secrets

    # AGENT_LEGS_SECRET_<NAME> variables: usable as {secret:NAME} and scrubbed from what we print and log.
    kwargs.setdefault("secrets", Secrets.from_env())
    return Legs(**_config(), **kwargs)


def _state_dir() -> Path:
    conf = _config()
    return resolve_dirs(conf.get("workspace"), conf.get("state_dir"))[1]


@app.command()
def actions(as_json: Annotated[bool, typer.Option("--json", help="The catalog with input schemas, as JSON")] = False) -> None:
    """List the action catalog."""
    from ._registry import REGISTRY

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

    from ._registry import REGISTRY

    spec = REGISTRY.get(action)  # an unknown name: UnknownActionError, one line, exit 2, before anything is created
    with _open_legs(approver=approver) as legs:
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
    from rich.markup import escape

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

    from ._telemetry import follow_log, read_log

    path = _state_dir() / "actions.jsonl"
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


@sandbox_app.command("build")
def sandbox_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the image is up to date")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Skip docker build; use mmdebstrap")] = False,
) -> None:
    """Build the code sandbox image (offline from Debian packages when no registry is reachable)."""
    from ._sandbox.build import build_image

    settings = _config()["settings"]
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


@contextlib.contextmanager
def _approval_queue() -> Any:
    """The approval queue of the configured state store (state directory, or settings.state.url); a
    store that is down is one line on stderr and exit code 1 (an unknown or decided id: exit 2)."""
    from ._approval_queue import ApprovalQueue
    from ._errors import ActionError
    from ._secrets import Secrets

    settings, _, state_dir = _settings_and_dirs()
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

        from ._mcp_server import TOKEN_ENV, McpApprovals, is_loopback, parse_host_port, serve_http, serve_stdio
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
    with _open_legs(approver=approvals.approve) as legs:
        if approval_queue:
            from ._approval_queue import QueueApprover

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
    from ._console._command import run_console

    conf = _config()
    workspace, state_dir = resolve_dirs(conf.get("workspace"), conf.get("state_dir"))
    say = lambda line: err.print(escape(line), highlight=False, soft_wrap=True)  # noqa: E731
    raise typer.Exit(run_console(conf, workspace, state_dir, host, port, token, allow_remote, say))


def _settings_and_dirs() -> tuple[Any, Path, Path]:
    conf = _config()
    workspace, state_dir = resolve_dirs(conf.get("workspace"), conf.get("state_dir"))
    return conf["settings"], workspace, state_dir


def main() -> None:
    app()


if __name__ == "__main__":
    main()
