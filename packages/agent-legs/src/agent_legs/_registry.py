"""The action registry: the single source of every tool the adapters expose.

An action is an async handler ``(ctx, args) -> ActionOutput`` plus a pydantic input model and a
description written for a model. Register one with ``@action(...)``; it then appears in
``Legs.actions``, the CLI, the docs and both framework adapters with no other change.

``requires`` names the settings an action cannot work without (dotted paths into ``Settings``,
such as ``"email.smtp"``): an action whose required settings are unset is *not configured*, and the
adapters do not offer it to a model (whose only use of it would be to read a hint meant for the
developer). Backends that work with no settings (the workspace, the network, a local Chromium, the
local Docker daemon) require nothing: when such a backend is missing at run time the action returns
``unavailable`` with a hint, and ``agent-legs doctor`` says how to fix it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from pydantic import BaseModel

from ._errors import UnknownActionError

if TYPE_CHECKING:
    from ._context import ActionContext
    from ._models import ActionOutput
    from ._policy import Policy
    from ._settings import Settings

__all__ = ["REGISTRY", "ActionRegistry", "ActionSpec", "action", "may_name"]

Handler = Callable[["ActionContext", Any], Awaitable["ActionOutput"]]
TimeoutFn = Callable[["Policy", Any], float]


@dataclass(frozen=True)
class ActionSpec:
    """One registered action. ``tool_name`` is ``name`` with ``.`` replaced by ``_``."""

    name: str
    description: str
    input_model: type[BaseModel]
    read_only: bool
    handler: Handler = field(repr=False, compare=False)
    timeout: TimeoutFn | None = field(default=None, repr=False, compare=False)
    """Seconds the runtime allows (deadline); default: ``policy.<family>.timeout_s`` or 60."""
    summarize: Callable[[Any], str] | None = field(default=None, repr=False, compare=False)
    """One-paragraph summary of the arguments shown to an approver."""
    inline: bool = field(default=False, repr=False, compare=False)
    """Loop-agnostic handler (plain syscalls, no ``ctx.service``): it may run on the caller's own
    thread or event loop, saving the hop to the runtime thread (about 90 us per call)."""
    requires: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """Settings paths (``"email.smtp"``) that must be set for the action to work at all."""

    @functools.cached_property  # asked several times per call; the spec is frozen
    def tool_name(self) -> str:
        return self.name.replace(".", "_")

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def missing_settings(self, settings: Settings) -> list[str]:
        """The required settings (``settings.<path>``) that are unset: empty when configured."""
        missing = []
        for path in self.requires:
            value: Any = settings
            for part in path.split("."):
                value = getattr(value, part, None)
            if value is None:
                missing.append(f"settings.{path}")
        return missing

    def timeout_for(self, policy: Policy, args: Any) -> float:
        if self.timeout is not None:
            return float(self.timeout(policy, args))
        section = getattr(policy, self.family, None)
        return float(getattr(section, "timeout_s", 60.0))


class ActionRegistry:
    """Actions by name. ``loader``: imports the actions it holds when they are first needed (not on
    ``register``): the shared ``REGISTRY`` imports the built-in families then, not when
    ``agent_legs`` is imported. A loader with ``families`` (the built-in one) loads one family at a
    time: a lookup of ``code.run`` imports only the code family, a listing imports them all, and
    ``load_for(patterns)`` imports the families a policy's patterns can name. A plain callable loads
    everything at once. An action registered before its family was loaded (a user's override of a
    built-in name) keeps its place over the loader's."""

    def __init__(self, loader: Any = None) -> None:
        self._specs: dict[str, ActionSpec] = {}
        self._by_tool: dict[str, ActionSpec] = {}
        self._loader = loader
        self._pending: set[str] | None = None  # families not loaded yet (None: the loader knows none)
        self._load_lock = threading.RLock()

    def _families_pending(self) -> set[str]:
        if self._pending is None:
            families = getattr(self._loader, "families", None)
            self._pending = set(families()) if self._loader is not None and families is not None else set()
        return self._pending

    def _load(self, families: Iterable[str] | None) -> None:
        """Import ``families`` (None: every family, and a loader without families)."""
        if self._loader is None:
            return
        with self._load_lock:  # a second thread waits for the first one's load; the loading thread passes
            if self._loader is None:
                return
            pending = self._families_pending()
            wanted: list[str | None] = []
            if families is None or not pending:
                wanted += sorted(pending) if pending else [None]
            else:
                wanted += sorted(pending & set(families))
            for family in wanted:
                early = [s for s in self._specs.values() if family is None or s.family == family]
                load = getattr(self._loader, "load", self._loader)
                if family is None:
                    load()
                else:
                    load(family)
                if family is not None:
                    pending.discard(family)
                for spec in early:
                    self.register(spec)
            if families is None or not pending:
                self._loader = None

    def _ensure_loaded(self) -> None:
        self._load(None)

    def load_for(self, patterns: Iterable[str]) -> None:
        """Load every family an action-name glob of ``patterns`` could match (``code.*``: the code
        family; ``*``: all): the names a policy's check needs, without importing the others."""
        if self._loader is None:
            return
        with self._load_lock:
            pending = self._families_pending()
            if not pending:
                self._ensure_loaded()
                return
            self._load({f for f in pending for p in patterns if may_name(p, f)})

    def loaded_names(self) -> list[str]:
        """The names registered so far (the families loaded, and actions registered directly)."""
        return sorted(self._specs)

    def register(self, spec: ActionSpec) -> ActionSpec:
        if "." not in spec.name:
            raise ValueError(f"action names are '<family>.<verb>', got {spec.name!r}")
        self._specs[spec.name] = spec
        self._by_tool[spec.tool_name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._ensure_loaded()
        spec = self._specs.pop(name, None)
        if spec is not None:
            self._by_tool.pop(spec.tool_name, None)

    def get(self, name: str) -> ActionSpec:
        """Look up by action name (``files.read``) or tool name (``files_read``)."""
        spec = self._specs.get(name) or self._by_tool.get(name)
        if spec is None and self._loader is not None:
            family = name.replace("_", ".", 1).split(".", 1)[0]
            self._load([family])  # its own family first, then (unknown there) every family
            spec = self._specs.get(name) or self._by_tool.get(name)
            if spec is None:
                self._ensure_loaded()
                spec = self._specs.get(name) or self._by_tool.get(name)
        if spec is None:
            known = ", ".join(sorted(self._specs))
            raise UnknownActionError(f"unknown action {name!r}; known actions: {known}")
        return spec

    def __iter__(self) -> Iterator[ActionSpec]:
        self._ensure_loaded()
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._specs or name in self._by_tool

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._specs)


class _Builtin:
    """The built-in families' loader (``agent_legs.actions``, a light package, imported when first asked)."""

    @staticmethod
    def families() -> tuple[str, ...]:
        return tuple(importlib.import_module("agent_legs.actions").FAMILIES)

    @staticmethod
    def load(family: str | None = None) -> None:
        importlib.import_module("agent_legs.actions").load_builtin(family)


def may_name(pattern: str, family: str) -> bool:
    """Whether the name glob ``pattern`` (``fnmatch``) can match a name ``<family>.<verb>``: its
    literal head (up to the first ``*``, ``?`` or ``[``) must agree with ``<family>.``."""
    cut = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
    head, prefix = pattern[:cut], family + "."
    return prefix.startswith(head) or head.startswith(prefix)


REGISTRY = ActionRegistry(loader=_Builtin())
"""The built-in actions (imported on first use: ``import agent_legs`` stays light) and any registered
with ``@action`` without a ``registry``."""

H = TypeVar("H", bound=Handler)


def action(
    name: str,
    *,
    description: str,
    read_only: bool = False,
    input_model: type[BaseModel] | None = None,
    timeout: TimeoutFn | None = None,
    summarize: Callable[[Any], str] | None = None,
    inline: bool = False,
    requires: tuple[str, ...] = (),
    registry: ActionRegistry | None = None,
) -> Callable[[H], H]:
    """Register an async handler ``(ctx, args) -> ActionOutput`` as an action.

    The input model is taken from the annotation of the handler's second parameter unless given.
    ``requires``: settings paths the action needs (see the module docstring).
    """

    def decorate(handler: H) -> H:
        model = input_model
        if model is None:
            params = list(inspect.signature(handler).parameters)
            hints = get_type_hints(handler)
            model = hints.get(params[1]) if len(params) > 1 else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"action {name!r}: the input model must be a pydantic BaseModel")
        (registry if registry is not None else REGISTRY).register(
            ActionSpec(
                name, inspect.cleandoc(description), model, read_only, handler, timeout, summarize, inline, tuple(requires)
            )
        )
        return handler

    return decorate
