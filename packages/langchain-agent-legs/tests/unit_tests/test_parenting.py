"""The LangChain parenting fix lives here, not in the core: our span under OpenInference's LangChain tool span.

The hook reaches the core two ways, both tested: the installed package's ``agent_legs_parent_spans``
entry point (a user's own ``@tool`` that never imports this package), and importing the package.
Real instrumentor, real tool calls, in a child process each (instrumenting is per process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

from agent_legs._telemetry import PARENT_HOOKS_GROUP
from langchain_agent_legs import _parenting

_PROBE = r"""
import json, sys
from pathlib import Path
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from langchain_core.tools import tool
from agent_legs import Legs

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
if sys.argv[2] == "instrumented":
    from openinference.instrumentation.langchain import LangChainInstrumentor

    LangChainInstrumentor().instrument(tracer_provider=provider)
if sys.argv[3] == "import-adapter":
    import langchain_agent_legs
base = Path(sys.argv[1])
with Legs(workspace=base / "ws", state_dir=base / "st", tracer_provider=provider) as legs:

    @tool
    def save_note(text: str) -> str:
        '''Save a note.'''
        return legs.run("files.write", {"path": "note.txt", "content": text}).output

    save_note.invoke({"name": "save_note", "args": {"text": "hi"}, "id": "call_1", "type": "tool_call"})
spans = {s.name: s for s in exporter.get_finished_spans()}
ours, theirs = spans["execute_tool files_write"], spans.get("save_note")
print(json.dumps({
    "parented": theirs is not None and ours.parent is not None and ours.parent.span_id == theirs.context.span_id,
    "root": ours.parent is None,
    "adapter_loaded": "langchain_agent_legs._parenting" in sys.modules,
}))
"""


def _probe(tmp_path, instrumented: bool, import_adapter: bool) -> dict[str, bool]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(tmp_path),
            "instrumented" if instrumented else "plain",
            "import-adapter" if import_adapter else "no-import",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_installed_package_declares_the_hook() -> None:
    (ep,) = [ep for ep in entry_points(group=PARENT_HOOKS_GROUP) if ep.name == _parenting.TRIGGER]
    assert ep.load() is _parenting.openinference_tool_span


def test_own_tool_without_importing_the_adapter_nests_through_the_entry_point(tmp_path) -> None:
    seen = _probe(tmp_path, instrumented=True, import_adapter=False)
    assert seen == {"parented": True, "root": False, "adapter_loaded": True}


def test_importing_the_adapter_registers_the_hook(tmp_path) -> None:
    seen = _probe(tmp_path, instrumented=True, import_adapter=True)
    assert seen["parented"] and seen["adapter_loaded"]


def test_the_hook_is_not_loaded_without_the_instrumentor(tmp_path) -> None:
    # Not instrumented: LangChain runs, OpenInference's module is never imported, our span is a root.
    seen = _probe(tmp_path, instrumented=False, import_adapter=False)
    assert seen == {"parented": False, "root": True, "adapter_loaded": False}


def test_no_span_outside_an_instrumented_run() -> None:
    # In this process OpenInference may not even be imported: the hook answers None, and never imports it.
    before = "openinference.instrumentation.langchain" in sys.modules
    assert _parenting.openinference_tool_span() is None
    assert ("openinference.instrumentation.langchain" in sys.modules) == before
