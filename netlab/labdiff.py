"""What differs between the lab that was built and the lab a file describes now, key by
key (`description`, `checks` and every node setting included), in the words of the lab
file: `~ nodes.c1.links.eth0.mtu: 1500 → 1400`, `+ checks[2]: …`, `- nodes.c3`."""

from __future__ import annotations

import json
from typing import Any

SHOWN = 20  # changes listed before "… N more"


def key_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Every key path where `new` differs from `old` (both plain lab data)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"- {where}")
            elif key not in old:
                out.append(f"+ {where}: {_show(new[key])}")
            else:
                out += key_changes(old[key], new[key], where)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            where = f"{path}[{i}]"
            if i >= len(new):
                out.append(f"- {where}: {_show(old[i])}")
            elif i >= len(old):
                out.append(f"+ {where}: {_show(new[i])}")
            else:
                out += key_changes(old[i], new[i], where)
        return out
    return [f"~ {path}: {_show(old)} → {_show(new)}"]


def listed(changes: list[str], indent: str = "  ") -> list[str]:
    """The changes as lines, at most SHOWN of them (an entry of several lines indented whole)."""
    lines = [indent + c.replace("\n", "\n" + indent) for c in changes[:SHOWN]]
    if len(changes) > SHOWN:
        lines.append(f"{indent}… {len(changes) - SHOWN} more")
    return lines


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 70 else text[:67] + "…"
