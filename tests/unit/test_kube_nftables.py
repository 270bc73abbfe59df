"""kube-proxy's nftables mode (rootless): the names and hashes are kube-proxy's own, the
table is the one its proxier writes (tests/data/kube-proxy-nftables.nft, from
TestOverallNFTablesRules), every chain is added before a rule names it, and a cluster in
`proxy_mode: nftables` gives each node that table as an `nftables:` ruleset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from netlab.expand.kube_nftables import chain_base, endpoint_base, hash_and_truncate, render_nftables
from netlab.expand.services import Endpoint, ServicePortView
from netlab.load import load_lab_data

DATA = Path(__file__).resolve().parents[1] / "data"


def port(
    ns: str = "ns1",
    svc: str = "svc1",
    name: str = "p80",
    *,
    proto: str = "tcp",
    vip: str = "172.30.0.41",
    number: int = 80,
    eps: tuple[tuple[str, str, int], ...] = (),
    **kw: Any,
) -> ServicePortView:
    fields: dict[str, Any] = {
        "node_port": None,
        "external_ips": (),
        "load_balancer_ip": None,
        "affinity": False,
        "local_only": False,
        **kw,
    }
    return ServicePortView(
        service=svc,
        namespace=ns,
        port_name=name,
        protocol=proto,
        cluster_ip=vip,
        port=number,
        endpoints=tuple(Endpoint(f"pod{i}", node, ip, p) for i, (node, ip, p) in enumerate(eps)),
        **fields,
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


# ---------------------------------------------------------------- names: kube-proxy's hashAndTruncate


@pytest.mark.parametrize(
    ("name", "h8"),
    [
        # chain names in pkg/proxy/nftables/proxier_test.go (TestOverallNFTablesRules)
        ("ns1/svc1/tcp/p80", "ULMVA6XW"),
        ("ns4/svc4/tcp/p80", "LAUZTJTB"),
        ("ns1/svc1/tcp/p80__10.180.0.1/80", "5OJB2KTY"),
        ("ns5/svc5/tcp/p80__10.180.0.3/80", "GTK6MW7G"),  # its endpoint chain and its affinity set
        ("ns1/svc1/tcp/p80__fd00.10.180..2.1/80", "2CRNCTTE"),  # IPv6: `:` becomes `.`
    ],
)
def test_hash_is_kube_proxys(name: str, h8: str) -> None:
    assert hash_and_truncate(name) == f"{h8}-{name}"


def test_chain_names_from_a_service_port() -> None:
    sp = port(eps=(("n", "10.180.0.1", 80),))
    assert chain_base(sp) == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert endpoint_base(sp, sp.endpoints[0]) == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    v6 = port(vip="fd00:10:96::1", eps=(("n", "fd00:10:180::2:1", 80),))
    assert endpoint_base(v6, v6.endpoints[0]) == "2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80"
    assert chain_base(port(name="")) == hash_and_truncate("ns1/svc1/tcp/")  # an unnamed port: empty last part


def test_long_names_are_cut_to_240_characters_with_the_hash_kept() -> None:
    name = "n" * 63 + "/" + "s" * 63 + "/sctp/" + "p" * 63 + "__" + "f" * 39 + "/65535"
    cut = hash_and_truncate(name)
    assert len(cut) == 240 and cut.endswith("...") and cut.startswith(hash_and_truncate(name)[:9])


# ---------------------------------------------------------------- the table


def test_the_table_is_kube_proxys_own() -> None:
    """ns4/svc4 of TestOverallNFTablesRules, with tests/data's endpoints: the same lines,
    in the same order, as the dump written from kube-proxy's expected output."""
    sp = port("ns4", "svc4", vip="172.30.0.44", eps=(("other", "10.180.0.4", 8080), ("other", "10.180.0.5", 8080)))
    text = render_nftables("test-node", [sp], "10.0.0.0/8", service_cidr="172.30.0.0/16", node_ips=["192.168.0.2"])
    assert lines(text) == lines((DATA / "kube-proxy-nftables.nft").read_text())


def _declared_before_use(text: str) -> None:
    declared: set[str] = set()
    for n, line in enumerate(lines(text), 1):
        m = re.match(r"add (chain|set|map) ip6? kube-proxy (\S+)", line)
        if m:
            declared.add(m[2])
            continue
        used = re.findall(r"(?:goto|jump) ([\w./-]+)", line) + re.findall(r"@([\w./-]+)", line)
        missing = [u for u in used if u not in declared]
        assert not missing, f"line {n} names {missing} before they are added: {line}"


def test_every_chain_and_set_is_added_before_a_rule_names_it() -> None:
    sp = port(
        eps=(("n1", "10.180.0.1", 80), ("n2", "10.180.0.2", 80)),
        affinity=True,
        node_port=30001,
        local_only=True,
        external_ips=("192.168.99.22",),
        load_balancer_ip="1.2.3.4",
    )
    _declared_before_use(render_nftables("n1", [sp], "10.0.0.0/8", service_cidr="172.30.0.0/16"))


def test_cluster_ip_spreads_with_numgen_and_marks_only_traffic_from_outside_the_pods() -> None:
    sp = port(eps=(("n", "10.180.0.1", 80), ("n", "10.180.2.1", 80), ("n", "10.180.3.1", 80)))
    text = render_nftables("n", [sp], "10.0.0.0/8")
    svc, e = "service-ULMVA6XW-ns1/svc1/tcp/p80", [f"endpoint-{endpoint_base(sp, ep)}" for ep in sp.endpoints]
    assert f"add rule ip kube-proxy {svc} ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade" in text
    assert (
        f"add rule ip kube-proxy {svc} numgen random mod 3 vmap {{ 0 : goto {e[0]} , 1 : goto {e[1]} , "
        f"2 : goto {e[2]} }}"
    ) in text
    assert f"add rule ip kube-proxy {e[1]} ip saddr 10.180.2.1 jump mark-for-masquerade" in text  # hairpin
    assert f"add rule ip kube-proxy {e[1]} meta l4proto tcp dnat to 10.180.2.1:80" in text
    assert "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto " + svc + " }" in text
    assert "cluster-ips-check ip daddr { " not in text  # no service CIDR given: no "unallocated" drop


def test_client_ip_affinity_uses_timed_sets() -> None:
    sp = port(eps=(("n", "10.180.0.3", 80),), affinity=True)
    text = render_nftables("n", [sp], "10.0.0.0/8")
    b = endpoint_base(sp, sp.endpoints[0])
    assert f"add set ip kube-proxy affinity-{b} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}" in text
    assert f"ip saddr @affinity-{b} goto endpoint-{b}" in text
    assert f"add rule ip kube-proxy endpoint-{b} update @affinity-{b} {{ ip saddr }}" in text
    rules = [line for line in lines(text) if line.startswith(f"add rule ip kube-proxy endpoint-{b} ")]
    assert ["jump mark-for-masquerade" in rules[0], "update" in rules[1], "dnat" in rules[2]] == [True] * 3


def test_a_service_without_endpoints_is_rejected_everywhere() -> None:
    sp = port(node_port=3001, external_ips=("192.168.99.11",), load_balancer_ip="1.2.3.4")
    text = render_nftables("n", [sp], "10.0.0.0/8")
    assert "add chain ip kube-proxy service-ULMVA6XW" not in text and "external-" not in text
    for element in (
        'no-endpoint-services { 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }',
        'no-endpoint-services { 192.168.99.11 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }',
        'no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }',
        'no-endpoint-nodeports { tcp . 3001 comment "ns1/svc1:p80" : goto reject-chain }',
    ):
        assert f"add element ip kube-proxy {element}" in text
    assert "add element ip kube-proxy cluster-ips { 172.30.0.41 }" in text


def test_local_policy_keeps_the_client_and_drops_where_no_endpoint_runs() -> None:
    sp = port(
        "ns2",
        "svc2",
        vip="172.30.0.42",
        eps=(("n2", "10.180.0.2", 80),),
        node_port=3001,
        local_only=True,
        external_ips=("192.168.99.22",),
        load_balancer_ip="1.2.3.4",
    )
    ext = "external-42NFTM6N-ns2/svc2/tcp/p80"
    here = render_nftables("n2", [sp], "10.0.0.0/8")
    assert f"add rule ip kube-proxy {ext} ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80" in here
    assert f"add rule ip kube-proxy {ext} fib saddr type local jump mark-for-masquerade" in here
    assert f"add rule ip kube-proxy {ext} goto local-42NFTM6N-ns2/svc2/tcp/p80" in here
    assert f"add rule ip kube-proxy {ext} jump mark-for-masquerade\n" not in here  # Local: no SNAT for outsiders
    assert "no-endpoint" not in here.split("# ns2/svc2:p80")[1]
    elsewhere = render_nftables("n1", [sp], "10.0.0.0/8")
    assert "local-42NFTM6N" not in elsewhere and f"{ext} goto " not in elsewhere
    for element in (
        'no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }',
        'no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }',
        'no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }',
    ):
        assert f"add element ip kube-proxy {element}" in elsewhere


def test_cluster_policy_external_traffic_is_masqueraded() -> None:
    sp = port("ns3", "svc3", vip="172.30.0.43", eps=(("x", "10.180.0.3", 80),), node_port=3003)
    text = render_nftables("n", [sp], "10.0.0.0/8", node_ips=["192.168.0.2", "2001:db8::1"])
    ext = "external-4AT6LBPK-ns3/svc3/tcp/p80"
    assert [line for line in lines(text) if line.startswith(f"add rule ip kube-proxy {ext} ")] == [
        f"add rule ip kube-proxy {ext} jump mark-for-masquerade",
        f"add rule ip kube-proxy {ext} goto service-4AT6LBPK-ns3/svc3/tcp/p80",
    ]
    assert f"add element ip kube-proxy service-nodeports {{ tcp . 3003 : goto {ext} }}" in text
    assert "add element ip kube-proxy nodeport-ips { 192.168.0.2 }" in text  # only the table's family


def test_ipv6_cluster_gets_an_ip6_table() -> None:
    sp = port(vip="fd00:10:96::1", eps=(("n", "fd00:10:180::2:1", 80),), affinity=True)
    text = render_nftables("n", [sp], "fd00:10::/64", service_cidr="fd00:10:96::/112", node_ips=["192.168.0.2"])
    assert "add table ip6 kube-proxy" in text and " ip kube-proxy " not in text and "ipv4_addr" not in text
    assert "add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop" in text
    assert "nodeport-ips {" not in text.split("add element", 1)[-1]  # no IPv6 node address: the set stays empty
    b = "2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80"
    assert f"add rule ip6 kube-proxy endpoint-{b} meta l4proto tcp dnat to [fd00:10:180::2:1]:80" in text
    assert f"add rule ip6 kube-proxy endpoint-{b} update @affinity-{b} {{ ip6 saddr }}" in text
    assert "ip6 daddr fd00:10:96::1 ip6 saddr != fd00:10::/64 jump mark-for-masquerade" in text
    _declared_before_use(text)


# ---------------------------------------------------------------- the cluster section


def _cluster(**extra: Any) -> dict[str, Any]:
    return {
        "name": "kpnft",
        "cluster": {
            "backend": "host-gw",
            "proxy_mode": "nftables",
            "nodes": {"node1": {}, "node2": {}},
            "pods": {"web": {"replicas": 2, "labels": {"app": "web"}, "serve": ["tcp/8080"]}},
            "services": {
                "web": {
                    "type": "NodePort",
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "target_port": 8080, "node_port": 30080}],
                }
            },
            **extra,
        },
    }


def test_nftables_mode_puts_kube_proxys_table_on_every_node() -> None:
    lab = load_lab_data(_cluster())
    for name, address in (("node1", "192.168.49.2"), ("node2", "192.168.49.3")):
        node = lab.nodes[name]
        assert not node.iptables, "nftables mode writes no iptables dump"
        (ruleset,) = node.nftables
        assert ruleset.ruleset is not None and ruleset.ruleset.startswith(f"# kube-proxy (nftables mode) on {name}")
        assert f"add element ip kube-proxy nodeport-ips {{ {address} }}" in ruleset.ruleset
        assert "cluster-ips-check ip daddr { 10.96.0.0/12 } drop" in ruleset.ruleset
    assert not lab.nodes["web-0"].nftables and not lab.nodes["web-0"].iptables  # pods get nothing


def test_the_users_own_rulesets_come_first() -> None:
    data = _cluster()
    data["cluster"]["nodes"]["node1"] = {"nftables": "table inet mine { }\n"}
    node = load_lab_data(data).nodes["node1"]
    assert [r.ruleset.splitlines()[0] for r in node.nftables if r.ruleset] == [
        "table inet mine { }",
        "# kube-proxy (nftables mode) on node1: pkg/proxy/nftables/proxier.go",
    ]
