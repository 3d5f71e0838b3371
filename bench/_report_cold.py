"""The summary's cold-start rows (``bench_cold``): ``Legs()`` + the first ``code.run`` from a new process
against the peers' create -> first command, and ``Legs.close()`` p95."""

from __future__ import annotations

from typing import Any

from ._format import get as _get
from ._format import p50 as _p50
from ._format import t

__all__ = ["cold_rows"]

PEERS = (("autogen_ext_DockerCommandLineCodeExecutor", "autogen-ext"), ("llm_sandbox_SandboxSession", "llm-sandbox"))


def cold_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str, str, str, bool | None]]:
    """(family, what, Agent Legs, peers, ratio, target, met) rows; none when the module did not run."""
    cold = res.get("cold")
    if not cold or "error" in cold:
        return []
    first = _get(cold, "new_process", "create_plus_first_command") or {}
    parts = _get(cold, "new_process", "parts") or {}
    ours, plain = _p50(first, "agent_legs_prestart"), _p50(first, "agent_legs_no_prestart")
    think = _p50(first, "agent_legs_prestart_model_think_1s")
    peers = "; ".join(f"{label} {t(_p50(first, name))}" for name, label in PEERS if _p50(first, name) is not None) or "—"
    imp, wall = _p50(parts, "agent_legs_prestart", "import_s"), _p50(parts, "agent_legs_prestart", "process_s")
    floor = _p50(first, "floor_docker_py")
    vs = _get(cold, "new_process", "vs_floor", "agent_legs_prestart") or {}
    over = _get(vs, "overhead", "p50_us")
    floor_text = (
        f"; the floor (docker-py create + start + `python3 -c` with our options) {t(floor)}, ours "
        f"{vs.get('ratio_p50', 0):.2f}× it, {t(abs(over))} {'above' if over >= 0 else 'below'} it"
        if floor is not None and over is not None
        else ""
    )
    rows: list[tuple[str, str, str, str, str, str, bool | None]] = [
        (
            "cold",
            (
                "`Legs()` + first `code.run`, new process p50 (prestart; import "
                f"{t(imp)}, whole process {t(wall)}; without prestart {t(plain)}; "
                f"after 1 s of model think {t(think)}{floor_text})"
            ),
            t(ours),
            f"create → first command: {peers}",
            "—",
            "≤ 300 ms",
            None if ours is None else ours <= 300_000,
        )
    ]
    close = _p50(cold, "close_repeated", "legs_close", key="p95_us")
    left = _get(cold, "close_repeated", "containers_left_after_drain")
    stops = "; ".join(
        f"{label} stop {t(_p50(parts, name, 'close_s'))}" for name, label in PEERS if _p50(parts, name, "close_s") is not None
    )
    rows.append(
        (
            "cold",
            f"`Legs.close()` p95 (containers removed in the background; left after the process: {left})",
            t(close),
            stops or "—",
            "—",
            "≤ 100 ms, none left",
            None if close is None else close <= 100_000 and left == 0,
        )
    )
    return rows
