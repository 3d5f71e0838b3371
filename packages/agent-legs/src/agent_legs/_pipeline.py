"""The call pipeline: the steps every action call goes through, in order, and its outcome.

``CallPipeline.execute`` runs the steps inside the call's span, then writes the one span and the one
action-log line whatever happened (``_finish``). The steps, each a method but the handler's call:

1. ``_validate``: the arguments against the action's input model (``invalid_input``);
2. ``_decide``: the policy (``denied``, naming the rule);
3. ``_check_installed``: the family's extra is installed (``unavailable``), before anything is spent;
4. ``_approve``: a decision passed in, a standing rule, or the approver (``approval_denied``); an
   edit is validated and decided again, and the edit is the approval;
5. ``_consume_budget``: every budget of the action, atomically in the state store (``budget_exceeded``);
6. ``_intent``: the write-ahead log line, on disk before any effect (or the call fails closed);
7. the handler under its deadline, called by ``execute`` itself (its first step in place, then
   ``_deadlines.Resumed`` for the rest of a handler that waits, the deadline one entry of its loop's
   watchdog; ``call_handler`` does the same alone) (``timeout``, with advice that depends on whether the
   action has effects);
8. ``success``/``failure``: the result, scrubbed of secrets, then bounded.

The exfiltration guard (``_flows``) has two hooks: its ``check`` (then ``_check_flow``) after ``_check_installed`` and
before ``_approve`` (a sink carrying private data to an untrusted destination is sent to approval,
rule ``policy.flows``, or refused: nobody is asked about a call refused anyway, no budget is spent),
and ``flows.record`` right after ``success`` (what a read returned is labelled before the model sees
it). Another post-result hook (the console) belongs there too, or in ``execute`` after ``_finish``.

Invariants: an exception never escapes for an action-level problem (it becomes an ``ActionResult``);
a cancelled call is still logged (``failed``, "cancelled by the caller") and the cancellation
propagates; ``call.decision``/``call.rule``/``call.approval`` always say how far the call got.

Threat model: the model controls the arguments and the number of calls; the approver, the policy and
the budgets are the operator's. A rejected, denied or over-budget call changes nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel

from . import _budgets, _deadlines
from ._approvals import ApprovalStore
from ._arguments import plain, scrubbed_args, validate, validate_edit
from ._context import ActionContext
from ._errors import ActionError
from ._extras import FAMILY_EXTRAS, unavailable_error
from ._flows import RULE as FLOWS_RULE
from ._flows import Finding, FlowGuard
from ._models import ActionErrorInfo, ActionOutput, ActionResult, ApprovalDecision, ApprovalRequest, Artifact
from ._policy import Decision, PolicyEngine
from ._registry import ActionSpec
from ._runtime import Runtime
from ._telemetry import CallRecord, Telemetry

__all__ = ["CallPipeline"]

log = logging.getLogger("agent_legs")


class _Call(CallRecord):
    """One call's state as it goes through the steps: the ``CallRecord`` that its span and both of its
    log lines report (passed to the telemetry as it is: no record copied out of it per line), plus what
    the steps need (the spec, the approval given, the span, the start, the validated arguments)."""

    __slots__ = ("args", "given", "span", "spec", "start")
    spec: ActionSpec
    given: ApprovalDecision | None
    span: trace.Span
    start: float
    args: BaseModel | None
    ids: tuple[str | None, str | None]  # always known here (None, None when the span is invalid)

    def __init__(
        self,
        spec: ActionSpec,
        session: str,
        call_id: str | None,
        given: ApprovalDecision | None,
        span: trace.Span,
        arguments: Any,
        start: float,
    ) -> None:
        self.spec, self.given, self.span, self.start, self.args = spec, given, span, start, None
        self.action, self.tool_name, self.session, self.call_id = spec.name, spec.tool_name, session, call_id
        self.decision, self.outcome, self.duration_ms = "invalid", "", 0.0
        self.arguments = arguments  # the raw arguments, then the validated ones as JSON
        self.result = self.error_message = self.rule = self.record_id = self.approval = self.artifacts = None
        self.ids = (None, None)  # the span's trace and span ids, for the result and both lines


@dataclass(eq=False, slots=True, frozen=True)
class _Plan:
    """What every call of one action needs that depends only on the action and the policy, made once
    (``CallPipeline._plan``) and made again when either changes (the spec re-registered, another engine)."""

    spec: ActionSpec
    engine: PolicyEngine
    tool_name: str
    extra: bool  # the family needs an extra: whether it is installed is asked per call
    sink: bool  # the exfiltration guard checks its calls (``flows.is_sink``)
    budgets: bool  # some budget of the policy counts it
    observes: bool  # ``flows.record`` wants its results
    timeout_s: float | None  # the policy's timeout; None when the spec computes it from the arguments


class CallPipeline:
    def __init__(self, runtime: Runtime, telemetry: Telemetry, approvals: ApprovalStore, approver: Callable[[], Any]) -> None:
        self.runtime = runtime
        self.telemetry = telemetry
        self.approvals = approvals
        self._approver = approver  # read per call: Legs.approver may be replaced
        self.flows = FlowGuard(runtime.policy, runtime.settings, runtime)  # the exfiltration guard (_flows)
        self._plans: dict[str, _Plan] = {}  # action -> what its calls need that depends only on it and the policy

    def _plan(self, spec: ActionSpec) -> _Plan:
        """What a call of ``spec`` needs that depends only on the action and the policy (made once per
        action and policy engine: a call does only what depends on its arguments)."""
        engine, name = self.runtime.engine, spec.name
        flows = self.flows
        plan = _Plan(
            spec,
            engine,
            spec.tool_name,
            FAMILY_EXTRAS.get(spec.family) is not None,
            flows.is_sink(name),
            bool(engine.budgets_for(name)),
            flows.observes(name),
            spec.timeout_for(self.runtime.policy, None) if spec.timeout is None else None,
        )
        self._plans[name] = plan
        return plan

    async def execute(
        self,
        spec: ActionSpec,
        raw_args: Mapping[str, Any] | BaseModel | None,
        session: str,
        call_id: str | None,
        parent: otel_context.Context,
        given: ApprovalDecision | None = None,
    ) -> ActionResult:
        """Run one call through the steps (see the module's docstring) inside its span; one span and one
        action-log line whatever happens. The steps run here, not in a coroutine of their own (one
        coroutine less per call), and the handler's first step too (``_handler_first_step``)."""
        start = time.perf_counter()
        plan = self._plans.get(spec.name)
        if plan is None or plan.spec is not spec or plan.engine is not self.runtime.engine:
            plan = self._plan(spec)
        span = self.telemetry.start(plan.tool_name, spec.name, session, call_id, parent, spec.description)
        call = _Call(spec, session, call_id, given, span, plain(raw_args), start)
        ctx = span.get_span_context()
        if ctx.is_valid:
            call.ids = (ctx.trace_id.to_bytes(16, "big").hex(), ctx.span_id.to_bytes(8, "big").hex())  # as :032x, :016x
        result: ActionResult
        # The span is made current for the steps (what trace.use_span does, without its generator).
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            try:
                args = self._validate(call, raw_args)
                verdict = self._decide(call)
                if plan.extra:
                    self._check_installed(call)
                if plan.sink:  # the awaited steps are entered only when they have work to do
                    # The guard's check awaited here (not in a coroutine of ours around it: one object fewer per call).
                    flow = await self.flows.check(spec.name, call.arguments, session)
                    if flow is not None:
                        verdict = self._check_flow(call, flow)
                if verdict.kind == "approve" or given is not None:
                    args = await self._approve(call, args, verdict)
                else:
                    call.decision = "allow"
                if plan.budgets:
                    await self._consume_budget(call)
                self._intent(call)
                self.runtime.touch_session(session)
                timeout_s = plan.timeout_s if plan.timeout_s is not None else spec.timeout_for(self.runtime.policy, args)
                began = time.perf_counter()
                context = ActionContext(self.runtime, spec, session, call_id, timeout_s, span)
                pending = spec.handler(context, args)
                if type(pending) is CoroutineType:
                    # Its first step runs right away: a handler that finishes without waiting needs no timer (a
                    # timer could not have interrupted it: a deadline stops a coroutine only where it waits).
                    try:
                        step = pending.send(None)
                    except StopIteration as done:
                        output = done.value
                    else:  # the loop the handler's first step found, if it asked (one getpid() syscall less)
                        output = await _deadlines.Resumed(pending, step, spec, timeout_s, began, context.running_loop)
                else:
                    output = await self._within(spec, pending, timeout_s, began)
                result = self.success(spec, output, start, call.ids)
                if plan.observes:  # labelled before the model sees it
                    await self.flows.record(spec.name, call.arguments, session, call_id, result.output, result.data)
            except ActionError as exc:
                if exc.rule:
                    call.rule = exc.rule
                result = self.failure(spec, exc, start, call.ids)
            finally:
                otel_context.detach(token)
        except asyncio.CancelledError:
            self._finish(call, "failed", _ms(start), None, "cancelled by the caller")
            raise
        except Exception as exc:  # a bug in an executor must not crash the agent
            if span.is_recording():  # as use_span records it
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            log.exception("action %s failed unexpectedly", spec.name)
            result = self.failure(spec, ActionError("failed", f"internal error: {type(exc).__name__}: {exc}"), start, call.ids)
        # success() and failure() scrubbed the result before bounding it (scrub first, cut after), and gave
        # it the span's ids.
        if result.ok:
            artifacts = result.artifacts  # a comprehension is a function object made per call: only when needed
            self._finish(call, "ok", result.duration_ms, result.output, None, [a.path for a in artifacts] if artifacts else None)
        else:  # the console shows a session's latest artifacts
            error = result.error
            self._finish(
                call, error.type if error else "failed", result.duration_ms, None, error.message if error else None, None
            )
        return result

    def _finish(
        self,
        call: _Call,
        outcome: str,
        duration_ms: float,
        output: str | None,
        error: str | None,
        artifacts: list[str] | None = None,
    ) -> None:
        call.outcome, call.duration_ms, call.result, call.error_message, call.artifacts = (
            outcome,
            duration_ms,
            output,
            error,
            artifacts,
        )
        self.telemetry.finish(call.span, call)

    # -- the steps ----------------------------------------------------------------------------------
    def _validate(self, call: _Call, raw_args: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        args = call.args = validate(call.spec, raw_args)
        call.arguments = args.__pydantic_serializer__.to_python(args, mode="json")  # model_dump(mode="json"), unwrapped
        return args

    def _decide(self, call: _Call) -> Decision:
        verdict = self.runtime.engine.decide_call(call.spec.name, call.arguments)
        call.rule = verdict.rule
        if verdict.kind == "deny":
            call.decision = "deny"
            raise ActionError("denied", f"{call.spec.name} is not allowed ({verdict.rule})", rule=call.rule)
        return verdict

    def _check_installed(self, call: _Call) -> None:
        not_installed = unavailable_error(call.spec.family)
        if not_installed is not None:
            raise not_installed

    def _check_flow(self, call: _Call, flow: Finding) -> Decision:
        """The exfiltration guard before a sink (its ``check`` found ``flow``, awaited by ``execute``):
        private data to an untrusted destination is sent to approval (rule ``policy.flows``, the reason
        naming the reading calls) or refused (``deny``)."""
        call.rule = FLOWS_RULE
        if self.flows.mode == "deny":
            call.decision = "deny"
            raise self.flows.refusal(call.spec.name, flow)
        return Decision("approve", FLOWS_RULE, flow.reason)

    async def _approve(self, call: _Call, args: BaseModel, verdict: Decision) -> BaseModel:
        """The arguments to run with (an approver's edit replaces them); raises if not approved."""
        spec, session, call_id, given = call.spec, call.session, call.call_id, call.given
        standing = (
            await self.approvals.find(spec.name, call.arguments, session)
            if verdict.kind == "approve" and given is None and verdict.rule != FLOWS_RULE  # a flow is asked each time
            else None
        )
        if standing is not None:
            call.decision = "approved"
            call.approval = {"decision": "approved", "by": standing.by, "rule": standing.id}
            return args
        if verdict.kind != "approve" and given is None:
            call.decision = "allow"
            return args
        try:
            answer = (
                given
                if given is not None
                else await self.ask_approval(self.request(spec, args, call.arguments, session, call_id, verdict))
            )
        except ActionError:  # the approver's own refusal: expired in the queue, store down
            call.decision = "rejected"
            call.approval = {"decision": "rejected", "by": None, "rule": None}
            raise
        call.approval = {"decision": answer.outcome, "by": answer.by, "rule": answer.rule}
        if given is not None and call_id:
            earlier = await self.approvals.claim(session, call_id, given)
            if earlier is not None:
                call.decision = "rejected"
                call.approval["decision"] = "rejected"
                raise ActionError(
                    "approval_denied",
                    f"call {call_id} of {spec.name} was already decided ({earlier.get('type')}"
                    + (f" by {earlier['by']}" if earlier.get("by") else "")
                    + f" at {earlier.get('created')}); a call is decided once and runs at most once",
                    rule=call.rule,
                    hint="Do not retry the same call; the earlier decision stands.",
                )
        call.decision = "rejected" if answer.type == "reject" else "approved"
        if answer.type == "reject":
            who = f" by {answer.by}" if answer.by else ""
            raise ActionError(
                "approval_denied",
                f"{spec.name} needs approval ({verdict.reason or verdict.rule}) and was not approved{who}"
                + (f": {answer.message}" if answer.message else ""),
                rule=call.rule,
                hint="Do not retry the same call; ask the user or choose another action.",
            )
        if answer.type == "edit":  # validated and decided again; the edit is the approval
            call.decision = "invalid"
            args = call.args = validate_edit(spec, answer)
            call.arguments = args.model_dump(mode="json")
            verdict = self.runtime.engine.decide_call(spec.name, call.arguments)
            call.rule = verdict.rule
            if verdict.kind == "deny":
                call.decision = "deny"
                raise ActionError(
                    "denied", f"{spec.name} with the edited arguments is not allowed ({verdict.rule})", rule=call.rule
                )
            call.decision = "approved"
        if answer.remember is not None:
            added = await self.approvals.add_rule(spec.name, answer.match, answer.remember, session, answer.by)
            log.info("standing rule %s added by %s: %s", added.id, answer.by, added)
        return args

    async def _consume_budget(self, call: _Call) -> None:
        runtime = self.runtime
        budgets = runtime.engine.budgets_for(call.spec.name)
        if not budgets:
            return
        exhausted = await runtime.on_loop(_budgets.consume(runtime.state, budgets, call.session))
        if exhausted is None:
            return
        budget, used = exhausted
        call.decision = "budget_exceeded"
        call.rule = f"policy.budgets[{budget.key}]"
        raise ActionError(
            "budget_exceeded",
            f"budget {budget.key} exhausted: {used}/{budget.limit} actions used"
            + ("" if budget.per == "total" else f" this {budget.per}")
            + (f" in session {call.session!r}" if budget.scope == "session" else " (all sessions)"),
            rule=call.rule,
            hint=(
                "Do not retry now: "
                + ("the budget never resets" if budget.per == "total" else f"it resets with the next {budget.per} (UTC)")
                + ("" if budget.scope == "session" else "; a new session does not reset it")
                + ". Tell the user the limit was reached."
            ),
        )

    def _intent(self, call: _Call) -> None:
        """Write-ahead: the intent line is on disk before the effect can happen (or the call fails
        closed, "unavailable", and nothing runs)."""
        call.record_id = self.telemetry.intent(call.span, call)

    async def call_handler(
        self, spec: ActionSpec, args: BaseModel, session: str, call_id: str | None, span: trace.Span
    ) -> ActionOutput:
        """The handler of ``spec`` under its deadline, as ``execute`` runs it (its first step right away)."""
        if spec.timeout is None:  # the family's policy timeout: fixed with the policy, read once per action
            plan = self._plans.get(spec.name)
            if plan is None or plan.spec is not spec or plan.engine is not self.runtime.engine:
                plan = self._plan(spec)
            timeout_s = cast(float, plan.timeout_s)
        else:
            timeout_s = spec.timeout_for(self.runtime.policy, args)
        ctx = ActionContext(self.runtime, spec, session, call_id, timeout_s, span)
        began = time.perf_counter()
        pending = spec.handler(ctx, args)
        if type(pending) is CoroutineType:
            try:
                step = pending.send(None)
            except StopIteration as done:
                return cast(ActionOutput, done.value)
            return cast(ActionOutput, await _deadlines.Resumed(pending, step, spec, timeout_s, began, ctx.running_loop))
        return await self._within(spec, pending, timeout_s, began)

    async def _within(self, spec: ActionSpec, pending: Awaitable[ActionOutput], timeout_s: float, began: float) -> ActionOutput:
        """A handler's awaitable that is not a coroutine, under its deadline (as ``_deadlines.Resumed``
        does for a coroutine): on the loop's clock, counted from the handler's start (``began``)."""
        loop = asyncio.get_running_loop()
        deadline = _deadlines.begin(loop, loop.time() + timeout_s - (time.perf_counter() - began))
        try:
            output = await pending
        except BaseException as exc:
            if _deadlines.end(loop, deadline, exc):
                raise _deadlines.timeout_error(spec, timeout_s) from None
            raise
        _deadlines.end(loop, deadline, None)
        return output

    # -- approval -----------------------------------------------------------------------------------
    def request(
        self, spec: ActionSpec, args: BaseModel, arguments: dict[str, Any], session: str, call_id: str | None, verdict: Decision
    ) -> ApprovalRequest:
        redactor = self.runtime.redactor
        summary = spec.summarize(scrubbed_args(args, redactor)) if spec.summarize else ""
        return ApprovalRequest(
            action=spec.name,
            tool_name=spec.tool_name,
            arguments=redactor.data(arguments),
            session=session,
            reason=redactor.text(f"{verdict.reason or verdict.rule}. {summary}" if summary else verdict.reason or verdict.rule),
            call_id=call_id,
            rule=verdict.rule,
        )

    async def ask_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """The approver's decision; a rejection when there is none, it raises, or answers no decision."""
        approver = self._approver()
        if approver is None:
            return ApprovalDecision(type="reject", message="no approver is configured")
        try:
            if inspect.iscoroutinefunction(approver):
                answer: Any = await approver(request)
            else:
                answer = await asyncio.to_thread(approver, request)
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

    # -- results ------------------------------------------------------------------------------------
    def bound(self, text: str) -> str:
        """``text`` scrubbed of secrets, then cut to ``settings.max_output_chars``.

        Scrub first, cut after: a secret straddling the cut must not leave its prefix behind (the
        head is scrubbed once more as cut text, which removes a trailing partial secret).
        """
        redactor = self.runtime.redactor
        text = redactor.text(text)
        limit = self.runtime.settings.max_output_chars
        if len(text) <= limit:
            return text
        return redactor.text(text[:limit], cut=True) + f"\n[output truncated: {len(text) - limit} more characters]"

    def success(
        self, spec: ActionSpec, out: ActionOutput, start: float, ids: tuple[str | None, str | None] = (None, None)
    ) -> ActionResult:
        output, data, artifacts = out.output, out.data, out.artifacts
        text = self.bound(output)
        data = self.runtime.redactor.data(data)
        # A handler's output is a plain dataclass: what it holds is checked here. Values of exactly the
        # model's types (the common case) make the result directly; anything else (an artifact as a dict,
        # a key that is not text) goes through the model's validation, which converts or refuses it.
        if (data is None or (type(data) is dict and _only_str(map(type, data)))) and (
            not artifacts or all(type(a) is Artifact for a in artifacts)
        ):
            return _ok_result(spec.name, text, None if data is None else dict(data), list(artifacts), _ms(start), ids)
        return ActionResult(
            action=spec.name,
            ok=True,
            output=text,
            data=data,
            artifacts=list(artifacts),
            duration_ms=_ms(start),
            trace_id=ids[0],
            span_id=ids[1],
        )

    def failure(
        self, spec: ActionSpec, exc: ActionError, start: float, ids: tuple[str | None, str | None] = (None, None)
    ) -> ActionResult:
        redactor = self.runtime.redactor
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
            output=self.bound(output),
            data=redactor.data(exc.data),
            error=info,
            duration_ms=_ms(start),
            trace_id=ids[0],
            span_id=ids[1],
        )


_new = object.__new__
_set = object.__setattr__
# Whether every type an iterable yields is exactly ``str`` (the keys' types, mapped in C: no generator
# resumed per key, as ``all(type(k) is str for k in data)`` would be; a subclass of str is not str).
_only_str = frozenset((str,)).issuperset
_OK_FIELDS = frozenset(("action", "ok", "output", "data", "artifacts", "duration_ms", "trace_id", "span_id"))


def _ok_result(
    action: str,
    output: str,
    data: dict[str, Any] | None,
    artifacts: list[Artifact],
    duration_ms: float,
    ids: tuple[str | None, str | None],
) -> ActionResult:
    """``ActionResult(ok=True, ...)`` from values already of the model's types, without validating them
    again (what pydantic's ``model_construct`` does, without its per-field defaults: ~1.5 us less per call).
    The same instance in every respect: fields, fields set, equality, dumps."""
    result: ActionResult = _new(ActionResult)
    _set(
        result,
        "__dict__",
        {
            "action": action,
            "ok": True,
            "output": output,
            "data": data,
            "error": None,
            "artifacts": artifacts,
            "duration_ms": duration_ms,
            "trace_id": ids[0],
            "span_id": ids[1],
        },
    )
    _set(result, "__pydantic_fields_set__", set(_OK_FIELDS))
    _set(result, "__pydantic_extra__", None)
    _set(result, "__pydantic_private__", None)
    return result


def _ms(start: float) -> float:
    """Milliseconds since ``start``, to the microsecond (``round(ms, 3)`` costs twice as much)."""
    return int((time.perf_counter() - start) * 1_000_000 + 0.5) / 1000
