"""Reconcile on the real kernel: a running lab (a variant of a file with a host-gw cluster,
a NodePort service in kube-proxy's iptables mode, a gateway with an ipset and an nftables
ruleset) is changed edit after edit with `netlab up FILE`, and after every edit what the
kernel shows — `ip -d -j` links, addresses, routes, rules, permanent neighbours, static
FDB entries, `nft list ruleset`, `ipset save` — is what a fresh build of the same file
shows (ifindexes, MACs, timers, counters and the lab's name left out). A reconcile that
fails half-way (an `exec:` command that fails, after every other change was made) leaves
the lab as it was before it."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

import yaml

RULESET = "table inet gw {\n  chain filt { type filter hook forward priority 0; policy accept; counter; }\n}\n"
BASE: dict[str, Any] = {
    "cluster": {
        "backend": "host-gw",
        "nodes": {"node1": {}, "node2": {}},
        "pods": {
            "web": {"replicas": 2, "labels": {"app": "web"}, "serve": ["tcp/8080"]},
            "client": {"node": "node1"},
        },
        "services": {
            "web": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "target_port": 8080, "node_port": 30080}],
            }
        },
    },
    "nodes": {
        "gw": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {
                "eth0": {"peer": "ext:eth0", "addresses": ["10.50.0.1/24"]},
                "dum0": {"kind": "bridge", "addresses": ["10.60.0.1/24"]},
            },
            "ipsets": [{"name": "allowed", "type": "hash:ip", "members": ["10.50.0.2"]}],
            "nftables": [{"ruleset": RULESET}],
        },
        "ext": {
            "links": {"eth0": {"addresses": ["10.50.0.2/24"]}},
            "routes": [{"to": "10.60.0.0/24", "via": "10.50.0.1"}],
        },
    },
    "variants": {"v": {"nodes": {"gw": {"links": {"dum0": {"mtu": 1400}}}}}},
}


def _add_pod(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["extra"] = {"node": "node2"}


def _remove_pod(d: dict[str, Any]) -> None:
    del d["cluster"]["pods"]["client"]


def _move_address(d: dict[str, Any]) -> None:
    d["nodes"]["gw"]["links"]["dum0"]["addresses"] = []
    d["nodes"]["gw"]["links"]["eth0"]["addresses"].append("10.60.0.1/24")


def _change_route(d: dict[str, Any]) -> None:
    d["nodes"]["ext"]["routes"] = [{"to": "10.61.0.0/24", "via": "10.50.0.1"}]


def _swap_ruleset(d: dict[str, Any]) -> None:
    d["nodes"]["gw"]["nftables"] = [{"ruleset": RULESET.replace("inet gw", "ip gw2").replace("accept", "drop")}]
    d["nodes"]["gw"]["ipsets"][0]["members"] = ["10.50.0.2", "10.50.0.9"]


def _scale(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["web"]["replicas"] = 3


def _switch_variant(d: dict[str, Any]) -> None:
    d["variants"]["v"] = {"nodes": {"gw": {"links": {"dum0": {"mtu": 1300, "up": False}}}}}


EDITS: list[Callable[[dict[str, Any]], None]] = [
    _add_pod,
    _remove_pod,
    _move_address,
    _change_route,
    _swap_ruleset,
    _scale,
    _switch_variant,
]


# ---------------------------------------------------------------- what the kernel shows

_VARYING = {"ifindex", "link_index", "link_netnsid", "address", "broadcast", "operstate", "valid_life_time"}
_VARYING |= {"preferred_life_time", "id", "no", "root_id", "bridge_id", "designated_root", "designated_bridge"}
_VARYING |= {"designated_port", "designated_cost", "root_port", "port_id", "port_no"}


def _steady(value: Any, lab: str) -> Any:
    if isinstance(value, dict):
        return {k: _steady(v, lab) for k, v in value.items() if k not in _VARYING and "timer" not in k}
    if isinstance(value, list):
        return [_steady(v, lab) for v in value]
    if isinstance(value, str):
        return value.replace(lab, "LAB")
    return value


def _ip(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-j", "-n", ns, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def _inside(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True).stdout


def _sorted(entries: list[Any]) -> list[Any]:
    return sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))


def _node_view(ns: str, lab: str) -> dict[str, Any]:
    links = sorted(_ip(ns, "-d", "link"), key=lambda link: link["ifname"])
    addrs = {
        a["ifname"]: [i for i in a.get("addr_info", []) if not str(i.get("local", "")).startswith("fe80")]
        for a in _ip(ns, "addr")
    }
    fdb = [e for e in json.loads(_bridge_fdb(ns)) if e.get("state") == "static" or "dst" in e]
    view: dict[str, Any] = _steady(
        {
            "links": links,
            "addresses": addrs,
            "routes": _sorted(
                _ip(ns, "-d", "route", "show", "table", "all") + _ip(ns, "-6", "-d", "route", "show", "table", "all")
            ),
            "rules": _ip(ns, "rule") + _ip(ns, "-6", "rule"),
            "neighbours": _sorted(_ip(ns, "neigh", "show", "nud", "permanent")),
            "fdb": _sorted(fdb),
            "nft": re.sub(r"counter packets \d+ bytes \d+", "counter", _inside(ns, "nft", "list", "ruleset")),
            "ipsets": sorted(
                re.sub(r" initval 0x[0-9a-f]+", "", line) for line in _inside(ns, "ipset", "save").splitlines()
            ),
        },
        lab,
    )
    return view


def _bridge_fdb(ns: str) -> str:
    out = subprocess.run(["bridge", "-j", "-n", ns, "fdb", "show"], capture_output=True, text=True, check=True).stdout
    return out if out.strip() else "[]"


def _view(lab: str) -> dict[str, Any]:
    prefix = f"{lab}."
    names = sorted(n for n in _netns() if n.startswith(prefix))
    return {n[len(prefix) :]: _node_view(n, lab) for n in names}


def _netns() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [e["name"] for e in json.loads(out or "[]")]


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: reconciled {json.dumps(a)[:300]} | fresh {json.dumps(b)[:300]}"]


# ---------------------------------------------------------------- the tests


def _write(lab: Any, data: dict[str, Any]) -> None:
    lab.path.write_text(yaml.safe_dump({"name": lab.name, **data}, sort_keys=False))


def test_a_sequence_of_edits_reconciles_to_what_a_fresh_build_makes(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    data = copy.deepcopy(BASE)
    lab = lab_file(data)
    fresh = lab_file(data, filename="fresh.yaml")
    for made in (lab, fresh):
        lab_file.registry.names.add(f"{made.name}-v")
        lab_file.made.append(f"{made.name}-v")
    first = netlab_cli("up", lab.path, "--variant", "v")
    assert first.rc == 0, first
    for edit in EDITS:
        edit(data)
        _write(lab, data)
        _write(fresh, data)
        done = netlab_cli("up", lab.path, "--variant", "v")
        assert done.rc == 0 and "reconciled in place" in done.out, (edit.__name__, done)
        built = netlab_cli("up", fresh.path, "--variant", "v")
        assert built.rc == 0, (edit.__name__, built)
        try:
            differences = _differences(_view(f"{lab.name}-v"), _view(f"{fresh.name}-v"))
        finally:
            assert netlab_cli("down", fresh.path, "--variant", "v").rc == 0
        assert differences == [], (edit.__name__, done.out, differences[:10])
    status = netlab_cli("status", f"{lab.name}-v")
    assert f"reconciled {len(EDITS)}×" in status.out, status


def test_a_failed_reconcile_leaves_the_lab_as_it_was(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    data = copy.deepcopy(BASE)
    del data["variants"]
    lab = lab_file(data)
    assert netlab_cli("up", lab.path).rc == 0
    before = _view(lab.name)
    for edit in (_add_pod, _move_address, _change_route, _swap_ruleset, _scale):
        edit(data)
    data["nodes"]["ext"]["exec"] = [["sh", "-c", "echo refused >&2; exit 3"]]
    _write(lab, data)
    failed = netlab_cli("up", lab.path)
    assert failed.rc == 1, failed
    assert failed.err.strip() == (
        f"netlab: failed: nodes.ext.exec[0] (ip netns exec {lab.ns('ext')} sh -c 'echo refused >&2; exit 3'): "
        f"exit status 3: refused; lab {lab.name} was put back as it was"
    ), failed.err
    assert _differences(_view(lab.name), before) == []
    state = json.loads((kn.state_file(lab.name)).read_text())
    assert state["status"] == "up" and state["reconciles"] == 0
