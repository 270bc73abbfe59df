"""Which host each node of an expanded lab runs on.

A node's `host:` (a cluster node's too) puts it there; a cluster node's pods always go
with it. Every other node is placed automatically: the largest unit first (a cluster
node with its pods, else one node), each onto the host with the fewest namespaces so
far, ties going to the host the inventory names first. The same lab and inventory
always give the same placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.errors import LabError, Problem
from netlab.lab.model import Lab
from netlab.load import LabOrigin
from netlab.multihost.inventory import Inventory


@dataclass(frozen=True)
class Placement:
    hosts: tuple[str, ...]  # the inventory's, in its order
    of_node: dict[str, str]  # node → host, in the lab's node order
    pinned: frozenset[str]  # the nodes a `host:` placed (a cluster node's pods with it)

    def nodes_on(self, host: str) -> list[str]:
        return [node for node, h in self.of_node.items() if h == host]


def place(lab: Lab, origin: LabOrigin, inventory: Inventory) -> Placement:
    """LabError (exit 2) when a `host:` names no host of the inventory."""
    units = _units(lab, origin)
    hosts = inventory.names
    of_node: dict[str, str] = {}
    pinned: set[str] = set()
    problems: list[Problem] = []
    for head, members in units.items():
        wanted = lab.nodes[head].host
        if wanted is None:
            continue
        if wanted not in hosts:
            problems.append(
                origin.problem(
                    ("nodes", head, "host"),
                    f"no host {wanted!r} in the inventory {inventory.file} (its hosts: {', '.join(hosts)})",
                )
            )
            continue
        of_node.update(dict.fromkeys(members, wanted))
        pinned.update(members)
    if problems:
        raise LabError(problems)
    load = {h: 0 for h in hosts}
    for member_host in of_node.values():
        load[member_host] += 1
    free = sorted((u for h, u in units.items() if h not in of_node), key=len, reverse=True)  # stable: lab order
    for members in free:
        host = min(hosts, key=lambda h: load[h])  # the first of the least loaded
        of_node.update(dict.fromkeys(members, host))
        load[host] += len(members)
    return Placement(hosts, {node: of_node[node] for node in lab.nodes}, frozenset(pinned))


def _units(lab: Lab, origin: LabOrigin) -> dict[str, list[str]]:
    """What moves together, by its head node: a cluster node and its pods, or one node."""
    pods = origin.cluster.pods if origin.cluster is not None else {}
    with_node = {pod for members in pods.values() for pod in members}
    return {node: [node, *pods.get(node, ())] for node in lab.nodes if node not in with_node}
