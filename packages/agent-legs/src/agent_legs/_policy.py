"""The one policy engine: what an agent may do.

``Policy`` is the schema of the ``[policy]`` table; ``PolicyEngine`` answers "may this action
run?" quickly (decisions are cached per action name) and always names the rule behind its answer.
Per-family sections (``files``, ``network``, ...) are read by the executors and the egress guard.

A name in ``allow``/``deny``/``require_approval`` that can match no registered action (``"file.*"``,
``"files_read"``) is a ``ConfigError`` naming it, with the nearest real names: a typo must not
silently deny everything or, worse, leave an intended ``deny`` without effect. Only the lists the
user wrote are checked (the defaults name the built-in actions; a custom registry may lack them).

``require_approval`` entries may be conditional: ``{action = "http.request", unless = {method = ["GET",
"HEAD"]}}`` asks for approval except when every named argument fits its list (strings by
case-insensitive glob, other values by equality; for a list argument every element must fit). A
call is exempt only when every matching entry exempts it; an exempt call is allowed (its rule says
which ``unless`` exempted it), a ``deny`` still wins. Condition keys that are not arguments of every
action the entry names are a ``ConfigError``: a typo must not silently exempt nothing or everything.

Every glob is matched by ``_matching`` (action names: ``name_pattern``/``name_matches``, case-sensitive;
``unless`` values: ``text_matches``, case-insensitive), the same matcher the adapters' ``include``/
``exclude`` use: the policy and the tool selection cannot disagree about what a pattern names.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from ._errors import ConfigError
from ._flows._policy import FlowsPolicy
from ._matching import name_matches, name_pattern, text_matches
from ._sections import PolicySection
from .actions.browser._policy import BrowserPolicy
from .actions.code._policy import CodePolicy
from .actions.email._policy import EmailPolicy
from .actions.files._policy import FilesPolicy
from .actions.http._policy import HttpPolicy

__all__ = [
    "ApprovalRule",
    "BrowserPolicy",
    "Budget",
    "CodePolicy",
    "Decision",
    "EmailPolicy",
    "FilesPolicy",
    "FlowsPolicy",
    "HttpPolicy",
    "NetworkPolicy",
    "Policy",
    "PolicyEngine",
    "unmatched_names",
]


class NetworkPolicy(PolicySection):
    allow_hosts: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Host globs with optional ":port". "*" means any public host.',
    )
    deny_hosts: list[str] = Field(default_factory=list)
    allow_private: bool = Field(
        False,
        description="Allow private/loopback/link-local addresses for hosts matched by allow_hosts.",
    )
    schemes: list[str] = Field(default_factory=lambda: ["https", "http"])

    @field_validator("schemes")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [s.lower() for s in v]


class Budget(PolicySection):
    actions: str | list[str] = "*"
    limit: int = Field(ge=0)
    per: Literal["minute", "hour", "day", "month", "total"] = "total"
    # "all" (the default): one counter for every session of every Legs on the state store, so a
    # deployment-wide cap cannot be escaped by opening new sessions (every LangChain thread is one);
    # "session": each session counts on its own.
    scope: Literal["session", "all"] = "all"

    @property
    def patterns(self) -> list[str]:
        return [self.actions] if isinstance(self.actions, str) else list(self.actions)

    @property
    def key(self) -> str:
        return f"{','.join(self.patterns)}/{self.per}"


ConditionValue = str | int | float | bool


class ApprovalRule(PolicySection):
    """A conditional ``require_approval`` entry: ``action`` needs approval unless every argument named
    in ``unless`` fits its accepted values (strings: case-insensitive globs)."""

    action: str
    unless: dict[str, list[ConditionValue]] = Field(min_length=1)

    def exempts(self, arguments: dict[str, Any]) -> bool:
        return all(_fits(arguments.get(key), accepted) for key, accepted in self.unless.items())


def _fits(value: Any, accepted: list[ConditionValue]) -> bool:
    if isinstance(value, list | tuple):
        return all(_fits(v, accepted) for v in value)  # every recipient, every element
    if value is None:
        return False  # an argument that is absent fits no list: the entry applies
    if isinstance(value, str):
        return text_matches(value, [want for want in accepted if isinstance(want, str)])
    return any(not isinstance(want, str) and type(want) is type(value) and want == value for want in accepted)


class Policy(PolicySection):
    """What the agent may do. ``deny`` > ``require_approval`` > ``allow``; unlisted -> denied."""

    allow: list[str] = Field(
        default_factory=lambda: ["files.*", "http.request", "browser.*", "code.*", "email.list", "email.read"]
    )
    deny: list[str] = Field(default_factory=list)
    require_approval: list[str | ApprovalRule] = Field(default_factory=lambda: list[str | ApprovalRule](["email.send"]))
    approval_timeout_s: float = Field(
        300,
        gt=0,
        description="How long a call waits in the approval queue "
        "(approver='queue') for a decision; then it is refused as expired.",
    )
    files: FilesPolicy = Field(default_factory=FilesPolicy)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    http: HttpPolicy = Field(default_factory=HttpPolicy)
    browser: BrowserPolicy = Field(default_factory=BrowserPolicy)
    code: CodePolicy = Field(default_factory=CodePolicy)
    email: EmailPolicy = Field(default_factory=EmailPolicy)
    budgets: list[Budget] = Field(default_factory=list)
    flows: FlowsPolicy = Field(default_factory=FlowsPolicy)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid policy: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        """Load a policy file, or the ``[policy]`` table of an ``agent-legs.toml``."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read policy {path}: {exc}") from exc
        if "policy" in data and isinstance(data["policy"], dict):
            data = data["policy"]
        return cls.from_dict(data)


DecisionKind = Literal["allow", "deny", "approve"]


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    rule: str
    reason: str | None = None  # what an approver is told, when more than the rule (policy.flows)

    @property
    def allowed(self) -> bool:
        return self.kind == "allow"


def _describe(unless: dict[str, list[ConditionValue]]) -> str:
    return ", ".join(f"{k} in {v!r}" for k, v in unless.items())


def _compile(patterns: list[str]) -> list[tuple[str, re.Pattern[str]]]:
    return [(p, name_pattern(p)) for p in patterns]


def _first_match(name: str, rules: list[tuple[str, re.Pattern[str]]]) -> str | None:
    for pattern, rx in rules:
        if rx.match(name):
            return pattern
    return None


def unmatched_names(patterns: Iterable[str], names: Iterable[str], where: str, prefixes: Iterable[str] = ()) -> list[str]:
    """One message per pattern that matches none of ``names``, with "did you mean" suggestions.

    ``prefixes`` are namespaces whose names are not known yet (``"mcp.github."``: the tools of a
    configured MCP server, listed only when it starts): a pattern inside one, or a glob that can
    match inside one (``"mcp.*"``), is accepted.
    """
    known = sorted(set(names))
    spaces = sorted(set(prefixes))
    candidates = known + sorted({n.split(".", 1)[0] + ".*" for n in known}) + [p + "*" for p in spaces]
    problems = []
    for pattern in patterns:
        if name_matches(pattern, *known):
            continue
        if any(pattern.startswith(p) or name_matches(pattern, p + "*") for p in spaces):
            continue
        close = difflib.get_close_matches(pattern.replace("_", "."), candidates, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        problems.append(f"{where} entry {pattern!r} matches no action{hint}")
    return problems


class PolicyEngine:
    """Decides whether an action may run. Decisions are cached: the rules are immutable."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._deny = _compile(policy.deny)
        self._approve = _compile([e if isinstance(e, str) else e.action for e in policy.require_approval])
        self._plain_approve = _compile([e for e in policy.require_approval if isinstance(e, str)])
        self._conditions: list[tuple[int, ApprovalRule, re.Pattern[str]]] = [
            (i, e, name_pattern(e.action)) for i, e in enumerate(policy.require_approval) if isinstance(e, ApprovalRule)
        ]
        self._allow = _compile(policy.allow)
        self._budgets = [(b, _compile(b.patterns)) for b in policy.budgets]
        self._cache: dict[str, Decision] = {}
        self._budget_cache: dict[str, list[Budget]] = {}

    def decide(self, action: str) -> Decision:
        decision = self._cache.get(action)
        if decision is None:
            decision = self._cache[action] = self._decide(action)
        return decision

    def decide_call(self, action: str, arguments: dict[str, Any]) -> Decision:
        """``decide`` for one call: a conditional ``require_approval`` entry looks at the arguments."""
        decision = self.decide(action)
        if decision.kind != "approve" or not self._conditions:
            return decision
        if _first_match(action, self._plain_approve) is not None:
            return decision  # an unconditional entry: always approval
        exempting = None
        for i, entry, rx in self._conditions:
            if rx.match(action):
                if not entry.exempts(arguments):
                    return Decision("approve", f"policy.require_approval[{i}] ({entry.action} unless {_describe(entry.unless)})")
                exempting = exempting or f"policy.require_approval[{i}].unless ({_describe(entry.unless)})"
        return Decision("allow", exempting or decision.rule)

    def _decide(self, action: str) -> Decision:
        if (p := _first_match(action, self._deny)) is not None:
            return Decision("deny", f"policy.deny[{p!r}]")
        if (p := _first_match(action, self._approve)) is not None:
            return Decision("approve", f"policy.require_approval[{p!r}]")
        if (p := _first_match(action, self._allow)) is not None:
            return Decision("allow", f"policy.allow[{p!r}]")
        return Decision("deny", "policy.allow (action not listed)")

    def name_patterns(self) -> list[str]:
        """The action-name globs ``check_names`` looks at: the lists set explicitly, and every
        conditional ``require_approval`` entry."""
        out = [e.action for _, e, _ in self._conditions]
        for key in ("allow", "deny", "require_approval"):
            if key in self.policy.model_fields_set:
                out += [e if isinstance(e, str) else e.action for e in getattr(self.policy, key)]
        return out

    def check_names(
        self, actions: Iterable[str], fields: dict[str, Iterable[str]] | None = None, prefixes: Iterable[str] = ()
    ) -> None:
        """Raise ``ConfigError`` when an explicitly set allow/deny/require_approval entry matches
        none of ``actions`` (the registered action names) and lies in none of ``prefixes`` (the
        namespaces of configured MCP servers, ``"mcp.<name>."``, whose tools are listed later), or a
        condition names an argument that an action it covers does not have (``fields``: action name
        -> its argument names)."""
        names = list(actions)
        spaces = list(prefixes)
        problems: list[str] = []
        for key in ("allow", "deny", "require_approval"):
            if key in self.policy.model_fields_set:
                entries = [e if isinstance(e, str) else e.action for e in getattr(self.policy, key)]
                problems += unmatched_names(entries, names, f"policy.{key}", spaces)
        for i, entry, rx in self._conditions:
            for name in names:
                known = set((fields or {}).get(name, ())) if fields is not None else None
                if rx.match(name) and known is not None:
                    problems += [
                        f"policy.require_approval[{i}].unless: {name} has no argument {key!r} "
                        f"(its arguments: {', '.join(sorted(known))})"
                        for key in entry.unless
                        if key not in known
                    ]
        if problems:
            raise ConfigError("; ".join(problems) + f" (known actions: {', '.join(sorted(names))})")

    def budgets_for(self, action: str) -> list[Budget]:
        found = self._budget_cache.get(action)
        if found is None:
            found = self._budget_cache[action] = [b for b, rules in self._budgets if _first_match(action, rules) is not None]
        return found
