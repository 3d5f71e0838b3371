"""``code.run`` / ``code.reset``: stateful code execution in Docker sandboxes that contain and stop.

The handlers only: a call gets its time limit (``_models.timeout_for``), the service (waiting for the
engine counts against that limit), the session's kernel (waiting for it may take the limit plus
``policy.code.queue_timeout_s``: ``_models.ready_within``), runs the code within the limit counted from the
moment it is sent (``_kernel.run_code``: claim,
replace, request, kill on any failure), then shapes the result. Secrets are scrubbed from the streams
and the value before anything else cuts them (a secret straddling the driver's cut leaves no prefix
behind); files the code changed come back as artifacts unless ``policy.files.deny`` hides their names;
everything that happened to the kernel (new, replaced and why, denied paths that appeared, set-id bits
removed, leftover processes stopped, network destinations refused) is said in ``output`` and ``data``.

See the package docstring (``agent_legs.actions.code``) for the module map and the threat model.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._models import ActionOutput, Artifact
from ..._registry import action
from ._container import UNAVAILABLE_HINT
from ._hosts import host_specs
from ._kernel import run_code
from ._models import ResetInput, RunInput, ready_within, timeout_for
from ._service import CodeService

__all__ = ["code_reset", "code_run"]


@action(
    "code.run",
    description="""Run Python (default) or bash in this session's sandbox: a persistent kernel, like a
    notebook (variables and imports survive between calls). Returns stdout, stderr, the value of the
    last expression, and the traceback if the code raised. The workspace is at /workspace (bash runs
    there); files written there and matplotlib figures come back as artifacts. No network access
    unless the policy allows it (then only through the HTTP(S) proxy set in the environment).
    numpy, pandas, scipy and matplotlib are installed. Processes a call starts end with the call.""",
    # getting the kernel (ready_within), then the code's own run, then room to kill and clean up
    timeout=lambda policy, args: ready_within(policy, args) + timeout_for(policy, args) + 15.0,
)
async def code_run(ctx: ActionContext, args: RunInput) -> ActionOutput:
    limit_s = timeout_for(ctx.policy, args)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s  # the engine must answer within the call's own limit
    max_bytes = ctx.policy.code.max_output_bytes
    memory_mb = ctx.policy.code.memory_mb
    try:
        async with asyncio.timeout_at(deadline):
            svc = await ctx.service(CodeService)
    except TimeoutError:
        where = ", ".join(spec.name for spec in host_specs(ctx.settings.code))
        raise ActionError(
            "unavailable",
            f"the Docker engine ({where}) did not answer within this call's {limit_s:g} s timeout; nothing ran",
            retryable=True,
            hint=UNAVAILABLE_HINT,
        ) from None
    ready_by = deadline + ctx.policy.code.queue_timeout_s  # a place, a container start, the session's running call
    call = await run_code(svc, ctx, args, ready_by, limit_s)  # the kernel's side: claim, replace, run, clean up
    reply, fresh, replaced, appeared, setid_removed = call.reply, call.fresh, call.replaced, call.appeared, call.setid_removed
    # The streams and the value may be heads of longer text (the driver's cut): scrubbed here, before
    # anything else cuts them, so a secret straddling the driver's cut leaves no prefix behind.
    for key, cut in (
        ("stdout", int(reply.get("stdout_bytes") or 0) > max_bytes),
        ("stderr", int(reply.get("stderr_bytes") or 0) > max_bytes),
        ("value", bool(reply.get("value_truncated"))),
    ):
        if isinstance(reply.get(key), str):
            reply[key] = ctx.redactor.text(reply[key], cut=cut)
    artifacts = _artifacts(ctx, reply)
    reply["denied_appeared"], reply["setid_removed"] = appeared[:50], setid_removed[:50]
    output = _render(reply, args.language, max_bytes, artifacts, fresh)
    if replaced:
        output = f"[{replaced}]\n{output}"
    data: dict[str, Any] = {k: reply.get(k) for k in ("stdout", "stderr", "value", "error", "exit_code", "duration_ms")}
    for stream in ("stdout", "stderr"):  # the full size, and whether the text above is only its head
        size = reply[f"{stream}_bytes"]
        data[f"{stream}_bytes"] = size
        data[f"{stream}_truncated"] = size > max_bytes
    data["value_truncated"] = reply["value_truncated"]
    data["figures"] = reply["figures"]
    data["killed_processes"] = reply["killed_processes"]
    if "network_denied" in reply:
        data["network_denied"] = reply["network_denied"]
    data["new_kernel"] = fresh
    if replaced:
        data["kernel_replaced"] = replaced
    if appeared:  # why this call has a new kernel: paths to hide appeared since the old one started
        data["denied_paths_appeared"] = appeared[:50]
    data["setid_removed"] = setid_removed[:50]
    if reply["oom_killed"]:
        # a child process (not the kernel) hit the limit: the kernel lives on, but the work did not finish
        raise ActionError(
            "failed",
            f"a process was killed for exceeding the memory limit of {memory_mb} MB "
            "(policy.code.memory_mb); the session's kernel and variables are kept\n" + output[:2000],
            hint="Use less memory (process data in chunks).",
            data=data,
        )
    return ActionOutput(output=output, data=data, artifacts=artifacts)


def _artifacts(ctx: ActionContext, reply: dict[str, Any]) -> list[Artifact]:
    out: list[Artifact] = []
    for path in [*reply.get("changed", [])][:100]:
        try:
            out.append(ctx.workspace.artifact(path))
        except ActionError:
            continue  # denied names (e.g. .env) are not advertised
    return out


def _render(reply: dict[str, Any], language: str, limit: int, artifacts: list[Artifact], fresh: bool) -> str:
    parts: list[str] = []
    if fresh:
        parts.append("[new kernel started]")
    for stream in ("stdout", "stderr"):
        text = reply.get(stream) or ""
        total = reply.get(f"{stream}_bytes", 0)
        if text:
            parts.append(f"[{stream}]\n{text.rstrip()}")
        if total > limit:
            parts.append(f"[{stream} truncated: {total} bytes, limit {limit} (policy.code.max_output_bytes)]")
    if reply.get("value") is not None:
        parts.append(f"[value]\n{reply['value']}")
        if reply.get("value_truncated"):
            parts.append(f"[value truncated to {limit} characters (policy.code.max_output_bytes)]")
    if reply.get("error"):
        parts.append(f"[error]\n{reply['error'].rstrip()}")
    if language == "bash":
        parts.append(f"[exit code {reply.get('exit_code')}]")
    for denial in reply.get("network_denied", []):
        parts.append(f"[network denied: {denial['url']} ({denial['message']}; rule: {denial['rule']})]")
    if reply.get("denied_appeared"):
        parts.append(
            f"[the kernel was replaced (its state was lost) to hide paths that appeared and match "
            f"policy.files.deny: {', '.join(reply['denied_appeared'])}]"
        )
    if reply.get("setid_removed"):
        parts.append(f"[setuid/setgid bits removed (never allowed in the workspace): {', '.join(reply['setid_removed'])}]")
    if reply.get("killed_processes"):
        parts.append(f"[{reply['killed_processes']} leftover process(es) stopped: a call's processes end with it]")
    if artifacts:
        parts.append("[files]\n" + "\n".join(f"{a.path} ({a.mime_type}, {a.size} bytes)" for a in artifacts))
    body = [p for p in parts if p != "[new kernel started]"]
    return "\n".join(parts) if body else "\n".join([*parts, "(no output)"])


@action(
    "code.reset",
    description="Discard this session's sandbox kernel (variables, imports, processes); the next code_run starts fresh.",
)
async def code_reset(ctx: ActionContext, args: ResetInput) -> ActionOutput:
    svc = await ctx.service(CodeService)
    existed = ctx.session in svc.kernels
    await svc.drop(ctx.session)
    return ActionOutput(
        output="Kernel reset: the next code_run starts a fresh session."
        if existed
        else "No kernel was running for this session; the next code_run starts a fresh one.",
        data={"had_kernel": existed},
    )
