"""Sandboxes on several Docker hosts (``settings.code.docker_hosts``), against a real second dockerd.

The second engine (``agent_legs_testing.dockerd``) listens on a loopback TCP port with ``--tlsverify``
and certificates made for the test run; the first is the machine's own engine. Placement spreads
sessions by load, a killed engine's sessions are told ``unavailable`` (naming it) and new ones land
on the other, it comes back after ``host_retry_s``, and wrong TLS material is refused clearly.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import pytest

from agent_legs import ConfigError, Legs, Settings
from agent_legs._doctor import check_docker
from agent_legs.actions.code import _reaper
from agent_legs.actions.code._hosts import Host, HostSpec, pick
from agent_legs.actions.code._service import CodeService
from agent_legs_testing._net import free_port
from agent_legs_testing.dockerd import SecondDockerd

LOCAL = {"url": "unix:///var/run/docker.sock", "name": "local"}


def _second(daemon: SecondDockerd, **tls: str) -> dict[str, Any]:
    return {
        "url": daemon.url,
        "name": "second",
        "tls_ca": daemon.tls["ca"],
        "tls_cert": daemon.tls["client-cert"],
        "tls_key": daemon.tls["client-key"],
        **tls,
    }


def _legs(tmp_path: Path, code: dict[str, Any], secrets: dict[str, str] | None = None) -> Legs:
    return Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "state",
        policy={"allow": ["code.*"]},
        settings={"code": {"pool_size": 0, **code}},
        secrets=secrets,
    )


def _svc(legs: Legs) -> CodeService:
    return legs._runtime._services[CodeService]  # type: ignore[return-value]  # white-box: which host holds what


def _on(daemon: SecondDockerd, svc: CodeService) -> list[str]:
    """Ids of this service's containers on the second engine (asked of that engine itself)."""
    out = daemon.cli("ps", "-aq", "--no-trunc", "--filter", f"label=agent-legs.sandbox.instance={svc.instance}")
    return out.stdout.split()


# -- bad settings: ConfigError before anything starts --------------------------------------------
@pytest.mark.parametrize(
    ("host", "words"),
    [
        ({"url": "http://10.0.0.7:2376"}, "the scheme must be tcp://"),
        ({"url": "tcp://10.0.0.7"}, "tcp://HOST:PORT"),
        ({"url": "tcp://10.0.0.7:dock"}, "port is not a number"),
        ({"url": "tcp://10.0.0.7:2376"}, "needs TLS"),
        ({"url": "tcp://10.0.0.7:2376", "tls_ca": "/ca.pem"}, "tls_cert, tls_key missing"),
        ({"url": "unix:///var/run/docker.sock", "tls_ca": "a", "tls_cert": "b", "tls_key": "c"}, "not a unix socket"),
        ({"url": "tcp://10.0.0.7:2376", "tls_ca": "a", "tls_cert": "b", "tls_key": "x{secret:K}"}, "exactly one {secret:NAME}"),
        ({"url": "unix:///var/run/docker.sock", "weight": 0}, "weight"),
    ],
)
def test_bad_host_settings_are_config_errors(tmp_path: Path, host: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match="docker_hosts") as err:
        _legs(tmp_path, {"docker_hosts": [host]})
    assert words in str(err.value)
    assert not (tmp_path / "ws").exists()  # nothing was created


def test_both_forms_or_repeated_names_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        _legs(tmp_path, {"docker_host": "unix:///var/run/docker.sock", "docker_hosts": [LOCAL]})
    with pytest.raises(ConfigError, match="repeated: local"):
        _legs(tmp_path, {"docker_hosts": [LOCAL, LOCAL]})


def test_tls_secrets_are_checked_at_start(tmp_path: Path) -> None:
    host = {"url": "tcp://10.0.0.7:2376", "tls_ca": "/ca.pem", "tls_cert": "/cert.pem", "tls_key": "{secret:DOCKER_KEY}"}
    with pytest.raises(ConfigError, match="tls_key names the unknown secret 'DOCKER_KEY'"):
        _legs(tmp_path, {"docker_hosts": [host]})
    with pytest.raises(ConfigError, match="tls_key \\(secret 'DOCKER_KEY'\\) is not an unencrypted PEM private key"):
        _legs(tmp_path, {"docker_hosts": [host]}, secrets={"DOCKER_KEY": "-----BEGIN CERTIFICATE-----\nnot a key"})


def test_placement_is_fewest_sessions_per_weight() -> None:
    a, b = (
        Host(HostSpec("unix:///a", "a"), client=object(), down=False),
        Host(HostSpec("unix:///b", "b", 2.0), client=object(), down=False),
    )
    assert pick([a, b]) is b  # (0 + 1) / 2 < (0 + 1) / 1
    b.sessions = 1
    assert pick([a, b]) is a  # a tie (1.0 each): the first listed
    a.sessions = 1
    assert pick([a, b]) is b  # 2 / 1 > (1 + 1) / 2
    b.down = True
    assert pick([a, b]) is a
    a.down = True
    assert pick([a, b]) is None


def test_an_unreachable_host_is_out_and_said(tmp_path: Path, sandbox_image: str) -> None:
    nobody = {"url": f"tcp://127.0.0.1:{free_port()}", "name": "nobody"}  # loopback: TLS not required
    with _legs(tmp_path, {"docker_hosts": [nobody, LOCAL]}) as legs:
        r = legs.run("code.run", {"code": "1 + 1"}, session="a")
        assert r.ok, r.error
        svc = _svc(legs)
        assert svc.kernels["a"].host.name == "local"
        (out,) = [h for h in svc.hosts if h.name == "nobody"]
        assert not out.up() and "Connection refused" in out.reason
    with _legs(tmp_path, {"docker_hosts": [nobody]}) as legs:
        r = legs.run("code.run", {"code": "1"}, session="a")
    assert r.error is not None and r.error.type == "unavailable" and r.error.retryable
    assert "cannot reach the Docker engine (nobody, tcp://127.0.0.1:" in r.error.message
    assert "Connection refused" in r.error.message


# -- a real second engine ------------------------------------------------------------------------
def test_one_docker_host_keeps_working(tmp_path: Path, second_dockerd: SecondDockerd) -> None:
    with _legs(tmp_path, {"docker_host": second_dockerd.socket}) as legs:
        r = legs.run("code.run", {"code": "6 * 7"}, session="a")
        assert r.ok, r.error
        assert r.data["value"] == "42"
        assert len(_on(second_dockerd, _svc(legs))) == 1  # it ran on the engine named
    assert _reaper.drain() == []  # close() left the removals to the background; the exit waits for them
    assert second_dockerd.containers() == []


def test_sessions_spread_over_two_hosts_with_tls_from_secrets(
    tmp_path: Path, second_dockerd: SecondDockerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the environment's CA bundle (no private CA in it) must not replace the configured tls_ca
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    secrets = {
        "DOCKER_CERT": Path(second_dockerd.tls["client-cert"]).read_text(),
        "DOCKER_KEY": Path(second_dockerd.tls["client-key"]).read_text(),
    }
    second = _second(second_dockerd, tls_cert="{secret:DOCKER_CERT}", tls_key="{secret:DOCKER_KEY}")
    with _legs(tmp_path, {"docker_hosts": [LOCAL, second], "pool_size": 1}, secrets) as legs:
        for i in range(4):
            r = legs.run("code.run", {"code": f"x = {i}\nopen('/workspace/f{i}.txt', 'w').write('hi')\nx"}, session=f"s{i}")
            assert r.ok, r.error
            assert r.data["value"] == str(i)
        svc = _svc(legs)
        tls_dir = Path(svc._tls_dir)  # the secrets' PEM: private to us, while the service runs
        assert tls_dir.stat().st_mode & 0o777 == 0o700
        assert sorted(p.stat().st_mode & 0o777 for p in tls_dir.iterdir()) == [0o600, 0o600]
        placed = {s: k.host.name for s, k in svc.kernels.items()}
        assert sorted(placed.values()) == ["local", "local", "second", "second"], placed
        on_second = _on(second_dockerd, svc)
        assert {svc.kernels[s].container.id for s, h in placed.items() if h == "second"} <= set(on_second)
        # the workspace is the same directory on both (the same machine): every file arrived
        assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]
        # each host keeps its own warm pool
        deadline = time.monotonic() + 120
        while not all(h.pool for h in svc.hosts) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [len(h.pool) for h in svc.hosts] == [1, 1]
        for i in range(4):  # state survives on both hosts
            r = legs.run("code.run", {"code": "x"}, session=f"s{i}")
            assert r.ok and r.data["value"] == str(i), r.error
    assert _reaper.drain() == []  # close() left the removals to the background; the exit waits for them
    assert _on(second_dockerd, svc) == []  # closed: nothing of ours is left there
    assert not tls_dir.exists()


def test_wrong_tls_material_is_refused_clearly(tmp_path: Path, second_dockerd: SecondDockerd) -> None:
    stranger = _second(second_dockerd, tls_cert=second_dockerd.tls["stranger-cert"], tls_key=second_dockerd.tls["stranger-key"])
    with _legs(tmp_path, {"docker_hosts": [stranger]}) as legs:
        r = legs.run("code.run", {"code": "1"}, session="a")
    assert r.error is not None and r.error.type == "unavailable"
    assert "(second, tcp://127.0.0.1:" in r.error.message
    assert "the engine refused our client certificate" in r.error.message
    assert r.error.hint is not None and "tls_cert" in r.error.hint
    wrong_ca = _second(second_dockerd, tls_ca=second_dockerd.tls["other-ca"])
    with _legs(tmp_path, {"docker_hosts": [wrong_ca]}) as legs:
        r = legs.run("code.run", {"code": "1"}, session="a")
    assert r.error is not None and r.error.type == "unavailable"
    assert "the engine's certificate is not signed by tls_ca" in r.error.message
    unreadable = _second(second_dockerd, tls_key=str(tmp_path / "missing-key.pem"))
    with _legs(tmp_path, {"docker_hosts": [unreadable]}) as legs:
        r = legs.run("code.run", {"code": "1"}, session="a")
    assert r.error is not None and r.error.type == "unavailable"
    assert "the Docker host second: cannot read tls_key" in r.error.message
    # a bad host beside a good one: the sessions run on the good one, the bad one is out with its reason
    with _legs(tmp_path, {"docker_hosts": [stranger, LOCAL]}) as legs:
        r = legs.run("code.run", {"code": "1 + 1"}, session="a")
        assert r.ok, r.error
        svc = _svc(legs)
        assert svc.kernels["a"].host.name == "local"
        (bad,) = [h for h in svc.hosts if h.name == "second"]
        assert not bad.up() and "refused our client certificate" in bad.reason
    assert second_dockerd.containers() == []  # nothing was created with the refused certificate


def test_doctor_checks_each_host(second_dockerd: SecondDockerd) -> None:
    stranger = _second(second_dockerd, name="stranger", tls_cert="{secret:C}", tls_key=second_dockerd.tls["stranger-key"])
    checks = check_docker(
        Settings(code={"docker_hosts": [LOCAL, _second(second_dockerd), stranger]}),
        {"C": Path(second_dockerd.tls["stranger-cert"]).read_text()},
    )
    by = {c.name: c for c in checks}
    assert by["docker host local"].status == "ok"
    assert by["docker host second"].status == "ok" and "TLS with a client certificate" in by["docker host second"].detail
    assert by["docker host stranger"].status == "fail"
    assert "refused our client certificate" in by["docker host stranger"].detail
    assert by["docker hosts"].status == "warn"  # remote engines must see the workspace at the same path


def test_a_dead_host_is_taken_out_its_sessions_told_and_it_comes_back(tmp_path: Path, second_dockerd: SecondDockerd) -> None:
    """Last of the module: it kills the second engine (and starts it again)."""
    code = {"docker_hosts": [LOCAL, _second(second_dockerd)], "pool_size": 1, "host_retry_s": 1}
    with _legs(tmp_path, code) as legs:
        for i in range(4):
            r = legs.run("code.run", {"code": f"x = {i}"}, session=f"s{i}")
            assert r.ok, r.error
        svc = _svc(legs)
        remote = sorted(s for s, k in svc.kernels.items() if k.host.name == "second")
        local = sorted(s for s, k in svc.kernels.items() if k.host.name == "local")
        assert len(remote) == 2 and len(local) == 2
        lost_containers = {svc.kernels[s].container.id for s in remote}

        busy, idle = remote
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a call running on the engine when it dies
            running = pool.submit(legs.run, "code.run", {"code": "import time\ntime.sleep(60)"}, session=busy)
            deadline = time.monotonic() + 30
            while not svc.kernels[busy].lock.locked() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # the request is on its way
            second_dockerd.kill()
            r = running.result(timeout=60)
        assert r.error is not None and r.error.type == "unavailable", r
        assert "the Docker host second is out of service" in r.error.message
        assert "may have run in part" in r.error.message
        r = legs.run("code.run", {"code": "x"}, session=idle)  # an idle session is told once, naming the host
        assert r.error is not None and r.error.type == "unavailable", r
        assert r.error.retryable
        assert "the Docker host second is out of service" in r.error.message
        assert "nothing of this call ran" in r.error.message
        assert r.error.hint is not None and "docker_hosts" in r.error.hint
        (second,) = [h for h in svc.hosts if h.name == "second"]
        assert not second.up()
        for session in remote:  # then a fresh kernel, on the host that answers
            r = legs.run("code.run", {"code": "'again'"}, session=session)
            assert r.ok and r.data["new_kernel"], r.error
            assert svc.kernels[session].host.name == "local"
        r = legs.run("code.run", {"code": "'new'"}, session="new")
        assert r.ok, r.error
        assert svc.kernels["new"].host.name == "local"
        for session in local:  # the other host's sessions kept their state
            r = legs.run("code.run", {"code": "x"}, session=session)
            assert r.ok and not r.data["new_kernel"], r.error

        second_dockerd.start()  # it comes back: tried again after host_retry_s, the lost containers removed
        deadline = time.monotonic() + 90
        while not second.up() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second.up(), second.reason
        r = legs.run("code.run", {"code": "'back'"}, session="later")
        assert r.ok, r.error
        assert svc.kernels["later"].host.name == "second"  # the host with the fewest sessions again
        assert not lost_containers & set(second_dockerd.containers())
    assert _reaper.drain() == []  # close() left the removals to the background; the exit waits for them
    assert _on(second_dockerd, svc) == []
