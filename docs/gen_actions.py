"""Writes docs/actions.md from the action registry (run by `nox -s docs` before mkdocs)."""

from __future__ import annotations

from pathlib import Path

from agent_legs._registry import REGISTRY
from agent_legs.actions import __name__ as _registered  # noqa: F401  (imports every family)


def render() -> str:
    lines = ["# Actions", "", "Generated from the action registry: this is exactly what the model sees.",
             "Tool names are the action names with `.` replaced by `_`.", ""]
    for spec in REGISTRY:
        lines += [f"## `{spec.name}`", "", f"Tool `{spec.tool_name}`" + (" · read-only" if spec.read_only else ""), "",
                  spec.description, "", "| argument | type | default | description |", "|---|---|---|---|"]
        schema = spec.input_model.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type") or " | ".join(p.get("type", "?") for p in prop.get("anyOf", [])) or "any"
            if "enum" in prop:
                kind = " | ".join(f"`{v}`" for v in prop["enum"])
            default = "required" if name in required else f"`{prop.get('default')!r}`"
            desc = (prop.get("description") or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {kind} | {default} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    Path(__file__).with_name("actions.md").write_text(render())
