"""An explicit lab → YAML a user could have written (`netlab render`).

Only what was given or generated is written (unset defaults stay out), in the order a
person writes it (`kind:`/`peer:` first). A mapping or list of plain values is one line
in flow style (`{to: …, via: …}`), as in the shipped labs; checks are written in their
short forms (`served_by: pod4`, not the normalised `{pod4: [1.0, 1.0]}`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import yaml

from netlab.lab.checks import OTHER_NODES
from netlab.lab.model import Lab

_QUOTED_ON = re.compile(r"(?<=[{\s])'on':")
_LINK_KEYS_FIRST = ("kind", "peer", "master", "addresses")


def fingerprint(lab: Lab) -> str:
    """What was built: the checks are left out, so adding or editing a check never asks
    for the lab to be rebuilt (`netlab check` reads them from the file each time)."""
    canonical = json.dumps(lab.model_dump(mode="json", by_alias=True, exclude={"checks"}), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def lab_data(lab: Lab) -> dict[str, Any]:
    """The lab as plain data, as it would be written in a lab file."""
    data: dict[str, Any] = lab.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data.pop("cluster", None)  # expanded into nodes (a cluster set to None counts as set)
    out: dict[str, Any] = {"name": lab.name, **{k: v for k, v in data.items() if k != "name"}}
    for node in out.get("nodes", {}).values():
        for ifname, link in node.get("links", {}).items():
            first = {k: link[k] for k in _LINK_KEYS_FIRST if k in link}
            node["links"][ifname] = {**first, **{k: v for k, v in link.items() if k not in first}}
    out["checks"] = [_short_check(c) for c in out.get("checks", [])]
    if not out["checks"]:
        del out["checks"]
    return out


def _short_check(value: Any, key: str = "") -> Any:
    if key == "served_by" and isinstance(value, dict):
        return _short_served_by(value)
    if key in ("packets", "bytes") and isinstance(value, dict) and "min" in value and value["min"] == value.get("max"):
        return value["min"]  # a counter's amount: N, not {min: N, max: N}
    if isinstance(value, dict):
        return {k: _short_check(v, k) for k, v in value.items()}
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], (dict, list)):
        return value[0]  # a node-or-address list of one (every list in a check accepts a scalar)
    if isinstance(value, list):
        return [_short_check(v) for v in value]  # e.g. a probe check's counters
    return value


def _short_served_by(shares: dict[str, list[float]]) -> Any:
    """Undo expectations._check_served_by's normal form."""
    ranges = {node: tuple(share) for node, share in shares.items()}
    if OTHER_NODES in ranges:
        banned = [node for node in ranges if node != OTHER_NODES]
        return {"not": banned[0] if len(banned) == 1 else banned}
    if len(ranges) == 1 and next(iter(ranges.values())) == (1.0, 1.0):
        return next(iter(ranges))
    if all(r == (0.0, 1.0) for r in ranges.values()):
        return list(ranges)

    def pct(x: float) -> str:
        return f"{x * 100:g}%"

    return {node: pct(low) if high == 1.0 else f"{pct(low)}..{pct(high)}" for node, (low, high) in ranges.items()}


def render_yaml(lab: Lab, header: str = "", variants: dict[str, Any] | None = None) -> str:
    """The lab as YAML; `variants` (name → changes, plain data) is written after it."""
    data = lab_data(lab) | ({"variants": variants} if variants else {})
    text = yaml.dump(_styled(data), Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)
    # netlab reads keys as written, so the checks' `on:` needs none of the quotes YAML 1.1 wants
    text = _QUOTED_ON.sub("on:", text)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join([*lines, text]) if lines else text


class _Flow(dict):  # type: ignore[type-arg]
    pass


class _FlowList(list):  # type: ignore[type-arg]
    pass


def _plain(value: Any) -> bool:
    if isinstance(value, str):
        return "\n" not in value  # a text of several lines is a `|` block, which flow style cannot hold
    return not isinstance(value, (dict, list)) or (
        isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)
    )


def _styled(value: Any) -> Any:
    """Mark mappings and lists of plain values for flow style; the rest stays block style."""
    if isinstance(value, dict):
        if value and all(_plain(v) for v in value.values()):
            return _Flow({k: _styled(v) for k, v in value.items()})
        return {k: _styled(v) for k, v in value.items()}
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return _FlowList(value)
        return [_styled(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Block style for the structure, flow style for leaves; lists of mappings indented."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)

    def analyze_scalar(self, scalar: str) -> Any:
        """PyYAML writes no `|` block holding a tab, though YAML allows tabs in one (and
        `nft list ruleset` indents with tabs): judge the block style as if they were letters."""
        analysis = super().analyze_scalar(scalar)
        if "\n" in scalar and "\t" in scalar:
            analysis.allow_block = super().analyze_scalar(scalar.replace("\t", "x")).allow_block
        return analysis


def _text(dumper: yaml.SafeDumper, value: str) -> Any:
    """Texts of several lines (rulesets, dumps) as `|` blocks, line for line."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
