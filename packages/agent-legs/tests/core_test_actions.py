"""Actions registered only for the core's tests, in a registry of their own."""

from __future__ import annotations

import asyncio
import threading

from pydantic import BaseModel, ConfigDict, Field

from agent_legs import ActionContext, ActionError, ActionOutput, ActionRegistry, action

registry = ActionRegistry()
events: dict[str, threading.Event] = {}


class EchoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="Text to echo.")


class SleepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0)
    key: str = "sleep"


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


@action("test.echo", description="Echo the text.", read_only=True, registry=registry)
async def echo(ctx: ActionContext, args: EchoIn) -> ActionOutput:
    return ActionOutput(output=args.text, data={"text": args.text, "session": ctx.session, "call_id": ctx.call_id})


@action("test.sleep", description="Sleep.", registry=registry, timeout=lambda policy, args: 0.3)
async def sleep(ctx: ActionContext, args: SleepIn) -> ActionOutput:
    ev = events.setdefault(args.key, threading.Event())
    try:
        await asyncio.sleep(args.seconds)
    except asyncio.CancelledError:
        ev.set()  # proves the work was really stopped
        raise
    return ActionOutput(output="slept")


@action("test.wait", description="Sleep, with no effect.", read_only=True, registry=registry, timeout=lambda policy, args: 0.3)
async def wait(ctx: ActionContext, args: SleepIn) -> ActionOutput:
    await asyncio.sleep(args.seconds)
    return ActionOutput(output="waited")


@action("test.boom", description="Raise a bug.", registry=registry)
async def boom(ctx: ActionContext, args: Empty) -> ActionOutput:
    raise RuntimeError("kaboom")


@action("test.fail", description="Fail with an action error.", registry=registry)
async def fail(ctx: ActionContext, args: EchoIn) -> ActionOutput:
    raise ActionError("not_found", f"no such thing: {args.text}", hint="try another", data={"text": args.text})


@action("test.child", description="Make a child span.", registry=registry)
async def child(ctx: ActionContext, args: Empty) -> ActionOutput:
    with ctx.tracer.start_as_current_span("test child step"):
        pass
    return ActionOutput(output="ok")


@action("test.long", description="Long output.", registry=registry)
async def long(ctx: ActionContext, args: SleepIn) -> ActionOutput:
    return ActionOutput(output="x" * int(args.seconds))


@action("mail.send", description="Needs approval in tests.", registry=registry, summarize=lambda a: f"text={a.text}")
async def send(ctx: ActionContext, args: EchoIn) -> ActionOutput:
    return ActionOutput(output=f"sent {args.text}")


@action("test.inline", description="Loop-agnostic echo.", inline=True, registry=registry)
async def inline_echo(ctx: ActionContext, args: EchoIn) -> ActionOutput:
    return ActionOutput(output=args.text, data={"thread": threading.current_thread().name})
