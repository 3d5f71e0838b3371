"""The ``agent-legs`` application: the typer ``app`` every command module registers on, the global
options, and how a command reads the configuration and opens a ``Legs``.

Invariants: ``cli_config`` builds ``Legs`` keyword arguments exactly as ``Legs.from_config`` does (one
precedence for the library and the CLI); every ``AgentLegsError`` a command raises is one line on
stderr and exit code 2 (``_Group.invoke``), no traceback, nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from .._errors import AgentLegsError
from .._legs import Legs, config_kwargs, resolve_dirs

__all__ = ["G", "app", "cli_config", "cli_state_dir", "console", "err", "main", "open_legs", "sandbox_app", "settings_and_dirs"]


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


def cli_config() -> dict[str, Any]:
    """``Legs`` keyword arguments from --config / the environment / the flags, as ``Legs.from_config``
    builds them (one precedence for the library and the CLI); a bad value is a ``ConfigError``."""
    return config_kwargs(G.config, workspace=G.workspace, state_dir=G.state_dir)


def open_legs(**kwargs: Any) -> Legs:
    from .._secrets import Secrets

    # AGENT_LEGS_SECRET_<NAME> variables: usable as {secret:NAME} and scrubbed from what we print and log.
    kwargs.setdefault("secrets", Secrets.from_env())
    return Legs(**cli_config(), **kwargs)


def cli_state_dir() -> Path:
    conf = cli_config()
    return resolve_dirs(conf.get("workspace"), conf.get("state_dir"))[1]


def settings_and_dirs() -> tuple[Any, Path, Path]:
    conf = cli_config()
    workspace, state_dir = resolve_dirs(conf.get("workspace"), conf.get("state_dir"))
    return conf["settings"], workspace, state_dir


def main() -> None:
    app()
