"""What the kernel shows of a lab, to compare a reconciled lab with a fresh build of the
same file: per namespace, `ip -d -j` links, addresses, routes and rules, permanent
neighbours, static FDB entries, `nft list ruleset`, `ipset save` and, where the kernel has
IPVS, `ipvsadm -Ln` — ifindexes, MACs, timers, counters and the lab's name left out.
Shared by tests/kernel/test_reconcile.py and tests/vm/test_reconcile_ipvs.py."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

_VARYING = {"ifindex", "link_index", "link_netnsid", "address", "broadcast", "operstate", "valid_life_time"}
_VARYING |= {"preferred_life_time", "id", "no", "root_id", "bridge_id", "designated_root", "designated_bridge"}
_VARYING |= {"designated_port", "designated_cost", "root_port", "port_id", "port_no"}
# the fallback tunnels (gre0, ip6tnl0, …) a loaded module makes in each namespace get a random permaddr
_VARYING |= {"permaddr"}


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
            "ipvs": _ipvs(ns),
        },
        lab,
    )
    return view


def _bridge_fdb(ns: str) -> str:
    out = subprocess.run(["bridge", "-j", "-n", ns, "fdb", "show"], capture_output=True, text=True, check=True).stdout
    return out if out.strip() else "[]"


def view(lab: str) -> dict[str, Any]:
    """The lab as the kernel shows it once every link's state is told: NO-CARRIER (and a
    route's linkdown) follow the operational state, which linkwatch updates up to a second
    after the carrier changed (LOWER_UP is the carrier itself), so a link just made may
    read LOWER_UP and NO-CARRIER at once for a moment."""
    prefix = f"{lab}."
    names = sorted(n for n in _netns() if n.startswith(prefix))
    deadline = time.monotonic() + 5
    while True:
        seen = {n[len(prefix) :]: _node_view(n, lab) for n in names}
        if all(_told(link) for node in seen.values() for link in node["links"]) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def _told(link: dict[str, Any]) -> bool:
    """An up link's operational state agrees with its carrier."""
    flags = link.get("flags", [])
    return "UP" not in flags or ("LOWER_UP" in flags) != ("NO-CARRIER" in flags)


def _netns() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [e["name"] for e in json.loads(out or "[]")]


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: reconciled {json.dumps(a)[:300]} | fresh {json.dumps(b)[:300]}"]


def _ipvs(ns: str) -> list[str] | None:
    """`ipvsadm -Ln --sort` (services and their real servers, with weights); None where
    the kernel has no IPVS."""
    done = subprocess.run(["ip", "netns", "exec", ns, "ipvsadm", "-Ln", "--sort"], capture_output=True, text=True)
    return done.stdout.splitlines() if done.returncode == 0 else None
