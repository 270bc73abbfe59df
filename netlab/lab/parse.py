"""The lab package's share of loading a lab file: YAML → validated, immutable `Lab` (as written,
cluster section included), and the cross-object rules of an explicit lab.

`netlab.load` runs the passes in order, each collecting all it finds before stopping:
YAML syntax and duplicate keys; field types and unknown keys (pydantic); the cluster
section (netlab.expand); cross-object rules on the explicit lab (consistency.py).
"""

from __future__ import annotations

import copy
import difflib
import re
import shlex
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Union

import pydantic
from pydantic import BaseModel

from netlab.errors import LabError, Problem
from netlab.lab.bounds import MAX_LAB_BYTES, MAX_SCHEMA_ERRORS, TooBig, read_bounded
from netlab.lab.checks import CHECK_KINDS, CHECK_TAGS, ProbeCheck, RouteCheck, RuleCheck
from netlab.lab.consistency import check_lab
from netlab.lab.expect import FORM_TAG
from netlab.lab.model import LINK_KINDS, LINK_TAGS, Lab, Link, _LinkCommon
from netlab.lab.source import Complaint, Path, Source, parse_yaml
from netlab.lab.topology import Topology, resolve


def read_lab(path: str | FsPath) -> tuple[Any, Source, list[Problem]]:
    """Read and parse a lab file: (data or None, source map, problems so far)."""
    file = str(path)
    try:
        text = read_bounded(path, MAX_LAB_BYTES, "a lab file").decode("utf-8")
    except TooBig as err:
        return None, Source(file), [Problem(file, 0, "", f"the lab file {err}")]
    except OSError as err:
        return None, Source(file), [Problem(file, 0, "", f"cannot read the lab file: {err.strerror}")]
    except UnicodeDecodeError as err:
        return None, Source(file), [Problem(file, 0, "", f"the lab file is not UTF-8 text: {err.reason}")]
    return parse_yaml(text, file)


class SchemaError(LabError):
    """The lab file's problems found so far, and what of it still validates (`salvage`), so
    the cross-references of the rest can be checked in the same run."""

    def __init__(self, problems: list[Problem], salvage: Salvage) -> None:
        super().__init__(problems)
        self.salvage = salvage


def validate_model(data: Any, source: Source, problems: list[Problem]) -> Lab:
    """Field types and unknown keys (pydantic), every problem at once; raises SchemaError."""
    problems = list(problems)
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else _show(data)
        raise LabError(
            [
                *problems,
                source.problem(
                    (), f"the top level is {got}; a lab file is a mapping with `name:` and `nodes:` at the top"
                ),
            ]
        )
    try:
        lab = Lab.model_validate(data)
    except pydantic.ValidationError as err:
        errors = err.errors()
        if len(errors) > MAX_SCHEMA_ERRORS:  # converting each costs; a user reads the first ones
            more = source.problem(
                (),
                f"… and {len(errors) - MAX_SCHEMA_ERRORS} more problems of field types and "
                f"keys (netlab stops after {MAX_SCHEMA_ERRORS})",
            )
            raise LabError([*problems, *_problems_from_pydantic(errors[:MAX_SCHEMA_ERRORS], source), more]) from None
        problems += _problems_from_pydantic(errors, source)
        raise SchemaError(problems, salvage(data, errors)) from None
    if problems:
        raise SchemaError(problems, Salvage(lab, data))
    return lab


# ---------------------------------------------------------------- what validates of a bad lab


@dataclass
class Salvage:
    """A lab file with schema errors, with the keys and entries pydantic refused cut out
    until the rest validates (`lab`, None if that failed): enough to check that checks and
    peers name nodes and interfaces that exist. Paths in `cuts`, `scopes` and `removed`
    are as written in the file."""

    lab: Lab | None
    data: Any = None  # what `lab` was validated from
    cuts: list[Path] = field(default_factory=list)
    scopes: list[Path] = field(default_factory=list)  # complaints in here may follow from a cut
    names: set[str] = field(default_factory=set)  # nodes a cut took something of, or referred to
    removed: dict[Path, list[int]] = field(default_factory=dict)  # list entries cut

    def original(self, path: Path) -> Path:
        """A path of the salvaged data as written in the file (list entries after a removed
        one moved up)."""
        out: list[str | int] = []
        for part in path:
            if isinstance(part, int):
                for gone in sorted(self.removed.get(tuple(out), ())):
                    if gone <= part:
                        part += 1
            out.append(part)
        return tuple(out)

    def note_cut(self, written: Path, content: Any, unknown_key: bool) -> None:
        """Remember a cut: an unknown key held nothing, but what it meant is missing from
        the mapping it was in; anything else leaves its node (or check) incomplete."""
        self.cuts.append(written)
        self.scopes.append(written[:-1] if unknown_key else _entry(written))
        if not unknown_key and written[:1] in (("nodes",), ("cluster",)) and len(_entry(written)) >= 2:
            self.names.add(str(_entry(written)[-1]))
        _names_in(content, self.names)

    def consequential(self, path: Path) -> bool:
        """Might a complaint at `path` (of the salvaged data) only follow from what was cut?
        Yes in the scope of a cut, above one (`nodes:` when a node was cut), in a node a
        cut concerned, and in an entry that refers to such a node (a check probing it)."""
        written = self.original(path)
        if any(written[: len(scope)] == scope for scope in self.scopes):
            return True
        if any(cut[: len(written)] == written for cut in self.cuts):
            return True
        entry = _entry(path)
        if entry[:1] in (("nodes",), ("cluster",)) and len(entry) >= 2 and str(entry[-1]) in self.names:
            return True
        return bool(self.names) and _refers_to(_get(self.data, entry), self.names)


def _names_in(value: Any, names: set[str]) -> None:
    """Every string in `value` that may name a node (as itself, or NODE in `NODE:…`)."""
    if isinstance(value, dict):
        names.update(str(k) for k in value)
        for v in value.values():
            _names_in(v, names)
    elif isinstance(value, list):
        for v in value:
            _names_in(v, names)
    elif isinstance(value, str):
        names.add(value.split(":", 1)[0])


def _entry(path: Path) -> Path:
    """The node, pod or check a path is in."""
    return path[:3] if path[:1] == ("cluster",) else path[:2]


def _get(data: Any, path: Path) -> Any:
    for part in _existing(data, path):
        data = data[part]
    return data


def _refers_to(value: Any, names: set[str]) -> bool:
    """Does `value` hold one of `names`, as a string or as NODE in `NODE:…`?"""
    if isinstance(value, dict):
        return any(_refers_to(v, names) for v in value.values())
    if isinstance(value, list):
        return any(_refers_to(v, names) for v in value)
    return isinstance(value, str) and value.split(":", 1)[0] in names


_SALVAGE_ROUNDS = 8  # each round cuts one level deeper; a lab's keys nest about 6 deep
_TOP_LEVEL_FREE = ("description", "requires")  # cutting these changes no reference


def salvage(data: dict[str, Any], errors: list[Any]) -> Salvage:
    """Cut what pydantic refused out of a copy of `data` until the rest validates."""
    work = copy.deepcopy(data)
    result = Salvage(None)
    for _ in range(_SALVAGE_ROUNDS):
        if len(errors) > MAX_SCHEMA_ERRORS:
            return Salvage(None)
        targets: dict[Path, bool] = {}  # → is it only an unknown key?
        for err in errors:
            path = _clean_loc(tuple(err["loc"]))
            if path == ("name",):
                work["name"] = "salvaged"  # any valid name: nothing refers to it
                continue
            if err["type"] == "missing":
                path = path[:-1]  # the entry that lacks it
            path = _existing(work, path)
            if not path or not _cuttable(path):
                return Salvage(None)
            targets[path] = targets.get(path, True) and err["type"] == "extra_forbidden"
        for path in sorted(targets, key=_sort_key, reverse=True):  # later list entries first
            _cut(work, path, result, unknown_key=targets[path])
        try:
            result.lab, result.data = Lab.model_validate(work), work
            return result
        except pydantic.ValidationError as err:
            errors = err.errors()
    return Salvage(None)


def _existing(data: Any, path: Path) -> Path:
    """The longest prefix of `path` that is in `data` (a validator may have reshaped it)."""
    node = data
    for n, part in enumerate(path):
        found = (
            part in node
            if isinstance(node, dict)
            else isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not found:
            return path[:n]
        node = node[part]
    return path


def _cuttable(path: Path) -> bool:
    """May this be cut and the rest still say which nodes, interfaces and checks exist?"""
    if len(path) == 1:
        return (path[0] not in Lab.model_fields and path[0] not in _aliases()) or path[0] in _TOP_LEVEL_FREE
    if path[0] in ("nodes", "checks"):
        return len(path) >= 2
    return path[0] == "cluster" and len(path) >= 3 and path[1] in ("nodes", "pods")


def _aliases() -> set[str]:
    return {info.alias for info in Lab.model_fields.values() if info.alias}


def _sort_key(path: Path) -> tuple[tuple[int, str, int], ...]:
    return tuple((0, "", p) if isinstance(p, int) else (1, p, 0) for p in path)


def _cut(data: Any, path: Path, result: Salvage, unknown_key: bool) -> None:
    if _existing(data, path) != path:
        return  # inside something cut already
    node = data
    for part in path[:-1]:
        node = node[part]
    original = result.original(path)
    if isinstance(node, list):
        result.removed.setdefault(original[:-1], []).append(int(original[-1]))
        content = node.pop(int(path[-1]))
    else:
        content = node.pop(path[-1])
    result.note_cut(original, content, unknown_key)


def cross_check(lab: Lab) -> list[Complaint]:
    """Cross-object rules on an explicit lab (links resolve, routes name devices, …)."""
    topo, complaints = resolve(lab)
    return complaints + check_lab(lab, topo)


def topology(lab: Lab) -> Topology:
    """The resolved topology of a lab that loaded cleanly."""
    topo, _ = resolve(lab)
    return topo


# ---------------------------------------------------------------- pydantic → Problem


def _is_union_member(loc: tuple[Any, ...]) -> bool:
    """Is the last part of `loc` the member name pydantic appends for an `int | str` union
    (a sysctl value, a route's or rule's table)? Matched by position, so an interface or
    key that happens to be called `int` is left alone."""
    if not loc or loc[-1] not in ("int", "str"):
        return False
    if len(loc) >= 4 and loc[-3] == "sysctls" and loc[-4] not in ("sysctls",):
        return True
    if len(loc) >= 3 and _is_form_tag(loc[-2]) and "table" in loc:  # a check's expected table
        return True
    return len(loc) >= 5 and loc[-4] in ("routes", "rules") and loc[-2] == "table"


def _is_form_tag(part: Any) -> bool:
    """The form of an expected value (netlab.lab.expect) pydantic puts in a location."""
    return isinstance(part, str) and part.startswith(FORM_TAG)


def _clean_loc(loc: tuple[Any, ...]) -> Path:
    """Drop pydantic's bookkeeping from a location: union tags and '[key]' markers."""
    if _is_union_member(loc):
        loc = loc[:-1]
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        if i >= 2 and loc[i - 2] == "links" and part in LINK_TAGS and isinstance(loc[i - 1], str):
            continue  # the link-kind tag pydantic inserts for the tagged union
        if i >= 2 and loc[i - 2] == "checks" and part in CHECK_TAGS and isinstance(loc[i - 1], int):
            continue  # the same for the check kind
        if (isinstance(part, str) and part.startswith(("function-", "list[", "dict["))) or _is_form_tag(part):
            continue
        out.append(part)
    return tuple(out)


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / unions."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _link_tag_of(tp: Any) -> str | None:
    """The tag a link model answers to ('end' for PeerEnd), or None for other types."""
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return None
    kind = tp.model_fields.get("kind")
    if kind is None:
        return "end"
    args = typing.get_args(kind.annotation)
    return str(args[0]) if args else None


_CHECK_MODELS: dict[str, type[BaseModel]] = {"probe": ProbeCheck, "route": RouteCheck, "rule": RuleCheck}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Which model class sits at a raw pydantic location (to list its allowed keys)."""
    current: list[Any] = [Lab]
    for part in loc:
        if part == "[key]":
            return None
        if _is_form_tag(part):
            continue  # the form of a value (netlab.lab.expect, dropped_by)
        if isinstance(part, str) and part in _CHECK_MODELS and _CHECK_MODELS[part] in current and len(current) > 1:
            current = [_CHECK_MODELS[part]]  # the check-kind step of the tagged union
            continue
        tags = {_link_tag_of(t) for t in current}
        if isinstance(part, str) and part in LINK_TAGS and part in tags and len(current) > 1:
            current = [t for t in current if _link_tag_of(t) == part]  # the tagged-union step
            continue
        nxt: list[Any] = []
        for tp in current:
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                for name, info in tp.model_fields.items():
                    if part in (name, info.alias):
                        nxt += _unwrap(info.annotation)
            elif typing.get_origin(tp) in (list, dict):
                nxt += _unwrap(typing.get_args(tp)[-1])
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if len(models) == 1 else None


# Names other tools (iproute2, netplan, docker, ifupdown) use for a key, and ours.
# Used only when the right one is allowed where the unknown key was written.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "gw": ("via",),
    "gateway": ("via",),
    "nexthop": ("via",),
    "next_hop": ("via",),
    "dst": ("to",),
    "dest": ("to",),
    "destination": ("to",),
    "prefix": ("to",),
    "device": ("dev",),
    "interface": ("dev",),
    "iface": ("dev",),
    "src": ("from",),
    "source": ("from",),
    "pref": ("priority", "metric"),
    "preference": ("priority", "metric"),
    "prio": ("priority",),
    "lookup": ("table",),
    "mark": ("fwmark",),
    "address": ("addresses",),
    "ip": ("addresses", "address"),
    "ips": ("addresses",),
    "ipv4": ("addresses",),
    "ipv6": ("addresses",),
    "bridge": ("master",),
    "hwaddr": ("mac",),
    "lladdr": ("mac",),
    "id": ("vni",),
    "vxlan_id": ("vni",),
    "vid": ("id",),
    "vlan_filter": ("vlan_filtering",),
    "vlan_aware": ("vlan_filtering",),
    "vlan": ("id",),
    "vlan_id": ("id",),
    "link": ("dev",),
    "parent": ("dev",),
    "underlay_dev": ("dev",),
    "collect_metadata": ("external",),
    "ikey": ("key",),
    "okey": ("key",),
    "dstport": ("port",),
    "interfaces": ("links",),
    "ifaces": ("links",),
    "commands": ("exec",),
    "cmds": ("exec",),
    "run": ("exec",),
    "hosts": ("nodes",),
    "namespaces": ("nodes",),
    "features": ("requires",),
    "neighbours": ("neighbors",),
    "neighbour": ("neighbors",),
    "neighbor": ("neighbors",),
    "arp": ("neighbors",),
    "neigh": ("neighbors",),
    "bridge_fdb": ("fdb",),
    "fdbs": ("fdb",),
    "cidr": ("pod_cidr",),
    "podcidr": ("pod_cidr",),
    "pod_subnet": ("pod_cidr",),
    "network": ("pod_cidr",),
    "type": ("kind", "backend"),
    "mode": ("backend",),
    "host": ("node",),
    "nodename": ("node",),
    "nft": ("nftables",),
    "nftable": ("nftables",),
    "firewall": ("nftables",),
    "ip6tables": ("iptables",),
    "iptables_save": ("iptables",),
    "rules_file": ("file",),
    "path": ("file",),
    "filename": ("file",),
    "text": ("ruleset", "save"),
    "rulesets": ("ruleset",),
    "nft_ruleset": ("ruleset",),
    "dump": ("save",),
    "iptables-save": ("save",),
    "flush": ("noflush",),
}

# What a missing key is for, so the message says what to write.
_MISSING_HINTS = {
    "name": "add e.g. `name: lab1` (letters, digits, '-', '_'; it prefixes every namespace)",
    "nodes": "add `nodes:` with at least one node, e.g. `nodes: {pod1: {}}`",
    "to": "every route needs `to:` (use `to: default` for the default route)",
    "vni": "a vxlan needs `vni:`, its VXLAN network identifier (0 to 16777215)",
    "id": "a vlan needs `id:`, its VLAN id (1 to 4094)",
    "dev": "a vlan needs `dev:`, the link of the node it is on (e.g. `dev: eth0`)",
    "peer": "a `kind: veth` link needs `peer: NODE:IFNAME`, the other end of the pair",
    "table": "a vrf needs `table:`, the routing table its interfaces route in (a number, or a name from "
    "top-level `tables:`)",
}

# The full range of bounded numbers, by key.
_RANGES = {
    "vni": ("a VNI (24 bits)", 0, 16777215),
    "port": ("a UDP port", 1, 65535),
    "ttl": ("a TTL", 0, 255),
    "key": ("a GRE key", 0, 4294967295),
    "id": ("a VLAN id", 1, 4094),
    "pvid": ("a VLAN id", 1, 4094),
    "default_pvid": ("a default PVID (0: none)", 0, 4094),
    "metric": ("a metric", 0, 4294967295),
    "priority": ("a rule priority", 0, 4294967295),
}

# One example per model, for a value that should have been a mapping.
_EXAMPLES = {
    "Route": "{to: 10.1.0.0/16, via: 10.0.0.1}",
    "Rule": "{from: 10.8.0.0/16, table: vpn}",
    "Node": "{links: {eth0: {peer: 'pod2:eth0'}}}",
}


def _problems_from_pydantic(errors: list[Any], source: Source) -> list[Problem]:
    problems: list[Problem] = []
    suggested: set[Path] = set()
    missing: list[tuple[Path, Problem]] = []
    for err in errors:
        problem, suggestion = _problem_from_pydantic(err, source)
        if err["type"] == "missing":
            missing.append((_clean_loc(tuple(err["loc"])), problem))
        else:
            problems.append(problem)
        if suggestion:
            suggested.add(suggestion)
    # `node:` for `nodes:` is one mistake: "unknown key 'node'; did you mean 'nodes'?" says it
    # all, and a second line "required key 'nodes' is missing" would only repeat it.
    problems += [p for path, p in missing if path not in suggested]
    return problems


def _suggest(key: str, allowed: list[str]) -> str | None:
    for synonym in _SYNONYMS.get(key.lower(), ()):
        if synonym in allowed:
            return synonym
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(raw_loc: tuple[Any, ...], path: Path) -> tuple[str, Path | None]:
    key = str(raw_loc[-1])
    model = _model_at(raw_loc[:-1])
    allowed = sorted((info.alias or name) for name, info in model.model_fields.items()) if model else []
    link_tag = _link_tag_of(model) if model and issubclass(model, _LinkCommon) else None
    if link_tag == "end":
        allowed = sorted([*allowed, "kind", "peer"])  # a link may always say what it is
    close = _suggest(key, allowed)
    text = f"unknown key {key!r}"
    if close:
        text += f"; did you mean {close!r}?"
    elif link_tag:
        # A key of another link kind: say which kind it belongs to.
        owners = [t for t in LINK_KINDS if t != link_tag and key in _link_model(t).model_fields]
        if owners:
            this = "this link has no `kind:`" if link_tag == "end" else f"this is a {link_tag}"
            text += f"; {key!r} is a setting of {' and '.join(owners)} links, and {this}"
    if allowed:
        text += f" (allowed here: {', '.join(allowed)})"
    return text, ((*path[:-1], close) if close else None)


def _link_model(tag: str) -> type[BaseModel]:
    for member in typing.get_args(typing.get_args(Link)[0]):
        tp = typing.get_args(member)[0]
        if _link_tag_of(tp) == tag:
            return typing.cast(type[BaseModel], tp)
    raise KeyError(tag)


def _type_hint(value: Any) -> str:
    """Why a value YAML typed on its own is not the string wanted, and the fix."""
    if isinstance(value, bool):
        return "; YAML reads unquoted yes/no/on/off/true/false as a boolean: put the value in quotes"
    if isinstance(value, (int, float)):
        return f"; YAML reads an unquoted {value} as a number: put it in quotes, e.g. '{value}'"
    return ""


@dataclass(frozen=True)
class _Error:
    """One pydantic error, with its location cleaned (`path`) and as pydantic gave it (`raw_loc`)."""

    raw_loc: tuple[Any, ...]
    path: Path
    kind: str
    value: Any
    msg: str
    ctx: dict[str, Any]

    @classmethod
    def of(cls, err: Any) -> _Error:
        raw_loc = tuple(err["loc"])
        return cls(raw_loc, _clean_loc(raw_loc), err["type"], err.get("input"), str(err["msg"]), err.get("ctx") or {})

    @property
    def last(self) -> str | int:
        return self.path[-1] if self.path else ""


def _problem_from_pydantic(err: Any, source: Source) -> tuple[Problem, Path | None]:
    """One pydantic error as a Problem, and the key path it suggests instead (if any)."""
    e = _Error.of(err)
    if _is_union_member(e.raw_loc):
        return source.problem(e.path, _union_member_text(e)), None
    if e.kind == "extra_forbidden":
        text, suggestion = _unknown_key(e.raw_loc, e.path)
        return source.problem(e.path, text), suggestion
    if e.kind == "union_tag_invalid":
        return source.problem(
            (*e.path, "kind"),
            f"unknown link kind {e.ctx.get('tag')!r}; expected one of: {', '.join(LINK_KINDS)}",
        ), None
    return source.problem(e.path, _explain(e)), None


def _explain(e: _Error) -> str:
    """What an error of pydantic's means here, by its kind."""
    for kinds, explain in _EXPLAINERS:
        if e.kind in kinds:
            return explain(e)
    if e.kind.startswith(("int_", "bool_", "string_")):
        return f"{_lower_first(e.msg)}, got {_show(e.value)}"
    return f"{_lower_first(e.msg)} (got {_show(e.value)})"


def _union_member_text(e: _Error) -> str:
    if "table" in e.path:
        return f"table is a number or a name from top-level `tables:`, got {_show(e.value)}"
    text = f"a sysctl value is a number or a string, got {_show(e.value)}"
    if isinstance(e.value, float):
        text += f"; put it in quotes, e.g. '{e.value}'"
    return text


def _missing_text(e: _Error) -> str:
    hint = _MISSING_HINTS.get(str(e.last))
    return f"required key {e.last!r} is missing" + (f"; {hint}" if hint else "")


def _check_kind_text(e: _Error) -> str:
    value = e.value
    given = [k for k in CHECK_KINDS if isinstance(value, dict) and k in value]
    if given:
        return (
            f"a check is one of probe:, route: or rule:, and this one has {' and '.join(given)}; "
            "split it into separate checks"
        )
    if isinstance(value, dict):
        return (
            "a check needs one of probe: (send traffic), route: (ask `ip route get`) or rule: "
            f"(look for an ip rule); it has {', '.join(map(str, value)) or 'no keys'}"
        )
    return (
        f"expected a check (a mapping with name: and one of probe:, route:, rule:), got {_show(value)}; "
        "e.g. {name: c1 reaches c2, probe: {from: c1, to: c2}}"
    )


def _expect_form_text(e: _Error) -> str:
    keys = [k for k in e.value if k != "not"] if isinstance(e.value, dict) else []
    return (
        "an expected value is a value, a list of values (any of them) or {not: VALUE} / {not: [VALUES]} "
        f"(none of them), got {_show(e.value)}"
        + (f"; unknown key {keys[0]!r}, the only key here is `not`" if keys else "")
    )


def _mapping_text(e: _Error) -> str:
    if e.value is None and e.path == ("nodes",):
        return "is empty; a lab needs at least one node, e.g. `nodes: {pod1: {}}`"
    if e.value is None:
        where = f"`{e.last}: {{}}`" if isinstance(e.last, str) and e.last else "`{}`"
        return f"is empty; expected a mapping (key: value, …), e.g. {where} for one with no settings"
    if isinstance(e.value, list):
        return (
            "expected a mapping (key: value, …), got a list; entries here are keyed by "
            "name, so drop the '- ' in front of them"
        )
    model = _model_at(e.raw_loc)
    example = _EXAMPLES.get(model.__name__) if model else None
    return f"expected a mapping (key: value, …), got {_show(e.value)}" + (f"; e.g. {example}" if example else "")


def _list_text(e: _Error) -> str:
    path, last, value = e.path, e.last, e.value
    if last in ("nftables", "iptables") and len(path) >= 3 and path[-3] in ("nodes", "pods"):
        one, many = ("ruleset", "rulesets") if last == "nftables" else ("save", "iptables-save dumps")
        text = f"expected a list of {many} (items like `- {one}: |`), or one as text (`{last}: |`), got {_show(value)}"
        return text + ("; for a list of one, put '- ' before it" if isinstance(value, dict) else "")
    if len(path) >= 3 and path[2] == "exec" and isinstance(value, str):
        argv = ", ".join(_split(value))
        if len(path) == 3:  # `exec: "cmd"`: a list of commands, each a list
            return f"expected a list of commands, each a list of arguments, got {_show(value)}; write [[{argv}]]"
        return f"expected a list of arguments (the command runs without a shell), got {_show(value)}; write [{argv}]"
    text = f"expected a list ([…] or '- ' items), got {_show(value)}"
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text += f"; for one item write [{value}]"
    return text


def _string_too_short_text(e: _Error) -> str:
    if e.last in ("ruleset", "save", "file") and len(e.path) >= 3 and e.path[-3] in ("nftables", "iptables"):
        what = "file" if e.last == "file" else "text"
        return f"is empty; give the {what}, or drop the entry"
    return f"{_lower_first(e.msg)}, got {_show(e.value)}"


def _literal_text(e: _Error) -> str:
    text = f"{_lower_first(e.msg.replace('Input should be', 'expected'))}, got {_show(e.value)}"
    if isinstance(e.value, str):
        close = _suggest(e.value, re.findall(r"'([^']*)'", str(e.ctx.get("expected", ""))))
        if close:
            text += f"; did you mean {close!r}?"
    return text


def _too_short_text(e: _Error) -> str:
    if e.path == ("nodes",):
        return "a lab needs at least one node, e.g. `nodes: {pod1: {}}`"
    if len(e.path) == 4 and e.path[2] == "exec":
        return "a command needs at least the program to run, e.g. [ip, link, show]"
    return "must not be empty"


def _bound_text(e: _Error) -> str:
    if e.last == "mtu":
        return f"an MTU must be from 68 to 65535 (IPv6 needs at least 1280), got {_show(e.value)}"
    if e.path[:1] == ("tables",):
        return f"a table number must be from 1 to 4294967295, got {_show(e.value)}"
    if e.last in _RANGES:  # both bounds: pydantic names only the one that was crossed
        what, low, high = _RANGES[str(e.last)]
        return f"{what} must be from {low} to {high}, got {_show(e.value)}"
    return f"{_lower_first(e.msg.replace('Input should be', 'must be'))}, got {_show(e.value)}"


_EXPLAINERS: list[tuple[tuple[str, ...], Callable[[_Error], str]]] = [
    (("missing",), _missing_text),
    (("check_kind",), _check_kind_text),
    (("expect_form",), _expect_form_text),
    (("value_error",), lambda e: e.msg.removeprefix("Value error, ")),
    (("model_type", "model_attributes_type", "dict_type"), _mapping_text),
    (("list_type",), _list_text),
    (("int_type", "int_parsing", "int_from_float"), lambda e: f"expected a whole number, got {_show(e.value)}"),
    (("bool_type", "bool_parsing"), lambda e: f"expected true or false, got {_show(e.value)}"),
    (("string_type",), lambda e: f"expected a string, got {_show(e.value)}{_type_hint(e.value)}"),
    (("string_too_short",), _string_too_short_text),
    (("literal_error",), _literal_text),
    (("too_short",), _too_short_text),
    (("greater_than_equal", "less_than_equal", "less_than", "greater_than"), _bound_text),
]


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # unbalanced quotes: show the words as they are
        return command.split()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
