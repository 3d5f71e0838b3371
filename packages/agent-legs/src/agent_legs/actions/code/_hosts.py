"""The Docker hosts the sandboxes run on: their settings, TLS material, connection, health and placement.

``settings.code.docker_hosts`` lists engines (``tcp://host:2376`` with a TLS client certificate, or a
``unix://`` socket); ``settings.code.docker_host`` (one engine, or ``DOCKER_HOST``, or the local
socket) stays the one-host form. ``host_specs`` turns either into ``HostSpec`` s.

Invariants:

* **Checked before anything starts.** A bad URL, a TLS field without its partners, TLS on a unix
  socket, a ``tcp://`` engine off loopback without TLS (anyone who reaches the port is root on that
  machine), duplicate names: a ``ConfigError`` when the settings load (``DockerHostSettings``). An
  unknown ``{secret:NAME}`` or secret text that is not PEM: a ``ConfigError`` when ``Legs`` starts
  (``check_tls_secrets``, no I/O). Files that cannot be read, a certificate the engine refuses, an
  engine that does not answer: ``unavailable`` on the call, naming the host and the fix.
* **Our TLS material, nothing else.** The client trusts only the configured CA and presents only
  the configured certificate: the environment's ``REQUESTS_CA_BUNDLE``/proxy variables are ignored
  (``trust_env = False``), the server's certificate must match the URL's host. PEM given as
  ``{secret:NAME}`` is written to a private directory (0700, files 0600) for the service's life only.
* **Placement by load** (``pick``): a new session goes to the healthy host with the fewest live
  sessions per unit of ``weight`` (ties: the order of the list). A host that fails (it does not
  answer, or a kernel's connection drops and it does not answer a ping) is taken out
  (``Host.fail``) with the reason; new sessions go elsewhere, and it is tried again after
  ``settings.code.host_retry_s``.

Threat model: the settings are the operator's; the code in the sandboxes is the attacker's and
cannot reach this module. A remote engine is as trusted as the local one (it runs the workspace's
bind mount): authenticate it (TLS with a private CA) and keep its port off untrusted networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..._errors import ActionError, ConfigError
from ..._sections import SettingsSection

if TYPE_CHECKING:
    from ..._secrets import Secrets
    from ._kernel import Kernel

__all__ = [
    "HOST_FIX",
    "DockerHostSettings",
    "Host",
    "HostSpec",
    "check_tls_secrets",
    "host_specs",
    "negotiate",
    "open_client",
    "pick",
]

HOST_FIX = (
    "Check that the engine runs and is reachable at that URL, and that settings.code.docker_hosts gives it "
    "the CA and a client certificate it accepts (tls_ca, tls_cert, tls_key: files or {secret:NAME} PEM); "
    "`agent-legs doctor` checks every host."
)
_SECRET = re.compile(r"^\{secret:([A-Za-z_][A-Za-z0-9_]*)\}$")
_TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key")


def _check_url(url: str) -> tuple[str, str, int | None]:
    """(scheme, host or socket path, port) of an engine URL; ``ValueError`` naming the form otherwise."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path.startswith("/"):
            raise ValueError(f"{url!r}: a unix socket URL is unix:///path/to/docker.sock")
        return scheme, parts.path, None
    if scheme != "tcp":
        raise ValueError(f"{url!r}: the scheme must be tcp:// (e.g. tcp://10.0.0.7:2376) or unix:///var/run/docker.sock")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number (e.g. tcp://10.0.0.7:2376)") from None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"{url!r}: the form is tcp://HOST:PORT (e.g. tcp://10.0.0.7:2376), nothing else")
    return scheme, parts.hostname, port


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class DockerHostSettings(SettingsSection):
    """One engine of ``settings.code.docker_hosts``."""

    url: str = Field(description="The engine: tcp://HOST:PORT (TLS) or unix:///path/to/docker.sock.")
    name: str | None = Field(None, description="How errors and `agent-legs doctor` name it; default: the URL.")
    weight: float = Field(1.0, gt=0, le=1000, description="Relative capacity: sessions are spread by live sessions / weight.")
    tls_ca: str | None = Field(None, description="The CA that signed the engine's certificate: a file path or {secret:NAME} PEM.")
    tls_cert: str | None = Field(None, description="The client certificate: a file path or {secret:NAME} PEM.")
    tls_key: str | None = Field(None, description="The client certificate's private key: a file path or {secret:NAME} PEM.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        _check_url(value)
        return value.strip()

    @model_validator(mode="after")
    def _tls(self) -> DockerHostSettings:
        scheme, host, _ = _check_url(self.url)
        given = [f for f in _TLS_FIELDS if getattr(self, f)]
        if scheme == "unix" and given:
            raise ValueError(f"{self.url}: TLS ({', '.join(given)}) is for tcp:// engines, not a unix socket")
        if scheme == "tcp" and given and len(given) != len(_TLS_FIELDS):
            missing = [f for f in _TLS_FIELDS if f not in given]
            raise ValueError(f"{self.url}: TLS needs tls_ca, tls_cert and tls_key together ({', '.join(missing)} missing)")
        if scheme == "tcp" and not given and not _loopback(host):
            raise ValueError(
                f"{self.url}: a tcp:// engine off loopback needs TLS (tls_ca, tls_cert, tls_key): without it, "
                "anyone who reaches the port is root on that machine"
            )
        for f in given:
            value = getattr(self, f).strip()
            if "{secret:" in value and not _SECRET.match(value):
                raise ValueError(f"{self.url}: {f} is a file path or exactly one {{secret:NAME}} (PEM text), not {value!r}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.url


@dataclass(frozen=True)
class HostSpec:
    """One engine to connect to: the URL (None: DOCKER_HOST or the local socket), TLS, weight."""

    url: str | None
    name: str
    weight: float = 1.0
    tls: dict[str, str] | None = None  # tls_ca / tls_cert / tls_key: a path or {secret:NAME}
    listed: bool = False  # from settings.code.docker_hosts (not the one-host docker_host form)

    @property
    def local(self) -> bool:
        url = self.url or os.environ.get("DOCKER_HOST") or "unix://"
        return url.startswith(("unix://", "npipe://"))


def host_specs(code: Any) -> list[HostSpec]:
    """The engines of ``settings.code``: ``docker_hosts``, else the one ``docker_host`` (or the default)."""
    if code.docker_hosts:
        return [
            HostSpec(h.url, h.label, h.weight, {f: getattr(h, f).strip() for f in _TLS_FIELDS} if h.tls_ca else None, listed=True)
            for h in code.docker_hosts
        ]
    where = code.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
    return [HostSpec(code.docker_host, where)]


def check_tls_secrets(code: Any, secrets: Secrets) -> None:
    """At start, without I/O: every ``{secret:NAME}`` of a host exists and holds PEM of the right kind."""
    for h in code.docker_hosts:
        for f in _TLS_FIELDS:
            m = _SECRET.match((getattr(h, f) or "").strip())
            if m is None:
                continue
            if m.group(1) not in secrets:
                raise ConfigError(f"settings.code.docker_hosts ({h.label}): {f} names the unknown secret {m.group(1)!r}")
            problem = _pem_problem(f, secrets[m.group(1)].encode())
            if problem:
                raise ConfigError(f"settings.code.docker_hosts ({h.label}): {f} (secret {m.group(1)!r}) {problem}")


def _pem_problem(kind: str, data: bytes) -> str | None:
    """Why ``data`` is not a PEM certificate (tls_ca, tls_cert) or private key (tls_key), or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        if kind == "tls_key":
            load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except Exception as exc:
        what = "an unencrypted PEM private key" if kind == "tls_key" else "PEM certificate text"
        return f"is not {what} ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _material(spec: HostSpec, secrets: Secrets, directory: str) -> dict[str, str]:
    """Paths of the host's TLS files: given files, checked readable; secrets written privately to ``directory``."""
    out: dict[str, str] = {}
    assert spec.tls is not None
    for f, value in spec.tls.items():
        m = _SECRET.match(value)
        if m is None:
            try:
                data = open(os.path.expanduser(value), "rb").read()  # noqa: SIM115
            except OSError as exc:
                raise ActionError(
                    "unavailable",
                    f"the Docker host {spec.name}: cannot read {f} = {value!r} ({exc.strerror or exc})",
                    hint=f"Fix the path or the file's permissions in settings.code.docker_hosts, or give {f} as {{secret:NAME}}.",
                ) from None
            path = os.path.expanduser(value)
        else:
            data = secrets[m.group(1)].encode()
            fd, path = tempfile.mkstemp(prefix=f"{f}-", suffix=".pem", dir=directory)
            with os.fdopen(fd, "wb") as out_file:  # mkstemp: mode 0600
                out_file.write(data)
        problem = _pem_problem(f, data)
        if problem:
            raise ActionError(
                "unavailable",
                f"the Docker host {spec.name}: {f} = {value!r} {problem}",
                hint="Give the PEM files the engine's operator issued (ca.pem, cert.pem, key.pem) in settings.code.docker_hosts.",
            )
        out[f] = path
    return out


def open_client(spec: HostSpec, secrets: Secrets, directory: str, connect_s: float) -> Any:
    """A docker client for ``spec`` (blocking; no request made yet). Raises ``ActionError`` on bad TLS files."""
    import docker
    from docker.tls import TLSConfig

    if spec.url is None:  # the API version is learnt from the first ping (``negotiate``), not a /version probe
        return docker.from_env(timeout=int(connect_s), version=docker.constants.MINIMUM_DOCKER_API_VERSION)
    tls = None
    if spec.tls is not None:
        paths = _material(spec, secrets, directory)
        tls = TLSConfig(client_cert=(paths["tls_cert"], paths["tls_key"]), ca_cert=paths["tls_ca"], verify=True)
    # no version probe in the constructor: it would run before trust_env is off (REQUESTS_CA_BUNDLE
    # in the environment would then replace our CA); the version comes with the first ping (``negotiate``)
    client = docker.DockerClient(
        base_url=spec.url, tls=tls, timeout=int(connect_s), version=docker.constants.MINIMUM_DOCKER_API_VERSION
    )
    client.api.trust_env = False  # our CA and no proxy, whatever the environment says
    return client


def negotiate(client: Any) -> None:
    """Ping the engine (blocking) and speak its API version, as the SDK's ``version="auto"`` does,
    without that mode's extra ``/version`` round trip: a ping's reply names the version
    (``Api-Version``); an engine that does not say is asked."""
    reply = client.api._get(client.api._url("/_ping"))
    client.api._raise_for_status(reply)
    server = reply.headers.get("Api-Version")
    client.api._version = server or client.api._retrieve_server_version()


@dataclass(eq=False)
class Host:
    """One engine as the service knows it: its client, its warm pool, and whether it is taken out."""

    spec: HostSpec
    client: Any = None
    pool: list[Kernel] = field(default_factory=list)
    pool_task: Any = None
    promised: Any = None  # a session's future for the kernel the pool is starting now (one at a time)
    down: bool = True  # until it answered (``CodeService`` connects it), and after a failure
    retry_at: float = 0.0  # monotonic: when a host taken out is tried again
    reason: str = "not connected yet"  # why it is out
    sessions: int = 0  # live sessions placed here (and sessions being started here), set before ``pick``
    pending: int = 0  # kernels being started here for sessions
    provisional: bool = False  # up before its client is connected (``HostCare.defer_connect``)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a call ended (``CodeService.after_call``)
    wanted: asyncio.Event = field(default_factory=asyncio.Event)  # a new session wants a kernel

    @property
    def name(self) -> str:
        return self.spec.name

    def up(self) -> bool:
        return (self.client is not None or self.provisional) and not self.down

    def fail(self, reason: str, retry_s: float) -> None:
        self.down, self.reason, self.retry_at = True, reason, time.monotonic() + retry_s

    def error(self, what: str) -> ActionError:
        """``unavailable``, naming the host, why it is out and the fix."""
        return ActionError(
            "unavailable",
            f"{what}: the Docker host {self.name} is out of service ({self.reason})",
            retryable=True,
            hint=HOST_FIX,
        )


def pick(hosts: list[Host]) -> Host | None:
    """The healthy host with the fewest live sessions per unit of weight (first in the list on a tie)."""
    live = [h for h in hosts if h.up()]
    if not live:
        return None
    return min(live, key=lambda h: (h.sessions + 1) / h.spec.weight)
