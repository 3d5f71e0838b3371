"""Build the sandbox image: ``docker build`` of the Dockerfile when its base image can be had, else
offline from Debian packages (``mmdebstrap | docker import``, about 30-60 s).

Idempotent: images carry a label with the hash of their recipe (Dockerfile, package list, hooks);
an image whose label matches is reused. The image holds no Agent Legs code: the kernel driver is
sent to each container when it starts (see ``actions/code/_container.py``), so upgrading agent_legs never
needs a rebuild, and any image with python3 can serve as a sandbox. Standard library only, so it also runs as a plain
script where agent_legs is not installed (``shared/sandbox/build-offline.sh`` does that):
``python3 .../agent_legs/actions/code/_sandbox/build.py [--tag T] [--force] [--offline]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "Dockerfile"
DEFAULT_TAG = "agent-legs-sandbox:latest"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# python-is-python3: `python` on PATH, as tools (and the peers in the benchmark) expect
PACKAGES = ["python3", "python3-numpy", "python3-pandas", "python3-matplotlib", "python-is-python3", "procps"]
# only hard dependencies (Debian's python3-fonttools still pulls scipy, and through pythran gcc: ~1.2 GB)
APT_OPTIONS = ['Apt::Install-Recommends "false"']
RECIPE_LABEL = "agent-legs.recipe"  # what the build checks: everything that went into the image
HOOKS = [
    'echo "sandbox:x:1000:1000::/tmp:/bin/bash" >> "$1/etc/passwd"',
    'echo "sandbox:x:1000:" >> "$1/etc/group"',
    'mkdir -p "$1/workspace"',
    'rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"*',
]
CHANGES = [
    "USER 1000:1000",
    "WORKDIR /workspace",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "ENV MPLBACKEND=Agg",
    "ENV HOME=/tmp",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    'CMD ["python3"]',
]

Progress = Callable[[str], None]


def recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(DOCKERFILE.read_bytes())
    h.update(json.dumps([SUITE, PACKAGES, APT_OPTIONS, HOOKS, CHANGES]).encode())
    return h.hexdigest()[:16]


def _docker(*args: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=check, text=True, capture_output=True, timeout=timeout)


def image_labels(tag: str) -> dict[str, str] | None:
    """The image's labels, or None when there is no such image."""
    r = _docker("image", "inspect", tag, "--format", "{{json .Config.Labels}}", check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout or "null") or {}


def debian_mirror() -> str:
    """The machine's own Debian mirror (apt sources), so the offline build uses what apt uses."""
    for path in [*sorted(Path("/etc/apt/sources.list.d").glob("*.sources")), Path("/etc/apt/sources.list")]:
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
                return line.split()[1] if not line.split()[1].startswith("[") else line.split("]")[1].split()[0]
    return DEFAULT_MIRROR


def _pump(stream: object, progress: Progress, tail: list[str]) -> None:
    """Forward mmdebstrap's status lines as progress; keep a tail for the error message."""
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").rstrip()
        tail.append(line)
        del tail[:-40]
        if line.startswith("I: ") and not line.startswith("I: running"):
            progress(line[3:])


def build_offline(tag: str, progress: Progress) -> None:
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (as root on Debian/Ubuntu: apt-get install -y mmdebstrap)")
    if os.geteuid() != 0:
        raise RuntimeError("the offline build runs mmdebstrap --mode=root and needs root (or build with a registry)")
    mirror = debian_mirror()
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        f"--include={','.join(PACKAGES)}",
        *[f"--aptopt={o}" for o in APT_OPTIONS],
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
    ]
    cmd += [f"--customize-hook={h}" for h in HOOKS]
    cmd += [SUITE, "-", mirror]
    labels = [f"LABEL {RECIPE_LABEL}={recipe_hash()}", "LABEL agent-legs=1"]
    staging = f"{tag.rsplit(':', 1)[0]}:building"  # tagged for real only if mmdebstrap succeeded
    importer = ["docker", "import", *[a for c in [*CHANGES, *labels] for a in ("--change", c)], "-", staging]
    progress(f"mmdebstrap {SUITE} ({', '.join(PACKAGES)}) from {mirror} | docker import")
    strap = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tail: list[str] = []
    pump = threading.Thread(target=_pump, args=(strap.stderr, progress, tail), daemon=True)
    pump.start()
    imp = subprocess.run(importer, stdin=strap.stdout, capture_output=True, text=True)
    assert strap.stdout is not None
    strap.stdout.close()
    code = strap.wait()
    pump.join(5)
    if code != 0:
        _docker("rmi", "-f", staging, check=False)
        raise RuntimeError("mmdebstrap failed:\n" + "\n".join(tail))
    if imp.returncode != 0:
        raise RuntimeError(f"docker import failed: {imp.stderr[-2000:]}")
    _docker("tag", staging, tag)
    _docker("rmi", staging, check=False)


def _registry_reachable(host: str = "registry-1.docker.io", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def build_with_dockerfile(tag: str, progress: Progress) -> bool:
    """``docker build`` when the base image can be had; False when it cannot (no registry)."""
    base = "python:3.11-slim-bookworm"
    if _docker("image", "inspect", base, check=False).returncode != 0 and not _registry_reachable():
        progress("no container registry reachable: building offline")
        return False
    progress(f"docker build (base {base})")
    r = _docker(
        "build",
        "-t",
        tag,
        "--label",
        f"{RECIPE_LABEL}={recipe_hash()}",
        "--label",
        "agent-legs=1",
        "-f",
        str(DOCKERFILE),
        str(HERE),
        check=False,
        timeout=1800,
    )
    if r.returncode != 0:
        progress(f"docker build failed, building offline instead: {r.stderr.strip()[-300:]}")
    return r.returncode == 0


def build_image(tag: str = DEFAULT_TAG, progress: Progress = print, force: bool = False, offline: bool | None = None) -> str:
    """Make ``tag`` an image of the current recipe; returns the tag. Raises RuntimeError with the reason."""
    if shutil.which("docker") is None:
        raise RuntimeError("the docker CLI is not installed (apt-get install -y docker.io)")
    try:
        alive = _docker("version", "--format", "{{.Server.Version}}", check=False, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        alive = False
    if not alive:
        raise RuntimeError(
            "the Docker engine does not answer (start it: sudo systemctl start docker; "
            "or set DOCKER_HOST; agent-legs doctor says more)"
        )
    labels = image_labels(tag) or {}
    if not force and labels.get(RECIPE_LABEL) == recipe_hash():
        progress(f"{tag} is up to date (recipe {recipe_hash()})")
        return tag
    old = _docker("image", "inspect", tag, "--format", "{{.Id}}", check=False).stdout.strip()
    try:
        if offline is not True and build_with_dockerfile(tag, progress):
            progress(f"built {tag} with docker build (recipe {recipe_hash()})")
        else:
            build_offline(tag, progress)
            progress(f"built {tag} offline (recipe {recipe_hash()})")
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the image build timed out: {exc}") from None
    if old:  # an imported image shares no layers: drop the replaced one (refused while containers use it)
        _docker("image", "rm", old, check=False)
    return tag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default=os.environ.get("AGENT_LEGS_SANDBOX_IMAGE", DEFAULT_TAG))
    parser.add_argument("--force", action="store_true", help="rebuild even if the image is up to date")
    parser.add_argument("--offline", action="store_true", help="skip docker build, go straight to mmdebstrap")
    args = parser.parse_args()
    try:
        build_image(
            args.tag, progress=lambda m: print(f"sandbox: {m}", flush=True), force=args.force, offline=args.offline or None
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
