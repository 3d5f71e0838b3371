"""``agent-legs demo``: an agent does one realistic job with all five action families.

The demo starts its own services on 127.0.0.1 — a small shop website, a JSON API that records
posts, an SMTP server that captures mail — and gives a LangChain agent the Agent Legs tools under a
policy that allows exactly those services. The job: read the catalogue in the browser, compute
statistics and a chart in the sandbox, save a CSV report, post the summary to the API, email it
with the chart attached; one action is denied on purpose. Without ``--model`` a scripted model
plays the agent (it reads the real tool results to decide its next call).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PRODUCTS = [("Trail shoes", 89.90), ("Rain jacket", 129.00), ("Headlamp", 34.50), ("Water bottle", 18.25),
            ("Backpack 30 L", 74.00), ("Camping stove", 59.95)]
_CSS = "body{font-family:sans-serif;max-width:40em;margin:2em auto}td{padding:.2em 1em}"


@dataclass
class DemoServices:
    shop_port: int
    api_port: int
    smtp_port: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    mails: list[bytes] = field(default_factory=list)
    _stops: list[Any] = field(default_factory=list)

    @property
    def shop(self) -> str:
        return f"http://127.0.0.1:{self.shop_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> None:
        for stop in self._stops:
            stop()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def start_services() -> DemoServices:
    from aiosmtpd.controller import Controller

    svc = DemoServices(_free_port(), _free_port(), _free_port())
    rows = "".join(f"<tr><td>{name}</td><td class='price'>${price:.2f}</td></tr>" for name, price in PRODUCTS)
    pages = {
        "/": f"<html><head><title>Trailhead Outfitters</title><style>{_CSS}</style></head><body>"
             "<h1>Trailhead Outfitters</h1><p>Gear for the outdoors.</p><a href='/catalogue'>Catalogue</a>"
             "<form action='/search'><input id='q' name='q' placeholder='Search'><button>Search</button></form>"
             "</body></html>",
        "/catalogue": f"<html><head><title>Catalogue</title><style>{_CSS}</style></head><body><h1>Catalogue</h1>"
                      f"<table><tr><th>Product</th><th>Price</th></tr>{rows}</table></body></html>",
    }

    class Shop(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0], "<h1>Not found</h1>").encode()
            self.send_response(200 if self.path.split("?")[0] in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                svc.posts.append(json.loads(data))
            except ValueError:
                svc.posts.append({"raw": data.decode(errors="replace")})
            body = json.dumps({"id": len(svc.posts), "status": "stored"}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    for port, handler in ((svc.shop_port, Shop), (svc.api_port, Api)):
        httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        svc._stops.append(httpd.shutdown)

    class Capture:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            svc.mails.append(envelope.original_content or envelope.content)
            return "250 2.0.0 captured"

    controller = Controller(Capture(), hostname="127.0.0.1", port=svc.smtp_port)
    controller.start()
    svc._stops.append(controller.stop)
    return svc


def demo_policy(svc: DemoServices) -> dict[str, Any]:
    return {
        "allow": ["files.*", "http.request", "browser.*", "code.*", "email.*"],
        "require_approval": ["email.send"],
        "network": {"allow_hosts": [f"127.0.0.1:{svc.shop_port}", f"127.0.0.1:{svc.api_port}"]},
        "email": {"allow_recipients": ["*@example.com"]},
        "code": {"timeout_s": 60},
    }


def demo_settings(svc: DemoServices) -> dict[str, Any]:
    return {"email": {"from_address": "agent@example.com",
                      "smtp": {"host": "127.0.0.1", "port": svc.smtp_port, "security": "none"}}}


TASK = ("Read the product catalogue of our shop, compute price statistics and a bar chart, save a CSV report "
        "in the workspace, post the summary to the reporting API, and email it with the chart to "
        "team@example.com.")


def scripted_model(svc: DemoServices) -> Any:
    """A chat model that plays the agent: each turn it reads the last tool results and decides."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class ScriptedAgent(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "agent-legs-demo-script"

        def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedAgent:  # type: ignore[override]
            return self

        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            done = [m for m in messages if isinstance(m, ToolMessage)]
            step = len([m for m in messages if isinstance(m, AIMessage)])
            last = str(done[-1].content) if done else ""
            calls: list[tuple[str, dict[str, Any]]] | None = None
            text = ""
            if step == 0:
                calls = [("browser_navigate", {"url": f"{svc.shop}/catalogue"})]
            elif step == 1:
                # the prices the browser actually returned
                rows = re.findall(r"\|\s*([^|\n]+?)\s*\|\s*\$([0-9.]+)\s*\|", last)
                data = [(name, float(price)) for name, price in rows]
                code = (
                    "import os\nimport pandas as pd, matplotlib.pyplot as plt\n"
                    f"df = pd.DataFrame({data!r}, columns=['product', 'price'])\n"
                    "os.makedirs('report', exist_ok=True)\ndf.to_csv('report/prices.csv', index=False)\n"
                    "ax = df.plot.bar(x='product', y='price', legend=False, title='Prices (USD)')\n"
                    "plt.tight_layout(); plt.savefig('report/prices.png'); plt.close('all')\n"
                    "stats = df['price'].describe()[['count', 'mean', 'min', 'max']].round(2).to_dict()\n"
                    "stats"
                )
                calls = [("code_run", {"code": code})]
            elif step == 2:
                stats = re.search(r"\{.*\}", last, re.S)
                summary = stats.group(0) if stats else last[-200:]
                calls = [
                    ("files_write", {"path": "report/summary.md",
                                     "content": f"# Price report\n\nStatistics: {summary}\n\nSee prices.csv.\n"}),
                    ("http_request", {"method": "POST", "url": f"{svc.api}/reports",
                                      "json": {"title": "Price report", "statistics": summary}}),
                ]
            elif step == 3:
                calls = [
                    ("email_send", {"to": ["team@example.com"], "subject": "Price report",
                                    "body": "Hello team,\n\nthe price report is attached.\n",
                                    "attachments": ["report/prices.png", "report/prices.csv"]}),
                    # on purpose: outside the policy (cloud metadata), the guard must refuse it
                    ("http_request", {"method": "GET", "url": "http://169.254.169.254/latest/meta-data/"}),
                ]
            else:
                text = "Done: the report is in report/, posted to the API and emailed to the team."
            if calls is None:
                return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
            message = AIMessage(content="", tool_calls=[
                {"name": n, "args": a, "id": f"call_{step}_{i}", "type": "tool_call"} for i, (n, a) in enumerate(calls)])
            return ChatResult(generations=[ChatGeneration(message=message)])

    return ScriptedAgent()


@dataclass
class DemoReport:
    workspace: Path
    state_dir: Path
    posts: list[dict[str, Any]]
    mails: list[bytes]
    log: list[dict[str, Any]]
    answer: str


def run_demo(workspace: Path, state_dir: Path, model: str | None = None, console: Console | None = None) -> DemoReport:
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage

    from langchain_agent_legs import AgentLegsToolkit

    from ._legs import Legs
    from ._models import ApprovalRequest

    console = console or Console()
    svc = start_services()
    try:
        def approver(req: ApprovalRequest) -> bool:
            console.print(f"[yellow]approval[/yellow] {req.action}: {req.reason} -> [green]approved by the demo[/green]")
            return True

        with Legs(workspace=workspace, state_dir=state_dir, policy=demo_policy(svc), settings=demo_settings(svc),
                  approver=approver) as legs:
            if model:
                from langchain.chat_models import init_chat_model

                chat = init_chat_model(model)
                console.print(f"Model: [bold]{model}[/bold]")
            else:
                chat = scripted_model(svc)
                console.print("[bold yellow]No model given: a scripted model plays the agent[/bold yellow] "
                              "(it issues real tool calls and reads their real results). Use --model provider:name "
                              "with the provider's API key for a real model.")
            agent = create_agent(chat, AgentLegsToolkit(legs=legs).get_tools())
            console.print(f"[bold]Task:[/bold] {TASK}\n")
            answer = ""
            stream = agent.stream({"messages": [("user", TASK)]},  # type: ignore[call-overload]
                                  config={"configurable": {"thread_id": "demo"}}, stream_mode="updates")
            for update in stream:
                for node in update.values():
                    for msg in (node or {}).get("messages", []):
                        if isinstance(msg, AIMessage):
                            for call in msg.tool_calls:
                                console.print(f"[cyan]→ {call['name']}[/cyan] {json.dumps(call['args'])[:110]}")
                            if msg.content and not msg.tool_calls:
                                answer = str(msg.content)
                        elif isinstance(msg, ToolMessage):
                            style = "red" if msg.status == "error" else "green"
                            first = str(msg.content).strip().splitlines()[0][:110] if msg.content else ""
                            console.print(f"  [{style}]{'✗' if msg.status == 'error' else '✓'}[/{style}] {first}")
        log = [json.loads(line) for line in (state_dir / "actions.jsonl").read_text().splitlines() if line.strip()]
        report = DemoReport(workspace, state_dir, list(svc.posts), list(svc.mails), log, answer)
    finally:
        svc.stop()
    _print_summary(console, report)
    return report


def _print_summary(console: Console, report: DemoReport) -> None:
    table = Table(title="What the agent did (from the action log)")
    for col in ("action", "decision", "outcome", "ms", "target / reason"):
        table.add_column(col, overflow="fold")
    for e in report.log[-20:]:
        ok = e.get("outcome") == "ok"
        table.add_row(e.get("action", ""), e.get("decision", ""),
                      f"[green]{e['outcome']}[/green]" if ok else f"[red]{e['outcome']}[/red]",
                      f"{e.get('duration_ms', 0):.0f}", str(e.get("target") if ok else e.get("error")))
    console.print(table)
    console.print(f"\n[bold]Answer:[/bold] {report.answer}")
    console.print(f"Workspace files: {report.workspace}")
    for p in sorted(report.workspace.rglob("*")):
        if p.is_file():
            console.print(f"  {p.relative_to(report.workspace)} ({p.stat().st_size} bytes)")
    console.print(f"API received {len(report.posts)} post(s); the SMTP server captured {len(report.mails)} email(s).")
    console.print("Traces: start Jaeger (docker compose -f shared/compose.yaml up -d), set "
                  "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 and run the demo again; then open "
                  "http://localhost:16686. The local action log: agent-legs log --state-dir " + str(report.state_dir))
