"""Services in a `cluster:` with kube-proxy's iptables mode, on the real kernel: the rules
netlab writes (k8s-datapaths.md §1) are loaded with iptables-nft-restore into every node,
and real traffic shows what the article shows — a ClusterIP spreads over its endpoints,
a pod's connection is not SNATed, a pod reaching itself through the VIP works only
because of the hairpin KUBE-MARK-MASQ, and NodePort traffic from outside is masqueraded."""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle

VIP = "10.96.0.10"

LAB: dict[str, Any] = {
    "name": "kpipt",
    "cluster": {
        "backend": "host-gw",
        "nodes": {"node1": {}, "node2": {}},
        "pods": {
            "client": {"node": "node1", "labels": {"app": "client"}},
            "web-a": {"node": "node1", "labels": {"app": "web"}, "serve": ["tcp/8080"]},
            "web-b": {"node": "node2", "labels": {"app": "web"}, "serve": ["tcp/8080"]},
        },
        "services": {
            "web": {
                "type": "NodePort",
                "cluster_ip": VIP,
                "selector": {"app": "web"},
                "ports": [{"port": 80, "target_port": 8080, "node_port": 30080}],
            },
        },
    },
    "nodes": {
        "outside": {"links": {"eth0": {"peer": "underlay:outside", "addresses": ["192.168.49.100/24"]}}},
    },
}


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def _ruleset(lab: LabHandle, node: str) -> str:
    return lab.exec(node, "iptables-nft-save", check=True).stdout


def test_kube_proxy_chains_are_there(lab: LabHandle) -> None:
    rules = _ruleset(lab, "node1")
    for needle in (
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "KUBE-SVC-",
        "KUBE-SEP-",
        "--probability 0.50000000000",
        "--to-destination 10.244.0.3:8080",
        "MASQUERADE --random-fully",
    ):
        assert needle in rules, f"{needle!r} missing from node1's iptables-nft-save:\n{rules}"


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
    assert to_self, "DNAT never picked web-a itself in 20 tries"
    # The SEP's `-s 10.244.0.3 -j KUBE-MARK-MASQ`: web-a sees its node's cni0, not itself.
    assert {r.server_saw for r in to_self} == {"10.244.0.1"}, [r.detail for r in to_self]


def test_node_port_from_outside_is_masqueraded(lab: LabHandle) -> None:
    results = lab.probe("outside", "192.168.49.3:30080", count=10)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert lab.address("outside") not in {r.server_saw for r in results}, "externalTrafficPolicy Cluster SNATs"


def test_without_the_hairpin_masquerade_a_pod_cannot_reach_itself(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(LAB, unique=True)  # its own copy: this test breaks it
    rules = _ruleset(lab, "node1")
    hairpin = [line for line in rules.splitlines() if "-s 10.244.0.3/32" in line and "KUBE-MARK-MASQ" in line]
    assert len(hairpin) == 1, rules
    lab.exec("node1", "iptables-nft", "-t", "nat", "-D", *shlex.split(hairpin[0])[1:], check=True)
    results = lab.probe("web-a", f"{VIP}:80", count=20, timeout=0.5)
    to_self = [r for r in results if not r.ok]
    assert to_self, "every connection went to web-b; DNAT never picked web-a"
    assert all(r.outcome == "timeout" for r in to_self), [r.detail for r in to_self]
    assert all(r.served_by == "web-b" for r in results if r.ok)


def test_pod_ports_are_hairpin_as_the_cni_plugin_sets_them(lab: LabHandle) -> None:
    import json

    (link,) = json.loads(lab.exec("node1", "ip", "-d", "-j", "link", "show", "vethweb-a", check=True).stdout)
    assert link["linkinfo"]["info_slave_data"]["hairpin"] is True, link
