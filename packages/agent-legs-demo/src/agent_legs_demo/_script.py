"""The scripted model: plays the agent when no real model is given.

It is not a recording. Each turn it reads the real tool results so far (the ``ActionResult`` the
LangChain tools return as artifacts) and decides the next tool calls the way a careful agent would:
it parses the prices the browser really returned, uses the stock file the email really saved, and
when a family is unavailable (no Docker, no Chromium) it reads the structured error and works
around it — the catalogue over plain HTTP instead of the browser, statistics computed itself and
the CSV written with files_write instead of the sandbox.
"""

from __future__ import annotations

import json
import re
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from ._services import METADATA_URL, RECIPIENT

__all__ = ["METADATA_URL", "RECIPIENT", "Plan", "ScriptedAgent", "parse_prices"]

_PRICE_ROW = re.compile(r"^\|\s*\[?([^|\]\n]+?)\]?(?:\([^)]*\))?\s*\|\s*\$\s*([0-9][0-9,]*\.?[0-9]*)\s*\|", re.MULTILINE)


def parse_prices(markdown: str) -> list[tuple[str, float]]:
    """Product rows of the catalogue table as the browser (or http.request) rendered it."""
    return [
        (name.strip(), float(price.replace(",", "")))
        for name, price in _PRICE_ROW.findall(markdown)
        if name.strip().lower() != "product"
    ]


@dataclass
class Done:
    """One finished tool call, as the model sees it."""

    name: str
    args: dict[str, Any]
    ok: bool
    content: str
    result: dict[str, Any] | None  # the ActionResult (model_dump) the tool returned as artifact

    @property
    def data(self) -> dict[str, Any]:
        return (self.result or {}).get("data") or {}

    @property
    def error(self) -> str:
        err = (self.result or {}).get("error") or {}
        return f"{err.get('type')}: {err.get('message')}" if err else self.content.splitlines()[0][:200]


def history(messages: Sequence[BaseMessage]) -> list[Done]:
    calls = {tc["id"]: tc for m in messages if isinstance(m, AIMessage) for tc in m.tool_calls}
    out = []
    for m in messages:
        if isinstance(m, ToolMessage) and m.tool_call_id in calls:
            tc = calls[m.tool_call_id]
            result = m.artifact if isinstance(m.artifact, dict) else None
            ok = m.status != "error" and (result is None or bool(result.get("ok", True)))
            out.append(Done(tc["name"], dict(tc["args"]), ok, str(m.content), result))
    return out


def sandbox_code(prices: list[tuple[str, float]], stock_path: str | None) -> str:
    stock = (
        (
            f"stock = pd.read_csv({stock_path!r})\n"
            "df = df.merge(stock, on='product', how='left')\n"
            "df['value'] = (df['price'] * df['units']).round(2)\n"
        )
        if stock_path
        else ""
    )
    return (
        "import json, os\n"
        "import pandas as pd\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n\n"
        f"df = pd.DataFrame({prices!r}, columns=['product', 'price'])\n"
        f"{stock}"
        "os.makedirs('report', exist_ok=True)\n"
        "df.to_csv('report/prices.csv', index=False)\n"
        "ax = df.plot.bar(x='product', y='price', legend=False, title='Catalogue prices (USD)', color='#3b73b9')\n"
        "ax.set_xlabel(''); ax.set_ylabel('USD')\n"
        "plt.xticks(rotation=30, ha='right'); plt.tight_layout()\n"
        "plt.savefig('report/prices.png', dpi=120); plt.close('all')\n"
        "stats = {'products': int(len(df)), 'mean_price': round(float(df.price.mean()), 2),\n"
        "         'median_price': round(float(df.price.median()), 2),\n"
        "         'min_price': float(df.price.min()), 'max_price': float(df.price.max()),\n"
        "         'cheapest': df.loc[df.price.idxmin(), 'product'], 'priciest': df.loc[df.price.idxmax(), 'product']}\n"
        "if 'value' in df:\n"
        "    stats['stock_units'] = int(df.units.sum()); stats['stock_value'] = round(float(df.value.sum()), 2)\n"
        "print(json.dumps(stats))\n"
    )


def own_statistics(prices: list[tuple[str, float]]) -> dict[str, Any]:
    """What the agent computes itself when the sandbox is unavailable."""
    values = [p for _, p in prices]
    return {
        "products": len(values),
        "mean_price": round(statistics.fmean(values), 2),
        "median_price": round(statistics.median(values), 2),
        "min_price": min(values),
        "max_price": max(values),
        "cheapest": min(prices, key=lambda r: r[1])[0],
        "priciest": max(prices, key=lambda r: r[1])[0],
    }


def summary_text(stats: dict[str, Any]) -> str:
    text = (
        f"{stats['products']} products, mean price ${stats['mean_price']:.2f} (median "
        f"${stats['median_price']:.2f}), from ${stats['min_price']:.2f} ({stats['cheapest']}) to "
        f"${stats['max_price']:.2f} ({stats['priciest']})."
    )
    if "stock_value" in stats:
        text += f" {stats['stock_units']} units in stock, worth ${stats['stock_value']:,.2f}."
    return text


class Plan:
    """Decides the next step from what happened so far. Pure: no state between turns."""

    def __init__(self, shop: str, api: str, inbox: bool, tools: set[str]) -> None:
        self.shop, self.api, self.inbox, self.tools = shop, api, inbox, tools

    def next(self, h: list[Done]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        def last(name: str, **match: Any) -> Done | None:
            for d in reversed(h):
                if d.name == name and all(d.args.get(k) == v for k, v in match.items()):
                    return d
            return None

        notes: list[str] = []
        # 1. the supplier's stock list, from the mailbox
        stock_path: str | None = None
        if self.inbox and "email_list" in self.tools:
            listed = last("email_list")
            if listed is None:
                return (
                    "First I check the inbox for the supplier's stock list.",
                    [("email_list", {"query": "subject:stock", "limit": 5})],
                )
            messages = listed.data.get("messages") or []
            if listed.ok and messages and "email_read" in self.tools:
                read = last("email_read")
                if read is None:
                    return (
                        f'Found "{messages[0].get("subject")}"; I read it and save its attachment.',
                        [("email_read", {"id": str(messages[0]["id"]), "save_attachments": True})],
                    )
                saved = [a.get("saved") for a in read.data.get("attachments", []) if a.get("saved")]
                stock_path = next((s for s in saved if str(s).endswith(".csv")), None)
                if not read.ok:
                    notes.append(f"could not read the supplier's email ({read.error})")
            elif not listed.ok:
                notes.append(f"could not list the inbox ({listed.error})")

        # 2. the catalogue, in the browser (over plain HTTP if the browser is unavailable)
        prices: list[tuple[str, float]] = []
        if "browser_navigate" in self.tools:
            nav = last("browser_navigate")
            if nav is None:
                return ("Now the shop's catalogue, in the browser.", [("browser_navigate", {"url": f"{self.shop}/"})])
            click = last("browser_click")
            if nav.ok and click is None and "browser_click" in self.tools:
                return ("The home page links to the catalogue; I follow it.", [("browser_click", {"text": "Catalogue"})])
            for d in (click, nav):
                if d is not None and d.ok and not prices:
                    prices = parse_prices(d.content)
        catalogue_url = f"{self.shop}/catalogue"
        if not prices:
            fetched = last("http_request", url=catalogue_url)
            if fetched is None:
                failed = last("browser_click") or last("browser_navigate")
                why = f"the browser failed ({failed.error})" if failed and not failed.ok else "no browser"
                return (
                    f"I could not read the catalogue in the browser: {why}. I fetch the page over HTTP instead.",
                    [("http_request", {"method": "GET", "url": catalogue_url})],
                )
            prices = parse_prices(fetched.content)
            notes.append("read the catalogue over HTTP because the browser was unavailable")
        if not prices:
            return ("I could not read any prices from the catalogue, so I stop here.", [])

        # 3. statistics, chart and CSV in the sandbox (myself, without a chart, if it is unavailable)
        run = last("code_run") if "code_run" in self.tools else None
        if run is None and "code_run" in self.tools:
            return (
                f"I read {len(prices)} products. The sandbox computes the statistics, the CSV and a chart"
                + (f", joined with the stock list in {stock_path}." if stock_path else "."),
                [("code_run", {"code": sandbox_code(prices, stock_path)})],
            )
        stats: dict[str, Any] | None = None
        chart = False
        if run is not None and run.ok and not run.data.get("error"):
            for line in reversed(str(run.data.get("stdout", "")).splitlines()):
                if line.startswith("{"):
                    stats = json.loads(line)
                    break
            chart = any(a.get("path") == "report/prices.png" for a in (run.result or {}).get("artifacts", []))
        if stats is None:
            if run is None:
                why = "no code_run tool"
            elif not run.ok:
                why = run.error
            else:  # the code ran but raised, e.g. a library missing from a custom image
                lines = str(run.data.get("error") or "it printed no statistics").strip().splitlines()
                why = lines[-1] if lines else "it printed no statistics"
            stats = own_statistics(prices)
            if last("files_write", path="report/prices.csv") is None:
                csv = "product,price\n" + "".join(f"{n},{p}\n" for n, p in prices)
                return (
                    (
                        f"The sandbox did not work ({why}). I compute the statistics myself and write the CSV "
                        "with files_write (no chart this time)."
                    ),
                    [("files_write", {"path": "report/prices.csv", "content": csv})],
                )
            notes.append("computed the statistics without the sandbox (no chart)")

        # 4. the summary: a file in the workspace and a post to the reporting API
        summary = summary_text(stats)
        if last("files_write", path="report/summary.md") is None:
            return (
                "Statistics ready. I save a summary and post it to the reporting API.",
                [
                    (
                        "files_write",
                        {
                            "path": "report/summary.md",
                            "content": f"# Price report\n\n{summary}\n\nData: report/prices.csv"
                            + ("\nChart: report/prices.png\n" if chart else "\n"),
                        },
                    ),
                    (
                        "http_request",
                        {
                            "method": "POST",
                            "url": f"{self.api}/reports",
                            "json": {"title": "Price report", "summary": summary, "statistics": stats},
                        },
                    ),
                ],
            )

        # 5. email it with the chart; and one request the policy must refuse
        if last("email_send") is None and "email_send" in self.tools:
            attachments = (["report/prices.png"] if chart else []) + ["report/prices.csv"]
            return (
                (
                    "I email the report to the team. To show the egress guard, I also try the cloud metadata "
                    "service, which the policy must refuse."
                ),
                [
                    (
                        "email_send",
                        {
                            "to": [RECIPIENT],
                            "subject": "Price report",
                            "body": f"Hello team,\n\n{summary}\n\nThe CSV"
                            + (" and a chart are" if chart else " is")
                            + " attached.\n\n-- your agent\n",
                            "attachments": attachments,
                        },
                    ),
                    ("http_request", {"method": "GET", "url": METADATA_URL}),
                ],
            )

        # 6. the answer
        posted = last("http_request", method="POST")
        sent = last("email_send")
        denied = last("http_request", url=METADATA_URL)
        parts = [f"Price report done: {summary}"]
        parts.append("Saved report/prices.csv" + (" and report/prices.png" if chart else "") + " and report/summary.md.")
        parts.append(
            "Posted to the reporting API."
            if posted and posted.ok
            else f"Posting to the API failed ({posted.error})."
            if posted
            else ""
        )
        parts.append(f"Emailed it to {RECIPIENT}." if sent and sent.ok else f"Emailing failed ({sent.error})." if sent else "")
        if denied is not None:
            parts.append(
                "The request to the cloud metadata service was refused by the policy, as it should be."
                if not denied.ok
                else "Warning: the metadata request was NOT refused."
            )
        if notes:
            parts.append("Notes: " + "; ".join(notes) + ".")
        return " ".join(p for p in parts if p), []


class ScriptedAgent(BaseChatModel):
    """A LangChain chat model whose turns come from ``Plan`` (real tool calls, real results)."""

    shop: str
    api: str
    inbox: bool = False
    tool_names: list[str] = Field(default_factory=list)
    run_id: str = ""

    @property
    def _llm_type(self) -> str:
        return "agent-legs-demo-script"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedAgent:  # type: ignore[override]
        names = [getattr(t, "name", None) or (t.get("name") if isinstance(t, dict) else str(t)) for t in tools]
        return self.model_copy(update={"tool_names": [str(n) for n in names]})

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        plan = Plan(self.shop, self.api, self.inbox, set(self.tool_names))
        text, calls = plan.next(history(messages))
        turn = sum(isinstance(m, AIMessage) for m in messages)
        run_id = self.run_id or uuid.uuid4().hex[:8]
        # unique ids per run: the id is the idempotency key of email_send across runs
        message = AIMessage(
            content=text,
            tool_calls=[
                {"name": name, "args": args, "id": f"call_{run_id}_{turn}_{i}", "type": "tool_call"}
                for i, (name, args) in enumerate(calls)
            ],
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
