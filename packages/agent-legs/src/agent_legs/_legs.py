"""``Legs``: the public entry point, and the pipeline every action call goes through.

validate -> policy -> extra installed? -> approval -> budget -> handler under a deadline -> redact -> span + log line.

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
servers (``mcp.<server>.<tool>``, see ``_mcp``): looked up, and their servers started, on first need.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from . import _budgets
from ._approvals import ApprovalStore
from ._context import ActionContext
from ._errors import ActionError, AgentLegsError, ConfigError, UnknownActionError
from ._extras import unavailable_error
from ._flows import RULE as FLOWS_RULE
from ._flows import FlowGuard
from ._mcp import McpService
from ._models import ActionErrorInfo, ActionOutput, ActionResult, ApprovalDecision, ApprovalRequest, StandingRule
from ._policy import Decision, Policy, PolicyEngine
from ._registry import REGISTRY, ActionRegistry, ActionSpec
from ._runtime import Runtime
from ._secrets import Redactor, Secrets
from ._settings import ENV_PREFIX, Settings, describe_validation_error, load_settings, read_config_file
from ._telemetry import CallRecord, Telemetry

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
    "resolve_dirs",
]

log = logging.getLogger("agent_legs")

# True/False, an ApprovalDecision or a dict of its shape ({"type": "approve" | "reject" | "edit", ...});
# Legs(approver="queue") waits in the state store's approval queue (agent_legs._approval_queue).
ApprovalAnswer = bool | ApprovalDecision | Mapping[str, Any]
Approver = Callable[[ApprovalRequest], ApprovalAnswer | Awaitable[ApprovalAnswer]]
T = TypeVar("T")

# The runtime gives a handler this long past its own deadline to clean up after cancellation.
_CANCEL_GRACE_S = 5.0

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
        kwargs["policy"] = _coerce(data["policy"], Policy, origin=path)
    return kwargs


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
        self.policy = _coerce(policy, Policy)
        self.settings = load_settings(settings)
        self.secrets = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
        if isinstance(approver, str) and approver != "queue":
            raise ConfigError(f"approver: {approver!r} is not an approver; pass a callable or approver='queue'")
        self.approver: Any = approver
        self._registry = registry if registry is not None else REGISTRY
        # A policy name that matches no action is a typo: say so before anything starts, not by denying
        # everything later. Names under a configured MCP server are accepted before it lists its tools.
        self._mcp_servers = sorted(self.settings.mcp.servers)
        PolicyEngine(self.policy).check_names(
            [spec.name for spec in self._registry],
            {spec.name: _argument_names(spec) for spec in self._registry},
            [f"mcp.{name}." for name in self._mcp_servers],
        )

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
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create workspace/state directories: {exc}") from exc

        redactor = Redactor(self.secrets)
        self._telemetry = Telemetry(self.settings.telemetry, self.state_dir, redactor, tracer_provider)
        self._approvals = ApprovalStore(self.state_dir / "approval-rules.sqlite3")
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
        self._flows = FlowGuard(self.policy, self.settings, self._runtime)  # the exfiltration guard (_flows)
        if self.approver == "queue":
            from ._approval_queue import QueueApprover

            self.approver = QueueApprover(self._runtime)
        self._closed = False
        # A Legs the caller forgot to close still releases its containers and browsers at exit.
        _LIVE.add(self)
        self._thread_local = threading.local()
        self._inline_loops: list[asyncio.AbstractEventLoop] = []
        self._orphaned_loops: list[asyncio.AbstractEventLoop] = []  # of threads that have ended
        self._inline_lock = threading.Lock()

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
            mcp_specs = list(self._runtime.submit(self._mcp(lambda svc: svc.list_specs())).result())
        return sorted(specs + mcp_specs, key=lambda s: s.name)

    def get_action(self, name: str) -> ActionSpec:
        try:
            return self._registry.get(name)
        except UnknownActionError:
            if not self._mcp_servers or self._closed or self._runtime.in_loop_thread:
                raise
            found = self._runtime.submit(self._mcp(lambda svc: svc.find(name))).result()
            if found is None:
                raise
            return found

    async def _aget_action(self, name: str) -> ActionSpec:
        try:
            return self._registry.get(name)
        except UnknownActionError:
            if not self._mcp_servers or self._closed:
                raise
            coro = self._mcp(lambda svc: svc.find(name))
            found = await coro if self._runtime.in_loop_thread else await asyncio.wrap_future(self._runtime.submit(coro))
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
        if self._runtime.in_loop_thread:
            raise AgentLegsError("Legs.run() cannot be called from inside an action or approver; use arun()")
        given = None if approval is None else ApprovalDecision.coerce(approval)
        coro = self._execute(spec, args, session, call_id, self._telemetry.caller_context(), given)
        if spec.inline and not self._closed and not _loop_running():
            return self._inline_loop().run_until_complete(coro)
        return self._runtime.submit(coro).result()

    async def arun(
        self,
        action: str,
        args: Mapping[str, Any] | BaseModel | None = None,
        session: str = "default",
        call_id: str | None = None,
        approval: ApprovalDecision | Mapping[str, Any] | bool | None = None,
    ) -> ActionResult:
        """Async ``run``: awaits the runtime loop without blocking the caller's loop."""
        spec = await self._aget_action(action)
        given = None if approval is None else ApprovalDecision.coerce(approval)
        coro = self._execute(spec, args, session, call_id, self._telemetry.caller_context(), given)
        if (spec.inline and not self._closed) or self._runtime.in_loop_thread:
            return await coro
        return await asyncio.wrap_future(self._runtime.submit(coro))

    async def _execute(
        self,
        spec: ActionSpec,
        raw_args: Mapping[str, Any] | BaseModel | None,
        session: str,
        call_id: str | None,
        parent: otel_context.Context,
        given: ApprovalDecision | None = None,
    ) -> ActionResult:
        start = time.perf_counter()
        runtime = self._runtime
        telemetry = self._telemetry
        span = telemetry.start(spec.tool_name, spec.name, session, call_id, parent, spec.description)
        decision = "invalid"
        rule: str | None = None
        approval: dict[str, Any] | None = None  # who decided, for the span and the log line
        arguments: Any = _plain(raw_args)
        record_id: str | None = None  # set once the intent line is on disk
        result: ActionResult
        try:
            with trace.use_span(span, end_on_exit=False):
                try:
                    args = _validate(spec, raw_args)
                    arguments = args.model_dump(mode="json")
                    verdict = runtime.engine.decide_call(spec.name, arguments)
                    rule = verdict.rule
                    if verdict.kind == "deny":
                        decision = "deny"
                        raise ActionError("denied", f"{spec.name} is not allowed ({verdict.rule})", rule=rule)
                    # a family whose extra is not installed: before approval and budgets (nothing spent on it)
                    not_installed = unavailable_error(spec.family)
                    if not_installed is not None:
                        raise not_installed
                    # the exfiltration guard: private data to an untrusted destination asks (or is refused)
                    flow = await self._flows.check(spec.name, arguments, session) if self._flows.is_sink(spec.name) else None
                    if flow is not None:
                        rule = FLOWS_RULE
                        if self._flows.mode == "deny":
                            decision = "deny"
                            raise self._flows.refusal(spec.name, flow)
                        verdict = Decision("approve", FLOWS_RULE, flow.reason)
                    standing = (
                        self._approvals.find(spec.name, arguments, session)
                        if verdict.kind == "approve" and given is None and flow is None
                        else None
                    )
                    if standing is not None:
                        decision = "approved"
                        approval = {"decision": "approved", "by": standing.by, "rule": standing.id}
                    elif verdict.kind == "approve" or given is not None:
                        try:
                            answer = (
                                given
                                if given is not None
                                else await self._ask_approval(self._request(spec, args, arguments, session, call_id, verdict))
                            )
                        except ActionError:  # the approver's own refusal: expired in the queue, store down
                            decision = "rejected"
                            approval = {"decision": "rejected", "by": None, "rule": None}
                            raise
                        approval = {"decision": answer.outcome, "by": answer.by, "rule": answer.rule}
                        if given is not None and call_id:
                            earlier = self._approvals.claim(session, call_id, given)
                            if earlier is not None:
                                decision = "rejected"
                                approval["decision"] = "rejected"
                                raise ActionError(
                                    "approval_denied",
                                    f"call {call_id} of {spec.name} was already decided ({earlier.get('type')}"
                                    + (f" by {earlier['by']}" if earlier.get("by") else "")
                                    + f" at {earlier.get('created')}); a call is decided once and runs at most once",
                                    rule=rule,
                                    hint="Do not retry the same call; the earlier decision stands.",
                                )
                        decision = "rejected" if answer.type == "reject" else "approved"
                        if answer.type == "reject":
                            who = f" by {answer.by}" if answer.by else ""
                            raise ActionError(
                                "approval_denied",
                                f"{spec.name} needs approval ({verdict.reason or verdict.rule}) and was not approved{who}"
                                + (f": {answer.message}" if answer.message else ""),
                                rule=rule,
                                hint="Do not retry the same call; ask the user or choose another action.",
                            )
                        if answer.type == "edit":  # validated and decided again; the edit is the approval
                            decision = "invalid"
                            args = _validate_edit(spec, answer)
                            arguments = args.model_dump(mode="json")
                            verdict = runtime.engine.decide_call(spec.name, arguments)
                            rule = verdict.rule
                            if verdict.kind == "deny":
                                decision = "deny"
                                raise ActionError(
                                    "denied", f"{spec.name} with the edited arguments is not allowed ({verdict.rule})", rule=rule
                                )
                            decision = "approved"
                        if answer.remember is not None:
                            added = self._approvals.add_rule(spec.name, answer.match, answer.remember, session, answer.by)
                            log.info("standing rule %s added by %s: %s", added.id, answer.by, added)
                    else:
                        decision = "allow"
                    budgets = runtime.engine.budgets_for(spec.name)
                    exhausted = await runtime.on_loop(_budgets.consume(runtime.state, budgets, session)) if budgets else None
                    if exhausted is not None:
                        budget, used = exhausted
                        decision = "budget_exceeded"
                        rule = f"policy.budgets[{budget.key}]"
                        raise ActionError(
                            "budget_exceeded",
                            f"budget {budget.key} exhausted: {used}/{budget.limit} actions used"
                            + ("" if budget.per == "total" else f" this {budget.per}")
                            + (f" in session {session!r}" if budget.scope == "session" else " (all sessions)"),
                            rule=rule,
                            hint=(
                                "Do not retry now: "
                                + (
                                    "the budget never resets"
                                    if budget.per == "total"
                                    else f"it resets with the next {budget.per} (UTC)"
                                )
                                + ("" if budget.scope == "session" else "; a new session does not reset it")
                                + ". Tell the user the limit was reached."
                            ),
                        )
                    # Write-ahead: the intent line is on disk before the effect can happen (or the call
                    # fails closed, "unavailable", and nothing runs).
                    record_id = telemetry.intent(
                        span,
                        CallRecord(
                            spec.name,
                            spec.tool_name,
                            session,
                            call_id,
                            decision,
                            "",
                            0.0,
                            arguments,
                            rule=rule,
                            approval=approval,
                        ),
                    )
                    runtime.touch_session(session)
                    output = await self._call_handler(spec, args, session, call_id, span)
                    result = self._success(spec, output, start)
                    if self._flows.observes(spec.name):  # labelled before the model sees it
                        await self._flows.record(spec.name, arguments, session, call_id, result.output, result.data)
                except ActionError as exc:
                    if exc.rule:
                        rule = exc.rule
                    result = self._failure(spec, exc, start)
        except asyncio.CancelledError:
            telemetry.finish(
                span,
                CallRecord(
                    spec.name,
                    spec.tool_name,
                    session,
                    call_id,
                    decision,
                    "failed",
                    _ms(start),
                    arguments,
                    None,
                    "cancelled by the caller",
                    rule,
                    record_id=record_id,
                    approval=approval,
                ),
            )
            raise
        except Exception as exc:  # a bug in an executor must not crash the agent
            log.exception("action %s failed unexpectedly", spec.name)
            result = self._failure(spec, ActionError("failed", f"internal error: {type(exc).__name__}: {exc}"), start)
        # _success and _failure scrubbed the result before bounding it (scrub first, cut after).
        ctx = span.get_span_context()
        if ctx.is_valid:
            result.trace_id = f"{ctx.trace_id:032x}"
            result.span_id = f"{ctx.span_id:016x}"
        telemetry.finish(
            span,
            CallRecord(
                spec.name,
                spec.tool_name,
                session,
                call_id,
                decision,
                "ok" if result.ok else result.error.type if result.error else "failed",
                result.duration_ms,
                arguments,
                result.output if result.ok else None,
                result.error.message if result.error else None,
                rule,
                record_id=record_id,
                approval=approval,
            ),
        )
        return result

    async def _call_handler(
        self, spec: ActionSpec, args: BaseModel, session: str, call_id: str | None, span: trace.Span
    ) -> ActionOutput:
        timeout_s = spec.timeout_for(self.policy, args)
        ctx = ActionContext(self._runtime, spec, session, call_id, timeout_s, span)
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                return await spec.handler(ctx, args)
        except TimeoutError:
            if not deadline.expired():
                raise  # a TimeoutError of the handler's own making: a bug or an unwrapped library error
            if spec.read_only:
                raise ActionError(
                    "timeout",
                    f"{spec.name} did not finish within {timeout_s:g} s and was stopped",
                    retryable=True,
                    hint="Try a smaller task or a larger timeout_s if the policy allows it.",
                ) from None
            # An action with effects stopped at an arbitrary point: part of it may have happened. Only the
            # executors know their commit points (and say so themselves before this outer deadline fires);
            # here nothing is known, so the advice must not invite a blind repeat.
            raise ActionError(
                "timeout",
                f"{spec.name} did not finish within {timeout_s:g} s and was stopped; it may have taken effect in part",
                retryable=False,
                hint="Check what happened (read the file, list the mail, query the API) before repeating it.",
            ) from None

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
            parsed = _validate(spec, args)
        except ActionError:
            return None
        arguments = parsed.model_dump(mode="json")
        verdict = self._runtime.engine.decide_call(spec.name, arguments)
        if verdict.kind != "deny" and self._flows.is_sink(spec.name):
            try:
                flow = self._runtime.submit(self._flows.check(spec.name, arguments, session)).result()
            except ActionError:
                return None  # the store is unreachable: run() refuses the call
            if flow is not None:
                return (
                    None
                    if self._flows.mode == "deny"
                    else self._request(spec, parsed, arguments, session, call_id, Decision("approve", FLOWS_RULE, flow.reason))
                )
        if verdict.kind != "approve" or (standing_rules and self._approvals.find(spec.name, arguments, session)):
            return None
        return self._request(spec, parsed, arguments, session, call_id, verdict)

    def standing_rules(self, session: str | None = None) -> list[StandingRule]:
        """The standing approval rules (``session``: the ``always`` ones and that session's)."""
        return self._approvals.rules(session)

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
        unknown = set(match or {}) - _argument_names(spec)
        if unknown:
            raise ConfigError(f"{action} has no argument {', '.join(sorted(unknown))}")
        return self._approvals.add_rule(spec.name, dict(match) if match else None, scope, session, by)

    def revoke_standing_rule(self, rule_id: str) -> bool:
        """Remove a standing rule; ``False`` if there was none with that id."""
        return self._approvals.revoke(rule_id)

    def _request(
        self, spec: ActionSpec, args: BaseModel, arguments: dict[str, Any], session: str, call_id: str | None, verdict: Decision
    ) -> ApprovalRequest:
        redactor = self._runtime.redactor
        summary = spec.summarize(_scrubbed_args(args, redactor)) if spec.summarize else ""
        return ApprovalRequest(
            action=spec.name,
            tool_name=spec.tool_name,
            arguments=redactor.data(arguments),
            session=session,
            reason=redactor.text(f"{verdict.reason or verdict.rule}. {summary}" if summary else verdict.reason or verdict.rule),
            call_id=call_id,
            rule=verdict.rule,
        )

    async def _ask_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """The approver's decision; a rejection when there is none, it raises, or answers no decision."""
        if self.approver is None:
            return ApprovalDecision(type="reject", message="no approver is configured")
        try:
            if inspect.iscoroutinefunction(self.approver):
                answer: Any = await self.approver(request)
            else:
                answer = await asyncio.to_thread(self.approver, request)
                if inspect.isawaitable(answer):
                    answer = await answer
        except ActionError:
            raise  # the approver's own refusal with its reason (a queue entry that expired, a store that is down)
        except Exception as exc:
            log.warning("approver raised %r for %s: treated as a rejection", exc, request.action)
            return ApprovalDecision(type="reject")
        if isinstance(answer, str):  # a bare "approve" from a careless approver is no decision: bool/dict only
            answer = None
        try:
            return ApprovalDecision.coerce(answer)
        except ValueError as exc:
            log.warning("approver answered %r for %s (%s): treated as a rejection", answer, request.action, exc)
            return ApprovalDecision(type="reject")

    # -- results -------------------------------------------------------------------------------
    def _bound(self, text: str) -> str:
        """``text`` scrubbed of secrets, then cut to ``settings.max_output_chars``.

        Scrub first, cut after: a secret straddling the cut must not leave its prefix behind (the
        head is scrubbed once more as cut text, which removes a trailing partial secret).
        """
        redactor = self._runtime.redactor
        text = redactor.text(text)
        limit = self.settings.max_output_chars
        if len(text) <= limit:
            return text
        return redactor.text(text[:limit], cut=True) + f"\n[output truncated: {len(text) - limit} more characters]"

    def _success(self, spec: ActionSpec, out: ActionOutput, start: float) -> ActionResult:
        return ActionResult(
            action=spec.name,
            ok=True,
            output=self._bound(out.output),
            data=self._runtime.redactor.data(out.data),
            artifacts=list(out.artifacts),
            duration_ms=_ms(start),
        )

    def _failure(self, spec: ActionSpec, exc: ActionError, start: float) -> ActionResult:
        redactor = self._runtime.redactor
        message = exc.message
        if exc.type == "denied" and exc.rule and exc.rule not in message:
            message = f"{message} (rule: {exc.rule})"
        message = redactor.text(message)
        hint = redactor.text(exc.hint) if exc.hint else exc.hint
        info = ActionErrorInfo(type=exc.type, message=message, retryable=exc.retryable, hint=hint)
        output = f"Error ({exc.type}): {message}" + (f"\nHint: {hint}" if hint else "")
        return ActionResult(
            action=spec.name,
            ok=False,
            output=self._bound(output),
            data=redactor.data(exc.data),
            error=info,
            duration_ms=_ms(start),
        )

    def _inline_loop(self) -> asyncio.AbstractEventLoop:
        """This thread's private loop for inline actions called synchronously.

        When the thread ends, its loop is shut down (and with it the HTTP client bound to it) by the
        next thread that makes a private loop, or by ``close()``: short-lived threads leave nothing behind.
        """
        loop: asyncio.AbstractEventLoop | None = getattr(self._thread_local, "loop", None)
        if loop is None:
            self._shut_down_orphaned_loops()
            loop = asyncio.new_event_loop()
            token = _ThreadToken()  # dropped with this thread's locals when the thread ends
            weakref.finalize(token, self._orphaned_loops.append, loop)
            self._thread_local.token = token
            self._thread_local.loop = loop
            with self._inline_lock:
                self._inline_loops.append(loop)
        return loop

    def _shut_down_orphaned_loops(self) -> None:
        """Shut down the private loops of threads that have ended (this thread runs no loop)."""
        while self._orphaned_loops:
            try:
                loop = self._orphaned_loops.pop()
            except IndexError:  # another thread took the last one
                return
            with self._inline_lock:
                if loop not in self._inline_loops:
                    continue  # close() has it
                self._inline_loops.remove(loop)
            if loop.is_closed() or loop.is_running():
                continue
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())  # closes the loop's HTTP client
            except Exception:
                log.exception("shutting down the private loop of an ended thread failed")
            finally:
                loop.close()

    @property
    def approvals(self) -> ApprovalQueue:
        """The approval queue of this ``Legs``'s state store: ``pending()``, ``approve(id, by=)``,
        ``reject(id, message=, by=)``. Every process sharing the store sees the same queue."""
        from ._approval_queue import ApprovalQueue

        runtime = self._runtime
        return ApprovalQueue(runtime.state, lambda coro: runtime.submit(coro).result())

    # -- sessions and lifetime -----------------------------------------------------------------------
    def close_session(self, session: str) -> None:
        """Release a session's browser context, sandbox kernel and other per-session state (and end
        its standing approval rules, and the exfiltration guard's index of what it read)."""
        self._approvals.end_session(session)
        self._runtime.submit(self._runtime.close_session(session)).result()
        try:
            self._runtime.submit(self._flows.forget(session)).result()
        except ActionError as exc:  # the store is down: the index stays (fail closed), dropped on a later close
            log.warning("close_session(%r): the exfiltration guard's index was kept: %s", session, exc.message)

    async def aclose_session(self, session: str) -> None:
        self._approvals.end_session(session)
        await asyncio.wrap_future(self._runtime.submit(self._runtime.close_session(session)))
        try:
            await asyncio.wrap_future(self._runtime.submit(self._flows.forget(session)))
        except ActionError as exc:  # the store is down: the index stays (fail closed)
            log.warning("close_session(%r): the exfiltration guard's index was kept: %s", session, exc.message)

    @property
    def spans_dropped(self) -> int:
        """Spans of Agent Legs' own OTLP provider that never reached the collector (queue full, export
        failed, still queued at ``close()``); exact after ``close()``, 0 with the caller's provider."""
        return self._telemetry.spans_dropped

    def close(self) -> None:
        """Release browsers, containers and connections; flush telemetry. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        self._runtime.close()
        with self._inline_lock:
            for loop in self._inline_loops:
                if not loop.is_running():
                    loop.close()
            self._inline_loops.clear()
        self._approvals.close()
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


def _coerce(value: Any, cls: type[Any], origin: Any = None) -> Any:
    name = cls.__name__.lower()
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls.model_validate(dict(value))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, name, [(dict(value), origin)])) from None
    raise ConfigError(f"{name}: expected {cls.__name__} or a dict, got {type(value).__name__}")


def _argument_names(spec: ActionSpec) -> set[str]:
    """The names an action's arguments go by (field names and aliases)."""
    names = set()
    for name, info in spec.input_model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names


def _plain(raw: Any) -> Any:
    if isinstance(raw, BaseModel):
        return raw.model_dump(mode="json")
    if isinstance(raw, Mapping):
        return dict(raw)
    return raw


def _validate(spec: ActionSpec, raw: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    model = spec.input_model
    if isinstance(raw, model):
        return raw
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    bad = _not_unicode(raw)
    if bad is not None:
        raise ActionError(
            "invalid_input",
            f"invalid arguments for {spec.tool_name}: {bad or 'arguments'}: text with a lone surrogate is not valid Unicode",
            hint="Send the text as valid UTF-8 (no \\udXXX escapes).",
        )
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ActionError(
            "invalid_input",
            f"invalid arguments for {spec.tool_name}: {problems}",
            hint=f"Expected fields: {', '.join(model.model_fields or model.model_json_schema().get('properties', {}))}",
        ) from None


def _validate_edit(spec: ActionSpec, answer: ApprovalDecision) -> BaseModel:
    try:
        return _validate(spec, answer.args)
    except ActionError as exc:
        raise ActionError(
            "invalid_input",
            f"the approver's edited arguments are invalid: {exc.message}",
            hint="The edit was refused and nothing ran; ask the user again.",
        ) from None


def _scrubbed_args(args: BaseModel, redactor: Redactor) -> BaseModel:
    """``args`` with its text fields (strings, lists of strings) scrubbed of secrets.

    For summaries that cut long fields (an approver sees the first lines of an email): built from
    scrubbed text, a cut cannot split a secret. Other fields keep their types.
    """
    update = {}
    for name, value in args:
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            scrubbed = redactor.data(value)
            if scrubbed != value:
                update[name] = scrubbed
    return args.model_copy(update=update) if update else args


def _not_unicode(value: Any, where: str = "") -> str | None:
    """The field path of the first string that cannot be UTF-8 (a lone surrogate), else ``None``.

    Such text would fail deep inside an action (a file write, an SMTP message, a span export) after
    side effects may have begun; refused up front, it changes nothing.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        path = f"{where}.{key}" if where else str(key)
        found = _not_unicode(key, path) if isinstance(key, str) else None
        if found is None:
            found = _not_unicode(item, path)
        if found is not None:
            return found
    return None


class _ThreadToken:
    """Lives in a thread's locals: its finalizer tells that the thread has ended."""


_LIVE: weakref.WeakSet[Legs] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for legs in list(_LIVE):
        legs.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
