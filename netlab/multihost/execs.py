"""`netlab exec LAB GLOB|--all [--json] -- CMD` of a lab over hosts: each host that holds
chosen nodes runs `netlab exec LAB GLOB|--all --json -- CMD` on its own part (its sub-lab
holds only its nodes, so the same GLOB there names its share of them), all hosts at
once over ssh; the nodes' results come back as that command's JSON and are put together
in the lab's node order. A host that cannot be reached, or whose netlab refused the
command (not up there, a command it cannot find), gives each of its nodes that exit
status with what was said on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from netlab.errors import EXIT_FAILED
from netlab.multihost.checks import OverHosts
from netlab.multihost.inventory import Host
from netlab.multihost.lifecycle import load_split
from netlab.multihost.ssh import SSH_FAILED, Reply, Ssh, as_root, on_each
from netlab.naming import netns_name
from netlab.nodeexec import NodeRun, match_nodes


@dataclass(frozen=True)
class OverHostsRun:
    lab: str
    results: list[NodeRun]  # in the lab's node order
    host_of: dict[str, str]  # node → host


def run_on_hosts(where: OverHosts, pattern: str | None, argv: Sequence[str]) -> OverHostsRun:
    """argv in every node `pattern` names (None: every node), each on its host."""
    inventory, split = load_split(where.source, where.variant, where.inventory)
    lab = split.lab.name
    chosen = match_nodes(lab, {n: netns_name(lab, n) for n in split.lab.nodes}, pattern)
    host_of = {node: split.placement.of_node[node] for node in chosen}
    hosts = [inventory.host(h) for h in dict.fromkeys(host_of.values())]
    remote = ["--all"] if pattern is None else [pattern]

    def on(host: Host) -> Reply:
        return ssh.run(host, as_root([host.netlab, "exec", lab, *remote, "--json", "--", *argv]))

    with Ssh() as ssh:
        replies = on_each(hosts, on)
    found: dict[str, NodeRun] = {}
    for host, reply in zip(hosts, replies, strict=True):
        mine = [n for n, h in host_of.items() if h == host.name]
        found.update({r.node: r for r in _results(host, reply, mine)})
    return OverHostsRun(lab, [found[n] for n in chosen], host_of)


def _results(host: Host, reply: Reply, nodes: list[str]) -> list[NodeRun]:
    """The host's nodes' runs from its `exec --json`; its error given to each of them."""
    try:
        doc = json.loads(reply.out)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("nodes"), list):
        runs = [NodeRun(**r) for r in doc["nodes"] if r.get("node") in nodes]
        missing = [n for n in nodes if n not in {r.node for r in runs}]
        return runs + [
            NodeRun(n, EXIT_FAILED, "", f"host {host.name}: its netlab did not run it there\n") for n in missing
        ]
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        code, why = int(doc["error"].get("code", 1)), str(doc["error"].get("message", ""))
    else:
        code, why = reply.code or SSH_FAILED, reply.why()
    return [NodeRun(n, code, "", f"host {host.name}: {why}\n") for n in nodes]
