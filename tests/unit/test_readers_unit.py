"""Rootless tests of the route and conntrack readers (netlab.kernel.routes, netlab.kernel.conntrack)
and the FIB semantics they use (netlab.fib): route queries as netlink messages, answers and
errors as RouteAnswers, rule and conntrack messages (made with pyroute2's classes, or by
hand where the kernel's own layout matters) as RuleView/CtEntry, and NetlinkSocket.query's
matching of answers to questions against a fake socket. No namespace, no kernel request."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netlab.fib import lookup as fib_lookup
from netlab.fib import query as fib_query
from netlab.fib import text as fib_text
from netlab.kernel import conntrack as ct
from netlab.kernel import routes
from netlab.kernel.messages import RouteMsg
from netlab.kernel.nlsock import Failure, NetlinkSocket
from netlab.observations import CtEntry, CtTuple, ObserveError, RouteAnswer, RouteQuery, RuleView
from netlab.vocabulary import proto_name

# --------------------------------------------------------------------------- route queries


def decoded_request(q: RouteQuery, indexes: dict[str, int] | None = None) -> Any:
    msg = routes.build_route_request(q, indexes or {})
    msg["header"]["type"] = routes.RTM_GETROUTE
    msg.encode()
    back = RouteMsg(msg.data)
    back.decode()
    return back


def test_request_carries_every_selector() -> None:
    q = RouteQuery(
        "10.0.2.3",
        src="10.0.1.5",
        iif="eth0",
        oif="eth1",
        fwmark=0x4000,
        ipproto="tcp",
        sport=40000,
        dport=443,
        uid=1000,
    )
    msg = decoded_request(q, {"eth0": 2, "eth1": 3})
    assert (msg["family"], msg["dst_len"], msg["src_len"]) == (socket.AF_INET, 32, 32)
    assert msg["flags"] & routes.RTM_F_LOOKUP_TABLE
    assert dict((k, v) for k, v, *_ in msg["attrs"]) == {
        "RTA_DST": "10.0.2.3",
        "RTA_SRC": "10.0.1.5",
        "RTA_IIF": 2,
        "RTA_OIF": 3,
        "RTA_MARK": 0x4000,
        "RTA_UID": 1000,
        "RTA_IP_PROTO": 6,
        "RTA_SPORT": 40000,
        "RTA_DPORT": 443,
    }


def test_request_for_ipv6_and_without_optional_selectors() -> None:
    msg = decoded_request(RouteQuery("fd00::2"))
    assert (msg["family"], msg["dst_len"], msg["src_len"]) == (socket.AF_INET6, 128, 0)
    assert [a[0] for a in msg["attrs"]] == ["RTA_DST"]


def test_request_wire_numbers_of_the_flow_attributes() -> None:
    """RTA_UID 25, RTA_IP_PROTO 27, RTA_SPORT 28, RTA_DPORT 29 (linux/rtnetlink.h), ports
    in network byte order: what the kernel reads, whatever pyroute2 calls them."""
    msg = routes.build_route_request(RouteQuery("10.0.0.1", ipproto="udp", sport=0x1234, dport=53, uid=7), {})
    msg.encode()
    attrs = {t: bytes(msg.data[pos + 4 : pos + n]) for pos, n, t in _walk(bytes(msg.data), 28)}
    assert attrs[25] == struct.pack("=I", 7)
    assert attrs[27] == b"\x11"
    assert attrs[28] == b"\x12\x34" and attrs[29] == b"\x00\x35"


def _walk(data: bytes, pos: int) -> list[tuple[int, int, int]]:
    out = []
    while pos + 4 <= len(data):
        n, t = struct.unpack_from("=HH", data, pos)
        out.append((pos, n, t))
        pos += (n + 3) & ~3
    return out


def test_request_names_an_unknown_interface() -> None:
    with pytest.raises(ObserveError, match=r"no interface eth7 .*iif"):
        routes.build_route_request(RouteQuery("10.0.0.1", src="10.0.0.2", iif="eth7"), {"eth0": 2})


@pytest.mark.parametrize(
    "q,words",
    [
        (RouteQuery("10.0.0.300"), "dst must be an IP address"),
        (RouteQuery("10.0.0.1", src="fd00::1"), "different address families"),
        (RouteQuery("10.0.0.1", iif="eth0"), "needs src"),
        (RouteQuery("10.0.0.1", ipproto="sctp"), "tcp, udp, icmp for IPv4"),
        (RouteQuery("10.0.0.1", ipproto="icmpv6"), "not 'icmpv6'"),
        (RouteQuery("fd00::1", ipproto="icmp"), "tcp, udp, icmpv6 for IPv6"),
        (RouteQuery("10.0.0.1", dport=70000), "dport must be 0..65535"),
        (RouteQuery("10.0.0.1", fwmark=-1), "fwmark must be"),
        (RouteQuery("10.0.0.1", uid=1 << 32), "uid must be"),
    ],
)
def test_queries_the_kernel_could_never_answer(q: RouteQuery, words: str) -> None:
    with pytest.raises(fib_query.QueryError, match=words) as info:
        fib_query.check_query(q)
    # Either way of catching it works: a mistake in the query, and not an answer.
    assert isinstance(info.value, ValueError) and isinstance(info.value, ObserveError)


# --------------------------------------------------------------------------- route answers


def reply(type_: int, attrs: list[tuple[str, Any]], family: int = socket.AF_INET, table: int = 254) -> bytes:
    msg = RouteMsg()
    msg["family"] = family
    msg["dst_len"] = 32 if family == socket.AF_INET else 128
    msg["type"] = type_
    msg["table"] = table
    msg["attrs"] = attrs
    msg["header"]["type"] = 24  # RTM_NEWROUTE
    msg.encode()
    return bytes(msg.data)


def test_unicast_answer_via_a_gateway() -> None:
    q = RouteQuery("10.0.2.3")
    data = reply(
        1,
        [
            ("RTA_TABLE", 254),
            ("RTA_DST", "10.0.2.3"),
            ("RTA_OIF", 2),
            ("RTA_GATEWAY", "10.0.0.1"),
            ("RTA_PREFSRC", "10.0.0.2"),
        ],
    )
    assert routes.parse_route_answer(data, {2: "eth0"}, q) == RouteAnswer(
        type="unicast",
        table=254,
        dev="eth0",
        via="10.0.0.1",
        prefsrc="10.0.0.2",
        errno=None,
        error=None,
        text="10.0.2.3 via 10.0.0.1 dev eth0 table main src 10.0.0.2",
    )


def test_local_answer_and_query_words() -> None:
    q = RouteQuery("10.0.0.2", src="10.0.0.9", iif="eth0", fwmark=1)
    data = reply(2, [("RTA_TABLE", 255), ("RTA_OIF", 1)], table=255)
    ans = routes.parse_route_answer(data, {1: "lo"}, q)
    assert (ans.type, ans.table, ans.dev, ans.via, ans.prefsrc) == ("local", 255, "lo", None, None)
    assert ans.text == "local 10.0.0.2 from 10.0.0.9 dev lo table local mark 0x1 iif eth0"


def test_table_above_255_comes_from_rta_table() -> None:
    data = reply(1, [("RTA_TABLE", 1000), ("RTA_OIF", 5)], table=252)  # rtm_table says RT_TABLE_COMPAT
    ans = routes.parse_route_answer(data, {}, RouteQuery("10.0.0.1"))
    assert ans.table == 1000 and ans.dev == "if5"  # an index the link dump did not name
    assert ans.text == "10.0.0.1 dev if5 table 1000"


def test_ipv4_route_via_an_ipv6_gateway() -> None:
    data = reply(1, [("RTA_TABLE", 254), ("RTA_OIF", 2), ("RTA_VIA", {"family": socket.AF_INET6, "addr": "fe80::1"})])
    ans = routes.parse_route_answer(data, {2: "eth0"}, RouteQuery("10.9.0.1"))
    assert ans.via == "fe80::1"


def test_reject_route_answered_instead_of_failed() -> None:
    """Old kernels answered an IPv6 reject route with the route and its error in
    RTA_CACHEINFO; that reads like the failure newer ones return."""
    cache = {
        "rta_clntref": 0,
        "rta_lastuse": 0,
        "rta_expires": 0,
        "rta_error": (-errno.EACCES) & 0xFFFFFFFF,
        "rta_used": 0,
        "rta_id": 0,
        "rta_ts": 0,
        "rta_tsage": 0,
    }
    data = reply(8, [("RTA_TABLE", 254), ("RTA_OIF", 1), ("RTA_CACHEINFO", cache)], family=socket.AF_INET6)
    ans = routes.parse_route_answer(data, {1: "lo"}, RouteQuery("fd99::1"))
    assert (ans.type, ans.table, ans.errno, ans.error) == ("prohibit", 254, errno.EACCES, "Permission denied (EACCES)")


@pytest.mark.parametrize(
    "err,type_,why",
    [
        (errno.ENETUNREACH, "none", "no route"),
        (errno.EHOSTUNREACH, "unreachable", "unreachable route"),
        (errno.EACCES, "prohibit", "prohibit route"),
        (errno.EINVAL, "blackhole", "blackhole route"),
        (errno.EXDEV, "none", "the lookup failed"),
    ],
)
def test_errors_are_answers(err: int, type_: str, why: str) -> None:
    ans = fib_lookup.error_answer(RouteQuery("10.0.0.1"), err, "kernel words")
    assert ans == RouteAnswer(
        type=type_,
        table=None,
        dev=None,
        via=None,
        prefsrc=None,
        errno=err,
        error="kernel words",
        text=f"error: {__import__('os').strerror(err)} ({why})",
    )


def test_error_hint_is_appended() -> None:
    ans = fib_lookup.error_answer(RouteQuery("10.0.0.1"), errno.EHOSTUNREACH, "x", "forwarding is off on eth0")
    assert ans.text == "error: No route to host (unreachable route; forwarding is off on eth0)"


# --------------------------------------------------------------------------- NetlinkSocket.query


class FakeNetlink:
    """Answers each RTM_GETROUTE in a sent buffer, in reverse order, with a reply or (for
    dst 10.0.0.66) an NLMSG_ERROR carrying extack text, as the kernel's layout has them."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.sends = 0

    def sendall(self, buf: bytes) -> None:
        self.sends += 1
        answers = []
        for pos, length, _t, _f, seq in _frames(buf):
            msg = rtmsg(buf[pos : pos + length])
            msg.decode()
            if msg.get_attr("RTA_DST") == "10.0.0.66":
                hdr = struct.pack("=IHHII", length, 26, 0, seq, 0)
                text = b"Nexthop has invalid gateway\0"
                tlv = struct.pack("=HH", 4 + len(text), 1) + text + b"\0" * (-len(text) % 4)
                body = struct.pack("=i", -errno.EINVAL) + hdr + tlv
                answers.append(struct.pack("=IHHII", 16 + len(body), 2, 0x300, seq, 0) + body)
            else:
                out = reply(1, [("RTA_TABLE", 254), ("RTA_DST", msg.get_attr("RTA_DST"))])
                answers.append(out[:8] + struct.pack("=I", seq) + out[12:])
        self.queue += reversed(answers)

    def recv(self, _n: int) -> bytes:
        return self.queue.pop(0)

    def close(self) -> None:
        pass


def _frames(buf: bytes) -> list[tuple[int, int, int, int, int]]:
    out, pos = [], 0
    while pos + 16 <= len(buf):
        length, t, f, seq, _pid = struct.unpack_from("=IHHII", buf, pos)
        out.append((pos, length, t, f, seq))
        pos += (length + 3) & ~3
    return out


def test_query_matches_answers_by_sequence_number() -> None:
    sock = NetlinkSocket.__new__(NetlinkSocket)
    fake = FakeNetlink()
    sock.sock = fake  # type: ignore[assignment]
    sock.seq = 0
    queries = [RouteQuery(f"10.0.0.{i}") for i in range(1, 80)]
    msgs = [(routes.build_route_request(q, {}), routes.RTM_GETROUTE, 0) for q in queries]
    got = sock.query(msgs)
    assert fake.sends == 3  # 79 queries, 32 per send()
    for i, (q, answer) in enumerate(zip(queries, got, strict=True)):
        if q.dst == "10.0.0.66":
            assert answer == Failure(i, errno.EINVAL, "Invalid argument (EINVAL): Nexthop has invalid gateway")
        else:
            assert isinstance(answer, bytes)
            assert routes.parse_route_answer(answer, {}, q).text == f"{q.dst} table main"


# --------------------------------------------------------------------------- rules


def rule(
    family: int = socket.AF_INET,
    action: int = 1,
    table: int = 0,
    flags: int = 0,
    src_len: int = 0,
    dst_len: int = 0,
    attrs: list[tuple[str, Any]] | None = None,
) -> Any:
    msg = fibmsg()
    msg["family"], msg["action"], msg["table"], msg["flags"] = family, action, table, flags
    msg["src_len"], msg["dst_len"] = src_len, dst_len
    msg["attrs"] = attrs or []
    msg["header"]["type"] = 32
    msg.encode()
    back = fibmsg(msg.data)
    back.decode()
    return back


def test_rule_with_every_selector() -> None:
    view = routes.parse_rule(
        rule(
            src_len=8,
            dst_len=24,
            table=100,
            attrs=[
                ("FRA_SRC", "10.0.0.0"),
                ("FRA_DST", "192.0.2.0"),
                ("FRA_PRIORITY", 100),
                ("FRA_FWMARK", 1),
                ("FRA_FWMASK", 0xFF),
                ("FRA_IIFNAME", "eth0"),
                ("FRA_OIFNAME", "eth1"),
                ("FRA_TABLE", 100),
            ],
        )
    )
    assert view == RuleView(
        priority=100,
        family=4,
        src="10.0.0.0/8",
        dst="192.0.2.0/24",
        iif="eth0",
        oif="eth1",
        fwmark=1,
        fwmask=0xFF,
        table=100,
        action="lookup",
        text="100: from 10.0.0.0/8 to 192.0.2.0/24 fwmark 0x1/0xff iif eth0 oif eth1 lookup 100",
    )


def test_default_rules_read_like_ip_rule() -> None:
    views = [
        routes.parse_rule(rule(table=t, attrs=[("FRA_PRIORITY", p), ("FRA_TABLE", t)]))
        for p, t in ((0, 255), (32766, 254), (32767, 253))
    ]
    assert [v.text for v in views if v] == [
        "0: from all lookup local",
        "32766: from all lookup main",
        "32767: from all lookup default",
    ]
    first = views[0]
    assert first is not None and (first.priority, first.table, first.src, first.fwmark) == (0, 255, None, None)


def test_rule_without_fra_priority_is_priority_0() -> None:
    view = routes.parse_rule(rule(family=socket.AF_INET6, table=255))
    assert view is not None and (view.priority, view.family, view.table) == (0, 6, 255)


def test_fwmark_without_mask_and_zero_mark_with_mask() -> None:
    full = routes.parse_rule(
        rule(attrs=[("FRA_PRIORITY", 5), ("FRA_FWMARK", 2), ("FRA_FWMASK", 0xFFFFFFFF), ("FRA_TABLE", 7)])
    )
    assert full is not None and (full.fwmark, full.fwmask) == (2, 0xFFFFFFFF)
    assert full.text == "5: from all fwmark 0x2 lookup 7"
    # `fwmark 0/0xff` (packets without a mark): the kernel sends the mask but no FRA_FWMARK.
    zero = routes.parse_rule(rule(attrs=[("FRA_PRIORITY", 6), ("FRA_FWMASK", 0xFF), ("FRA_TABLE", 7)]))
    assert zero is not None and (zero.fwmark, zero.fwmask) == (0, 0xFF)
    assert zero.text == "6: from all fwmark 0x0/0xff lookup 7"


@pytest.mark.parametrize("action,word", [(6, "blackhole"), (7, "unreachable"), (8, "prohibit"), (3, "nop")])
def test_rule_actions_have_no_table(action: int, word: str) -> None:
    view = routes.parse_rule(rule(action=action, dst_len=24, attrs=[("FRA_PRIORITY", 250), ("FRA_DST", "203.0.113.0")]))
    assert view is not None and (view.action, view.table) == (word, None)
    assert view.text == f"250: from all to 203.0.113.0/24 {word}"


def test_goto_inverted_and_extra_selectors() -> None:
    view = routes.parse_rule(
        rule(
            action=2,
            flags=routes.FIB_RULE_INVERT,
            attrs=[
                ("FRA_PRIORITY", 10),
                ("FRA_GOTO", 200),
                ("FRA_IP_PROTO", 6),
                ("FRA_DPORT_RANGE", "80:90"),
                ("FRA_UID_RANGE", "1000:1000"),
            ],
        )
    )
    assert view is not None and view.action == "goto" and view.table is None
    assert view.text == "10: not from all uidrange 1000-1000 dport 80-90 ipproto tcp goto 200"


def test_multicast_routing_rules_are_left_out() -> None:
    assert routes.parse_rule(rule(family=128, table=253)) is None  # RTNL_FAMILY_IPMR


def view(priority: int, action: str = "lookup", family: int = 4, **sel: Any) -> RuleView:
    fields: dict[str, Any] = {
        "src": None,
        "dst": None,
        "iif": None,
        "oif": None,
        "fwmark": None,
        "fwmask": None,
        "table": 254 if action == "lookup" else None,
    }
    fields.update(sel)
    r = RuleView(priority=priority, family=family, action=action, text="", **fields)
    return RuleView(**{**r.__dict__, "text": fib_text.rule_text(r)})


@pytest.mark.parametrize(
    "rule,q,want",
    [
        (view(1, dst="10.0.0.0/8"), RouteQuery("10.1.2.3"), True),
        (view(1, dst="10.0.0.0/8"), RouteQuery("11.1.2.3"), False),
        (view(1, dst="10.0.0.0/8"), RouteQuery("fd00::1"), False),
        (view(1, family=6, dst="fd00::/8"), RouteQuery("fd00::1"), True),
        (view(1, src="10.0.0.0/8"), RouteQuery("192.0.2.1"), False),  # no src: 0.0.0.0
        (view(1, src="10.0.0.0/8"), RouteQuery("192.0.2.1", src="10.0.0.1"), True),
        (view(1, iif="lo"), RouteQuery("192.0.2.1"), True),  # locally generated: iif lo
        (view(1, iif="eth0"), RouteQuery("192.0.2.1"), False),
        (view(1, iif="eth0"), RouteQuery("192.0.2.1", src="10.0.0.1", iif="eth0"), True),
        (view(1, oif="eth1"), RouteQuery("192.0.2.1", oif="eth1"), True),
        (view(1, oif="eth1"), RouteQuery("192.0.2.1"), False),
        (view(1, fwmark=0x1, fwmask=0xFF), RouteQuery("192.0.2.1", fwmark=0x101), True),
        (view(1, fwmark=0x1, fwmask=0xFF), RouteQuery("192.0.2.1", fwmark=0x2), False),
        (view(1, fwmark=0x0, fwmask=0xFF), RouteQuery("192.0.2.1"), True),
        (view(1, fwmark=0x1), RouteQuery("192.0.2.1", fwmark=0x101), False),
    ],
)
def test_rule_matches(rule: RuleView, q: RouteQuery, want: bool) -> None:
    assert fib_lookup.rule_matches(rule, q) is want
    assert fib_lookup.rule_matches(rule, q, exotic=True) is (None if want else False)


def test_unreachable_rule_is_the_certain_cause_of_enetunreach() -> None:
    rules = [(view(0, table=255), False), (view(100, "unreachable", dst="203.0.113.0/24"), False), (view(32766), False)]
    rule, maybe = fib_lookup.rule_cause(errno.ENETUNREACH, RouteQuery("203.0.113.9"), rules)
    assert rule is rules[1][0] and maybe is None
    ans = fib_lookup.error_answer(RouteQuery("203.0.113.9"), errno.ENETUNREACH, "m", None, rule)
    assert (ans.type, ans.errno) == ("unreachable", errno.ENETUNREACH)
    assert ans.text == "error: Network is unreachable (the rule `100: from all to 203.0.113.0/24 unreachable`)"
    assert fib_lookup.rule_cause(errno.ENETUNREACH, RouteQuery("198.51.100.9"), rules) == (None, None)


def test_rules_that_only_may_have_caused_an_error() -> None:
    prohibit = view(100, "prohibit", dst="198.18.0.0/24")
    exotic_unreach = view(90, "unreachable")
    # A prohibit rule and a prohibit route both give EACCES: a hint, never certainty.
    assert fib_lookup.rule_cause(errno.EACCES, RouteQuery("198.18.0.1"), [(prohibit, False)]) == (
        None,
        "or the rule `100: from all to 198.18.0.0/24 prohibit`",
    )
    # A rule with selectors a query cannot be matched against (here: as if it had ipproto).
    rule, maybe = fib_lookup.rule_cause(
        errno.ENETUNREACH, RouteQuery("198.18.0.1"), [(exotic_unreach, True), (prohibit, False)]
    )
    assert rule is None and maybe == "or the rule `90: from all unreachable`"


# --------------------------------------------------------------------------- conntrack


def tuple_attrs(src: str, dst: str, proto: int, a: int, b: int | None, icmp: tuple[int, int] | None = None) -> Any:
    v6 = ":" in src
    ip = [("CTA_IP_V6_SRC" if v6 else "CTA_IP_V4_SRC", src), ("CTA_IP_V6_DST" if v6 else "CTA_IP_V4_DST", dst)]
    if icmp is not None:
        key = "ICMPV6" if v6 else "ICMP"
        l4: list[tuple[str, int | None]] = [
            ("CTA_PROTO_NUM", proto),
            (f"CTA_PROTO_{key}_ID", a),
            (f"CTA_PROTO_{key}_TYPE", icmp[0]),
            (f"CTA_PROTO_{key}_CODE", icmp[1]),
        ]
    else:
        l4 = [("CTA_PROTO_NUM", proto), ("CTA_PROTO_SRC_PORT", a), ("CTA_PROTO_DST_PORT", b)]
    return {"attrs": [("CTA_TUPLE_IP", {"attrs": ip}), ("CTA_TUPLE_PROTO", {"attrs": l4})]}


def ct_message(
    orig: Any,
    reply_: Any,
    *,
    family: int = socket.AF_INET,
    status: int = 0,
    extra: list[Any] | None = None,
    nested_flag: bool = True,
) -> bytes:
    msg = nfct_msg()
    msg["nfgen_family"] = family
    msg["attrs"] = [("CTA_TUPLE_ORIG", orig), ("CTA_TUPLE_REPLY", reply_), ("CTA_STATUS", status), *(extra or [])]
    msg["header"]["type"] = 0x100  # IPCTNL_MSG_CT_NEW
    msg.encode()
    data = bytearray(msg.data)
    if nested_flag:  # the kernel marks nests with NLA_F_NESTED; the parser must not care
        for pos, _n, t in _walk(bytes(data), 20):
            if t in (1, 2, 4):
                struct.pack_into("=H", data, pos + 2, t | 0x8000)
    return bytes(data)


def test_tcp_entry_with_masquerade() -> None:
    data = ct_message(
        tuple_attrs("10.1.0.2", "10.2.0.2", 6, 43960, 8080),
        tuple_attrs("10.2.0.2", "10.2.0.1", 6, 8080, 43960),
        status=0x19E,
        extra=[
            ("CTA_TIMEOUT", 119),
            ("CTA_MARK", 0),
            ("CTA_USE", 1),
            ("CTA_PROTOINFO", {"attrs": [("CTA_PROTOINFO_TCP", {"attrs": [("CTA_PROTOINFO_TCP_STATE", 7)]})]}),
        ],
    )
    entry = ct.parse_ct(data)
    assert entry == CtEntry(
        orig=CtTuple("10.1.0.2", "10.2.0.2", "tcp", 43960, 8080),
        reply=CtTuple("10.2.0.2", "10.2.0.1", "tcp", 8080, 43960),
        status=frozenset({"SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "SRC_NAT_DONE", "DST_NAT_DONE"}),
        mark=0,
        zone=0,
        state="TIME_WAIT",
        timeout=119,
        family=4,
        text="ipv4 tcp 6 119 TIME_WAIT src=10.1.0.2 dst=10.2.0.2 sport=43960 dport=8080 "
        "src=10.2.0.2 dst=10.2.0.1 sport=8080 dport=43960 [ASSURED] mark=0 [SNAT]",
    )
    assert entry.snat and not entry.dnat


def test_icmp_entry_id_and_unreplied_dnat_in_a_zone() -> None:
    data = ct_message(
        tuple_attrs("10.1.0.2", "10.9.0.100", 1, 4242, None, (8, 0)),
        tuple_attrs("10.2.0.2", "10.1.0.2", 1, 4242, None, (0, 0)),
        status=0x20 | 0x8,
        extra=[("CTA_TIMEOUT", 29), ("CTA_MARK", 42), ("CTA_ZONE", 3)],
    )
    entry = ct.parse_ct(data)
    assert entry is not None
    assert entry.orig == CtTuple("10.1.0.2", "10.9.0.100", "icmp", 4242, None)
    assert entry.reply == CtTuple("10.2.0.2", "10.1.0.2", "icmp", 4242, None)
    assert (entry.mark, entry.zone, entry.state, entry.dnat, entry.snat) == (42, 3, None, True, False)
    assert entry.text == (
        "ipv4 icmp 1 29 src=10.1.0.2 dst=10.9.0.100 type=8 code=0 id=4242 [UNREPLIED] "
        "src=10.2.0.2 dst=10.1.0.2 type=0 code=0 id=4242 mark=42 zone=3 [DNAT]"
    )


def test_ipv6_udp_entry_without_nested_flags() -> None:
    data = ct_message(
        tuple_attrs("fd01::2", "fd02::2", 17, 5000, 53),
        tuple_attrs("fd02::2", "fd02::1", 17, 53, 5000),
        family=socket.AF_INET6,
        status=0xA,
        nested_flag=False,
    )
    entry = ct.parse_ct(data)
    assert entry is not None and entry.family == 6
    assert (entry.orig.proto, entry.reply.dst, entry.timeout, entry.mark) == ("udp", "fd02::1", None, 0)


def test_icmpv6_entry() -> None:
    data = ct_message(
        tuple_attrs("fd01::2", "fd02::2", 58, 7, None, (128, 0)),
        tuple_attrs("fd02::2", "fd01::2", 58, 7, None, (129, 0)),
        family=socket.AF_INET6,
        status=0xA,
    )
    entry = ct.parse_ct(data)
    assert entry is not None and entry.orig == CtTuple("fd01::2", "fd02::2", "icmpv6", 7, None)
    assert "type=128 code=0 id=7" in entry.text


def test_entry_without_tuples_is_skipped_and_broken_ones_are_safe() -> None:
    only_orig = nfct_msg()
    only_orig["attrs"] = [("CTA_TUPLE_ORIG", tuple_attrs("10.0.0.1", "10.0.0.2", 6, 1, 2))]
    only_orig["header"]["type"] = 0x100
    only_orig.encode()
    assert ct.parse_ct(bytes(only_orig.data)) is None
    full = ct_message(tuple_attrs("10.0.0.1", "10.0.0.2", 6, 1, 2), tuple_attrs("10.0.0.2", "10.0.0.1", 6, 2, 1))
    for cut in range(len(full)):
        entry = ct.parse_ct(full[:cut])  # never raises
        assert entry is None or entry.orig.src in ("10.0.0.1", "?")


def test_ct_count_from_a_stats_reply() -> None:
    # nlmsghdr, nfgenmsg, CTA_STATS_GLOBAL_ENTRIES 1007, CTA_STATS_GLOBAL_MAX_ENTRIES (be32, with the byte-order flag)
    body = (
        bytes(4)
        + struct.pack("=HH", 8, 0x4001)
        + struct.pack("!I", 1007)
        + struct.pack("=HH", 8, 0x4002)
        + struct.pack("!I", 262144)
    )
    data = struct.pack("=IHHII", 16 + len(body), 0x105, 0, 1, 0) + body
    assert ct.ct_count(data) == 1007
    assert ct.ct_count(data[:20]) is None


def test_status_names() -> None:
    assert ct.status_names(0) == frozenset()
    assert ct.status_names(0x19E) == {"SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "SRC_NAT_DONE", "DST_NAT_DONE"}
    assert ct.status_names((1 << 5) | (1 << 9) | (1 << 10)) == {"DST_NAT", "DYING", "FIXED_TIMEOUT"}
    assert ct.status_names(1 << 20) == {"BIT20"}


def test_proto_and_tuple_words() -> None:
    assert [proto_name(n) for n in (1, 6, 17, 58, 132, 47)] == ["icmp", "tcp", "udp", "icmpv6", "sctp", "47"]
    assert ct.tuple_text(CtTuple("10.0.0.1", "10.0.0.2", "47", None, None)) == "src=10.0.0.1 dst=10.0.0.2"
    assert ct.tuple_text(CtTuple("10.0.0.1", "10.0.0.2", "tcp", 1, 2)) == "src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2"


# --------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize("ns", ["", ".", "..", "a/b"])
def test_bad_namespace_names(ns: str) -> None:
    with pytest.raises(ValueError, match="bad namespace name"):
        routes.rules(ns)


def test_missing_namespace_is_an_inspect_error() -> None:
    with pytest.raises(ObserveError, match=r"namespace netlab-no-such-namespace\.x does not exist"):
        ct.conntrack("netlab-no-such-namespace.x")
    with pytest.raises(ObserveError, match="does not exist"):
        routes.route_get("netlab-no-such-namespace.x", RouteQuery("10.0.0.1"))


def test_bad_query_is_refused_before_any_namespace() -> None:
    with pytest.raises(ValueError, match="needs src"):
        routes.route_get("netlab-no-such-namespace.x", RouteQuery("10.0.0.1", iif="eth0"))
    assert routes.route_get_many("netlab-no-such-namespace.x", []) == []


def test_flow_attributes_survive_rtmsg_being_used_first() -> None:
    """pyroute2 compiles an attribute table per class on first use; the driver uses plain
    rtmsg before any route query. The query's own attributes must still be encoded (they
    were silently dropped once, when the whole suite ran in one process)."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    from netlab.kernel.routes import build_route_request
    from netlab.observations import RouteQuery

    rtmsg().encode()
    msg = build_route_request(RouteQuery("10.0.0.1", ipproto="tcp", sport=1, dport=443, uid=1000), {})
    msg.encode()
    back = type(msg)(msg.data)
    back.decode()
    assert (back.get_attr("RTA_IP_PROTO"), back.get_attr("RTA_DPORT"), back.get_attr("RTA_UID")) == (6, 443, 1000)
