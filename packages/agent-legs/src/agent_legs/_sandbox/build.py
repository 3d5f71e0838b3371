"""Build the sandbox image: ``docker build`` of the Dockerfile when a registry is reachable, else
offline from Debian packages (``mmdebstrap | docker import``, about 30-60 s). Idempotent: an image
labelled with the current driver's hash is reused. ``python -m agent_legs._sandbox.build``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from . import DRIVER_PATH, driver_hash

PACKAGES = ["python3", "python3-numpy", "python3-pandas", "python3-matplotlib"]
LABEL = "agent-legs.driver"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _docker(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        ["docker", *args], check=check, text=True, capture_output=True, **kw
    )
    return result


def current_label(tag: str) -> str | None:
    r = _docker("image", "inspect", tag, "--format", f'{{{{ index .Config.Labels "{LABEL}" }}}}', check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def debian_mirror() -> str:
    for path in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                uri = line.split(":", 1)[1].split()[0]
                if "security" not in uri:
                    return uri
            if line.startswith("deb ") and "security" not in line:
                return line.split()[1]
    return DEFAULT_MIRROR


def build_offline(tag: str, progress: Callable[[str], None]) -> None:
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
    mirror = debian_mirror()
    hooks = [
        'echo "sandbox:x:1000:1000::/tmp:/bin/bash" >> "$1/etc/passwd"',
        'echo "sandbox:x:1000:" >> "$1/etc/group"',
        'mkdir -p "$1/workspace" "$1/opt/agent-legs"',
        f'cp {DRIVER_PATH} "$1/opt/agent-legs/driver.py"',
        'rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"*',
    ]
    cmd = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", f"--include={','.join(PACKAGES)}",
           "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
           "--dpkgopt=path-exclude=/usr/share/locale/*"]
    cmd += [f"--customize-hook={h}" for h in hooks]
    cmd += ["bookworm", "-", mirror]
    changes = ["USER 1000:1000", "WORKDIR /workspace", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
               "ENV MPLBACKEND=Agg", "ENV HOME=/tmp", "ENV PYTHONDONTWRITEBYTECODE=1",
               'CMD ["python3", "-u", "/opt/agent-legs/driver.py"]', f"LABEL {LABEL}={driver_hash()}"]
    staging = f"{tag.rsplit(':', 1)[0]}:building"  # tagged for real only if mmdebstrap succeeded
    importer = ["docker", "import", *[a for c in changes for a in ("--change", c)], "-", staging]
    progress(f"mmdebstrap bookworm ({', '.join(PACKAGES)}) from {mirror} | docker import {tag}")
    strap = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    imp = subprocess.run(importer, stdin=strap.stdout, capture_output=True, text=True)
    assert strap.stdout is not None
    strap.stdout.close()
    err = strap.stderr.read().decode(errors="replace") if strap.stderr else ""
    if strap.wait() != 0:
        _docker("rmi", "-f", staging, check=False)
        raise RuntimeError(f"mmdebstrap failed:\n{err[-3000:]}")
    if imp.returncode != 0:
        raise RuntimeError(f"docker import failed: {imp.stderr[-2000:]}")
    _docker("tag", staging, tag)
    _docker("rmi", staging, check=False)


def _registry_reachable(host: str = "registry-1.docker.io", timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def build_with_dockerfile(tag: str, progress: Callable[[str], None]) -> bool:
    """``docker build`` when the base image can be had; False when it cannot (no registry)."""
    base = "python:3.11-slim-bookworm"
    if _docker("image", "inspect", base, check=False).returncode != 0 and not _registry_reachable():
        progress("no container registry reachable: building offline")
        return False
    progress(f"docker build (base {base})")
    r = _docker("build", "-t", tag, "--label", f"{LABEL}={driver_hash()}", str(DRIVER_PATH.parent), check=False,
                timeout=900)
    return r.returncode == 0


def build_image(tag: str = "agent-legs-sandbox:latest", progress: Callable[[str], None] = print,
                force: bool = False, offline: bool | None = None) -> str:
    if shutil.which("docker") is None:
        raise RuntimeError("the docker CLI is not installed (apt-get install -y docker.io)")
    if _docker("version", check=False).returncode != 0:
        raise RuntimeError("the Docker engine does not answer (start dockerd or set DOCKER_HOST)")
    if not force and current_label(tag) == driver_hash():
        progress(f"{tag} is up to date (driver {driver_hash()})")
        return tag
    if offline is not True and build_with_dockerfile(tag, progress):
        progress(f"built {tag} with docker build")
        return tag
    build_offline(tag, progress)
    progress(f"built {tag} offline (driver {driver_hash()})")
    return tag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tag", default="agent-legs-sandbox:latest")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--offline", action="store_true", help="skip docker build, go straight to mmdebstrap")
    args = parser.parse_args()
    try:
        build_image(args.tag, progress=lambda m: print(f"sandbox: {m}", flush=True), force=args.force,
                    offline=args.offline or None)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
