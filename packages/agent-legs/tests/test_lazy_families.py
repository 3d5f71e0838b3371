"""``Legs()`` imports only the action families its policy can name (issue 20, item 3: cold start),
and still refuses every name a full registry would refuse. Fresh processes: what is imported is
what a new process pays."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent_legs import ConfigError, Legs
from agent_legs._registry import may_name

PROBE = """
import json, sys
from agent_legs import Legs
policy = json.loads(sys.argv[3])
legs = Legs(workspace=sys.argv[1], state_dir=sys.argv[2], policy=policy, settings={"code": {"prestart": False}})
loaded = lambda: sorted(m.split(".")[2] for m in sys.modules if m.startswith("agent_legs.actions.") and m.endswith("._actions"))
after_build = loaded()
legs.get_action("code.run")
after_lookup = loaded()
n = len(legs.actions)
print(json.dumps({"build": after_build, "lookup": after_lookup, "all": loaded(), "n": n}))
legs.close()
"""


def _probe(tmp_path, policy: dict) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "w"), str(tmp_path / "s"), json.dumps(policy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_policy_naming_code_imports_only_the_code_family(tmp_path) -> None:
    r = _probe(tmp_path, {"allow": ["code.*"]})
    assert r["build"] == ["code", "mcp"]  # mcp: Legs' own MCP service (configured servers)
    assert r["lookup"] == ["code", "mcp"]
    assert {"browser", "code", "email", "files", "http"} <= set(r["all"]) and r["n"] >= 20  # a listing loads all


def test_the_default_policy_imports_no_family_until_a_lookup(tmp_path) -> None:
    r = _probe(tmp_path, {})
    assert r["build"] == ["mcp"] and r["lookup"] == ["code", "mcp"]


def test_a_glob_that_may_name_any_family_loads_them_all(tmp_path) -> None:
    r = _probe(tmp_path, {"allow": ["*.read"]})
    assert {"browser", "code", "email", "files", "http"} <= set(r["build"])


@pytest.mark.parametrize(
    ("pattern", "family", "expected"),
    [
        ("code.*", "code", True),
        ("code.run", "code", True),
        ("code.run", "files", False),
        ("c*", "code", True),
        ("c*", "files", False),
        ("*", "files", True),
        ("?ode.run", "code", True),
        ("[cf]*", "files", True),
        ("codex.*", "code", False),
        ("files_read", "files", False),  # a tool name is not an action name (the check refuses it anyway)
    ],
)
def test_which_families_a_name_glob_may_name(pattern, family, expected) -> None:
    assert may_name(pattern, family) is expected


def test_names_in_families_not_loaded_are_still_checked(dirs) -> None:
    ws, st = dirs
    # a typo: the error lists every action, as with a full registry
    with pytest.raises(ConfigError, match=r"'cod\.\*' matches no action.*known actions: browser\.back"):
        Legs(workspace=ws, state_dir=st, policy={"allow": ["cod.*"]})
    # a condition on a family the allow list does not name is checked against that family's arguments
    with pytest.raises(ConfigError, match=r"http\.request has no argument 'verb'"):
        Legs(
            workspace=ws,
            state_dir=st,
            policy={"allow": ["code.*"], "require_approval": [{"action": "http.*", "unless": {"verb": ["GET"]}}]},
        )


OVERRIDE = """
import json, sys
from pydantic import BaseModel
from agent_legs import action
from agent_legs._registry import REGISTRY

class Args(BaseModel):
    path: str

@action("files.read", description="the user's own files.read", read_only=True)
async def mine(ctx, args: Args):
    raise NotImplementedError

code = REGISTRY.get("code.run")  # loads the code family only
loaded = sorted(m.split(".")[2] for m in sys.modules if m.startswith("agent_legs.actions.") and m.endswith("._actions"))
spec = REGISTRY.get("files.read")  # loads the files family: the override keeps its place
print(json.dumps({"loaded": loaded, "description": spec.description, "n": len(REGISTRY)}))
"""


def test_an_override_registered_before_its_family_loads_keeps_its_place() -> None:
    p = subprocess.run([sys.executable, "-c", OVERRIDE], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["loaded"] == ["code"]
    assert r["description"] == "the user's own files.read" and r["n"] >= 20
