"""Every developer task is a nox session: `nox -s tests`, `faults`, `lint`, `typing`, `bench`, `docs`, `demo`."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typing", "tests"]

ROOT = Path(__file__).parent
PACKAGES = [
    p
    for p in (
        "packages/agent-legs",
        "packages/langchain-agent-legs",
        "packages/llama-index-tools-agent-legs",
        "packages/agent-legs-demo",
    )
    if (ROOT / p / "pyproject.toml").exists()
]
TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-timeout>=2.3",
    "pyyaml>=6,<7",  # tests/test_docs_deployment.py: shared/deploy/compose.yaml and the collector config
    "trustme>=1.1",
    "aiosmtpd>=1.4",
    "langchain>=1.0,<2",
    "langgraph>=1.0,<2",
    "langgraph-checkpoint-sqlite>=3,<4",  # approvals: a paused graph resumed by a new process
    "langchain-tests>=1.0,<2",
    "llama-index-core>=0.14,<0.15",
    "openinference-instrumentation-langchain>=0.1",
    "openinference-instrumentation-llama-index>=4",  # nesting tests: our span under their tool spans
    "opentelemetry-instrumentation-langchain>=0.40",  # OpenLLMetry
    "mcp>=2.3,<3",  # agent-legs mcp (the [mcp] extra) and its tests' official MCP client
    "psycopg[binary]>=3.2,<4",  # the PostgreSQL state store (agent-legs[postgres]) and its test fixture
    "psycopg-pool>=3.2,<4",
    "jsonschema>=4.20,<5",
    "psutil>=5.9",  # test_mcp_govern: no server process outlives Legs.close()
    "uvicorn>=0.30",  # test_mcp_govern: a streamable HTTP MCP server on 127.0.0.1
]


def _install_project(session: nox.Session, *extra: str) -> None:
    editable = [arg for p in PACKAGES for arg in ("-e", p)]
    session.install(*editable, "-e", "shared/testing", *extra)


def _system_setup(session: nox.Session) -> None:
    """Docker engine, Chromium, Dovecot and the sandbox image (installs as root on Debian/Ubuntu)."""
    if os.environ.get("AGENT_LEGS_SKIP_SYSTEM_SETUP"):
        session.log("AGENT_LEGS_SKIP_SYSTEM_SETUP set: not checking system components")
        return
    session.run("bash", "shared/setup.sh", external=True)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Everything: unit tests of each package and the end-to-end integration tests, real services."""
    _install_project(session, *TEST_DEPS)
    _system_setup(session)
    paths = [f"{p}/tests" for p in PACKAGES if (ROOT / p / "tests").exists()]
    if (ROOT / "integration_tests").exists() and any((ROOT / "integration_tests").glob("test_*.py")):
        paths.append("integration_tests")
    # The fault-injection suite is its own session (nox -s faults): nothing runs twice.
    session.run("pytest", *(session.posargs or [*paths, "--ignore=integration_tests/faults"]))


@nox.session(python="3.11")
def faults(session: nox.Session) -> None:
    """Fault injection (issue 22): processes SIGKILLed mid-write, a full disk (a tmpfs in a private mount
    namespace: needs root or user namespaces, and util-linux's unshare), a hung OTLP collector, Chromium,
    containers and mail servers killed or silent. Each guarantee is listed in docs/reliability.md."""
    _install_project(session, *TEST_DEPS)
    _system_setup(session)
    session.run("pytest", *(session.posargs or ["integration_tests/faults"]))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typing(session: nox.Session) -> None:
    """mypy strict on the core, both adapters (the LlamaIndex one by module: it is a namespace package) and the demo."""
    _install_project(session, "mypy>=1.13")
    session.run("mypy", "packages/agent-legs/src", "packages/langchain-agent-legs/src", "packages/agent-legs-demo/src")
    session.run("mypy", "-p", "llama_index.tools.agent_legs")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks against the peers, and how cost grows with sessions; writes bench/results/latest.json.

    `nox -s bench -- --smoke` checks the harness in a few minutes (CI runs it; it fails when a module
    raises or a peer does not run, never on the numbers; it writes bench/results/smoke.json). After a
    full run, `nox -s bench -- --report docs/benchmarks.md` rewrites the page's tables and
    docs/img/scale.svg from the JSON.
    """
    # the peers (LangChain, llama-index, autogen-ext, llm-sandbox) and matplotlib; TEST_DEPS and
    # shared/testing for the local SMTP server and Dovecot the email module uses
    _install_project(session, *TEST_DEPS, "-r", "bench/requirements.txt")
    if "--report" not in session.posargs:
        if os.environ.get("AGENT_LEGS_SKIP_SYSTEM_SETUP"):
            session.log("AGENT_LEGS_SKIP_SYSTEM_SETUP set: not checking system components")
        else:  # Docker, the sandbox image, Chromium, Dovecot; not the tests' trace viewer
            session.run("bash", "shared/setup.sh", external=True, env={"AGENT_LEGS_SKIP_PHOENIX": "1"})
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site: the action reference is generated from the registry, then mkdocs --strict."""
    _install_project(session, "mkdocs-material>=9.5,<10")
    session.run("python", "docs/gen_actions.py")
    session.run("mkdocs", "build", "--strict", "-d", "site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """`agent-legs demo` (the README's `bash shared/demo.sh` does the same in .venv); args go to the demo.

    The demo is its own package (packages/agent-legs-demo: agent-legs[all], the LangChain adapter, LangChain);
    the core's `agent-legs demo` hands over to it.
    """
    session.install(*[arg for p in PACKAGES for arg in ("-e", p)])
    if os.environ.get("AGENT_LEGS_SKIP_SYSTEM_SETUP"):
        session.log("AGENT_LEGS_SKIP_SYSTEM_SETUP set: not checking system components")
    else:
        session.run("bash", "shared/setup.sh", external=True, env={"AGENT_LEGS_SKIP_PHOENIX": "1"}, success_codes=[0, 1])
    session.run("agent-legs", "demo", *session.posargs)
