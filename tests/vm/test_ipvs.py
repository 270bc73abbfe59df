"""IPVS from the lab file (`ipvs:` objects, made over generic netlink), under a kernel
that has it (the VM): schedulers, persistence, fwmark, UDP, IPv6, direct routing, the
`ipvs:` expectation of probe checks, the reader, and the plan's ipvsadm lines.

One lab for the module: a director with nine virtual services in front of two real
servers (each serving tcp/8080 and udp/5353), a client, and an empty node for replaying
the plan with ipvsadm.

    client ── eth1 director br0 ─┬─ rs1 10.1.0.11  2001:db8:10::11  (lo: 192.0.2.110, the DR VIP)
    192.0.2.2    VIPs on lo      └─ rs2 10.1.0.12  2001:db8:10::12  (lo: 192.0.2.110)
    2001:db8:1::2
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from typing import Any

import pytest

from netlab.kernel.driver import OpFailed
from netlab.kernel.netlink import NetlinkDriver
from netlab.lab.source import parse_yaml
from netlab.plan.build import build_plan
from netlab.plan.ops import AddIpvsReal, AddIpvsService
from netlab.probes.flow import ProbeResult
from netlab.pytest_plugin import LabFactory, LabHandle

BOTH = {"rs1": "40%..60%", "rs2": "40%..60%"}

LAB = parse_yaml(
    """
name: ipvs
nodes:
  client:
    links:
      eth0: {peer: "director:eth1", addresses: [192.0.2.2/24, "2001:db8:1::2/64"]}
    routes:
      - {to: default, via: 192.0.2.1}
      - {to: default, via: "2001:db8:1::1"}
  director:
    sysctls:
      net.ipv4.ip_forward: 1
      net.ipv6.conf.all.forwarding: 1
      net.ipv4.vs.conntrack: 1              # IPVS keeps conntrack entries (kube-proxy sets it)
      net.ipv4.vs.expire_nodest_conn: 1
      net.ipv4.conf.all.accept_local: 1     # DR replies come back through here from the VIP
    links:
      lo: {addresses: [192.0.2.100/32, 192.0.2.101/32, 192.0.2.102/32, 192.0.2.103/32, 192.0.2.104/32,
                       192.0.2.105/32, 192.0.2.110/32, "2001:db8:100::100/128"]}
      eth1: {addresses: [192.0.2.1/24, "2001:db8:1::1/64"]}
      br0: {kind: bridge, addresses: [10.1.0.1/24, "2001:db8:10::1/64"]}
      v1: {peer: "rs1:eth0", master: br0}
      v2: {peer: "rs2:eth0", master: br0}
    ipvs:
      - address: 192.0.2.100                           # 0: IPv4 NAT, round-robin
        port: 80
        scheduler: rr
        reals: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}]
      - address: "2001:db8:100::100"                   # 1: IPv6 NAT, round-robin
        port: 80
        scheduler: rr
        reals: [{address: "2001:db8:10::11", port: 8080}, {address: "2001:db8:10::12", port: 8080}]
      - address: 192.0.2.101                           # 2: weighted 3:1
        port: 80
        scheduler: wrr
        reals: [{address: 10.1.0.11, port: 8080, weight: 3}, {address: 10.1.0.12, port: 8080}]
      - address: 192.0.2.102                           # 3: source hashing
        port: 80
        scheduler: sh
        reals: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}]
      - address: 192.0.2.103                           # 4: round-robin, but a client sticks to its real
        port: 80
        scheduler: rr
        persistent: 60
        reals: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}]
      - fwmark: 1                                      # 5: whatever the nft rule below marks
        scheduler: rr
        reals: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}]
      - proto: udp                                     # 6: UDP
        address: 192.0.2.100
        port: 53
        scheduler: rr
        reals: [{address: 10.1.0.11, port: 5353}, {address: 10.1.0.12, port: 5353}]
      - address: 192.0.2.110                           # 7: direct routing (the reals hold the VIP)
        port: 8080
        scheduler: rr
        reals: [{address: 10.1.0.11, forward: route}, {address: 10.1.0.12, forward: dr}]
      - {address: 192.0.2.105, port: 80}               # 8: no real servers
    exec:                                              # mark TCP to 192.0.2.104:80 for service 5
      - [nft, add, table, ip, lbmark]
      - [nft, "add chain ip lbmark pre { type filter hook prerouting priority -150; }"]
      - [nft, add, rule, ip, lbmark, pre, ip, daddr, 192.0.2.104, tcp, dport, "80", meta, mark, set, "1"]
  rs1:
    serve: [tcp/8080, udp/5353]
    sysctls: {net.ipv4.conf.all.arp_ignore: 1, net.ipv4.conf.all.arp_announce: 2}
    links:
      lo: {addresses: [192.0.2.110/32]}
      eth0: {addresses: [10.1.0.11/24, "2001:db8:10::11/64"]}
    routes:
      - {to: default, via: 10.1.0.1}
      - {to: default, via: "2001:db8:10::1"}
  rs2:
    serve: [tcp/8080, udp/5353]
    sysctls: {net.ipv4.conf.all.arp_ignore: 1, net.ipv4.conf.all.arp_announce: 2}
    links:
      lo: {addresses: [192.0.2.110/32]}
      eth0: {addresses: [10.1.0.12/24, "2001:db8:10::12/64"]}
    routes:
      - {to: default, via: 10.1.0.1}
      - {to: default, via: "2001:db8:10::1"}
  mirror:                                              # replays the plan's ipvsadm lines
    sysctls: {net.ipv6.conf.all.forwarding: 0}         # (a node that mentions IPv6 keeps it on)
checks:
  - name: nat flow
    probe: {from: client, to: "192.0.2.100:80"}
    ipvs: {on: director, expect: {real: [rs1, rs2], forward: masq}}
  - name: nat flow by address and port
    probe: {from: client, to: "192.0.2.100:80", count: 2}
    ipvs: {on: director, expect: {real: ["10.1.0.11:8080", "rs2:8080"], forward: masquerading}}
  - name: wrong real
    probe: {from: client, to: "192.0.2.100:80", count: 2}
    ipvs: {on: director, expect: {real: rs1}}
  - name: wrong forward
    probe: {from: client, to: "192.0.2.100:80"}
    ipvs: {on: director, expect: {forward: dr}}
  - name: wrong absence
    probe: {from: client, to: "192.0.2.100:80"}
    ipvs: {on: director, expect: {entry: false}}
  - name: no service, no connection
    probe: {from: client, to: "192.0.2.100:81", timeout: 0.5}
    expect: {result: refused}
    ipvs: {on: director, expect: {entry: false}}
  - name: missing connection
    probe: {from: client, to: "192.0.2.100:81", timeout: 0.5}
    expect: {result: refused}
    ipvs: {on: director}
  - name: ipv6 nat
    probe: {from: client, to: "[2001:db8:100::100]:80", count: 20}
    expect: {served_by: {rs1: 40%..60%, rs2: 40%..60%}, server_saw: client}
    ipvs: {on: director, expect: {real: [rs1, rs2], forward: masq}}
  - name: direct routing
    probe: {from: client, to: "192.0.2.110:8080", count: 4}
    expect: {served_by: {rs1: 50%, rs2: 50%}, server_saw: client}
    ipvs: {on: director, expect: {real: ["rs1:8080", "rs2:8080"], forward: dr}}
  - name: no real server
    probe: {from: client, to: "192.0.2.105:80", timeout: 0.5}
    expect: {result: refused, icmp: port unreachable, icmp_from: director}   # ip_vs_leave(): ICMP, not RST
  - name: udp
    probe: {from: client, to: "192.0.2.100:53", proto: udp, count: 10}
    expect: {served_by: {rs1: 40%..60%, rs2: 40%..60%}, server_saw: client}
    ipvs: {on: director, expect: {real: ["rs1:5353", "rs2:5353"], state: UDP}}
""",
    "test_ipvs.py",
)[0]  # netlab's YAML reader: `on:` is a key, not YAML 1.1's true


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def served(results: list[ProbeResult]) -> Counter[str]:
    return Counter(r.served_by or f"({r.outcome}: {r.detail})" for r in results)


def why(lab: LabHandle, results: list[ProbeResult] | None = None) -> str:
    """The evidence for an assertion message: what the probes saw and the director's IPVS."""
    seen = f"served: {dict(served(results))}\n" if results is not None else ""
    return f"{seen}ipvsadm -Ln / -Lnc in director:\n{lab.ipvs('director').text}"


def check(lab: LabHandle, name: str) -> Any:
    return lab.run_check(name)


# ---------------------------------------------------------------- schedulers and families


def test_rr_nat_ipv4_shares(lab: LabHandle) -> None:
    results = lab.probe("client", "192.0.2.100:80", count=20)
    counts = served(results)
    assert set(counts) == {"rs1", "rs2"} and all(8 <= n <= 12 for n in counts.values()), why(lab, results)
    assert all(r.server_saw == "192.0.2.2" for r in results), why(lab, results)  # NAT rewrote only the destination


def test_rr_nat_ipv6_shares_and_expectation(lab: LabHandle) -> None:
    v = check(lab, "ipv6 nat")
    assert v.passed, (v.reasons, v.evidence)
    assert "IPVS in director → " in v.summary, v.summary


def test_wrr_weights_three_to_one(lab: LabHandle) -> None:
    results = lab.probe("client", "192.0.2.101:80", count=20)
    counts = served(results)
    assert 13 <= counts["rs1"] <= 17 and counts["rs1"] + counts["rs2"] == 20, why(lab, results)
    svc = next(s for s in lab.ipvs("director").services if s.address == "192.0.2.101")
    assert [(r.address, r.weight) for r in svc.reals] == [("10.1.0.11", 3), ("10.1.0.12", 1)], svc.lines()


def test_sh_keeps_a_client_on_one_real(lab: LabHandle) -> None:
    results = lab.probe("client", "192.0.2.102:80", count=10)
    assert len(served(results)) == 1 and results[0].ok, why(lab, results)


def test_persistence_keeps_a_client_on_one_real(lab: LabHandle) -> None:
    # The first connection makes the client's persistence template; until it exists,
    # simultaneous first connections are scheduled each on their own (ip_vs_sched_persist
    # looks the template up and creates it without a lock: seen here, 9 to rs1, 1 to rs2).
    first = lab.probe("client", "192.0.2.103:80")
    results = [first, *lab.probe("client", "192.0.2.103:80", count=10)]
    assert len(served(results)) == 1 and first.ok, why(lab, results)
    state = lab.ipvs("director")
    svc = next(s for s in state.services if s.address == "192.0.2.103")
    assert svc.persistent == 60 and "rr persistent 60" in svc.text, svc.lines()
    templates = [c for c in state.connections if c.template and c.vaddr == "192.0.2.103"]
    assert len(templates) == 1 and templates[0].client == "192.0.2.2", state.text
    assert sum(r.persistent for r in svc.reals) == 1, svc.lines()


def test_fwmark_service(lab: LabHandle) -> None:
    results = lab.probe("client", "192.0.2.104:80", count=10)
    counts = served(results)
    assert set(counts) == {"rs1", "rs2"} and all(4 <= n <= 6 for n in counts.values()), why(lab, results)
    state = lab.ipvs("director")
    svc = next(s for s in state.services if s.fwmark == 1)
    assert svc.text == "FWM  1 rr" and svc.address is None and svc.proto == "", svc.lines()
    flow = lab.ipvs("director", flow=results[0]).connections
    assert len(flow) == 1 and (flow[0].vaddr, flow[0].vport) == ("192.0.2.104", 80), state.text


def test_udp_service(lab: LabHandle) -> None:
    v = check(lab, "udp")
    assert v.passed, (v.reasons, v.evidence)


def test_direct_routing(lab: LabHandle) -> None:
    """LVS-DR: the director hands the unchanged packet to a real server's MAC; the real
    holds the VIP on lo (arp_ignore keeps it quiet) and answers the client itself."""
    v = check(lab, "direct routing")
    assert v.passed, (v.reasons, v.evidence)
    svc = next(s for s in lab.ipvs("director").services if s.address == "192.0.2.110")
    assert [(r.port, r.forward) for r in svc.reals] == [(8080, "dr"), (8080, "dr")], svc.lines()
    assert all(line.split()[2] == "Route" for line in svc.lines()[1:]), svc.lines()


# ---------------------------------------------------------------- the `ipvs:` expectation


def test_expectation_passes(lab: LabHandle) -> None:
    for name in ("nat flow", "nat flow by address and port", "no service, no connection", "no real server"):
        v = check(lab, name)
        assert v.passed, (name, v.reasons, v.evidence)


def test_expectation_wrong_real(lab: LabHandle) -> None:
    v = check(lab, "wrong real")  # two rr connections: one of them goes to rs2
    assert not v.passed
    assert re.search(
        r"IPVS in director for tcp 192\.0\.2\.2:\d+ → 192\.0\.2\.100:80: expected real server rs1, "
        r"the connection went to 10\.1\.0\.12:8080 \(rs2\)",
        v.reasons[0],
    ), v.reasons
    assert any(line.startswith("ipvsadm -Lnc in director: TCP") and "10.1.0.12:8080" in line for line in v.evidence), (
        v.evidence
    )
    assert "ipvsadm -Ln in director: TCP  192.0.2.100:80 rr" in v.evidence, v.evidence  # ipvsadm's own line


def test_expectation_wrong_forward(lab: LabHandle) -> None:
    v = check(lab, "wrong forward")
    assert not v.passed
    assert re.search(r"expected forward dr, the real server 10\.1\.0\.1[12]:8080 is masq \(Masq\)", v.reasons[0]), (
        v.reasons
    )


def test_expectation_wrong_absence(lab: LabHandle) -> None:
    v = check(lab, "wrong absence")
    assert not v.passed
    assert re.search(
        r"expected no IPVS connection in director for tcp .* found one to 10\.1\.0\.1[12]:8080 "
        r"\(rs[12]\)",
        v.reasons[0],
    ), v.reasons


def test_expectation_missing_connection(lab: LabHandle) -> None:
    v = check(lab, "missing connection")
    assert not v.passed
    assert re.search(
        r"expected an IPVS connection in director for tcp .*192\.0\.2\.100:81, found none among "
        r"\d+ connections?; director has no virtual service TCP 192\.0\.2\.100:81",
        v.reasons[0],
    ), v.reasons
    assert "ipvsadm -Ln in director: UDP  192.0.2.100:53 rr" in v.evidence, v.evidence


# ---------------------------------------------------------------- the kernel's view, sysctls, the plan


def test_reader_counts_connections(lab: LabHandle) -> None:
    lab.probe("client", "192.0.2.100:80", count=4)
    state = lab.ipvs("director")
    svc = next(s for s in state.services if s.address == "192.0.2.100" and s.proto == "tcp")
    assert svc.scheduler == "rr" and svc.persistent is None and svc.netmask == 32, svc.lines()
    assert [(r.address, r.port, r.forward, r.weight) for r in svc.reals] == [
        ("10.1.0.11", 8080, "masq", 1),
        ("10.1.0.12", 8080, "masq", 1),
    ], svc.lines()
    assert all(r.active + r.inactive >= 2 for r in svc.reals), svc.lines()  # TIME_WAIT: inactive
    conns = [c for c in state.connections if c.vaddr == "192.0.2.100" and c.vport == 80]
    assert conns and all(c.client == "192.0.2.2" and c.daddr in ("10.1.0.11", "10.1.0.12") for c in conns), state.text


def test_ipvs_sysctls_set(lab: LabHandle) -> None:
    for key in ("net.ipv4.vs.conntrack", "net.ipv4.vs.expire_nodest_conn"):
        got = lab.exec("director", "sysctl", "-n", key, check=True).stdout.strip()
        assert got == "1", (key, got)


def replay_with_ipvsadm(lab: LabHandle, director: str, mirror: str) -> tuple[list[str], list[str]]:
    """The plan's ipvsadm lines for `director`, replayed by ipvsadm in `mirror`: both
    tables (`ipvsadm -Ln`, a real's line without its connection counters)."""
    rules = []
    for op in build_plan(lab.model).ops:
        if isinstance(op, (AddIpvsService, AddIpvsReal)) and op.ns == lab.ns(director):
            argv = op.render().split()
            assert argv[:5] == ["ip", "netns", "exec", lab.ns(director), "ipvsadm"], op.render()
            rules.append(" ".join(argv[5:]))
    # `ipvsadm -R` reads the same options, a command per line: one process for all of them
    subprocess.run(
        ["ip", "netns", "exec", lab.ns(mirror), "ipvsadm", "-R"],
        input="\n".join(rules) + "\n",
        check=True,
        capture_output=True,
        text=True,
    )

    def table(node: str) -> list[str]:
        out = subprocess.run(
            ["ip", "netns", "exec", lab.ns(node), "ipvsadm", "-Ln"], check=True, capture_output=True, text=True
        ).stdout
        return [" ".join(line.split()[:4]) if line.startswith("  ->") else line.strip() for line in out.splitlines()]

    return table(mirror), table(director)


def test_plan_ipvsadm_lines_build_the_same_table(lab: LabHandle) -> None:
    """The plan's `ipvsadm` lines are exact: replayed with ipvsadm in the empty node, they
    give the table netlab made over netlink (counters aside)."""
    replayed, made = replay_with_ipvsadm(lab, "director", "mirror")
    assert replayed == made
    assert len([line for line in made if line.startswith("-> ") and "RemoteAddress" not in line]) == 16, made


def test_every_option_the_kernel_takes(netlab_lab: LabFactory) -> None:
    """tests/golden/good/ipvs-services.yaml (SCTP, mh, tun across families, IPv6 fwmark,
    persistence netmasks of both families, weight 0) is made as its plan's ipvsadm lines say."""
    lab = netlab_lab("tests/golden/good/ipvs-services.yaml", unique=True)
    replayed, made = replay_with_ipvsadm(lab, "node", "pod")
    assert replayed == made
    assert "SCTP [fd00:10:96::10]:3868 mh persistent 300 mask 64" in made, made
    assert "-> 10.244.0.4:3868 Tunnel 1" in made and "-> 10.244.0.3:53 Masq 0" in made, made
    views = {s.text: s for s in lab.ipvs("node").services}
    assert views["TCP  10.96.0.10:9153 sh persistent 10800 mask 255.255.255.0"].netmask == 24, list(views)
    assert views["FWM  7 IPv6 wlc"].reals[0].port == 0, list(views)


def test_kernel_refusals_name_the_op(lab: LabHandle) -> None:
    """A refused IPVS request is an OpFailed with the kernel's errno and its meaning."""
    ns = lab.ns("director")
    driver = NetlinkDriver()
    try:
        again = AddIpvsService(ns, "nodes.director.ipvs[0]", address="192.0.2.100", port=80, scheduler="rr")
        with pytest.raises(OpFailed) as info:
            driver.apply([again], lambda op: None)
        assert info.value.reason == "File exists (EEXIST): the service already exists", info.value.reason
        assert str(info.value).startswith(f"ip netns exec {ns} ipvsadm -A -t 192.0.2.100:80 -s rr: ")
        orphan = AddIpvsReal(ns, "x", address="192.0.2.100", port=9, real="10.1.0.11", real_port=8080)
        with pytest.raises(OpFailed) as info:
            driver.apply([orphan], lambda op: None)
        assert info.value.reason == "No such process (ESRCH): no such service (was its `ipvsadm -A` refused?)", (
            info.value.reason
        )
    finally:
        driver.close()
    assert len(lab.ipvs("director").services) == 9  # nothing changed
