"""The links a lab brought up, really up before `up` says so.

The kernel applies a carrier change (a veth whose two ends are both up, a bridge whose
first port forwards) in its linkwatch work (net/core/link_watch.c): 200 links a pass
while changes keep coming, then 100 a second once they stop. Until a link's turn its
operstate is stale, its queue discards whatever it sends and, as a bridge port, it stays
disabled: right after an `up` of 5000 namespaces ~230 bridge ports were still so and
took 2 s more (10 s and longer on a loaded machine; tests/kernel/test_links_up.py).

So `up` does that work itself, at once: an RTM_GETLINK of one link runs the change
pending on it (rtnl_getlink → linkwatch_sync_dev) and answers with the result. One batch
per namespace asks for every link the lab brought up, ports and lower links before the
bridges and VRFs they belong to (whose carrier follows theirs), and each answer is
judged. What is still not up is asked for again, a little later each time, until a
deadline; then the error names each link and its state.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from netlab.kernel.nlsock import Failure, NetlinkSocket, Request
from netlab.plan.ops import CreateLink, Op, SetLink, VethType, lower_dev

RTM_GETLINK = 18
IFLA_IFNAME, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_EXT_MASK, IFLA_CARRIER = 3, 16, 18, 29, 33
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_BR_STP_STATE = 5
IFLA_BRPORT_STATE = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the answers are smaller without the counters
IFF_UP = 0x1
OPER = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
IF_OPER_UNKNOWN, IF_OPER_UP = 0, 6
PORT = ("disabled", "listening", "learning", "forwarding", "blocking")
BR_STATE_FORWARDING = 3
_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_ATTR = struct.Struct("=HH")
_NESTED = 0x3FFF  # an attribute's type without NLA_F_NESTED / NLA_F_NET_BYTEORDER
FIRST_PAUSE, LONGEST_PAUSE = 0.01, 0.2


@dataclass(frozen=True)
class Want:
    """A link the ops bring up."""

    op: Op  # the op that declared it (named in the error)
    name: str
    master: str | None  # its bridge or VRF, as declared
    carrier: bool  # a veth whose far end comes up too: the kernel must say it has carrier


@dataclass(frozen=True)
class Seen:
    """A link as the kernel answered for it."""

    up: bool
    carrier: bool
    oper: int
    kind: str
    stp: bool  # a bridge running STP (its ports pass through listening and learning)
    port: int | None  # its state as a bridge port


def wanted(ops: Sequence[Op]) -> dict[str, list[Want]]:
    """Per namespace, the links `ops` leave up: first those on no other link, then those on
    a lower link (vlan, vxlan, tunnel), then the bridges and VRFs others are ports of."""
    last: dict[tuple[str, str], CreateLink | SetLink] = {}
    master: dict[tuple[str, str], str] = {}
    peer: dict[tuple[str, str], tuple[str, str]] = {}
    lower: set[tuple[str, str]] = set()
    for op in ops:
        if not isinstance(op, (CreateLink, SetLink)):
            continue
        key = (op.ns, op.name)
        last[key] = op
        if op.master:
            master[key] = op.master
        if isinstance(op, CreateLink) and isinstance(op.type, VethType):
            far = (op.type.peer_ns, op.type.peer_name)
            peer[key], peer[far] = far, key
        if isinstance(op, CreateLink) and lower_dev(op.type):
            lower.add(key)
    up = {key for key, op in last.items() if op.up}
    masters = {(ns, name) for (ns, _), name in master.items()}
    found: dict[str, list[Want]] = {}
    for key in sorted(up, key=lambda k: (k in masters, k in lower)):  # sorted() is stable: op order within
        both = key in peer and peer[key] in up
        found.setdefault(key[0], []).append(Want(last[key], key[1], master.get(key), both))
    return found


def until_up(sock: NetlinkSocket, wants: Sequence[Want], deadline: float) -> list[tuple[Want, str]]:
    """Ask for `wants` (one namespace's, on its socket) until each is up or the deadline
    passes; those still not up then, each with its state in words."""
    pause = 0.0  # asking again at once runs what the first answers set off (a bridge's
    # carrier follows its first forwarding port); after that, the kernel itself is slow
    while True:
        seen = {want.name: answer for want, answer in zip(wants, ask(sock, wants), strict=True)}
        left = [(want, why) for want in wants if (why := _trouble(want, seen)) is not None]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(2 * pause, LONGEST_PAUSE) if pause else FIRST_PAUSE


def ask(sock: NetlinkSocket, wants: Sequence[Want]) -> list[Seen | str]:
    """RTM_GETLINK of each link by name, in order (which runs the change pending on it):
    what the kernel answered, or its error in words."""
    requests = [Request(_getlink(want.name), RTM_GETLINK) for want in wants]
    return [answer.message if isinstance(answer, Failure) else _seen(answer) for answer in sock.query(requests)]


def _getlink(name: str) -> bytes:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return (
        body
        + _attr(IFLA_IFNAME, name.encode() + b"\0")
        + _attr(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS))
    )


def _attr(kind: int, payload: bytes) -> bytes:
    return _ATTR.pack(_ATTR.size + len(payload), kind) + payload + bytes(-len(payload) % 4)


def _trouble(want: Want, seen: dict[str, Seen | str]) -> str | None:
    """Why `want` is not up yet, in words; None once it is."""
    link = seen[want.name]
    if isinstance(link, str):
        return link  # the kernel's error: No such device
    if not link.up:
        return "admin down"
    if want.carrier and not link.carrier:
        return "no carrier"
    if not link.carrier:
        return None  # down because of what the lab declares (a far end down, a bridge without ports)
    # a veth's operstate is UNKNOWN only until its first carrier change is applied
    if link.oper != IF_OPER_UP and (link.kind == "veth" or link.oper != IF_OPER_UNKNOWN):
        return f"operstate {OPER[link.oper] if link.oper < len(OPER) else link.oper}"
    bridge = seen.get(want.master or "")
    forwards = link.port is None or link.port == BR_STATE_FORWARDING
    if not forwards and isinstance(bridge, Seen) and bridge.up and not bridge.stp:
        assert link.port is not None
        return f"bridge port {PORT[link.port] if link.port < len(PORT) else link.port}"
    return None


def _seen(data: bytes) -> Seen:
    """An RTM_NEWLINK answer: the fields judged. (A plain loop over the ~40 attributes:
    this runs for every link of the lab, and a generator per message cost twice as much.)"""
    _family, _type, _index, flags, _change = _IFINFO.unpack_from(data, _HDR.size)
    carrier, oper, kind, stp, port = None, IF_OPER_UNKNOWN, "", False, None
    pos, end, unpack = _HDR.size + _IFINFO.size, len(data), _ATTR.unpack_from
    while pos + 4 <= end:
        alen, atype = unpack(data, pos)
        if alen < 4:
            break  # malformed: never loop on it
        atype &= _NESTED
        if atype == IFLA_CARRIER:
            carrier = data[pos + 4] != 0
        elif atype == IFLA_OPERSTATE:
            oper = data[pos + 4]
        elif atype == IFLA_LINKINFO:
            kind, stp, port = _link_info(data, pos + 4, pos + alen)
            if carrier is not None:
                break  # the rest (netns ids, per-family settings) says nothing judged here
        pos += (alen + 3) & ~3
    return Seen(bool(flags & IFF_UP), bool(carrier), oper, kind, stp, port)


def _link_info(data: bytes, start: int, end: int) -> tuple[str, bool, int | None]:
    """IFLA_LINKINFO: the link's kind, whether it is a bridge running STP, its state as a
    bridge port. Only a bridge's port data holds a port state: a VRF's holds its table
    (IFLA_VRF_PORT_TABLE, the same attribute number), and a bond's its own."""
    kind, slave_kind, stp, port = "", "", False, None
    for itype, istart, iend in _attrs(data, start, end):
        if itype == IFLA_INFO_KIND:
            kind = _name(data, istart, iend)
        elif itype == IFLA_INFO_SLAVE_KIND:
            slave_kind = _name(data, istart, iend)
        elif itype == IFLA_INFO_DATA and kind == "bridge":
            stp = any(t == IFLA_BR_STP_STATE and data[s] != 0 for t, s, _ in _attrs(data, istart, iend))
        elif itype == IFLA_INFO_SLAVE_DATA and slave_kind == "bridge":
            port = next((data[s] for t, s, _ in _attrs(data, istart, iend) if t == IFLA_BRPORT_STATE), port)
    return kind, stp, port


def _name(data: bytes, start: int, end: int) -> str:
    return data[start:end].split(b"\0", 1)[0].decode()


def _attrs(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start of value, end of value) of each netlink attribute in data[pos:end]."""
    while pos + _ATTR.size <= end:
        alen, atype = _ATTR.unpack_from(data, pos)
        if alen < _ATTR.size:
            return  # malformed: never loop on it
        yield atype & _NESTED, pos + _ATTR.size, pos + alen
        pos += (alen + 3) & ~3


def reason(left: dict[str, list[tuple[Want, str]]], timeout: float) -> str:
    """The error: how many links are not up, each with its namespace and state (the first 10)."""
    named = [f"{want.name} in {ns} ({why})" for ns, troubles in left.items() for want, why in troubles]
    more = f", … ({len(named)} in all)" if len(named) > 10 else ""
    noun = "link is" if len(named) == 1 else "links are"
    return f"{len(named)} {noun} not up after {timeout:g} s: {', '.join(named[:10])}{more}"
