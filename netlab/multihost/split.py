"""An expanded lab and its placement → one explicit sub-lab per host.

Every address, MAC and VNI is the coordinator's: each host gets plain nodes it builds
with its own `netlab up`. A veth whose ends are on two hosts becomes a point-to-point
VXLAN pair, one VNI per link: on each host, the end is a vxlan with `underlay: host`
(made from the host's own network namespace, so its UDP socket stays there, and placed
in the node under the veth end's name, with the end's addresses, MAC and master), from
the host's tunnel address to the other's. The node sees a plain interface; what runs
over it (bridges, flannel's own VXLAN, policies, services) is unchanged.

A tunnel carries less than a wire: the hosts' MTU less the encapsulation (50 bytes over
IPv4, 70 over IPv6). An end without an MTU gets the most that fits (at most 1500, a
veth's default); an end whose MTU does not fit is refused, with the numbers.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from typing import Any

from netlab.errors import LabError, Problem, UsageError
from netlab.lab.model import Lab
from netlab.lab.render import lab_data
from netlab.lab.topology import Interface, Topology, resolve
from netlab.load import LabOrigin
from netlab.multihost.inventory import Host, Inventory
from netlab.multihost.placement import Placement

OVERHEAD = {4: 50, 6: 70}  # outer Ethernet 14 + IP 20/40 + UDP 8 + VXLAN 8
VETH_MTU = 1500  # what a veth end without `mtu:` would have had
VNIS_PER_LAB = 4096  # a lab's tunnels take VNIs BLOCK*4096 + i: labs side by side rarely meet


@dataclass(frozen=True)
class TunnelEnd:
    host: str
    node: str
    ifname: str
    mtu: int  # what the end's vxlan gets


@dataclass(frozen=True)
class Tunnel:
    """A veth pair whose ends are on two hosts, as the VXLAN pair that replaces it."""

    vni: int
    ends: tuple[TunnelEnd, TunnelEnd]
    capacity: int  # the largest MTU the hosts' path carries under the encapsulation

    def end_on(self, host: str, node: str) -> TunnelEnd | None:
        return next((e for e in self.ends if e.host == host and e.node == node), None)


@dataclass(frozen=True)
class Split:
    lab: Lab  # the whole lab (its checks are the coordinator's)
    placement: Placement
    tunnels: tuple[Tunnel, ...]
    sub_labs: dict[str, Lab]  # host → its explicit sub-lab, for the hosts that have nodes
    port: int  # the tunnels' UDP port


def split_lab(lab: Lab, origin: LabOrigin, placement: Placement, inventory: Inventory) -> Split:
    """LabError (exit 2) when a cross-host link's MTU cannot fit in a tunnel."""
    topo, _ = resolve(lab)
    tunnels = _tunnels(lab, topo, placement, inventory, origin)
    data = lab_data(lab)
    subs = {
        host: _sub_lab(data, lab, host, placement, tunnels, inventory)
        for host in placement.hosts
        if placement.nodes_on(host)
    }
    return Split(lab, placement, tuple(tunnels), subs, inventory.tunnel_port)


def vni_block(lab: str) -> int:
    return zlib.crc32(lab.encode()) % (2**24 // VNIS_PER_LAB - 1) + 1


def _tunnels(lab: Lab, topo: Topology, placement: Placement, inventory: Inventory, origin: LabOrigin) -> list[Tunnel]:
    crossing = [p for p in topo.pairs if placement.of_node[p.near[0]] != placement.of_node[p.far[0]]]
    if len(crossing) > VNIS_PER_LAB:
        raise UsageError(
            f"lab {lab.name} has {len(crossing)} links between hosts; a lab has at most {VNIS_PER_LAB}: "
            "place the nodes so fewer links cross (`host:`)"
        )
    base = vni_block(lab.name) * VNIS_PER_LAB
    tunnels: list[Tunnel] = []
    problems: list[Problem] = []
    for i, pair in enumerate(crossing):
        near, far = topo.interfaces[pair.near], topo.interfaces[pair.far]
        hosts = (inventory.host(placement.of_node[near.node]), inventory.host(placement.of_node[far.node]))
        capacity = min(h.mtu for h in hosts) - OVERHEAD[_family(hosts)]
        sides = ((near, far, hosts), (far, near, (hosts[1], hosts[0])))
        too_big = [side for side in sides if (side[0].settings.mtu or 0) > capacity]
        if too_big:  # one problem per link, at the first end that does not fit
            problems.append(_too_big(origin, *too_big[0], capacity, inventory.file))
        ends = [TunnelEnd(h[0].name, i.node, i.name, i.settings.mtu or min(VETH_MTU, capacity)) for i, _, h in sides]
        tunnels.append(Tunnel(base + i, (ends[0], ends[1]), capacity))
    if problems:
        raise LabError(problems)
    return tunnels


def _family(hosts: tuple[Host, Host]) -> int:
    families = {ipaddress.ip_address(h.tunnel_address).version for h in hosts}
    if len(families) > 1:
        raise UsageError(
            f"hosts {hosts[0].name} ({hosts[0].tunnel_address}) and {hosts[1].name} ({hosts[1].tunnel_address}) "
            "share a link, but their tunnel addresses are of two IP families; give both netlab_address of one"
        )
    return families.pop()


def _too_big(
    origin: LabOrigin, iface: Interface, other: Interface, hosts: tuple[Host, Host], capacity: int, file: str
) -> Problem:
    """`hosts`: iface's, then other's. A cluster's node links take the underlay's MTU: say that key."""
    mtu = min(h.mtu for h in hosts)
    path = (*iface.path, "mtu")
    fix = f"lower the link's mtu to {capacity}"
    if origin.written(path)[0] == "cluster":
        path, fix = ("cluster", "underlay", "mtu"), f"set cluster.underlay.mtu to {capacity} (the pods' MTU follows)"
    return origin.problem(
        path,
        f"{iface.settings.mtu} does not fit: the link between {iface.node} (host {hosts[0].name}) and "
        f"{other.node} (host {hosts[1].name}) is a VXLAN tunnel between the hosts, which carries at most {capacity} "
        f"(the hosts' MTU {mtu} less {mtu - capacity} bytes of encapsulation); {fix}, "
        f"or raise netlab_mtu in {file} if the path between the hosts carries more",
    )


def _sub_lab(
    data: dict[str, Any], lab: Lab, host: str, placement: Placement, tunnels: list[Tunnel], inventory: Inventory
) -> Lab:
    mine = placement.nodes_on(host)
    nodes = {}
    for node in mine:
        spec = dict(data["nodes"][node])
        spec.pop("host", None)
        ends = [(t, e) for t in tunnels if (e := t.end_on(host, node)) is not None]
        if ends:
            spec["links"] = _with_tunnels(spec.get("links", {}), ends, host, inventory)
        nodes[node] = spec
    sub: dict[str, Any] = {
        "name": lab.name,
        "description": f"lab {lab.name}'s {len(mine)} of {len(lab.nodes)} nodes on host {host} (netlab multihost)",
    }
    requires = list(data.get("requires", []))
    if any(t.end_on(host, n) for t in tunnels for n in mine) and "vxlan" not in requires:
        requires.append("vxlan")
    if requires:
        sub["requires"] = requires
    if "tables" in data:
        sub["tables"] = data["tables"]
    sub["nodes"] = nodes
    return Lab.model_validate(sub)


def _with_tunnels(
    links: dict[str, Any], ends: list[tuple[Tunnel, TunnelEnd]], host: str, inventory: Inventory
) -> dict[str, Any]:
    """The node's links with each tunnelled veth end a vxlan, under its name and first (a
    vxlan of the lab may name it as its `dev:`; bridges and VRFs are made before)."""
    me = inventory.host(host)
    tunnelled = {}
    for tunnel, end in ends:
        other = next(e for e in tunnel.ends if e is not end)
        settings = {k: v for k, v in links.get(end.ifname, {}).items() if k not in ("peer", "kind", "mtu")}
        tunnelled[end.ifname] = {
            "kind": "vxlan",
            **settings,
            "mtu": end.mtu,
            "vni": tunnel.vni,
            "port": inventory.tunnel_port,
            "local": me.tunnel_address,
            "remote": inventory.host(other.host).tunnel_address,
            "learning": False,
            "underlay": "host",
        }
    return tunnelled | {name: link for name, link in links.items() if name not in tunnelled}
