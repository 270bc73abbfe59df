"""Probes that set their DS field (`tos`, `dscp`), a mark and a payload, on a real kernel
(root): rules that select by them steer the probe to another server, and the payload is
proved to arrive intact — through NAT too — or told where it changed.

    client eth0 10.1.0.2 ── router ── eth2 10.2.0.1 ── server1 10.2.0.11 ─┐ both hold the
           fd01::2          │         fd02::1          fd02::11           │ VIP 10.99.0.1
           │                └─────── eth3 10.4.0.1 ── server2 10.4.0.12 ──┤
           └── eth1 10.3.0.2 ─────────────────────────── eth1 10.3.0.12 ──┘ (a direct link)

The router sends the VIP to server1 by its main table and to server2 by table 100, which
its rules choose for `dscp 46` and for `tos 0x10`. The client's own rule sends `fwmark 0x7`
to its table 100, which reaches the VIP over the direct link to server2. The router also
DNATs 10.96.0.10 (and fd96::10) to server1 and masquerades it fully-random (ports and
ICMP ids rewritten), and overwrites byte 513 of the payload of UDP port 54 and TCP port
81 toward server1 (nftables raw payload mangling), so the receipt must tell the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel.conftest import NetlabCli, lab_up
from tests.kernel.test_check import CheckLab, why

VIP = "10.99.0.1"
ROUTER_NFT = """\
table inet nat {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 10.96.0.10 dnat ip to 10.2.0.11
    ip6 daddr fd96::10 dnat ip6 to fd02::11
  }
  chain post {
    type nat hook postrouting priority srcnat;
    ip daddr 10.2.0.11 masquerade fully-random
    ip6 daddr fd02::11 masquerade fully-random
  }
}
table inet mangle {
  chain forward {
    type filter hook forward priority 0;
    udp dport 54 @ih,4096,8 set 0xff
    tcp dport 81 @ih,4096,8 set 0xff
  }
}
"""
ICMP_LIMITS = {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0}
SERVE = ["tcp/80", "tcp/81", "udp/53", "udp/54", "http/8080"]


def fields_lab() -> dict[str, Any]:
    return {
        "tables": {"ef": 100},
        "nodes": {
            "client": {
                "sysctls": ICMP_LIMITS,
                "links": {
                    "eth0": {"peer": "router:eth1", "addresses": ["10.1.0.2/24", "fd01::2/64"]},
                    "eth1": {"peer": "server2:eth1", "addresses": ["10.3.0.2/24"]},
                },
                "routes": [
                    {"to": "default", "via": "10.1.0.1"},
                    {"to": "default", "via": "fd01::1"},
                    {"to": f"{VIP}/32", "via": "10.3.0.12", "table": "ef"},
                ],
                "rules": [{"priority": 100, "fwmark": "0x7", "table": "ef"}],
            },
            "router": {
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **ICMP_LIMITS},
                "links": {
                    "eth1": {"addresses": ["10.1.0.1/24", "fd01::1/64"]},
                    "eth2": {"peer": "server1:eth0", "addresses": ["10.2.0.1/24", "fd02::1/64"]},
                    "eth3": {"peer": "server2:eth0", "addresses": ["10.4.0.1/24"]},
                },
                "routes": [
                    {"to": f"{VIP}/32", "via": "10.2.0.11"},
                    {"to": f"{VIP}/32", "via": "10.4.0.12", "table": "ef"},
                ],
                "rules": [
                    {"priority": 100, "dscp": 46, "table": "ef"},
                    {"priority": 101, "tos": "0x10", "table": "ef"},
                ],
                "nftables": ROUTER_NFT,
            },
            "server1": {
                "serve": SERVE,
                "sysctls": ICMP_LIMITS,
                "links": {"eth0": {"addresses": ["10.2.0.11/24", "fd02::11/64", f"{VIP}/32"]}},
                "routes": [{"to": "default", "via": "10.2.0.1"}, {"to": "default", "via": "fd02::1"}],
            },
            "server2": {
                "serve": SERVE,
                "sysctls": ICMP_LIMITS,
                "links": {
                    "eth0": {"addresses": ["10.4.0.12/24", f"{VIP}/32"]},
                    "eth1": {"addresses": ["10.3.0.12/24"]},
                },
                "routes": [{"to": "default", "via": "10.4.0.1"}],
            },
        },
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[CheckLab]:
    spec = fields_lab()
    with lab_up(registry, tmp_path_factory.mktemp("probefields"), spec) as built:
        yield CheckLab(built, spec, netlab_cli)


def _probe(name: str, expect: dict[str, Any], **probe: Any) -> dict[str, Any]:
    return {"name": name, "probe": {"from": "client", **probe}, "expect": expect}


def _all_pass(lab: CheckLab, checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    verdicts = lab.verdicts(checks)
    bad = {name: why(v) for name, v in verdicts.items() if not v["passed"]}
    assert not bad, bad
    return verdicts


@pytest.mark.parametrize("proto,port", [("tcp", 80), ("udp", 53), ("http", 8080), ("icmp", None)])
def test_rules_steer_by_ds_field_and_mark(lab: CheckLab, proto: str, port: int | None) -> None:
    """dscp 46 and tos 0x10 take the router's table 100 (server2), so does the client's own
    fwmark 0x7 rule (over the direct link); unmarked, plain traffic goes to server1."""
    where = {"to": VIP, "proto": proto, **({"port": port} if port else {})}

    def served(node: str) -> dict[str, Any]:
        return {"served_by": node} if proto != "icmp" else {}

    checks = [
        _probe(f"plain {proto}", served("server1"), **where),
        _probe(f"dscp 46 {proto}", served("server2"), dscp=46, **where),
        _probe(f"tos 0xb8 {proto}", served("server2"), tos="0xb8", **where),
        _probe(f"tos 0x10 {proto}", served("server2"), tos="0x10", **where),
        _probe(f"dscp 8 {proto}", served("server1"), dscp=8, **where),
        _probe(
            f"mark 7 {proto}",
            served("server2") | ({"server_saw": "10.3.0.2"} if proto != "icmp" else {}),
            mark=7,
            **where,
        ),
        _probe(f"mark 8 {proto}", served("server1"), mark="0x8", **where),
    ]
    verdicts = _all_pass(lab, checks)
    assert verdicts[f"dscp 46 {proto}"]["probes"][0]["tos"] == 0xB8
    assert verdicts[f"mark 7 {proto}"]["probes"][0]["mark"] == 7
    assert f"{VIP}{f':{port}' if port else ''} (tos 0xb8): ok" in verdicts[f"dscp 46 {proto}"]["summary"]


def test_icmp_steering_is_seen_in_the_route_check_and_the_capture(lab: CheckLab) -> None:
    """An echo names no server: the route check and a capture on the router's eth3 prove
    the EF-marked echo went to table 100's next hop."""
    checks = [
        {
            "name": "EF takes table 100",
            "route": {"on": "router", "get": VIP, "from": "10.1.0.2", "iif": "eth1", "dscp": 46},
            "expect": {"table": "ef", "dev": "eth3"},
        },
        {
            "name": "EF echo out of eth3",
            "probe": {"from": "client", "to": VIP, "dscp": 46},
            "capture": {"on": "router:eth3", "expect": {"dst": VIP}},
        },
        {
            "name": "plain echo not out of eth3",
            "probe": {"from": "client", "to": VIP},
            "capture": {"on": "router:eth3", "expect": {"seen": False}},
        },
    ]
    _all_pass(lab, checks)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("proto,port", [("tcp", 80), ("udp", 53), ("http", 8080), ("icmp", None)])
def test_a_payload_arrives_intact_through_nat(lab: CheckLab, proto: str, port: int | None, family: int) -> None:
    """DNAT to server1 and a fully-random masquerade on the way: every form of payload
    arrives as sent, and the responder (the echo reply) says so."""
    vip = "10.96.0.10" if family == 4 else "fd96::10"
    where = {"to": vip, "proto": proto, **({"port": port} if port else {})}
    served = {"served_by": "server1", "server_saw": {"not": "client"}} if proto != "icmp" else {}
    checks = [
        _probe(f"{proto} 1400 bytes", served, payload=1400, **where),
        _probe(f"{proto} text", served, payload="héllo, netlab", **where),
        _probe(f"{proto} hex", served, payload="0x00ff00ff0d0a", **where),
        _probe(f"{proto} 65000 bytes", served, payload=65000, timeout=3, **where),
    ]
    verdicts = _all_pass(lab, checks)
    big = verdicts[f"{proto} 1400 bytes"]
    assert big["probes"][0]["sent"] == 1400 and big["probes"][0]["intact"] is True, big["probes"][0]
    assert "; payload intact" in big["summary"], big["summary"]
    carried = (
        "the echo reply carried the 1400 bytes as sent"
        if proto == "icmp"
        else "server1 received the 1400 bytes as sent"
    )
    assert big["probes"][0]["delivery"] == carried


@pytest.mark.parametrize("proto,port", [("udp", 54), ("tcp", 81)])
def test_a_changed_payload_is_told_where_it_differs(lab: CheckLab, proto: str, port: int) -> None:
    """The router overwrites byte 513: with 1400 bytes (64 CRC blocks of 22) the receipt
    places it in bytes 507-528; with 600 (blocks of 10) in 511-520."""
    checks = [
        _probe("1400", {}, to=f"10.2.0.11:{port}", proto=proto, payload=1400),
        _probe("600", {}, to=f"10.2.0.11:{port}", proto=proto, payload=600),
        _probe("short", {}, to=f"10.2.0.11:{port}", proto=proto, payload=64),
    ]
    verdicts = lab.verdicts(checks)
    assert not verdicts["1400"]["passed"] and not verdicts["600"]["passed"]
    assert verdicts["1400"]["reasons"] == [
        "expected the payload to arrive as sent; server1 received 1400 bytes that differ from what was sent in bytes 507-528"
    ]
    assert verdicts["600"]["reasons"] == [
        "expected the payload to arrive as sent; server1 received 600 bytes that differ from what was sent in bytes 511-520"
    ]
    assert verdicts["1400"]["probes"][0]["intact"] is False
    assert verdicts["short"]["passed"], why(verdicts["short"])  # byte 513 is past its end
