"""Network policy semantics on the real kernel (`cluster.policies` → `table inet
network-policy` on each node): real connections between pods, checked against what
Kubernetes NetworkPolicy says should happen, and which rule the kernel says dropped them.

One lab for most tests: two host-gw nodes, pods in two namespaces, and two hosts outside
the cluster on the underlay (for ip_block).

    n1: client (app=client), stranger (app=stranger), mute (app=mute, egress isolated)
    n2: server (app=server), peer (app=client, same node as server), open (app=open, no policy)
    ops namespace (team=ops) on n2: scraper (app=scraper), batch (app=batch)
    outside: ext-ok 192.168.49.101, ext-no 192.168.49.100
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from netlab.lab.policy import DEFAULT_DENY
from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

LAB: dict[str, Any] = {
    "name": "netpol",
    "cluster": {
        "backend": "host-gw",
        "nodes": {"n1": {}, "n2": {}},
        "namespaces": {"ops": {"labels": {"team": "ops"}}},
        "pods": {
            "client": {"node": "n1", "labels": {"app": "client"}, "serve": ["tcp/80"]},
            "stranger": {"node": "n1", "labels": {"app": "stranger"}},
            "mute": {"node": "n1", "labels": {"app": "mute"}, "serve": ["tcp/80"]},
            "server": {
                "node": "n2",
                "labels": {"app": "server"},
                "serve": ["tcp/80", "tcp/81", "tcp/9105", "tcp/9111", "udp/53", "udp/54"],
            },
            "peer": {"node": "n2", "labels": {"app": "client"}},
            "open": {"node": "n2", "labels": {"app": "open"}, "serve": ["tcp/80"]},
            "scraper": {"node": "n2", "namespace": "ops", "labels": {"app": "scraper"}},
            "batch": {"node": "n2", "namespace": "ops", "labels": {"app": "batch"}},
        },
        "policies": {
            "server-in": {
                "pod_selector": {"app": "server"},
                "ingress": [
                    # pods labelled app=client (any node), TCP 80, a port range, UDP 53
                    {
                        "from": [{"pod_selector": {"app": "client"}}],
                        "ports": [{"port": 80}, {"port": 9100, "end_port": 9110}, {"protocol": "UDP", "port": 53}],
                    },
                    # namespace ops AND app=scraper (one peer: both must hold), any port
                    {"from": [{"namespace_selector": {"team": "ops"}, "pod_selector": {"app": "scraper"}}]},
                    # outside the cluster: the underlay, but not 192.168.49.100
                    {
                        "from": [{"ip_block": {"cidr": "192.168.49.0/24", "except": ["192.168.49.100/32"]}}],
                        "ports": [{"port": 80}],
                    },
                ],
                # client may use port 80, but never port 9110 (a deny beats the range allow)
                "ingress_deny": [{"from": [{"pod_selector": {"app": "client"}}], "ports": [{"port": 9110}]}],
            },
            "mute-out": {
                "pod_selector": {"app": "mute"},
                "policy_types": ["egress"],  # no egress rule: it may open nothing
            },
        },
    },
    "nodes": {
        "ext-ok": {
            "links": {"eth0": {"peer": "underlay:ext-ok", "addresses": ["192.168.49.101/24"]}},
            "routes": [{"to": "10.244.1.0/24", "via": "192.168.49.3"}],
        },
        "ext-no": {
            "links": {"eth0": {"peer": "underlay:ext-no", "addresses": ["192.168.49.100/24"]}},
            "routes": [{"to": "10.244.1.0/24", "via": "192.168.49.3"}],
        },
    },
}


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def _table(lab: LabHandle, node: str) -> str:
    return lab.exec(node, "nft", "list", "table", "inet", "network-policy").stdout


def _allowed(lab: LabHandle, frm: str, to: str, port: int, proto: str = "tcp") -> None:
    r = lab.probe(frm, to, port=port, proto=proto)
    assert r.ok and r.served_by == to, f"{frm} → {to}:{port}/{proto} should pass: {r.detail}\n{_table(lab, 'n2')}"
    assert r.server_saw == r.src, f"policy must not NAT: {r.detail}"


def _dropped(lab: LabHandle, frm: str, to: str, port: int, by: str, proto: str = "tcp") -> None:
    r = lab.probe(frm, to, port=port, proto=proto, timeout=0.4)
    assert r.outcome == "timeout", f"{frm} → {to}:{port}/{proto} should be dropped, saw {r.outcome}: {r.detail}"
    drop = lab.policy_drop(r)
    assert drop is not None, f"no recorded drop for {r.src} → {r.dst}:{r.dport}\n{_table(lab, 'n1')}{_table(lab, 'n2')}"
    assert drop.by == by, f"dropped by {drop.rule}, expected {by}"


def test_a_pod_no_policy_selects_takes_everything(lab: LabHandle) -> None:
    for frm in ("client", "stranger", "scraper", "batch", "server"):
        _allowed(lab, frm, "open", 80)


def test_an_isolated_pod_takes_only_what_a_rule_allows(lab: LabHandle) -> None:
    _allowed(lab, "client", "server", 80)  # app=client, across nodes
    _allowed(lab, "client", "server", 9105)  # inside the range 9100-9110
    _allowed(lab, "client", "server", 53, proto="udp")
    _dropped(lab, "client", "server", 81, DEFAULT_DENY)  # not an allowed port
    _dropped(lab, "client", "server", 9111, DEFAULT_DENY)  # just past the range
    _dropped(lab, "client", "server", 54, DEFAULT_DENY, proto="udp")
    _dropped(lab, "stranger", "server", 80, DEFAULT_DENY)  # not app=client


def test_bridged_traffic_on_the_same_node_meets_the_policy_too(lab: LabHandle) -> None:
    # peer and server share n2's cni0: the frames are bridged, and only because the node
    # has bridge-nf-call-iptables=1 do they cross the forward hook at all
    _allowed(lab, "peer", "server", 80)
    _dropped(lab, "peer", "server", 81, DEFAULT_DENY)
    sysctl = lab.exec("n2", "sysctl", "-n", "net.bridge.bridge-nf-call-iptables", check=True).stdout
    assert sysctl.strip() == "1"


def test_namespace_and_pod_selector_in_one_peer_both_must_hold(lab: LabHandle) -> None:
    _allowed(lab, "scraper", "server", 81)  # ops AND app=scraper: every port
    _dropped(lab, "batch", "server", 81, DEFAULT_DENY)  # ops, but app=batch


def test_ip_block_with_an_exception(lab: LabHandle) -> None:
    _allowed(lab, "ext-ok", "server", 80)
    _dropped(lab, "ext-no", "server", 80, DEFAULT_DENY)


def test_a_deny_rule_wins_over_an_allow(lab: LabHandle) -> None:
    _dropped(lab, "client", "server", 9110, "server-in")


def test_replies_pass_where_new_connections_do_not(lab: LabHandle) -> None:
    # mute is isolated for egress with no rule: it answers connections (their replies are
    # established), but opens none
    _allowed(lab, "client", "mute", 80)
    _dropped(lab, "mute", "open", 80, DEFAULT_DENY)
    r = lab.probe("mute", "client", port=80, timeout=0.4)
    assert r.outcome == "timeout", r.detail


def test_the_kernel_holds_sets_of_pod_addresses_and_counts_drops(lab: LabHandle) -> None:
    table = _table(lab, "n2")
    members = sorted([lab.address("client"), lab.address("peer")])
    assert f"elements = {{ {members[0]}, {members[1]} }}" in table, table
    assert "ip daddr vmap {" in table and "jump ingress-server" in table, table
    _dropped(lab, "stranger", "server", 80, DEFAULT_DENY)
    after = _table(lab, "n2")
    counted = re.search(
        r'counter packets (\d+) bytes \d+ drop comment "drop \d+: default-deny, ingress of pod '
        r'default/server"',
        after,
    )
    assert counted and int(counted.group(1)) > 0, after
    assert _table(lab, "n1").count("chain ") == 2, _table(lab, "n1")  # forward and egress-mute: n1's isolated pod


def test_without_policies_no_table_is_made(netlab_lab: LabFactory) -> None:
    spec = {
        "name": "nopol",
        "cluster": {"backend": "host-gw", "nodes": {"n1": {}}, "pods": {"a": {"serve": ["tcp/80"]}, "b": {}}},
    }
    lab = netlab_lab(spec, unique=True)
    r = lab.probe("b", "a", port=80)
    assert r.ok, r.detail
    listed = lab.exec("n1", "nft", "list", "tables").stdout
    assert "network-policy" not in listed, listed


def test_egress_to_a_service_is_judged_on_its_endpoints(netlab_lab: LabFactory) -> None:
    # kube-proxy DNATs in prerouting, before the forward hook: an egress rule names the
    # endpoint pods and their target port, not the service address
    spec = {
        "name": "netpol-svc",
        "cluster": {
            "backend": "host-gw",
            "nodes": {"n1": {}, "n2": {}},
            "pods": {
                "client": {"node": "n1", "labels": {"app": "client"}},
                "web": {"node": "n2", "labels": {"app": "web"}, "serve": ["tcp/8080"]},
                "db": {"node": "n2", "labels": {"app": "db"}, "serve": ["tcp/5432"]},
            },
            "services": {
                "web": {"selector": {"app": "web"}, "ports": [{"port": 80, "target_port": 8080}]},
                "db": {"selector": {"app": "db"}, "ports": [{"port": 5432}]},
            },
            "policies": {
                "client-out": {
                    "pod_selector": {"app": "client"},
                    "egress": [{"to": [{"pod_selector": {"app": "web"}}], "ports": [{"port": 8080}]}],
                }
            },
        },
    }
    lab = netlab_lab(spec, unique=True)
    web_vip, db_vip = "10.96.0.10", "10.96.0.11"
    r = lab.probe("client", web_vip, port=80)
    assert r.ok and r.served_by == "web", r.detail
    r = lab.probe("client", db_vip, port=5432, timeout=0.4)
    assert r.outcome == "timeout", r.detail
    drop = lab.policy_drop(r)
    assert drop is not None and drop.by == DEFAULT_DENY and drop.daddr == lab.address("db"), drop


def test_ipv6_pods(netlab_lab: LabFactory) -> None:
    spec = {
        "name": "netpol6",
        "cluster": {
            "backend": "vxlan",
            "pod_cidr": "fd10:244::/56",
            "nodes": {"n1": {}, "n2": {}},
            "pods": {
                "client": {"node": "n1", "labels": {"app": "client"}},
                "near": {"node": "n2", "labels": {"app": "near"}},
                "server": {"node": "n2", "labels": {"app": "server"}, "serve": ["tcp/80", "tcp/81"]},
            },
            "policies": {
                "server-in": {
                    "pod_selector": {"app": "server"},
                    "ingress": [
                        {
                            "from": [{"pod_selector": {"app": "client"}}, {"pod_selector": {"app": "near"}}],
                            "ports": [{"port": 80}],
                        }
                    ],
                }
            },
        },
    }
    lab = netlab_lab(spec, unique=True)
    for frm in ("client", "near"):  # across the vxlan, and bridged next door (neighbour discovery passes)
        r = lab.probe(frm, "server", port=80)
        assert r.ok and r.server_saw == lab.address(frm), r.detail
        r = lab.probe(frm, "server", port=81, timeout=0.4)
        assert r.outcome == "timeout", r.detail
        drop = lab.policy_drop(r)
        assert drop is not None and drop.by == DEFAULT_DENY and drop.proto == "tcp", drop


def test_a_check_names_the_rule_that_dropped_and_fails_on_the_wrong_one(netlab_lab: LabFactory) -> None:
    spec = {
        **LAB,
        "name": "netpol-chk",
        "checks": [
            {
                "name": "right",
                "probe": {"from": "client", "to": "server:9110", "timeout": 0.4},
                "expect": {"result": "timeout", "dropped_by": "server-in"},
            },
            {
                "name": "wrong",
                "probe": {"from": "stranger", "to": "server:80", "timeout": 0.4},
                "expect": {"result": "timeout", "dropped_by": "server-in"},
            },
            {
                "name": "not dropped at all",
                "probe": {"from": "client", "to": "open:81", "timeout": 0.4},
                "expect": {"result": "fail", "dropped_by": DEFAULT_DENY},
            },
        ],
    }
    lab = netlab_lab(spec, unique=True)
    right, wrong, refused = lab.run_checks()
    assert right.passed, right
    assert "dropped on n2 by policy server-in ingress_deny[0]" in right.summary, right.summary
    assert not wrong.passed, wrong
    assert wrong.reasons == [
        "expected the probe to be dropped by server-in, it was dropped on n2 by "
        "default-deny, ingress of pod default/server"
    ], wrong.reasons
    assert not refused.passed and "no policy recorded dropping" in refused.reasons[0], refused.reasons


test_network_policy_lab = lab_checks("labs/network-policy.yaml")
