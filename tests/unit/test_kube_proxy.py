"""expand/kube_proxy.py (rootless): each proxy mode's writer gives a node a typed
ProxyFragment of lab objects, and expand() puts it on the node after the user's own."""

from __future__ import annotations

import ipaddress

import pytest

from netlab.expand import expand
from netlab.expand.cluster import check_networks, place
from netlab.expand.kube_proxy import kube_proxy, reserved_names
from netlab.expand.services import ProxyFragment, resolve_services
from netlab.lab.ipset import IpSet
from netlab.lab.ipvs import IpvsService
from netlab.lab.model import Dummy, IptablesDump, Lab, NftRuleset
from netlab.lab.source import Complaint


def _lab(mode: str) -> Lab:
    return Lab.model_validate(
        {
            "name": "kp",
            "cluster": {
                "backend": "host-gw",
                "proxy_mode": mode,
                "nodes": {"n1": {}, "n2": {}},
                "pods": {"web": {"replicas": 2, "labels": {"app": "web"}, "serve": ["tcp/8080"]}},
                "services": {
                    "web": {
                        "selector": {"app": "web"},
                        "type": "NodePort",
                        "ports": [{"port": 80, "target_port": 8080}],
                    }
                },
            },
        }
    )


def _fragment(lab: Lab, node: str) -> ProxyFragment:
    cluster = lab.cluster
    assert cluster is not None
    complaints: list[Complaint] = list(check_networks(cluster))
    placement = place(lab, cluster, complaints)
    services = resolve_services(cluster, placement.service_pods(), placement.family, complaints)
    assert complaints == []
    return kube_proxy(cluster, node, services, placement.addresses[node], placement.subnets[node])


def test_iptables_mode_is_one_noflush_dump() -> None:
    f = _fragment(_lab("iptables"), "n1")
    assert [type(d) for d in f.iptables] == [IptablesDump] and f.iptables[0].noflush
    assert "KUBE-SERVICES" in (f.iptables[0].save or "")
    assert (f.links, f.sysctls, f.ipsets, f.nftables, f.ipvs) == ({}, {}, (), (), ())


def test_nftables_mode_is_one_ruleset() -> None:
    f = _fragment(_lab("nftables"), "n1")
    assert [type(r) for r in f.nftables] == [NftRuleset]
    assert "add table ip kube-proxy" in (f.nftables[0].ruleset or "")
    assert (f.iptables, f.ipvs) == ((), ())


def test_ipvs_mode_has_its_dummy_sets_services_and_sysctls() -> None:
    f = _fragment(_lab("ipvs"), "n2")
    assert isinstance(f.links["kube-ipvs0"], Dummy) and not f.links["kube-ipvs0"].up
    assert all(isinstance(s, IpSet) for s in f.ipsets) and "KUBE-CLUSTER-IP" in {s.name for s in f.ipsets}
    assert all(isinstance(s, IpvsService) for s in f.ipvs)
    # the ClusterIP and the NodePort on each of the node's own addresses (eth0, cni0)
    n2 = ipaddress.ip_address("192.168.49.3")
    assert {(s.address, s.port) for s in f.ipvs} >= {(str(n2), 30000)}
    assert f.sysctls["net.ipv4.vs.conntrack"] == 1


def test_no_services_no_fragment() -> None:
    lab = _lab("iptables")
    cluster = lab.cluster
    assert cluster is not None
    complaints: list[Complaint] = []
    placement = place(lab, cluster, complaints)
    assert kube_proxy(cluster, "n1", [], placement.addresses["n1"], placement.subnets["n1"]) == ProxyFragment()


def test_the_fragment_goes_after_the_users_own_objects() -> None:
    lab = _lab("iptables")
    assert lab.cluster is not None
    mine = lab.cluster.nodes["n1"].model_copy(update={"iptables": [IptablesDump(save="*filter\nCOMMIT\n")]})
    cluster = lab.cluster.model_copy(update={"nodes": {**lab.cluster.nodes, "n1": mine}})
    lab = lab.model_copy(update={"cluster": cluster})
    node = expand(lab).lab.nodes["n1"]
    assert [d.save == "*filter\nCOMMIT\n" for d in node.iptables] == [True, False]


@pytest.mark.parametrize(("mode", "clashes"), [("ipvs", 1), ("iptables", 0)])
def test_reserved_names_only_in_ipvs_mode(mode: str, clashes: int) -> None:
    lab = _lab(mode)
    assert lab.cluster is not None
    node = lab.cluster.nodes["n1"].model_copy(update={"links": {"kube-ipvs0": Dummy(kind="dummy")}})
    cluster = lab.cluster.model_copy(update={"nodes": {**lab.cluster.nodes, "n1": node}})
    found = list(reserved_names(cluster))
    assert len(found) == clashes
    if clashes:
        assert found[0][0] == ("cluster", "nodes", "n1", "links", "kube-ipvs0")
        assert "kube-ipvs0 is the dummy kube-proxy's IPVS mode creates" in found[0][1]
