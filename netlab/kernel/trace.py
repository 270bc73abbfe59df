"""nftables tracing of one flow across a lab's namespaces (the live half of
KernelObserver.trace).

The kernel clears a packet's trace flag whenever it crosses into another namespace, and
delivers trace events only to listeners in the packet's own namespace: so every
namespace gets its own temporary table (`inet netlab-trace-…`, chains at prerouting and
output, priority -600: before raw and conntrack) whose rules set `meta nftrace set 1` on
the flow's packets, and its own NETLINK_NETFILTER socket in group NFNLGRP_NFTRACE. The
probe is sent, events are read until the lab is quiet, and every table and socket goes
away again — in a `finally` that a Ctrl-C cannot cut short. A `bridge netlab-trace-…`
table beside it marks the flow's frames as they come into a bridge port, and its empty
chains at the bridge's forward, input and output hooks say which port each copy left by.
The outer packet of a VXLAN tunnel (the kernel clears the trace flag when it
encapsulates) is marked by the inner addresses and ports it carries; its events carry its
UDP and VXLAN headers (`vxlan_header`), and each event is told the bridge of its ports and
the VXLAN device it left by or came in on (`with_links`, one RTM_GETLINK dump per namespace).

Events are decoded here with the standard library (`decode`); rule handles are resolved
to their text with `nft -a list table` in the event's namespace, and a rule of an
iptables-nft table (an iptables dump) also to its iptables-save words and comment, which
nft's listing does not show.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

from netlab import interrupts
from netlab.kernel import nft
from netlab.kernel.counters import nft_comment, parse_iptables_save
from netlab.kernel.inside import in_namespace
from netlab.kernel.nlsock import NLM_F_ACK, NLM_F_REQUEST, RTM_GETLINK, NetlinkSocket, frame
from netlab.observations import (
    TRACE_SETTLE,
    TRACE_TABLE_PREFIX,
    CounterView,
    FdbLookup,
    ObserveError,
    TraceEvent,
    TraceFlow,
    VxlanDev,
    VxlanHeader,
    trace_visits,
)

T = TypeVar("T")
K = TypeVar("K")

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTRACE = 9
NFT_MSG_TRACE = (10 << 8) | 17  # NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE

WORKERS = 16  # namespaces set up, read and cleaned at once

PRIORITY = -600  # before raw (-300) and conntrack (-200)
CT = -199  # after conntrack, before DNAT (-100)
LAST = 500  # after srcnat (100)
# The bridge table's empty chains: chain → hook ("forward" and "in" are nft keywords)
BRIDGE_CHAINS = {"switch": "forward", "up": "input", "down": "output"}
VXLAN_FLAG_I = 0x08  # the VNI is valid (RFC 7348)

# NFTA_TRACE_* (include/uapi/linux/netfilter/nf_tables.h)
A_TABLE, A_CHAIN, A_HANDLE, A_TYPE, A_VERDICT, A_ID = 1, 2, 3, 4, 5, 6
A_LL, A_NETWORK, A_TRANSPORT, A_IIF, A_OIF, A_POLICY = 7, 8, 9, 10, 12, 16
ETH_P_ARP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0806, 0x86DD, 0x8100, 0x88A8
ND_TYPES = (135, 136)  # ICMPv6 neighbour solicitation and advertisement
TYPES = {1: "policy", 2: "return", 3: "rule"}
VERDICTS = {
    0: "drop",
    1: "accept",
    2: "stolen",
    3: "queue",
    4: "repeat",
    -1: "continue",
    -2: "break",
    -3: "jump",
    -4: "goto",
    -5: "return",
}
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}

_ids = itertools.count(1)


# ---------------------------------------------------------------- decoding


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            return
        yield kind & 0x3FFF, data[off + 4 : off + length]
        off += (length + 3) & ~3


def _verdict(data: bytes) -> tuple[str | None, str | None]:
    code: int | None = None
    target = None
    for kind, value in _attrs(data):
        if kind == 1 and len(value) >= 4:
            code = struct.unpack(">i", value[:4])[0]
        elif kind == 2:
            target = value.rstrip(b"\0").decode(errors="replace")
    if code is None:
        return None, target
    return VERDICTS.get(code if code < 0 else code & 0xFF, str(code)), target


def vxlan_header(network: bytes, transport: bytes, ports: Collection[int]) -> VxlanHeader | None:
    """The VXLAN encapsulation of an outer packet: its UDP header (to one of `ports`) and
    the VXLAN header after it, with the I flag (a valid VNI) set. The kernel sends the
    first 20 bytes of the transport header: both fit."""
    if len(network) >= 20 and network[0] >> 4 == 4:
        proto = network[9]
    elif len(network) >= 40 and network[0] >> 4 == 6:
        proto = network[6]
    else:
        return None
    if proto != 17 or len(transport) < 16:
        return None
    sport, dport = struct.unpack_from(">HH", transport)
    if dport not in ports or not transport[8] & VXLAN_FLAG_I:
        return None
    return VxlanHeader(int.from_bytes(transport[12:15], "big"), sport, dport)


def _addresses(header: bytes) -> tuple[str | None, str | None, int | None, int | None]:
    """Source, destination, TTL (hop limit) and IP protocol (next header) of an IPv4 or
    IPv6 header."""
    if len(header) >= 20 and header[0] >> 4 == 4:
        src, dst = ipaddress.IPv4Address(header[12:16]), ipaddress.IPv4Address(header[16:20])
        return str(src), str(dst), header[8], header[9]
    if len(header) >= 40 and header[0] >> 4 == 6:
        src6, dst6 = ipaddress.IPv6Address(header[8:24]), ipaddress.IPv6Address(header[24:40])
        return str(src6), str(dst6), header[7], header[6]
    return None, None, None, None


_PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}
_ECHO = {1: (8, 0), 58: (128, 129)}  # echo request and reply: their id is conntrack's "port"


def _ports(protocol: int | None, header: bytes) -> tuple[int | None, int | None]:
    """Source and destination port of a TCP/UDP/SCTP header; an ICMP echo's id as its
    source port (as conntrack keys it)."""
    if protocol in (6, 17, 132) and len(header) >= 4:
        sport, dport = struct.unpack_from(">HH", header)
        return sport, dport
    if protocol in _ECHO and len(header) >= 6 and header[0] in _ECHO[protocol]:
        return struct.unpack_from(">H", header, 4)[0], None
    return None, None


def decode(
    data: bytes, ns: str, ifnames: dict[int, str] | None = None, vxlan_ports: Collection[int] = ()
) -> list[TraceEvent]:
    """Every NFT_MSG_TRACE message in a netlink datagram, as TraceEvents of namespace ns
    (an outer packet to one of vxlan_ports with its VXLAN header)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if mtype == NFT_MSG_TRACE and length >= 20:
            out.append(_event(data[off + 16 : off + length], ns, ifnames or {}, vxlan_ports))
        off += (length + 3) & ~3
    return out


def _event(body: bytes, ns: str, ifnames: dict[int, str], vxlan_ports: Collection[int]) -> TraceEvent:
    fields: dict[int, bytes] = dict(_attrs(body[4:]))

    def text(kind: int) -> str:
        return fields.get(kind, b"").rstrip(b"\0").decode(errors="replace")

    def index(kind: int) -> str | None:
        if kind not in fields:
            return None
        i = struct.unpack(">I", fields[kind][:4])[0]
        return ifnames.get(i, f"if{i}")

    verdict, target = _verdict(fields[A_VERDICT]) if A_VERDICT in fields else (None, None)
    if A_POLICY in fields:
        verdict = VERDICTS.get(struct.unpack(">i", fields[A_POLICY][:4])[0], verdict)
    src, dst, ttl, protocol = _addresses(fields.get(A_NETWORK, b""))
    sport, dport = _ports(protocol, fields.get(A_TRANSPORT, b""))
    family = FAMILIES.get(body[0], str(body[0]))
    mac_src, mac_dst, ethertype = _ethernet(fields.get(A_LL, b"")) if family == "bridge" else (None, None, None)
    transport = fields.get(A_TRANSPORT, b"")
    # An NDP message is in a trace only as a frame a bridge table marked for what the bridge
    # learns (the inet table returns before marking one): in any family — br_netfilter
    # passes bridged frames, the mark with them, through the IP hooks too.
    learning = ethertype == ETH_P_ARP or (protocol == 58 and transport[:1] != b"" and transport[0] in ND_TYPES)
    return TraceEvent(
        ns=ns,
        id=struct.unpack(">I", fields[A_ID][:4])[0] if A_ID in fields else 0,
        type=TYPES.get(struct.unpack(">I", fields[A_TYPE][:4])[0], "?") if A_TYPE in fields else "?",
        family=family,
        table=text(A_TABLE),
        chain=text(A_CHAIN),
        handle=struct.unpack(">Q", fields[A_HANDLE][:8])[0] if A_HANDLE in fields else None,
        verdict=verdict,
        target=target,
        src=src,
        dst=dst,
        iif=index(A_IIF),
        oif=index(A_OIF),
        ttl=ttl,
        proto=None if protocol is None else _PROTOCOLS.get(protocol, str(protocol)),
        sport=sport,
        dport=dport,
        outer=vxlan_header(fields.get(A_NETWORK, b""), transport, vxlan_ports),
        mac_src=mac_src,
        mac_dst=mac_dst,
        learning=learning,
    )


def _mac(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _ethernet(header: bytes) -> tuple[str | None, str | None, int | None]:
    """Source and destination MAC and the ethertype (past VLAN tags) of an Ethernet header."""
    if len(header) < 14:
        return None, None, None
    off = 12
    (ethertype,) = struct.unpack_from(">H", header, off)
    while ethertype in (ETH_P_8021Q, ETH_P_8021AD) and len(header) >= off + 6:
        off += 4
        (ethertype,) = struct.unpack_from(">H", header, off)
    return _mac(header[6:12]), _mac(header[0:6]), ethertype


# ---------------------------------------------------------------- the temporary tables


def _marks(flow: TraceFlow) -> list[str]:
    """The selectors of the flow's packets, both directions: its addresses, its ports."""
    marks = []
    for version, selector in ((4, "ip"), (6, "ip6")):
        addrs = sorted(a for a in flow.addresses if ipaddress.ip_address(a).version == version)
        if addrs:
            group = "{ " + ", ".join(addrs) + " }"
            marks += [f"{selector} saddr {group}", f"{selector} daddr {group}"]
    if flow.ports and flow.proto in ("tcp", "udp"):
        group = "{ " + ", ".join(str(p) for p in sorted(flow.ports)) + " }"
        marks += [f"meta l4proto {flow.proto} th sport {group}", f"meta l4proto {flow.proto} th dport {group}"]
    return marks


# Neighbour discovery and MLD share the client's address but are not the flow: their walks
# (to ff02::…) would bury the probe's.
_NOT_ND = "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } return\n"
_L4PROTO = {"icmp": "{ icmp, ipv6-icmp }"}


def _chain(name: str, hook: str, priority: int, rules: str = "") -> str:
    return f"  chain {name} {{\n    type filter hook {hook} priority {priority}; policy accept;\n{rules}  }}\n"


def trace_table(name: str, flow: TraceFlow) -> str:
    """The temporary tables that mark the flow's packets for tracing, both directions: an
    inet table for what the IP stack does, and a bridge table for what a bridge does with
    them (nftables sees bridging only there, and without br_netfilter not at all).

    Before conntrack (-600), by the flow's addresses and ports. After conntrack (CT, before
    any DNAT), by its conntrack entry: the entry of a marked packet, or of a new connection
    of the flow's protocol coming in from a wire, goes into the set `conns`, and every
    packet of an entry in it is traced — so the flow is followed through a NAT that
    rewrote both its addresses and its ports (kube-proxy's DNAT with a fully-random
    masquerade): the reply in the NATing namespace by its entry, the next namespace's
    copy as a new connection. A new connection that is not the flow is traced too, and
    left out of the walk by probes.trace, which knows the flow's NATed tuples from the
    conntrack entries. A tunnel's outer packets are marked by what they carry."""
    marks = _marks(flow)
    traced = _NOT_ND + "".join(f"    {m} meta nftrace set 1\n" for m in marks + _tunnel_marks(flow))
    learn = _NOT_ND + "".join(f"    {m} add @conns {{ ct id }}\n" for m in marks)
    arrived = f'    meta iifname != "lo" meta l4proto {_L4PROTO.get(flow.proto, flow.proto)} ct state new add @conns {{ ct id }}\n'
    by_entry = "    ct id @conns meta nftrace set 1\n"
    chains = "  set conns {\n    typeof ct id; size 4096; flags dynamic;\n  }\n"
    chains += _chain("pre", "prerouting", PRIORITY, traced) + _chain("out", "output", PRIORITY, traced)
    chains += _chain("ctpre", "prerouting", CT, learn + arrived + by_entry)
    chains += _chain("ctout", "output", CT, learn + by_entry)
    # Empty chains after every NAT: a traced packet's pass through them is an event with its
    # headers as they leave (or are delivered) — where a SNAT or DNAT shows, and how the
    # walk knows which namespace a packet went to next.
    chains += _chain("post", "postrouting", LAST) + _chain("in", "input", LAST)
    # A bridge: the flow's frames marked as they come in on a port; the empty chains say
    # which port the bridge sent each copy out of (forward: between ports; output: the
    # host's own through the bridge device) or that it passed it up to the host (input).
    # ARP and NDP are traced in the bridge too, for what it learns from them (`fdb_lookups`;
    # never shown in a walk): the first frame to a MAC just resolved finds it known. An NDP
    # message the bridge passes up to its host leaves the trace there (the IP stack's hooks
    # would trace it too).
    bridged = _chain(
        "pre", "prerouting", PRIORITY, "".join(f"    {m} meta nftrace set 1\n" for m in _LEARNING) + traced
    )
    unmark = {"up": f"    icmpv6 type {{ {', '.join(_ND)} }} meta nftrace set 0\n"}
    bridged += "".join(_chain(c, hook, LAST, unmark.get(c, "")) for c, hook in BRIDGE_CHAINS.items())
    return f"table inet {name} {{\n{chains}}}\ntable bridge {name} {{\n{bridged}}}\n"


_ND = ("nd-neighbor-solicit", "nd-neighbor-advert")


# Every ARP and NDP frame a bridge takes in (not only the flow's: a tunnel's underlay
# resolves its own addresses), for what the bridge learns from it.
_LEARNING = ("meta protocol arp", f"icmpv6 type {{ {', '.join(_ND)} }}")


# Where the inner packet's fields are in a VXLAN packet, in bits from the outer UDP header
# (8 bytes UDP, 8 VXLAN, 14 Ethernet): the inner ethertype, addresses and ports (an IPv4
# header without options). The kernel clears the trace flag when it encapsulates, so the
# outer packet is marked by what it carries.
_INNER = {
    4: ("0x0800", ((336, 32), (368, 32)), (400, 416)),
    6: ("0x86dd", ((304, 128), (432, 128)), (560, 576)),
}


def _tunnel_marks(flow: TraceFlow) -> list[str]:
    if not flow.vxlan_ports:
        return []
    udp = "udp dport { " + ", ".join(str(p) for p in sorted(flow.vxlan_ports)) + " }"
    marks = []
    for version, (ethertype, addresses, ports) in _INNER.items():
        inner = f"{udp} @th,224,16 {ethertype}"
        addrs = sorted(
            int(ipaddress.ip_address(a)) for a in flow.addresses if ipaddress.ip_address(a).version == version
        )
        if addrs:
            group = "{ " + ", ".join(hex(a) for a in addrs) + " }"
            marks += [f"{inner} @th,{offset},{bits} {group}" for offset, bits in addresses]
        if flow.ports and flow.proto in ("tcp", "udp"):
            group = "{ " + ", ".join(str(p) for p in sorted(flow.ports)) + " }"
            marks += [f"{inner} @th,{offset},16 {group}" for offset in ports]
    return marks


def _install(ns: str, name: str, flow: TraceFlow) -> None:
    rc, _, err = nft.command_in(ns, trace_table(name, flow))
    if rc != 0:
        raise ObserveError(f"in {ns}: cannot add the trace table: {err.strip()}")


NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_DELTABLE = (NFNL_SUBSYS_NFTABLES << 8) | 2
NFTA_TABLE_NAME = 1
NFPROTO_INET, NFPROTO_BRIDGE = 1, 7


def _nfgen(family: int, res_id: int = 0) -> bytes:
    return struct.pack("=BBH", family, 0, socket.htons(res_id))


def delete_tables(name: str) -> bytes:
    """The nfnetlink batch (one transaction, as the tables were added) that deletes the
    inet and bridge tables `name`: the deletions are numbered 1 and 2, the batch's own
    messages 3."""
    text = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(text), NFTA_TABLE_NAME) + text + bytes(-len(text) % 4)
    head = _nfgen(0, NFNL_SUBSYS_NFTABLES)
    return (
        frame(head, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 3)
        + frame(_nfgen(NFPROTO_INET) + attr, NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, 1)
        + frame(_nfgen(NFPROTO_BRIDGE) + attr, NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, 2)
        + frame(head, NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3)
    )


def _delete_here(name: str) -> None:
    """Delete the trace tables in the calling thread's namespace: straight nfnetlink, not
    libnftables, whose contexts take turns across the process's threads — and the commit
    waits for the kernel to unhook the chains (an RCU grace period, ~5 ms): in every
    namespace at once, those waits overlap. A table gone already (ENOENT) is what was
    wanted (the kernel then keeps the other: `close` after a failed `open`, where neither
    was added: the two went in at once)."""
    sock = NetlinkSocket(NETLINK_NETFILTER)
    try:
        sock.sock.settimeout(5.0)  # the kernel answers at once: never wait forever in a cleanup
        sock.send_framed(delete_tables(name), [1, 2])
    finally:
        sock.close()


def _remove(ns: str, name: str) -> None:
    with contextlib.suppress(OSError, ObserveError):  # the namespace is gone: so is the table
        in_namespace(ns, lambda: _delete_here(name))


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------- one trace


class TraceSession:
    """One trace's temporary tables and listeners in some namespaces of this machine, from
    open() to close(): what a trace across hosts holds open on each host while the probe
    is sent from another (netlab.multihost.agent)."""

    def __init__(self, namespaces: Sequence[str], flow: TraceFlow) -> None:
        self.namespaces = list(namespaces)
        self.flow = flow
        self.name = f"{TRACE_TABLE_PREFIX}{os.getpid()}-{next(_ids)}"
        self.listeners: dict[socket.socket, str] = {}
        self.touched: list[str] = []
        self.raw: list[tuple[str, bytes]] = []
        self.fdb: dict[str, list[FdbEntry]] = {}  # each namespace's bridge FDB, read before the probe

    def open(self) -> None:
        """Every namespace's listener and table, all namespaces at once. Short, and not to
        be cut halfway (a worker thread could add a table after the cleanup ran): a signal
        waits until every table is in; close() removes what was made, also when this
        failed partway."""
        lock = threading.Lock()

        def one(ns: str) -> None:
            sock, fdb = in_namespace(ns, lambda: (_listener(), fdb_here()))
            with lock:
                self.listeners[sock] = ns
                self.touched.append(ns)
                self.fdb[ns] = fdb
            _install(ns, self.name, self.flow)

        with interrupts.deferred():
            each(self.namespaces, one)

    def collect(self, settle: float) -> None:
        """The events until none came for `settle` seconds."""
        self.raw += _collect(self.listeners, settle)

    def close(self) -> None:
        with interrupts.deferred():
            self._take()()

    def closing(self) -> threading.Thread:
        """close() in a thread of its own (started), for the caller to join: the tables go
        while the events are resolved. Not a daemon: the interpreter waits for it."""
        with interrupts.deferred():
            thread = threading.Thread(target=self._take(), name="netlab-trace-close")
            thread.start()
        return thread

    def _take(self) -> Callable[[], None]:
        """What close does, taken from the session (which then holds nothing more)."""
        touched, listeners = self.touched, list(self.listeners)
        self.touched, self.listeners = [], {}

        def close() -> None:
            for sock in listeners:
                sock.close()
            each(touched, lambda ns: _remove(ns, self.name))

        return close

    def queues(self) -> list[list[TraceEvent]]:
        """Each namespace's events (in `namespaces` order), in the order its listener got
        them, with their headers filled in and their rules' texts: ready for `walk`."""
        return _resolve(self.raw, self.namespaces, self.flow, self.fdb)


def trace(
    namespaces: Sequence[str], flow: TraceFlow, send: Callable[[], T], *, settle: float = TRACE_SETTLE
) -> tuple[T, list[TraceEvent]]:
    """send() with the flow traced in every namespace (the client's first); its result and
    the events stitched into one walk (`walk`), rule texts resolved (the temporary tables'
    own events stay: they say where the packet was seen)."""
    session = TraceSession(namespaces, flow)
    try:
        session.open()
        interrupts.raise_pending()
        result = send()
        session.collect(settle)
        closing = session.closing()
        try:
            queues = session.queues()
        finally:
            with interrupts.deferred():
                closing.join()
    finally:
        session.close()  # what is left, if the probe failed: nothing once `closing` ran
    return result, walk(queues)


def walk(queues: Sequence[Sequence[TraceEvent]]) -> list[TraceEvent]:
    """Namespaces' queues (the client's first) stitched into one walk, numbered. The queues
    may come from several hosts: stitching needs no common clock."""
    return [replace(e, seq=i) for i, e in enumerate(stitch(queues))]


def _collect(listeners: dict[socket.socket, str], settle: float, limit: float = 5.0) -> list[tuple[str, bytes]]:
    """Datagrams until none came for `settle` seconds (at most `limit`); each namespace's
    in the order the kernel sent them."""
    out: list[tuple[str, bytes]] = []
    end = time.monotonic() + limit
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(list(listeners), [], [], min(settle, left))
        if not ready:
            break
        for sock in ready:
            try:
                out.append((listeners[sock], sock.recv(1 << 16)))
            except OSError:  # ENOBUFS: events were lost; the walk shows what arrived
                continue
    return out


@dataclass(frozen=True)
class Link:
    """What a walk needs to know of an interface: its bridge, a VXLAN device's VNI and
    port, and whether its bridge learns by it (a bridge port)."""

    name: str
    kind: str | None
    master: str | None  # the bridge (or other master device) it is a port of
    vni: int | None = None
    port: int | None = None
    learning: bool = True  # a bridge port: its bridge learns the source MAC of a frame that comes in by it


IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO = 3, 10, 18
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_DATA = 1, 2, 5
IFLA_VXLAN_ID, IFLA_VXLAN_PORT = 1, 15
IFLA_BRPORT_LEARNING = 8


def links_here() -> dict[int, Link]:
    """The interfaces of the calling thread's namespace by index (one RTM_GETLINK dump),
    read straight from the bytes: pyroute2's decoder would load every rtnetlink class it
    has (~30 ms of a trace)."""
    sock = NetlinkSocket()
    try:
        found = sock.dump(bytes(16), RTM_GETLINK, parse=bytes)  # struct ifinfomsg, all zero: every link
    finally:
        sock.close()
    links = {index: (name, master, link) for index, name, master, link in map(_link, found)}
    return {i: replace(link, master=links[m][0] if m in links else None) for i, (_, m, link) in links.items()}


def _link(data: bytes) -> tuple[int, str, int | None, Link]:
    """One RTM_NEWLINK message: its index, name, master's index and the Link (its master
    left for the caller, who knows every name)."""
    (index,) = struct.unpack_from("=i", data, 20)
    attrs = dict(_attrs(data[32:]))
    info = dict(_attrs(attrs.get(IFLA_LINKINFO, b"")))
    kind = info[IFLA_INFO_KIND].rstrip(b"\0").decode() if IFLA_INFO_KIND in info else None
    vxlan = dict(_attrs(info.get(IFLA_INFO_DATA, b""))) if kind == "vxlan" else {}
    port = dict(_attrs(info.get(IFLA_INFO_SLAVE_DATA, b"")))
    name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
    link = Link(
        name,
        kind,
        None,
        struct.unpack("=I", vxlan[IFLA_VXLAN_ID][:4])[0] if IFLA_VXLAN_ID in vxlan else None,
        struct.unpack(">H", vxlan[IFLA_VXLAN_PORT][:2])[0] if IFLA_VXLAN_PORT in vxlan else None,
        port.get(IFLA_BRPORT_LEARNING, b"\1")[:1] != b"\0",
    )
    return index, name, struct.unpack("=I", attrs[IFLA_MASTER][:4])[0] if IFLA_MASTER in attrs else None, link


RTM_GETNEIGH = 30
AF_BRIDGE = 7
NDA_LLADDR, NDA_MASTER = 2, 9
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80


@dataclass(frozen=True)
class FdbEntry:
    """One entry of a bridge's forwarding database (`bridge fdb show … master BRIDGE`)."""

    master: int  # the bridge's ifindex
    port: int  # the port's (the bridge's own for its own addresses)
    mac: str
    local: bool  # the bridge's or a port's own address: frames to it go up to the host
    static: bool  # added, not learned: learning does not move it


def fdb_here() -> list[FdbEntry]:
    """The FDB entries of every bridge in the calling thread's namespace (one
    RTM_GETNEIGH dump of the bridge family; a device's own addresses, with no master,
    are left out)."""
    sock = NetlinkSocket()
    try:
        found = sock.dump(struct.pack("=BBHiHBB", AF_BRIDGE, 0, 0, 0, 0, 0, 0), RTM_GETNEIGH, parse=bytes)
    finally:
        sock.close()
    out = []
    for data in found:
        _, _, _, port, state, _, _ = struct.unpack_from("=BBHiHBB", data, 16)
        attrs = dict(_attrs(data[28:]))
        if NDA_MASTER in attrs and len(attrs.get(NDA_LLADDR, b"")) == 6:
            master = struct.unpack("=I", attrs[NDA_MASTER][:4])[0]
            out.append(
                FdbEntry(master, port, _mac(attrs[NDA_LLADDR]), bool(state & NUD_PERMANENT), bool(state & NUD_NOARP))
            )
    return out


def fdb_lookups(
    queue: Sequence[TraceEvent], entries: Sequence[FdbEntry], links: Mapping[int, Link]
) -> list[TraceEvent]:
    """One namespace's events (in the order they happened there), each bridge family event
    with what its bridge's FDB held for the frame's destination MAC when the frame came in:
    a frame comes in at the trace table's prerouting chain (from a port: the bridge then
    learns its source MAC there) or its output chain (from the host), and the copies it is
    switched or flooded as follow it. The FDB is the one read before the probe, plus what
    the bridge learned from the traced frames since."""
    known: dict[tuple[str, str], tuple[str, bool, bool, bool]] = {}  # (bridge, mac) → port, local, static, learned
    for f in entries:
        if f.master in links and f.port in links:
            known[(links[f.master].name, f.mac)] = (links[f.port].name, f.local, f.static, False)
    out: list[TraceEvent] = []
    prev: TraceEvent | None = None  # the namespace's last bridge family event, if the last event was one
    current: FdbLookup | None = None
    for e in queue:
        if e.family != "bridge" or e.bridge is None or e.mac_dst is None:
            out.append(e)
            prev = None
            continue
        ours = e.table.startswith(TRACE_TABLE_PREFIX)
        came_in = ours and e.chain == "pre" and (prev is None or prev.chain != "pre" or prev.id != e.id)
        from_host = ours and e.chain == "down" and (prev is None or prev.chain != "down")
        if came_in or from_host or current is None:
            current = _lookup(known, e.bridge, e.mac_dst)
        learns = next((link.learning for link in links.values() if link.name == e.iif), True)
        if came_in and learns and e.iif and e.mac_src and not int(e.mac_src[:2], 16) & 1:
            entry = known.get((e.bridge, e.mac_src))
            if entry is None or not (entry[1] or entry[2] or entry[0] == e.iif):  # new, or moved port
                known[(e.bridge, e.mac_src)] = (e.iif, False, False, True)
        out.append(replace(e, fdb=current))
        prev = e
    return out


def _lookup(known: Mapping[tuple[str, str], tuple[str, bool, bool, bool]], bridge: str, mac: str) -> FdbLookup:
    if mac == "ff:ff:ff:ff:ff:ff":
        return FdbLookup(mac, "broadcast")
    if int(mac[:2], 16) & 1:
        return FdbLookup(mac, "multicast")
    entry = known.get((bridge, mac))
    if entry is None:
        return FdbLookup(mac, "unknown")
    port, local, _, learned = entry
    return FdbLookup(mac, "local" if local else "known", None if local else port, learned)


def with_links(e: TraceEvent, by_name: Mapping[str, Link]) -> TraceEvent:
    """The event with the bridge its ports belong to (a bridge family event) and the VXLAN
    device it left by or came in on (by_name: the namespace's interfaces by name)."""

    def vxlan(name: str | None) -> VxlanDev | None:
        link = by_name.get(name or "")
        return VxlanDev(link.name, link.vni, link.port) if link is not None and link.kind == "vxlan" else None

    bridge = None
    if e.family == "bridge":
        port = by_name.get(e.iif or "") or by_name.get(e.oif or "")
        bridge = port.master if port is not None else None
    if e.outer is not None:  # the tunnel's own packet (its postrouting names the device as iif)
        return replace(e, bridge=bridge)
    return replace(e, bridge=bridge, encap=vxlan(e.oif), decap=vxlan(e.iif))


def _resolve(
    raw: list[tuple[str, bytes]],
    namespaces: Sequence[str],
    flow: TraceFlow,
    fdb: Mapping[str, Sequence[FdbEntry]] | None = None,
) -> list[list[TraceEvent]]:
    """Each namespace's datagrams decoded, headers filled in, interfaces and rule handles
    resolved: the namespaces' interfaces, then the tables their events name, each read
    in every namespace at once. A bridge's frames get its FDB lookups (`fdb`: the tables
    read before the probe), then the frames traced for them alone (ARP, NDP) go."""
    seen = list(dict.fromkeys(ns for ns, _ in raw))
    links: dict[str, dict[int, Link]] = dict(
        zip(seen, each(seen, lambda ns: in_namespace(ns, links_here)), strict=True)
    )
    queues: dict[str, list[TraceEvent]] = {ns: [] for ns in namespaces}  # the client's first
    for ns, data in raw:
        names = {i: link.name for i, link in links[ns].items()}
        queues.setdefault(ns, []).extend(decode(data, ns, names, flow.vxlan_ports))
    by_name = {ns: {link.name: link for link in found.values()} for ns, found in links.items()}
    filled = {
        ns: [with_links(e, by_name[ns]) if ns in links else e for e in with_headers(q)] for ns, q in queues.items()
    }
    filled = {
        ns: [e for e in fdb_lookups(q, (fdb or {}).get(ns, ()), links.get(ns, {})) if not e.learning]
        for ns, q in filled.items()
    }
    keys = list(
        dict.fromkeys(
            (e.ns, e.family, e.table) for q in filled.values() for e in q if not e.table.startswith(TRACE_TABLE_PREFIX)
        )
    )
    rules = dict(zip(keys, each(keys, lambda k: table_rules(*k)), strict=True))
    out: list[list[TraceEvent]] = []
    for queue in filled.values():
        resolved: list[TraceEvent] = []
        for e in queue:
            table = rules.get((e.ns, e.family, e.table), {})
            found = table.get((e.chain, e.handle)) if e.handle is not None else None
            resolved.append(replace(e, rule=found.text, comment=found.comment, iptables=found.iptables) if found else e)
        out.append(resolved)
    return out


def each(items: Sequence[K], fn: Callable[[K], T]) -> list[T]:
    """fn(item) for every item at once, each in a thread of its own (what one namespace
    waits for — a ruleset commit, a listing, a thread entering it — overlaps the others');
    the results in order, or the first error once every call ended."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(len(items), WORKERS), thread_name_prefix="netlab-trace") as pool:
        futures = [pool.submit(fn, i) for i in items]
        wait(futures)
    return [f.result() for f in futures]


def with_headers(queue: Sequence[TraceEvent]) -> list[TraceEvent]:
    """The kernel sends the packet's headers with the first event of each hook only: the
    later events of the same packet (trace id) carry the last ones seen."""
    out: list[TraceEvent] = []
    for e in queue:
        prev = out[-1] if out else None
        if e.src is None and prev is not None and prev.id == e.id:
            e = replace(
                e,
                src=prev.src,
                dst=prev.dst,
                ttl=prev.ttl,
                proto=prev.proto,
                sport=prev.sport,
                dport=prev.dport,
                outer=prev.outer,
                iif=e.iif or prev.iif,
                oif=e.oif or prev.oif,
                mac_src=e.mac_src or prev.mac_src,
                mac_dst=e.mac_dst or prev.mac_dst,
                learning=e.learning or prev.learning,
            )
        out.append(e)
    return out


def _received(visit: Sequence[TraceEvent]) -> bool:
    return visit[0].iif not in (None, "lo")


class Sent(NamedTuple):
    """A packet a visit sent on, as it left."""

    src: str | None
    dst: str | None
    ttl: int | None
    ns: str
    up: str | None  # passed up by this bridge to the host: received there next, on the bridge


def _passed_up(visit: Sequence[TraceEvent]) -> str | None:
    return next((e.bridge for e in visit if e.family == "bridge" and e.chain == "up"), None)


def _passed_on(visit: Sequence[TraceEvent]) -> bool:
    """The visit sent the packet on: out of an interface to another namespace, or (a
    bridge) up to its host, where the IP stack takes it in as another packet (trace id)
    that came in on the bridge."""
    return any(e.oif not in (None, "lo") for e in visit) or _passed_up(visit) is not None


def _decapsulated(visit: Sequence[TraceEvent]) -> bool:
    return visit[0].decap is not None and visit[0].outer is None


def _outer_delivered(visit: Sequence[TraceEvent]) -> bool:
    return any(e.outer is not None and e.family != "bridge" and e.chain == "in" for e in visit)


def stitch(queues: Sequence[Sequence[TraceEvent]]) -> list[TraceEvent]:
    """Every namespace's events merged into one walk in the order the packets went.

    Each listener has its own queue, in order; across namespaces there is no common clock
    (the trace flag and id do not cross a veth). A visit that received a packet from a
    wire comes after a visit elsewhere that sent it: the headers it left with (addresses
    and TTL, which each router lowers: the temporary table's postrouting chain sees them
    after any SNAT) equal those it arrived with, or else the destination does. Failing
    that, a visit that starts a packet (output), the client's queue first; failing that,
    the first queue's head. A bridge changes nothing in the headers: a bridge's visit
    that fits goes before another visit that fits as well.

    A tunnel: a packet sent into a VXLAN device is followed by the outer packet its
    namespace sends next, and comes out of the VXLAN device on the far side only after
    an outer packet was delivered there (when outer packets were traced at all)."""
    heads = [trace_visits(q) for q in queues]
    # a tunnel whose outer packets go through none of the traced namespaces (a VXLAN device
    # over another namespace's underlay, a link between hosts): its far side waits for none
    outers = any(e.outer is not None for q in queues for e in q)
    sent: list[Sent] = []  # packets that left, not yet received
    outer_in: dict[str, int] = {}  # namespace → outer packets delivered, not yet decapsulated
    out: list[TraceEvent] = []
    follow: list[list[TraceEvent]] | None = None  # the queue whose outer packet comes next

    def matches(visit: list[TraceEvent], exact: bool) -> list[Sent]:
        first = visit[0]
        if not _received(visit) or (outers and _decapsulated(visit) and not outer_in.get(first.ns)):
            return []
        return [
            p
            for p in sent
            if p.dst == first.dst
            and (not exact or (p.src, p.ttl) == (first.src, first.ttl))
            and ((first.ns, first.iif) == (p.ns, p.up) if p.up else first.ns != p.ns)
        ]

    while any(heads):
        pick = follow if follow and follow[0][0].outer is not None and not _received(follow[0]) else None
        # A bridge passes a packet on unchanged: the bridge's visit before the one after it
        pick = pick or next((q for q in heads if q and q[0][0].family == "bridge" and matches(q[0], True)), None)
        pick = pick or next((q for q in heads if q and matches(q[0], True)), None)
        pick = pick or next((q for q in heads if q and matches(q[0], False)), None)
        pick = pick or next((q for q in heads if q and not _received(q[0])), None)
        pick = pick or next(q for q in heads if q)
        visit = pick.pop(0)
        if match := matches(visit, True) or matches(visit, False):
            sent.remove(match[0])
            if outers and _decapsulated(visit):
                outer_in[visit[0].ns] -= 1
        if _passed_on(visit):
            last = visit[-1]
            sent.append(Sent(last.src, last.dst, last.ttl, last.ns, _passed_up(visit)))
        if _outer_delivered(visit):
            outer_in[visit[0].ns] = outer_in.get(visit[0].ns, 0) + 1
        follow = pick if any(e.encap is not None and e.outer is None for e in visit) else None
        out += visit
    return out


_COUNTER = "counter packets "
_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_HANDLE = re.compile(r"^\s*(.*?)\s*# handle (\d+)$")


@dataclass(frozen=True)
class RuleText:
    """A rule of a table, as nft lists it, and as iptables-save does for iptables-nft's tables."""

    text: str
    comment: str | None = None
    iptables: str | None = None


def table_rules(ns: str, family: str, table: str) -> dict[tuple[str, int], RuleText]:
    """(chain, handle) → the rule, from `nft -a list table FAMILY TABLE` in ns (and, for a
    table iptables-nft may have written, `iptables-nft-save`)."""
    try:
        rc, out, _ = nft.command_in(ns, f"list table {family} {table}", handles=True)
    except (OSError, nft.FirewallError):
        return {}
    texts = parse_handles(out) if rc == 0 else {}
    saved: list[CounterView] = []
    # iptables-nft gives every rule a counter: a table with a rule without one is nft's own
    if family in ("ip", "ip6") and texts and all(_COUNTER in t for t in texts.values()):
        with contextlib.suppress(nft.FirewallError):
            saved = parse_iptables_save(nft.save_iptables(ns, 6 if family == "ip6" else 4), family)
    return with_iptables_words(texts, [c for c in saved if c.table == table])


def with_iptables_words(
    texts: dict[tuple[str, int], str], saved: Sequence[CounterView]
) -> dict[tuple[str, int], RuleText]:
    """Each rule with its comment, and its iptables-save words when iptables-save listed the
    table: the n-th rule of a chain there is the n-th of nft's listing (one ruleset, read
    twice), so a chain whose rule counts differ is left in nft's words."""
    listed: dict[str, list[CounterView]] = {}
    for c in saved:
        listed.setdefault(c.chain or "", []).append(c)
    handles: dict[str, list[tuple[str, int]]] = {}
    for key in texts:
        handles.setdefault(key[0], []).append(key)
    out = {key: RuleText(text, nft_comment(text)) for key, text in texts.items()}
    for chain, keys in handles.items():
        rules = listed.get(chain, [])
        if len(rules) == len(keys):
            for key, c in zip(keys, rules, strict=True):
                out[key] = RuleText(texts[key], c.comment, c.text)
    return out


def parse_handles(listing: str) -> dict[tuple[str, int], str]:
    out: dict[tuple[str, int], str] = {}
    chain = None
    for line in listing.splitlines():
        if m := _CHAIN.match(line):
            chain = m.group(1)
        elif chain and (m := _HANDLE.match(line)) and m.group(1):
            out[(chain, int(m.group(2)))] = m.group(1)
    return out
