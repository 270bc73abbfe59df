"""Negative and alternative expectations and counter expectations against a real kernel:
every form of an expected value (one, a list, {not: …}) passes and fails for the right
reason, in words; counters (nftables rule counters, named counters, iptables-nft rules
known by their comment) count what the probes made them count.

The lab is test_check.py's (client ── router ── server1/server2; the router DNATs
10.96.0.10:80 to both servers, masquerades client traffic to port 9090, and a rule sends
fwmark 0x7 from 10.1.0.0/24 to table 100 `special`), with counters added to the router's
ruleset and an iptables dump on server1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel.conftest import LabFactory, NetlabCli
from tests.kernel.test_check import NFT, CheckLab, base_lab, passed, why

COUNTED = NFT.replace(
    "    tcp dport 7070 drop\n",
    "    tcp dport 7070 drop\n"
    '    ip daddr 10.2.0.0/24 tcp dport 8080 counter comment "to the servers"\n'
    "    tcp dport 8080 counter name svc-hits\n"
    '    icmp type echo-request counter comment "pings"\n',
).replace("table ip filter {\n", "table ip filter {\n  counter svc-hits {\n  }\n")
SERVER1_DUMP = """\
*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 8080 -m comment --comment "web in" -j ACCEPT
COMMIT
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[CheckLab]:
    d = tmp_path_factory.mktemp("expectlab")
    nft = d / "router.nft"
    nft.write_text(COUNTED)
    factory = LabFactory(registry, d)
    spec = base_lab(nft)
    spec["nodes"]["server1"]["iptables"] = SERVER1_DUMP
    try:
        built = factory(spec)
        r = netlab_cli("up", built)
        assert r.rc == 0, r.err
        yield CheckLab(built, spec, netlab_cli)
    finally:
        factory.cleanup()


def test_route_not_and_alternatives(lab: CheckLab) -> None:
    marked = {"on": "router", "get": "10.99.0.5", "from": "10.1.0.2", "iif": "eth1", "fwmark": "0x7"}
    plain = {"on": "router", "get": "10.2.0.11"}
    v = lab.verdicts(
        [
            {
                "name": "plain not special",
                "route": plain,
                "expect": {"table": {"not": "special"}, "dev": ["eth1", "br0"]},
            },
            {"name": "marked not special", "route": marked, "expect": {"table": {"not": "special"}}},
            {
                "name": "marked rule",
                "route": marked,
                "expect": {"rule": {"not": [0, 32766]}, "via": {"not": "10.2.0.11"}},
            },
        ]
    )
    assert passed(v["plain not special"]), why(v["plain not special"])
    assert v["marked not special"]["reasons"] == ["expected table not special (100), the kernel used special (100)"]
    assert any(e.startswith("route get: ") for e in v["marked not special"]["evidence"])
    assert passed(v["marked rule"]), why(v["marked rule"])


def test_probe_and_conntrack_negations(lab: CheckLab) -> None:
    v = lab.verdicts(
        [
            {
                "name": "masqueraded: the server saw not the client",
                "probe": {"from": "client", "to": "server2:9090"},
                "expect": {"server_saw": {"not": "client"}, "served_by": {"not": "server1"}},
                "conntrack": {
                    "on": "router",
                    "expect": {"reply_dst": {"not": "client"}, "state": ["ESTABLISHED", "TIME_WAIT"]},
                },
            },
            {
                "name": "wrongly expects SNAT on the service",
                "probe": {"from": "client", "to": "10.96.0.10:80", "count": 4},
                "expect": {"server_saw": {"not": "client"}},
                "conntrack": {"on": "router", "expect": {"reply_src": {"not": ["server1", "server2"]}}},
            },
            {
                "name": "refused or timeout",
                "probe": {"from": "client", "to": "server1:9999"},
                "expect": {"result": ["timeout", "refused"]},
            },
            {
                "name": "anything but refused",
                "probe": {"from": "client", "to": "server1:9999"},
                "expect": {"result": {"not": "refused"}},
            },
        ]
    )
    ok = v["masqueraded: the server saw not the client"]
    assert passed(ok), why(ok)
    bad = v["wrongly expects SNAT on the service"]
    assert bad["reasons"][0].startswith("expected the server to see not client, it saw 10.1.0.2 (client) in 4 of 4")
    assert bad["reasons"][0].endswith("the client's own address: nothing NATed it")
    reply = bad["reasons"][1].partition(": ")[2]
    assert reply in (f"expected reply_src neither server1 nor server2, saw 10.2.0.1{n} (server{n})" for n in "12")
    assert passed(v["refused or timeout"]), why(v["refused or timeout"])
    assert v["anything but refused"]["reasons"][0].startswith("expected not refused, saw refused: ")


def test_counters(lab: CheckLab) -> None:
    to_servers = {"on": "router", "table": "filter", "chain": "forward", "comment": "to the servers"}
    rc, report, _ = lab.run(
        [
            {
                "name": "three pings count three",
                "probe": {"from": "client", "to": "server2", "count": 3},
                "counters": [
                    {"on": "router", "comment": "pings", "packets": 3, "bytes": 102},
                    {**to_servers, "packets": 0},
                ],
            },
            {
                "name": "tcp counts in nft rules, a named counter and an iptables rule",
                "probe": {"from": "client", "to": "server1:8080", "count": 2},
                "counters": [
                    {**to_servers, "packets": {"min": 6, "max": 20}},
                    {"on": "router", "family": "ip", "table": "filter", "name": "svc-hits", "packets": {"min": 6}},
                    {"on": "router", "rule": "ip daddr 10.2.0.0/24  tcp dport 8080", "bytes": {"min": 300}},
                    {"on": "server1", "table": "filter", "chain": "INPUT", "comment": "web in", "packets": {"min": 6}},
                ],
            },
            {
                "name": "wrong amounts and a missing counter",
                "probe": {"from": "client", "to": "server1:8080"},
                "counters": [
                    {**to_servers, "packets": 0},
                    {"on": "router", "comment": "nothing has this", "packets": 1},
                    {"on": "server1", "comment": "web in", "packets": {"max": 1}},
                ],
            },
        ]
    )
    v = {c["name"]: c for c in report["checks"]}
    assert passed(v["three pings count three"]), why(v["three pings count three"])
    assert (
        "counted: pings +3 packets (102 bytes), to the servers +0 packets (0 bytes)"
        in v["three pings count three"]["summary"]
    )
    tcp = v["tcp counts in nft rules, a named counter and an iptables rule"]
    assert passed(tcp), why(tcp)
    bad = v["wrong amounts and a missing counter"]
    assert rc == 1 and not passed(bad)
    first, missing, iptables = bad["reasons"]
    assert first.startswith(
        'expected the rule with comment "to the servers" in router (filter forward) to count exactly 0 packets, it counted '
    )
    assert int(first.rpartition(" ")[2]) >= 3  # a TCP exchange: SYN, ACK, data, …, FIN
    assert (
        missing == 'expected the rule with comment "nothing has this" in router to count, but there is no such counter'
    )
    assert iptables.startswith(
        'expected the rule with comment "web in" in server1 to count at most 1 packets, it counted '
    )
    assert any(
        e.startswith("counter in router: ip filter forward: ip daddr 10.2.0.0/24 tcp dport 8080 counter comment")
        and "packets " in e
        and " → " in e
        for e in bad["evidence"]
    ), bad["evidence"]
    assert any(
        e.startswith(
            'counter in server1: ip filter INPUT: -A INPUT -p tcp -m tcp --dport 8080 -m comment --comment "web in"'
        )
        for e in bad["evidence"]
    ), bad["evidence"]
