"""Services in a `cluster:` with kube-proxy's nftables mode, on the real kernel: the
`kube-proxy` table netlab writes (k8s-datapaths.md §2) is loaded with libnftables into
every node, and real traffic shows what kube-proxy promises — a ClusterIP spreads over
its endpoints through `numgen random`, a pod's connection is not SNATed, a pod reaching
itself through the VIP works only because its endpoint chain marks it for masquerade,
NodePort traffic from outside is masqueraded (with externalTrafficPolicy Local it keeps
the client's address, and a node without an endpoint drops it), ClientIP affinity
sticks, and a service without endpoints is rejected — over IPv4 and IPv6."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from netlab.expand.kube_nftables import hash_and_truncate
from netlab.pytest_plugin import LabFactory, LabHandle

VIP, STICKY, EMPTY, LOCAL = "10.96.0.10", "10.96.0.11", "10.96.0.12", "10.96.0.13"
WEB_A = "10.244.0.3"  # node1's second pod (client is .2)
# kube-proxy's chain for web-a behind `web` (an unnamed port: the name ends in `/`)
WEB_A_CHAIN = "endpoint-" + hash_and_truncate(f"default/web/tcp/__{WEB_A}/8080")

LAB: dict[str, Any] = {
    "name": "kpnft",
    "cluster": {
        "backend": "host-gw",
        "proxy_mode": "nftables",
        # a node's default route (minikube's gateway, never answered here): traffic to a
        # VIP nothing DNATs is forwarded, so the filter-forward checks see it
        "nodes": {n: {"routes": [{"to": "default", "via": "192.168.49.1"}]} for n in ("node1", "node2")},
        "pods": {
            "client": {"node": "node1", "labels": {"app": "client"}},
            "web-a": {"node": "node1", "labels": {"app": "web", "tier": "a"}, "serve": ["tcp/8080"]},
            "web-b": {"node": "node2", "labels": {"app": "web"}, "serve": ["tcp/8080"]},
        },
        "services": {
            "web": {
                "type": "NodePort",
                "cluster_ip": VIP,
                "selector": {"app": "web"},
                "ports": [{"port": 80, "target_port": 8080, "node_port": 30080}],
            },
            # Local policy, its only endpoint on node1
            "local": {
                "type": "NodePort",
                "cluster_ip": LOCAL,
                "selector": {"tier": "a"},
                "external_traffic_policy": "Local",
                "ports": [{"port": 80, "target_port": 8080, "node_port": 30081}],
            },
            "sticky": {
                "cluster_ip": STICKY,
                "selector": {"app": "web"},
                "session_affinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "target_port": 8080}],
            },
            "empty": {"cluster_ip": EMPTY, "selector": {}, "ports": [{"port": 80}]},
        },
    },
    "nodes": {
        "outside": {"links": {"eth0": {"peer": "underlay:outside", "addresses": ["192.168.49.100/24"]}}},
    },
}


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def _table(lab: LabHandle, node: str) -> str:
    return lab.exec(node, "nft", "list", "table", "ip", "kube-proxy", check=True).stdout


def test_kube_proxys_table_is_there(lab: LabHandle) -> None:
    table = _table(lab, "node1")
    for needle in (
        "chain nat-prerouting {",
        "type nat hook prerouting priority dstnat; policy accept;",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "meta mark set meta mark | 0x00004000",
        "masquerade fully-random",
        f"chain {WEB_A_CHAIN} {{",
        "numgen random mod 2 vmap",
        f"dnat to {WEB_A}:8080",
        "elements = { 192.168.49.2 }",
    ):
        assert needle in table, f"{needle!r} missing from node1's kube-proxy table:\n{table}"
    tables = lab.exec("node1", "nft", "list", "tables", check=True).stdout.split("\n")
    assert [t for t in tables if t] == ["table ip kube-proxy"], "nftables mode writes no iptables-nft tables"


def test_cluster_ip_spreads_over_both_endpoints_without_snat(lab: LabHandle) -> None:
    results = lab.probe("client", f"{VIP}:80", count=30)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    served = Counter(r.served_by for r in results)
    assert set(served) == {"web-a", "web-b"} and min(served.values()) >= 5, served
    assert {r.server_saw for r in results} == {lab.address("client")}, "a pod's connection to a ClusterIP is not SNATed"


def test_conntrack_shows_the_dnat_on_the_clients_node(lab: LabHandle) -> None:
    result = lab.probe("client", f"{VIP}:80")
    assert result.ok, result.detail
    (entry,) = lab.conntrack("node1", flow=result)
    assert entry.orig.dst == VIP and entry.reply.src == lab.address(result.served_by or ""), entry
    assert entry.dnat and not entry.snat, entry


def test_hairpin_works_through_the_masquerade(lab: LabHandle) -> None:
    results = lab.probe("web-a", f"{VIP}:80", count=20)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    to_self = [r for r in results if r.served_by == "web-a"]
    assert to_self, "numgen never picked web-a itself in 20 tries"
    # The endpoint chain's `ip saddr 10.244.0.3 jump mark-for-masquerade`: web-a sees cni0.
    assert {r.server_saw for r in to_self} == {"10.244.0.1"}, [r.detail for r in to_self]


def test_node_port_from_outside_is_masqueraded(lab: LabHandle) -> None:
    results = lab.probe("outside", "192.168.49.3:30080", count=10)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert lab.address("outside") not in {r.server_saw for r in results}, "externalTrafficPolicy Cluster SNATs"
    assert {r.server_saw for r in results} <= {"192.168.49.3", "10.244.1.1"}, [r.detail for r in results]


def test_local_policy_keeps_the_client_and_drops_where_no_endpoint_runs(lab: LabHandle) -> None:
    here = lab.probe("outside", "192.168.49.2:30081", count=5)
    assert all(r.ok and r.served_by == "web-a" for r in here), [r.detail for r in here]
    assert {r.server_saw for r in here} == {lab.address("outside")}, "Local policy does not SNAT"
    elsewhere = lab.probe("outside", "192.168.49.3:30081", timeout=0.5)
    assert elsewhere.outcome == "timeout", elsewhere.detail  # no-endpoint-nodeports: drop on node2


def test_client_ip_affinity_sticks(lab: LabHandle) -> None:
    # the first connection makes the affinity entry; a count's probes go out side by side,
    # and ones racing that first one may be balanced before it exists (as with kube-proxy)
    results = [lab.probe("client", f"{STICKY}:80"), *lab.probe("client", f"{STICKY}:80", count=11)]
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    served = {r.served_by for r in results}
    assert len(served) == 1, f"ClientIP affinity should pin one endpoint, got {served}"
    (pod,) = served
    address = lab.address(pod or "")
    name = "affinity-" + hash_and_truncate(f"default/sticky/tcp/http__{address}/8080")
    listing = lab.exec("node1", "nft", "list", "set", "ip", "kube-proxy", name, check=True).stdout
    assert lab.address("client") in listing, listing


def test_a_service_without_endpoints_is_rejected(lab: LabHandle) -> None:
    result = lab.probe("client", f"{EMPTY}:80")
    assert result.outcome == "refused", result.detail  # reject-chain's ICMP port unreachable


def test_an_undefined_port_of_a_cluster_ip_is_rejected(lab: LabHandle) -> None:
    result = lab.probe("client", f"{VIP}:81")
    assert result.outcome == "refused", result.detail  # cluster-ips-check: `ip daddr @cluster-ips reject`


def test_without_the_hairpin_masquerade_a_pod_cannot_reach_itself(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(LAB, unique=True)  # its own copy: this test breaks it
    listing = lab.exec("node1", "nft", "-a", "list", "chain", "ip", "kube-proxy", WEB_A_CHAIN, check=True).stdout
    handles = re.findall(rf"ip saddr {re.escape(WEB_A)} jump mark-for-masquerade # handle (\d+)", listing)
    assert len(handles) == 1, listing
    lab.exec("node1", "nft", "delete", "rule", "ip", "kube-proxy", WEB_A_CHAIN, "handle", handles[0], check=True)
    results = lab.probe("web-a", f"{VIP}:80", count=20, timeout=0.5)
    to_self = [r for r in results if not r.ok]
    assert to_self, "every connection went to web-b; numgen never picked web-a"
    assert all(r.outcome == "timeout" for r in to_self), [r.detail for r in to_self]
    assert all(r.served_by == "web-b" for r in results if r.ok)


def test_an_ipv6_clusters_table_loads() -> None:
    """The ip6 table (kube-proxy's IPv6 proxier) goes into a throwaway namespace as one
    transaction, as the preflight tries it."""
    from netlab.expand.kube_nftables import render_nftables
    from netlab.expand.services import Endpoint, ServicePortView
    from netlab.kernel.nft import trial
    from netlab.plan.ops import LoadNftables

    eps = tuple(Endpoint(f"p{i}", f"node{i}", f"fd00:10:244:{i}::2", 8080) for i in (1, 2))
    ports = [
        ServicePortView(
            service="web",
            namespace="default",
            port_name="http",
            protocol="tcp",
            cluster_ip="fd00:10:96::a",
            port=80,
            node_port=30080,
            external_ips=("fd00:49::200",),
            load_balancer_ip="fd00:49::250",
            affinity=True,
            local_only=True,
            endpoints=eps,
        ),
        ServicePortView(
            service="empty",
            namespace="default",
            port_name="",
            protocol="udp",
            cluster_ip="fd00:10:96::b",
            port=53,
            node_port=None,
            external_ips=(),
            load_balancer_ip=None,
            affinity=False,
            local_only=False,
        ),
    ]
    text = render_nftables("node1", ports, "fd00:10:244::/56", service_cidr="fd00:10:96::/112", node_ips=["fd00:49::2"])
    failure = trial([LoadNftables("trial", "kube-proxy", text=text)])
    assert failure is None, f"{failure}\n{text}"


LAB6: dict[str, Any] = {
    "name": "kpnft6",
    "cluster": {
        "backend": "host-gw",
        "proxy_mode": "nftables",
        "pod_cidr": "fd00:10:244::/56",  # node1 leases fd00:10:244::/64, node2 fd00:10:244:1::/64
        "underlay": {"subnet": "fd00:49::/64"},
        "nodes": {"node1": {}, "node2": {}},
        "pods": {
            "client": {"node": "node1"},
            "web-a": {"node": "node1", "labels": {"app": "web"}, "serve": ["tcp/8080"]},
            "web-b": {"node": "node2", "labels": {"app": "web"}, "serve": ["tcp/8080"]},
        },
        "services": {
            "web": {
                "cluster_ip": "fd00:10:96::a",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "target_port": 8080}],
            }
        },
    },
}


def test_ipv6_cluster_ip_spreads_without_snat_and_hairpins(netlab_lab: LabFactory) -> None:
    """kube-proxy's IPv6 proxier: table `ip6 kube-proxy`, the same datapath."""
    lab = netlab_lab(LAB6, unique=True)
    assert "table ip6 kube-proxy" in lab.exec("node1", "nft", "list", "tables", check=True).stdout
    results = lab.probe("client", "[fd00:10:96::a]:80", count=20)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert {r.served_by for r in results} == {"web-a", "web-b"}
    assert {r.server_saw for r in results} == {lab.address("client")}
    to_self = [r for r in lab.probe("web-a", "[fd00:10:96::a]:80", count=20) if r.served_by == "web-a"]
    assert to_self and {r.server_saw for r in to_self} == {"fd00:10:244::1"}, [r.detail for r in to_self]
