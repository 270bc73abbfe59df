"""Traceroute-style probes on a real kernel (root): `probe: {ttl: N}` makes the probe's
packets die at the Nth router, which answers ICMP time exceeded; `expect: {icmp_from: …}`
judges which router that was, passing and failing with the reason a user reads.

    client 10.1.0.2 ── eth1 r1 eth2 ── eth1 r2 eth2 ── server 10.2.0.11 (tcp/8080 udp/53 http/80)
    fd01::2            10.1.0.1 10.12.0.1  10.12.0.2 10.2.0.1    fd02::11
                       fd01::1  fd12::1    fd12::2   fd02::1

ttl 1 ends at r1 (its eth1, the side facing the client, answers), ttl 2 at r2 (its eth1),
ttl 3 — or none — reaches the server. The routers do not rate-limit ICMP errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.kernel.conftest import LabFactory, LabFile, NetlabCli

ICMP = {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0}
FORWARD = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **ICMP}

SPEC: dict[str, Any] = {
    "nodes": {
        "client": {
            "sysctls": ICMP,
            "links": {"eth0": {"peer": "r1:eth1", "addresses": ["10.1.0.2/24", "fd01::2/64"]}},
            "routes": [{"to": "default", "via": "10.1.0.1"}, {"to": "default", "via": "fd01::1"}],
        },
        "r1": {
            "sysctls": FORWARD,
            "links": {
                "eth1": {"addresses": ["10.1.0.1/24", "fd01::1/64"]},
                "eth2": {"peer": "r2:eth1", "addresses": ["10.12.0.1/24", "fd12::1/64"]},
            },
            "routes": [{"to": "10.2.0.0/24", "via": "10.12.0.2"}, {"to": "fd02::/64", "via": "fd12::2"}],
        },
        "r2": {
            "sysctls": FORWARD,
            "links": {
                "eth1": {"addresses": ["10.12.0.2/24", "fd12::2/64"]},
                "eth2": {"peer": "server:eth0", "addresses": ["10.2.0.1/24", "fd02::1/64"]},
            },
            "routes": [{"to": "10.1.0.0/24", "via": "10.12.0.1"}, {"to": "fd01::/64", "via": "fd12::1"}],
        },
        "server": {
            "serve": ["tcp/8080", "udp/53", "http/80"],
            "sysctls": ICMP,
            "links": {"eth0": {"addresses": ["10.2.0.11/24", "fd02::11/64"]}},
            "routes": [{"to": "default", "via": "10.2.0.1"}, {"to": "default", "via": "fd02::1"}],
        },
    },
}

# Every kind of probe, to the server's IPv4 and IPv6 address.
KINDS: list[tuple[str, dict[str, Any]]] = [
    ("icmp", {}),
    ("tcp", {"port": 8080}),
    ("udp", {"proto": "udp", "port": 53}),
    ("http", {"proto": "http", "port": 80}),
]
FAMILIES = [(4, "10.2.0.11"), (6, "fd02::11")]


class TtlLab:
    def __init__(self, lab: LabFile, cli: NetlabCli) -> None:
        self.lab, self.cli = lab, cli

    def run(self, checks: list[dict[str, Any]], *args: str) -> tuple[int, str]:
        self.lab.path.write_text(yaml.safe_dump({"name": self.lab.name, **SPEC, "checks": checks}, sort_keys=False))
        r = self.cli("check", self.lab, *args)
        assert r.rc in (0, 1), f"netlab check failed to run (rc {r.rc}):\n{r.out}\n{r.err}"
        return r.rc, r.out

    def verdicts(self, checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _, out = self.run(checks, "--json")
        return {c["name"]: c for c in json.loads(out)["checks"]}


@pytest.fixture(scope="module")
def ttllab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[TtlLab]:
    factory = LabFactory(registry, tmp_path_factory.mktemp("ttllab"))
    try:
        lab = factory(SPEC)
        r = netlab_cli("up", lab)
        assert r.rc == 0, r.err
        yield TtlLab(lab, netlab_cli)
    finally:
        factory.cleanup()


def failures(verdicts: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {n: "\n".join([v["summary"], *v["reasons"], *v["evidence"]]) for n, v in verdicts.items() if not v["passed"]}


def probe_checks(
    ttl: int | None,
    expect: dict[str, Any],
    icmp_from: dict[int, Any] | None = None,
) -> list[dict[str, Any]]:
    checks = []
    for family, addr in FAMILIES:
        for kind, keys in KINDS:
            probe = {"from": "client", "to": addr, **keys, "timeout": 2}
            if ttl is not None:
                probe["ttl"] = ttl
            want = dict(expect)
            if icmp_from is not None:
                want["icmp_from"] = icmp_from[family]
            checks.append({"name": f"{kind} IPv{family} ttl {ttl}", "probe": probe, "expect": want})
    return checks


def test_ttl_1_dies_at_the_first_router(ttllab: TtlLab) -> None:
    checks = probe_checks(1, {"result": "unreachable", "icmp": "time exceeded"}, {4: "r1", 6: "r1"})
    v = ttllab.verdicts(checks)
    assert not failures(v), failures(v)
    for name, verdict in v.items():
        six = "IPv6" in name
        (p,) = verdict["probes"]
        assert p["outcome"] == "unreachable" and p["ttl"] == 1
        # The router answers from the interface that faces the client.
        assert p["icmp_from"] == ("fd01::1" if six else "10.1.0.1"), name
        assert p["icmp"] == (
            "hop limit exceeded in transit (time exceeded, ICMPv6 type 3 code 0)"
            if six
            else "TTL exceeded in transit (time exceeded, type 11 code 0)"
        )
        assert "ran out of " + ("hop limit" if six else "TTL") + f" at {p['icmp_from']} (" in p["detail"]
        assert verdict["summary"].endswith(f"{p['icmp']} from {p['icmp_from']} (r1's eth1)"), verdict["summary"]
        assert "(ttl 1): unreachable" in verdict["summary"]


def test_each_ttl_is_one_hop_further(ttllab: TtlLab) -> None:
    """ttl 2 ends at the second router, named by its address this time; ttl 3 arrives."""
    at_r2 = probe_checks(2, {"result": "unreachable", "icmp": "time exceeded"}, {4: "10.12.0.2", 6: "fd12::2"})
    there = probe_checks(3, {"result": "ok"})
    for c in there:
        if c["probe"].get("port"):
            c["expect"].update(served_by="server", server_saw="client")
    v = ttllab.verdicts(at_r2 + there)
    assert not failures(v), failures(v)
    assert all(c["probes"][0]["icmp_from"] is None for n, c in v.items() if n.endswith("ttl 3"))


def test_without_ttl_the_probe_arrives(ttllab: TtlLab) -> None:
    v = ttllab.verdicts(probe_checks(None, {"result": "ok"}))
    assert not failures(v), failures(v)
    assert all(c["probes"][0]["ttl"] is None and "(ttl" not in c["summary"] for c in v.values())


def test_icmp_from_fails_with_the_reason(ttllab: TtlLab) -> None:
    checks = [
        {
            "name": "first hop is not r2",
            "probe": {"from": "client", "to": "server", "ttl": 1},
            "expect": {"result": "unreachable", "icmp_from": "r2"},
        },
        {
            "name": "r1 answers from eth1, not eth2",
            "probe": {"from": "client", "to": "server:8080", "ttl": 1},
            "expect": {"result": "unreachable", "icmp": "time exceeded", "icmp_from": "10.12.0.1"},
        },
        {
            "name": "v6 second hop is not the server",
            "probe": {"from": "client", "to": "[fd02::11]:53", "proto": "udp", "ttl": 2},
            "expect": {"result": "unreachable", "icmp_from": "server"},
        },
        {
            "name": "ttl 3 arrives: no ICMP error",
            "probe": {"from": "client", "to": "server", "ttl": 3},
            "expect": {"result": "unreachable", "icmp": "time exceeded", "icmp_from": "r2"},
        },
    ]
    v = ttllab.verdicts(checks)
    assert all(not c["passed"] for c in v.values()), failures(v)
    assert v["first hop is not r2"]["reasons"] == [
        "expected the ICMP error from r2, it came from 10.1.0.1 (r1's eth1) — the probe's ttl 1 ran out there"
    ]
    assert v["r1 answers from eth1, not eth2"]["reasons"] == [
        "expected the ICMP error from 10.12.0.1 (r1's eth2), it came from 10.1.0.1 (r1's eth1) — "
        "the probe's ttl 1 ran out there"
    ]
    assert v["v6 second hop is not the server"]["reasons"] == [
        "expected the ICMP error from server, it came from fd12::2 (r2's eth1) — the probe's ttl 2 ran out there"
    ]
    assert v["ttl 3 arrives: no ICMP error"]["reasons"] == [
        "expected unreachable, saw ok: " + v["ttl 3 arrives: no ICMP error"]["probes"][0]["detail"],
        "expected an ICMP error saying 'time exceeded', saw no ICMP error",
        "expected the ICMP error from r2, but no ICMP error came back (the probe was ok)",
    ]
    # The probe's own words (where its TTL ran out) are the evidence.
    assert any(
        e.startswith("probe: the connection to 10.2.0.11:8080 ran out of TTL at 10.1.0.1 (TTL 1); ICMP ")
        for e in v["r1 answers from eth1, not eth2"]["evidence"]
    ), v["r1 answers from eth1, not eth2"]


def test_text_report_shows_the_hop(ttllab: TtlLab) -> None:
    checks = [
        {
            "name": "first hop from the client",
            "probe": {"from": "client", "to": "server", "ttl": 1},
            "expect": {"result": "unreachable", "icmp": "time exceeded", "icmp_from": "10.1.0.1"},
        },
        {
            "name": "wrong first hop",
            "probe": {"from": "client", "to": "server", "ttl": 1},
            "expect": {"result": "unreachable", "icmp_from": "r2"},
        },
    ]
    rc, out = ttllab.run(checks)
    assert rc == 1
    assert (
        "icmp 10.2.0.11 (ttl 1): unreachable; TTL exceeded in transit (time exceeded, type 11 code 0) from "
        "10.1.0.1 (r1's eth1)" in out
    ), out
    assert "expected the ICMP error from r2, it came from 10.1.0.1 (r1's eth1)" in out, out
    assert "1 passed, 1 failed" in out, out


def test_count_probes_all_die_at_the_same_hop(ttllab: TtlLab) -> None:
    checks = [
        {
            "name": "10 echoes, all at r1",
            "probe": {"from": "client", "to": "server", "ttl": 1, "count": 10},
            "expect": {"result": "unreachable", "icmp": "time exceeded", "icmp_from": "r1"},
        },
        {
            "name": "10 SYNs, all at r2",
            "probe": {"from": "client", "to": "server:8080", "ttl": 2, "count": 10},
            "expect": {"result": "unreachable", "icmp": "time exceeded", "icmp_from": "r2"},
        },
    ]
    v = ttllab.verdicts(checks)
    assert not failures(v), failures(v)
    assert v["10 SYNs, all at r2"]["summary"].endswith("ICMP errors from 10.12.0.2 (r2's eth1) (10)")
