"""Route and rule readers: the route a packet would take in a lab namespace (RTM_GETROUTE,
what `ip route get` asks), its policy rules (`ip rule`) and VRFs, as the values of
netlab.observations, each answer explained with netlab.fib (which rule decided it).

Each call opens its rtnetlink socket *inside* the namespace from a worker thread
(netlab.kernel.inside) and closes it before returning: a socket kept open would keep
the namespace alive after `netlab down`. Requests are built and answers decoded with
pyroute2's message classes over nlsock.py's sockets; pyroute2's IPRoute would
run an asyncio loop (and fork, for a namespace) per socket.

A routing *error* is an answer, not a failure: the kernel answers a lookup that ends in a
blackhole, unreachable or prohibit route, or in no route at all, with an errno (EINVAL,
EHOSTUNREACH, EACCES, ENETUNREACH), and route_get returns that as RouteAnswer.type.
ObserveError is for what is not an answer: the namespace is gone, an interface a query
names does not exist, the kernel refused the request itself.
"""

from __future__ import annotations

import dataclasses
import errno as errnos
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netlab.fib.lookup import REJECT_ERRNOS, RULE_ERRNOS, deciding_rule, error_answer, rule_cause
from netlab.fib.query import check_query
from netlab.fib.text import route_text, rule_text
from netlab.kernel.inside import in_namespace
from netlab.kernel.messages import RouteMsg, RuleMsg, decode_rule
from netlab.kernel.nlsock import Failure, NetlinkSocket
from netlab.observations import ObserveError, RouteAnswer, RouteQuery, RuleView, VrfMap
from netlab.vocabulary import DSCP_MASK, FLOWLABEL_MASK, IP_PROTOS, proto_name

RTM_GETLINK = 18
RTM_GETROUTE = 26
RTM_GETRULE = 34
# Without this flag the kernel reports RTA_TABLE 254 (main) for every IPv4 answer,
# whichever table the lookup really ended in.
RTM_F_LOOKUP_TABLE = 0x1000
FIB_RULE_INVERT = 0x2
FIB_RULE_IIF_DETACHED = 0x8
FIB_RULE_OIF_DETACHED = 0x10

ROUTE_TYPES = {
    0: "unspec",
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
    11: "xresolve",
}
# Rule selectors a RouteQuery cannot be matched against: tun_id depends on the tunnel
# metadata. (l3mdev is matched with the namespace's VRFs: see netlab.fib.lookup.l3mdev_table.)
_EXOTIC_RULE_ATTRS = ("FRA_TUN_ID",)
RULE_ACTIONS = {0: "unspec", 1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}


def build_route_request(q: RouteQuery, indexes: Mapping[str, int]) -> Any:
    """The RTM_GETROUTE message for q (interface names resolved with indexes)."""
    fam = check_query(q)
    bits = 32 if fam == 4 else 128
    msg = RouteMsg()
    msg["family"] = socket.AF_INET if fam == 4 else socket.AF_INET6
    msg["dst_len"] = bits
    msg["flags"] = RTM_F_LOOKUP_TABLE
    attrs: list[tuple[str, Any]] = [("RTA_DST", q.dst)]
    if q.src is not None:
        msg["src_len"] = bits
        attrs.append(("RTA_SRC", q.src))
    for key, name, what in (("RTA_IIF", q.iif, "iif"), ("RTA_OIF", q.oif, "oif"), ("RTA_OIF", q.vrf, "vrf")):
        if name is not None:
            if name not in indexes:
                raise ObserveError(f"no interface {name} (the query's {what})")
            attrs.append((key, indexes[name]))
    if q.fwmark is not None:
        attrs.append(("RTA_MARK", q.fwmark))
    if q.uid is not None:
        attrs.append(("RTA_UID", q.uid))
    if q.ipproto is not None:
        attrs.append(("RTA_IP_PROTO", IP_PROTOS[q.ipproto]))
    if q.sport is not None:
        attrs.append(("RTA_SPORT", q.sport))
    if q.dport is not None:
        attrs.append(("RTA_DPORT", q.dport))
    if q.tos is not None:
        msg["tos"] = q.tos
    if q.flowlabel is not None:
        attrs.append(("RTA_FLOWLABEL", q.flowlabel))
    msg["attrs"] = attrs
    return msg


def _attr_dict(msg: Any) -> dict[str, Any]:
    """A decoded pyroute2 message's attributes by name (the first of each), each decoded
    once: msg.get_attr() searches and decodes again on every call (~5 µs each)."""
    found: dict[str, Any] = {}
    for slot in msg["attrs"]:
        found.setdefault(slot[0], slot[1])
    return found


def parse_route_answer(data: bytes, names: Mapping[int, str], q: RouteQuery) -> RouteAnswer:
    """The RouteAnswer in an RTM_NEWROUTE reply to q (names: ifindex → interface name)."""
    msg = RouteMsg(data)
    msg.decode()
    attrs = _attr_dict(msg)
    type_ = ROUTE_TYPES.get(msg["type"], str(msg["type"]))
    table = attrs.get("RTA_TABLE")
    if table is None:
        table = msg["table"]
    oif = attrs.get("RTA_OIF")
    dev = None if oif is None else names.get(oif, f"if{oif}")
    via = attrs.get("RTA_GATEWAY")
    if via is None:
        rtvia = attrs.get("RTA_VIA")
        via = rtvia.get("addr") if isinstance(rtvia, dict) else None
    prefsrc = attrs.get("RTA_PREFSRC")
    text = route_text(q, type_, table, dev, via, prefsrc)
    err: int | None = None
    message: str | None = None
    cache = attrs.get("RTA_CACHEINFO")
    if type_ in REJECT_ERRNOS:
        # Older kernels answered an IPv6 reject route with the route and its error in
        # rta_error (`ip -6 route get` printed "error -113"); report it as a failure.
        code = (cache["rta_error"] if cache is not None else 0) & 0xFFFFFFFF
        err = (0x100000000 - code) if code >= 0x80000000 else (code or REJECT_ERRNOS[type_])
        message = f"{os.strerror(err)} ({errnos.errorcode.get(err, err)})"
        text += f" error {os.strerror(err)}"
    return RouteAnswer(type=type_, table=table, dev=dev, via=via, prefsrc=prefsrc, errno=err, error=message, text=text)


def _forwarding(fam: int, ifname: str) -> str | None:
    """The interface's forwarding sysctl, read in the current thread's namespace."""
    path = f"/proc/sys/net/ipv{fam}/conf/{ifname}/forwarding"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _hint(q: RouteQuery, fam: int, err: int) -> str | None:
    """What else an errno may mean for this kind of lookup (read in the namespace)."""
    if q.iif is not None and err == errnos.EHOSTUNREACH and _forwarding(fam, q.iif) == "0":
        # ip_route_input_slow(): a node that does not forward answers every
        # non-local destination with EHOSTUNREACH, whatever its routes say.
        return f"forwarding is off on {q.iif} (net.ipv{fam}.conf.{q.iif}.forwarding = 0)"
    if q.iif is not None and err == errnos.EINVAL:
        return "or the kernel drops such a received packet (a martian source or destination)"
    if q.iif is not None and err == errnos.EXDEV:
        return f"the reverse path filter (rp_filter) on {q.iif} rejects source {q.src}"
    if q.iif is None and q.src is not None and err == errnos.ENETUNREACH:
        return f"or {q.src} is not an address of this namespace"
    return None


def route_get_here(queries: Sequence[RouteQuery]) -> list[RouteAnswer]:
    """route_get_many in the calling thread's namespace (queries already checked)."""
    sock = NetlinkSocket()
    try:
        indexes = sock.link_indexes()
        names = {i: n for n, i in indexes.items()}
        msgs = [(build_route_request(q, indexes), RTM_GETROUTE, 0) for q in queries]
        answers: list[RouteAnswer] = []
        ruleset: list[tuple[RuleView, bool]] | None = None
        vrfs: VrfMap | None = None

        def rules_here() -> list[tuple[RuleView, bool]]:
            nonlocal ruleset, vrfs
            if ruleset is None:
                ruleset = _rule_set(sock)
                # the VRFs only matter to l3mdev rules (the kernel adds one with the first VRF)
                vrfs = _vrfs_here(sock) if any(r.l3mdev for r, _ in ruleset) else {}
            return ruleset

        for q, got in zip(queries, sock.query(msgs), strict=True):
            if not isinstance(got, Failure):
                answer = parse_route_answer(got, names, q)
                rule = deciding_rule(answer, q, rules_here(), vrfs)
                answers.append(dataclasses.replace(answer, rule=rule) if rule is not None else answer)
                continue
            fam = ipaddress.ip_address(q.dst).version
            hints = [_hint(q, fam, got.errno)]
            rule = None
            if got.errno in RULE_ERRNOS.values():  # only when some lookup failed the way a rule can
                rule, maybe = rule_cause(got.errno, q, rules_here(), vrfs)
                hints.append(maybe)
            hint = "; ".join(h for h in hints if h) or None
            answers.append(error_answer(q, got.errno, got.message, hint, rule))
        return answers
    finally:
        sock.close()


def route_get_many(ns: str, queries: Sequence[RouteQuery]) -> list[RouteAnswer]:
    """route_get for many queries in one namespace: one thread, one socket, one send()
    per batch; answers in query order."""
    qs = list(queries)
    for q in qs:
        check_query(q)
    if not qs:
        return []
    return in_namespace(ns, lambda: route_get_here(qs))


def route_get(ns: str, q: RouteQuery) -> RouteAnswer:
    """The kernel's routing decision for q in ns (`ip route get`). Never raises for a
    routing error: those are answers (type blackhole/unreachable/prohibit/none + errno)."""
    return route_get_many(ns, [q])[0]


def _prefix(addr: str | None, length: int) -> str | None:
    if addr is None:
        return None
    return str(ipaddress.ip_network(f"{addr}/{length}", strict=False))


def parse_rule(msg: Any) -> RuleView | None:
    """A decoded fibmsg → RuleView; None for the other families' rules (IPv4/IPv6
    multicast routing, whose rules a dump of AF_UNSPEC includes too)."""
    parsed = _parse_rule(msg)
    return None if parsed is None else parsed[0]


def _parse_rule(msg: Any) -> tuple[RuleView, bool] | None:
    """(RuleView, exotic: has selectors RuleView does not hold) of a decoded fibmsg."""
    family = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(msg["family"])
    if family is None:
        return None
    attrs = _attr_dict(msg)
    action = RULE_ACTIONS.get(msg["action"], str(msg["action"]))
    table = attrs.get("FRA_TABLE") or msg["table"] or None
    fwmark = attrs.get("FRA_FWMARK")
    fwmask = attrs.get("FRA_FWMASK")
    if fwmark is None and fwmask is not None:
        fwmark = 0  # `fwmark 0/MASK`: the kernel omits a zero FRA_FWMARK, not the mask
    flags = msg["flags"]
    extra = ""
    if msg["tos"]:
        extra += f" tos {msg['tos']:#04x}"
    if flags & FIB_RULE_IIF_DETACHED:
        extra += " [iif detached]"
    if flags & FIB_RULE_OIF_DETACHED:
        extra += " [oif detached]"
    spans: dict[str, tuple[int, int]] = {}
    for attr, word in (("FRA_UID_RANGE", "uidrange"), ("FRA_SPORT_RANGE", "sport"), ("FRA_DPORT_RANGE", "dport")):
        value = attrs.get(attr)
        if value is not None:
            lo, _, hi = str(value).partition(":")
            spans[word] = (int(lo), int(hi or lo))
            if f"FRA_{word.upper()}_MASK" not in attrs:  # a masked port is spelled VALUE/MASK below
                extra += f" {word} {lo}" if lo == hi and word != "uidrange" else f" {word} {lo}-{hi}"
    proto = attrs.get("FRA_IP_PROTO")
    if proto:
        extra += f" ipproto {proto_name(proto)}"
    if attrs.get("FRA_L3MDEV"):
        extra += " l3mdev"
    suppress = attrs.get("FRA_SUPPRESS_PREFIXLEN")
    if suppress is not None and suppress != 0xFFFFFFFF:
        extra += f" suppress_prefixlength {suppress}"
    masks, words = _masked_selectors(attrs, spans)
    extra += words
    view = RuleView(
        priority=attrs.get("FRA_PRIORITY") or 0,
        family=family,
        src=_prefix(attrs.get("FRA_SRC"), msg["src_len"]),
        dst=_prefix(attrs.get("FRA_DST"), msg["dst_len"]),
        iif=attrs.get("FRA_IIFNAME"),
        oif=attrs.get("FRA_OIFNAME"),
        fwmark=fwmark,
        fwmask=fwmask,
        table=table if action == "lookup" else None,
        action=action,
        text="",
        invert=bool(flags & FIB_RULE_INVERT),
        ipproto=proto or None,
        sport=spans.get("sport"),
        dport=spans.get("dport"),
        uidrange=spans.get("uidrange"),
        tos=msg["tos"] or None,
        l3mdev=bool(attrs.get("FRA_L3MDEV")),
        goto=attrs.get("FRA_GOTO") if action == "goto" else None,
        suppress_prefixlength=suppress if suppress is not None and suppress != 0xFFFFFFFF else None,
        **masks,
    )
    invert = view.invert
    text = rule_text(view, invert=invert, extra=extra, goto=attrs.get("FRA_GOTO"))
    exotic = any(attrs.get(a) for a in _EXOTIC_RULE_ATTRS)
    return dataclasses.replace(view, text=text), exotic


def _masked_selectors(attrs: dict[str, Any], spans: dict[str, tuple[int, int]]) -> tuple[dict[str, int], str]:
    """FRA_DSCP, the flow label and the masks of a rule (Linux 6.13+): RuleView's fields
    and `ip rule`'s words for them."""
    found = {
        key: attrs[attr]
        for key, attr in (
            ("dscp", "FRA_DSCP"),
            ("dscp_mask", "FRA_DSCP_MASK"),
            ("flowlabel", "FRA_FLOWLABEL"),
            ("flowlabel_mask", "FRA_FLOWLABEL_MASK"),
            ("sport_mask", "FRA_SPORT_MASK"),
            ("dport_mask", "FRA_DPORT_MASK"),
        )
        if attrs.get(attr) is not None
    }
    words = ""
    for word in ("sport", "dport"):
        if f"{word}_mask" in found and word in spans:
            words += f" {word} {spans[word][0]:#x}/{found[f'{word}_mask']:#x}"
    if "dscp" in found:
        mask = found.get("dscp_mask")
        words += f" dscp {found['dscp']}" + (f"/{mask:#x}" if mask not in (None, DSCP_MASK) else "")
    if "flowlabel" in found:
        words += f" flowlabel {found['flowlabel']:#x}/{found.get('flowlabel_mask', FLOWLABEL_MASK):#x}"
    return found, words


def _rule_set(sock: NetlinkSocket) -> list[tuple[RuleView, bool]]:
    msg = RuleMsg()
    msg["family"] = socket.AF_UNSPEC  # both families in one dump
    return [parsed for m in sock.dump(msg, RTM_GETRULE, decode_rule) if (parsed := _parse_rule(m)) is not None]


def vrf_map(links: Sequence[Any]) -> dict[str, tuple[str, int]]:
    """The VrfMap of a namespace's decoded RTM_NEWLINK messages: each VRF device and each
    interface whose master is one (a bridge in a VRF counts; its ports do not: the kernel
    sees a bridged packet come in on the bridge)."""
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
    tables: dict[int, int] = {}
    for m in links:
        info = m.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") == "vrf":
            data = info.get_attr("IFLA_INFO_DATA")
            table = data.get_attr("IFLA_VRF_TABLE") if data is not None else None
            if table is not None:
                tables[m["index"]] = table
    out: dict[str, tuple[str, int]] = {}
    for m in links:
        index = m["index"] if m["index"] in tables else m.get_attr("IFLA_MASTER")
        if index in tables:
            out[names[m["index"]]] = (names[index], tables[index])
    return out


def _vrfs_here(sock: NetlinkSocket) -> dict[str, tuple[str, int]]:
    return vrf_map(sock.dump(ifinfmsg(), RTM_GETLINK))


def vrfs(ns: str) -> dict[str, tuple[str, int]]:
    """The VRFs of ns: each VRF device and each interface enslaved to one → (VRF, table)."""

    def read() -> dict[str, tuple[str, int]]:
        sock = NetlinkSocket()
        try:
            return _vrfs_here(sock)
        finally:
            sock.close()

    return in_namespace(ns, read)


def rules_here() -> list[RuleView]:
    """rules() of the calling thread's namespace."""
    sock = NetlinkSocket()
    try:
        return [view for view, _exotic in _rule_set(sock)]
    finally:
        sock.close()


def rules(ns: str) -> list[RuleView]:
    """The policy routing rules of ns, IPv4 then IPv6, each in priority order (`ip rule`)."""
    return in_namespace(ns, rules_here)
