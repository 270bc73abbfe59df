"""IPv6 pod networks from `cluster:` on the real kernel: vxlan over IPv6 and over IPv4,
host-gw over IPv6, and a kube-proxy (iptables mode) ClusterIP in an IPv6 cluster."""

from __future__ import annotations

import pytest

from netlab.pytest_plugin import LabFactory

GOLDEN = "tests/golden/expand"


def _cluster(backend: str, underlay: str) -> dict[str, object]:
    return {
        "name": "v6",
        "cluster": {
            "backend": backend,
            "pod_cidr": "fd00:10:244::/56",
            "underlay": {"subnet": underlay},
            "nodes": {"node1": {}, "node2": {}},
            "pods": {
                "a": {"node": "node1", "serve": ["tcp/8080"]},
                "b": {"node": "node2", "serve": ["tcp/8080"]},
                "c": {"node": "node1", "serve": ["tcp/8080"]},
            },
        },
    }


@pytest.mark.parametrize(
    ("backend", "underlay"),
    [
        ("vxlan", "fd00:49::/64"),
        ("vxlan", "192.168.49.0/24"),
        ("host-gw", "fd00:49::/64"),
    ],
)
def test_ipv6_pods_reach_each_other_across_nodes_without_nat(
    netlab_lab: LabFactory, backend: str, underlay: str
) -> None:
    lab = netlab_lab(_cluster(backend, underlay), unique=True)
    for src, dst in [("a", "b"), ("b", "a"), ("a", "c"), ("b", "c")]:
        r = lab.probe(src, dst, port=8080)
        assert r.ok and r.served_by == dst and r.server_saw == lab.address(src), r.detail
    route = lab.route_get("node1", lab.address("b"))
    if backend == "vxlan":
        assert route.dev == "flannel-v6.1", route.text
        link = lab.exec("node1", "ip", "-d", "link", "show", "flannel-v6.1", check=True).stdout
        mtu = 1430 if ":" in underlay else 1450  # flannel's MTU - 70 over IPv6, - 50 over IPv4
        assert f"mtu {mtu}" in link and "vxlan id 1" in link and "dstport 8472" in link, link
    else:
        assert route.dev == "eth0" and route.via == "fd00:49::3", route.text
    forwarding = lab.exec("node1", "sysctl", "-n", "net.ipv6.conf.all.forwarding", check=True).stdout
    assert forwarding.strip() == "1"


def test_ipv6_cluster_ip_spreads_without_snat_and_conntrack_shows_the_dnat(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(f"{GOLDEN}/ipv6-vxlan-services.yaml", unique=True)
    vip = "fd00:10:96::a"  # the first cluster IP of the default IPv6 service CIDR
    results = lab.probe("client", vip, port=80, count=20)
    assert {r.served_by for r in results} == {"web-0", "web-1"}, [r.detail for r in results]
    assert all(r.ok and r.server_saw == lab.address("client") for r in results), [r.detail for r in results]
    flow = results[-1]
    entries = lab.conntrack("node1", flow)
    assert entries, lab.exec("node1", "conntrack", "-L", "-f", "ipv6").stdout
    entry = entries[0]
    assert entry.orig.dst == vip and entry.reply.src == lab.address(flow.served_by or "?"), entry.text
    assert entry.dnat and not entry.snat, entry.text
    rules = lab.exec("node1", "ip6tables-save", "-t", "nat", check=True).stdout
    assert "! -s fd00:10:244::/56" in rules and "-j KUBE-MARK-MASQ" in rules, rules
