"""``agent-legs doctor``: is every backend reachable, and if not, how to fix it.

Each check talks to the real thing, briefly (a few seconds at most): the Docker engine and the
sandbox image's recipe label, gVisor's runsc (registered with the engine? selected but missing, or
selected for a root-owned workspace, fails), the browser binary (``--version``) or the remote browser's port, the
SMTP/IMAP greeting (through TLS when configured so: a bad certificate shows here, not in the first
email), an empty OTLP export (a wrong port or path shows here, not as silently missing traces), and
the workspace/state directories. A family whose extra is not installed fails its check with the
``pip install 'agent-legs[<extra>]'`` command (the same hint its actions return).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from ._extras import EXTRAS, install_hint, missing
from ._settings import MailServer, Settings, load_settings

if TYPE_CHECKING:
    from ._legs import Legs

__all__ = ["Check", "check_browser", "check_docker", "check_docker_hosts", "check_runtime", "check_sandbox_owner", "run_checks"]

Status = Literal["ok", "warn", "fail"]
_TIMEOUT_S = 3.0
# Commands that work after `pip install agent-legs` (no repository checkout needed).
_JAEGER = "docker run -d --name jaeger -p 4318:4318 -p 16686:16686 jaegertracing/all-in-one"


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


# -- directories --------------------------------------------------------------------------------
def check_dirs(workspace: Path, state_dir: Path) -> list[Check]:
    ws, st = workspace.expanduser().resolve(), state_dir.expanduser().resolve()
    if ws == st or ws in st.parents or st in ws.parents:
        return [
            Check(
                "directories",
                "fail",
                f"state dir {st} and workspace {ws} contain each other: actions could reach the action log, budgets and trash",
                "use two separate directories",
            )
        ]
    out = []
    for name, path in (("workspace", ws), ("state dir", st)):
        if path.exists() and not path.is_dir():
            out.append(Check(name, "fail", f"{path} exists and is not a directory", f"remove {path} or choose another"))
            continue
        probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
        if not os.access(probe, os.W_OK | os.X_OK):
            out.append(
                Check(
                    name,
                    "fail",
                    f"{path}: {probe} is not writable by this user",
                    f"chown or chmod {probe}, or choose another directory",
                )
            )
            continue
        detail = str(path) if path.exists() else f"{path} (will be created)"
        if name == "state dir" and path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            out.append(
                Check(name, "warn", f"{detail}: other users can read it (the action log holds arguments)", f"chmod 700 {path}")
            )
            continue
        out.append(Check(name, "ok", detail))
    return out


# -- Docker ------------------------------------------------------------------------------------
def check_docker(settings: Settings, secrets: Mapping[str, str] | None = None) -> list[Check]:
    """The engine (version) and the sandbox image (present, built from the current recipe); with
    ``settings.code.docker_hosts``, each host in turn (``check_docker_hosts``)."""
    not_installed = _extra_check("docker", "code")
    if not_installed is not None:
        return [not_installed]
    if settings.code.docker_hosts:
        return check_docker_hosts(settings, secrets)
    try:
        import docker
    except ImportError as exc:  # installed but broken
        return [Check("docker", "fail", f"the docker package cannot be imported: {exc}", install_hint("code"))]
    where = settings.code.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
    try:
        client = (
            docker.DockerClient(base_url=settings.code.docker_host, timeout=int(_TIMEOUT_S) + 2)
            if settings.code.docker_host
            else docker.from_env(timeout=int(_TIMEOUT_S) + 2)
        )
        version = client.version().get("Version", "?")
    except Exception as exc:
        if "PermissionError" in str(exc) or "Permission denied" in str(exc):
            return [
                Check(
                    "docker",
                    "fail",
                    f"this user may not use the engine at {where}: {_short(exc)}",
                    "add the user to the docker group (sudo usermod -aG docker $USER, then log in again), or run as root",
                )
            ]
        return [
            Check(
                "docker",
                "fail",
                f"the engine at {where} does not answer: {_short(exc)}",
                "start the engine (dockerd): sudo systemctl start docker (not installed: sudo apt-get install -y "
                "docker.io, or https://docs.docker.com/engine/install/), or set settings.code.docker_host / "
                "DOCKER_HOST",
            )
        ]
    checks = [Check("docker", "ok", f"engine {version} at {where}")]
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception as exc:
        checks.append(
            Check(
                "gVisor (runsc)",
                "warn",
                f"cannot list the engine's runtimes: {_short(exc)}",
                "check that this user may use the engine",
            )
        )
    else:
        checks.append(
            check_runtime(
                settings,
                runtimes,
                local=not (settings.code.docker_host or os.environ.get("DOCKER_HOST") or "unix://").startswith(
                    ("tcp:", "ssh:", "http")
                ),
            )
        )
    remote = (settings.code.docker_host or os.environ.get("DOCKER_HOST") or "").startswith(("tcp:", "ssh:", "http"))
    if remote:
        checks.append(
            Check(
                "docker host",
                "warn",
                "a remote engine: the sandbox bind-mounts the workspace by its "
                "local path, so the engine's host must see the workspace at the same path",
                "share the workspace at the same path on the engine's host (or use a local engine)",
            )
        )
    image = settings.code.image
    try:
        labels = client.images.get(image).labels or {}
    except Exception:
        fix = "agent-legs sandbox build" + (
            ""
            if shutil.which("mmdebstrap") or _registry_reachable()
            else " (offline build needs mmdebstrap: apt-get install -y mmdebstrap)"
        )
        checks.append(Check("sandbox image", "fail", f"{image} is missing", fix))
    else:
        from .actions.code._sandbox.build import RECIPE_LABEL, recipe_hash

        built = labels.get(RECIPE_LABEL)
        if built is None:
            checks.append(
                Check("sandbox image", "ok", f"{image} (a custom image: it needs python3; pandas and matplotlib for charts)")
            )
        elif built != recipe_hash():
            checks.append(
                Check("sandbox image", "warn", f"{image} was built from an older recipe ({built})", "agent-legs sandbox build")
            )
        else:
            checks.append(Check("sandbox image", "ok", f"{image} (recipe {built})"))
    with contextlib.suppress(Exception):
        client.close()
    return checks


def check_docker_hosts(settings: Settings, secrets: Mapping[str, str] | None = None) -> list[Check]:
    """Each host of ``settings.code.docker_hosts``, as the sandbox service connects to it: its TLS
    material readable and PEM, the engine answering with it, the image there, runsc when selected."""
    import tempfile

    from ._errors import ActionError
    from ._secrets import Secrets
    from .actions.code import _container
    from .actions.code._hosts import HOST_FIX, host_specs

    given = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="agent-legs-doctor-tls-") as tls_dir:
        for spec in host_specs(settings.code):
            name = f"docker host {spec.name}"
            missing = sorted({m for v in (spec.tls or {}).values() for m in re.findall(r"\{secret:(\w+)\}", v)} - set(given))
            if missing:
                checks.append(Check(name, "fail", f"unknown secret(s) {', '.join(missing)}", "set AGENT_LEGS_SECRET_<NAME>"))
                continue
            try:
                client = _container.connect(spec, settings.code.image, given, tls_dir)
            except ActionError as exc:
                checks.append(Check(name, "fail", exc.message, exc.hint or HOST_FIX))
                continue
            try:
                version = client.version().get("Version", "?")
                tls = "TLS with a client certificate" if spec.tls else "no TLS"
                checks.append(Check(name, "ok", f"engine {version} at {spec.url} ({tls}), image {settings.code.image} present"))
                runtime = check_runtime(settings, client.info().get("Runtimes") or {}, local=spec.local)
                checks.append(dataclasses.replace(runtime, name=f"{runtime.name} on {spec.name}"))
            except Exception as exc:
                checks.append(Check(name, "fail", f"the engine failed: {_short(exc)}", HOST_FIX))
            finally:
                with contextlib.suppress(Exception):
                    client.close()
    if any(not spec.local for spec in host_specs(settings.code)):
        checks.append(
            Check(
                "docker hosts",
                "warn",
                "remote engines: the sandbox bind-mounts the workspace by its local path, so each engine's host "
                "must see the workspace at the same path",
                "share the workspace at the same path on every engine's host (or use local engines)",
            )
        )
    return checks


_RUNSC_FIX = (
    "as root: bash shared/sandbox/ensure-runsc.sh (apt-get install runsc; registers it in "
    '/etc/docker/daemon.json with runtimeArgs ["--network=none", "--host-uds=open"] and reloads dockerd)'
)


def check_runtime(settings: Settings, runtimes: Mapping[str, Mapping[str, object]], *, local: bool = True) -> Check:
    """Is gVisor's runsc registered with the engine (``docker info``'s ``Runtimes``), and usable as set up?
    Selected (``settings.code.runtime = "runsc"``) but missing fails; merely absent is fine (optional)."""
    selected = settings.code.runtime == "runsc"
    entry = runtimes.get("runsc")
    if entry is None:
        if selected:
            return Check(
                "gVisor (runsc)",
                "fail",
                "settings.code.runtime = 'runsc' but the engine has no runsc "
                f"runtime (it has: {', '.join(sorted(runtimes)) or 'none'}): code.run would fail",
                _RUNSC_FIX,
            )
        return Check(
            "gVisor (runsc)",
            "ok",
            "not registered (optional: stronger isolation with settings.code.runtime = 'runsc'; " + _RUNSC_FIX + ")",
        )
    path = str(entry.get("path") or "runsc")
    args = [str(a) for a in entry.get("runtimeArgs") or []]  # type: ignore[attr-defined]
    if local and os.path.isabs(path) and not os.path.exists(path):
        return Check("gVisor (runsc)", "fail" if selected else "warn", f"registered, but {path} does not exist", _RUNSC_FIX)
    problems = []
    if "--network=none" not in args:
        problems.append("without runtimeArgs --network=none (sandboxes, which have no network, fail to start)")
    if not any(a in ("--host-uds=open", "--host-uds=all") for a in args):
        problems.append("without --host-uds=open (policy.code.network = true is refused under it)")
    use = "in use (settings.code.runtime)" if selected else "available (settings.code.runtime = 'runsc')"
    if problems:
        return Check(
            "gVisor (runsc)",
            "fail" if selected and "--network=none" not in args else "warn",
            f"registered at {path}, " + "; ".join(problems),
            _RUNSC_FIX,
        )
    return Check("gVisor (runsc)", "ok", f"{path} {' '.join(args)}: {use}")


def check_sandbox_owner(settings: Settings, workspace: Path) -> Check:
    """Under gVisor the sandbox is let into the workspace only by ownership (gVisor ignores ACLs)."""
    ws = workspace.expanduser().resolve()
    try:
        owner = ws.stat().st_uid
    except OSError:
        owner = 0  # created by Legs, as this user
        if os.geteuid() != 0:
            owner = os.geteuid()
    if owner == 0:
        return Check(
            "sandbox user",
            "fail",
            f"settings.code.runtime = 'runsc' and the workspace {ws} is (or will be) "
            "owned by root: gVisor ignores the ACLs that let the sandbox in, so code.run refuses it",
            f"mkdir -p {ws} && chown {settings.code.uid}:{settings.code.uid} {ws} (the account the sandbox "
            "acts as), or settings.code.runtime = 'runc'",
        )
    return Check("sandbox user", "ok", f"the sandbox runs as uid {owner}, the workspace's owner")


def _registry_reachable() -> bool:
    try:
        socket.create_connection(("registry-1.docker.io", 443), timeout=1.5).close()
    except OSError:
        return False
    return True


# -- browser -----------------------------------------------------------------------------------
def _playwright_chromium() -> str | None:
    """A browser installed by ``playwright install chromium`` (what the browser action tries first)."""
    base = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or os.path.expanduser("~/.cache/ms-playwright")
    for pattern in ("chromium_headless_shell-*/chrome-*/headless_shell", "chromium-*/chrome-linux*/chrome"):
        found = sorted(glob.glob(os.path.join(base, pattern)))
        if found:
            return found[-1]
    return None


def check_browser(settings: Settings) -> Check:
    not_installed = _extra_check("browser", "browser")
    if not_installed is not None:
        return not_installed
    if settings.browser.ws_endpoints:
        return _check_pool(settings.browser.ws_endpoints)
    remote = settings.browser.ws_endpoint or settings.browser.cdp_url
    if remote:
        parts = urlsplit(remote)
        port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
        check = _reach("browser", parts.hostname or "localhost", port)
        if check.status != "ok":
            check.fix = "start the remote browser (playwright run-server) or fix settings.browser.ws_endpoint/cdp_url"
        else:
            check.detail = f"remote browser at {remote} answers"
        return check
    from .actions.browser._launcher import find_chromium as _find_chromium

    path = settings.browser.executable_path or _playwright_chromium() or _find_chromium(None)
    if path is None or not os.path.exists(path):
        what = f"{settings.browser.executable_path} does not exist" if settings.browser.executable_path else "no Chromium found"
        return Check(
            "browser",
            "fail",
            what,
            "apt-get install -y chromium (or: playwright install chromium), "
            "or set settings.browser.executable_path / ws_endpoint",
        )
    try:
        run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("browser", "fail", f"{path} does not run: {_short(exc)}", "reinstall chromium")
    if run.returncode != 0:
        return Check(
            "browser",
            "fail",
            f"{path} --version failed: {(run.stderr or run.stdout).strip()[-200:]}",
            "reinstall chromium (missing shared libraries?)",
        )
    found = f"{run.stdout.strip() or 'chromium'} ({path})"
    from ._egress import is_loopback_host
    from ._egress_proxy import peer_uid_supported

    if is_loopback_host(settings.browser.proxy_bind) and not peer_uid_supported():
        return Check(
            "browser",
            "warn",
            f"{found}; the egress proxy cannot tell its browser apart by user here "
            "(netlink sock_diag is unavailable), so it asks for a credential, and Playwright disables the "
            "browser's HTTP cache for that",
            "modprobe tcp_diag, or allow NETLINK_SOCK_DIAG sockets in the container's seccomp profile",
        )
    return Check("browser", "ok", found)


# -- mail --------------------------------------------------------------------------------------
def _greeting(name: str, server: MailServer, default_ports: Mapping[str, int], expect: bytes) -> Check:
    port = server.port or default_ports[server.security]
    where = f"{server.host}:{port}"
    try:
        sock = socket.create_connection((server.host, port), timeout=_TIMEOUT_S)
    except OSError as exc:
        return Check(
            name,
            "fail",
            f"{where} unreachable: {_short(exc)}",
            f"check settings.email.{name.lower()} (host, port) and that the server runs",
        )
    try:
        sock.settimeout(_TIMEOUT_S)
        if server.security == "tls":
            context = ssl.create_default_context(cafile=server.ca_file)
            try:
                sock = context.wrap_socket(sock, server_hostname=server.host)
            except ssl.SSLError as exc:
                return Check(
                    name,
                    "fail",
                    f"{where}: TLS failed: {_short(exc)}",
                    f"set settings.email.{name.lower()}.ca_file for a private CA, or check security "
                    "(tls = implicit TLS, e.g. 465/993; starttls = 587/143)",
                )
        banner = sock.recv(512)
    except OSError as exc:
        return Check(
            name,
            "fail",
            f"{where} gave no greeting: {_short(exc)}",
            f"is {where} really a {name} server? check settings.email.{name.lower()}.security",
        )
    finally:
        sock.close()
    if not banner.startswith(expect):
        return Check(
            name,
            "fail",
            f"{where} is not a {name} server (it said {banner[:40]!r})",
            f"check settings.email.{name.lower()} port and security",
        )
    security = {"tls": "TLS", "starttls": "STARTTLS", "none": "no TLS"}[server.security]
    return Check(name, "ok", f"{where} answers ({security})")


def check_mail(settings: Settings, secrets: Mapping[str, str] | None = None) -> list[Check]:
    from ._secrets import _REF

    out = []
    not_installed = _extra_check("email", "email")
    if not_installed is not None:
        out.append(not_installed)
    for name, server, ports, expect in (
        ("SMTP", settings.email.smtp, {"tls": 465, "starttls": 587, "none": 25}, b"220"),
        ("IMAP", settings.email.imap, {"tls": 993, "starttls": 143, "none": 143}, b"* "),
    ):
        action = "email.send" if name == "SMTP" else "email.list/read"
        if server is None:
            out.append(
                Check(
                    name,
                    "warn",
                    f"not configured ({action} unavailable)",
                    f"set settings.email.{name.lower()} (host, port, security, username, password)",
                )
            )
            continue
        missing = [m for m in _REF.findall(server.password or "") if secrets is not None and m not in secrets]
        if missing:
            out.append(
                Check(
                    name,
                    "fail",
                    f"the password refers to secret {missing[0]!r}, which is not set",
                    f"pass secrets={{'{missing[0]}': ...}} to Legs (the CLI reads AGENT_LEGS_SECRET_{missing[0]})",
                )
            )
            continue
        out.append(_greeting(name, server, ports, expect))
    return out


# -- OTLP --------------------------------------------------------------------------------------
def check_otlp(settings: Settings) -> Check:
    from ._telemetry import _traces_endpoint

    endpoint = _traces_endpoint(settings.telemetry)
    if not endpoint:
        return Check(
            "OTLP",
            "warn",
            "no endpoint: spans reach only the local action log",
            f"start a collector ({_JAEGER}) and export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318, "
            "or hand Legs your application's tracer provider (a global one is used by itself)",
        )
    import httpx

    # An empty export request is valid OTLP: a collector answers 2xx. A UI port, a gRPC port (4317)
    # or a wrong path answer otherwise, and would have lost every span without a word.
    try:
        r = httpx.post(endpoint, content=b"", headers={"Content-Type": "application/x-protobuf"}, timeout=_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Check(
            "OTLP", "fail", f"{endpoint} unreachable: {_short(exc)}", f"start the collector (e.g. {_JAEGER}) or fix the endpoint"
        )
    if r.is_success:
        return Check("OTLP", "ok", f"{endpoint} accepts OTLP/HTTP")
    return Check(
        "OTLP",
        "fail",
        f"{endpoint} answered HTTP {r.status_code}: not an OTLP/HTTP traces receiver",
        "use the collector's OTLP/HTTP port (4318 for Jaeger; 4317 is gRPC) and base URL",
    )


# -- helpers -----------------------------------------------------------------------------------
def _extra_check(name: str, extra: str) -> Check | None:
    """A failed check naming the missing extra and the install command, or ``None`` when installed."""
    absent = missing(extra)
    if not absent:
        return None
    return Check(
        name,
        "fail",
        f"{EXTRAS[extra].what} need the agent-legs[{extra}] extra, which is not installed "
        f"({', '.join(absent)} cannot be imported)",
        install_hint(extra),
    )


def _check_pool(endpoints: list[str]) -> Check:
    """Every Playwright server of ``settings.browser.ws_endpoints`` answers (named without its query)."""
    from .actions.browser._pool import label

    down = []
    for endpoint in endpoints:
        parts = urlsplit(endpoint)
        check = _reach("browser", parts.hostname or "localhost", parts.port or (443 if parts.scheme == "wss" else 80))
        if check.status != "ok":
            down.append(f"{label(endpoint)} ({check.detail})")
    if not down:
        return Check("browser", "ok", f"all {len(endpoints)} Playwright servers of settings.browser.ws_endpoints answer")
    return Check(
        "browser",
        "warn" if len(down) < len(endpoints) else "fail",
        f"{len(down)} of {len(endpoints)} Playwright servers do not answer: {'; '.join(down)}",
        "start them (playwright run-server --port PORT --unsafe) or fix settings.browser.ws_endpoints",
    )


def _reach(name: str, host: str, port: int) -> Check:
    try:
        socket.create_connection((host, port), timeout=_TIMEOUT_S).close()
    except OSError as exc:
        return Check(name, "fail", f"{host}:{port} unreachable: {_short(exc)}")
    return Check(name, "ok", f"{host}:{port} answers")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "…"


def run_checks(
    settings: Settings | Legs | None = None,
    workspace: Path | str | None = None,
    state_dir: Path | str | None = None,
    secrets: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every check, in order: directories, Docker and the image, the browser, SMTP, IMAP, OTLP.

    Give either a ``Legs`` (its settings, directories and secrets are used) or ``Settings`` with the
    directories. ``secrets``, when given, lets the mail checks report missing ``{secret:NAME}``s.
    """
    from ._legs import Legs, resolve_dirs

    if isinstance(settings, Legs):
        legs = settings
        conf, workspace, state_dir = legs.settings, legs.workspace, legs.state_dir
        secrets = legs.secrets if secrets is None else secrets
    else:
        conf = settings if settings is not None else load_settings()  # a bad AGENT_LEGS_* value: ConfigError
    ws, st = resolve_dirs(workspace, state_dir)  # as Legs() would: arguments, AGENT_LEGS_* variables, defaults
    sandbox = [check_sandbox_owner(conf, ws)] if conf.code.runtime == "runsc" else []
    return [
        *check_dirs(ws, st),
        *check_docker(conf, secrets),
        *sandbox,
        check_browser(conf),
        *check_mail(conf, secrets),
        check_otlp(conf),
    ]
