"""`agent-legs doctor` against the real components: each check sees the real state and says how to fix it."""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from agent_legs import Legs, Settings
from agent_legs._doctor import (
    Check,
    check_browser,
    check_dirs,
    check_docker,
    check_mail,
    check_otlp,
    check_runtime,
    check_sandbox_owner,
    run_checks,
)
from agent_legs_testing.mail import USER


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_every_component_is_checked_and_every_problem_has_a_fix(tmp_path: Path, sandbox_image: str) -> None:
    checks = run_checks(Settings(), tmp_path / "ws", tmp_path / "st")
    names = [c.name for c in checks]
    assert names[:2] == ["workspace", "state dir"]
    assert {"docker", "sandbox image", "browser", "SMTP", "IMAP", "OTLP"} <= set(names)
    assert all(c.fix for c in checks if c.status != "ok"), checks
    by = _by_name(checks)
    assert by["SMTP"].status == "warn" and "email.send" in by["SMTP"].detail  # not configured
    assert by["OTLP"].status == "warn" and "4318" in (by["OTLP"].fix or "")
    assert by["workspace"].detail.endswith("(will be created)")


def test_a_legs_instance_gives_its_own_settings_and_directories(tmp_path: Path) -> None:
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        settings={"email": {"smtp": {"host": "127.0.0.1", "port": 1, "security": "none", "password": "{secret:NOPE}"}}},
    ) as legs:
        by = _by_name(run_checks(legs))
    assert by["workspace"].detail == str(tmp_path / "ws") and by["state dir"].status == "ok"
    # the Legs has no secret NOPE: said before the first email fails
    assert by["SMTP"].status == "fail" and "NOPE" in by["SMTP"].detail and "AGENT_LEGS_SECRET_NOPE" in (by["SMTP"].fix or "")


# -- directories ---------------------------------------------------------------------------------
def test_nested_directories_fail(tmp_path: Path) -> None:
    (check,) = check_dirs(tmp_path, tmp_path / "st")
    assert check.name == "directories" and check.status == "fail" and check.fix
    (check,) = check_dirs(tmp_path / "ws" / "inner", tmp_path / "ws")
    assert check.status == "fail"


def test_a_file_in_place_of_a_directory_fails_and_an_open_state_dir_warns(tmp_path: Path) -> None:
    (tmp_path / "ws").write_text("not a dir")
    (tmp_path / "st").mkdir(mode=0o755)
    (tmp_path / "st").chmod(0o755)
    by = _by_name(check_dirs(tmp_path / "ws", tmp_path / "st"))
    assert by["workspace"].status == "fail" and "not a directory" in by["workspace"].detail
    assert by["state dir"].status == "warn" and by["state dir"].fix == f"chmod 700 {tmp_path / 'st'}"


# -- Docker -------------------------------------------------------------------------------------
def test_docker_engine_and_image(sandbox_image: str) -> None:
    by = _by_name(check_docker(Settings(code={"image": sandbox_image})))
    assert by["docker"].status == "ok" and "engine" in by["docker"].detail
    assert by["sandbox image"].status == "ok" and "recipe" in by["sandbox image"].detail


def test_docker_down_and_image_missing(sandbox_image: str) -> None:
    (down,) = check_docker(Settings(code={"docker_host": "unix:///nonexistent/docker.sock"}))
    assert down.status == "fail" and "does not answer" in down.detail and "dockerd" in (down.fix or "")
    by = _by_name(check_docker(Settings(code={"image": "agent-legs-no-such-image:none"})))
    assert by["sandbox image"].status == "fail" and "agent-legs sandbox build" in (by["sandbox image"].fix or "")


def _engine_runtimes() -> dict:
    import docker

    client = docker.from_env()
    try:
        return client.info()["Runtimes"]
    finally:
        client.close()


def test_runsc_is_reported_from_the_engine(sandbox_image: str) -> None:
    by = _by_name(check_docker(Settings(code={"image": sandbox_image, "runtime": "runsc"})))
    check = by["gVisor (runsc)"]
    assert "runsc" in _engine_runtimes(), "runsc must be registered on test machines (shared/sandbox/ensure-runsc.sh)"
    assert check.status == "ok" and "--network=none" in check.detail and "in use" in check.detail


def test_runsc_selected_but_missing_fails_with_the_fix() -> None:
    runtimes = {k: v for k, v in _engine_runtimes().items() if k != "runsc"}  # this engine, without runsc
    check = check_runtime(Settings(code={"runtime": "runsc"}), runtimes)
    assert check.status == "fail" and "no runsc runtime" in check.detail and "ensure-runsc.sh" in (check.fix or "")
    check = check_runtime(Settings(), runtimes)  # not selected: optional, and said how to get it
    assert check.status == "ok" and "not registered" in check.detail and "ensure-runsc.sh" in check.detail
    no_uds = {**runtimes, "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}
    check = check_runtime(Settings(code={"runtime": "runsc"}), no_uds)
    assert check.status == "warn" and "--host-uds=open" in check.detail and check.fix
    no_network_arg = {**runtimes, "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--host-uds=open"]}}
    check = check_runtime(Settings(code={"runtime": "runsc"}), no_network_arg)
    assert check.status == "fail" and "--network=none" in check.detail and check.fix


def test_runsc_with_a_root_owned_workspace_fails(tmp_path: Path) -> None:
    import os

    settings = Settings(code={"runtime": "runsc"})
    (tmp_path / "ws").mkdir()
    check = check_sandbox_owner(settings, tmp_path / "ws")
    if os.geteuid() == 0:
        assert check.status == "fail" and "chown 1000:1000" in (check.fix or "")
        os.chown(tmp_path / "ws", 1000, 1000)
        assert check_sandbox_owner(settings, tmp_path / "ws").status == "ok"
    else:
        assert check.status == "ok"


def test_an_image_from_an_older_recipe_is_flagged(sandbox_image: str) -> None:
    tag = f"agent-legs-doctor-test:{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # a one-file image, made without any registry
        data = b"x"
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "import", "--change", "LABEL agent-legs.recipe=0000oldrecipe", "-", tag],
        input=buf.getvalue(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        by = _by_name(check_docker(Settings(code={"image": tag})))
        assert by["sandbox image"].status == "warn" and "older recipe" in by["sandbox image"].detail
        assert by["sandbox image"].fix == "agent-legs sandbox build"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


# -- browser ------------------------------------------------------------------------------------
def test_local_chromium_runs() -> None:
    check = check_browser(Settings())
    assert check.status == "ok", check
    assert "chrom" in check.detail.lower()


def test_browser_without_sock_diag_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without netlink sock_diag the local proxy falls back to a credential: pages lose the HTTP cache."""
    import agent_legs._egress_proxy as proxy_module

    monkeypatch.setattr(proxy_module, "peer_uid_supported", lambda: False)
    check = check_browser(Settings())
    assert check.status == "warn" and "HTTP cache" in check.detail and "tcp_diag" in (check.fix or ""), check


def test_missing_browser_and_remote_browser(tmp_path: Path) -> None:
    missing = check_browser(Settings(browser={"executable_path": str(tmp_path / "chromium")}))
    assert missing.status == "fail" and "does not exist" in missing.detail and "apt-get install" in (missing.fix or "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        unreachable = check_browser(Settings(browser={"ws_endpoint": f"ws://127.0.0.1:{port}/pw"}))
        s.listen()
        reachable = check_browser(Settings(browser={"ws_endpoint": f"ws://127.0.0.1:{port}/pw"}))
    assert unreachable.status == "fail" and "playwright run-server" in (unreachable.fix or "")
    assert reachable.status == "ok" and "remote browser" in reachable.detail


# -- mail ---------------------------------------------------------------------------------------
def test_smtp_greeting_over_starttls_server(smtp_server) -> None:
    settings = Settings(email={"smtp": {"host": smtp_server.host, "port": smtp_server.port, "security": "starttls"}})
    smtp, imap = check_mail(settings)
    assert smtp.status == "ok" and "STARTTLS" in smtp.detail
    assert imap.status == "warn" and imap.fix


def test_imap_over_tls_needs_the_right_ca(dovecot, mail_ca) -> None:
    server = {"host": dovecot.host, "port": dovecot.port, "security": "tls", "username": USER}
    ok = check_mail(Settings(email={"imap": {**server, "ca_file": mail_ca["ca"]}}))[1]
    assert ok.status == "ok" and "TLS" in ok.detail
    untrusted = check_mail(Settings(email={"imap": server}))[1]
    assert untrusted.status == "fail" and "TLS failed" in untrusted.detail and "ca_file" in (untrusted.fix or "")


def test_wrong_port_or_closed_port_fail(http_server) -> None:
    port = int(http_server.base.rsplit(":", 1)[1])
    settings = Settings(
        email={
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
            "imap": {"host": "127.0.0.1", "port": 1, "security": "none"},
        }
    )
    smtp, imap = check_mail(settings)
    assert smtp.status == "fail" and ("not a SMTP server" in smtp.detail or "no greeting" in smtp.detail)
    assert imap.status == "fail" and "unreachable" in imap.detail


# -- OTLP ---------------------------------------------------------------------------------------
def test_otlp_endpoint_is_a_real_receiver(otlp_backend) -> None:
    check = check_otlp(Settings(telemetry={"otlp_endpoint": otlp_backend.endpoint}))
    assert check.status == "ok", check


def test_otlp_endpoint_that_is_not_a_receiver_or_is_down(http_server) -> None:
    wrong = check_otlp(Settings(telemetry={"otlp_endpoint": http_server.base}))
    assert wrong.status == "fail" and "HTTP 404" in wrong.detail and "4318" in (wrong.fix or "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        down = check_otlp(Settings(telemetry={"otlp_endpoint": f"http://127.0.0.1:{port}"}))
    assert down.status == "fail" and "unreachable" in down.detail


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_otlp_endpoint_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:1")
    check = check_otlp(Settings())
    assert check.status == "fail" and "127.0.0.1:1" in check.detail


# -- the command ----------------------------------------------------------------------------------
def test_doctor_command_prints_json_and_fails_on_a_failing_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from agent_legs._cli import app

    monkeypatch.setenv("AGENT_LEGS_CODE__DOCKER_HOST", "unix:///nonexistent/docker.sock")
    # the state directory nested inside the workspace: must fail
    result = CliRunner().invoke(
        app, ["--workspace", str(tmp_path / "ws"), "--state-dir", str(tmp_path / "ws" / "state"), "doctor", "--json"]
    )
    checks = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by = {c["name"]: c for c in checks}
    assert result.exit_code == 1
    assert by["directories"]["status"] == "fail" and by["docker"]["status"] == "fail" and by["docker"]["fix"]
    assert {"browser", "SMTP", "IMAP", "OTLP"} <= set(by)
