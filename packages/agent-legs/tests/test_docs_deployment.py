"""docs/deployment.md and shared/deploy/ cannot drift from the code.

Invariants checked here:

* every ``settings.x.y`` / ``policy.x.y`` the page names (in code blocks and in backticks), every row
  of its settings table and every ``AGENT_LEGS_*`` variable of its code blocks resolves to a field of
  the real ``Settings`` / ``Policy`` models (or is one of the few variables that are not settings:
  the directories, secrets, the MCP and console tokens);
* every TOML block of the page is a configuration that ``Legs.from_config`` accepts, every YAML
  block parses;
* ``shared/deploy/compose.yaml`` has its five services wired together, each worker variable is a real
  setting whose loaded value is the one written, the whole worker configuration (that environment
  plus ``shared/deploy/agent-legs.toml``) builds a ``Legs``, and the page's list of the variables is
  the compose file's;
* ``shared/deploy/otel-collector.yaml`` wires every pipeline from defined receivers through defined
  processors to defined exporters, and exports to the compose file's Jaeger;
* the documented migration command migrates a real PostgreSQL, and two workers started by
  ``shared/deploy/worker.sh`` with the compose environment (service names replaced by loopback
  addresses) share one real PostgreSQL and export to a real OTLP receiver.

What is not checked: that the compose file starts (no image registry on the project's machine), and
that the collector and Jaeger images accept the configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from agent_legs import Legs, Policy, Settings
from agent_legs._console._config import TOKEN_ENV as CONSOLE_TOKEN_ENV
from agent_legs._legs import STATE_DIR_ENV, WORKSPACE_ENV
from agent_legs._settings import ENV_PREFIX, load_settings
from agent_legs._state import SCHEMA_VERSION

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "deployment.md"
DEPLOY = ROOT / "shared" / "deploy"
MCP_TOKEN_ENV = "AGENT_LEGS_MCP_TOKEN"  # agent_legs._mcp_server.TOKEN_ENV (that module imports the MCP SDK)
SECRET_PREFIX = ENV_PREFIX + "SECRET_"
NOT_SETTINGS = {WORKSPACE_ENV, STATE_DIR_ENV, MCP_TOKEN_ENV, CONSOLE_TOKEN_ENV}
WORKERS = ("worker-1", "worker-2")

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"(?<![\w./-])(settings|policy)\.([a-z_]+(?:\.(?:[a-z_0-9]+|<[a-z]+>)(?:\[[^\]]*\])?)*)")
_ENV = re.compile(r"(?<![\w$])" + ENV_PREFIX + r"[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*<)")
_SPAN = re.compile(r"`([^`\n]+)`")


# -- the models ------------------------------------------------------------------------------------


def _models_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model an annotation holds (through Optional, list, dict) and whether a key comes first (dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    for arg in typing.get_args(annotation):
        model, _ = _models_in(arg)
        if model is not None:
            return model, origin is dict
    return None, False


def resolve(root: type[BaseModel], path: str) -> None:
    """Raises ``LookupError`` naming the first part of ``path`` (``a.b[i].c``, ``a.<name>.b``) that
    is not a field; a dict's key (``<name>`` or any word) is skipped."""
    model: type[BaseModel] | None = root
    parts = [re.sub(r"\[[^\]]*\]$", "", p) for p in path.split(".")]
    i = 0
    while i < len(parts):
        part = parts[i]
        if model is None:
            raise LookupError(f"{path}: {'.'.join(parts[:i])} has no fields (it is a value), so no {part!r}")
        if part not in model.model_fields:
            raise LookupError(f"{path}: {model.__name__} has no field {part!r} (it has {sorted(model.model_fields)})")
        model, keyed = _models_in(model.model_fields[part].annotation)
        i += 2 if keyed else 1  # a dict of sections: the next part is the key


def env_setting_path(name: str) -> str | None:
    """The settings path an ``AGENT_LEGS_*`` variable sets, ``None`` for the variables that are no setting;
    raises ``LookupError`` when it is neither."""
    if name in NOT_SETTINGS or name.startswith(SECRET_PREFIX):
        return None
    path = ".".join(name[len(ENV_PREFIX) :].lower().split("__"))
    resolve(Settings, path)
    return path


# -- the page --------------------------------------------------------------------------------------


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def _blocks(lang: str | None = None) -> list[tuple[str, str, int]]:
    text = _page()
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
        if lang is None or m.group(1) == lang
    ]


def _prose() -> list[tuple[str, int]]:
    """The page's lines outside code blocks, with their numbers."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), _page())
    return [(line, n) for n, line in enumerate(text.splitlines(), 1)]


def _settings_table() -> list[tuple[str, int]]:
    """The first cell of each row of the "## Settings" table."""
    rows, inside = [], False
    for line, n in _prose():
        if line.startswith("## "):
            inside = line.strip() == "## Settings"
        elif inside and line.startswith("| `"):
            rows.append((line.split("|")[1], n))
    return rows


def named_settings() -> list[tuple[str, str, int]]:
    """(root, path, line) of every settings/policy name of the page: code blocks, backticks, the table."""
    found: list[tuple[str, str, int]] = []
    for lang, body, start in _blocks():
        if lang == "text":
            continue  # the output of a command (the page shows a bad key being refused)
        for k, line in enumerate(body.splitlines()):
            found += [(m.group(1), m.group(2), start + 1 + k) for m in _NAME.finditer(line)]
    for line, n in _prose():
        for span in _SPAN.findall(line):
            found += [(m.group(1), m.group(2), n) for m in _NAME.finditer(span)]
    for cell, n in _settings_table():
        found += [("settings", span, n) for span in _SPAN.findall(cell)]
    return found


def test_the_page_is_parsed() -> None:
    """The parser sees what it must (a parser that finds nothing would pass every check below)."""
    names = {f"{root}.{path}" for root, path, _ in named_settings()}
    assert {"settings.state.url", "settings.state.pool_size", "settings.telemetry.otlp_endpoint"} <= names
    assert "settings.code.pool_size" in names and len(_settings_table()) >= 30
    assert len(_blocks("toml")) >= 4 and len(_blocks("yaml")) >= 1


def test_every_setting_the_page_names_exists() -> None:
    problems = []
    for root, path, line in named_settings():
        try:
            resolve(Settings if root == "settings" else Policy, path)
        except LookupError as exc:
            problems.append(f"docs/deployment.md:{line}: {root}.{exc}")
    for lang, body, start in _blocks():
        for k, text in enumerate(body.splitlines()):
            for name in _ENV.findall(text) if lang != "text" else []:
                try:
                    env_setting_path(name)
                except LookupError as exc:
                    problems.append(f"docs/deployment.md:{start + 1 + k}: {name} is no setting ({exc})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("root", "path"),
    [
        ("settings", "state.urll"),
        ("settings", "stat.url"),
        ("settings", "mcp.servers.<name>.commandd"),
        ("policy", "code.networkk"),
        ("settings", "state.url.host"),
    ],
)
def test_a_name_that_does_not_exist_is_caught(root: str, path: str) -> None:
    with pytest.raises(LookupError):
        resolve(Settings if root == "settings" else Policy, path)


def test_a_variable_that_is_no_setting_is_caught() -> None:
    assert env_setting_path("AGENT_LEGS_STATE__URL") == "state.url"
    assert env_setting_path("AGENT_LEGS_SESSION_TTL_S") == "session_ttl_s"
    assert env_setting_path("AGENT_LEGS_SECRET_PG_PASSWORD") is None
    for wrong in ("AGENT_LEGS_STATE_URL", "AGENT_LEGS_STAT__URL", "AGENT_LEGS_TELEMETRY__ENDPOINT"):
        with pytest.raises(LookupError):
            env_setting_path(wrong)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith((ENV_PREFIX, "OTEL_")):
            monkeypatch.delenv(key)
    return monkeypatch


def test_every_toml_block_loads(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Each TOML block, as a whole agent-legs.toml, is accepted by Legs.from_config (settings, policy,
    the names in the policy's lists)."""
    blocks = _blocks("toml")
    for k, (_, body, line) in enumerate(blocks):
        config = tmp_path / f"block{k}.toml"
        config.write_text(body, encoding="utf-8")
        try:
            legs = Legs.from_config(
                config, workspace=tmp_path / f"ws{k}", state_dir=tmp_path / f"st{k}", secrets={"PG_PASSWORD": "pw"}
            )
        except Exception as exc:
            pytest.fail(f"docs/deployment.md:{line}: the TOML block does not load: {exc}")
        legs.close()
    for _, body, line in _blocks("yaml"):
        assert isinstance(yaml.safe_load(body), dict), f"docs/deployment.md:{line}"


# -- shared/deploy ---------------------------------------------------------------------------------


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` (a missing required one fails)."""
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and env[name] != "":
            return env[name]
        if op == ":-":
            return arg or ""
        raise AssertionError(f"${{{name}}} is required: {arg}")

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", sub, value)


COMPOSE_ENV = {"PG_PASSWORD": "pg-pass-w0rd", "AGENT_LEGS_MCP_TOKEN": "mcp-t0ken-for-tests"}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def worker_env(service: str = "worker-1") -> dict[str, str]:
    env = _compose()["services"][service]["environment"]
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(interpolate(v, COMPOSE_ENV)) for k, v in env.items()}


def test_compose_services_are_wired() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "otel-collector", "jaeger", *WORKERS}
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    collector = services["otel-collector"]
    (mount,) = collector["volumes"]
    source, target = mount.split(":")[:2]
    assert (DEPLOY / source).resolve() == DEPLOY / "otel-collector.yaml"
    assert f"--config={target}" in collector["command"]
    volumes = set()
    for name in WORKERS:
        worker = services[name]
        build = worker["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "otel-collector" in worker["depends_on"]
        env = worker_env(name)
        mounted = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
        assert set(mounted) == {env[WORKSPACE_ENV], env[STATE_DIR_ENV]}, "both directories on volumes"
        volumes |= set(mounted.values())
        for port in worker["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert len(volumes) == 4, "each worker has a workspace and a state directory of its own"
    assert volumes <= set(compose["volumes"])
    for port in services["jaeger"]["ports"]:
        assert port.startswith("127.0.0.1:")


def test_worker_variables_are_real_settings_with_the_values_written(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    compose = _compose()
    pg = {k: interpolate(v, COMPOSE_ENV) for k, v in compose["services"]["postgres"]["environment"].items()}
    for name in WORKERS:
        env = worker_env(name)
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX):
                clean_env.delenv(key)
        for key, value in env.items():
            clean_env.setenv(key, value)
        settings = load_settings()
        for key, value in env.items():
            assert key.startswith(ENV_PREFIX), key
            path = env_setting_path(key)
            if path is None:
                continue
            loaded: Any = settings
            for part in path.split("."):
                loaded = getattr(loaded, part)
            assert str(loaded) == value or (isinstance(loaded, float) and loaded == float(value)), (key, loaded, value)
        # the state URL names the postgres service, its user and database; the secret it uses is given
        url = urlsplit(settings.state.url or "")
        assert (url.hostname, url.port, url.username, url.path) == (
            "postgres",
            5432,
            pg["POSTGRES_USER"],
            "/" + pg["POSTGRES_DB"],
        )
        (secret,) = re.findall(r"\{secret:(\w+)\}", settings.state.url or "")
        assert env[SECRET_PREFIX + secret] == pg["POSTGRES_PASSWORD"]
        # the telemetry endpoint is the collector's OTLP/HTTP receiver
        endpoint = urlsplit(settings.telemetry.otlp_endpoint or "")
        receiver = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())["receivers"]["otlp"]["protocols"]["http"]
        assert endpoint.hostname == "otel-collector" and endpoint.port == int(receiver["endpoint"].rsplit(":", 1)[1])
        # the whole worker configuration (this environment + the image's agent-legs.toml) builds a Legs
        clean_env.setenv(WORKSPACE_ENV, str(tmp_path / name / "ws"))
        clean_env.setenv(STATE_DIR_ENV, str(tmp_path / name / "state"))
        from agent_legs import Secrets

        legs = Legs.from_config(DEPLOY / "agent-legs.toml", secrets=Secrets.from_env())
        try:
            assert legs.settings == settings
            assert legs.policy.budgets and legs.policy.require_approval == ["files.delete"]
        finally:
            legs.close()


def test_the_page_lists_the_compose_variables() -> None:
    """The page's block of worker variables is the compose file's, value for value (``$X`` stands for
    an interpolated one)."""
    compose = _compose()["services"]["worker-1"]["environment"]
    (block,) = [body for lang, body, _ in _blocks("bash") if "AGENT_LEGS_TELEMETRY__OTLP_ENDPOINT=" in body]
    listed = {}
    for line in block.splitlines():
        name, _, value = line.split("#")[0].strip().partition("=")
        listed[name] = value.strip()
    assert set(listed) == set(compose)
    for name, value in listed.items():
        written = str(compose[name])
        assert value == written or (value.startswith("$") and written.startswith("${" + value[1:])), name


def test_collector_pipeline_is_wired() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text(encoding="utf-8"))
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"pipeline {name}: {kind[:-1]} {component} is not defined"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    (exporter,) = pipelines["traces"]["exporters"]
    assert exporter.split("/")[0] == "otlp_grpc"
    host, port = config["exporters"][exporter]["endpoint"].rsplit(":", 1)
    assert host in _compose()["services"] and host == "jaeger" and port == "4317"  # Jaeger's OTLP gRPC port


def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "worker.Dockerfile").read_text(encoding="utf-8")
    copies = re.findall(r"^COPY (?:--\S+ )*(\S+) (\S+)$", text, re.MULTILINE)
    assert copies, "the Dockerfile copies the policy and the worker script"
    for source, _ in copies:
        assert (DEPLOY / source).is_file(), source
    assert "agent-legs[all]" in text
    (cmd,) = re.findall(r'^CMD \["([^"]+)"\]$', text, re.MULTILINE)
    assert any(target.endswith("/" + cmd) for _, target in copies)
    script = (DEPLOY / "worker.sh").read_text(encoding="utf-8")
    config_target = next(t for s, t in copies if s == "agent-legs.toml")
    assert config_target in script


# -- run here: the migration command and two workers on one database ----------------------------------


def _env_without_ours(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "OTEL_"))}
    env.update(extra)
    return env


def test_the_documented_migration_command_migrates_a_real_postgres(postgres_url: str, tmp_path: Path) -> None:
    import psycopg

    (block,) = [body for lang, body, _ in _blocks("bash") if "agent-legs approvals --json" in body]
    assert "AGENT_LEGS_STATE__URL=" in block and "AGENT_LEGS_SECRET_PG_PASSWORD=" in block
    url = urlsplit(postgres_url)
    password = url.password or ""
    templated = postgres_url.replace(f":{password}@", ":{secret:PG_PASSWORD}@")
    env = _env_without_ours(
        AGENT_LEGS_STATE__URL=templated,
        AGENT_LEGS_SECRET_PG_PASSWORD=password,
        AGENT_LEGS_STATE_DIR=str(tmp_path / "state"),
        AGENT_LEGS_WORKSPACE=str(tmp_path / "ws"),
    )
    agent_legs = shutil.which("agent-legs", path=str(Path(sys.executable).parent)) or "agent-legs"
    done = subprocess.run([agent_legs, "approvals", "--json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert password not in done.stdout + done.stderr
    with psycopg.connect(postgres_url, connect_timeout=10) as conn:
        (version,) = conn.execute("SELECT MAX(version) FROM agent_legs_schema").fetchone() or (None,)
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert version == SCHEMA_VERSION
    assert {"budget_usage", "sends", "approvals", "session_labels", "session_registry", "flow_index"} <= tables


class _Worker:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stderr is not None
        threading.Thread(target=lambda: [self.lines.put(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]

    def url(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=90)
            except queue.Empty:
                raise AssertionError(f"the worker did not start: {self.seen}") from None
            self.seen.append(line)
            if m := re.search(r"serving streamable HTTP at (\S+)", line):
                return m.group(1)


def test_two_workers_from_the_compose_environment_share_one_database(
    postgres_url: str, otlp_receiver: Any, tmp_path: Path
) -> None:
    """``worker.sh`` twice, with the compose file's environment; ``postgres`` and ``otel-collector``
    become the test's real PostgreSQL and OTLP receiver on loopback."""
    import psycopg
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    pg = urlsplit(postgres_url)
    bin_dir = str(Path(sys.executable).parent)
    workers, envs = [], []
    try:
        for name in WORKERS:
            env = worker_env(name)
            env["AGENT_LEGS_STATE__URL"] = env["AGENT_LEGS_STATE__URL"].replace(
                "@postgres:5432/agentlegs", f"@127.0.0.1:{pg.port}{pg.path}"
            )
            env["AGENT_LEGS_STATE__URL"] = env["AGENT_LEGS_STATE__URL"].replace("//agentlegs:", f"//{pg.username}:")
            env["AGENT_LEGS_SECRET_PG_PASSWORD"] = pg.password or ""
            env["AGENT_LEGS_TELEMETRY__OTLP_ENDPOINT"] = otlp_receiver.endpoint
            env[WORKSPACE_ENV] = str(tmp_path / name / "workspace")
            env[STATE_DIR_ENV] = str(tmp_path / name / "state")
            full = _env_without_ours(**env, WORKER_CONFIG=str(DEPLOY / "agent-legs.toml"), MCP_LISTEN="127.0.0.1:0")
            full["PATH"] = bin_dir + os.pathsep + full.get("PATH", "")
            full["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # export within 0.2 s (the worker is killed, not closed)
            proc = subprocess.Popen(
                ["sh", str(DEPLOY / "worker.sh")],
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            workers.append(_Worker(proc))
            envs.append(full)
        urls = [w.url() for w in workers]
        token = COMPOSE_ENV["AGENT_LEGS_MCP_TOKEN"]

        async def call(url: str, tool: str, arguments: dict[str, Any]) -> Any:
            client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
            async with (
                client,
                streamable_http_client(url, http_client=client) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await session.call_tool(tool, arguments)

        def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
            argv = ["agent-legs", "--config", env["WORKER_CONFIG"], *args]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)

        async def approve_from_worker_2() -> str:
            """What worker-1 waits for, listed and approved with worker-2's configuration."""
            while True:
                listed = await asyncio.to_thread(cli, envs[1], "approvals", "--json")
                assert listed.returncode == 0, listed.stderr
                if pending := json.loads(listed.stdout):
                    (item,) = pending
                    assert item["action"] == "files.delete"
                    approved = await asyncio.to_thread(cli, envs[1], "approve", item["id"], "--by", "ops")
                    assert approved.returncode == 0, approved.stderr
                    return str(item["id"])
                await asyncio.sleep(0.3)

        async def scenario() -> list[Any]:
            # budgets run before the handler (docs/architecture.md), so both calls count, though the
            # egress guard then refuses the loopback address (policy.network.allow_private is false)
            one = await call(urls[0], "http_request", {"method": "GET", "url": "http://127.0.0.1:9/"})
            two = await call(urls[1], "http_request", {"method": "GET", "url": "http://127.0.0.1:9/"})
            wrote = await call(urls[0], "files_write", {"path": "a.txt", "content": "x"})
            deleting = asyncio.ensure_future(call(urls[0], "files_delete", {"path": "a.txt"}))
            await approve_from_worker_2()
            deleted = await deleting
            return [one, two, wrote, deleted]

        one, two, wrote, deleted = asyncio.run(asyncio.wait_for(scenario(), 240))
        for r in (one, two):
            assert "policy.network.allow_private" in r.content[0].text, r
        assert not wrote.is_error and not deleted.is_error, (wrote, deleted)
        assert not (tmp_path / "worker-1" / "workspace" / "a.txt").exists()
        # the one http.request budget of agent-legs.toml counted both workers' calls in one row
        with psycopg.connect(postgres_url, connect_timeout=10) as conn:
            rows = conn.execute("SELECT budget, used FROM budget_usage").fetchall()
        assert len(rows) == 1 and rows[0][1] == 2, rows
        names = otlp_receiver.wait_for_spans(4, timeout=60)
        assert sum("http.request" in n or "http_request" in n for n in names) >= 2, names
        services = {r.resource_attributes.get("service.name") for r in otlp_receiver.requests}
        assert services == {"agent-legs-worker"}
        for name in WORKERS:  # each worker wrote its own action log
            assert (tmp_path / name / "state" / "actions.jsonl").is_file()
    finally:
        for w in workers:
            w.proc.terminate()
        for w in workers:
            try:
                w.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
