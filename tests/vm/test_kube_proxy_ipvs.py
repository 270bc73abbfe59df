"""S1, kube-proxy's IPVS mode (labs/kube-proxy-ipvs.yaml), under a kernel with IPVS (the
VM): the lab's own checks, then what the kernel shows on the node — `ipvsadm -Ln`,
`ipset list`, `ip -d link show kube-ipvs0`, the iptables rules — and the datapath facts
the article is about: a pod reaching itself through its service is masqueraded
(KUBE-LOOP-BACK), NodePort traffic is SNATed; without br_netfilter a pod's connection
to a ClusterIP whose endpoint is on its own node fails, and without net.ipv4.vs.conntrack
NodePort traffic is not masqueraded.

    outside 192.168.49.100 ── br0 ─┬─ node1 192.168.49.2  cni0 10.244.0.1: client 10.244.0.2, web-1 10.244.0.3
                                   └─ node2 192.168.49.3  cni0 10.244.1.1: web-0 10.244.1.2, web-2 10.244.1.3
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from netlab.plan.build import build_plan
from netlab.plan.ops import CreateIpset
from netlab.probes.flow import ProbeResult
from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

LAB = "labs/kube-proxy-ipvs.yaml"
VIP, VIP_NP = "10.96.0.10", "10.96.0.11"
ENDPOINTS = {"web-0": "10.244.1.2", "web-1": "10.244.0.3", "web-2": "10.244.1.3"}

test_kube_proxy_ipvs = lab_checks(LAB, unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def served(results: list[ProbeResult]) -> Counter[str]:
    return Counter(r.served_by or f"({r.outcome}: {r.detail})" for r in results)


def ipvsadm(lab: LabHandle, node: str) -> str:
    return lab.exec(node, "ipvsadm", "-Ln", check=True).stdout


# ---------------------------------------------------------------- what the node holds


def test_kube_ipvs0_is_a_dummy_left_down_holding_the_service_ips(lab: LabHandle) -> None:
    """kube-proxy never sets kube-ipvs0 up: the kernel adds the local route of an address
    on a link that is down too, and that is all IPVS needs."""
    detail = lab.exec("node1", "ip", "-d", "link", "show", "kube-ipvs0", check=True).stdout
    assert "state DOWN" in detail and "\n    dummy " in detail, detail
    addrs = lab.exec("node1", "ip", "-o", "-4", "addr", "show", "dev", "kube-ipvs0", check=True).stdout
    assert re.findall(r"inet (\S+)", addrs) == [f"{VIP}/32", f"{VIP_NP}/32"], addrs
    local = lab.exec("node1", "ip", "route", "show", "table", "local", "dev", "kube-ipvs0", check=True).stdout
    assert f"local {VIP} " in local and f"local {VIP_NP} " in local, local


def test_ipvsadm_shows_a_service_per_vip_and_node_address(lab: LabHandle) -> None:
    table = ipvsadm(lab, "node1")
    # NodePorts on every address of the node but kube-ipvs0's: eth0, cni0, flannel.1
    for service in (f"{VIP}:80", f"{VIP_NP}:80", "192.168.49.2:30080", "10.244.0.1:30080", "10.244.0.0:30080"):
        assert f"TCP  {service} rr\n" in table, table
    reals = [line.split() for line in table.splitlines() if line.strip().startswith("->") and "Remote" not in line]
    assert len(reals) == 5 * 3, table
    assert {(r[1], r[2], r[3]) for r in reals} == {(f"{ip}:8080", "Masq", "1") for ip in ENDPOINTS.values()}, table
    assert "192.168.49.3:30080" in ipvsadm(lab, "node2")


def test_ipset_list_shows_kube_proxys_sets(lab: LabHandle) -> None:
    names = lab.exec("node1", "ipset", "list", "-n", check=True).stdout.split()
    assert len(names) == 17 and {"KUBE-CLUSTER-IP", "KUBE-LOOP-BACK", "KUBE-NODE-PORT-TCP", "KUBE-IPVS-IPS"} <= set(
        names
    ), names
    cluster_ip = lab.exec("node1", "ipset", "list", "KUBE-CLUSTER-IP", check=True).stdout
    assert "Type: hash:ip,port" in cluster_ip and "family inet hashsize 1024 maxelem 65536" in cluster_ip, cluster_ip
    assert set(cluster_ip.split("Members:\n")[1].split()) == {f"{VIP},tcp:80", f"{VIP_NP},tcp:80"}, cluster_ip
    node_ports = lab.exec("node1", "ipset", "list", "KUBE-NODE-PORT-TCP", check=True).stdout
    assert "Type: bitmap:port" in node_ports and "range 0-65535" in node_ports, node_ports
    assert node_ports.split("Members:\n")[1].split() == ["30080"], node_ports
    # the hairpin set holds node1's own endpoint only
    loop = lab.exec("node1", "ipset", "list", "KUBE-LOOP-BACK", check=True).stdout
    assert loop.split("Members:\n")[1].split() == ["10.244.0.3,tcp:8080,10.244.0.3"], loop


def test_ipset_save_is_the_plans_restore_lines(lab: LabHandle) -> None:
    """The plan's `ipset restore` lines (what --dry-run prints) are what netlink made."""
    ops = [op for op in build_plan(lab.model).ops if isinstance(op, CreateIpset) and op.ns == lab.ns("node1")]
    saved = lab.exec("node1", "ipset", "save", check=True).stdout.splitlines()
    adds = sorted(line for line in saved if line.startswith("add "))
    assert adds == sorted(line for op in ops for line in op.add_lines())
    creates = [re.sub(r" bucketsize \d+ initval 0x[0-9a-f]+$", "", line) for line in saved if line.startswith("create")]
    assert sorted(creates) == sorted(op.create_line() for op in ops)


def test_iptables_rules_match_the_sets(lab: LabHandle) -> None:
    rules = lab.exec("node1", "iptables-nft-save", check=True).stdout
    for needle in (
        '-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin '
        'purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE',
        '-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment "Kubernetes service cluster ip + port for '
        'masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ',  # iptables-save's order
        '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" '
        "-m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
    ):
        assert needle in rules, f"{needle!r} missing from node1's iptables-nft-save:\n{rules}"


def test_kube_proxys_sysctls(lab: LabHandle) -> None:
    for key in (
        "net.ipv4.vs.conntrack",
        "net.ipv4.vs.expire_nodest_conn",
        "net.ipv4.vs.expire_quiescent_template",
        "net.ipv4.ip_forward",
        "net.bridge.bridge-nf-call-iptables",
    ):
        assert lab.exec("node1", "sysctl", "-n", key, check=True).stdout.strip() == "1", key


# ---------------------------------------------------------------- the datapath


def test_a_pod_reaching_itself_through_the_vip_is_masqueraded(lab: LabHandle) -> None:
    """KUBE-LOOP-BACK: web-1 → VIP → web-1 itself leaves node1 with web-1 as both source
    and destination; POSTROUTING masquerades it to cni0's address. To the others web-1
    connects with its own address."""
    results = lab.probe("web-1", f"{VIP}:80", count=12)
    assert all(r.ok for r in results), served(results)
    to_self = [r for r in results if r.served_by == "web-1"]
    assert to_self, served(results)
    assert {r.server_saw for r in to_self} == {"10.244.0.1"}, [r.detail for r in to_self]
    assert {r.server_saw for r in results if r.served_by != "web-1"} == {ENDPOINTS["web-1"]}


def test_node_port_conntrack_shows_the_masquerade(lab: LabHandle) -> None:
    """IPVS keeps a conntrack entry (vs.conntrack=1), so KUBE-POSTROUTING's MASQUERADE of the
    KUBE-MARK-MASQ-marked packet is recorded: the reply comes back to node1's address."""
    r = lab.probe("outside", "192.168.49.2:30080")
    assert r.ok, r.detail
    (entry,) = lab.conntrack("node1", flow=r)
    assert (entry.orig.src, entry.orig.dst, entry.orig.dport) == ("192.168.49.100", "192.168.49.2", 30080), entry.text
    assert entry.snat and entry.reply.src == lab.address(r.served_by or "") and entry.reply.sport == 8080, entry.text
    assert entry.reply.dst in ("10.244.0.0", "10.244.0.1"), entry.text  # flannel.1's or cni0's address


@pytest.fixture(scope="module")
def broken(netlab_lab_module: LabFactory) -> LabHandle:
    """A copy of the lab without two of the settings kube-proxy's IPVS mode depends on:
    node1 without bridge-nf-call-iptables, node2 without net.ipv4.vs.conntrack."""
    lab = netlab_lab_module(LAB, name="kp-ipvs-broken", unique=True)
    lab.exec("node1", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=True)
    lab.exec("node2", "sysctl", "-qw", "net.ipv4.vs.conntrack=0", check=True)
    return lab


def test_without_br_netfilter_the_same_node_endpoint_is_unreachable(broken: LabHandle) -> None:
    """The classic pitfall: client → VIP → web-1, on the same node. web-1 answers the client
    directly across cni0; only with bridge-nf-call-iptables=1 does that bridged reply pass
    IPVS, which gives it the VIP back. With 0 the client gets a reply from web-1's own
    address, which no socket of it expects: those connections never complete. Endpoints
    on node2 answer through node1's routing, and still work."""
    results = broken.probe("client", f"{VIP}:80", count=9, timeout=0.5)
    failed = [r for r in results if not r.ok]
    assert failed and all(r.outcome == "timeout" for r in failed), served(results)
    assert {r.served_by for r in results if r.ok} <= {"web-0", "web-2"}, served(results)
    for r in failed:  # IPVS did give them to web-1
        conns = broken.ipvs("node1", flow=r).connections
        assert conns and {c.daddr for c in conns} == {ENDPOINTS["web-1"]}, broken.ipvs("node1").text


def test_without_vs_conntrack_node_port_traffic_is_not_masqueraded(broken: LabHandle) -> None:
    """IPVS forwards without a conntrack entry (vs.conntrack=0), so KUBE-POSTROUTING cannot
    masquerade what KUBE-NODE-PORT marked: node2's own endpoints see the client's address
    (their replies still pass node2's IPVS), node1's answer the client directly — from a
    pod address it never talked to — and those connections time out."""
    results = broken.probe("outside", "192.168.49.3:30080", count=6, timeout=0.5)
    ok, failed = [r for r in results if r.ok], [r for r in results if not r.ok]
    assert ok and {r.served_by for r in ok} <= {"web-0", "web-2"}, served(results)
    assert {r.server_saw for r in ok} == {"192.168.49.100"}, [r.detail for r in ok]
    assert failed and all(r.outcome == "timeout" for r in failed), served(results)
    for r in failed:
        conns = broken.ipvs("node2", flow=r).connections
        assert conns and {c.daddr for c in conns} == {ENDPOINTS["web-1"]}, broken.ipvs("node2").text


def test_ipvs_gives_each_real_its_turn(lab: LabHandle) -> None:
    """rr: consecutive connections from one client walk the three real servers in turn."""
    results = [lab.probe("client", f"{VIP_NP}:80") for _ in range(6)]
    order = [r.served_by for r in results]
    assert all(order) and order[:3] == order[3:] and len(set(order[:3])) == 3, order
