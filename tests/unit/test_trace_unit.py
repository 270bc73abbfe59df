"""nftables tracing without root: the trace event decoder on hand-packed netlink
messages, the temporary table's text, the stitching of per-namespace queues into one
walk, and the walk's words (where it died, NAT, blind spots) through the fake observer."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from netlab.kernel.fake_observer import FakeNamespace, FakeObserver
from netlab.kernel.trace import NFT_MSG_TRACE, decode, parse_handles, stitch, trace_table, with_headers
from netlab.lab.model import Lab
from netlab.observations import CtEntry, CtTuple, NeighView, TraceEvent, TraceFlow
from netlab.probes.checks import LabContext
from netlab.probes.flow import ProbeRequest, ProbeResult
from netlab.probes.trace import flow_keys, nat_steps, of_flow, run_trace, text_lines, to_json
from tests.unit.test_check_runner import Sender, lab_with


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(*attrs: bytes, family: int = 1) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), NFT_MSG_TRACE, 0, 0, 0) + body


def ip_header(src: str, dst: str) -> bytes:
    return bytes([0x45, 0]) + b"\0" * 10 + socket.inet_aton(src) + socket.inet_aton(dst)


def test_decode_a_rule_event_with_a_jump_and_headers() -> None:
    verdict = attr(1, struct.pack(">i", -3)) + attr(2, b"KUBE-SVC-X\0")
    data = message(
        attr(1, b"nat\0"),
        attr(2, b"KUBE-SERVICES\0"),
        attr(3, struct.pack(">Q", 42)),
        attr(4, struct.pack(">I", 3)),
        attr(5 | 0x8000, verdict),
        attr(6, struct.pack(">I", 7)),
        attr(8, ip_header("10.0.0.2", "10.96.0.10")),
        attr(10, struct.pack(">I", 2)),
        family=2,
    )
    data += message(
        attr(1, b"nat\0"),
        attr(2, b"KUBE-SEP-Y\0"),
        attr(4, struct.pack(">I", 1)),
        attr(16, struct.pack(">I", 0)),
        attr(6, struct.pack(">I", 7)),
        family=2,
    )
    first, second = decode(data, "lab.node1", {2: "eth0"})
    assert (first.family, first.table, first.chain, first.handle, first.type) == (
        "ip",
        "nat",
        "KUBE-SERVICES",
        42,
        "rule",
    )
    assert (first.verdict, first.target, first.id, first.src, first.dst, first.iif, first.oif) == (
        "jump",
        "KUBE-SVC-X",
        7,
        "10.0.0.2",
        "10.96.0.10",
        "eth0",
        None,
    )
    assert (second.type, second.verdict, second.handle, second.src) == ("policy", "drop", None, None)
    assert with_headers([first, second])[1].src == "10.0.0.2"  # the kernel sends headers once per hook


def test_decode_skips_other_messages_and_names_unknown_interfaces() -> None:
    other = struct.pack("=IHHII", 20, 0x0A10, 0, 0, 0) + b"\0" * 4
    data = other + message(
        attr(1, b"t\0"),
        attr(2, b"c\0"),
        attr(12, struct.pack(">I", 9)),
        attr(5 | 0x8000, attr(1, struct.pack(">i", 1))),
    )
    (event,) = decode(data, "ns")
    assert (event.oif, event.verdict, event.family, event.type) == ("if9", "accept", "inet", "?")


def test_the_temporary_table_marks_the_flow_both_ways_by_address_and_port() -> None:
    from netlab.observations import TraceFlow

    text = trace_table("netlab-trace-1-1", TraceFlow("tcp", ("10.0.0.2", "2001:db8::2"), (41000,)))
    assert "table inet netlab-trace-1-1 {" in text
    assert "type filter hook prerouting priority -600; policy accept;" in text
    assert "type filter hook output priority -600; policy accept;" in text
    for rule in (
        "ip saddr { 10.0.0.2 } meta nftrace set 1",
        "ip daddr { 10.0.0.2 } meta nftrace set 1",
        "ip6 daddr { 2001:db8::2 } meta nftrace set 1",
        "meta l4proto tcp th dport { 41000 }",
    ):
        assert rule in text, text
    # after conntrack: the flow's entries, and new connections coming in from a wire
    assert "type filter hook prerouting priority -199; policy accept;" in text
    assert "ip saddr { 10.0.0.2 } add @conns { ct id }" in text
    assert 'meta iifname != "lo" meta l4proto tcp ct state new add @conns { ct id }' in text
    assert text.count("ct id @conns meta nftrace set 1") == 2, text


def test_decode_reads_the_ports_from_the_transport_header() -> None:
    header = ip_header("10.0.0.2", "10.1.0.2")
    tcp = bytes([0x45, 0]) + b"\0" * 7 + bytes([6]) + header[10:]
    icmp = bytes([0x45, 0]) + b"\0" * 7 + bytes([1]) + header[10:]
    data = message(attr(6, struct.pack(">I", 1)), attr(8, tcp), attr(9, struct.pack(">HH", 41000, 8080)))
    data += message(
        attr(6, struct.pack(">I", 2)), attr(8, icmp), attr(9, bytes([8, 0, 0, 0]) + struct.pack(">HH", 77, 1))
    )
    first, second = decode(data, "ns")
    assert (first.proto, first.sport, first.dport) == ("tcp", 41000, 8080)
    assert (second.proto, second.sport, second.dport) == ("icmp", 77, None)  # an echo's id, as conntrack keys it


def _ct(orig: tuple[str, int, str, int], reply: tuple[str, int, str, int], *status: str) -> CtEntry:
    def t(x: tuple[str, int, str, int]) -> CtTuple:
        return CtTuple(x[0], x[2], "tcp", x[1], x[3])

    return CtEntry(t(orig), t(reply), frozenset(status), 0, 0, None, None, 4, "")


def test_the_flow_is_kept_through_a_dnat_and_a_fully_random_snat() -> None:
    """The router's entry ties the probe (10.0.0.2:41000 → 203.0.113.10:80) to what the
    server saw (10.1.0.1:5555 → 10.1.0.2:8080); a new connection the trace table also
    traced there (10.1.0.9:7 → 10.1.0.2:8080) is left out."""
    flow = TraceFlow("tcp", ("203.0.113.10", "10.0.0.2"), (41000,))
    router = _ct(("10.0.0.2", 41000, "203.0.113.10", 80), ("10.1.0.2", 8080, "10.1.0.1", 5555), "SRC_NAT", "DST_NAT")
    server = _ct(("10.1.0.1", 5555, "10.1.0.2", 8080), ("10.1.0.2", 8080, "10.1.0.1", 5555))
    other = _ct(("10.1.0.9", 7, "10.1.0.2", 8080), ("10.1.0.2", 8080, "10.1.0.9", 7))
    known = flow_keys(flow, [other, server, router])
    assert ("tcp", "10.1.0.1", 5555, "10.1.0.2", 8080) in known and (
        "tcp",
        "10.1.0.9",
        7,
        "10.1.0.2",
        8080,
    ) not in known

    def tcp(ns: str, id: int, src: str, sport: int, dst: str, dport: int) -> TraceEvent:
        return replace(ev(ns, id, "ctpre", src, dst, iif="eth0"), proto="tcp", sport=sport, dport=dport)

    events = [
        tcp("r", 1, "10.0.0.2", 41000, "203.0.113.10", 80),
        replace(tcp("r", 1, "10.1.0.1", 5555, "10.1.0.2", 8080), chain="post", seq=1),
        tcp("s", 2, "10.1.0.1", 5555, "10.1.0.2", 8080),
        tcp("s", 3, "10.1.0.9", 7, "10.1.0.2", 8080),
        tcp("r", 4, "10.1.0.2", 8080, "10.1.0.1", 5555),
    ]
    kept = of_flow(events, flow, known)
    assert [(e.ns, e.id) for e in kept] == [("r", 1), ("r", 1), ("s", 2), ("r", 4)]
    (step,) = nat_steps(kept, [("r", router)])
    assert (step.kind, step.direction, step.hooks, step.conntrack) == (
        "dnat+snat",
        "original",
        ("prerouting", "postrouting"),
        router,
    )


def test_rule_handles_from_an_nft_listing() -> None:
    listing = (
        "table ip filter { # handle 3\n\tchain FORWARD { # handle 2\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        "\t\tip daddr 10.1.0.2 counter packets 0 bytes 0 drop # handle 5\n\t}\n}\n"
    )
    assert parse_handles(listing) == {("FORWARD", 5): "ip daddr 10.1.0.2 counter packets 0 bytes 0 drop"}


EV_DEFAULTS: dict[str, Any] = {
    "iif": None,
    "oif": None,
    "table": "netlab-trace-1-1",
    "type": "policy",
    "verdict": "accept",
    "handle": None,
    "rule": None,
    "seq": 0,
    "ttl": 64,
}


def ev(ns: str, id: int, chain: str, src: str, dst: str, **changes: Any) -> TraceEvent:
    """A trace event; `changes` (EV_DEFAULTS' keys) say what differs from a policy accept."""
    assert set(changes) <= set(EV_DEFAULTS), f"ev() has no field {set(changes) - set(EV_DEFAULTS)}"
    f = {**EV_DEFAULTS, **changes}
    return TraceEvent(
        ns,
        id,
        f["type"],
        "inet",
        f["table"],
        chain,
        f["handle"],
        f["verdict"],
        None,
        src,
        dst,
        f["iif"],
        f["oif"],
        f["rule"],
        f["seq"],
        f["ttl"],
    )


def test_stitch_follows_the_packet_across_namespaces() -> None:
    """The server's queue comes before the router's, and both saw 10.0.0.2 → 10.1.0.2: the
    TTL (one less past the router) tells which came first."""
    client = [
        ev("c", 1, "out", "10.0.0.2", "10.1.0.2", oif="eth0"),
        ev("c", 2, "pre", "10.1.0.2", "10.0.0.2", iif="eth0"),
    ]
    router = [
        ev("r", 3, "pre", "10.0.0.2", "10.1.0.2", iif="eth0"),
        ev("r", 3, "post", "10.0.0.2", "10.1.0.2", iif="eth0", oif="eth1", ttl=63),
        ev("r", 4, "pre", "10.1.0.2", "10.0.0.2", iif="eth1"),
        ev("r", 4, "post", "10.1.0.2", "10.0.0.2", iif="eth1", oif="eth0", ttl=63),
    ]
    server = [
        ev("s", 5, "pre", "10.0.0.2", "10.1.0.2", iif="eth0", ttl=63),
        ev("s", 6, "out", "10.1.0.2", "10.0.0.2", oif="eth0"),
    ]
    client[1] = ev("c", 2, "pre", "10.1.0.2", "10.0.0.2", iif="eth0", ttl=63)
    order = [(e.ns, e.id) for e in stitch([client, server, router])]
    assert order == [("c", 1), ("r", 3), ("r", 3), ("s", 5), ("s", 6), ("r", 4), ("r", 4), ("c", 2)]


def test_a_packet_forwarded_under_a_new_trace_id_is_one_visit() -> None:
    """flannel's node routes a pod's packet from its bridge into its vxlan: the kernel
    gives the packet another trace id on the way out, and the walk still goes client,
    router, server (not back to the client's next packet in between)."""
    client = [
        ev("c", 1, "out", "10.0.0.2", "10.1.0.2", oif="eth0"),
        ev("c", 2, "pre", "10.1.0.2", "10.0.0.2", iif="eth0", ttl=63),
    ]
    router = [
        ev("r", 3, "pre", "10.0.0.2", "10.1.0.2", iif="cni0"),
        ev("r", 9, "post", "10.0.0.2", "10.1.0.2", iif="cni0", oif="flannel.1", ttl=63),
        ev("r", 4, "pre", "10.1.0.2", "10.0.0.2", iif="flannel.1"),
        ev("r", 8, "post", "10.1.0.2", "10.0.0.2", iif="flannel.1", oif="cni0", ttl=63),
    ]
    server = [
        ev("s", 5, "pre", "10.0.0.2", "10.1.0.2", iif="eth0", ttl=63),
        ev("s", 6, "out", "10.1.0.2", "10.0.0.2", oif="eth0"),
    ]
    order = [(e.ns, e.id) for e in stitch([client, server, router])]
    assert order == [("c", 1), ("r", 3), ("r", 9), ("s", 5), ("s", 6), ("r", 4), ("r", 8), ("c", 2)]


def fake_lab() -> tuple[Lab, dict[str, str]]:
    lab = lab_with("  - name: x\n    probe: {from: web-a, to: web-c}\n")
    return lab, {node: f"hg.{node}" for node in lab.nodes}


def test_the_walk_names_the_rule_that_dropped_it_and_the_nat() -> None:
    lab, nodes = fake_lab()
    a, b = nodes["web-a"], nodes["node1"]
    fake = FakeObserver({ns: FakeNamespace(links={"eth0"}) for ns in nodes.values()})
    fake.namespaces[a].trace = [ev(a, 1, "out", "10.244.0.2", "10.96.0.10", oif="eth0", seq=0)]
    fake.namespaces[b].trace = [
        ev(b, 2, "pre", "10.244.0.2", "10.96.0.10", iif="veth0", seq=1),
        ev(
            b,
            2,
            "PREROUTING",
            "10.244.0.2",
            "10.96.0.10",
            table="nat",
            type="rule",
            verdict="jump",
            handle=4,
            rule="jump KUBE-SERVICES",
            seq=2,
        ),
        ev(
            b,
            2,
            "KUBE-SEP-Y",
            "10.244.0.2",
            "10.96.0.10",  # the DNAT shows in the next hook's headers
            table="nat",
            type="rule",
            verdict="accept",
            handle=9,
            rule="dnat to 10.244.2.2:80",
            seq=3,
        ),
        ev(
            b,
            2,
            "FORWARD",
            "10.244.0.2",
            "10.244.2.2",
            table="filter",
            type="rule",
            verdict="drop",
            handle=12,
            rule="ip daddr 10.244.2.2 drop",
            seq=4,
        ),
    ]
    ctx = LabContext(lab, nodes, fake, Sender("timeout"))
    trace = run_trace(ctx, "web-a", "10.96.0.10", "tcp", 80)
    text = "\n".join(text_lines(trace))
    assert "  web-a (hg.web-a)  10.244.0.2 → 10.96.0.10  [output, out eth0]" in text, text
    assert "    inet nat PREROUTING: jump KUBE-SERVICES  → jump" in text, text
    assert "NAT (DNAT, at prerouting): 10.244.0.2 → 10.96.0.10 is now 10.244.0.2 → 10.244.2.2" in text, text
    (step,) = to_json(trace)["nat"]
    assert (step["node"], step["kind"], step["direction"], step["hooks"]) == (
        "node1",
        "dnat",
        "original",
        ("prerouting",),
    )
    assert "inet filter FORWARD: ip daddr 10.244.2.2 drop  → drop   ✗ dropped here" in text, text
    assert "died in node1: inet filter FORWARD: rule `ip daddr 10.244.2.2 drop` dropped it" in text, text
    assert to_json(trace)["died"]["node"] == "node1"
    assert ("trace", a, "tcp") in fake.calls


def test_without_a_drop_the_walk_names_the_blind_spots_and_the_route() -> None:
    from netlab.kernel.fake_observer import FakeRoute

    lab, nodes = fake_lab()
    a = nodes["web-a"]
    fake = FakeObserver({ns: FakeNamespace(links={"eth0"}) for ns in nodes.values()})
    fake.namespaces[a].routes = [FakeRoute("10.244.0.0/24", dev="eth0")]
    fake.namespaces[a].trace = [ev(a, 1, "out", "10.244.0.2", "10.96.0.10", oif="eth0")]
    trace = run_trace(LabContext(lab, nodes, fake, Sender("timeout")), "web-a", "10.96.0.10", "tcp", 80)
    text = "\n".join(text_lines(trace))
    assert "no rule dropped it; the last namespace that saw it: web-a (10.244.0.2 → 10.96.0.10)" in text, text
    assert "routing decisions, rp_filter, neighbour" in text, text
    assert "route decision there: " in text and "Network is unreachable" in text, text


def test_a_next_hop_that_never_answered_is_named_from_the_neighbour_table() -> None:
    """The probe left web-a by eth0 towards its gateway 10.244.0.1, whose neighbour entry
    is INCOMPLETE: the trace names it (a STALE entry for another address is not it)."""
    from netlab.kernel.fake_observer import FakeRoute

    lab, nodes = fake_lab()
    a = nodes["web-a"]
    fake = FakeObserver({ns: FakeNamespace(links={"eth0"}) for ns in nodes.values()})
    fake.namespaces[a].routes = [FakeRoute("10.244.0.0/24", dev="eth0"), FakeRoute("default", via="10.244.0.1")]
    fake.namespaces[a].neighbours = [
        NeighView("10.244.0.9", "eth0", "STALE", "02:00:00:00:00:09"),
        NeighView("10.244.0.1", "eth0", "INCOMPLETE", None),
    ]
    fake.namespaces[a].trace = [
        ev(a, 1, "out", "10.244.0.2", "10.96.0.10", oif="eth0"),
        ev(a, 1, "post", "10.244.0.2", "10.96.0.10", oif="eth0", seq=1),
    ]
    trace = run_trace(LabContext(lab, nodes, fake, Sender("timeout")), "web-a", "10.96.0.10", "tcp", 80)
    text = "\n".join(text_lines(trace))
    assert (
        f"the kernel drops it in web-a ({a}), out on eth0: NEIGH_FAILED — its next hop 10.244.0.1 does not answer "
        "ARP (neighbour INCOMPLETE" in text
    ), text
    assert to_json(trace)["neighbour"]["dst"] == "10.244.0.1"


def requests_of(sender: Sender) -> Sequence[ProbeRequest]:
    return sender.sent


def test_each_probe_gets_its_own_source_port() -> None:
    lab, nodes = fake_lab()
    fake = FakeObserver({ns: FakeNamespace(links={"eth0"}) for ns in nodes.values()})
    sender = Sender()
    trace = run_trace(LabContext(lab, nodes, fake, sender), "web-a", "10.244.2.2", "udp", 53, count=3)
    ports = {r.sport for r in requests_of(sender)}
    assert len(ports) == 3 and all(p is not None and 40000 <= p < 60000 for p in ports), ports
    assert all(isinstance(p, ProbeResult) for p in trace.probes) and trace.ok


def test_iptables_words_are_matched_to_nft_handles_by_their_place_in_the_chain() -> None:
    """nft's listing of an iptables-nft table loses `-m comment`: the n-th rule of a chain
    in iptables-save is the n-th in nft's listing; a chain whose counts differ keeps nft's words."""
    from netlab.kernel.counters import parse_iptables_save
    from netlab.kernel.trace import RuleText, with_iptables_words

    texts = {
        ("FORWARD", 4): "ip saddr 10.1.0.2 counter packets 0 bytes 0 accept",
        ("FORWARD", 5): "meta l4proto tcp ip daddr 10.1.0.2  counter packets 0 bytes 0 drop",
        ("OUTPUT", 6): 'ip daddr 10.9.9.9 counter packets 0 bytes 0 drop comment "nft own"',
    }
    saved = parse_iptables_save(
        "*filter\n:FORWARD ACCEPT [0:0]\n"
        "[0:0] -A FORWARD -s 10.1.0.2/32 -j ACCEPT\n"
        '[0:0] -A FORWARD -d 10.1.0.2/32 -p tcp -m comment --comment "block it" -j DROP\nCOMMIT\n',
        "ip",
    )
    rules = with_iptables_words(texts, saved)
    assert rules[("FORWARD", 5)] == RuleText(
        texts[("FORWARD", 5)], "block it", '-A FORWARD -d 10.1.0.2/32 -p tcp -m comment --comment "block it" -j DROP'
    )
    assert rules[("FORWARD", 4)].iptables == "-A FORWARD -s 10.1.0.2/32 -j ACCEPT"
    assert rules[("OUTPUT", 6)] == RuleText(texts[("OUTPUT", 6)], "nft own", None)


def test_dropped_by_a_rule_is_judged_from_the_drops_in_the_trace() -> None:
    from netlab.lab.checks import DroppedBy
    from netlab.probes.judge import judge_dropped_by_rule

    policy = ev("lab.r", 1, "forward", "10.0.0.2", "10.1.0.2", type="policy", verdict="drop", table="filter")
    rule = ev("lab.r", 1, "forward", "10.0.0.2", "10.1.0.2", type="rule", verdict="drop", table="filter", handle=4)
    rule = replace(rule, rule="tcp dport 8080 drop", comment="no web")
    lost = [
        ProbeResult("timeout", "tcp", "10.0.0.2", 4000, "10.1.0.2", 8080, None, None, None, None, "no answer", None)
    ]
    names = {"lab.r": "r"}.get

    def judge(events: Sequence[TraceEvent], **wanted: Any) -> list[str]:
        return judge_dropped_by_rule(DroppedBy(**wanted), "lab.r", lost, events, names).reasons

    assert judge([policy], node="r", chain="forward", policy=True) == []
    assert judge([rule], node="r", comment="no web") == []
    assert judge([rule], node="r", family="inet", table="filter", rule="dport  8080") == []
    assert judge([rule], node="r", chain="forward", policy=True) == [
        "expected the probe to be dropped by the policy of chain forward in r (forward), it was dropped in r by "
        "inet filter forward: rule `tcp dport 8080 drop`"
    ]
    assert judge([policy], node="r", comment="no web") == [
        'expected the probe to be dropped by the rule with comment "no web" in r, it was dropped in r by '
        "inet filter forward: the policy of chain forward"
    ]
    in_x = judge_dropped_by_rule(DroppedBy(node="x", comment="no web"), "lab.x", lost, [rule], names).reasons
    assert in_x[0].endswith("it was dropped in r by inet filter forward: rule `tcp dport 8080 drop`")
    assert judge([], node="r", comment="no web") == [
        'expected the probe to be dropped by the rule with comment "no web" in r, but no rule or chain policy '
        "dropped it (its trace saw no drop)"
    ]
    answered = [replace(lost[0], outcome="ok", detail="connected")]
    assert judge_dropped_by_rule(DroppedBy(node="r", comment="x"), "lab.r", answered, [], names).passed


TRACE_TEXT = """\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
  netlab-probe_0-4242    [001] b..2.  1512.000100: fib_table_lookup: table 254 oif 0 iif 1 proto 6 10.0.0.2/40001 -> 10.9.9.9/80 tos 0 scope 0 flags 0 ==> dev eth0 gw 10.0.0.1/:: err 0
  netlab-probe_0-4242    [001] b..2.  1512.000200: netif_receive_skb: dev=eth0 skbaddr=00000000deadbeef len=60
  netlab-probe_0-4242    [001] b..2.  1512.000300: fib_table_lookup: table 255 oif 0 iif 2 proto 6 10.0.0.2/40001 -> 10.9.9.9/80 tos 0 scope 0 flags 0 ==> dev - gw 0.0.0.0/:: err -11
  netlab-probe_0-4242    [001] b..2.  1512.000400: fib_table_lookup: table 254 oif 0 iif 2 proto 6 10.0.0.2/40001 -> 10.9.9.9/80 tos 0 scope 0 flags 0 ==> dev - gw 0.0.0.0/:: err -11
  netlab-probe_0-4242    [001] b..2.  1512.000500: kfree_skb: skbaddr=00000000deadbeef rx_sk=0000000000000000 protocol=2048 location=ip_error+0x94/0x220 reason: IP_INNOROUTES
  netlab-probe_0-4242    [001] b..2.  1512.000600: kfree_skb: skbaddr=0000000012345678 rx_sk=0000000000000000 protocol=2048 location=nft_do_chain+0x1/0x2 reason: NETFILTER_DROP
"""


def test_the_tracefs_text_gives_drops_with_their_interface_and_lookups() -> None:
    from netlab.kernel.tracefs import parse
    from netlab.observations import FibLookup, KernelDrop

    seen = parse(TRACE_TEXT)
    assert seen.drops == (
        KernelDrop("IP_INNOROUTES", "ip_error+0x94/0x220", "eth0", 2048),
        KernelDrop("NETFILTER_DROP", "nft_do_chain+0x1/0x2", None, 2048),
    )
    assert seen.lookups[0] == FibLookup(254, "10.0.0.2", "10.9.9.9", 1, 0, "eth0", "10.0.0.1", 0)
    assert [(f.table, f.dev, f.gw, f.err) for f in seen.lookups[1:]] == [(255, None, None, -11), (254, None, None, -11)]


def test_rules_after_a_jump_into_an_empty_chain_are_not_indented_and_a_dead_end_is_where_it_stopped() -> None:
    from netlab.kernel.tracefs import parse
    from netlab.probes.trace import Trace, walk_lines

    def rule(chain: str, handle: int, verdict: str, target: str | None = None) -> TraceEvent:
        e = ev("lab.r", 7, chain, "10.0.0.2", "10.1.0.2", type="rule", verdict=verdict, table="filter", handle=handle)
        return replace(e, target=target, rule=f"rule {handle}", iif="eth0")

    events = (
        ev("lab.r", 7, "pre", "10.0.0.2", "10.1.0.2", iif="eth0"),
        rule("FORWARD", 1, "jump", "EMPTY"),
        rule("FORWARD", 2, "jump", "SEP"),
        rule("SEP", 3, "accept"),
        ev("lab.s", 9, "pre", "10.0.0.2", "10.1.0.2", iif="eth0"),  # arrived, went no further
    )
    lost = ProbeResult("timeout", "tcp", "10.0.0.2", 4000, "10.1.0.2", 80, None, None, None, None, "no answer", None)
    nodes = {"lab.r": "r", "lab.s": "s"}
    seen = parse(TRACE_TEXT)
    trace = Trace("c", "tcp", "10.1.0.2", 80, (lost,), events, nodes, kernel=seen)
    lines = [line for line in walk_lines(trace) if "rule" in line]
    assert [len(line) - len(line.lstrip()) for line in lines] == [4, 4, 6], lines
    text = "\n".join(text_lines(trace))
    assert "the last namespace that saw it: s (10.0.0.2 → 10.1.0.2)" in text, text
    assert "the kernel dropped it in s (lab.s), in on eth0: IP_INNOROUTES" in text, text
