from __future__ import annotations

from agent_legs import Settings
from agent_legs._doctor import run_checks


def test_doctor_reports_every_component(tmp_path) -> None:
    checks = {c.name: c for c in run_checks(Settings(), tmp_path / "ws", tmp_path / "st")}
    assert {"workspace", "state dir", "docker", "browser", "SMTP", "IMAP", "OTLP"} <= set(checks)
    assert checks["SMTP"].status == "warn" and checks["SMTP"].fix


def test_doctor_flags_nested_dirs_and_unreachable_servers(tmp_path) -> None:
    settings = Settings(email={"smtp": {"host": "127.0.0.1", "port": 1, "security": "none"}},
                        code={"docker_host": "unix:///nonexistent.sock"})
    checks = {c.name: c for c in run_checks(settings, tmp_path, tmp_path / "st")}
    assert checks["directories"].status == "fail"
    assert checks["SMTP"].status == "fail" and checks["docker"].status == "fail" and checks["docker"].fix
