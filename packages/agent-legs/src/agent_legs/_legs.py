"""``Legs``: the public entry point, a facade over the parts that do the work.

* ``_pipeline.CallPipeline``: the steps every call goes through (validate -> policy -> extra
  installed? -> approval -> budget -> intent line -> handler under a deadline -> redact -> span + log
  line), and where a pre-call check or a post-result hook belongs;
* ``_dispatch.Dispatcher``: where a call's coroutine runs (the runtime loop, the caller's loop, or the
  calling thread's private loop) and the cleanup of those loops;
* ``_arguments``: validation and coercion of arguments and configuration;
* ``_runtime.Runtime``: the runtime thread, its services and the session table.

Approval: a call the policy sends to approval runs only after an ``approve`` or ``edit`` decision,
from (in this order) a decision passed in (``run(..., approval=...)``: a framework adapter that asked a
person through a LangGraph interrupt or a LlamaIndex event), a standing rule, or the ``approver``.
Anything else (no approver, an approver that raises or answers something that is not a decision)
is a rejection. An edit's arguments are validated and decided by the policy again (a ``deny`` wins;
the edit itself is the approval). A decision passed in is claimed once per ``(session, call id)``
in the state directory: a second decision for the same call is refused, so an approved call never
runs twice. ``approval_request()`` is the pre-check the adapters use: validation and the policy
decision, nothing run, nothing logged.

Actions are the registry's (static, shared) plus, per ``Legs``, the tools of the configured MCP
servers (``mcp.<server>.<tool>``, see ``actions/mcp``): looked up, and their servers started, on first need.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from opentelemetry import trace
from pydantic import BaseModel

from ._approvals import ApprovalStore
from ._arguments import argument_names, coerce_config, validate
from ._dispatch import Dispatcher
from ._errors import ActionError, ConfigError, UnknownActionError
from ._flows import RULE as FLOWS_RULE
from ._models import ActionResult, ApprovalDecision, ApprovalRequest, StandingRule
from ._pipeline import CallPipeline
from ._policy import Decision, Policy, PolicyEngine
from ._registry import REGISTRY, ActionRegistry, ActionSpec, may_name
from ._runtime import Runtime
from ._secrets import Redactor, Secrets
from ._settings import ENV_PREFIX, Settings, load_settings, read_config_file
from ._telemetry import Telemetry
from .actions.code._hosts import check_tls_secrets
from .actions.mcp._actions import McpService

if TYPE_CHECKING:
    from ._approval_queue import ApprovalQueue

__all__ = [
    "STATE_DIR_ENV",
    "WORKSPACE_ENV",
    "ApprovalAnswer",
    "Approver",
    "Legs",
    "config_kwargs",
    "default_state_dir",
    "prestart_wanted",
    "resolve_dirs",
]

log = logging.getLogger("agent_legs")

# True/False, an ApprovalDecision or a dict of its shape ({"type": "approve" | "reject" | "edit", ...});
# Legs(approver="queue") waits in the state store's approval queue (agent_legs._approval_queue).
ApprovalAnswer = bool | ApprovalDecision | Mapping[str, Any]
Approver = Callable[[ApprovalRequest], ApprovalAnswer | Awaitable[ApprovalAnswer]]
T = TypeVar("T")

WORKSPACE_ENV = ENV_PREFIX + "WORKSPACE"
STATE_DIR_ENV = ENV_PREFIX + "STATE_DIR"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "agent-legs"


def resolve_dirs(
    workspace: str | os.PathLike[str] | None = None, state_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """The workspace and state dir: the arguments, else ``AGENT_LEGS_WORKSPACE`` /
    ``AGENT_LEGS_STATE_DIR``, else ``./agent-workspace`` and ``default_state_dir()``; absolute."""
    ws = workspace if workspace not in (None, "") else (os.environ.get(WORKSPACE_ENV, "").strip() or "agent-workspace")
    st = state_dir if state_dir not in (None, "") else (os.environ.get(STATE_DIR_ENV, "").strip() or None)
    return (Path(ws).expanduser().resolve(), Path(st).expanduser().resolve() if st is not None else default_state_dir().resolve())


def config_kwargs(path: str | os.PathLike[str] | None, **overrides: Any) -> dict[str, Any]:
    """``Legs`` keyword arguments from a config file (``None``: no file) under the one precedence:
    ``overrides`` (those not ``None``), then the environment, then the file. The CLI uses it too,
    so ``agent-legs`` and ``Legs.from_config`` agree on every directory and setting."""
    data = read_config_file(path) if path is not None else {}
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    kwargs: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    env = {"workspace": WORKSPACE_ENV, "state_dir": STATE_DIR_ENV}
    for key in ("workspace", "state_dir"):
        if key not in kwargs and not os.environ.get(env[key], "").strip() and key in data:
            kwargs[key] = base / Path(data[key]).expanduser()
    kwargs["settings"] = load_settings(kwargs.get("settings"), data.get("settings"), path)
    if "policy" not in kwargs and "policy" in data:
        kwargs["policy"] = coerce_config(data["policy"], Policy, origin=path)
    return kwargs


def prestart_wanted(policy: Policy, setting: bool | str, engine: PolicyEngine) -> bool:
    """Whether ``Legs()`` starts the sandbox in the background (``settings.code.prestart``): never
    when ``code.run`` is denied; ``"auto"``: when the allow list was given and names code actions
    (a pattern whose literal head is ``code.``, ``code`` or ``cod``..., not a bare ``*``)."""
    if setting is False or engine.decide("code.run").kind == "deny":
        return False
    if setting is True:
        return True
    return "allow" in policy.model_fields_set and any(
        pattern[:1] not in ("", "*", "?", "[") and may_name(pattern, "code") for pattern in policy.allow
    )


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its parents that does not exist (None: ``path`` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_made(path: Path, made: Path | None) -> None:
    """Remove the directories from ``path`` up to ``made`` (what ``_first_missing`` named before they
    were created), while they are empty."""
    if made is None:
        return
    for p in (path, *path.parents):
        try:
            p.rmdir()
        except OSError:
            return
        if p == made:
            return


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


class Legs:
    """Gives an agent permissioned, logged, bounded actions.

    >>> with Legs(workspace="agent-workspace") as legs:
    ...     legs.run("files.write", {"path": "notes/a.txt", "content": "hi"})
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        settings: Settings | Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        approver: Approver | Literal["queue"] | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        resolver: Any = None,
        registry: ActionRegistry | None = None,
    ) -> None:
        self.policy = coerce_config(policy, Policy)
        self.settings = load_settings(settings)
        self.secrets = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
        if isinstance(approver, str) and approver != "queue":
            raise ConfigError(f"approver: {approver!r} is not an approver; pass a callable or approver='queue'")
        self.approver: Any = approver
        self._registry = registry if registry is not None else REGISTRY
        # A policy name that matches no action is a typo: say so before anything starts, not by denying
        # everything later. Names under a configured MCP server are accepted before it lists its tools.
        self._mcp_servers = sorted(self.settings.mcp.servers)
        # With the sandbox prestarted, its first container is asked for before the names are checked:
        # that check imports the families the names can match, which then overlaps Docker's start. The
        # decision needs no family (the policy's own patterns and the settings); a check that fails
        # then removes the container and the directories this Legs() made (nothing is left).
        early = prestart_wanted(self.policy, self.settings.code.prestart, PolicyEngine(self.policy))
        if not early:
            self._check_names()

        check_tls_secrets(self.settings.code, self.secrets)  # sandbox hosts' {secret:NAME} PEM: named, and PEM
        self.workspace, self.state_dir = resolve_dirs(workspace, state_dir)
        if _is_within(self.state_dir, self.workspace) or _is_within(self.workspace, self.state_dir):
            raise ConfigError(
                f"state_dir {self.state_dir} and workspace {self.workspace} must not contain each other: "
                "actions must never reach the action log, budgets or trash"
            )
        # Both checked before either is created: a bad one leaves nothing behind.
        for key, path, given, env in (
            ("workspace", self.workspace, workspace, WORKSPACE_ENV),
            ("state_dir", self.state_dir, state_dir, STATE_DIR_ENV),
        ):
            if path.exists() and not path.is_dir():
                origin = f" (from {env})" if given in (None, "") and os.environ.get(env, "").strip() else ""
                raise ConfigError(f"{key}{origin}: {path} exists and is not a directory")
        from ._state import open_store

        state = open_store(self.state_dir, self.settings, self.secrets)  # a bad URL: ConfigError, nothing created
        made = _first_missing(self.workspace)
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create workspace/state directories: {exc}") from exc
        # The sandbox's first container is asked of the engine now, before the rest is built: Docker's
        # start (hundreds of ms) then overlaps with it and with the code service's own start.
        self._early: Any = None
        if early:
            from .actions.code._early import EarlyStart

            self._early = EarlyStart.launch(self.workspace, self.state_dir, self.policy, self.settings)
            try:
                self._check_names()
            except BaseException:
                if self._early is not None:  # its start done first: the engine must not re-create the directory
                    self._early.discard()
                _remove_made(self.workspace, made)
                raise
        try:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise ConfigError(f"cannot create workspace/state directories: {exc}") from exc
            self._build(state, tracer_provider, resolver)
        except BaseException:
            if self._early is not None:
                self._early.cancel()  # nobody will take it: its container is removed
            raise

    def _build(self, state: Any, tracer_provider: trace.TracerProvider | None, resolver: Any) -> None:
        """The rest of ``__init__``: telemetry, the runtime, approvals, dispatch, the prestart."""
        redactor = Redactor(self.secrets)
        self._telemetry = Telemetry(self.settings.telemetry, self.state_dir, redactor, tracer_provider)
        self._runtime = Runtime(
            workspace_path=self.workspace,
            state_dir=self.state_dir,
            policy=self.policy,
            settings=self.settings,
            secrets=self.secrets,
            redactor=redactor,
            tracer=self._telemetry.tracer,
            resolver=resolver,
            state=state,
        )
        self._approvals = ApprovalStore(self._runtime, self.state_dir)
        if self.approver == "queue":
            from ._approval_queue import QueueApprover

            self.approver = QueueApprover(self._runtime)
        self._closed = False
        # A Legs the caller forgot to close still releases its containers and browsers at exit.
        _LIVE.add(self)
        self._dispatch = Dispatcher(self._runtime)  # where each call's coroutine runs
        self._pipeline = CallPipeline(self._runtime, self._telemetry, self._approvals, lambda: self.approver)
        if prestart_wanted(self.policy, self.settings.code.prestart, self._runtime.engine):
            from .actions.code import _early
            from .actions.code._service import CodeService

            if self._early is not None:
                _early.hand_over(self._runtime, self._early)  # the service takes it as its first kernel
            self._runtime.prestart(CodeService)  # overlaps the container's start with the caller's own

    def _check_names(self) -> None:
        """The policy's action names and conditions, checked against the families they can name
        (only those are imported: ``allow = ["code.*"]`` imports the code family alone); on a
        problem, against every action, so that the error lists them all."""
        engine = PolicyEngine(self.policy)
        registry = self._registry
        registry.load_for(engine.name_patterns())

        def check() -> None:
            specs = [registry.get(name) for name in registry.loaded_names()]
            engine.check_names(
                [spec.name for spec in specs],
                {spec.name: argument_names(spec) for spec in specs},
                [f"mcp.{name}." for name in self._mcp_servers],
            )

        try:
            check()
        except ConfigError:
            list(registry)  # every family: the error names every action
            check()

    # -- construction from a file ----------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str | os.PathLike[str] = "agent-legs.toml", **overrides: Any) -> Legs:
        """Build from ``agent-legs.toml``: top-level ``workspace``/``state_dir``, ``[settings]``,
        ``[policy]``. Relative paths are relative to the file. Keyword arguments win, then the
        environment (``AGENT_LEGS_WORKSPACE``, ``AGENT_LEGS_STATE_DIR``, ``AGENT_LEGS_<SECTION>__<KEY>``),
        then the file."""
        return cls(**config_kwargs(path, **overrides))

    # -- catalog -------------------------------------------------------------------------------
    @property
    def actions(self) -> list[ActionSpec]:
        """Every action: the registry's, then the tools of the configured MCP servers (``mcp.<server>.<tool>``),
        which are started now if they are not yet (a server that cannot start lists nothing)."""
        specs = list(self._registry)
        if not self._mcp_servers:
            return specs
        if self._closed or self._runtime.in_loop_thread:  # cannot wait for a start here: what is known
            service = self._mcp_service_if_started()
            mcp_specs: list[ActionSpec] = list(service.known_specs()) if service is not None else []
        else:
            mcp_specs = list(self._dispatch.run(self._mcp(lambda svc: svc.list_specs()), what="Legs.actions"))
        return sorted(specs + mcp_specs, key=lambda s: s.name)

    def get_action(self, name: str) -> ActionSpec:
        try:
            return self._registry.get(name)
        except UnknownActionError:
            if not self._mcp_servers or self._closed or self._runtime.in_loop_thread:
                raise
            found = self._dispatch.run(self._mcp(lambda svc: svc.find(name)), what="Legs.get_action()")
            if found is None:
                raise
            return found

    async def _aget_action(self, name: str) -> ActionSpec:
        try:
            return self._registry.get(name)
        except UnknownActionError:
            if not self._mcp_servers or self._closed:
                raise
            found = await self._dispatch.arun(self._mcp(lambda svc: svc.find(name)))
            if found is None:
                raise
            return found

    async def _mcp(self, use: Callable[[McpService], Awaitable[T]]) -> T:
        return await use(await self._runtime.service(McpService))

    def _mcp_service_if_started(self) -> McpService | None:
        service = self._runtime._services.get(McpService)
        return service if isinstance(service, McpService) else None

    # -- running -------------------------------------------------------------------------------
    def run(
        self,
        action: str,
        args: Mapping[str, Any] | BaseModel | None = None,
        session: str = "default",
        call_id: str | None = None,
        approval: ApprovalDecision | Mapping[str, Any] | bool | None = None,
    ) -> ActionResult:
        """Run an action and wait for its result. Never raises for action-level problems.

        ``approval``: the decision a person already made for this call (see ``approval_request``);
        used instead of asking the approver, once per ``(session, call_id)``."""
        spec = self.get_action(action)
        given = None if approval is None else ApprovalDecision.coerce(approval)
        coro = self._pipeline.execute(spec, args, session, call_id, self._telemetry.caller_context(), given)
        return self._dispatch.run(coro, inline=spec.inline)

    async def arun(
        self,
        action: str,
        args: Mapping[str, Any] | BaseModel | None = None,
        session: str = "default",
        call_id: str | None = None,
        approval: ApprovalDecision | Mapping[str, Any] | bool | None = None,
    ) -> ActionResult:
        """Async ``run``: awaits the runtime loop without blocking the caller's loop."""
        known: ActionSpec | None
        try:  # a known action needs no coroutine of its own to find (``_aget_action`` asks MCP servers too)
            known = self._registry.get(action)
        except UnknownActionError:
            known = None
        spec = known if known is not None else await self._aget_action(action)
        given = None if approval is None else ApprovalDecision.coerce(approval)
        coro = self._pipeline.execute(spec, args, session, call_id, self._telemetry.caller_context(), given)
        return await self._dispatch.arun(coro, inline=spec.inline)

    # -- approval ------------------------------------------------------------------------------
    def approval_request(
        self,
        action: str,
        args: Mapping[str, Any] | BaseModel | None = None,
        session: str = "default",
        call_id: str | None = None,
        *,
        standing_rules: bool = True,
    ) -> ApprovalRequest | None:
        """The pre-check: the ``ApprovalRequest`` a person must decide before this call may run, or
        ``None`` when it needs none (allowed, covered by a standing rule, or refused anyway: invalid
        or denied, which ``run`` then reports). Nothing runs and nothing is logged.
        ``standing_rules=False``: whether the policy asks, whatever the standing rules say."""
        spec = self.get_action(action)
        try:
            parsed = validate(spec, args)
        except ActionError:
            return None
        arguments = parsed.model_dump(mode="json")
        verdict = self._runtime.engine.decide_call(spec.name, arguments)
        flows = self._pipeline.flows
        if verdict.kind != "deny" and flows.is_sink(spec.name):  # the exfiltration guard asks too
            try:
                flow = self._runtime.submit(flows.check(spec.name, arguments, session)).result()
            except ActionError:
                return None  # the store is unreachable: run() refuses the call
            if flow is not None:
                if flows.mode == "deny":
                    return None
                return self._pipeline.request(
                    spec, parsed, arguments, session, call_id, Decision("approve", FLOWS_RULE, flow.reason)
                )
        if verdict.kind != "approve":
            return None
        if standing_rules:
            try:
                coro = self._approvals.find(spec.name, arguments, session)
                if self._dispatch.run(coro, what="Legs.approval_request()") is not None:
                    return None
            except ActionError:
                return None  # the store is unreachable: run() refuses the call
        return self._pipeline.request(spec, parsed, arguments, session, call_id, verdict)

    def standing_rules(self, session: str | None = None) -> list[StandingRule]:
        """The standing approval rules (``session``: the ``always`` ones and that session's)."""
        return self._dispatch.run(self._approvals.rules(session), what="Legs.standing_rules()")

    def add_standing_rule(
        self,
        action: str,
        match: Mapping[str, list[Any]] | None = None,
        *,
        scope: str = "session",
        session: str = "default",
        by: str | None = None,
    ) -> StandingRule:
        """Approve later calls of ``action`` whose arguments fit ``match`` without asking."""
        spec = self.get_action(action)
        if scope not in ("session", "always"):
            raise ConfigError(f"scope must be 'session' or 'always', not {scope!r}")
        unknown = set(match or {}) - argument_names(spec)
        if unknown:
            raise ConfigError(f"{action} has no argument {', '.join(sorted(unknown))}")
        coro = self._approvals.add_rule(spec.name, dict(match) if match else None, scope, session, by)
        return self._dispatch.run(coro, what="Legs.add_standing_rule()")

    def revoke_standing_rule(self, rule_id: str) -> bool:
        """Remove a standing rule; ``False`` if there was none with that id."""
        return self._dispatch.run(self._approvals.revoke(rule_id), what="Legs.revoke_standing_rule()")

    @property
    def approvals(self) -> ApprovalQueue:
        """The approval queue of this ``Legs``'s state store: ``pending()``, ``approve(id, by=)``,
        ``reject(id, message=, by=)``. Every process sharing the store sees the same queue."""
        from ._approval_queue import ApprovalQueue

        runtime = self._runtime
        dispatch = self._dispatch
        return ApprovalQueue(runtime.state, lambda coro: dispatch.run(coro, what="Legs.approvals"))

    # -- sessions and lifetime -----------------------------------------------------------------------
    def close_session(self, session: str) -> None:
        """Release a session's browser context, sandbox kernel and other per-session state (and end
        its standing approval rules, and the exfiltration guard's index of what it read)."""
        try:
            self._dispatch.run(self._approvals.end_session(session), what="Legs.close_session()")
        except ActionError as exc:  # the store is down: the session's standing rules stay until a later close
            log.warning("close_session(%r): the session's standing rules were kept: %s", session, exc.message)
        self._dispatch.run(self._runtime.close_session(session), what="Legs.close_session()")
        try:
            self._dispatch.run(self._pipeline.flows.forget(session), what="Legs.close_session()")
        except ActionError as exc:  # the store is down: the index stays (fail closed), dropped on a later close
            log.warning("close_session(%r): the exfiltration guard's index was kept: %s", session, exc.message)

    async def aclose_session(self, session: str) -> None:
        try:
            await self._dispatch.arun(self._approvals.end_session(session))
        except ActionError as exc:  # the store is down: the session's standing rules stay until a later close
            log.warning("close_session(%r): the session's standing rules were kept: %s", session, exc.message)
        await self._dispatch.arun(self._runtime.close_session(session))
        try:
            await self._dispatch.arun(self._pipeline.flows.forget(session))
        except ActionError as exc:  # the store is down: the index stays (fail closed)
            log.warning("close_session(%r): the exfiltration guard's index was kept: %s", session, exc.message)

    @property
    def spans_dropped(self) -> int:
        """Spans of Agent Legs' own OTLP provider that never reached the collector (queue full, export
        failed, still queued at ``close()``); exact after ``close()``, 0 with the caller's provider."""
        return self._telemetry.spans_dropped

    def close(self) -> None:
        """Release browsers, containers and connections; flush telemetry. Safe to call twice.

        Sandbox kernels are killed before this returns; their containers are removed in the
        background (``actions/code/_reaper``), and the process's exit waits for those removals."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        if self._early is not None:  # the service never took it (it did not start): its container is removed
            self._early.cancel()
        if self._pipeline.flows.pending:  # the exfiltration guard's buffered untrusted labels reach the store
            try:
                self._dispatch.run(self._pipeline.flows.flush(), what="Legs.close()")
            except Exception:
                log.exception("Legs.close(): untrusted labels of the exfiltration guard not stored")
        self._dispatch.close()  # the runtime, then the private loops
        self._telemetry.shutdown()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Legs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Legs:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Legs(workspace={str(self.workspace)!r}, state_dir={str(self.state_dir)!r})"


_LIVE: weakref.WeakSet[Legs] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close every ``Legs`` still open, then wait for the sandbox containers being removed in the
    background (``Legs.close`` does not wait for the engine): none outlives the process."""
    for legs in list(_LIVE):
        legs.close()
    reaper = sys.modules.get(__name__.rpartition(".")[0] + ".actions.code._reaper")  # only if a sandbox ever started
    if reaper is not None:
        left = reaper.drain(sweep=True)
        if left:
            log.warning("sandbox containers could not be removed at exit: %s", ", ".join(c[:12] for c in left))
