"""A second, real Docker daemon for tests: TLS on a loopback TCP port, beside the machine's own engine.

``SecondDockerd`` starts ``dockerd`` with its own ``--data-root``, ``--exec-root`` (so its own
managed containerd), ``--pidfile``, a private unix socket, a bridge of its own (``--bridge=al-br-*``,
made here and removed after; NOT ``--bridge=none``, which makes dockerd delete the machine's
``docker0``, the main engine's bridge, from under it) and ``--iptables=false`` (it never touches the
main engine's networks: ``start`` checks that ``docker0`` is still there), listening on
``tcp://127.0.0.1:<free port>`` with ``--tlsverify``: only clients holding a certificate of the
test's own CA get in. The certificates are made here (``trustme``): the server's for 127.0.0.1, a
client's from the same CA, and a client's from a *different* CA (it must be refused).

``load_image`` copies an image from the main engine (``docker save | docker load``). ``kill``
SIGKILLs the daemon and everything of it (containerd, shims, containers: a machine that vanished);
``start`` again brings it back on the same port and data. ``destroy`` removes its containers, stops
it, ends any process of it still running (found by its unique root directory in their command
lines, never by name), unmounts and removes its directories: nothing of it is left after the test.

Fixture: ``second_dockerd`` (session). It FAILS the test (never skips) with the reason when the
daemon cannot start: not root, no ``dockerd``, or its log's last lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._net import free_port
from ._procs import descendants
from ._require import component_missing

__all__ = ["DockerdUnavailable", "SecondDockerd", "second_dockerd"]


class DockerdUnavailable(RuntimeError):
    """The second daemon could not be started (the message says why)."""


def _ancestors() -> set[int]:
    """This process and those above it (never to be killed, whatever their command lines say)."""
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _write_tls(directory: Path) -> dict[str, str]:
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("agent-legs-client")
    stranger = other.issue_cert("agent-legs-client")
    paths: dict[str, str] = {}

    def put(name: str, data: bytes) -> None:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name.removesuffix(".pem")] = str(path)

    put("ca.pem", ca.cert_pem.bytes())
    put("server-cert.pem", b"".join(b.bytes() for b in server.cert_chain_pems))
    put("server-key.pem", server.private_key_pem.bytes())
    put("client-cert.pem", b"".join(b.bytes() for b in client.cert_chain_pems))
    put("client-key.pem", client.private_key_pem.bytes())
    put("other-ca.pem", other.cert_pem.bytes())
    put("stranger-cert.pem", b"".join(b.bytes() for b in stranger.cert_chain_pems))
    put("stranger-key.pem", stranger.private_key_pem.bytes())
    return paths


@dataclass
class SecondDockerd:
    """One extra dockerd (see the module docstring); works outside pytest too."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="al-dockerd-", dir="/tmp")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tls: dict[str, str] = field(default_factory=dict)
    bridge: str = field(default_factory=lambda: f"al-br-{os.urandom(3).hex()}")

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/d.sock"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def start(self, timeout_s: float = 90.0) -> None:
        if os.geteuid() != 0:
            raise DockerdUnavailable("a second dockerd needs root")
        exe = shutil.which("dockerd")
        if exe is None:
            raise DockerdUnavailable("dockerd is not installed (apt-get install -y docker.io)")
        if not self.tls:
            (self.root / "tls").mkdir(exist_ok=True)
            self.tls = _write_tls(self.root / "tls")
        had_docker0 = Path("/sys/class/net/docker0").exists()
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True, capture_output=True)
            # a documentation range (RFC 5737), on a bridge that stays down: routes nothing anywhere
            subprocess.run(["ip", "addr", "add", "198.51.100.1/30", "dev", self.bridge], check=True, capture_output=True)
        cmd = [
            exe,
            f"--data-root={self.root}/data",
            f"--exec-root={self.root}/exec",
            f"--pidfile={self.root}/dockerd.pid",
            "-H",
            self.socket,
            "-H",
            self.url,
            "--tlsverify",
            f"--tlscacert={self.tls['ca']}",
            f"--tlscert={self.tls['server-cert']}",
            f"--tlskey={self.tls['server-key']}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--cgroup-parent=/al-second-dockerd",
            f"--config-file={self._config()}",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DockerdUnavailable(f"dockerd exited ({self.process.returncode}): {self._log_tail()}")
            with contextlib.suppress(subprocess.TimeoutExpired):  # a restarting daemon may be slow to answer
                if self.cli("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode == 0:
                    if had_docker0 and not Path("/sys/class/net/docker0").exists():
                        raise DockerdUnavailable("the second dockerd removed the main engine's docker0 bridge")
                    return
            time.sleep(0.5)
        raise DockerdUnavailable(f"dockerd did not answer within {timeout_s:g} s: {self._log_tail()}")

    def _config(self) -> str:
        """An empty daemon config: the main engine's /etc/docker/daemon.json (runtimes, hosts) is not ours."""
        path = self.root / "daemon.json"
        path.write_text("{}")
        return str(path)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-8:])
        return "(no log)"

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``docker -H <our unix socket> ...``."""
        return subprocess.run(
            ["docker", "-H", self.socket, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def load_image(self, image: str) -> None:
        """Copy ``image`` from the main engine into this one (no registry)."""
        if self.cli("image", "inspect", image, check=False).returncode == 0:
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        try:
            load = subprocess.run(
                ["docker", "-H", self.socket, "load"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=600,
            )
        finally:
            if save.stdout is not None:
                save.stdout.close()
            save.wait(timeout=60)
        if load.returncode != 0 or save.returncode != 0:
            raise DockerdUnavailable(f"loading {image} into the second dockerd failed: {load.stderr.strip()}")

    def containers(self) -> list[str]:
        return self.cli("ps", "-aq", "--no-trunc", check=False).stdout.split()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _own_processes(self) -> set[int]:
        """Every process of this daemon: dockerd, its containerd, the shims (their command lines name our
        unique root) and what runs under them (the containers)."""
        marks = (f"--data-root={self.root}/data".encode(), f"{self.root}/exec/".encode())
        roots: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if any(m in cmdline for m in marks):
                    roots.add(int(entry.name))
        return (roots | {d for r in roots for d in descendants(r)}) - _ancestors()

    def _kill_all(self) -> None:
        for _ in range(3):
            pids = self._own_processes()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the daemon, its containerd, shims and containers: a machine that vanished."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self._kill_all()
        # a killed containerd may linger as a zombie (no init reaps it here): its pidfile would make
        # the next dockerd wait for it as if it still ran
        with contextlib.suppress(OSError):
            (self.root / "exec" / "containerd" / "containerd.pid").unlink()

    def stop(self) -> None:
        """Remove every container, then stop the daemon cleanly (it unmounts its storage)."""
        if self.running():
            ids = self.containers()
            if ids:
                self.cli("rm", "-f", *ids, check=False)
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def destroy(self) -> None:
        """Nothing of the daemon is left: its containers removed, every process of it ended, unmounted."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.stop()
        self._kill_all()
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if str(self.root) in line]
        for mount in sorted(mounts, key=len, reverse=True):  # deepest first
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


@pytest.fixture(scope="session")
def second_dockerd(sandbox_image: str) -> Iterator[SecondDockerd]:
    """A second dockerd with TLS on loopback, holding the sandbox image; removed after the session."""
    daemon = SecondDockerd()
    try:
        daemon.start()
        daemon.load_image(sandbox_image)
    except (DockerdUnavailable, OSError, subprocess.SubprocessError) as exc:
        daemon.destroy()
        component_missing(
            "a second Docker daemon", str(exc), "run the tests as root on a machine with docker.io (dockerd) installed"
        )
    yield daemon
    daemon.destroy()
