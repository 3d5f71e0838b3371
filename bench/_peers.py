"""Who each benchmark module measures Agent Legs against: package, class and, at run time, version.

``PEERS`` names, per module, each peer case of its results (the key it has in the module's JSON), the
distribution that provides it and the class or function called. ``describe(modules)`` adds the
installed version of each distribution (``importlib.metadata``, read when the run happens, so the
JSON says what was really measured; ``not installed`` when it is missing) and of Agent Legs itself.
``python -m bench`` stores it under ``"peers"``; ``--report`` renders it.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

__all__ = ["PEERS", "describe", "version"]

# module -> [(case in the module's results, distribution, class or function called)]
PEERS: dict[str, list[tuple[str, str, str]]] = {
    "files": [
        ("langchain_read_file", "langchain-community", "langchain_community.tools.file_management.ReadFileTool"),
        ("langchain_write_file", "langchain-community", "langchain_community.tools.file_management.WriteFileTool"),
    ],
    "http": [
        ("langchain_requests_get", "langchain-community", "langchain_community.tools.requests.tool.RequestsGetTool"),
        ("raw_aiohttp", "aiohttp", "aiohttp.ClientSession"),
        ("raw_httpx", "httpx", "httpx.AsyncClient"),
        ("raw_httpx_aiohttp_transport", "httpx-aiohttp", "httpx_aiohttp.AiohttpTransport"),
        ("raw_aiohttp_same_spans", "aiohttp", "aiohttp.ClientSession inside the two contracted spans (bench/_contract_spans.py)"),
        (
            "langchain_requests_get_same_spans",
            "langchain-community",
            "RequestsGetTool inside the two contracted spans (bench/_contract_spans.py)",
        ),
        ("spans of the *_same_spans peers", "opentelemetry-sdk", "opentelemetry.sdk.trace.TracerProvider + BatchSpanProcessor"),
    ],
    "code": [
        (
            "autogen_ext_DockerCommandLineCodeExecutor",
            "autogen-ext",
            "autogen_ext.code_executors.docker.DockerCommandLineCodeExecutor",
        ),
        ("llm_sandbox_SandboxSession", "llm-sandbox", "llm_sandbox.SandboxSession"),
    ],
    "cold": [
        (
            "autogen_ext_DockerCommandLineCodeExecutor",
            "autogen-ext",
            "autogen_ext.code_executors.docker.DockerCommandLineCodeExecutor",
        ),
        ("llm_sandbox_SandboxSession", "llm-sandbox", "llm_sandbox.SandboxSession"),
    ],
    "browser": [
        ("raw_playwright", "playwright", "playwright.async_api.Page"),
        ("langchain", "langchain-community", "langchain_community.agent_toolkits.PlayWrightBrowserToolkit"),
        ("llama_index", "llama-index-tools-playwright", "llama_index.tools.playwright.PlaywrightToolSpec"),
    ],
    "email": [
        ("raw_aiosmtplib", "aiosmtplib", "aiosmtplib.send"),
        ("raw_imaplib", "(standard library)", "imaplib.IMAP4_SSL"),
    ],
    "imports": [("langchain_core_tools", "langchain-core", "langchain_core.tools")],
}


def version(dist: str) -> str:
    if dist.startswith("("):
        return dist.strip("()")
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(modules: list[str]) -> dict[str, Any]:
    """The peers of ``modules`` with their installed versions, and Agent Legs' own version."""
    return {
        "agent-legs": version("agent-legs"),
        "modules": {
            m: [{"case": case, "package": dist, "class": cls, "version": version(dist)} for case, dist, cls in PEERS[m]]
            for m in modules
            if m in PEERS
        },
    }
