"""The conntrack table of a lab namespace (`conntrack -L`), as CtEntry values.

Read over nlsock.py's NETLINK_NETFILTER socket opened inside the namespace
(netlab.kernel.inside), and parsed by hand: a table has thousands of entries, and
pyroute2's decoding costs ~140 µs each. The request is a bare nfgenmsg, built here too:
pyroute2's nfctsocket module, for its two constants, would load its socket machinery
(asyncio, ssl: ~20 ms of a `netlab trace`).
"""

from __future__ import annotations

import functools
import socket
import struct

from netlab.kernel.inside import in_namespace
from netlab.kernel.nlsock import NetlinkSocket, Request
from netlab.observations import CtEntry, CtTuple
from netlab.vocabulary import IP_PROTOS, proto_name

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_GET_STATS = 1, 5  # enum cntl_msg_types (uapi nfnetlink_conntrack.h)
# enum ip_conntrack_status (uapi nf_conntrack_common.h), bit → name without IPS_.
# Bit 12 is UNTRACKED in the uapi, but no entry in the table is untracked: there it
# means NAT_CLASH (the entry lost a NAT clash and is never confirmed).
CT_STATUS_BITS = (
    "EXPECTED",
    "SEEN_REPLY",
    "ASSURED",
    "CONFIRMED",
    "SRC_NAT",
    "DST_NAT",
    "SEQ_ADJUST",
    "SRC_NAT_DONE",
    "DST_NAT_DONE",
    "DYING",
    "FIXED_TIMEOUT",
    "TEMPLATE",
    "NAT_CLASH",
    "HELPER",
    "OFFLOAD",
    "HW_OFFLOAD",
)
# Attribute numbers of linux/netfilter/nfnetlink_conntrack.h (all integers big-endian).
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_TIMEOUT, CTA_MARK, CTA_ZONE = 1, 2, 3, 4, 7, 8, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
_CT_ICMP = {1: (4, 5, 6), 58: (7, 8, 9)}  # protocol → CTA_PROTO_ICMP{,V6}_{ID,TYPE,CODE}
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
CTA_STATS_GLOBAL_ENTRIES = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_NLA = struct.Struct("=HH")
_HDR_LEN = 16  # struct nlmsghdr
# enum tcp_conntrack (uapi nf_conntrack_tcp.h); 9 was LISTEN once, SYN_SENT2 since 2.6.
TCP_CT_STATES = (
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
)


@functools.lru_cache(maxsize=256)
def status_names(bits: int) -> frozenset[str]:
    """CTA_STATUS bits → IPS_* names without the prefix (unknown bits as BITn)."""
    return frozenset(CT_STATUS_BITS[i] if i < len(CT_STATUS_BITS) else f"BIT{i}" for i in range(32) if bits >> i & 1)


def tuple_text(t: CtTuple, icmp: tuple[int, int] | None = None) -> str:
    """'src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80' (ICMP: 'type=8 code=0 id=7')."""
    text = f"src={t.src} dst={t.dst}"
    if icmp is not None:
        text += f" type={icmp[0]} code={icmp[1]}"
        if t.sport is not None:
            text += f" id={t.sport}"
        return text
    if t.sport is not None:
        text += f" sport={t.sport}"
    if t.dport is not None:
        text += f" dport={t.dport}"
    return text


def ct_text(e: CtEntry, icmp: tuple[tuple[int, int], tuple[int, int]] | None = None) -> str:
    """A `conntrack -L`-like line: 'ipv4 tcp 6 119 TIME_WAIT src=… dst=… sport=… dport=…
    src=… dst=… sport=… dport=… [ASSURED] mark=0', plus [SNAT]/[DNAT] when NATed."""
    num = IP_PROTOS.get(e.orig.proto, e.orig.proto)
    words = [f"ipv{e.family}", e.orig.proto, str(num)]
    if e.timeout is not None:
        words.append(str(e.timeout))
    if e.state is not None:
        words.append(e.state)
    words.append(tuple_text(e.orig, icmp[0] if icmp else None))
    if "SEEN_REPLY" not in e.status:
        words.append("[UNREPLIED]")
    words.append(tuple_text(e.reply, icmp[1] if icmp else None))
    if "ASSURED" in e.status:
        words.append("[ASSURED]")
    words.append(f"mark={e.mark}")
    if e.zone:
        words.append(f"zone={e.zone}")
    if e.snat:
        words.append("[SNAT]")
    if e.dnat:
        words.append("[DNAT]")
    return " ".join(words)


def nl_attrs(data: bytes, pos: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type → (payload offset, payload end) of the netlink attributes in
    data[pos:end] (the first of each type; the NESTED/BYTEORDER flag bits dropped)."""
    found: dict[int, tuple[int, int]] = {}
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4 or pos + alen > end:
            break
        found.setdefault(atype & NLA_TYPE_MASK, (pos + 4, pos + alen))
        pos += (alen + 3) & ~3
    return found


def _be(data: bytes, at: tuple[int, int] | None) -> int | None:
    """A big-endian integer attribute's value (u8/be16/be32), or None if absent."""
    return None if at is None else int.from_bytes(data[at[0] : at[1]], "big")


def _addr(data: bytes, at: tuple[int, int] | None) -> str:
    raw = b"" if at is None else data[at[0] : at[1]]
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return "?"


def _ct_tuple(data: bytes, at: tuple[int, int]) -> tuple[CtTuple, tuple[int, int] | None, int]:
    """The CTA_TUPLE_* nest at → (CtTuple, (icmp type, code) or None, family 4 | 6)."""
    nest = nl_attrs(data, *at)
    ip = nl_attrs(data, *nest.get(CTA_TUPLE_IP, (0, 0)))
    proto = nl_attrs(data, *nest.get(CTA_TUPLE_PROTO, (0, 0)))
    if CTA_IP_V4_SRC in ip:
        family, src, dst = 4, _addr(data, ip.get(CTA_IP_V4_SRC)), _addr(data, ip.get(CTA_IP_V4_DST))
    else:
        family, src, dst = 6, _addr(data, ip.get(CTA_IP_V6_SRC)), _addr(data, ip.get(CTA_IP_V6_DST))
    num = _be(data, proto.get(CTA_PROTO_NUM)) or 0
    icmp: tuple[int, int] | None = None
    if num in _CT_ICMP:
        id_, type_, code = _CT_ICMP[num]
        sport, dport = _be(data, proto.get(id_)), None
        icmp = (_be(data, proto.get(type_)) or 0, _be(data, proto.get(code)) or 0)
    else:
        sport, dport = _be(data, proto.get(CTA_PROTO_SRC_PORT)), _be(data, proto.get(CTA_PROTO_DST_PORT))
    return CtTuple(src, dst, proto_name(num), sport, dport), icmp, family


def parse_ct(data: bytes) -> CtEntry | None:
    """One IPCTNL_MSG_CT_NEW message (a conntrack dump's reply: nlmsghdr, nfgenmsg,
    attributes) → CtEntry; None if it lacks a tuple. Parsed by hand: pyroute2's lazy
    decoding costs ~140 µs per entry, 0.15 s for a table of 1000."""
    top = nl_attrs(data, _HDR_LEN + 4, len(data))
    if CTA_TUPLE_ORIG not in top or CTA_TUPLE_REPLY not in top:
        return None
    orig, icmp_orig, family = _ct_tuple(data, top[CTA_TUPLE_ORIG])
    reply, icmp_reply, _ = _ct_tuple(data, top[CTA_TUPLE_REPLY])
    state = None
    if CTA_PROTOINFO in top:
        tcp = nl_attrs(data, *top[CTA_PROTOINFO]).get(CTA_PROTOINFO_TCP)
        number = _be(data, nl_attrs(data, *tcp).get(CTA_PROTOINFO_TCP_STATE)) if tcp else None
        if number is not None:
            state = TCP_CT_STATES[number] if number < len(TCP_CT_STATES) else str(number)
    fields = (
        orig,
        reply,
        status_names(_be(data, top.get(CTA_STATUS)) or 0),
        _be(data, top.get(CTA_MARK)) or 0,
        _be(data, top.get(CTA_ZONE)) or 0,
        state,
        _be(data, top.get(CTA_TIMEOUT)),
        family,
    )
    icmp = (icmp_orig, icmp_reply) if icmp_orig is not None and icmp_reply is not None else None
    return CtEntry(*fields, ct_text(CtEntry(*fields, ""), icmp))


def _ct_request() -> bytes:
    """struct nfgenmsg: family AF_UNSPEC (both families), version 0, res_id 0."""
    return struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)


def _ct_type(command: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | command


def ct_count(data: bytes) -> int | None:
    """CTA_STATS_GLOBAL_ENTRIES of an IPCTNL_MSG_CT_GET_STATS reply: the namespace's
    number of entries."""
    return _be(data, nl_attrs(data, _HDR_LEN + 4, len(data)).get(CTA_STATS_GLOBAL_ENTRIES))


def conntrack_here() -> list[CtEntry]:
    """conntrack() of the calling thread's namespace."""
    sock = NetlinkSocket(NETLINK_NETFILTER)
    try:
        # A dump walks the whole conntrack hash table, which every namespace shares
        # (nf_conntrack_buckets: 262144 here, ~10 ms), however few entries this one has;
        # the namespace's own count is one cheap request, and most lab nodes have none.
        (answer,) = sock.query([Request(_ct_request(), _ct_type(IPCTNL_MSG_CT_GET_STATS))])
        count = ct_count(answer) if isinstance(answer, bytes) else None  # refused: dump anyway
        if count == 0:
            return []
        dump = sock.dump(_ct_request(), _ct_type(IPCTNL_MSG_CT_GET), parse=bytes, bufsize=1 << 16)
        return [e for data in dump if (e := parse_ct(data)) is not None]
    finally:
        sock.close()


def conntrack(ns: str) -> list[CtEntry]:
    """Every conntrack entry of ns, both families (`conntrack -L`). Empty unless
    something in ns uses conntrack: the kernel tracks a namespace's packets only once a
    ruleset there needs it (a nat chain, a ct expression)."""
    return in_namespace(ns, conntrack_here)
