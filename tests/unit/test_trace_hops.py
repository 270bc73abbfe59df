"""The trace's hops that rules do not show, without root: a VXLAN header decoded from a
hand-packed trace event, the temporary tables that mark a tunnel's outer packets and a
bridge's frames, the visits a flood's copies make, the stitching of a walk through a
tunnel, and the walk's lines and JSON for bridges and tunnels."""

from __future__ import annotations

import socket
import struct
from dataclasses import replace
from typing import Any

from netlab.kernel.trace import FdbEntry, Link, decode, fdb_lookups, stitch, trace_table, vxlan_header
from netlab.observations import FdbLookup, TraceFlow, VxlanDev, VxlanHeader, trace_visits
from netlab.probes.trace import Trace, hops, text_lines, to_json
from tests.unit.test_trace_unit import attr, ev, message

OUTER = VxlanHeader(vni=1, sport=40000, dport=8472)
FLANNEL = VxlanDev("flannel.1", 1, 8472)


def ipv4(src: str, dst: str, proto: int, ttl: int = 64) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 84, 0, 0, ttl, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))


def vxlan(sport: int, dport: int, vni: int, flags: int = 0x08) -> bytes:
    """A UDP header and the VXLAN header after it (the kernel sends 20 bytes: 4 of the inner frame)."""
    return (
        struct.pack(">HHHH", sport, dport, 0, 0) + bytes([flags, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0" + b"\0" * 4
    )


def test_an_outer_packets_event_carries_its_udp_ports_and_vni() -> None:
    body = (attr(8, ipv4("192.168.49.2", "192.168.49.3", 17)), attr(9, vxlan(40000, 8472, 0x123456)))
    (event,) = decode(message(*body), "ns", {}, (4789, 8472))
    assert (event.src, event.dst, event.outer) == ("192.168.49.2", "192.168.49.3", VxlanHeader(0x123456, 40000, 8472))


def test_only_udp_to_a_vxlan_port_with_a_valid_vni_is_an_outer_packet() -> None:
    network = ipv4("192.168.49.2", "192.168.49.3", 17)
    assert vxlan_header(network, vxlan(40000, 8472, 1), (4789, 8472)) == VxlanHeader(1, 40000, 8472)
    assert vxlan_header(network, vxlan(40000, 53, 1), (4789, 8472)) is None  # another port
    assert vxlan_header(network, vxlan(40000, 8472, 1, flags=0), (4789, 8472)) is None  # no I flag
    assert vxlan_header(ipv4("192.168.49.2", "192.168.49.3", 6), vxlan(40000, 8472, 1), (8472,)) is None  # tcp
    assert vxlan_header(network, vxlan(40000, 8472, 1)[:12], (8472,)) is None  # cut short


def test_the_tables_mark_the_outer_packets_by_what_they_carry_and_the_bridges_frames() -> None:
    text = trace_table("netlab-trace-1-1", TraceFlow("tcp", ("10.244.0.2", "10.244.1.3"), (41000,)))
    inet, bridge = text.split("table bridge netlab-trace-1-1 {")
    # 10.244.0.2 = 0x0af40002 as the inner source (bit 336 from the outer UDP header) or destination
    for rule in (
        "udp dport { 4789, 8472 } @th,224,16 0x0800 @th,336,32 { 0xaf40002, 0xaf40103 } meta nftrace set 1",
        "udp dport { 4789, 8472 } @th,224,16 0x0800 @th,368,32 { 0xaf40002, 0xaf40103 } meta nftrace set 1",
        "udp dport { 4789, 8472 } @th,224,16 0x0800 @th,400,16 { 41000 } meta nftrace set 1",
    ):
        assert rule in inet and rule in bridge, text
    assert "ip saddr { 10.244.0.2, 10.244.1.3 } meta nftrace set 1" in bridge, text
    for hook in ("forward", "output"):
        assert f"type filter hook {hook} priority 500; policy accept;\n  }}" in bridge, text
    # ARP and NDP are traced in the bridge, for what the bridge learns from them
    assert "meta protocol arp meta nftrace set 1" in bridge, text
    assert "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } meta nftrace set 0" in bridge, text
    assert "arp " not in inet, text
    plain = trace_table("netlab-trace-1-1", TraceFlow("icmp", ("10.0.0.2",), vxlan_ports=()))
    assert "@th" not in plain, plain


def b(ns: str, id: int, chain: str, src: str, dst: str, **changes: Any) -> Any:
    """A bridge family event of the trace's bridge table (bridge br0 unless told)."""
    bridge = changes.pop("bridge", "br0")
    return replace(ev(ns, id, chain, src, dst, **changes), family="bridge", bridge=bridge)


def test_a_floods_copies_are_one_visit_and_the_next_packet_another() -> None:
    a, c = "10.0.0.1", "10.0.0.3"
    events = [
        b("sw", 1, "pre", a, c, iif="a"),
        b("sw", 2, "switch", a, c, iif="a", oif="b"),  # a copy: a packet (trace id) of its own
        b("sw", 3, "switch", a, c, iif="a", oif="c"),
        b("sw", 4, "pre", a, c, iif="a"),  # the next echo request: a new packet at prerouting
        b("sw", 4, "switch", a, c, iif="a", oif="c"),
    ]
    assert [[e.id for e in v] for v in trace_visits(events)] == [[1, 2, 3], [4, 4]]


def walk(*events: Any, ok: bool = True) -> Trace:
    from netlab.probes.flow import ProbeResult

    probe = ProbeResult(
        "ok" if ok else "timeout", "icmp", "10.0.0.1", None, "10.0.0.3", None, None, None, None, None, "", None
    )
    nodes = {ns: ns.upper() for ns in {e.ns for e in events}}
    seq = [replace(e, seq=i) for i, e in enumerate(events)]
    return Trace("A", "icmp", "10.0.0.3", None, (probe,), tuple(seq), nodes)


def test_the_walk_says_which_port_a_bridge_sent_it_out_of_or_that_it_flooded() -> None:
    a, c = "10.0.0.1", "10.0.0.3"
    forwarded = walk(b("sw", 1, "pre", a, c, iif="a"), b("sw", 1, "switch", a, c, iif="a", oif="c"))
    text = "\n".join(text_lines(forwarded))
    assert "  SW (sw)  10.0.0.1 → 10.0.0.3  [bridge br0 prerouting, in a]" in text, text
    assert "    ↳ bridge br0 from a: forwards it out c (bridge forward hook)" in text, text
    (hop,) = to_json(forwarded)["hops"]
    assert hop | {"evidence": ""} == {
        "kind": "bridge",
        "node": "SW",
        "ns": "sw",
        "bridge": "br0",
        "in": "a",
        "out": ["c"],
        "up": False,
        "flood": False,
        "fdb": None,  # events without the FDB's answer (a trace over hosts of an older netlab): by the ports
        "evidence": "",
        "text": "bridge br0 from a: forwards it out c (bridge forward hook)",
    }
    flooded = walk(
        b("sw", 1, "pre", a, c, iif="a"),
        b("sw", 2, "switch", a, c, iif="a", oif="b"),
        b("sw", 1, "switch", a, c, iif="a", oif="c"),
    )
    text = "\n".join(text_lines(flooded))
    assert "↳ bridge br0 from a: floods it (a copy out of each port) out b, c (bridge forward hook)" in text, text
    assert text.count("bridge br0 prerouting") == 1, text
    up = walk(b("sw", 1, "pre", a, c, iif="a"), b("sw", 1, "up", a, c, iif="a"))
    assert [h.text for h in hops(up)] == ["bridge br0 from a: passes it up to the host (br0) (bridge input hook)"]
    down = walk(ev("sw", 1, "out", a, c, oif="br0"), b("sw", 1, "down", a, c, oif="b"))
    assert [h.text for h in hops(down)] == ["bridge br0 from the host: forwards it out b (bridge output hook)"]


def tunnel_queues() -> list[list[Any]]:
    """pod (10.244.0.2) → node1 → VXLAN over the underlay → node2 → pod4 (10.244.1.3)."""
    p, q = "10.244.0.2", "10.244.1.3"
    n1, n2 = "192.168.49.2", "192.168.49.3"
    pod1 = [ev("pod1", 1, "out", p, q, oif="eth0")]
    node1 = [
        ev("node1", 2, "pre", p, q, iif="cni0"),
        replace(ev("node1", 2, "post", p, q, iif="cni0", oif="flannel.1", ttl=63), encap=FLANNEL),
        replace(ev("node1", 3, "out", n1, n2, oif="eth0"), outer=OUTER),
    ]
    underlay = [
        replace(b("underlay", 4, "pre", n1, n2, iif="node1"), outer=OUTER),
        replace(b("underlay", 4, "switch", n1, n2, iif="node1", oif="node2"), outer=OUTER),
    ]
    node2 = [
        replace(ev("node2", 5, "pre", n1, n2, iif="eth0"), outer=OUTER),
        replace(ev("node2", 5, "in", n1, n2, iif="eth0"), outer=OUTER),
        replace(ev("node2", 6, "pre", p, q, iif="flannel.1", ttl=63), decap=FLANNEL),
        replace(ev("node2", 6, "post", p, q, iif="flannel.1", oif="cni0", ttl=62), decap=FLANNEL),
    ]
    pod4 = [ev("pod4", 7, "pre", p, q, iif="eth0", ttl=62)]
    return [pod1, node2, pod4, underlay, node1]  # the client's first, the others in no useful order


def test_stitch_follows_a_packet_through_a_tunnel() -> None:
    """node2 decapsulates only after an outer packet was delivered to it, and node1's outer
    packet follows the packet it sent into the tunnel."""
    order = list(dict.fromkeys((e.ns, e.id) for e in stitch(tunnel_queues())))
    assert order == [("pod1", 1), ("node1", 2), ("node1", 3), ("underlay", 4), ("node2", 5), ("node2", 6), ("pod4", 7)]


def test_a_tunnel_whose_outer_packets_no_namespace_saw_is_stitched_by_the_inner_ones() -> None:
    """The VXLAN device's underlay is another namespace (a link between hosts): the far
    side's packet out of the tunnel follows the one sent into it."""
    queues = [[e for e in q if e.outer is None] for q in tunnel_queues()]
    order = list(dict.fromkeys((e.ns, e.id) for e in stitch(queues)))
    assert order == [("pod1", 1), ("node1", 2), ("node2", 6), ("pod4", 7)]


def test_the_walk_shows_the_tunnel_from_device_and_outer_packet() -> None:
    trace = walk(*stitch(tunnel_queues()))
    text = "\n".join(text_lines(trace))
    encap = (
        "    ↳ into the VXLAN tunnel flannel.1 (VNI 1, UDP port 8472): outer packet 192.168.49.2 → 192.168.49.3, "
        "UDP 40000 → 8472, VXLAN VNI 1"
    )
    assert encap in text, text
    assert "  UNDERLAY (underlay)  192.168.49.2 → 192.168.49.3  [bridge br0 prerouting, in node1]\n" in text, text
    assert "    VXLAN outer packet: UDP 40000 → 8472, VNI 1\n" in text, text
    assert "    ↳ out of the VXLAN tunnel flannel.1 (VNI 1, UDP port 8472)" in text, text
    by_kind = {h["kind"]: h for h in to_json(trace)["hops"]}
    assert by_kind["vxlan-encap"]["outer"] == {
        "src": "192.168.49.2",
        "dst": "192.168.49.3",
        "sport": 40000,
        "dport": 8472,
        "vni": 1,
    }
    assert (by_kind["vxlan-encap"]["node"], by_kind["vxlan-decap"]["node"]) == ("NODE1", "NODE2")
    assert by_kind["bridge"]["out"] == ["node2"]


def test_a_packet_sent_into_a_tunnel_without_an_outer_packet_says_so() -> None:
    p, q = "10.244.0.2", "10.244.1.3"
    trace = walk(replace(ev("node1", 2, "post", p, q, iif="cni0", oif="flannel.1"), encap=FLANNEL), ok=False)
    (hop,) = hops(trace)
    assert hop.text == (
        "into the VXLAN tunnel flannel.1 (VNI 1, UDP port 8472): its outer packet was not seen in the lab's namespaces"
    )
    assert hop.fields["outer"] is None


def test_an_ipvs_decision_names_the_service_the_real_server_and_the_forwarding() -> None:
    from netlab.observations import IpvsConn, IpvsRealView, IpvsServiceView, IpvsState
    from netlab.probes.hops import IpvsRead, arrival, ipvs_hops

    real = IpvsRealView("192.168.113.99", 8080, "masq", 1, 0, 1)
    svc = IpvsServiceView("tcp", 4, "10.10.0.1", 8410, None, "rr", None, 32, (real,))
    conn = IpvsConn("tcp", "192.168.113.102", 40000, "10.10.0.1", 8410, "192.168.113.99", 8080, "TIME_WAIT", 119)
    other = IpvsConn("tcp", "192.168.113.102", 40001, "10.10.0.1", 8410, "192.168.113.99", 8080, "CLOSE", 9)
    seen = {arrival("tcp", "192.168.113.102", 40000, "10.10.0.1", 8410)}  # the packet the walk shows in ds
    (hop,) = ipvs_hops("ds", IpvsRead(IpvsState((svc,), (other, conn)), 0.0023), seen)  # not 40001's
    assert hop.text == (
        "IPVS TCP 10.10.0.1:8410 rr: 192.168.113.102:40000 scheduled to real server 192.168.113.99:8080 (Masq); "
        "its connection TIME_WAIT when read, 2 ms after the probe returned"
    )
    assert hop.fields["read_after_s"] == 0.0023
    assert (hop.fields["real"], hop.fields["forward"], hop.fields["scheduler"]) == (
        {"address": "192.168.113.99", "port": 8080},
        "masq",
        "rr",
    )
    # in the walk: under the director's visit that took the packet in to the VIP
    trace = replace(
        walk(
            ev("client", 1, "out", "192.168.113.102", "10.10.0.1", oif="eth0"),
            ev("ds", 2, "out", "192.168.113.101", "192.168.113.99", oif="eth0"),
            ev("ds", 3, "pre", "192.168.113.102", "10.10.0.1", iif="eth0"),
        ),
        ipvs=(hop,),
    )
    lines = text_lines(trace)
    at = lines.index("  DS (ds)  192.168.113.102 → 10.10.0.1  [prerouting, in eth0]")
    assert lines[at + 1] == f"    ↳ {hop.text}", lines
    assert [h["kind"] for h in to_json(trace)["hops"]] == ["ipvs"]

    # with the DNAT to the real server shown (IPVS with conntrack): right after it
    from netlab.probes.trace import Endpoints, NatStep

    before = Endpoints("192.168.113.102", 40000, "10.10.0.1", 8410)
    after = Endpoints("192.168.113.102", 40000, "192.168.113.99", 8080)
    step = NatStep("ds", 3, "dnat", "original", ("prerouting",), before, after, None)
    dnat = replace(
        walk(
            ev("ds", 1, "pre", "192.168.113.102", "10.10.0.1", iif="eth0"),
            ev("ds", 1, "post", "192.168.113.102", "10.10.0.1", iif="eth0", oif="eth0"),
            ev("ds", 1, "post", "192.168.113.102", "192.168.113.99", iif="eth0", oif="eth0"),
        ),
        ipvs=(hop,),
        nat=(replace(step, seq=2),),
    )
    lines = text_lines(dnat)
    at = next(i for i, line in enumerate(lines) if line.startswith("    NAT (DNAT"))
    assert lines[at + 1] == f"    ↳ {hop.text}" and lines.count(f"    ↳ {hop.text}") == 1, lines
    # IPVS made that translation in its own input hook, not before routing
    from netlab.probes.trace import _by_ipvs

    assert _by_ipvs(step, [hop]).hooks == ("input",)
    assert _by_ipvs(step, []).hooks == ("prerouting",)
    assert _by_ipvs(replace(step, ns="other"), [hop]).hooks == ("prerouting",)


def ethernet(src: str, dst: str, ethertype: int) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + struct.pack(">H", ethertype)


A, C = "02:00:00:00:00:0a", "02:00:00:00:00:0c"


def test_a_bridge_events_link_layer_header_and_arp_frames_traced_for_learning_only() -> None:
    (e,) = decode(message(attr(7, ethernet(A, C, 0x0800)), attr(8, ipv4("10.0.0.1", "10.0.0.3", 1)), family=7), "sw")
    assert (e.family, e.mac_src, e.mac_dst, e.learning) == ("bridge", A, C, False)
    (arp,) = decode(message(attr(7, ethernet(A, "ff:ff:ff:ff:ff:ff", 0x0806)), family=7), "sw")
    assert (arp.mac_dst, arp.src, arp.learning) == ("ff:ff:ff:ff:ff:ff", None, True)
    tagged = b"\x81\x00\x00\x05\x08\x06"  # VLAN 5, then ARP
    (vlan,) = decode(message(attr(7, ethernet(A, C, 0x8100)[:12] + tagged), family=7), "sw")
    assert vlan.learning, vlan
    (inet,) = decode(message(attr(7, ethernet(A, C, 0x0806)), family=1), "sw")
    assert (inet.mac_dst, inet.learning) == (None, False)  # only a bridge family event's header is read
    # an NDP solicitation in the IP hooks (br_netfilter takes a bridge's mark there): learning only
    ip6 = bytes([0x60]) + bytes(5) + bytes([58, 255]) + bytes(32)
    (nd,) = decode(message(attr(8, ip6), attr(9, bytes([135, 0, 0, 0])), family=10), "sw")
    assert (nd.proto, nd.learning) == ("icmpv6", True)
    (echo,) = decode(message(attr(8, ip6), attr(9, bytes([128, 0, 0, 0, 0, 7])), family=10), "sw")
    assert not echo.learning


LINKS = {1: Link("br0", "bridge", None), 2: Link("pa", "veth", "br0"), 3: Link("pb", "veth", "br0")}


def frame(id: int, chain: str, src_mac: str, dst_mac: str, **changes: Any) -> Any:
    return replace(b("sw", id, chain, "10.0.0.1", "10.0.0.3", **changes), mac_src=src_mac, mac_dst=dst_mac)


def test_flooded_or_forwarded_is_the_fdbs_answer_when_the_frame_came_in() -> None:
    """Unknown before the probe, C is learned from C's ARP answer (a learning-only frame);
    the next frame to C finds it; a broadcast floods; the bridge's own MAC goes up."""
    queue = [
        frame(1, "pre", A, C, iif="pa"),  # C unknown: flooded
        frame(2, "switch", A, C, iif="pa", oif="pb"),  # its copy out of pb (another trace id)
        replace(frame(3, "pre", C, A, iif="pb"), learning=True),  # C's ARP answer: the bridge learns C on pb
        frame(4, "pre", A, C, iif="pa"),
        frame(4, "switch", A, C, iif="pa", oif="pb"),
        frame(5, "pre", A, "ff:ff:ff:ff:ff:ff", iif="pa"),
        frame(6, "pre", A, "02:00:00:00:00:01", iif="pa"),
    ]
    before = [FdbEntry(1, 1, "02:00:00:00:00:01", local=True, static=False)]
    found = [e.fdb for e in fdb_lookups(queue, before, LINKS)]
    assert found[:2] == [FdbLookup(C, "unknown")] * 2  # the copy carries its frame's answer
    assert found[3:5] == [FdbLookup(C, "known", "pb", learned=True)] * 2
    assert found[5] == FdbLookup("ff:ff:ff:ff:ff:ff", "broadcast")
    assert found[6] == FdbLookup("02:00:00:00:00:01", "local")
    assert found[0] is not None and found[0].floods and not found[3].floods  # type: ignore[union-attr]


def test_the_fdb_read_before_the_probe_and_a_port_that_does_not_learn() -> None:
    before = [FdbEntry(1, 3, C, local=False, static=True), FdbEntry(1, 2, A, local=False, static=False)]
    no_learning = {**LINKS, 3: Link("pb", "veth", "br0", learning=False)}
    queue = [
        frame(1, "pre", A, C, iif="pa"),  # A again on pa: still the entry read before the probe
        frame(2, "pre", C, "02:00:00:00:00:0b", iif="pb"),  # B unknown; pb learns nothing
        frame(3, "pre", A, "02:00:00:00:00:0b", iif="pa"),
        frame(4, "pre", "02:00:00:00:00:0b", A, iif="pb"),  # B comes in by pb: not learned
        frame(5, "pre", A, "02:00:00:00:00:0b", iif="pa"),
    ]
    found = [e.fdb for e in fdb_lookups(queue, before, no_learning)]
    assert found[0] == FdbLookup(C, "known", "pb")
    assert [f.found for f in found[1:] if f is not None] == ["unknown", "unknown", "known", "unknown"]
    assert found[3] == FdbLookup(A, "known", "pa")  # learned=False: A was in the FDB before


def test_a_flood_out_of_one_port_is_told_as_a_flood() -> None:
    a, c = "10.0.0.1", "10.0.0.3"
    unknown = FdbLookup(C, "unknown")
    events = [
        replace(b("sw", 1, "pre", a, c, iif="pa"), fdb=unknown),
        replace(b("sw", 2, "switch", a, c, iif="pa", oif="pb"), fdb=unknown),
    ]
    (hop,) = [h for h in hops(Trace("a", "icmp", c, None, (), tuple(events), {"sw": "sw"})) if h.kind == "bridge"]
    assert hop.fields["flood"] and hop.fields["out"] == ["pb"], hop
    assert hop.fields["fdb"] == {"mac": C, "found": "unknown", "port": None, "learned": False}, hop
    assert hop.text == (
        "bridge br0 from pa: floods it (a copy out of each port) out pb "
        f"(bridge forward hook; FDB: destination MAC {C} not in its FDB (unknown unicast))"
    ), hop


def test_the_ipvs_hop_is_the_probes_connection_as_read_right_after_the_probe() -> None:
    """Through the fake observer and labs/lvs-nat.yaml: the director's connection table is
    read as soon as the probe returned — before the trace's quiet ends and its tables go,
    by when the fake ages the connection to TIME_WAIT — and the connection named is the one
    keyed by the packet the walk shows in the director, not another of the same client port."""
    from netlab.kernel.fake_observer import FakeNamespace, FakeObserver
    from netlab.load import load_lab
    from netlab.observations import IpvsConn, IpvsRealView, IpvsServiceView, IpvsState
    from netlab.probes.checks import LabContext
    from netlab.probes.trace import run_trace
    from tests.unit.test_check_runner import Sender

    lab = load_lab("labs/lvs-nat.yaml")
    nodes = {node: f"lvs.{node}" for node in lab.nodes}
    cip, vip, rip = "192.168.113.102", "10.10.0.1", "192.168.113.99"
    sport = 40001  # the Sender's first probe
    svc = IpvsServiceView("tcp", 4, vip, 8410, None, "rr", None, 32, (IpvsRealView(rip, 8080, "masq", 1, 1, 0),))
    stale = IpvsConn("tcp", cip, sport, "10.10.0.2", 80, "192.168.113.98", 80, "FIN_WAIT", 60)  # another VIP
    ours = IpvsConn("tcp", cip, sport, vip, 8410, rip, 8080, "ESTABLISHED", 900)

    class Aging(FakeObserver):
        def trace(self, namespaces: Any, flow: Any, send: Any, *, settle: float = 0.05) -> Any:
            found = super().trace(namespaces, flow, send, settle=settle)
            self.namespaces[nodes["ds"]].ipvs = IpvsState((svc,), (stale, replace(ours, state="TIME_WAIT")))
            return found

    fake = Aging({ns: FakeNamespace(links={"eth0"}) for ns in nodes.values()})
    fake.namespaces[nodes["ds"]].ipvs = IpvsState((svc,), (stale, ours))
    c, ds = nodes["client"], nodes["ds"]
    fake.namespaces[c].trace = [
        replace(ev(c, 1, "out", cip, vip, oif="eth0", seq=0), proto="tcp", sport=sport, dport=8410)
    ]
    fake.namespaces[ds].trace = [
        replace(ev(ds, 2, "pre", cip, vip, iif="eth0", seq=1), proto="tcp", sport=sport, dport=8410)
    ]
    trace = run_trace(LabContext(lab, nodes, fake, Sender()), "client", vip, "tcp", 8410)
    (hop,) = trace.ipvs
    assert (hop.fields["connection"], hop.fields["state"]) == (ours.text, "ESTABLISHED"), hop
    assert hop.text.startswith(
        f"IPVS TCP {vip}:8410 rr: {cip}:{sport} scheduled to real server {rip}:8080 (Masq); "
        "its connection ESTABLISHED when read, "
    ), hop.text
    assert hop.text.endswith(" ms after the probe returned"), hop.text
    assert f"    ↳ {hop.text}" in text_lines(trace)
    assert [w for w, ns, _ in fake.calls if ns == ds and w == "ipvs"] == ["ipvs"] * 2  # before and after the probe


def test_each_visit_takes_the_fib_lookup_of_its_packet_in_order() -> None:
    """Two routers with the same way out (eth1) forward the same packet: each takes its own
    lookup, in order; a visit that sent the packet takes an output lookup (from lo, iif 1);
    a visit that delivered it takes none."""
    from netlab.observations import FibLookup
    from netlab.probes.hops import route_hops

    a, s = "10.0.1.2", "10.0.3.2"
    visits = [
        [ev("c", 1, "out", a, s, oif="eth0")],
        [ev("r1", 2, "pre", a, s, iif="eth0"), ev("r1", 2, "post", a, s, iif="eth0", oif="eth1")],
        [ev("r2", 3, "pre", a, s, iif="eth0"), ev("r2", 3, "post", a, s, iif="eth0", oif="eth1")],
        [ev("s", 4, "pre", a, s, iif="eth0"), ev("s", 4, "in", a, s, iif="eth0")],
    ]
    lookups = [
        FibLookup(254, "0.0.0.0", s, 1, 0, "eth0", "10.0.1.1", 0),
        FibLookup(254, a, s, 2, 0, None, None, -11),  # a table without the route: not a decision
        FibLookup(254, a, s, 2, 0, "eth1", "10.0.2.2", 0),
        FibLookup(100, a, s, 2, 0, "eth1", None, 0),
    ]
    found = route_hops(visits, lookups, {"main": 254, "vpn": 100})
    assert sorted(found) == [0, 1, 2], found
    assert found[0].text == "route: table main (254): 10.0.3.2 → dev eth0 via 10.0.1.1"
    assert found[1].text == "route: table main (254): 10.0.3.2 from 10.0.1.2 → dev eth1 via 10.0.2.2"
    assert found[2].text == "route: table vpn (100): 10.0.3.2 from 10.0.1.2 → dev eth1"
    assert found[2].fields == {
        "table": 100,
        "dst": s,
        "src": a,
        "dev": "eth1",
        "via": None,
        "evidence": found[2].fields["evidence"],
    }
    # the sender's lookup is an output one: another's forwarding lookup does not stand in for it
    assert route_hops(visits[:1], [FibLookup(254, "10.0.9.9", s, 2, 0, "eth0", None, 0)]) == {}
    # ... but a tunnel's outer packet is looked up with an iif, from the source it already has;
    # the local table's lookups (what kind an address is: ARP's) are no decisions
    outer = [[ev("n1", 9, "out", "192.168.49.2", "192.168.49.3", oif="eth0")]]
    arp = FibLookup(255, "0.0.0.0", "192.168.49.3", 0, 0, "eth0", None, 0)
    vxlan = FibLookup(254, "192.168.49.2", "192.168.49.3", 3, 0, "eth0", None, 0)
    assert route_hops(outer, [arp, vxlan])[0].fields["table"] == 254
