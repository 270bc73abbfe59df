"""Resolve a lab's links into concrete interfaces: which node has which interface, which
veth ends pair up, which bridge each port belongs to, and which interfaces share an L2
segment. Pure; used by the cross-checks and by the planner, so both see one truth.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from netlab.lab.model import FALLBACK_DEVICES, Bridge, Lab, PeerEnd, Veth, Vlan, Vxlan, _IpTunnel, _LinkCommon
from netlab.lab.source import Complaint, Path

IfKey = tuple[str, str]  # (node, ifname)


@dataclass(frozen=True)
class Interface:
    node: str
    name: str
    kind: str  # veth | bridge | dummy | vxlan | vrf | ipip | … | lo
    settings: _LinkCommon
    path: Path  # where the lab declares it (for an implicit veth end: where its peer is declared)
    peer: IfKey | None = None
    master: str | None = None
    fallback: bool = False  # a tunnel module's own device (tunl0, gre0, …): configured, never created


def fallback_devices(lab: Lab) -> dict[str, str]:
    """The fallback devices every namespace of the lab has, by name → kind: those of the
    tunnel kinds the lab uses (netlab.lab.model.FALLBACK_DEVICES)."""
    kinds = {str(getattr(link, "kind", "")) for node in lab.nodes.values() for link in node.links.values()}
    return {name: kind for k in sorted(kinds & set(FALLBACK_DEVICES)) for name, kind in FALLBACK_DEVICES[k].items()}


def lower_dev(link: _LinkCommon) -> str | None:
    """The device a link sits on: a vxlan's or tunnel's underlay, a vlan's parent."""
    return link.dev if isinstance(link, (Vxlan, _IpTunnel, Vlan)) else None


@dataclass(frozen=True)
class VethPair:
    """A veth pair, created from `near` (the end whose node sends the netlink request)."""

    near: IfKey
    far: IfKey


@dataclass
class Topology:
    interfaces: dict[IfKey, Interface] = field(default_factory=dict)
    pairs: list[VethPair] = field(default_factory=list)
    # node → its interfaces' keys, made again when interfaces are added (scanning them all
    # per node was quadratic: 0.09 s of a 500-pod `up`)
    _keys_of: dict[str, list[IfKey]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _indexed: int = field(default=-1, init=False, repr=False, compare=False)

    def of_node(self, node: str) -> list[Interface]:
        if self._indexed != len(self.interfaces):
            self._keys_of = {}
            for key in self.interfaces:
                self._keys_of.setdefault(key[0], []).append(key)
            self._indexed = len(self.interfaces)
        return [self.interfaces[k] for k in self._keys_of.get(node, [])]

    def segments(self) -> list[set[IfKey]]:
        """Groups of interfaces joined at layer 2 (veth pairs and bridge ports; a VRF joins
        its interfaces at layer 3 only)."""
        parent: dict[IfKey, IfKey] = {k: k for k in self.interfaces}

        def find(k: IfKey) -> IfKey:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        def union(a: IfKey, b: IfKey) -> None:
            if a in parent and b in parent:
                parent[find(a)] = find(b)

        for pair in self.pairs:
            union(pair.near, pair.far)
        for (node, _), iface in self.interfaces.items():
            if iface.master and self.master_kind(iface) == "bridge":
                union((node, iface.name), (node, iface.master))
        groups: dict[IfKey, set[IfKey]] = {}
        for k in self.interfaces:
            groups.setdefault(find(k), set()).add(k)
        return list(groups.values())

    def master_kind(self, iface: Interface) -> str | None:
        """The kind of the interface's master (bridge, vrf, …), or None without one."""
        master = self.interfaces.get((iface.node, iface.master)) if iface.master else None
        return master.kind if master is not None else None

    def bridge_of(self, iface: Interface) -> str | None:
        """The bridge the interface is a port of, or None (no master, or a VRF)."""
        return iface.master if self.master_kind(iface) == "bridge" else None


def _kind(link: _LinkCommon) -> str:
    return str(getattr(link, "kind", "end"))


# The last lab resolved, by identity: one `up` resolves its lab four times (cross-checks,
# plan, preflight, cluster record), 0.02 s each at 500 pods. A Lab is frozen, and nothing
# changes a Topology once it is made.
_last: tuple[Lab, Topology, list[Complaint]] | None = None


def resolve(lab: Lab) -> tuple[Topology, list[Complaint]]:
    """Resolve links; complaints are (key path, message) for what cannot be resolved."""
    global _last
    if _last is None or _last[0] is not lab:
        _last = (lab, *_resolve(lab))
    return _last[1], list(_last[2])


def _resolve(lab: Lab) -> tuple[Topology, list[Complaint]]:
    """Each pass builds on the ones before it."""
    topo = Topology()
    complaints: list[Complaint] = []
    port_of = _bridge_ports(lab, complaints)  # bridge `ports:`: which bridge claims each port
    _declare_links(lab, port_of, topo, complaints)  # every declared link, with its master
    meant = _pair_veths(lab, port_of, topo, complaints)  # veth ends paired, implicit far ends added
    complaints += _missing_ports(port_of, topo)  # ports are checked once implicit veth ends exist
    for key, iface in topo.interfaces.items():  # each interface's own consistency
        complaints += _unpaired_end(topo, key, iface, meant)
        complaints += _master_problems(topo, key, iface, port_of)
        complaints += _setting_problems(topo, key, iface)
    return topo, complaints


PortOf = dict[IfKey, tuple[str, Path]]  # (node, port) → (its bridge, where `ports:` lists it)


def _bridge_ports(lab: Lab, complaints: list[Complaint]) -> PortOf:
    """Bridge `ports:` are another way to say `master:` on the port."""
    port_of: PortOf = {}
    for node_name, node in lab.nodes.items():
        for ifname, link in node.links.items():
            if isinstance(link, Bridge):
                for i, port in enumerate(link.ports):
                    port_path: Path = ("nodes", node_name, "links", ifname, "ports", i)
                    if port == ifname:
                        complaints.append((port_path, f"bridge {ifname} cannot be its own port"))
                    elif (node_name, port) in port_of:
                        taken_by = port_of[(node_name, port)][0]
                        complaints.append((port_path, f"{port} is already a port of bridge {taken_by}"))
                    else:
                        port_of[(node_name, port)] = (ifname, port_path)
    return port_of


def _declare_links(lab: Lab, port_of: PortOf, topo: Topology, complaints: list[Complaint]) -> None:
    """An Interface per declared link; its master from `master:` or a bridge's `ports:`."""
    fallbacks = fallback_devices(lab)
    for node_name, node in lab.nodes.items():
        for ifname, link in node.links.items():
            path: Path = ("nodes", node_name, "links", ifname)
            master = link.master
            via_ports = port_of.get((node_name, ifname))
            if via_ports:
                if master and master != via_ports[0]:
                    complaints.append(
                        (
                            (*path, "master"),
                            f"{ifname} is in bridge {via_ports[0]}'s ports but says `master: {master}`; "
                            "an interface has one master: keep only one of the two",
                        )
                    )
                master = master or via_ports[0]
            kind = "lo" if ifname == "lo" and isinstance(link, PeerEnd) else _kind(link)
            # a plain end, or a link of its own kind, named as a fallback device the lab has
            made_by = fallbacks.get(ifname)
            fallback = made_by is not None and kind in ("end", made_by)
            if made_by is not None and fallback:
                kind = made_by
            peer = None
            if isinstance(link, Veth):
                pnode, _, pif = link.peer.partition(":")
                peer = (pnode, pif)
            topo.interfaces[(node_name, ifname)] = Interface(
                node_name, ifname, kind, link, path, peer=peer, master=master, fallback=fallback
            )


def _pair_veths(lab: Lab, port_of: PortOf, topo: Topology, complaints: list[Complaint]) -> set[IfKey]:
    """Pair veth ends; the far end may be declared (as a PeerEnd or a Veth pointing back) or
    implicit. Returns the ends a misspelt peer surely meant: their own complaint would repeat it."""
    seen: set[IfKey] = set()
    meant: set[IfKey] = set()
    for key, iface in list(topo.interfaces.items()):
        if iface.kind != "veth" or key in seen:
            continue
        assert iface.peer is not None
        pkey = iface.peer
        problem = _peer_problem(lab, topo, key, pkey, seen, meant) or _take_far_end(port_of, topo, key, pkey)
        if problem is not None:
            complaints.append(problem)
            continue
        seen.update({key, pkey})
        near, far = key, pkey
        # Create from the end that has a bridge master, so one message sets it (fewer round trips).
        if not topo.interfaces[near].master and topo.interfaces[far].master:
            near, far = far, near
        topo.pairs.append(VethPair(near, far))
    return meant


def _peer_problem(
    lab: Lab, topo: Topology, key: IfKey, pkey: IfKey, seen: set[IfKey], meant: set[IfKey]
) -> Complaint | None:
    """Why `key` cannot have `pkey` as its peer whatever is declared there: itself, a node
    that does not exist, an end already paired."""
    ppath = (*topo.interfaces[key].path, "peer")
    if pkey == key:
        return ppath, f"a veth cannot be its own peer; name the other end, e.g. `peer: OTHERNODE:{key[1]}`"
    if pkey[0] not in lab.nodes:
        known = ", ".join(sorted(lab.nodes))
        close = difflib.get_close_matches(pkey[0], list(lab.nodes), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}:{pkey[1]}? " if close else ""
        meant.update((close[0], pkey[1]) for _ in close)
        return ppath, f"peer node {pkey[0]!r} is not defined; {hint}(nodes: {known})"
    if pkey in seen:
        owner = next(p.near if p.far == pkey else p.far for p in topo.pairs if pkey in (p.near, p.far))
        return (
            ppath,
            f"{pkey[0]}:{pkey[1]} is already the peer of {owner[0]}:{owner[1]}; a veth "
            "has exactly two ends, so name another interface",
        )
    return None


def _take_far_end(port_of: PortOf, topo: Topology, key: IfKey, pkey: IfKey) -> Complaint | None:
    """Make `pkey` the veth end paired with `key`: add it when implicit, turn a declared
    plain end into a veth end; or say why what is declared there cannot be one."""
    iface = topo.interfaces[key]
    ppath = (*iface.path, "peer")
    other = topo.interfaces.get(pkey)
    if other is None:
        # An implicit end may still be a bridge port: `ports: [veth1]` on the host's
        # bridge with `eth0: {peer: host:veth1}` in the pod is the docker layout.
        master = port_of[pkey][0] if pkey in port_of else None
        topo.interfaces[pkey] = Interface(pkey[0], pkey[1], "veth", PeerEnd(), iface.path, peer=key, master=master)
    elif other.kind == "veth":
        if other.peer != key:
            return (
                (*other.path, "peer"),
                f"peers disagree: {key[0]}:{key[1]} says its peer is {pkey[0]}:{pkey[1]}, "
                f"but {pkey[0]}:{pkey[1]} says {other.peer[0]}:{other.peer[1]}; the two "
                "ends must name each other (or give `peer:` on one end only)"
                if other.peer
                else "peers disagree",
            )
    elif other.kind in ("end", "lo"):
        if other.kind == "lo":
            return ppath, "lo cannot be a veth peer"
        topo.interfaces[pkey] = Interface(
            pkey[0], pkey[1], "veth", other.settings, other.path, peer=key, master=other.master
        )
    else:
        hint = "name another interface"
        if other.kind == "bridge":  # the usual wish: plug this veth into that bridge
            hint = (
                f"to plug this veth into {pkey[1]}, point it at a new interface in {pkey[0]} "
                f"and give that one `master: {pkey[1]}`"
            )
        return ppath, f"{pkey[0]}:{pkey[1]} is a {other.kind}, not a veth end; {hint}"
    return None


def _missing_ports(port_of: PortOf, topo: Topology) -> list[Complaint]:
    return [
        (
            port_path,
            f"port {port} is not an interface of node {node_name}; declare it under "
            f"its links (e.g. `{port}: {{peer: NODE:IFNAME}}`) or drop it from "
            f"{bridge_name}'s ports",
        )
        for (node_name, port), (bridge_name, port_path) in port_of.items()
        if (node_name, port) not in topo.interfaces
    ]


def _unpaired_end(topo: Topology, key: IfKey, iface: Interface, meant: set[IfKey]) -> list[Complaint]:
    """A plain end (no kind, no peer) that no veth points at."""
    # A declared end nobody points at, next to an undeclared end some veth does point
    # at with a similar name, is one typo (`peer: pod2:eht0`): say so at that peer.
    typo = (
        [
            i
            for i in topo.of_node(key[0])
            if i.kind == "veth" and i.path != ("nodes", i.node, "links", i.name) and i.peer
        ]
        if iface.kind == "end"
        else []
    )
    close = difflib.get_close_matches(key[1], [i.name for i in typo], n=1, cutoff=0.6) if typo else []
    if close:
        implicit = next(i for i in typo if i.name == close[0])
        return [
            (
                (*implicit.path, "peer"),
                f"peer {key[0]}:{close[0]} is not declared in {key[0]}, which has an unpaired "
                f"{key[1]}; did you mean `peer: {key[0]}:{key[1]}`?",
            )
        ]
    if iface.kind == "end" and key not in meant:
        return [
            (
                iface.path,
                "this interface has neither `kind:` nor `peer:`, and no veth in another node "
                f"names it as peer; add `peer: NODE:IFNAME` or `kind: bridge|dummy|vxlan`, or "
                f"point a veth at it with `peer: {key[0]}:{key[1]}`",
            )
        ]
    return []


def _master_problems(topo: Topology, key: IfKey, iface: Interface, port_of: PortOf) -> list[Complaint]:
    """What the kernel would refuse about the interface's master (or lack of one)."""
    if iface.master is None:
        return []
    path = (*iface.path, "master")
    bridge = topo.interfaces.get((key[0], iface.master))
    if iface.kind == "lo" and bridge is not None and bridge.kind == "vrf":
        return [
            (
                path,
                (
                    f'lo cannot be in a VRF (the kernel refuses: "Can not enslave loopback device to a VRF"); '
                    f"give vrf {iface.master} itself the address: it is the VRF's loopback"
                ),
            )
        ]
    if iface.kind == "lo":  # the kernel refuses, and the plan has no op for it
        return [(path, "lo cannot be a bridge port; give the bridge itself the address")]
    if iface.kind == "vrf":
        listed = f" (bridge {iface.master} lists it in its `ports:`)" if key in port_of else ""
        return [
            (
                path,
                (
                    f"a vrf cannot have a master{listed}: the kernel refuses to enslave an L3 master device "
                    "to a bridge or to another VRF; enslave the VRF's interfaces instead"
                ),
            )
        ]
    if bridge is None or bridge.kind not in ("bridge", "vrf"):
        masters = sorted(i.name for i in topo.of_node(key[0]) if i.kind in ("bridge", "vrf"))
        what = "does not exist" if bridge is None else f"is a {bridge.kind}, not a bridge or vrf"
        return [
            (
                path,
                f"master {iface.master} in node {key[0]} {what}"
                + (
                    f" (bridges and vrfs there: {', '.join(masters)})"
                    if masters
                    else " (declare one, e.g. `br0: {kind: bridge}` or `blue: {kind: vrf, table: 10}`)"
                ),
            )
        ]
    if iface.master == key[1]:
        return [(path, "a bridge cannot be its own master")]
    if iface.kind == "bridge" and bridge.kind == "bridge":
        return [
            (
                path,
                (
                    f"{iface.master} is a bridge, and a bridge cannot be a port of another bridge (the kernel "
                    'refuses: "Can not enslave a bridge to a bridge"); a bridge may be in a vrf'
                ),
            )
        ]
    return []


def _setting_problems(topo: Topology, key: IfKey, iface: Interface) -> list[Complaint]:
    """Settings that need something else: hairpin a bridge, a vxlan's `dev:` an interface."""
    complaints: list[Complaint] = []
    if iface.settings.hairpin and topo.bridge_of(iface) is None:
        complaints.append(
            (
                (*iface.path, "hairpin"),
                (
                    "hairpin is a bridge port's setting; give this link `master: BRIDGE` (or list it in the "
                    "bridge's `ports:`)"
                ),
            )
        )
    complaints += _vlan_problems(topo, iface)
    underlay = lower_dev(iface.settings)
    if underlay == key[1]:
        complaints.append(((*iface.path, "dev"), f"{key[1]} cannot be on itself; name another link of {key[0]}"))
    elif underlay is not None and (key[0], underlay) not in topo.interfaces:
        known = ", ".join(sorted(i.name for i in topo.of_node(key[0]) if i.name != key[1]))
        what = f"{underlay}, the link {key[1]} is on," if iface.kind == "vlan" else f"underlay device {underlay}"
        complaints.append(
            ((*iface.path, "dev"), f"{what} is not an interface of {key[0]}" + (f" (it has: {known})" if known else ""))
        )
    return complaints


def _vlan_problems(topo: Topology, iface: Interface) -> list[Complaint]:
    """A port's `vlans:` need a bridge that filters by VLAN: its own, or (on the bridge) itself."""
    if iface.settings.vlans is None:
        return []
    bridge_name = iface.name if iface.kind == "bridge" else topo.bridge_of(iface)
    if bridge_name is None:
        return [
            (
                (*iface.path, "vlans"),
                "vlans are a bridge port's (or a bridge's own); give this link `master: BRIDGE` "
                "(a bridge with `vlan_filtering: true`)",
            )
        ]
    bridge = topo.interfaces[(iface.node, bridge_name)].settings
    if not (isinstance(bridge, Bridge) and bridge.vlan_filtering):
        return [
            (
                (*iface.path, "vlans"),
                f"bridge {bridge_name} does not filter by VLAN, so the kernel ignores a port's VLANs: "
                f"give {bridge_name} `vlan_filtering: true`",
            )
        ]
    return []
