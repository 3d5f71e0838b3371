"""Optional extras: which action families need which packages, and the one hint that adds them.

``pip install agent-legs`` is the runtime, the policy, telemetry and the ``files`` and ``http``
families. The other families' backends are extras: ``[browser]`` (Playwright), ``[code]`` (the
Docker SDK), ``[email]`` (aiosmtplib), governed MCP servers ``[mcp]`` (the MCP SDK, which also serves
``agent-legs mcp``), the command line is ``[cli]`` (typer, rich) and the shared state store
``[postgres]`` (psycopg 3), the web console ``[console]`` (Starlette, uvicorn); ``[all]`` is every one of them.

Invariants:

* A family's actions are registered (names, input models, descriptions) whether or not its extra is
  installed: the catalogue, the docs and policy-name checks do not depend on what is installed.
* Running an action whose family's extra is missing returns ``unavailable`` with the exact
  ``pip install 'agent-legs[<extra>]'`` hint, decided in one place (``Legs`` asks
  ``unavailable_error`` before approval and budgets, so nothing is spent on a call that cannot run);
  ``Runtime.service`` turns an ``ImportError`` of an extra's module while a backend starts into the
  same error (an extra installed but broken). Never an ``ImportError`` at import time.
* The adapters do not offer such actions (``offered_actions``: "not installed"), and
  ``agent-legs doctor`` names the missing extra with the same hint.

Threat model: none beyond the caller's environment; the module only asks the import system whether
a package can be found (no import of it, no code run).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ._errors import ActionError

__all__ = ["EXTRAS", "FAMILY_EXTRAS", "Extra", "extra_of_module", "install_hint", "missing", "unavailable_error"]


@dataclass(frozen=True)
class Extra:
    name: str
    modules: tuple[str, ...]  # top-level import names that must be importable
    what: str  # what the extra brings, for messages

    @property
    def hint(self) -> str:
        return install_hint(self.name)


EXTRAS: dict[str, Extra] = {
    "browser": Extra("browser", ("playwright",), "the browser actions (Playwright)"),
    "code": Extra("code", ("docker",), "the code sandbox (the Docker SDK)"),
    "email": Extra("email", ("aiosmtplib",), "the email actions (aiosmtplib)"),
    "cli": Extra("cli", ("typer", "rich"), "the agent-legs command line (typer, rich)"),
    "mcp": Extra("mcp", ("mcp", "jsonschema"), "MCP: agent-legs mcp and governed MCP servers (the MCP SDK)"),
    "postgres": Extra("postgres", ("psycopg", "psycopg_pool"), "the PostgreSQL state store (psycopg 3)"),
    "console": Extra(
        "console", ("starlette", "uvicorn", "jinja2", "sse_starlette"), "agent-legs console, the local web page (Starlette)"
    ),
}
FAMILY_EXTRAS: dict[str, str] = {"browser": "browser", "code": "code", "email": "email", "mcp": "mcp"}
"""Action family -> the extra its backend needs. ``files`` and ``http`` are the core."""

_present: set[str] = set()  # modules found once: a package does not vanish from a running process


def install_hint(extra: str) -> str:
    return f"pip install 'agent-legs[{extra}]'"


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty: the extra is installed)."""
    out = []
    for module in EXTRAS[extra].modules:
        if module in _present:
            continue
        if importlib.util.find_spec(module) is None:
            out.append(module)
        else:
            _present.add(module)
    return out


def extra_of_module(module: str | None) -> Extra | None:
    """The extra that provides the (possibly dotted) module ``module``, if any."""
    top = (module or "").split(".", 1)[0]
    return next((e for e in EXTRAS.values() if top in e.modules), None)


def unavailable_error(family: str, cause: str | None = None) -> ActionError | None:
    """``unavailable`` with the install hint when ``family``'s extra is missing, else ``None``."""
    name = FAMILY_EXTRAS.get(family)
    if name is None:
        return None
    absent = missing(name) if cause is None else [cause]
    if not absent:
        return None
    extra = EXTRAS[name]
    return ActionError(
        "unavailable",
        f"{family} actions need the agent-legs[{name}] extra, which is not installed ({', '.join(absent)} cannot be imported)",
        hint=f"Not fixable by the model: tell the user that {extra.what} need `{extra.hint}`.",
    )
