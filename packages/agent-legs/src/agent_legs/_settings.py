"""How to reach things (as opposed to what is allowed: that is the policy).

``Settings`` reads ``AGENT_LEGS_*`` environment variables (nested with ``__``, e.g.
``AGENT_LEGS_CODE__IMAGE``). String values may hold ``{secret:NAME}`` references, resolved only
where they are used (never stored resolved).

One precedence everywhere (``Legs()``, ``Legs.from_config``, every CLI command): explicit arguments,
then the environment, then the config file, then the defaults. ``load_settings`` is the one place
that merges them; every problem it finds is a ``ConfigError`` naming the key and where the bad value
came from (``settings.http.retries (from AGENT_LEGS_HTTP__RETRIES): ...``), never a raw pydantic error.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._errors import ConfigError
from ._sections import SettingsSection
from .actions.browser._settings import BrowserSettings
from .actions.code._settings import CodeSettings
from .actions.email._settings import EmailSettings, MailServer
from .actions.http._settings import HttpAuth, HttpSettings
from .actions.mcp._settings import McpServerSettings, McpSettings

__all__ = [
    "ENV_PREFIX",
    "BrowserSettings",
    "CodeSettings",
    "EmailSettings",
    "HttpAuth",
    "HttpSettings",
    "MailServer",
    "McpServerSettings",
    "McpSettings",
    "Settings",
    "StateSettings",
    "TelemetrySettings",
    "describe_validation_error",
    "env_settings",
    "load_settings",
    "read_config_file",
]

ENV_PREFIX = "AGENT_LEGS_"


class TelemetrySettings(SettingsSection):
    service_name: str = "agent-legs"
    capture_content: bool = True
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP base URL, e.g. http://localhost:4318.")
    span_name_prefix: str = Field("execute_tool", description="Span name is '<prefix> <tool_name>'.")
    max_attribute_chars: int = 4096
    trace_url: str | None = Field(
        None,
        description="Link from a call to its trace, with {trace_id} where the id goes "
        "(e.g. http://localhost:16686/trace/{trace_id} for Jaeger); the console shows it on each call.",
    )

    @field_validator("trace_url")
    @classmethod
    def _trace_url_template(cls, value: str | None) -> str | None:
        if value is not None and ("{trace_id}" not in value or not value.lower().startswith(("http://", "https://"))):
            raise ValueError("trace_url must be an http(s) URL template containing {trace_id}")
        return value


class StateSettings(SettingsSection):
    url: str | None = Field(
        None,
        description="Shared state (budgets, send ledger, approvals, sessions) in "
        "PostgreSQL: postgresql://USER:{secret:PG_PASSWORD}@HOST:5432/DBNAME (pip install "
        "'agent-legs[postgres]'). Unset: SQLite in the state directory (one machine).",
    )
    pool_size: int = Field(10, ge=1, description="PostgreSQL connections per process, at most.")
    timeout_s: float = Field(
        5.0, gt=0, description="How long a call waits for a database connection before it is reported unavailable."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENT_LEGS_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    http: HttpSettings = Field(default_factory=HttpSettings)
    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    code: CodeSettings = Field(default_factory=CodeSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    state: StateSettings = Field(default_factory=StateSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    session_ttl_s: float = Field(1800, gt=0, description="Idle sessions are closed after this.")
    max_output_chars: int = Field(20_000, gt=0, description="Bound on ActionResult.output.")


# -- loading -------------------------------------------------------------------------------------


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``agent-legs.toml``; a missing, unreadable or malformed file is a ``ConfigError``."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    unknown = set(data) - {"workspace", "state_dir", "settings", "policy"}
    if unknown:
        raise ConfigError(f"{p}: unknown top-level keys {sorted(unknown)} (expected workspace, state_dir, [settings], [policy])")
    for key in ("workspace", "state_dir"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise ConfigError(f"{key} (in {p}): expected a directory path string, got {data[key]!r}")
    for key in ("settings", "policy"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{key} (in {p}): expected a [{key}] table, got {type(data[key]).__name__}")
    return data


def env_settings() -> dict[str, Any]:
    """The ``AGENT_LEGS_<SECTION>__<KEY>`` values of the environment, nested, not yet validated."""
    from pydantic_settings import EnvSettingsSource
    from pydantic_settings.exceptions import SettingsError

    try:
        return dict(EnvSettingsSource(Settings)())
    except SettingsError as exc:  # a section given as one variable (AGENT_LEGS_HTTP='{...}') that is not JSON
        m = re.search(r'field "(\w+)"', str(exc))
        field = m.group(1) if m else "?"
        raise ConfigError(
            f"settings.{field} (from {_env_var((field,)) or ENV_PREFIX + field.upper()}): not valid JSON ({exc.__cause__ or exc})"
        ) from None


def load_settings(
    explicit: Settings | Mapping[str, Any] | None = None,
    file: Mapping[str, Any] | None = None,
    file_path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Settings from, in order of precedence, ``explicit``, the environment, ``file``, the defaults.

    A ``Settings`` object given explicitly is taken as it is (the caller built it, environment included).
    """
    if isinstance(explicit, Settings):
        return explicit
    if explicit is not None and not isinstance(explicit, Mapping):
        raise ConfigError(f"settings: expected Settings or a dict, got {type(explicit).__name__}")
    env = env_settings()
    merged = _deep_merge(_deep_merge(dict(file or {}), env), dict(explicit or {}))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(
                exc,
                "settings",
                sources=[(dict(explicit or {}), None), (env, "env"), (dict(file or {}), file_path)],
            )
        ) from None


def describe_validation_error(
    exc: ValidationError,
    prefix: str,
    sources: Sequence[tuple[Mapping[str, Any], Any]] = (),
) -> str:
    """One line per problem: ``<prefix>.<key path> (<where it came from>): <message> (got <value>)``.

    ``sources`` are (values, origin) pairs, highest precedence first; origin ``"env"`` names the
    variable, a path names the file, ``None`` names nothing (an argument of the caller).
    """
    lines = []
    for e in exc.errors(include_url=False):
        loc = tuple(str(x) for x in e["loc"])
        key = ".".join((prefix, *loc)) if loc else prefix
        where = ""
        for values, origin in sources:
            if _has(values, loc):
                if origin == "env":
                    where = f" (from {_env_var(loc) or 'the environment'})"
                elif origin is not None:
                    where = f" (in {origin})"
                break
        got = ""
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not isinstance(e["input"], dict):
            shown = repr(e["input"])
            got = f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        lines.append(f"{key}{where}: {e['msg']}{got}")
    return "; ".join(lines) if len(lines) == 1 else f"{len(lines)} problems: " + "; ".join(lines)


def _has(values: Any, loc: tuple[str, ...]) -> bool:
    for part in loc:
        if isinstance(values, Mapping) and part in values:
            values = values[part]
        elif isinstance(values, list) and part.isdigit() and int(part) < len(values):
            values = values[int(part)]
        else:
            return False
    return True


def _env_var(loc: tuple[str, ...]) -> str | None:
    """The environment variable that set ``loc`` (the most specific one set), as it is spelled."""
    names = {k.upper(): k for k in os.environ}
    parts = [p for p in loc if not p.isdigit()]
    for n in range(len(parts), 0, -1):
        name = ENV_PREFIX + "__".join(parts[:n]).upper()
        if name in names:
            return names[name]
    return None


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out
