"""Scripted chat models and the end-to-end "office task" that real agents run in the tests.

``ScriptedChatModel`` (LangChain) and ``scripted_llamaindex_llm`` (LlamaIndex) answer each turn
with the next scripted step: a list of tool calls, a final text, or a function of the tool results
the model just received (so a step can act on what an earlier tool really returned, as a model
would). They record every message they receive, so tests can assert what the model saw.

``office_world`` (fixture) starts the real local services one task touches: an API on 127.0.0.1,
a shop website for the browser, an SMTP server (STARTTLS + AUTH), a Dovecot IMAP mailbox holding
the task email, and the Docker sandbox image. ``office_task`` is the script a model plays there,
across all five action families, including one call the policy denies; ``assert_office_effects``
checks what it changed in the world. To cover a new action, add a step to ``office_task`` and
its effect to ``assert_office_effects``: both framework tests pick it up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Span
from pydantic import Field

from .http_server import TestServer
from .mail import PASSWORD, Dovecot, SmtpServer
from .website import Website

ToolCallSpec = tuple[str, dict[str, Any]]
# tool calls (name, args), a final answer, or a function of the tool results of the previous turn
Step: TypeAlias = list[ToolCallSpec] | str | Callable[[list[str]], "Step"]


def _resolve(step: Step, results: list[str]) -> list[ToolCallSpec] | str:
    while callable(step):
        step = step(results)
    return step


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that plays ``steps`` in order, with real tool calls."""

    steps: list[Any] = Field(default_factory=list)
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        last_ai = max((i for i, m in enumerate(messages) if isinstance(m, AIMessage)), default=-1)
        results = [str(m.content) for m in messages[last_ai + 1 :] if isinstance(m, ToolMessage)]
        step = _resolve(self.steps[self.turn] if self.turn < len(self.steps) else "done", results)
        self.turn += 1
        if isinstance(step, str):
            message = AIMessage(content=step)
        else:
            message = AIMessage(
                content="",
                tool_calls=[
                    {"name": name, "args": args, "id": f"call_{self.turn}_{i}", "type": "tool_call"}
                    for i, (name, args) in enumerate(step)
                ],
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


def scripted_llamaindex_llm(steps: list[Step]) -> Any:
    """A LlamaIndex function-calling LLM (``MockFunctionCallingLLM``) that plays ``steps`` in order.

    ``llm._scripted_state["seen"]`` holds the messages it received at each turn.
    """
    from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    state: dict[str, Any] = {"turn": 0, "seen": []}

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        state["seen"].append(list(messages))
        last_ai = max((i for i, m in enumerate(messages) if m.role == MessageRole.ASSISTANT), default=-1)
        results = [str(m.content) for m in messages[last_ai + 1 :] if m.role == MessageRole.TOOL]
        turn = state["turn"]
        state["turn"] = turn + 1
        step = _resolve(steps[turn] if turn < len(steps) else "done", results)
        if isinstance(step, str):
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[TextBlock(text=step)])
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[
                ToolCallBlock(tool_call_id=f"call_{turn}_{i}", tool_name=name, tool_kwargs=json.dumps(args))
                for i, (name, args) in enumerate(step)
            ],
        )

    llm = MockFunctionCallingLLM(response_generator=respond, is_chat_model=True)
    llm._scripted_state = state  # type: ignore[attr-defined]
    return llm


# -- the office task ---------------------------------------------------------------------------

TASK_EMAIL = """\
From: Boss <boss@example.com>
To: bot@example.com
Subject: Price report
Date: Tue, 24 Nov 2026 09:00:00 +0000
Message-ID: <task-1@example.com>

Please collect the product prices from our shop, save them as report/prices.csv,
compute the total, post it to the reporting API and email the CSV to team@example.com.
"""

TASK = (
    "Do the task in the newest unread email of your inbox. The shop is at {shop}. Save the prices as "
    "report/prices.csv with the header 'product,price'. Compute the total with code_run and write it, "
    'with two decimals, to report/total.txt. POST the JSON {{"total": <total>}} to {api}. Then email '
    "report/prices.csv as an attachment to team@example.com with the subject 'Price report'."
)


@dataclass
class OfficeWorld:
    """The real local services of the office task, and the Legs configuration to reach them."""

    api: TestServer
    shop: Website
    smtp: SmtpServer
    mailbox: Dovecot
    ca_file: str
    approvals: list[Any] = field(default_factory=list)

    @property
    def task(self) -> str:
        return TASK.format(shop=self.shop.site.url("/"), api=self.api.url("/echo"))

    def legs_kwargs(self, tmp_path: Path, tracer_provider: Any = None) -> dict[str, Any]:
        def approver(request: Any) -> bool:
            self.approvals.append(request)
            return True

        return {
            "workspace": tmp_path / "ws",
            "state_dir": tmp_path / "st",
            "tracer_provider": tracer_provider,
            "secrets": {"SMTP_PASSWORD": PASSWORD},
            "approver": approver,
            "policy": {
                "allow": ["files.*", "http.request", "browser.*", "code.*", "email.list", "email.read"],
                "require_approval": ["email.send"],
                "network": {"allow_hosts": [f"127.0.0.1:{self.api.port}", f"127.0.0.1:{self.shop.site.port}"]},
                "email": {"allow_recipients": ["*@example.com"]},
            },
            "settings": {
                "email": {
                    "from_address": "bot@example.com",
                    "smtp": self.smtp.settings(self.ca_file),
                    "imap": self.mailbox.settings(self.ca_file),
                },
                "code": {"pool_size": 0},
            },
        }


@pytest.fixture
def office_world(
    http_server: TestServer,
    website: Website,
    smtp_server: SmtpServer,
    dovecot: Dovecot,
    mail_ca: dict[str, str],
    sandbox_image: str,
) -> Iterator[OfficeWorld]:
    dovecot.deliver(TASK_EMAIL.replace("\n", "\r\n").encode())
    return OfficeWorld(http_server, website, smtp_server, dovecot, mail_ca["ca"])


def _first_message_id(listing: str) -> str:
    match = re.search(r"^\s*(\d+)\s", listing, re.MULTILINE)
    assert match, f"no message id in the email_list output:\n{listing}"
    return match.group(1)


def _prices(page: str) -> list[tuple[str, str]]:
    rows = re.findall(r"(\w+): \$([0-9.]+)", page)
    assert rows, f"no prices on the page the browser returned:\n{page}"
    return rows


OFFICE_CODE = """\
import csv
with open('report/prices.csv') as f:
    total = sum(float(row['price']) for row in csv.DictReader(f))
with open('report/total.txt', 'w') as f:
    f.write(f'{total:.2f}')
total
"""

DENIED_READ = ("files_read", {"path": "../../etc/passwd"})  # outside the workspace: the policy refuses


def office_task(world: OfficeWorld) -> list[Step]:
    """What a good model does for ``world.task``, reading the real results of its earlier calls.

    Each step is one model turn; a turn with several calls runs them as parallel tool calls (whose
    results may come back in any order).
    """
    return [
        [("email_list", {"unread_only": True})],
        lambda r: [("email_read", {"id": _first_message_id(r[0])})],
        [
            ("browser_navigate", {"url": world.shop.site.url("/")}),
            ("http_request", {"method": "GET", "url": world.api.url("/json")}),
        ],
        lambda r: [
            (
                "files_write",
                {
                    "path": "report/prices.csv",
                    "content": "product,price\n" + "".join(f"{n},{p}\n" for n, p in _prices("\n".join(r))),
                },
            ),
            DENIED_READ,
        ],
        [("code_run", {"code": OFFICE_CODE})],
        lambda r: [
            (
                "http_request",
                {
                    "method": "POST",
                    "url": world.api.url("/echo"),
                    "json": {"total": float(re.findall(r"[0-9]+\.[0-9]+", r[0])[-1])},
                },
            )
        ],
        [
            (
                "email_send",
                {
                    "to": ["team@example.com"],
                    "subject": "Price report",
                    "body": "Hello team,\n\nthe price report is attached.\n",
                    "attachments": ["report/prices.csv"],
                },
            )
        ],
        "Done: report/prices.csv saved, total 12.50 posted to the API and emailed to team@example.com.",
    ]


OFFICE_TOOL_CALLS = 9  # tool calls in office_task
OFFICE_DENIED = 1  # of which the policy denies


def assert_office_effects(world: OfficeWorld, workspace: Path) -> None:
    """What the office task changed in the world: files, the API, the SMTP server, the approver."""
    assert (workspace / "report/prices.csv").read_text().splitlines() == ["product,price", "Widget,5.00", "Gadget,7.50"]
    assert (workspace / "report/total.txt").read_text().strip() == "12.50"  # written inside the sandbox
    posts = [r for r in world.api.requests if r.method == "POST" and r.path == "/echo"]
    assert len(posts) == 1 and json.loads(posts[0].body) == {"total": 12.5}
    assert [r.path for r in world.api.requests if r.method == "GET"] == ["/json"]
    (sent,) = world.smtp.messages
    assert sent["rcpt"] == ["team@example.com"]
    msg: EmailMessage = world.smtp.parsed()
    assert msg["Subject"] == "Price report"
    (attachment,) = msg.iter_attachments()
    assert attachment.get_filename() == "prices.csv" and "Gadget,7.50" in attachment.get_content()
    assert [a.action for a in world.approvals] == ["email.send"]


def assert_tool_spans(spans: list[ReadableSpan], root: Span, call_ids: set[str], session: str) -> None:
    """One ``execute_tool`` span per tool call, children of the agent's span, carrying the call ids."""
    root_ctx = root.get_span_context()
    assert len(spans) == len(call_ids), [s.name for s in spans]
    assert {(s.attributes or {}).get("gen_ai.tool.call.id") for s in spans} == call_ids
    for s in spans:
        attributes = dict(s.attributes or {})
        assert s.context is not None and s.context.trace_id == root_ctx.trace_id
        assert s.parent is not None and s.parent.span_id == root_ctx.span_id, s.name
        assert s.name == f"execute_tool {attributes['gen_ai.tool.name']!s}"
        assert attributes["agent_legs.session"] == session
