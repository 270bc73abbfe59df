"""The observers on real labs (root): route lookups, policy rules and the conntrack table
read inside lab namespaces (netlab.kernel.routes, netlab.kernel.conntrack), and packets
captured on lab interfaces (netlab.kernel.capture), each checked against real traffic and
concrete values.

Two labs, one per concern, built once for the module:

    routed:  c 10.1.0.2 ── eth0 r eth1 ── s 10.2.0.2          (fd01::/64, fd02::/64 too)
             r forwards, masquerades out of eth1, DNATs 10.9.0.100:80 to s:8080, sets
             ct mark 0x2a on UDP to port 9999, holds reject routes, two extra tables
             (blue 100 by fwmark 0x1/0xff, red 200 from 10.1.0.0/24 to 192.0.2.0/24) and
             an `unreachable` rule; c and s have no ruleset, so no conntrack.

    overlay: a 192.168.49.2 ── eth0/eth0 ── b 192.168.49.3    (IPv4 only: a quiet link)
             vx0 VXLAN vni 1, dstport 8472 over it: a 10.244.1.1, b 10.244.1.2
             a eth1 ── d 192.168.50.2, a link no probe here crosses
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netlab.kernel import netns
from netlab.kernel.capture import Capture
from netlab.kernel.conntrack import conntrack
from netlab.kernel.routes import route_get, route_get_many, rules
from netlab.observations import CaptureError, CtEntry, CtTuple, Flow, ObserveError, Packet, RouteQuery
from netlab.probes.flow import ProbeResult, probe
from netlab.probes.responder_server import Service
from netlab.probes.responders import start_responders, stop_responders
from tests.kernel.conftest import LabFactory, LabFile, NetlabCli

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.skip("needs root: builds labs of real namespaces", allow_module_level=True)

TIMEOUT = 3.0  # a probe that gets its answer returns at once; this only rides out a lost SYN

NFT = """\
table ip nat {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 10.9.0.100 tcp dport 80 dnat to 10.2.0.2:8080
  }
  chain post {
    type nat hook postrouting priority srcnat;
    oifname "eth1" masquerade
  }
}
table ip6 nat {
  chain post {
    type nat hook postrouting priority srcnat;
    oifname "eth1" masquerade
  }
}
table inet mangle {
  chain pre {
    type filter hook prerouting priority mangle;
    udp dport 9999 ct mark set 0x2a
  }
}
"""


def routed_spec(nft: Path) -> dict[str, Any]:
    quiet = {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0}
    return {
        "requires": ["netns", "veth", "nftables", "conntrack"],
        "tables": {"blue": 100, "red": 200},
        "nodes": {
            "c": {
                "sysctls": quiet,
                "links": {"eth0": {"addresses": ["10.1.0.2/24", "fd01::2/64"]}},
                "routes": [{"to": "default", "via": "10.1.0.1"}, {"to": "default", "via": "fd01::1"}],
            },
            "r": {
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **quiet},
                "links": {
                    "eth0": {"peer": "c:eth0", "addresses": ["10.1.0.1/24", "fd01::1/64"]},
                    "eth1": {"peer": "s:eth0", "addresses": ["10.2.0.1/24", "fd02::1/64"]},
                },
                "routes": [
                    {"to": "203.0.113.0/26", "type": "blackhole"},
                    {"to": "203.0.113.64/26", "type": "unreachable"},
                    {"to": "203.0.113.128/26", "type": "prohibit"},
                    {"to": "fd99:1::/64", "type": "blackhole"},
                    {"to": "fd99:2::/64", "type": "unreachable"},
                    {"to": "fd99:3::/64", "type": "prohibit"},
                    {"to": "198.51.100.0/24", "via": "10.2.0.2"},
                    {"to": "198.51.100.0/24", "via": "10.1.0.2", "table": "blue"},
                    {"to": "default", "via": "10.2.0.2", "table": "red"},
                    {"to": "fd05::/64", "via": "fd02::2", "table": "blue"},
                ],
                "rules": [
                    {"priority": 100, "fwmark": "0x1/0xff", "table": "blue"},
                    {"priority": 200, "from": "10.1.0.0/24", "to": "192.0.2.0/24", "table": "red"},
                    {"priority": 250, "to": "203.0.113.192/26", "action": "unreachable"},
                    {"priority": 300, "iif": "eth0", "to": "fd05::/64", "table": "blue"},
                    {"priority": 310, "fwmark": "0x2", "oif": "eth1", "table": "blue", "family": 6},
                ],
                "exec": [["nft", "-f", str(nft)]],
            },
            "s": {
                "sysctls": quiet,
                "links": {"eth0": {"addresses": ["10.2.0.2/24", "fd02::2/64"]}},
                "routes": [{"to": "default", "via": "10.2.0.1"}, {"to": "default", "via": "fd02::1"}],
            },
        },
    }


OVERLAY: dict[str, Any] = {
    "requires": ["netns", "veth", "vxlan"],
    "nodes": {
        "a": {
            "links": {
                "eth0": {"peer": "b:eth0", "addresses": ["192.168.49.2/24"]},
                "vx0": {
                    "kind": "vxlan",
                    "vni": 1,
                    "port": 8472,
                    "local": "192.168.49.2",
                    "remote": "192.168.49.3",
                    "dev": "eth0",
                    "addresses": ["10.244.1.1/24"],
                },
                "eth1": {"peer": "d:eth0", "addresses": ["192.168.50.1/24"]},
            },
        },
        "b": {
            "links": {
                "eth0": {"addresses": ["192.168.49.3/24"]},
                "vx0": {
                    "kind": "vxlan",
                    "vni": 1,
                    "port": 8472,
                    "local": "192.168.49.3",
                    "remote": "192.168.49.2",
                    "dev": "eth0",
                    "addresses": ["10.244.1.2/24"],
                },
            },
        },
        "d": {"links": {"eth0": {"addresses": ["192.168.50.2/24"]}}},
    },
}


def _up(factory: LabFactory, cli: NetlabCli, spec: dict[str, Any]) -> LabFile:
    lab = factory(spec)
    r = cli("up", lab)
    assert r.rc == 0, f"netlab up failed:\n{r.out}{r.err}"
    return lab


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[LabFile]:
    d = tmp_path_factory.mktemp("inspect-routed")
    nft = d / "r.nft"
    nft.write_text(NFT)
    factory = LabFactory(registry, d)
    try:
        lab = _up(factory, netlab_cli, routed_spec(nft))
        services = [
            Service(lab.ns("s"), "s", "tcp", 8080),
            Service(lab.ns("s"), "s", "udp", 9998),
            Service(lab.ns("s"), "s", "udp", 9999),
        ]
        pid = start_responders(services, log_path=str(d / "responders.log"))
        try:
            yield lab
        finally:
            stop_responders(pid)
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[LabFile]:
    d = tmp_path_factory.mktemp("inspect-overlay")
    factory = LabFactory(registry, d)
    try:
        lab = _up(factory, netlab_cli, OVERLAY)
        pid = start_responders([Service(lab.ns("b"), "b", "tcp", 8080)], log_path=str(d / "responders.log"))
        try:
            yield lab
        finally:
            stop_responders(pid)
    finally:
        factory.cleanup()


def _ok(res: ProbeResult) -> ProbeResult:
    assert res.outcome == "ok", res
    assert res.src is not None and res.sport is not None, res
    return res


# =========================================================================== route_get


def test_unicast_route_via_a_gateway(routed: LabFile) -> None:
    ans = route_get(routed.ns("c"), RouteQuery("10.2.0.2"))
    assert (ans.type, ans.table, ans.dev, ans.via, ans.prefsrc) == ("unicast", 254, "eth0", "10.1.0.1", "10.1.0.2")
    assert (ans.errno, ans.error) == (None, None)
    assert ans.text == "10.2.0.2 via 10.1.0.1 dev eth0 table main src 10.1.0.2"


def test_connected_route_and_broadcast(routed: LabFile) -> None:
    ans = route_get(routed.ns("r"), RouteQuery("10.2.0.2"))
    assert (ans.type, ans.table, ans.dev, ans.via, ans.prefsrc) == ("unicast", 254, "eth1", None, "10.2.0.1")
    brd = route_get(routed.ns("r"), RouteQuery("10.2.0.255"))
    assert (brd.type, brd.table, brd.dev) == ("broadcast", 255, "eth1")


def test_local_address(routed: LabFile) -> None:
    ans = route_get(routed.ns("r"), RouteQuery("10.1.0.1"))
    assert (ans.type, ans.table, ans.dev, ans.via, ans.prefsrc) == ("local", 255, "lo", None, "10.1.0.1")
    assert ans.text == "local 10.1.0.1 dev lo table local src 10.1.0.1"


def test_fwmark_rule_picks_the_custom_table(routed: LabFile) -> None:
    ns = routed.ns("r")
    marked = route_get(ns, RouteQuery("198.51.100.7", fwmark=0x1))
    assert (marked.type, marked.table, marked.dev, marked.via) == ("unicast", 100, "eth0", "10.1.0.2")
    assert marked.text == "198.51.100.7 via 10.1.0.2 dev eth0 table 100 src 10.1.0.1 mark 0x1"
    # The rule's mask is 0xff: 0x101 matches too, 0x2 does not.
    assert route_get(ns, RouteQuery("198.51.100.7", fwmark=0x101)).table == 100
    for q in (RouteQuery("198.51.100.7"), RouteQuery("198.51.100.7", fwmark=0x2)):
        plain = route_get(ns, q)
        assert (plain.type, plain.table, plain.dev, plain.via) == ("unicast", 254, "eth1", "10.2.0.2"), q


def test_from_rule_selects_by_source(routed: LabFile) -> None:
    ns = routed.ns("r")
    # Forwarded from c (input lookup) and sent by r itself from its 10.1.0.1 (output).
    for q in (RouteQuery("192.0.2.7", src="10.1.0.2", iif="eth0"), RouteQuery("192.0.2.7", src="10.1.0.1")):
        ans = route_get(ns, q)
        assert (ans.type, ans.table, ans.dev, ans.via) == ("unicast", 200, "eth1", "10.2.0.2"), q
    assert (
        route_get(ns, RouteQuery("192.0.2.7", src="10.1.0.2", iif="eth0")).text
        == "192.0.2.7 from 10.1.0.2 via 10.2.0.2 dev eth1 table 200 iif eth0"
    )
    # Any other source: main, which has no route there.
    other = route_get(ns, RouteQuery("192.0.2.7", src="10.2.0.1"))
    assert (other.type, other.table, other.errno) == ("none", None, errno.ENETUNREACH)


@pytest.mark.parametrize(
    "dst,type_,err",
    [
        ("203.0.113.1", "blackhole", errno.EINVAL),
        ("203.0.113.65", "unreachable", errno.EHOSTUNREACH),
        ("203.0.113.129", "prohibit", errno.EACCES),
        ("fd99:1::1", "blackhole", errno.EINVAL),
        ("fd99:2::1", "unreachable", errno.EHOSTUNREACH),
        ("fd99:3::1", "prohibit", errno.EACCES),
    ],
)
def test_reject_routes_are_answers(routed: LabFile, dst: str, type_: str, err: int) -> None:
    ans = route_get(routed.ns("r"), RouteQuery(dst))
    assert (ans.type, ans.errno, ans.table, ans.dev, ans.via) == (type_, err, None, None, None)
    assert ans.error is not None and ans.error.startswith(os.strerror(err))
    assert ans.text == f"error: {os.strerror(err)} ({type_} route)"


def test_unreachable_rule_fails_like_no_route(routed: LabFile) -> None:
    # An `unreachable` *rule* fails the lookup with ENETUNREACH ("no route"), unlike the
    # route type (EHOSTUNREACH); route_get finds the rule that did it.
    ans = route_get(routed.ns("r"), RouteQuery("203.0.113.200"))
    assert (ans.type, ans.errno, ans.table) == ("unreachable", errno.ENETUNREACH, None)
    assert ans.text == "error: Network is unreachable (the rule `250: from all to 203.0.113.192/26 unreachable`)"


@pytest.mark.parametrize("dst", ["8.8.8.8", "2001:db8::1"])
def test_no_route_at_all(routed: LabFile, dst: str) -> None:
    ans = route_get(routed.ns("r"), RouteQuery(dst))  # r has no default route
    assert (ans.type, ans.errno, ans.table) == ("none", errno.ENETUNREACH, None)
    assert ans.text == "error: Network is unreachable (no route)"


def test_input_lookup_on_a_forwarding_node(routed: LabFile) -> None:
    ans = route_get(routed.ns("r"), RouteQuery("10.2.0.2", src="10.1.0.2", iif="eth0", ipproto="tcp", dport=8080))
    assert (ans.type, ans.table, ans.dev, ans.via) == ("unicast", 254, "eth1", None)
    assert ans.text == "10.2.0.2 from 10.1.0.2 dev eth1 table main iif eth0 ipproto tcp dport 8080"
    # Arriving on eth0 for one of r's own addresses: delivered locally.
    local = route_get(routed.ns("r"), RouteQuery("10.2.0.1", src="10.1.0.2", iif="eth0"))
    assert (local.type, local.table, local.dev) == ("local", 255, "lo")


def test_input_lookup_on_a_node_that_does_not_forward(routed: LabFile) -> None:
    # s has a default route, but does not forward: the kernel answers EHOSTUNREACH.
    ans = route_get(routed.ns("s"), RouteQuery("10.1.0.2", src="10.2.0.9", iif="eth0"))
    assert (ans.type, ans.errno) == ("unreachable", errno.EHOSTUNREACH)
    assert "forwarding is off on eth0 (net.ipv4.conf.eth0.forwarding = 0)" in ans.text


def test_martian_source_on_input_reads_as_einval(routed: LabFile) -> None:
    # A packet arriving with one of r's own addresses as source is a martian: EINVAL,
    # the same errno a blackhole route gives, so the text says both.
    ans = route_get(routed.ns("r"), RouteQuery("10.2.0.2", src="10.2.0.1", iif="eth0"))
    assert (ans.type, ans.errno) == ("blackhole", errno.EINVAL)
    assert "martian" in ans.text


def test_oif_query(routed: LabFile) -> None:
    ans = route_get(routed.ns("r"), RouteQuery("10.1.0.77", oif="eth0"))
    assert (ans.type, ans.dev, ans.prefsrc, ans.table) == ("unicast", "eth0", "10.1.0.1", 254)


def test_ipv6(routed: LabFile) -> None:
    c, r = routed.ns("c"), routed.ns("r")
    ans = route_get(c, RouteQuery("fd02::2"))
    assert (ans.type, ans.table, ans.dev, ans.via, ans.prefsrc) == ("unicast", 254, "eth0", "fd01::1", "fd01::2")
    local = route_get(r, RouteQuery("fd01::1"))
    assert (local.type, local.table, local.dev) == ("local", 255, "lo")
    # The iif rule (300) sends fd05::/64 arriving on eth0 to table blue; r itself uses main.
    fwd = route_get(r, RouteQuery("fd05::1", src="fd01::2", iif="eth0"))
    assert (fwd.type, fwd.table, fwd.dev, fwd.via) == ("unicast", 100, "eth1", "fd02::2")
    assert route_get(r, RouteQuery("fd05::1")).type == "none"


def test_many_queries_at_once_answer_like_one_at_a_time(routed: LabFile) -> None:
    ns = routed.ns("r")
    queries = [
        RouteQuery("10.2.0.2"),
        RouteQuery("203.0.113.1"),
        RouteQuery("198.51.100.7", fwmark=1),
        RouteQuery("fd02::2"),
        RouteQuery("8.8.8.8"),
    ] * 20
    many = route_get_many(ns, queries)
    assert many == [route_get(ns, q) for q in queries[:5]] * 20


def test_what_is_not_an_answer(routed: LabFile) -> None:
    with pytest.raises(ObserveError, match="no interface eth9"):
        route_get(routed.ns("r"), RouteQuery("10.2.0.2", src="10.1.0.2", iif="eth9"))
    with pytest.raises(ValueError, match="needs src"):
        route_get(routed.ns("r"), RouteQuery("10.2.0.2", iif="eth0"))
    with pytest.raises(ValueError, match="tcp, udp, icmp for IPv4"):
        route_get(routed.ns("r"), RouteQuery("10.2.0.2", ipproto="sctp"))


# =========================================================================== rules


def test_rules_of_both_families(routed: LabFile) -> None:
    got = rules(routed.ns("r"))
    v4 = [(x.priority, x.src, x.dst, x.iif, x.oif, x.fwmark, x.fwmask, x.table, x.action) for x in got if x.family == 4]
    assert v4 == [
        (0, None, None, None, None, None, None, 255, "lookup"),
        (100, None, None, None, None, 0x1, 0xFF, 100, "lookup"),
        (200, "10.1.0.0/24", "192.0.2.0/24", None, None, None, None, 200, "lookup"),
        (250, None, "203.0.113.192/26", None, None, None, None, None, "unreachable"),
        (32766, None, None, None, None, None, None, 254, "lookup"),
        (32767, None, None, None, None, None, None, 253, "lookup"),
    ]
    v6 = [(x.priority, x.dst, x.iif, x.oif, x.fwmark, x.fwmask, x.table) for x in got if x.family == 6]
    # IPv6 has no 32767 "default" rule: the kernel makes only local and main for it.
    assert v6 == [
        (0, None, None, None, None, None, 255),
        (300, "fd05::/64", "eth0", None, None, None, 100),
        (310, None, None, "eth1", 0x2, 0xFFFFFFFF, 100),
        (32766, None, None, None, None, None, 254),
    ]
    assert [x.text for x in got] == [
        "0: from all lookup local",
        "100: from all fwmark 0x1/0xff lookup 100",
        "200: from 10.1.0.0/24 to 192.0.2.0/24 lookup 200",
        "250: from all to 203.0.113.192/26 unreachable",
        "32766: from all lookup main",
        "32767: from all lookup default",
        "0: from all lookup local",
        "300: from all to fd05::/64 iif eth0 lookup 100",
        "310: from all fwmark 0x2 oif eth1 lookup 100",
        "32766: from all lookup main",
    ]


def test_default_rules_of_a_plain_node(routed: LabFile) -> None:
    got = rules(routed.ns("c"))
    assert [(x.family, x.priority, x.table) for x in got] == [
        (4, 0, 255),
        (4, 32766, 254),
        (4, 32767, 253),
        (6, 0, 255),
        (6, 32766, 254),
    ]


# =========================================================================== conntrack


def _entry(ns: str, proto: str, src: str, sport: int, family: int = 4) -> CtEntry:
    """The one entry of ns for the flow that left src:sport."""
    found = [
        e
        for e in conntrack(ns)
        if e.family == family and e.orig.proto == proto and e.orig.src == src and e.orig.sport == sport
    ]
    assert len(found) == 1, f"{proto} {src}:{sport}: {[e.text for e in conntrack(ns)]}"
    return found[0]


def test_tcp_through_masquerade(routed: LabFile) -> None:
    res = _ok(probe(routed.ns("c"), "tcp", "10.2.0.2", 8080, timeout=TIMEOUT))
    assert res.server_saw == "10.2.0.1"
    e = _entry(routed.ns("r"), "tcp", "10.1.0.2", res.sport or 0)
    assert e.orig == CtTuple("10.1.0.2", "10.2.0.2", "tcp", res.sport, 8080)
    assert e.reply == CtTuple("10.2.0.2", "10.2.0.1", "tcp", 8080, res.server_saw_port)
    assert e.snat and not e.dnat
    assert {"SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT_DONE"} <= e.status
    # The probe has closed its end; how far the FIN exchange got by now varies.
    assert e.state in ("ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"), e.text
    assert e.timeout is not None and e.timeout > 0
    assert (e.mark, e.zone, e.family) == (0, 0, 4)
    assert e.text.startswith(
        f"ipv4 tcp 6 {e.timeout} {e.state} src=10.1.0.2 dst=10.2.0.2 sport={res.sport} "
        f"dport=8080 src=10.2.0.2 dst=10.2.0.1 sport=8080 dport={res.server_saw_port} "
    )


def test_udp_through_masquerade(routed: LabFile) -> None:
    res = _ok(probe(routed.ns("c"), "udp", "10.2.0.2", 9998, timeout=TIMEOUT))
    e = _entry(routed.ns("r"), "udp", "10.1.0.2", res.sport or 0)
    assert e.orig == CtTuple("10.1.0.2", "10.2.0.2", "udp", res.sport, 9998)
    assert e.reply == CtTuple("10.2.0.2", "10.2.0.1", "udp", 9998, res.server_saw_port)
    assert e.snat and not e.dnat and "SEEN_REPLY" in e.status
    assert (e.state, e.mark) == (None, 0)


def test_dnat_to_the_real_target(routed: LabFile) -> None:
    res = _ok(probe(routed.ns("c"), "tcp", "10.9.0.100", 80, timeout=TIMEOUT))
    assert res.served_by == "s"
    e = _entry(routed.ns("r"), "tcp", "10.1.0.2", res.sport or 0)
    assert e.orig == CtTuple("10.1.0.2", "10.9.0.100", "tcp", res.sport, 80)
    assert (e.reply.src, e.reply.sport) == ("10.2.0.2", 8080)  # the real target
    assert (e.reply.dst, e.reply.dport) == ("10.2.0.1", res.server_saw_port)  # and masqueraded out of eth1
    assert e.dnat and e.snat and "DST_NAT" in e.status
    assert e.text.endswith("[SNAT] [DNAT]")


def test_icmp_echo_id(routed: LabFile) -> None:
    res = _ok(probe(routed.ns("c"), "icmp", "10.2.0.2", timeout=TIMEOUT))
    e = _entry(routed.ns("r"), "icmp", "10.1.0.2", res.sport or 0)
    assert e.orig == CtTuple("10.1.0.2", "10.2.0.2", "icmp", res.sport, None)
    assert (e.reply.src, e.reply.dst, e.reply.dport) == ("10.2.0.2", "10.2.0.1", None)
    assert e.snat and "SEEN_REPLY" in e.status
    assert f"src=10.1.0.2 dst=10.2.0.2 type=8 code=0 id={res.sport} " in e.text


def test_ipv6_masquerade(routed: LabFile) -> None:
    res = _ok(probe(routed.ns("c"), "tcp", "fd02::2", 8080, timeout=TIMEOUT))
    assert res.server_saw == "fd02::1"
    e = _entry(routed.ns("r"), "tcp", "fd01::2", res.sport or 0, family=6)
    assert e.orig == CtTuple("fd01::2", "fd02::2", "tcp", res.sport, 8080)
    assert e.reply == CtTuple("fd02::2", "fd02::1", "tcp", 8080, res.server_saw_port)
    assert e.snat and e.text.startswith("ipv6 tcp 6 ")


def test_ct_mark_set_by_the_ruleset(routed: LabFile) -> None:
    res = _ok(probe(routed.ns("c"), "udp", "10.2.0.2", 9999, timeout=TIMEOUT))
    e = _entry(routed.ns("r"), "udp", "10.1.0.2", res.sport or 0)
    assert e.mark == 0x2A and "mark=42" in e.text


def test_no_conntrack_without_a_ruleset(routed: LabFile) -> None:
    # Traffic did cross c and s (the tests above), but nothing there asked for conntrack.
    _ok(probe(routed.ns("c"), "tcp", "10.2.0.2", 8080, timeout=TIMEOUT))
    assert conntrack(routed.ns("c")) == []
    assert conntrack(routed.ns("s")) == []


def _udp_burst(ns: str, dst: str, port: int, count: int) -> set[int]:
    """count datagrams from ns to dst:port, each from its own source port."""

    def send() -> set[int]:
        with netns.entered(ns):
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
            try:
                for s in socks:
                    s.sendto(b"x", (dst, port))
                return {s.getsockname()[1] for s in socks}
            finally:
                for s in socks:
                    s.close()

    return netns.in_thread(send)


def test_a_table_of_a_thousand_entries(routed: LabFile) -> None:
    """A dump spans many netlink messages: every entry comes back, and quickly."""
    sports = _udp_burst(routed.ns("c"), "10.2.0.2", 7, 1000)  # nobody listens: [UNREPLIED]
    t0 = time.monotonic()
    table = conntrack(routed.ns("r"))
    took = time.monotonic() - t0
    burst = {e.orig.sport for e in table if e.orig.proto == "udp" and e.orig.dport == 7}
    assert sports <= burst
    assert took < 1.0, f"dumping {len(table)} entries took {took:.3f} s"
    print(f"\nconntrack(): {len(table)} entries in {took * 1000:.1f} ms")


# =========================================================================== capture


def _matching(pkts: list[Packet], direction: str, flow: Flow) -> list[Packet]:
    return [p for p in pkts if p.direction == direction and p.flow == flow]


def test_capture_tcp_probe_both_directions(overlay: LabFile) -> None:
    with Capture(overlay.ns("a"), "eth0") as at_a, Capture(overlay.ns("b"), "eth0") as at_b:
        res = _ok(probe(overlay.ns("a"), "tcp", "192.168.49.3", 8080, timeout=TIMEOUT))
        seen_a, seen_b = at_a.packets(), at_b.packets()
    forward = Flow(res.src or "", res.dst, "tcp", res.sport, res.dport)
    back = Flow(res.dst, res.src or "", "tcp", res.dport, res.sport)
    # a sends the client's packets and receives the server's; b the other way round.
    assert len(_matching(seen_a, "out", forward)) >= 3 and len(_matching(seen_a, "in", back)) >= 2, seen_a
    assert len(_matching(seen_b, "in", forward)) >= 3 and len(_matching(seen_b, "out", back)) >= 2, seen_b
    first = _matching(seen_a, "out", forward)[0]
    assert (first.ifname, first.vni, first.inner) == ("eth0", None, None)
    assert first.text == f"out 192.168.49.2.{res.sport} > 192.168.49.3.8080 tcp"
    assert first.length >= 54  # Ethernet + IPv4 + TCP headers at least
    assert {p.flow for p in seen_a} <= {forward, back}, [p.text for p in seen_a]


def test_capture_returns_only_new_packets(overlay: LabFile) -> None:
    with Capture(overlay.ns("a"), "eth0") as cap:
        one = _ok(probe(overlay.ns("a"), "icmp", "192.168.49.3", timeout=TIMEOUT))
        first = cap.packets()
        two = _ok(probe(overlay.ns("a"), "icmp", "192.168.49.3", timeout=TIMEOUT))
        second = cap.packets()
        assert cap.drops == 0
    assert {p.flow.sport for p in first if p.flow.proto == "icmp"} == {one.sport}
    assert {p.flow.sport for p in second if p.flow.proto == "icmp"} == {two.sport}


def test_capture_vxlan_ping_on_the_underlay(overlay: LabFile) -> None:
    with Capture(overlay.ns("a"), "eth0") as cap:
        res = _ok(probe(overlay.ns("a"), "icmp", "10.244.1.2", timeout=TIMEOUT))
        seen = cap.packets()
    request = Flow("10.244.1.1", "10.244.1.2", "icmp", res.sport, None, 8, 0)
    reply = Flow("10.244.1.2", "10.244.1.1", "icmp", res.sport, None, 0, 0)
    out = _matching(seen, "out", request)
    back = _matching(seen, "in", reply)
    assert len(out) == 1 and len(back) == 1, [p.text for p in seen]
    for p, src, dst in ((out[0], "192.168.49.2", "192.168.49.3"), (back[0], "192.168.49.3", "192.168.49.2")):
        assert (p.outer.proto, p.outer.src, p.outer.dst, p.outer.dport) == ("udp", src, dst, 8472)
        assert p.vni == 1
    assert out[0].text == (
        f"out 192.168.49.2.{out[0].outer.sport} > 192.168.49.3.8472: VXLAN vni 1: "
        f"10.244.1.1 > 10.244.1.2 icmp echo request (type 8 code 0) id {res.sport}"
    )
    # Everything on the underlay during the ping was VXLAN (ARP over the overlay included).
    assert all(p.vni == 1 for p in seen), [p.text for p in seen]


def test_capture_vxlan_tcp_inner_flow(overlay: LabFile) -> None:
    with Capture(overlay.ns("b"), "eth0") as cap:
        res = _ok(probe(overlay.ns("a"), "tcp", "10.244.1.2", 8080, timeout=TIMEOUT))
        seen = cap.packets()
    assert res.served_by == "b"
    forward = Flow(res.src or "", "10.244.1.2", "tcp", res.sport, 8080)
    arrived = _matching(seen, "in", forward)
    assert len(arrived) >= 3, [p.text for p in seen]
    assert all(p.vni == 1 and p.outer.dport == 8472 and p.inner == forward for p in arrived)
    assert _matching(seen, "out", Flow("10.244.1.2", res.src or "", "tcp", 8080, res.sport))


def test_nothing_on_an_interface_the_probe_did_not_cross(overlay: LabFile) -> None:
    with Capture(overlay.ns("a"), "eth1") as side, Capture(overlay.ns("d"), "eth0") as far:
        _ok(probe(overlay.ns("a"), "tcp", "192.168.49.3", 8080, timeout=TIMEOUT))
        _ok(probe(overlay.ns("a"), "icmp", "10.244.1.2", timeout=TIMEOUT))
        assert side.packets() == [] and far.packets() == []
        assert side.drops == far.drops == 0


def test_capture_on_both_sides_of_the_masquerade(routed: LabFile) -> None:
    with Capture(routed.ns("c"), "eth0") as inside, Capture(routed.ns("r"), "eth1") as outside:
        res = _ok(probe(routed.ns("c"), "tcp", "fd02::2", 8080, timeout=TIMEOUT))
        seen_in, seen_out = inside.packets(), outside.packets()
    assert _matching(seen_in, "out", Flow("fd01::2", "fd02::2", "tcp", res.sport, 8080))
    assert _matching(seen_in, "in", Flow("fd02::2", "fd01::2", "tcp", 8080, res.sport))
    # Past the router the source is r's own address, as the server saw it.
    assert _matching(seen_out, "out", Flow("fd02::1", "fd02::2", "tcp", res.server_saw_port, 8080))
    assert not [p for p in seen_out if p.flow.src == "fd01::2"]


def test_capture_errors(overlay: LabFile) -> None:
    with pytest.raises(CaptureError) as info:
        Capture(overlay.ns("a"), "eth9").open()
    assert (info.value.ns, info.value.ifname) == (overlay.ns("a"), "eth9")
    assert info.value.reason == f"no interface eth9 in {overlay.ns('a')}"
    # An interface of another namespace is not one of this one's.
    with pytest.raises(CaptureError, match="no interface vx0"):
        Capture(overlay.ns("d"), "vx0").open()


# =========================================================================== gone


def test_after_down_everything_is_an_error(lab_file: Any, netlab_cli: NetlabCli, kn: Any) -> None:
    lab = lab_file(
        {
            "nodes": {
                "x": {"links": {"eth0": {"peer": "y:eth0", "addresses": ["10.5.0.1/24"]}}},
                "y": {"links": {"eth0": {"addresses": ["10.5.0.2/24"]}}},
            }
        }
    )
    assert netlab_cli("up", lab).rc == 0
    ns = lab.ns("x")
    assert route_get(ns, RouteQuery("10.5.0.2")).dev == "eth0"
    cap = Capture(ns, "eth0").open()
    cap.close()  # an open capture would keep the namespace alive past `down`
    assert netlab_cli("down", lab.name).rc == 0
    assert kn.namespaces_of(lab.name) == []
    calls: list[Callable[[], object]] = [
        lambda: route_get(ns, RouteQuery("10.5.0.2")),
        lambda: rules(ns),
        lambda: conntrack(ns),
    ]
    for call in calls:
        with pytest.raises(ObserveError, match=f"namespace {ns} does not exist"):
            call()
    with pytest.raises(CaptureError, match="does not exist"):
        Capture(ns, "eth0").open()
