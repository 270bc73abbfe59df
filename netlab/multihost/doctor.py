"""`netlab doctor --hosts FILE`: can every host of the inventory take part in a lab?

Each host, in parallel over ssh: reachable, root (directly or `sudo -n`), this netlab's
version, and its kernel's features (its own `netlab doctor --json`). Then, between every
pair of hosts that passed, the tunnels' UDP port: a throwaway lab with a node on each
host and a link between every pair — each link a VXLAN pair over the port, exactly as a
lab's cross-host links are made — is built, pinged through (a probe check per pair, each
from its first host), and taken down again. A firewall that drops the port, a wrong
`netlab_address` or an MTU the path does not carry shows there, with the pair named.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from netlab.errors import NetlabError
from netlab.multihost import engine
from netlab.multihost.checks import OverHosts, check
from netlab.multihost.inventory import Host, Inventory, load_inventory
from netlab.multihost.lifecycle import load_split
from netlab.multihost.ssh import Reply, Ssh, as_root, on_each

DOCTOR_SCRIPT = '"$0" --version || exit 127; "$0" doctor --json'


@dataclass(frozen=True)
class Finding:
    where: str  # a host, or a pair of hosts "h1 ↔ h2"
    what: str  # ssh, netlab, kernel, tunnel
    ok: bool
    detail: str
    hosts: tuple[str, ...]  # the host, the pair, or every host of a tunnel finding about them all


def doctor(hosts_file: str) -> list[Finding]:
    inventory = load_inventory(hosts_file)
    with Ssh() as ssh:
        replies = on_each(inventory.hosts, lambda h: ssh.run(h, as_root(["sh", "-c", DOCTOR_SCRIPT, h.netlab])))
    findings: list[Finding] = []
    ready: list[Host] = []
    for host, reply in zip(inventory.hosts, replies, strict=True):
        problem = engine.host_problem(host, reply)
        if problem:
            findings.append(Finding(host.name, "ssh" if reply.unreachable else "netlab", False, problem, (host.name,)))
            continue
        findings.append(
            Finding(host.name, "netlab", True, f"reachable as root, netlab {_version(reply)}", (host.name,))
        )
        findings.append(_kernel(host, reply))
        ready.append(host)
    if len(ready) > 1:
        findings += _tunnels(inventory, ready)
    return findings


def _version(reply: Reply) -> str:
    return reply.out.split("version", 1)[1].split()[0] if "version" in reply.out else "?"


def _kernel(host: Host, reply: Reply) -> Finding:
    """The host's own doctor's verdict on its kernel features."""
    try:
        found: dict[str, Any] = json.loads(reply.out[reply.out.index("{") :])
        features = found["features"]
    except (ValueError, KeyError, TypeError):
        return Finding(
            host.name, "kernel", False, f"its netlab doctor said nothing readable ({reply.why()})", (host.name,)
        )
    missing = [f for f in features if not f["ok"]]
    if not missing:
        return Finding(host.name, "kernel", True, f"all {len(features)} features netlab knows", (host.name,))
    names = ", ".join(f["name"] for f in missing)
    hints = "; ".join(f"{f['name']}: {f['hint']}" for f in missing)
    return Finding(host.name, "kernel", False, f"lacks {names} (labs that need them stop there): {hints}", (host.name,))


def _tunnels(inventory: Inventory, hosts: list[Host]) -> list[Finding]:
    """A ping through a VXLAN pair between every pair of hosts, in a throwaway lab."""
    pairs = list(combinations(range(len(hosts)), 2))
    every = tuple(h.name for h in hosts)
    name = f"netlab-doctor-{os.getpid()}"
    port = inventory.tunnel_port
    with tempfile.TemporaryDirectory(prefix="netlab-doctor-") as work:
        path = Path(work) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_mesh(name, hosts, pairs), sort_keys=False))
        _, split = load_split(path, None, inventory.file)
        try:
            engine.up(split, inventory)
        except NetlabError as e:
            return [Finding("every pair", "tunnel", False, f"the throwaway lab could not be built: {e}", every)]
        try:
            run = check(OverHosts(str(path), None, inventory.file))
        except NetlabError as e:
            return [Finding("every pair", "tunnel", False, f"could not ping through the tunnels: {e}", every)]
        finally:
            engine.down(name, Inventory(inventory.file, tuple(hosts), port))
    findings = []
    pair_of = {f"{hosts[i].name} ↔ {hosts[j].name}": (hosts[i].name, hosts[j].name) for i, j in pairs}
    for v in run.verdicts:
        detail = f"UDP {port} both ways: ping through a VXLAN pair ({v.summary})"
        if not v.passed:
            detail = f"UDP {port} is not open between them ({v.summary}): a firewall, or a wrong netlab_address"
        findings.append(Finding(v.name, "tunnel", v.passed, detail, pair_of.get(v.name, every)))
    return findings


def _mesh(name: str, hosts: list[Host], pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """A node per host, a veth per pair of hosts (a tunnel once split), a ping per pair."""
    nodes: dict[str, Any] = {f"n{i}": {"host": h.name, "links": {}} for i, h in enumerate(hosts)}
    checks = []
    for k, (i, j) in enumerate(pairs):
        first = ipaddress.ip_address("10.254.0.0") + 4 * k  # a /30 per pair
        a, b = first + 1, first + 2
        nodes[f"n{i}"]["links"][f"t{k}"] = {"peer": f"n{j}:t{k}", "addresses": [f"{a}/30"]}
        nodes[f"n{j}"]["links"][f"t{k}"] = {"addresses": [f"{b}/30"]}
        checks.append(
            {"name": f"{hosts[i].name} ↔ {hosts[j].name}", "probe": {"from": f"n{i}", "to": str(b), "count": 2}}
        )
    return {"name": name, "nodes": nodes, "checks": checks}
