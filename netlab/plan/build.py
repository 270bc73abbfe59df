"""Lab → Plan: the ordered kernel operations that build it. Pure and deterministic:
the same lab always gives the same plan (so `--dry-run` output and golden tests are stable).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from netlab.lab.consistency import route_family, rule_ds_field, rule_family
from netlab.lab.ipset import entry_comment, entry_text, parse_element, range_text
from netlab.lab.ipvs import real_port, service_family
from netlab.lab.model import Bridge, Geneve, Lab, Node, Vlan, Vrf, Vxlan, _IpTunnel, _LinkCommon
from netlab.lab.netem import Netem, duration_us, percent, rate_bytes
from netlab.lab.render import fingerprint
from netlab.lab.source import format_path
from netlab.lab.topology import Interface, Topology, lower_dev, resolve
from netlab.naming import netns_name, ownership_mark
from netlab.plan.ops import (
    STAGES,
    AddAddress,
    AddBridgeVlan,
    AddFdb,
    AddIpvsReal,
    AddIpvsService,
    AddNeighbor,
    AddRoute,
    AddRule,
    BridgeType,
    CreateIpset,
    CreateLink,
    CreateNetns,
    DummyType,
    GeneveType,
    LinkType,
    LoadNftables,
    MarkNetns,
    Op,
    RestoreIptables,
    RunCommand,
    SetBridgePort,
    SetLink,
    SetNetem,
    SetSysctl,
    TunnelType,
    VethType,
    VlanType,
    VrfType,
    VxlanType,
    stage_of,
)
from netlab.vocabulary import IP_PROTOS, parse_fwmark, table_number


@dataclass(frozen=True)
class Plan:
    lab: str
    ops: tuple[Op, ...]
    namespaces: tuple[str, ...]
    fingerprint: str  # identifies the lab content: same file content → same fingerprint

    def by_stage(self) -> list[tuple[str, list[Op]]]:
        groups: dict[str, list[Op]] = {s: [] for s in STAGES}
        for op in self.ops:
            groups[stage_of(op)].append(op)
        return [(s, ops) for s, ops in groups.items() if ops]

    def render(self) -> str:
        lines = [f"# plan for lab {self.lab}: {len(self.ops)} operations in {len(self.namespaces)} namespaces"]
        for stage, ops in self.by_stage():
            lines.append(f"# {stage}")
            lines += [op.render() for op in ops]
        return "\n".join(lines) + "\n"


def _uses_ipv6(node: Node) -> bool:
    if any(k.startswith("net.ipv6.") for k in node.sysctls):
        return True
    for link in node.links.values():
        if any(":" in a for a in link.addresses):
            return True
        if isinstance(link, Vxlan) and any(v and ":" in v for v in (link.local, link.remote, link.group)):
            return True
        if isinstance(link, (_IpTunnel, Geneve)) and (
            link.kind in ("ip6tnl", "ip6gre") or (link.remote is not None and ":" in link.remote)
        ):
            return True  # an IPv6 underlay: the kernel refuses its sockets and routes with IPv6 off
    if any(":" in n.to for n in node.neighbors) or any(f.dst and ":" in f.dst for f in node.fdb):
        return True  # the kernel refuses an NDP entry on a device with IPv6 disabled
    if any(service_family(s) == 6 or any(":" in r.address for r in s.reals) for s in node.ipvs):
        return True
    return any(route_family(r) == 6 for r in node.routes) or any(rule_family(r) == 6 for r in node.rules)


def _table_number(lab: Lab, table: int | str | None) -> tuple[int | None, str | None]:
    if table is None:
        return None, None
    if isinstance(table, int):
        return table, None
    return table_number(table, lab.tables), table


def build_plan(lab: Lab, topo: Topology | None = None) -> Plan:
    if topo is None:
        topo, complaints = resolve(lab)
        if complaints:  # load() refuses such labs; a caller passing raw models gets told
            raise ValueError(f"lab {lab.name} does not resolve: {complaints[0][1]}")
    ns = {node: netns_name(lab.name, node) for node in lab.nodes}
    ops: list[Op] = []
    for node_name, node in lab.nodes.items():
        ops += _namespace_ops(ns[node_name], f"nodes.{node_name}", lab.name, node_name, node)
    ops += _link_ops(lab, topo, ns)
    for node_name, node in lab.nodes.items():
        for key, value in node.sysctls.items():
            ops.append(SetSysctl(ns[node_name], f"nodes.{node_name}.sysctls.{key}", key=key, value=str(value)))
    ops += _address_ops(topo, ns)
    for node_name, node in lab.nodes.items():
        ops += _neighbor_ops(ns[node_name], node_name, node, topo)
    for node_name, node in lab.nodes.items():
        ops += _route_ops(lab, ns[node_name], node_name, node)
    for node_name, node in lab.nodes.items():
        ops += firewall_ops(ns[node_name], f"nodes.{node_name}", node)
    for node_name, node in lab.nodes.items():
        ops += ipvs_ops(ns[node_name], f"nodes.{node_name}", node)
    for node_name, node in lab.nodes.items():
        for i, argv in enumerate(node.exec):
            ops.append(RunCommand(ns[node_name], f"nodes.{node_name}.exec[{i}]", argv=tuple(argv)))

    # Stable order by stage; within a stage, the order above (file order).
    order = {s: i for i, s in enumerate(STAGES)}
    ops.sort(key=lambda op: order[stage_of(op)])
    return Plan(lab.name, tuple(ops), tuple(ns.values()), fingerprint(lab))


def _namespace_ops(ns: str, where: str, lab: str, node_name: str, node: Node) -> list[Op]:
    """The node's namespace, its ownership mark, and netlab's IPv6 defaults for it."""
    ops: list[Op] = [
        CreateNetns(ns, where, lab=lab, node=node_name),
        MarkNetns(ns, where, mark=ownership_mark(lab, node_name)),
    ]
    # Lab addresses are static: no DAD (no races, no 'tentative' waits), no SLAAC.
    # A node that never uses IPv6 gets none, which also spares the bridge the
    # link-local/MLD/router-solicitation floods that slow big labs down.
    defaults = (
        {
            "net.ipv6.conf.all.accept_dad": "0",
            "net.ipv6.conf.default.accept_dad": "0",
            "net.ipv6.conf.all.accept_ra": "0",
            "net.ipv6.conf.default.accept_ra": "0",
        }
        if _uses_ipv6(node)
        else {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    )
    ops += [SetSysctl(ns, f"{where} (netlab default)", key=k, value=v, early=True) for k, v in defaults.items()]
    return ops


def _link_type(lab: Lab, s: _LinkCommon) -> LinkType:
    """The kind-specific part of a device's CreateLink, from its lab settings."""
    if isinstance(s, Bridge):
        return BridgeType(stp=s.stp, vlan_filtering=s.vlan_filtering, default_pvid=s.default_pvid)
    if isinstance(s, Vrf):
        return VrfType(table=table_number(s.table, lab.tables))
    if isinstance(s, Vxlan):
        return VxlanType(
            vni=s.vni,
            port=s.port,
            local=s.local,
            remote=s.remote,
            group=s.group,
            dev=s.dev,
            learning=s.learning,
            ttl=s.ttl,
            host_underlay=s.underlay == "host",
        )
    if isinstance(s, _IpTunnel):
        return TunnelType(
            kind=s.kind,
            local=s.local,
            remote=s.remote,
            dev=s.dev,
            ttl=s.ttl,
            key=getattr(s, "key", None),
            external=s.external,
        )
    if isinstance(s, Geneve):
        return GeneveType(vni=s.vni, remote=s.remote, port=s.port, ttl=s.ttl, external=s.external)
    if isinstance(s, Vlan):
        return VlanType(dev=s.dev, id=s.id, protocol=s.protocol)
    return DummyType()


def _made_before(topo: Topology, ifaces: list[Interface]) -> list[Interface]:
    """A node's interfaces, each after the one it sits on (a vlan on a vlan, a tunnel over
    a vlan): links of one stage are sent in this order."""

    def depth(iface: Interface) -> int:
        n, dev = 0, lower_dev(iface.settings)
        while dev is not None and n < len(ifaces):
            lower = topo.interfaces.get((iface.node, dev))
            n, dev = n + 1, lower_dev(lower.settings) if lower is not None else None
        return n

    return sorted(ifaces, key=depth)


def _link_ops(lab: Lab, topo: Topology, ns: dict[str, str]) -> list[Op]:
    """Devices (bridges, dummies, tunnels, vlans, VRFs; settings of fallback devices), then
    veth pairs, then settings of lo and of bridge ports."""
    ops: list[Op] = []
    after_far_ends: list[Op] = []  # vlans on a veth's far end: up once their link is
    far_ends = {pair.far for pair in topo.pairs}
    for node_name in lab.nodes:
        for iface in _made_before(topo, topo.of_node(node_name)):
            now, later = _device_ops(lab, topo, ns[node_name], iface, far_ends)
            ops += now
            after_far_ends += later
    for pair in topo.pairs:
        near, far = topo.interfaces[pair.near], topo.interfaces[pair.far]
        peer = VethType(peer_ns=ns[far.node], peer_name=far.name, peer_mtu=far.settings.mtu, peer_mac=far.settings.mac)
        ops.append(
            CreateLink(
                ns[near.node],
                format_path(near.path),
                name=near.name,
                type=peer,
                up=near.settings.up,
                master=near.master,
                mtu=near.settings.mtu,
                mac=near.settings.mac,
            )
        )
        ops.append(SetLink(ns[far.node], format_path(far.path), name=far.name, up=far.settings.up, master=far.master))
    ops += after_far_ends
    for (node_name, _), iface in topo.interfaces.items():
        if iface.kind == "lo" and (iface.settings.mtu or iface.settings.mac or not iface.settings.up):
            # mac too: it is what made this op needed, and was dropped before
            ops.append(
                SetLink(
                    ns[node_name],
                    format_path(iface.path),
                    name="lo",
                    up=iface.settings.up,
                    mtu=iface.settings.mtu,
                    mac=iface.settings.mac,
                )
            )
        if iface.settings.hairpin:
            ops.append(
                SetBridgePort(ns[node_name], format_path((*iface.path, "hairpin")), name=iface.name, hairpin=True)
            )
        if iface.settings.vlans is not None:
            ops += _bridge_vlan_ops(ns[node_name], iface)
        if iface.settings.netem is not None:
            ops.append(netem_op(ns[node_name], format_path((*iface.path, "netem")), iface.name, iface.settings.netem))
    return ops


def _bridge_vlan_ops(ns: str, iface: Interface) -> list[Op]:
    """A port's `vlans:` (the bridge's own, with `self`): the pvid, then untagged, then tagged."""
    vlans = iface.settings.vlans
    assert vlans is not None
    what = format_path((*iface.path, "vlans"))
    own = iface.kind == "bridge"
    entries = [(vlans.pvid, True, True)] if vlans.pvid is not None else []
    entries += [(vid, False, True) for vid in vlans.untagged] + [(vid, False, False) for vid in vlans.tagged]
    return [
        AddBridgeVlan(ns, what, dev=iface.name, vid=vid, pvid=pvid, untagged=untagged, self_=own)
        for vid, pvid, untagged in entries
    ]


def _device_ops(
    lab: Lab, topo: Topology, ns: str, iface: Interface, far_ends: set[tuple[str, str]]
) -> tuple[list[Op], list[Op]]:
    """A device's ops: those of its stage, and those once the veths' far ends are up."""
    s, what = iface.settings, format_path(iface.path)
    if iface.fallback:  # made by the kernel in every namespace: only its settings
        return [SetLink(ns, what, name=iface.name, up=s.up, master=iface.master, mtu=s.mtu, mac=s.mac)], []
    if iface.kind in ("veth", "end", "lo"):
        return [], []
    # A dummy is made in the bridges' stage, so a bridge it is a port of may not be there
    # yet: it joins the bridge with the link settings (a VRF is made before both). A vlan
    # cannot be up before its link (ENETDOWN): on a veth's far end, it comes up after it.
    late = iface.kind == "dummy" and topo.bridge_of(iface) is not None
    on_far_end = s.up and _on_far_end(topo, iface, far_ends)
    create = CreateLink(
        ns,
        what,
        name=iface.name,
        type=_link_type(lab, s),
        up=s.up and not on_far_end,
        master=None if late else iface.master,
        mtu=s.mtu,
        mac=s.mac,
    )
    if late:
        return [create, SetLink(ns, what, name=iface.name, up=s.up, master=iface.master)], []
    return [create], [SetLink(ns, what, name=iface.name, up=True)] if on_far_end else []


def _on_far_end(topo: Topology, iface: Interface, far_ends: set[tuple[str, str]]) -> bool:
    """Is this a vlan on a veth's far end (or on a vlan that is), down when the vlan is made?"""
    while iface.kind == "vlan" and (dev := lower_dev(iface.settings)) is not None:
        key = (iface.node, dev)
        if key in far_ends:
            return True
        if key not in topo.interfaces:
            return False
        iface = topo.interfaces[key]
    return False


def netem_op(ns: str, what: str, dev: str, netem: Netem) -> SetNetem:
    """A link end's `netem:` (or `netlab impair`'s options) as the qdisc that applies it."""
    return SetNetem(
        ns,
        what,
        dev=dev,
        delay=duration_us(netem.delay) if netem.delay else 0,
        jitter=duration_us(netem.jitter) if netem.jitter else 0,
        correlation=percent(netem.correlation),
        distribution=netem.distribution,
        loss=percent(netem.loss),
        duplicate=percent(netem.duplicate),
        corrupt=percent(netem.corrupt),
        reorder=percent(netem.reorder),
        rate=rate_bytes(netem.rate) * 8 if netem.rate else None,
        limit=netem.limit,
    )


def _address_ops(topo: Topology, ns: dict[str, str]) -> list[Op]:
    ops: list[Op] = []
    for (node_name, _), iface in topo.interfaces.items():
        for i, addr in enumerate(iface.settings.addresses):
            what = (
                format_path((*iface.path, "addresses", i))
                if iface.path[1] == node_name
                else f"nodes.{node_name}.links.{iface.name}"
            )
            ops.append(AddAddress(ns[node_name], what, dev=iface.name, address=addr))
    return ops


def _neighbor_ops(ns: str, node_name: str, node: Node, topo: Topology) -> list[Op]:
    where = f"nodes.{node_name}"
    ops: list[Op] = []
    for i, n in enumerate(node.neighbors):
        ops.append(AddNeighbor(ns, f"{where}.neighbors[{i}]", dev=n.dev, to=n.to, lladdr=n.lladdr))
    for i, f in enumerate(node.fdb):
        # A vxlan keeps its own table (`self`); any other device is a bridge port, and
        # the entry goes into its bridge's table (`master`). The checks ensure one of the two.
        dev = topo.interfaces.get((node_name, f.dev))
        ops.append(
            AddFdb(
                ns,
                f"{where}.fdb[{i}]",
                dev=f.dev,
                lladdr=f.lladdr,
                dst=f.dst,
                master=dev is not None and dev.kind != "vxlan" and topo.bridge_of(dev) is not None,
            )
        )
    return ops


def _route_ops(lab: Lab, ns: str, node_name: str, node: Node) -> list[Op]:
    """The node's routes, then its rules."""
    ops: list[Op] = []
    for i, r in enumerate(node.routes):
        family = route_family(r)
        to = r.to if r.to != "default" else ("0.0.0.0/0" if family == 4 else "::/0")
        table, table_name = _table_number(lab, r.table)
        ops.append(
            AddRoute(
                ns,
                f"nodes.{node_name}.routes[{i}]",
                family=family,
                to="default" if r.to == "default" else to,
                type=r.type,
                via=r.via,
                dev=r.dev,
                table=table,
                table_name=table_name,
                onlink=r.onlink,
                metric=r.metric,
                src=r.src,
            )
        )
    for i, rule in enumerate(node.rules):
        table, table_name = _table_number(lab, rule.table)
        mark, mask = parse_fwmark(rule.fwmark) if rule.fwmark else (None, None)
        tos, dscp = rule_ds_field(rule)
        ops.append(
            AddRule(
                ns,
                f"nodes.{node_name}.rules[{i}]",
                family=rule_family(rule),
                priority=rule.priority,
                src=_net(rule.from_),
                dst=_net(rule.to),
                iif=rule.iif,
                oif=rule.oif,
                fwmark=mark,
                fwmask=mask,
                action=rule.action,
                table=table,
                table_name=table_name,
                invert=rule.not_,
                ipproto=IP_PROTOS[rule.ipproto] if isinstance(rule.ipproto, str) else rule.ipproto,
                sport=rule.sport,
                dport=rule.dport,
                tos=tos,
                dscp=dscp,
                dscp_mask=rule.dscp_mask,
                flowlabel=rule.flowlabel,
                flowlabel_mask=rule.flowlabel_mask,
                sport_mask=rule.sport_mask,
                dport_mask=rule.dport_mask,
                uidrange=rule.uidrange,
                l3mdev=rule.l3mdev,
                goto=rule.goto,
                suppress_prefixlength=rule.suppress_prefixlength,
            )
        )
    return ops


def ipvs_ops(ns: str, where: str, node: Node) -> list[Op]:
    """A node's IPVS services, each followed by its real servers, in file order."""
    ops: list[Op] = []
    for i, svc in enumerate(node.ipvs):
        family, port = service_family(svc), svc.port or 0
        ops.append(
            AddIpvsService(
                ns,
                f"{where}.ipvs[{i}]",
                proto=svc.proto,
                family=family,
                address=svc.address,
                port=port,
                fwmark=svc.fwmark,
                scheduler=svc.scheduler,
                persistent=svc.persistent,
                netmask=svc.netmask,
            )
        )
        for j, real in enumerate(svc.reals):
            ops.append(
                AddIpvsReal(
                    ns,
                    f"{where}.ipvs[{i}].reals[{j}]",
                    proto=svc.proto,
                    family=family,
                    address=svc.address,
                    port=port,
                    fwmark=svc.fwmark,
                    real=real.address,
                    real_port=real_port(svc, real),
                    weight=real.weight,
                    forward=real.forward,
                )
            )
    return ops


def firewall_ops(ns: str, where: str, node: Node) -> list[Op]:
    """A node's ipsets, then its nftables rulesets, then its iptables dumps, in file order:
    a dump may match a set (`-m set --match-set`), which must exist when the rule goes in.
    The loaded lab carries every `file:`'s text, so the ops hold the text itself."""
    ops: list[Op] = []
    for i, ipset in enumerate(node.ipsets):
        ops.append(
            CreateIpset(
                ns,
                f"{where}.ipsets[{i}]",
                name=ipset.name,
                type=ipset.type,
                family=ipset.family,
                range=range_text(ipset),
                hashsize=ipset.hashsize,
                maxelem=ipset.maxelem,
                comment=ipset.comment,
                members=tuple(parse_element(ipset.type, ipset.family, entry_text(m)).text for m in ipset.members),
                comments=tuple(entry_comment(m) for m in ipset.members) if ipset.comment else (),
            )
        )
    for i, r in enumerate(node.nftables):
        if r.json_ is not None:
            ops.append(LoadNftables(ns, f"{where}.nftables[{i}]", text=json.dumps(r.json_), json=True))
        else:
            if r.ruleset is None:  # only a lab that skipped netlab.load's loading has `file:` here
                raise ValueError(f"{where}.nftables[{i}]: the file {r.file} was not read (load the lab with load_lab)")
            ops.append(LoadNftables(ns, f"{where}.nftables[{i}]", text=r.ruleset))
    for i, d in enumerate(node.iptables):
        if d.save is None:
            raise ValueError(f"{where}.iptables[{i}]: the file {d.file} was not read (load the lab with load_lab)")
        ops.append(RestoreIptables(ns, f"{where}.iptables[{i}]", text=d.save, family=d.family, noflush=d.noflush))
    return ops


def _net(value: str | None) -> str | None:
    if value is None or value == "default":
        return None
    return str(ipaddress.ip_network(value, strict=False))
