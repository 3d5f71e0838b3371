"""Render ``docs/benchmarks.md`` (tables) and ``docs/img/scale.svg`` (chart) from results JSON.

The page keeps its hand-written text: only the blocks between ``<!-- bench:begin NAME -->`` and
``<!-- bench:end NAME -->`` are replaced. A block the page lacks is appended at its end. Several
results files can be given: later ones win per module (re-run one module, re-render the page).
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._chart import chart
from ._format import change, mark, t, table, x
from ._format import div as _div
from ._format import get as _get
from ._format import p50 as _p50
from ._report_budget import budget
from ._report_cold import cold_rows
from ._report_runs import history, peers, previous_results
from ._report_scale import scale_block, scale_summary_rows

CHART = Path("img/scale.svg")  # relative to the page's directory
BLOCK = re.compile(r"<!-- bench:begin (?P<name>[\w-]+) -->\n.*?<!-- bench:end (?P=name) -->", re.DOTALL)


# -- the summary: every target, ours against each peer -------------------------------------------
def _summary(res: dict[str, Any], prev: dict[str, Any] | None = None) -> str:
    """Every target; with ``prev`` (module -> result of the previous run), that run's figure and ratio per row."""
    rows = _summary_rows(res)
    header = ["family", "what", "Agent Legs", "peer(s)", "ratio", "target", "met"]
    if prev is None:
        return table(header, rows)
    before_rows = _summary_rows(prev)
    exact = {(r[0], r[1]): r for r in before_rows}
    loose = {(r[0], r[1].split(" (")[0]): r for r in before_rows}  # rows whose label carries figures
    for r in rows:
        b = exact.get((r[0], r[1])) or loose.get((r[0], r[1].split(" (")[0]))
        r.append("—" if b is None or not b[2].strip("—/ ") else f"{b[2]} ({b[4]})" if b[4] != "—" else b[2])
    return table([*header, "previous run (ratio)"], rows)


def _summary_rows(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(family: str, what: str, ours: str, peer: str, ratio: str, target: str, met: bool | None) -> None:
        rows.append([family, what, ours, peer, ratio, target, mark(met)])

    core = res.get("core", {})
    pol = _p50(core, "policy_decision_cached")
    row("core", "policy decision (cached) p50", t(pol), "—", "—", "≤ 20 µs", None if pol is None else pol <= 20)
    run_hop = _p50(core, "overhead_budget", "end_to_end", "run_hop")
    run_inline = _p50(core, "overhead_budget", "end_to_end", "run_inline")
    row(
        "core",
        "no-op action, `run()` p50: via runtime thread / inline",
        f"{t(run_hop)} / {t(run_inline)}",
        "—",
        "—",
        "reported",
        None,
    )
    imports = res.get("imports", {})
    imp, lc_imp = _p50(imports, "import_agent_legs"), _p50(imports, "langchain_core_tools")
    legs_imp, cat = _p50(imports, "from_agent_legs_import_legs"), _p50(imports, "legs_catalogue")
    row(
        "core",
        "`import agent_legs`, whole process p50 (bare `python`: "
        f"{t(_p50(imports, 'python_bare'))}; `from agent_legs import Legs` {t(legs_imp)}; `Legs()` built {t(cat)})",
        t(imp),
        f"`import langchain_core.tools` {t(lc_imp)}",
        x(_div(imp, lc_imp)),
        "≤ 250 ms",
        None if imp is None else imp <= 250_000,
    )

    files = res.get("files", {})
    for op, lc, plain, target, limit in (
        ("read", "langchain_read_file", "plain_python_read", "≤ 1× LangChain", 1.0),
        ("write", "langchain_write_file", "plain_python_write", "≤ 2× LangChain (we fsync)", 2.0),
    ):
        ours = _p50(files, op, f"agent_legs_files_{op}")
        theirs = _p50(files, op, lc)
        r = _div(ours, theirs)
        row(
            "files",
            f"`files.{op}` 1.5 KB p50",
            t(ours),
            f"LangChain `{lc.split('_', 1)[1]}` {t(theirs)}; plain Python {t(_p50(files, op, plain))}",
            x(r),
            target,
            None if r is None else r <= limit,
        )

    http = res.get("http", {})
    conc = _get(http, "concurrent_50_req_s") or {}
    lc_c, raw_c = conc.get("langchain_requests_get"), conc.get("raw_aiohttp")
    for key, setup in (("agent_legs", "default"), ("agent_legs_spans_recorded", "spans through a BatchSpanProcessor")):
        ours, raw = _p50(http, "sequential", key), _p50(http, "sequential", "raw_aiohttp")
        r = _div(ours, raw)
        row(
            "http",
            f"`http.request` 1 KB sequential p50 ({setup})",
            t(ours),
            f"raw aiohttp `ClientSession` {t(raw)}",
            x(r),
            "≤ 1.5× raw aiohttp",
            None if r is None else r <= 1.5,
        )
        ours_c = conc.get(key)
        r_lc, r_raw = _div(ours_c, lc_c), _div(ours_c, raw_c)
        row(
            "http",
            f"`http.request` 50 concurrent, req/s ({setup})",
            f"{ours_c:,.0f}" if ours_c else "—",
            f"LangChain `RequestsGetTool` {lc_c:,.0f}; raw aiohttp {raw_c:,.0f}" if lc_c and raw_c else "—",
            f"{x(r_lc)} / {x(r_raw)}",
            "≥ 2× LangChain and ≥ 0.5× raw aiohttp",
            None if r_lc is None or r_raw is None else r_lc >= 2 and r_raw >= 0.5,
        )
    # The spans-recorded rows again, against peers that record the same two spans (the SDK's price on both
    # sides: ``bench/_contract_spans.py``); the peer's own ratio to raw aiohttp is the SDK's floor.
    ours, raw = _p50(http, "sequential", "agent_legs_spans_recorded"), _p50(http, "sequential", "raw_aiohttp")
    raw_s = _p50(http, "sequential", "raw_aiohttp_same_spans")
    if raw_s is not None:
        r = _div(ours, raw_s)
        row(
            "http",
            "`http.request` 1 KB sequential p50 with spans recorded, against a peer recording the same two spans "
            f"(that peer alone is {x(_div(raw_s, raw))} raw aiohttp: the SDK's price)",
            t(ours),
            f"raw aiohttp `ClientSession` in the same spans {t(raw_s)}",
            x(r),
            "≤ 1.5× raw aiohttp",
            None if r is None else r <= 1.5,
        )
    ours_c, lc_s, raw_cs = (
        conc.get("agent_legs_spans_recorded"),
        conc.get("langchain_requests_get_same_spans"),
        conc.get("raw_aiohttp_same_spans"),
    )
    if lc_s and raw_cs:
        r_lc, r_raw = _div(ours_c, lc_s), _div(ours_c, raw_cs)
        row(
            "http",
            "`http.request` 50 concurrent, req/s, with spans recorded, against peers recording the same two spans "
            f"(raw aiohttp in them alone: {x(_div(raw_cs, raw_c))} its throughput without)",
            f"{ours_c:,.0f}" if ours_c else "—",
            f"LangChain `RequestsGetTool` in the same spans {lc_s:,.0f}; raw aiohttp in them {raw_cs:,.0f}",
            f"{x(r_lc)} / {x(r_raw)}",
            "≥ 2× LangChain and ≥ 0.5× raw aiohttp",
            None if r_lc is None or r_raw is None else r_lc >= 2 and r_raw >= 0.5,
        )

    code = res.get("code", {})
    warm = _p50(code, "agent_legs", "warm_print_1_plus_1")
    peers = _get(code, "peers") or {}
    peer_txt, ratios = [], []
    for name, label in (
        ("autogen_ext_DockerCommandLineCodeExecutor", "autogen-ext"),
        ("llm_sandbox_SandboxSession", "llm-sandbox"),
    ):
        p = _p50(peers, name, "warm_print_1_plus_1")
        peer_txt.append(f"{label} {t(p)}" if p else f"{label}: {_get(peers, name, 'error') or 'not measured'}")
        ratios.append(_div(p, warm))
    fast = [f"{r:.0f}× faster" if r else "—" for r in ratios]
    ok = None if warm is None else warm <= 10_000 and all(r is not None and r >= 5 for r in ratios)
    row(
        "code",
        'warm `code.run("print(1+1)")` p50',
        t(warm),
        "; ".join(peer_txt),
        " / ".join(fast),
        "≤ 10 ms and ≥ 5× faster than each peer",
        ok,
    )
    first = _p50(code, "agent_legs", "new_session_first_call_pooled")
    starts = [
        f"{label} start {t(_get(peers, n, 'start_ms') * 1000)}"
        for n, label in (
            ("autogen_ext_DockerCommandLineCodeExecutor", "autogen-ext"),
            ("llm_sandbox_SandboxSession", "llm-sandbox"),
        )
        if _get(peers, n, "start_ms") is not None
    ]
    row(
        "code",
        "new sandbox session, first call p50 (warm pool)",
        t(first),
        "; ".join(starts) or "—",
        "—",
        "≤ 80 ms",
        None if first is None else first <= 80_000,
    )
    close = _p50(code, "agent_legs", "session_close", key="p95_us")
    stops = [
        f"{label} stop {t(_get(peers, n, 'stop_ms') * 1000)}"
        for n, label in (
            ("autogen_ext_DockerCommandLineCodeExecutor", "autogen-ext"),
            ("llm_sandbox_SandboxSession", "llm-sandbox"),
        )
        if _get(peers, n, "stop_ms") is not None
    ]
    row(
        "code",
        "sandbox session close p95",
        t(close),
        "; ".join(stops) or "—",
        "—",
        "≤ 1 s",
        None if close is None else close <= 1_000_000,
    )

    for cold in cold_rows(res):
        row(*cold)

    br = _get(res, "browser", "navigate_plus_content") or {}
    ours = _p50(br, "agent_legs")
    raw, lc, li = _p50(br, "raw_playwright"), _p50(br, "langchain"), _p50(br, "llama_index")
    r_raw, r_lc, r_li = _div(ours, raw), _div(ours, lc), _div(ours, li)
    ok = None if None in (r_raw, r_lc, r_li) else (r_raw or 0) <= 1.1 and (r_lc or 0) <= 1 and (r_li or 0) <= 1
    row(
        "browser",
        "`browser.navigate` + `browser.content`, 50 KB page p50",
        t(ours),
        f"raw Playwright {t(raw)}; LangChain {t(lc)}; llama-index {t(li)}",
        f"{x(r_raw)} / {x(r_lc)} / {x(r_li)}",
        "≤ 1.1× raw Playwright, ≤ 1× each peer",
        ok,
    )

    for key, what, same in (
        ("click_plus_content", "`browser.click` + `browser.content` p50", "the same wait"),
        ("gallery_repeat_visit", "repeat `browser.navigate` to a page with 40 cached images p50", "goto + read"),
    ):
        case = _get(res, "browser", key) or {}
        if case:
            ours = _p50(case, "agent_legs")
            raw, lc, li = _p50(case, "raw_playwright"), _p50(case, "langchain"), _p50(case, "llama_index")
            goto_only = _p50(case, "raw_playwright_goto_only")
            extra = f" (goto alone {t(goto_only)})" if goto_only is not None else ""
            r_raw = _div(ours, raw)
            row(
                "browser",
                what,
                t(ours),
                f"raw Playwright, {same} {t(raw)}{extra}; LangChain {t(lc)}; llama-index {t(li)}",
                f"{x(r_raw)} / {x(_div(ours, lc))} / {x(_div(ours, li))}",
                f"≤ 1.05× raw Playwright ({same})",
                None if r_raw is None else r_raw <= 1.05,
            )

    email = res.get("email", {})
    ours, raw = _p50(email, "send", "plain", "agent_legs"), _p50(email, "send", "plain", "raw_aiosmtplib")
    row(
        "email",
        "`email.send` to local SMTP p50",
        t(ours),
        f"raw aiosmtplib {t(raw)}",
        x(_div(ours, raw)),
        "≤ 15 ms",
        None if ours is None else ours <= 15_000,
    )
    ours, raw = _p50(email, "list", "all", "agent_legs"), _p50(email, "list", "all", "raw_imaplib")
    row(
        "email",
        "`email.list` 20 of 1,000 (Dovecot, TLS) p50",
        t(ours),
        f"raw imaplib {t(raw)}",
        x(_div(ours, raw)),
        "reported",
        None,
    )

    rows.extend(scale_summary_rows(res))
    return rows


# -- per family: every timing group the module reported -------------------------------------------
def _is_summary(v: Any) -> bool:
    return isinstance(v, dict) and "p50_us" in v and "p95_us" in v


_SKIP = ("targets", "notes", "wall_s", "target", "summary", "concurrent_50_rounds")


def _walk(
    obj: Any, path: str, groups: list[tuple[str, dict[str, Any]]], singles: list[tuple[str, Any]], scalars: list[tuple[str, Any]]
) -> None:
    if not isinstance(obj, dict):
        return
    summaries = {k: v for k, v in obj.items() if _is_summary(v)}
    if len(summaries) >= 2:
        groups.append((path, summaries))
    else:
        singles += [(f"{path} / {k}".strip(" /"), v) for k, v in summaries.items()]
    for k, v in obj.items():
        if k in summaries or k in _SKIP or k.endswith(("p50_ms", "p95_ms")):
            continue  # shown elsewhere (targets, notes) or copies of the summaries in other units
        sub = f"{path} / {k}".strip(" /")
        if isinstance(v, dict):
            _walk(v, sub, groups, singles, scalars)
        elif isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) < 80):
            scalars.append((sub, v))
        elif isinstance(v, list) and len(v) <= 5 and all(isinstance(i, int | float | str) for i in v):
            scalars.append((sub, json.dumps(v)))


def _family(name: str, result: dict[str, Any], prev: dict[str, Any] | None = None) -> str:
    """Every timing group of a module; with ``prev`` (the module's previous result), each case's change."""
    if "error" in result:
        return f"**{name}: not measured** — `{result['error']}`"
    parts: list[str] = []
    groups: list[tuple[str, dict[str, Any]]] = []
    singles: list[tuple[str, Any]] = []
    scalars: list[tuple[str, Any]] = []
    _walk(result, "", groups, singles, scalars)
    before: dict[str, dict[str, Any]] = {}
    if prev is not None:
        prev_groups: list[tuple[str, dict[str, Any]]] = []
        _walk(prev, "", prev_groups, [], [])
        before = dict(prev_groups)
    for path, summaries in groups:
        base_key = next((k for k in summaries if k.startswith("agent_legs")), None)
        base = summaries[base_key]["p50_us"] if base_key else None
        rows = [
            [f"`{k}`", t(v["p50_us"]), t(v["p95_us"]), str(v.get("n", "")), x(v["p50_us"] / base) if base else "—"]
            + ([change(v["p50_us"], _p50(before.get(path, {}), k))] if prev is not None else [])
            for k, v in summaries.items()
        ]
        header = ["case", "p50", "p95", "n", "p50 / Agent Legs"] + (["p50 vs previous run"] if prev is not None else [])
        parts.append(f"*{path or name}*\n\n" + table(header, rows))
    if singles:
        rows = [[f"`{p}`", t(v["p50_us"]), t(v["p95_us"]), str(v.get("n", ""))] for p, v in singles]
        parts.append(table(["measurement", "p50", "p95", "n"], rows))
    if scalars:
        rows = [[f"`{p}`", f"{v:,}" if isinstance(v, int | float) and not isinstance(v, bool) else f"`{v}`"] for p, v in scalars]
        parts.append(table(["value", ""], rows))
    targets = result.get("targets")
    if isinstance(targets, dict) and targets:
        parts.append("Targets: " + "; ".join(f"{k} {mark(bool(v))}" for k, v in targets.items()))
    if isinstance(result.get("notes"), str):
        parts.append(f"*Measured:* {result['notes']}")
    return "\n\n".join(parts)


# -- core: the overhead budget --------------------------------------------------------------------
def _core(core: dict[str, Any]) -> str:
    if "error" in core:
        return f"**core: not measured** — `{core['error']}`"
    ob = core.get("overhead_budget")
    if not ob:
        return _family("core", core)
    budget: dict[str, float] = ob["budget_us"]
    execute = ob["execute_in_runtime_loop_p50_us"]
    rows = [[part, t(us), f"{us / execute:.0%}" if execute else "—"] for part, us in budget.items()]
    rows.append(["**sum of the steps**", f"**{t(ob['sum_of_parts_us'])}**", ""])
    rows.append(
        [
            "**in-loop pipeline (`CallPipeline.execute`) end to end**",
            f"**{t(execute)}**",
            f"100% (unaccounted {t(ob['unaccounted_in_loop_us'])})",
        ]
    )
    exported = _p50(ob, "parts", "span_and_log_line_batch_processor")
    both = _p50(ob, "parts", "span_and_log_line")
    if exported is not None and both is not None:
        rows.append(["span + both log lines (default provider)", t(both), ""])
        rows.append(
            ["span + both log lines when spans are exported (recording provider, batch processor), instead", t(exported), ""]
        )
    whole = ob["end_to_end"]
    for part, us in (ob.get("outside_us") or {}).items():
        rows.append([f"outside the pipeline: {part}", t(us), ""])
    rows += [
        ["`run()` via the runtime thread (`bench.hop`)", t(whole["run_hop"]["p50_us"]), ""],
        ["`run()` inline (`bench.inline`, as `files.*`)", t(whole["run_inline"]["p50_us"]), ""],
        ["`arun()` via the runtime thread", t(whole["arun_hop"]["p50_us"]), ""],
        ["`arun()` inline (as `files.*`, `http.request`)", t(whole["arun_inline"]["p50_us"]), ""],
    ]
    parts = ob["parts"]
    detail = [[f"`{k}`", t(v["p50_us"]), t(v["p95_us"])] for k, v in parts.items()]
    situ = ob.get("in_situ")
    inside = ""
    if situ:
        w = situ["whole_p50_us"]
        srows = [[k, t(v), f"{v / w:.0%}" if w else "—"] for k, v in situ["steps_us"].items()]
        srows.append(
            [
                "the pipeline's own code (every step stubbed)",
                t(situ["pipeline_own_code_us"]),
                f"{situ['pipeline_own_code_us'] / w:.0%}" if w else "—",
            ]
        )
        srows.append(["remainder", t(situ["remainder_us"]), f"{situ['remainder_us'] / w:.0%}" if w else "—"])
        srows.append(["**in-loop pipeline, same alternating run**", f"**{t(w)}**", "100%"])
        inside = (
            "\n\nEach step inside the pipeline (`execute` timed whole, alternating with runs where that step is "
            "a stub returning what it would: the drop is the step's cost in place):\n\n"
            + table(["step", "p50 drop when stubbed", "share"], srows)
        )
    return (
        table(["step of one no-op action", "p50", "share of the in-loop pipeline"], rows)
        + inside
        + "\n\nEvery part, timed alone:\n\n"
        + table(["part", "p50", "p95"], detail)
        + f"\n\nPolicy decision, uncached with 21 rules: {t(_p50(core, 'policy_decision_uncached_21_rules'))}."
    )


# -- scale ----------------------------------------------------------------------------------------
def _dispatch(result: dict[str, Any]) -> str:
    """Inline vs the runtime hop, per action and call style (``bench_dispatch``)."""
    if "error" in result:
        return f"**dispatch: not measured** — `{result['error']}`"
    cases = result["cases"]
    rows = []
    for action, key in (("files.read", "files_read"), ("http.request", "http_request")):
        for call in ("run", "arun"):
            inline, hop = cases[f"{key}_{call}_inline"], cases[f"{key}_{call}_hop"]
            saved = hop["p50_us"] - inline["p50_us"]
            share = f"{saved / hop['p50_us']:.0%}"
            rows.append([f"`{action}` `{call}()`", t(inline["p50_us"]), t(hop["p50_us"]), t(saved), share])
    return table(["call", "inline p50", "via the runtime thread p50", "saved", "share"], rows)


# -- the page -------------------------------------------------------------------------------------
def _meta(report: dict[str, Any], sources: list[Path]) -> str:
    m = report.get("machine", {})
    runs = []
    for src in sources:
        data = json.loads(src.read_text())
        walls = ", ".join(f"{k} {v.get('wall_s', '?')} s" for k, v in data.get("results", {}).items())
        runs.append(
            f"`{src}`: measured {data.get('time', '?')} at commit {data.get('git', '?')}, "
            f"{data.get('iterations', '?')} iterations"
            + (" (**smoke**)" if data.get("smoke") else "")
            + f"; time per module: {walls}"
            + (f" ({data['note']})" if data.get("note") else "")
        )
    smoke = (
        '\n\n!!! warning "Smoke run"\n    Some of these figures come from a smoke run (few iterations): '
        "they check the harness, not the numbers. Run `python -m bench` for figures worth quoting.\n"
        if any(json.loads(s.read_text()).get("smoke") for s in sources)
        else ""
    )
    return (
        f"Generated by `python -m bench --report` on {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, "
        f"Python {m.get('python', '?')}, from:\n\n" + "\n".join(f"- {r}" for r in runs) + smoke
    )


def merge(paths: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in paths:
        data = json.loads(p.read_text())
        results = {**merged.get("results", {}), **data.get("results", {})}
        peer_modules = {**(merged.get("peers") or {}).get("modules", {}), **(data.get("peers") or {}).get("modules", {})}
        peer_info = {**(merged.get("peers") or {}), **(data.get("peers") or {}), "modules": peer_modules}
        merged = {**merged, **data, "results": results, "peers": peer_info}
    return merged


def _keep_rows(old_block: str, new_table: str, families: set[str]) -> str:
    """The new summary's rows of ``families``, in the page's order, the page's rows of the others (cells
    the page lacks, such as the previous run's, shown as "—")."""
    new_lines = new_table.splitlines()
    header, sep, new_rows = new_lines[0], new_lines[1], new_lines[2:]
    width = header.count("|") - 1
    out, placed = [header, sep], False
    lines = [ln for ln in old_block.splitlines()[3:-1] if ln.startswith("|")]  # past marker, header, separator

    def label(row: str) -> str:
        return row.split("|")[2].strip().split(" (")[0]

    # a row of a module not re-run (imports, in the core family) renders empty: the page's is kept, if any
    kept = {label(r) for r in new_rows if r.split("|")[3].strip() == "—"}
    new_rows = [r for r in new_rows if label(r) not in kept]
    for line in lines:
        family = "" if label(line) in kept else line.split("|")[1].strip()
        if family in families:
            if not placed:
                out += [r for r in new_rows if r.split("|")[1].strip() in families]
                placed = True
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out.append("| " + " | ".join(cells + ["—"] * (width - len(cells))) + " |")
    if not placed:
        out += [r for r in new_rows if r.split("|")[1].strip() in families]
    return "\n".join(out)


def render(page: Path, sources: list[Path], only: list[str] | None = None) -> bool:
    """Rewrite the page's blocks; False when a block could not be rendered (its error is shown there).

    ``only`` (modules): rewrite just their blocks, the summary's rows of their families (the other
    rows are kept as the page has them), the peers and the history; the rest of the page stays."""
    report = merge(sources)
    res: dict[str, Any] = report.get("results", {})
    prev, used = previous_results(sources)
    if "scale" in res and "error" not in res["scale"]:
        chart(res["scale"], page.parent / CHART)
    chart_path = CHART if (page.parent / CHART).exists() else None
    blocks: dict[str, Callable[[], str]] = {
        "meta": lambda: _meta(report, sources),
        "summary": lambda: _summary(res, prev or None),
        "peers": lambda: peers(report),
        "budget": lambda: budget(res),
        "history": lambda: history(used),
        "core": lambda: _core(res.get("core", {"error": "not in the results"})),
        "dispatch": lambda: _dispatch(res.get("dispatch", {"error": "not in the results"})),
        "scale": lambda: scale_block(res.get("scale", {"error": "not in the results"}), chart_path),
    }
    for fam in ("files", "http", "code", "cold", "browser", "email"):
        blocks[fam] = lambda f=fam: _family(f, res.get(f, {"error": "not in the results"}), prev.get(f))  # type: ignore[misc]
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    if only:
        old = {m.group("name"): m.group(0) for m in BLOCK.finditer(text)}
        whole_summary = blocks["summary"]
        keep = (*only, "peers", "history", *(["budget"] if {"core", "flows", "budget"} & set(only) else []))
        blocks = {k: v for k, v in blocks.items() if k in keep}
        blocks["summary"] = lambda: _keep_rows(old.get("summary", ""), whole_summary(), set(only))
        old_meta = "\n".join(old.get("meta", "").splitlines()[1:-1])  # the page's sources stay listed
        new_meta = _meta(report, sources).split("from:\n\n", 1)[-1]
        blocks["meta"] = lambda: f"{old_meta}\n\nRe-rendered with `--only {','.join(only)}` from:\n\n{new_meta}"
    seen: set[str] = set()
    failed: list[str] = []

    def body(name: str) -> str:
        try:
            return blocks[name]().rstrip()
        except Exception as exc:  # one odd module must not cost the rest of the page
            traceback.print_exc()
            failed.append(name)
            return f"**{name}: could not be rendered** — `{type(exc).__name__}: {exc}`"

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        seen.add(name)
        if name not in blocks:
            return m.group(0)
        return f"<!-- bench:begin {name} -->\n{body(name)}\n<!-- bench:end {name} -->"

    text = BLOCK.sub(fill, text)
    for name in blocks:
        if name not in seen:
            text = text.rstrip("\n") + f"\n\n## {name}\n\n<!-- bench:begin {name} -->\n{body(name)}\n<!-- bench:end {name} -->\n"
    page.write_text(text)
    print(
        f"bench: wrote {page}"
        + (f" and {page.parent / CHART}" if chart_path else "")
        + (f"; could not render {failed}" if failed else "")
    )
    return not failed
