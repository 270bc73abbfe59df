"""rtnetlink messages for plan ops: pure functions from an op (and the ifindexes and
namespace fds it names, resolved by the caller) to a `Request` — the message body after
its nlmsghdr, its type and flags. No sockets, no namespaces: the driver resolves and sends.

Every message is what iproute2 sends for the op's rendered command, attribute for
attribute (tests/unit/test_encode.py compares the bytes with strace captures), except
where a comment says why not.

Links, addresses, neighbours, FDB entries and routes are packed here with struct: what
every lab sends by the thousand, where pyroute2's message classes cost ~0.1 ms each and
their import 0.1 s of every `up`. Rules and netem, with their many fields, still go by
pyroute2's classes (RuleMsg, tc.py), imported when a lab has one.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

from netlab.kernel.nlsock import Request
from netlab.plan.ops import (
    AddAddress,
    AddBridgeVlan,
    AddFdb,
    AddNeighbor,
    AddRoute,
    AddRule,
    BridgeType,
    CreateLink,
    DeleteNetem,
    GeneveType,
    MarkNetns,
    Op,
    SetBridgePort,
    SetLink,
    SetNetem,
    TunnelType,
    VethType,
    VlanType,
    VrfType,
    VxlanType,
)
from netlab.plan.removal import Remove
from netlab.vocabulary import BUILTIN_TABLES, FLOWLABEL_MASK

# linux/netlink.h, linux/rtnetlink.h
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 19, 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWRULE, RTM_DELRULE = 24, 25, 28, 29, 32, 33
# linux/if_link.h: link attributes, and those nested in IFLA_LINKINFO / IFLA_INFO_DATA
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 5, 10, 18, 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BR_STP_STATE, IFLA_BR_VLAN_FILTERING, IFLA_BR_VLAN_DEFAULT_PVID = 5, 7, 39
IFLA_BRPORT_MODE = 4
IFLA_VRF_TABLE = 1
IFLA_VLAN_ID, IFLA_VLAN_PROTOCOL = 1, 5
ETH_P_8021AD = 0x88A8
# linux/if_tunnel.h: ipip and ip6tnl (IFLA_IPTUN_*), gre, gretap and ip6gre (IFLA_GRE_*), geneve
IPTUN = {"LINK": 1, "LOCAL": 2, "REMOTE": 3, "TTL": 4, "TOS": 5, "ENCAP_LIMIT": 6, "FLOWINFO": 7, "FLAGS": 8}
IPTUN |= {"PROTO": 9, "PMTUDISC": 10, "ENCAP_TYPE": 15, "ENCAP_FLAGS": 16, "ENCAP_SPORT": 17, "ENCAP_DPORT": 18}
IPTUN |= {"COLLECT_METADATA": 19, "FWMARK": 20}
GRE = {"LINK": 1, "IFLAGS": 2, "OFLAGS": 3, "IKEY": 4, "OKEY": 5, "LOCAL": 6, "REMOTE": 7, "TTL": 8, "TOS": 9}
GRE |= {"PMTUDISC": 10, "ENCAP_LIMIT": 11, "FLOWINFO": 12, "FLAGS": 13, "ENCAP_TYPE": 14, "ENCAP_FLAGS": 15}
GRE |= {"ENCAP_SPORT": 16, "ENCAP_DPORT": 17, "COLLECT_METADATA": 18, "FWMARK": 20, "ERSPAN_VER": 22}
GRE_KEY = 0x2000  # in IFLA_GRE_[IO]FLAGS: the packets carry a key
IFLA_GENEVE_ID, IFLA_GENEVE_REMOTE, IFLA_GENEVE_TTL, IFLA_GENEVE_TOS, IFLA_GENEVE_PORT = 1, 2, 3, 4, 5
IFLA_GENEVE_COLLECT_METADATA, IFLA_GENEVE_REMOTE6, IFLA_GENEVE_LABEL = 6, 7, 11
IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_TTL = 1, 2, 3, 4, 5
IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT, IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6 = 7, 15, 16, 17
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8  # linux/if_addr.h
NDA_DST, NDA_LLADDR = 1, 2  # linux/neighbour.h
NTF_SELF, NTF_MASTER = 0x02, 0x04
NUD_REACHABLE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x40, 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 6, 7, 15

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_TABLE_COMPAT = 252  # in the header for a table id above 255; the real id goes in an attribute
RTNH_F_ONLINK = 4
RTN_TYPES = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}
FR_ACTIONS = {"lookup": 1, "goto": 2, "nop": 3, "blackhole": 6, "unreachable": 7, "prohibit": 8}
FIB_RULE_INVERT = 0x2  # linux/fib_rules.h: `ip rule add not …`
AF_BRIDGE = 7  # PF_BRIDGE: the family of FDB entries
LO_INDEX = 1  # lo is always ifindex 1 in a network namespace

Ifindex = Callable[[str], int]  # interface name → ifindex, in the op's namespace
NetnsFd = Callable[[str], int]  # namespace name → an open fd of it (for IFLA_NET_NS_FD)


def request(op: Op, ifindex: Ifindex, netns_fd: NetnsFd) -> Request:
    """The rtnetlink request that makes `op`. LookupError if a name does not resolve;
    TypeError for an op that is not rtnetlink's."""
    if isinstance(op, CreateLink):
        return Request(create_link(op, ifindex, netns_fd), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
    if isinstance(op, SetLink):
        return Request(set_link(op, ifindex), RTM_NEWLINK)
    if isinstance(op, SetBridgePort):
        return Request(bridge_port(op, ifindex), RTM_NEWLINK)
    if isinstance(op, MarkNetns):
        return Request(mark_lo(op), RTM_NEWLINK)
    if isinstance(op, AddBridgeVlan):
        return Request(bridge_vlan(op, ifindex), RTM_SETLINK)
    if isinstance(op, AddAddress):
        return Request(address(op, ifindex), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)
    if isinstance(op, AddNeighbor):
        return Request(neighbor(op, ifindex), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE)
    if isinstance(op, AddFdb):
        return Request(fdb(op, ifindex), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND)
    if isinstance(op, AddRoute):
        return Request(route(op, ifindex), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)
    if isinstance(op, AddRule):
        return Request(rule(op), RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL)
    if isinstance(op, SetNetem):
        from netlab.kernel import tc

        return Request(tc.set_netem(op, ifindex), tc.RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE)
    if isinstance(op, DeleteNetem):
        from netlab.kernel import tc

        return Request(tc.delete_qdisc(op, ifindex), tc.RTM_DELQDISC)
    if isinstance(op, Remove):
        return removal(op, ifindex)
    raise TypeError(f"no rtnetlink message for {type(op).__name__}")


def removal(op: Remove, ifindex: Ifindex) -> Request:
    """The delete of what op.op made: the same message as its add (the kernel finds the
    object by those attributes), as RTM_DEL*; a link by its index alone."""
    made = op.op
    if isinstance(made, CreateLink):
        return Request(_ifinfo(ifindex(made.name), None), RTM_DELLINK)
    if isinstance(made, AddAddress):
        return Request(address(made, ifindex), RTM_DELADDR)
    if isinstance(made, AddNeighbor):
        return Request(neighbor(made, ifindex), RTM_DELNEIGH)
    if isinstance(made, AddFdb):
        return Request(fdb(made, ifindex), RTM_DELNEIGH)
    if isinstance(made, AddRoute):
        return Request(route(made, ifindex), RTM_DELROUTE)
    if isinstance(made, AddRule):
        return Request(rule(made), RTM_DELRULE)
    if isinstance(made, AddBridgeVlan):
        return Request(bridge_vlan(made, ifindex), RTM_DELLINK)
    raise TypeError(f"no rtnetlink message removes a {type(made).__name__}")


# --------------------------------------------------------------------------- attributes


def _attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute: its header, the payload, zeros up to a 4-byte boundary."""
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def _u8(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=B", value))


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _text(kind: int, value: str) -> bytes:
    """A NUL-terminated string."""
    return _attr(kind, value.encode() + b"\0")


def _ip(kind: int, value: str) -> bytes:
    return _attr(kind, ipaddress.ip_address(value).packed)


def _mac(kind: int, value: str) -> bytes:
    return _attr(kind, bytes.fromhex(value.replace(":", "")))


# --------------------------------------------------------------------------- links


def _ifinfo(index: int, up: bool | None) -> bytes:
    """struct ifinfomsg for link `index` (0: a new one); up None leaves the state alone."""
    flags = (IFF_UP if up else 0) if up is not None else 0
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, IFF_UP if up is not None else 0)


def _settings(mtu: int | None, mac: str | None, master: str | None, ifindex: Ifindex) -> bytes:
    attrs = b""
    if mtu:
        attrs += _u32(IFLA_MTU, mtu)
    if mac:
        attrs += _mac(IFLA_ADDRESS, mac)
    if master:
        attrs += _u32(IFLA_MASTER, ifindex(master))
    return attrs


def create_link(op: CreateLink, ifindex: Ifindex, netns_fd: NetnsFd) -> bytes:
    """`ip link add NAME [mtu M] [address A] [master B] [up] type KIND …`."""
    info = _text(IFLA_INFO_KIND, op.kind)
    data = _link_data(op, ifindex, netns_fd)
    if data:
        info += _attr(IFLA_INFO_DATA, data)
    parent = _u32(IFLA_LINK, ifindex(op.type.dev)) if isinstance(op.type, VlanType) else b""  # iproute2's first
    msg = _ifinfo(0, op.up) + parent + _text(IFLA_IFNAME, op.name) + _settings(op.mtu, op.mac, op.master, ifindex)
    msg += _attr(IFLA_LINKINFO, info)
    if from_host(op):  # sent from the host's namespace, made in the node's (`ip link add … netns NS`)
        msg += _u32(IFLA_NET_NS_FD, netns_fd(op.ns))
    return msg


def from_host(op: Op) -> bool:
    """A link made from the host's own namespace: a multihost tunnel, whose socket stays there."""
    return isinstance(op, CreateLink) and isinstance(op.type, VxlanType) and op.type.host_underlay


def _link_data(op: CreateLink, ifindex: Ifindex, netns_fd: NetnsFd) -> bytes:
    """IFLA_INFO_DATA of a new link: what its kind takes."""
    t = op.type
    if isinstance(t, VethType):
        # the far end is created directly in its namespace: moving a link later is slow
        peer = _ifinfo(0, None) + _text(IFLA_IFNAME, t.peer_name) + _u32(IFLA_NET_NS_FD, netns_fd(t.peer_ns))
        return _attr(VETH_INFO_PEER, peer + _settings(t.peer_mtu, t.peer_mac, None, ifindex))
    if isinstance(t, BridgeType):
        data = _u32(IFLA_BR_STP_STATE, int(t.stp))
        if t.vlan_filtering:
            data += _u8(IFLA_BR_VLAN_FILTERING, 1)
        if t.default_pvid is not None:
            data += _attr(IFLA_BR_VLAN_DEFAULT_PVID, struct.pack("=H", t.default_pvid))
        return data
    if isinstance(t, VrfType):
        return _u32(IFLA_VRF_TABLE, t.table)
    if isinstance(t, VxlanType):
        return _vxlan_data(t, ifindex)
    if isinstance(t, TunnelType):
        return _gre_data(t, ifindex) if t.kind in ("gre", "gretap", "ip6gre") else _iptnl_data(t, ifindex)
    if isinstance(t, GeneveType):
        return _geneve_data(t)
    if isinstance(t, VlanType):
        proto = _attr(IFLA_VLAN_PROTOCOL, struct.pack("!H", ETH_P_8021AD)) if t.protocol == "802.1ad" else b""
        return _attr(IFLA_VLAN_ID, struct.pack("=H", t.id)) + proto
    return b""  # dummy


# The tunnels' attributes are iproute2 6.1's, in its order, its defaults included (path MTU
# discovery on, no TOS, fwmark or FOU encapsulation; IPv6: hop limit 64, encapsulation
# limit 4, and the checksum flag of its encapsulation options), so a tunnel netlab makes is
# the one `ip link add` makes from the rendered line.
_IP6_ENCAP_CSUM6 = 2  # TUNNEL_ENCAP_FLAG_CSUM6


def _encap(table: dict[str, int], flags: int) -> bytes:
    """No FOU/GUE encapsulation: its type, flags and ports."""
    return (
        _attr(table["ENCAP_TYPE"], struct.pack("=H", 0))
        + _attr(table["ENCAP_FLAGS"], struct.pack("=H", flags))
        + _attr(table["ENCAP_SPORT"], struct.pack("!H", 0))
        + _attr(table["ENCAP_DPORT"], struct.pack("!H", 0))
    )


def _ends(table: dict[str, int], t: TunnelType) -> bytes:
    return b"".join(
        _ip(table[key.upper()], value) for key, value in (("local", t.local), ("remote", t.remote)) if value
    )


def _iptnl_data(t: TunnelType, ifindex: Ifindex) -> bytes:
    """ipip and ip6tnl (IFLA_IPTUN_*; ip6tnl in mode any, protocol 0)."""
    data = _u8(IPTUN["PROTO"], 0)
    if t.external:
        return data + _attr(IPTUN["COLLECT_METADATA"], b"")
    data += _ends(IPTUN, t)
    link = _u32(IPTUN["LINK"], ifindex(t.dev) if t.dev else 0)
    if t.kind == "ipip":
        data += _u8(IPTUN["PMTUDISC"], 1) + _u8(IPTUN["TOS"], 0) + _u8(IPTUN["TTL"], t.ttl or 0) + link
        return data + _u32(IPTUN["FWMARK"], 0) + _encap(IPTUN, 0)
    data += _u8(IPTUN["TTL"], 64 if t.ttl is None else t.ttl) + _u8(IPTUN["ENCAP_LIMIT"], 4)
    data += _attr(IPTUN["FLOWINFO"], struct.pack("!I", 0)) + _u32(IPTUN["FLAGS"], 0) + link
    return data + _u32(IPTUN["FWMARK"], 0) + _encap(IPTUN, _IP6_ENCAP_CSUM6)


def _gre_data(t: TunnelType, ifindex: Ifindex) -> bytes:
    """gre, gretap (IFLA_GRE_*) and ip6gre (the same numbers, IPv6 endpoints)."""
    if t.external:
        return _attr(GRE["COLLECT_METADATA"], b"")
    flags = struct.pack("!H", GRE_KEY if t.key is not None else 0)
    key = struct.pack("!I", t.key or 0)
    data = _attr(GRE["IKEY"], key) + _attr(GRE["OKEY"], key) + _attr(GRE["IFLAGS"], flags) + _attr(GRE["OFLAGS"], flags)
    data += _ends(GRE, t)
    link = _u32(GRE["LINK"], ifindex(t.dev)) if t.dev else b""
    if t.kind == "ip6gre":
        data += link + _u8(GRE["TTL"], 64 if t.ttl is None else t.ttl) + _u8(GRE["ENCAP_LIMIT"], 4)
        data += _attr(GRE["FLOWINFO"], struct.pack("!I", 0)) + _u32(GRE["FLAGS"], 0) + _u32(GRE["FWMARK"], 0)
        return data + _u8(GRE["ERSPAN_VER"], 1) + _encap(GRE, _IP6_ENCAP_CSUM6)
    data += _u8(GRE["PMTUDISC"], 1) + _u8(GRE["TOS"], 0) + link + _u8(GRE["TTL"], t.ttl or 0)
    return data + _u32(GRE["FWMARK"], 0) + _encap(GRE, 0)


def _geneve_data(t: GeneveType) -> bytes:
    data = _u32(IFLA_GENEVE_ID, t.vni or 0)
    if t.remote is not None:
        six = ipaddress.ip_address(t.remote).version == 6
        data += _ip(IFLA_GENEVE_REMOTE6 if six else IFLA_GENEVE_REMOTE, t.remote)
    data += _attr(IFLA_GENEVE_LABEL, struct.pack("!I", 0)) + _u8(IFLA_GENEVE_TTL, t.ttl or 0) + _u8(IFLA_GENEVE_TOS, 0)
    data += _attr(IFLA_GENEVE_PORT, struct.pack("!H", t.port))
    return data + (_attr(IFLA_GENEVE_COLLECT_METADATA, b"") if t.external else b"")


def _vxlan_data(t: VxlanType, ifindex: Ifindex) -> bytes:
    data = _u32(IFLA_VXLAN_ID, t.vni) + _attr(IFLA_VXLAN_PORT, struct.pack("!H", t.port))
    data += _u8(IFLA_VXLAN_LEARNING, int(t.learning))
    for four, six, value in (
        (IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6, t.local),
        (IFLA_VXLAN_GROUP, IFLA_VXLAN_GROUP6, t.group or t.remote),
    ):
        if value:
            data += _ip(six if ipaddress.ip_address(value).version == 6 else four, value)
    if t.dev:
        data += _u32(IFLA_VXLAN_LINK, ifindex(t.dev))
    if t.ttl is not None:
        data += _u8(IFLA_VXLAN_TTL, t.ttl)
    return data


def set_link(op: SetLink, ifindex: Ifindex) -> bytes:
    """`ip link set NAME [mtu M] [address A] [master B] up|down`."""
    return _ifinfo(ifindex(op.name), op.up) + _settings(op.mtu, op.mac, op.master, ifindex)


def bridge_port(op: SetBridgePort, ifindex: Ifindex) -> bytes:
    """`ip link set NAME type bridge_slave hairpin on|off`."""
    slave = _text(IFLA_INFO_SLAVE_KIND, "bridge") + _attr(IFLA_INFO_SLAVE_DATA, _u8(IFLA_BRPORT_MODE, int(op.hairpin)))
    return _ifinfo(ifindex(op.name), None) + _attr(IFLA_LINKINFO, slave)


BRIDGE_FLAGS_SELF = 2  # linux/if_bridge.h: the bridge device's own entry, not a port's
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
IFLA_AF_SPEC, IFLA_BRIDGE_FLAGS, IFLA_BRIDGE_VLAN_INFO = 26, 0, 2


def bridge_vlan(op: AddBridgeVlan, ifindex: Ifindex) -> bytes:
    """`bridge vlan add dev DEV vid N [pvid] [untagged] [self]` (RTM_DELLINK: `vlan del`)."""
    head = struct.pack("=BxHiII", AF_BRIDGE, 0, ifindex(op.dev), 0, 0)
    flags = (BRIDGE_VLAN_INFO_PVID if op.pvid else 0) | (BRIDGE_VLAN_INFO_UNTAGGED if op.untagged else 0)
    spec = _attr(IFLA_BRIDGE_FLAGS, struct.pack("=H", BRIDGE_FLAGS_SELF)) if op.self_ else b""
    spec += _attr(IFLA_BRIDGE_VLAN_INFO, struct.pack("=HH", flags, op.vid))
    return head + _attr(IFLA_AF_SPEC, spec)


def mark_lo(op: MarkNetns) -> bytes:
    """`ip link set lo up alias MARK`: the namespace's ownership mark."""
    return _ifinfo(LO_INDEX, True) + _text(IFLA_IFALIAS, op.mark)


# --------------------------------------------------------------------------- addresses, neighbours


def _family(address: str) -> int:
    return socket.AF_INET if ipaddress.ip_address(address).version == 4 else socket.AF_INET6


def address(op: AddAddress, ifindex: Ifindex) -> bytes:
    """`ip addr add ADDR/PLEN dev DEV [nodad]` (nodad for every IPv6 address)."""
    iface = ipaddress.ip_interface(op.address)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    msg = struct.pack("=BBBBI", family, iface.network.prefixlen, 0, 0, ifindex(op.dev))
    ip = iface.ip.packed
    msg += _attr(IFA_LOCAL, ip) + _attr(IFA_ADDRESS, ip)
    if iface.version == 6:
        msg += _u32(IFA_FLAGS, IFA_F_NODAD)
    return msg


def _ndmsg(family: int, index: int, state: int, flags: int) -> bytes:
    return struct.pack("=BxxxiHBB", family, index, state, flags, 0)


def neighbor(op: AddNeighbor, ifindex: Ifindex) -> bytes:
    """`ip neigh replace TO lladdr MAC dev DEV nud permanent`."""
    msg = _ndmsg(_family(op.to), ifindex(op.dev), NUD_PERMANENT, 0)
    return msg + _ip(NDA_DST, op.to) + _mac(NDA_LLADDR, op.lladdr)


def fdb(op: AddFdb, ifindex: Ifindex) -> bytes:
    """`bridge fdb append MAC dev DEV [dst IP] self permanent | master static`. As
    iproute2's bridge/fdb.c builds it: the state starts as NUD_NOARP, `permanent` adds
    NUD_PERMANENT (0xc0), `static` adds NUD_REACHABLE (0x42: the bridge keeps a NOARP,
    non-PERMANENT entry as static, a PERMANENT one as local)."""
    state = NUD_NOARP | (NUD_REACHABLE if op.master else NUD_PERMANENT)
    msg = _ndmsg(AF_BRIDGE, ifindex(op.dev), state, NTF_MASTER if op.master else NTF_SELF)
    msg += _mac(NDA_LLADDR, op.lladdr)
    if op.dst:
        msg += _ip(NDA_DST, op.dst)
    return msg


# --------------------------------------------------------------------------- routes, rules


def route(op: AddRoute, ifindex: Ifindex) -> bytes:
    """`ip route add [TYPE] TO [via GW] [dev DEV] [src SRC] [metric M] [table T] [onlink]`."""
    table = op.table if op.table is not None else BUILTIN_TABLES["main"]
    scope = RT_SCOPE_LINK if (op.type == "unicast" and not op.via) else RT_SCOPE_UNIVERSE
    net = ipaddress.ip_network(op.to) if op.to != "default" else None
    head = (
        socket.AF_INET if op.family == 4 else socket.AF_INET6,
        net.prefixlen if net is not None else 0,  # dst_len
        0,  # src_len
        0,  # tos
        table if table < 256 else RT_TABLE_COMPAT,
        RTPROT_STATIC,
        scope,
        RTN_TYPES[op.type],
        RTNH_F_ONLINK if op.onlink else 0,
    )
    msg = struct.pack("=BBBBBBBBI", *head) + _u32(RTA_TABLE, table)
    if net is not None:
        msg += _attr(RTA_DST, net.network_address.packed)
    if op.via:
        msg += _ip(RTA_GATEWAY, op.via)
    if op.dev:
        msg += _u32(RTA_OIF, ifindex(op.dev))
    if op.metric is not None:
        msg += _u32(RTA_PRIORITY, op.metric)
    if op.src:
        msg += _ip(RTA_PREFSRC, op.src)
    return msg


def rule(op: AddRule) -> Any:
    """`ip rule add [pref P] [not] from SRC [to DST] [iif I] [oif O] [fwmark M/K] …`."""
    from netlab.kernel.messages import RuleMsg  # pyroute2's, imported for a lab with rules

    msg = RuleMsg()
    msg["family"] = socket.AF_INET if op.family == 4 else socket.AF_INET6
    msg["action"] = FR_ACTIONS[op.action]
    if op.invert:
        msg["flags"] = FIB_RULE_INVERT
    if op.tos is not None:
        msg["tos"] = op.tos
    attrs: list[tuple[str, Any]] = []
    if op.table is not None:
        msg["table"] = op.table if op.table < 256 else RT_TABLE_COMPAT
        attrs.append(("FRA_TABLE", op.table))
    if op.priority is not None:
        attrs.append(("FRA_PRIORITY", op.priority))
    for key, value, length in (("FRA_SRC", op.src, "src_len"), ("FRA_DST", op.dst, "dst_len")):
        if value:
            net = ipaddress.ip_network(value)
            msg[length] = net.prefixlen
            attrs.append((key, str(net.network_address)))
    msg["attrs"] = attrs + _rule_selectors(op)
    return msg


def _rule_selectors(op: AddRule) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = []
    if op.iif:
        attrs.append(("FRA_IIFNAME", op.iif))
    if op.oif:
        attrs.append(("FRA_OIFNAME", op.oif))
    if op.fwmark is not None:
        attrs.append(("FRA_FWMARK", op.fwmark))
        attrs.append(("FRA_FWMASK", op.fwmask if op.fwmask is not None else 0xFFFFFFFF))
    if op.ipproto is not None:
        attrs.append(("FRA_IP_PROTO", op.ipproto))
    for key, span in (("FRA_SPORT_RANGE", op.sport), ("FRA_DPORT_RANGE", op.dport)):
        if span is not None:
            attrs.append((key, f"{span[0]}:{span[1]}"))  # pyroute2's fra_range takes "start:end"
    if op.uidrange is not None:
        attrs.append(("FRA_UID_RANGE", f"{op.uidrange[0]}:{op.uidrange[1]}"))
    attrs += _newer_selectors(op)
    if op.l3mdev:
        attrs.append(("FRA_L3MDEV", 1))
    if op.goto is not None:
        attrs.append(("FRA_GOTO", op.goto))
    if op.suppress_prefixlength is not None:
        attrs.append(("FRA_SUPPRESS_PREFIXLEN", op.suppress_prefixlength))
    return attrs


def _newer_selectors(op: AddRule) -> list[tuple[str, Any]]:
    """FRA_DSCP, the flow label and the masks (Linux 6.13-6.15), in the order iproute2
    sends them. A flow label always goes with its mask: the kernel wants both."""
    attrs: list[tuple[str, Any]] = []
    if op.dscp is not None:
        attrs.append(("FRA_DSCP", op.dscp))
    if op.flowlabel is not None:
        full = FLOWLABEL_MASK if op.flowlabel_mask is None else op.flowlabel_mask
        attrs += [("FRA_FLOWLABEL", op.flowlabel), ("FRA_FLOWLABEL_MASK", full)]
    for key, mask in (
        ("FRA_SPORT_MASK", op.sport_mask),
        ("FRA_DPORT_MASK", op.dport_mask),
        ("FRA_DSCP_MASK", op.dscp_mask),
    ):
        if mask is not None:
            attrs.append((key, mask))
    return attrs
