"""rtnetlink messages for plan ops: pure functions from an op (and the ifindexes and
namespace fds it names, resolved by the caller) to a `Request` — pyroute2's message
object, its type and flags. No sockets, no namespaces: the driver resolves and sends.

Every message is what iproute2 sends for the op's rendered command, attribute for
attribute (tests/unit/test_encode.py compares the bytes with strace captures), except
where a comment says why not.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from pyroute2.netlink import NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_NEWRULE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NTF_MASTER, NTF_SELF, NUD_NOARP, NUD_PERMANENT, NUD_REACHABLE, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netlab.kernel import tc
from netlab.kernel.messages import RuleMsg
from netlab.kernel.nlsock import Request
from netlab.plan.ops import (
    AddAddress,
    AddFdb,
    AddNeighbor,
    AddRoute,
    AddRule,
    BridgeType,
    CreateLink,
    DeleteNetem,
    MarkNetns,
    Op,
    SetBridgePort,
    SetLink,
    SetNetem,
    VethType,
    VrfType,
    VxlanType,
)
from netlab.plan.removal import Remove
from netlab.vocabulary import BUILTIN_TABLES, FLOWLABEL_MASK

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
        return Request(tc.set_netem(op, ifindex), tc.RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE)
    if isinstance(op, DeleteNetem):
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
    raise TypeError(f"no rtnetlink message removes a {type(made).__name__}")


# --------------------------------------------------------------------------- links


def _ifinfo(index: int, up: bool | None) -> Any:
    """An ifinfmsg for link `index` (0: a new one); up None leaves the state alone."""
    msg = ifinfmsg()
    msg["index"] = index
    if up is not None:
        msg["flags"] = IFF_UP if up else 0
        msg["change"] = IFF_UP
    return msg


def _settings(mtu: int | None, mac: str | None, master: str | None, ifindex: Ifindex) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = []
    if mtu:
        attrs.append(("IFLA_MTU", mtu))
    if mac:
        attrs.append(("IFLA_ADDRESS", mac))
    if master:
        attrs.append(("IFLA_MASTER", ifindex(master)))
    return attrs


def create_link(op: CreateLink, ifindex: Ifindex, netns_fd: NetnsFd) -> Any:
    """`ip link add NAME [mtu M] [address A] [master B] [up] type KIND …`."""
    msg = _ifinfo(0, op.up)
    info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", op.kind)]
    data = _link_data(op, ifindex, netns_fd)
    if data:
        info.append(("IFLA_INFO_DATA", {"attrs": data}))
    msg["attrs"] = [
        ("IFLA_IFNAME", op.name),
        *_settings(op.mtu, op.mac, op.master, ifindex),
        ("IFLA_LINKINFO", {"attrs": info}),
    ]
    if from_host(op):  # sent from the host's namespace, made in the node's (`ip link add … netns NS`)
        msg["attrs"].append(("IFLA_NET_NS_FD", netns_fd(op.ns)))
    return msg


def from_host(op: Op) -> bool:
    """A link made from the host's own namespace: a multihost tunnel, whose socket stays there."""
    return isinstance(op, CreateLink) and isinstance(op.type, VxlanType) and op.type.host_underlay


def _link_data(op: CreateLink, ifindex: Ifindex, netns_fd: NetnsFd) -> list[tuple[str, Any]]:
    """IFLA_INFO_DATA of a new link: what its kind takes."""
    t = op.type
    if isinstance(t, VethType):
        # the far end is created directly in its namespace: moving a link later is slow
        peer: list[tuple[str, Any]] = [
            ("IFLA_IFNAME", t.peer_name),
            ("IFLA_NET_NS_FD", netns_fd(t.peer_ns)),
            *_settings(t.peer_mtu, t.peer_mac, None, ifindex),
        ]
        return [("VETH_INFO_PEER", {"index": 0, "flags": 0, "change": 0, "attrs": peer})]
    if isinstance(t, BridgeType):
        return [("IFLA_BR_STP_STATE", int(t.stp))]
    if isinstance(t, VrfType):
        return [("IFLA_VRF_TABLE", t.table)]
    if isinstance(t, VxlanType):
        return _vxlan_data(t, ifindex)
    return []  # dummy


def _vxlan_data(t: VxlanType, ifindex: Ifindex) -> list[tuple[str, Any]]:
    data: list[tuple[str, Any]] = [
        ("IFLA_VXLAN_ID", t.vni),
        ("IFLA_VXLAN_PORT", t.port),
        ("IFLA_VXLAN_LEARNING", int(t.learning)),
    ]
    for key, value in (("LOCAL", t.local), ("GROUP", t.group or t.remote)):
        if value:
            six = ipaddress.ip_address(value).version == 6
            data.append((f"IFLA_VXLAN_{key}{'6' if six else ''}", value))
    if t.dev:
        data.append(("IFLA_VXLAN_LINK", ifindex(t.dev)))
    if t.ttl is not None:
        data.append(("IFLA_VXLAN_TTL", t.ttl))
    return data


def set_link(op: SetLink, ifindex: Ifindex) -> Any:
    """`ip link set NAME [mtu M] [address A] [master B] up|down`."""
    msg = _ifinfo(ifindex(op.name), op.up)
    msg["attrs"] = _settings(op.mtu, op.mac, op.master, ifindex)
    return msg


def bridge_port(op: SetBridgePort, ifindex: Ifindex) -> Any:
    """`ip link set NAME type bridge_slave hairpin on|off`."""
    msg = _ifinfo(ifindex(op.name), None)
    msg["attrs"] = [
        (
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ("IFLA_INFO_SLAVE_KIND", "bridge"),
                    ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", int(op.hairpin))]}),
                ]
            },
        )
    ]
    return msg


def mark_lo(op: MarkNetns) -> Any:
    """`ip link set lo up alias MARK`: the namespace's ownership mark."""
    msg = _ifinfo(LO_INDEX, True)
    msg["attrs"] = [("IFLA_IFALIAS", op.mark)]
    return msg


# --------------------------------------------------------------------------- addresses, neighbours


def _family(address: str) -> int:
    return socket.AF_INET if ipaddress.ip_address(address).version == 4 else socket.AF_INET6


def address(op: AddAddress, ifindex: Ifindex) -> Any:
    """`ip addr add ADDR/PLEN dev DEV [nodad]` (nodad for every IPv6 address)."""
    iface = ipaddress.ip_interface(op.address)
    msg = ifaddrmsg()
    msg["family"] = _family(str(iface.ip))
    msg["prefixlen"] = iface.network.prefixlen
    msg["index"] = ifindex(op.dev)
    attrs: list[tuple[str, Any]] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
    if iface.version == 6:
        attrs.append(("IFA_FLAGS", IFA_F_NODAD))
    msg["attrs"] = attrs
    return msg


def neighbor(op: AddNeighbor, ifindex: Ifindex) -> Any:
    """`ip neigh replace TO lladdr MAC dev DEV nud permanent`."""
    msg = ndmsg()
    msg["family"] = _family(op.to)
    msg["ifindex"] = ifindex(op.dev)
    msg["state"] = NUD_PERMANENT
    msg["flags"] = 0
    msg["attrs"] = [("NDA_DST", op.to), ("NDA_LLADDR", op.lladdr)]
    return msg


def fdb(op: AddFdb, ifindex: Ifindex) -> Any:
    """`bridge fdb append MAC dev DEV [dst IP] self permanent | master static`. As
    iproute2's bridge/fdb.c builds it: the state starts as NUD_NOARP, `permanent` adds
    NUD_PERMANENT (0xc0), `static` adds NUD_REACHABLE (0x42: the bridge keeps a NOARP,
    non-PERMANENT entry as static, a PERMANENT one as local)."""
    msg = ndmsg()
    msg["family"] = AF_BRIDGE
    msg["ifindex"] = ifindex(op.dev)
    msg["state"] = NUD_NOARP | (NUD_REACHABLE if op.master else NUD_PERMANENT)
    msg["flags"] = NTF_MASTER if op.master else NTF_SELF
    attrs: list[tuple[str, Any]] = [("NDA_LLADDR", op.lladdr)]
    if op.dst:
        attrs.append(("NDA_DST", op.dst))
    msg["attrs"] = attrs
    return msg


# --------------------------------------------------------------------------- routes, rules


def route(op: AddRoute, ifindex: Ifindex) -> Any:
    """`ip route add [TYPE] TO [via GW] [dev DEV] [src SRC] [metric M] [table T] [onlink]`."""
    msg = rtmsg()
    msg["family"] = socket.AF_INET if op.family == 4 else socket.AF_INET6
    table = op.table if op.table is not None else BUILTIN_TABLES["main"]
    msg["table"] = table if table < 256 else RT_TABLE_COMPAT
    msg["proto"] = RTPROT_STATIC
    msg["type"] = RTN_TYPES[op.type]
    msg["scope"] = RT_SCOPE_LINK if (op.type == "unicast" and not op.via) else RT_SCOPE_UNIVERSE
    msg["flags"] = RTNH_F_ONLINK if op.onlink else 0
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", table)]
    if op.to != "default":
        net = ipaddress.ip_network(op.to)
        msg["dst_len"] = net.prefixlen
        attrs.append(("RTA_DST", str(net.network_address)))
    if op.via:
        attrs.append(("RTA_GATEWAY", op.via))
    if op.dev:
        attrs.append(("RTA_OIF", ifindex(op.dev)))
    if op.metric is not None:
        attrs.append(("RTA_PRIORITY", op.metric))
    if op.src:
        attrs.append(("RTA_PREFSRC", op.src))
    msg["attrs"] = attrs
    return msg


def rule(op: AddRule) -> Any:
    """`ip rule add [pref P] [not] from SRC [to DST] [iif I] [oif O] [fwmark M/K] …`."""
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
