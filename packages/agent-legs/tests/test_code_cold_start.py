"""Cold start and close of the code sandbox: what ``Legs.close()`` leaves to the background, and that
none of it survives the process (issue 20, item 3). Real Docker, real processes; nothing timed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agent_legs_testing.docker import sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

CHILD = """
import gc, json, os, sys
from agent_legs import Legs
from agent_legs.actions.code import _reaper
mode = sys.argv[3]
legs = Legs(workspace=sys.argv[1], state_dir=sys.argv[2], settings={"code": {"pool_size": 2}})
for session in ("a", "b"):
    assert legs.run("code.run", {"code": "1"}, session=session).ok
made = _reaper.owned()
if mode == "close":
    legs.close()
elif mode == "drop":  # never closed, and nothing refers to it any more
    del legs
    gc.collect()
# mode "exit": left open for the exit hook
print(json.dumps({"pid": os.getpid(), "made": made, "owned_after_close": _reaper.owned()}), flush=True)
"""


def _containers_of(pid: int) -> list[str]:
    owner = f"agent-legs.sandbox.owner={socket.gethostname()}:{pid}"
    out = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={owner}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.parametrize("mode", ["close", "exit", "drop"])
def test_no_container_of_a_process_survives_its_exit(tmp_path, mode) -> None:
    """close() returns without waiting for the engine's removals; the process's exit waits for them.
    Also when the Legs was left open (the exit hook closes it) or dropped without close (its
    containers are still recorded as the process's and removed at exit)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "w"), str(tmp_path / "s"), mode],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["made"]) >= 2  # two sessions' kernels (and the pool's)
    print(f"{mode}: {len(report['owned_after_close'])} of {len(report['made'])} containers not yet removed after close")
    assert _containers_of(report["pid"]) == [], f"containers of process {report['pid']} survived it"
    assert "could not be removed" not in proc.stderr


def test_close_kills_every_kernel_before_it_returns(open_legs) -> None:
    """What close() still does before it returns: each kernel's connection is hung up, so nothing
    of the code runs on (its container stops whether or not its removal has happened yet)."""
    legs = open_legs(settings={"code": {"pool_size": 1}})
    assert legs.run("code.run", {"code": "1"}, session="a").ok
    from agent_legs.actions.code._service import CodeService

    svc = legs._runtime._services[CodeService]
    kernels = [*svc.kernels.values(), *svc.pool]
    legs.close()
    assert kernels and all(k.dead and k.channel.sock._closed for k in kernels)  # shut down and closed
    from agent_legs.actions.code import _reaper

    assert _reaper.drain() == []
    assert not set(sandbox_containers()) & {k.container.id for k in kernels}


def _service(legs, wait_s: float = 120.0):
    """The code service once started (polled: a bound on liveness, not a timing)."""
    import time

    from agent_legs.actions.code._service import CodeService

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        svc = legs._runtime._services.get(CodeService)
        if svc is not None:
            return svc
        time.sleep(0.05)
    raise AssertionError("the code service did not start")


def test_prestart_starts_the_sandbox_before_the_first_call(open_legs) -> None:
    from agent_legs.actions.code import _reaper

    before = set(_reaper.owned())
    legs = open_legs(policy={"allow": ["code.*"]}, settings={"code": {"pool_size": 1}})  # prestart "auto"
    svc = _service(legs)  # started with no call made
    import time

    deadline = time.monotonic() + 120
    while not svc.pool and time.monotonic() < deadline:
        time.sleep(0.05)
    (pooled,) = svc.pool
    r = legs.run("code.run", {"code": "print(1+1)"})
    assert r.ok and r.data["stdout"] == "2\n" and r.data["new_kernel"]
    assert svc.kernels["default"] is pooled  # the first call ran on the container started at Legs()
    assert pooled.container.id in set(_reaper.owned()) - before


@pytest.mark.parametrize(
    ("policy", "prestart", "expected"),
    [
        ({"allow": ["code.*"]}, "auto", True),
        ({"allow": ["code.run", "files.*"]}, "auto", True),
        ({}, "auto", False),  # the default policy allows code.* but does not name it: no container at every Legs()
        ({"allow": ["*"]}, "auto", False),
        ({"allow": ["files.*"]}, True, False),  # code.run denied: never
        ({}, True, True),
        ({"allow": ["code.*"]}, False, False),
    ],
)
def test_when_legs_prestarts_the_sandbox(policy, prestart, expected) -> None:
    from agent_legs import Policy
    from agent_legs._legs import prestart_wanted
    from agent_legs._policy import PolicyEngine

    p = Policy.model_validate(policy)
    assert prestart_wanted(p, prestart, PolicyEngine(p)) is expected


def test_close_while_the_sandbox_is_still_prestarting_leaves_nothing(open_legs) -> None:
    legs = open_legs(policy={"allow": ["code.*"]}, settings={"code": {"pool_size": 2}})
    legs.close()  # at once: the service is still starting (or not yet): it is closed once started
    from agent_legs.actions.code import _reaper

    assert _reaper.drain() == []  # and no_leftover_containers: none of this process's is left


def test_close_while_the_first_container_is_still_being_created_leaves_nothing(open_legs, monkeypatch) -> None:
    """Seen once in a full run: the service closed while its pool waited for the container asked for at
    Legs(); the wait was cancelled, the container was made after the close's sweep by label, and nobody
    removed it (it stayed until the process's exit). A slow engine makes that order certain here."""
    import threading
    import time

    from agent_legs.actions.code import _early, _reaper
    from agent_legs.actions.code._service import CodeService

    real_exchange = _early.exchange
    adopting, closed = threading.Event(), threading.Event()

    def slow_create(path, method, url, *args, **kwargs):
        if url == "/containers/create":
            closed.wait(30)  # made only after the service closed and swept its label
        return real_exchange(path, method, url, *args, **kwargs)

    real_wait = _early.EarlyStart.wait

    def wait(self):
        adopting.set()
        return real_wait(self)

    monkeypatch.setattr(_early, "exchange", slow_create)
    monkeypatch.setattr(_early.EarlyStart, "wait", wait)
    before = set(_reaper.owned())
    legs = open_legs(policy={"allow": ["code.*"]}, settings={"code": {"pool_size": 1}})
    assert legs._early is not None  # this setup asks for the first container early
    assert adopting.wait(60)
    svc = legs._runtime.submit(legs._runtime.service(CodeService)).result(60)
    assert svc is not None
    legs.close()  # the pool's wait is cancelled: the container is still being created
    time.sleep(1.0)  # the close's sweep by label is done by now
    closed.set()
    assert _reaper.drain() == []
    assert [c for c in _reaper.owned() if c not in before] == []  # and no_leftover_containers: none on the engine


def test_a_first_call_takes_the_kernel_the_pool_is_starting(open_legs) -> None:
    """A new service fills its pool; the first call waits for the container the pool is starting
    rather than starting a second one beside it (two containers starting at once on a small machine
    each take longer)."""
    from agent_legs.actions.code import _reaper

    before = set(_reaper.owned())
    legs = open_legs(settings={"code": {"pool_size": 1, "prestart": False}})
    r = legs.run("code.run", {"code": "1"})
    assert r.ok and r.data["new_kernel"]
    svc = _service(legs)
    made = [c for c in _reaper.owned() if c not in before]
    assert svc.kernels["default"].container.id == made[0]  # the pool's first container, not one of its own


def test_waiting_for_removals_leaves_the_kernels_of_an_open_legs_alone(open_legs, tmp_path) -> None:
    """drain() (what a test or the exit waits on) waits for another Legs' background removals; only
    the exit hook's sweep takes the containers of a Legs still open."""
    from agent_legs.actions.code import _reaper

    kept = open_legs(settings={"code": {"pool_size": 0}})
    assert kept.run("code.run", {"code": "x = 41"}).ok
    other = open_legs(workspace=tmp_path / "w2", state_dir=tmp_path / "s2", settings={"code": {"pool_size": 0}})
    assert other.run("code.run", {"code": "1"}).ok
    other.close()
    assert _reaper.drain() == []
    r = kept.run("code.run", {"code": "x + 1"})
    assert r.ok and r.data["value"] == "42" and not r.data["new_kernel"]


class _WaitForTheFirstContainer(TracerProvider):
    """A tracer provider that ``Legs()`` asks for its tracer after the early start and before the runtime
    is built: it waits there (bounded: a guard against hanging, not a timing) until this process has
    made a sandbox container, and notes whether it saw one. ``fail`` then makes ``Legs()`` fail."""

    def __init__(self, before: set[str], *, fail: bool = False) -> None:
        super().__init__()
        self.before, self.fail, self.seen = before, fail, []

    def get_tracer(self, *args, **kwargs):
        import time

        from agent_legs.actions.code import _reaper

        deadline = time.monotonic() + 60
        while not self.seen and time.monotonic() < deadline:
            self.seen = sorted(set(_reaper.owned()) - self.before)
            time.sleep(0.02)
        if self.fail:
            raise RuntimeError("the application's tracer provider failed")
        return super().get_tracer(*args, **kwargs)


def test_the_first_container_is_asked_for_before_the_rest_of_legs_is_built(open_legs) -> None:
    """Docker's start (hundreds of ms) overlaps with the rest of Legs() and the service's own start:
    the container exists while Legs() is still being built, and the first call runs on it."""
    from agent_legs.actions.code import _reaper

    provider = _WaitForTheFirstContainer(set(_reaper.owned()))
    legs = open_legs(policy={"allow": ["code.*"]}, settings={"code": {"pool_size": 1}}, tracer_provider=provider)
    assert len(provider.seen) == 1, "no sandbox container was made while Legs() was being built"
    r = legs.run("code.run", {"code": "print(1+1)"})
    assert r.ok and r.data["stdout"] == "2\n" and r.data["new_kernel"]
    assert _service(legs).kernels["default"].container.id == provider.seen[0]


def test_a_legs_that_fails_after_asking_for_the_first_container_leaves_nothing(tmp_path) -> None:
    from agent_legs import Legs
    from agent_legs.actions.code import _reaper

    provider = _WaitForTheFirstContainer(set(_reaper.owned()), fail=True)
    with pytest.raises(RuntimeError, match="tracer provider failed"):
        Legs(tmp_path / "w", tmp_path / "s", policy={"allow": ["code.*"]}, tracer_provider=provider)
    assert len(provider.seen) == 1
    assert _reaper.drain() == []
    assert provider.seen[0] not in sandbox_containers()  # and no_leftover_containers: none of this process's


BEFORE_THE_FAMILY = """
import importlib.abc, json, sys, time
from agent_legs import Legs
from agent_legs.actions.code import _reaper
seen = {}

class Watch(importlib.abc.MetaPathFinder):
    # the moment the code family's handlers are imported (Legs()' check of the policy's names): had the
    # first container been asked for? (waits, bounded, for the engine to have made the one asked for)
    def find_spec(self, name, path, target=None):
        if name == "agent_legs.actions.code._actions" and not seen:
            launched = "agent_legs.actions.code._early" in sys.modules
            deadline = time.monotonic() + 60
            while launched and not _reaper.owned() and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.update(launched=launched, containers=len(_reaper.owned()))
        return None

sys.meta_path.insert(0, Watch())
legs = Legs(sys.argv[1], sys.argv[2], policy={"allow": ["code.*"]})
r = legs.run("code.run", {"code": "print(1+1)"})
legs.close()
print(json.dumps({**seen, "ok": r.ok and r.data["stdout"] == "2\\n"}))
"""


def test_the_first_container_is_asked_for_before_the_code_family_is_imported(tmp_path) -> None:
    """``Legs()`` decides to prestart from the policy's patterns and the settings alone and sends the
    create before its check of the policy's names imports the code family (handlers, service, kernel):
    that import then overlaps Docker's start. In a new process, where nothing is imported yet."""
    proc = subprocess.run(
        [sys.executable, "-c", BEFORE_THE_FAMILY, str(tmp_path / "w"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"]
    assert report["launched"], "the code family was imported before the first container was asked for"
    assert report["containers"] == 1


def test_a_policy_name_typo_after_the_early_start_leaves_nothing(tmp_path) -> None:
    """The names are checked after the first container was asked for: a typo still fails ``Legs()`` with
    the ``ConfigError`` naming it, and leaves no container and no directory behind."""
    from agent_legs import ConfigError, Legs
    from agent_legs.actions.code import _reaper

    before = set(_reaper.owned())
    ws, st = tmp_path / "new" / "w", tmp_path / "s"
    with pytest.raises(ConfigError, match=r"'nosuch\.\*' matches no action"):
        Legs(ws, st, policy={"allow": ["code.*", "nosuch.*"]})
    assert not (tmp_path / "new").exists() and not st.exists()
    assert [c for c in _reaper.owned() if c not in before] == [] and _reaper.drain() == []


@pytest.mark.parametrize(
    "settings",
    [
        {"code": {"runtime": "runsc"}},  # the engine's runtimes are checked first
        {"code": {"pool_size": 0}},  # no warm container wanted
        {"code": {"docker_host": "tcp://127.0.0.1:2375"}},  # not a unix socket
        {"code": {"docker_hosts": [{"url": "unix:///var/run/docker.sock"}, {"url": "unix:///run/other.sock"}]}},
    ],
)
def test_the_first_container_is_asked_for_early_only_on_one_local_engine_without_network(tmp_path, settings) -> None:
    from agent_legs import Policy, Settings
    from agent_legs.actions.code._early import EarlyStart

    policy = Policy.model_validate({"allow": ["code.*"]})
    assert EarlyStart.launch(tmp_path, tmp_path / "s", policy, Settings.model_validate(settings)) is None
    networked = Policy.model_validate({"allow": ["code.*"], "code": {"network": True}})
    assert EarlyStart.launch(tmp_path, tmp_path / "s", networked, Settings.model_validate({})) is None


def test_the_bootstrap_runs_the_hosts_bytecode_when_its_magic_matches_else_compiles_the_source(sandbox_image) -> None:
    """A container's python3 runs the driver the host compiled when their bytecode magic numbers are the
    same (no compile in the container), and compiles the source otherwise (any image with python3)."""
    import importlib.util
    import marshal

    from agent_legs.actions.code._body import BOOTSTRAP
    from agent_legs.actions.code._sandbox import driver_payload, driver_source

    def bootstrap(payload: bytes) -> str:
        cmd = ["docker", "run", "--rm", "-i", "--network", "none", "--read-only", sandbox_image, "python3", "-u", "-c", BOOTSTRAP]
        return subprocess.run(cmd, input=payload, capture_output=True, timeout=120, check=True).stdout.decode().strip()

    host = importlib.util.MAGIC_NUMBER.hex()
    image = bootstrap(_payload(host, "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"))
    assert bootstrap(_payload("00000000", "print('from bytecode')", source="print('from source')")) == "from source"
    if image == host:  # (this host's Python can compile for that image)
        assert bootstrap(_payload(host, "print('from bytecode')", source="print('from source')")) == "from bytecode"
    magic, size = driver_payload().split(b"\n", 1)[0].split()
    code = driver_payload()[len(magic) + len(size) + 2 :][: int(size)]
    assert magic.decode() == host and marshal.loads(code).co_filename == "agent-legs-driver"
    assert driver_payload().endswith(b"%d\n" % len(driver_source()) + driver_source())


def _payload(magic: str, code: str, *, source: str = "") -> bytes:
    import marshal

    compiled = marshal.dumps(compile(code, "agent-legs-driver", "exec"))
    raw = (source or code).encode()
    return f"{magic} {len(compiled)}\n".encode() + compiled + b"%d\n" % len(raw) + raw


def test_the_create_body_is_what_docker_py_sends_for_the_same_options(tmp_path) -> None:
    """``_container.config`` (sent by both paths) holds every containment option, exactly as docker-py
    turned the keyword arguments the sandbox was created with before into the engine's JSON."""
    import docker
    from docker.models.containers import _create_container_args
    from docker.types import Mount

    from agent_legs import Policy, Settings
    from agent_legs.actions.code import _container
    from agent_legs.actions.code._container import BOOTSTRAP, EGRESS_SOCKET, HOST, LABEL, SocketProxy

    for runtime, proxy, read_only in (("runc", None, False), ("runsc", SocketProxy(None, path="/tmp/p.sock"), True)):
        settings = Settings.model_validate({"code": {"runtime": runtime}}).code
        code = Policy.model_validate({"code": {"memory_mb": 300, "cpus": 0.5, "pids_limit": 40, "tmp_mb": 9}}).code
        mounts = [{"Target": "/workspace/.env", "Source": "/m/file", "Type": "bind", "ReadOnly": True}]
        ours = _container.config(
            settings, code, workspace="/ws", read_only=read_only, owner=(1000, 1001), mounts=mounts, proxy=proxy, instance="i1"
        )
        overhead = _container.RUNSC_OVERHEAD_MB if runtime == "runsc" else 0
        volumes = {"/ws": {"bind": "/workspace", "mode": "ro" if read_only else "rw"}}
        environment: dict[str, str] = {}
        if proxy is not None:
            volumes[proxy.path] = {"bind": EGRESS_SOCKET, "mode": "rw"}
            url = f"http://127.0.0.1:{_container.EGRESS_PORT}"
            environment = {"AGENT_LEGS_EGRESS_SOCKET": EGRESS_SOCKET, "AGENT_LEGS_EGRESS_PORT": str(_container.EGRESS_PORT)}
            environment |= dict.fromkeys(
                ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"), url
            )
        before = {  # the keyword arguments of docker-py's containers.create, as the sandbox used them
            "image": settings.image,
            "command": ["python3", "-u", "-c", BOOTSTRAP],
            "user": "1000:1001",
            "stdin_open": True,
            "tty": False,
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": "size=9m,mode=1777,nosuid,nodev"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": 40 if runtime == "runc" else _container.RUNSC_TASKS_BASE + 40 * _container.RUNSC_TASKS_PER_PROCESS,
            "mem_limit": f"{300 + overhead}m",
            "memswap_limit": f"{300 + overhead}m",
            "nano_cpus": 500_000_000,
            "environment": environment,
            "hostname": "sandbox",
            "working_dir": "/workspace",
            "volumes": volumes,
            "mounts": [Mount("/workspace/.env", "/m/file", type="bind", read_only=True)],
            "runtime": runtime,
            "labels": {LABEL: "1", f"{LABEL}.owner": f"{HOST}:{os.getpid()}", f"{LABEL}.instance": "i1"},
            "ulimits": [],
            "log_config": {"type": "none"},
            "version": "1.41",
        }
        sdk = docker.APIClient(version="1.41").create_container_config(**_create_container_args(before))
        sdk = {k: v for k, v in sdk.items() if v is not None}  # (docker-py's post drops the nulls)
        assert json.loads(json.dumps(ours)) == json.loads(json.dumps(sdk))
