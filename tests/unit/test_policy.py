"""Network policy without a kernel: the model's defaults, compilation to nftables text,
how complaints point at their keys, and reading recorded drops back (netlab.probes.drops).
The real-kernel semantics are tests/kernel/test_network_policy.py."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.errors import LabError
from netlab.expand.policy import _comment, _port_matches, check_dropped_by
from netlab.kernel.drops import parse_drops
from netlab.lab.model import Lab
from netlab.lab.policy import NetworkPolicy, PolicyPort
from netlab.lab.render import render_yaml
from netlab.load import load_lab_data, load_lab_text
from netlab.observations import Drop
from netlab.probes.drops import drop_of, drop_rules, drops_summary
from netlab.probes.flow import ProbeResult


def _lab(policies: dict[str, Any], pods: dict[str, Any] | None = None, **extra: Any) -> Lab:
    spec = {
        "name": "p",
        "cluster": {
            "backend": "host-gw",
            "nodes": {"n1": {}, "n2": {}},
            "pods": pods or {"a": {"node": "n1", "labels": {"app": "a"}}, "b": {"node": "n2", "labels": {"app": "b"}}},
            "policies": policies,
            **extra,
        },
    }
    return load_lab_data(spec)


def _ruleset(lab: Lab, node: str) -> str:
    texts = [r.ruleset for r in lab.nodes[node].nftables if r.ruleset and "network-policy" in r.ruleset]
    assert len(texts) <= 1
    return texts[0] if texts else ""


def test_policy_types_default_as_kubernetes() -> None:
    assert NetworkPolicy().types() == ("ingress",)
    assert NetworkPolicy.model_validate({"egress": [{}]}).types() == ("ingress", "egress")
    assert NetworkPolicy.model_validate({"egress_deny": [{}]}).types() == ("ingress", "egress")
    assert NetworkPolicy.model_validate({"policy_types": ["Egress"]}).types() == ("egress",)


@pytest.mark.parametrize(
    ("ports", "want"),
    [
        ([], [""]),
        ([{"port": 80}], ["meta l4proto tcp th dport 80"]),
        (
            [{"port": 80}, {"port": 8000, "end_port": 8100}, {"protocol": "udp", "port": 53}],
            ["meta l4proto tcp th dport { 80, 8000-8100 }", "meta l4proto udp th dport 53"],
        ),
        ([{"port": 80}, {"protocol": "TCP"}], ["meta l4proto tcp"]),  # a port-less entry takes every port
        ([{"protocol": "SCTP", "port": 9, "end_port": 9}], ["meta l4proto sctp th dport 9"]),
    ],
)
def test_ports_group_by_protocol(ports: list[dict[str, Any]], want: list[str]) -> None:
    assert list(_port_matches(PolicyPort.model_validate(p) for p in ports)) == want


def test_only_nodes_with_isolated_pods_get_a_table_and_the_bridge_sysctl() -> None:
    lab = _lab({"b-in": {"pod_selector": {"app": "b"}, "ingress": [{"from": [{"pod_selector": {"app": "a"}}]}]}})
    assert _ruleset(lab, "n1") == "" and "net.bridge.bridge-nf-call-iptables" not in lab.nodes["n1"].sysctls
    table = _ruleset(lab, "n2")
    assert lab.nodes["n2"].sysctls["net.bridge.bridge-nf-call-iptables"] == 1
    a = lab.nodes["a"].links["eth0"].addresses[0].split("/")[0]
    assert f"elements = {{ {a} }}" in table
    assert "ip saddr @from-b-in-0 counter accept" in table
    assert 'counter drop comment "drop 1: default-deny, ingress of pod default/b"' in table
    assert "set dropped {" in table
    assert "meta mark set 1 update @dropped { ip saddr . ip daddr . meta l4proto . th dport . meta mark }" in table


def test_an_allow_everything_rule_and_a_pod_isolated_with_no_rule() -> None:
    lab = _lab(
        {
            "b-in": {"pod_selector": {"app": "b"}, "ingress": [{}]},
            "b-out": {"pod_selector": {"app": "b"}, "policy_types": ["egress"]},
        }
    )
    table = _ruleset(lab, "n2")
    assert '\t\tcounter accept comment "allow: policy b-in ingress[0]"' in table
    egress = table.split("chain egress-b {")[1].split("\n\t}")[0]
    assert "return" not in egress and "drop comment" in egress  # isolated with no rule: nothing leaves


def test_deny_rules_come_before_allows_and_egress_allows_return() -> None:
    lab = _lab(
        {
            "a-out": {
                "pod_selector": {"app": "a"},
                "policy_types": ["egress"],
                "egress": [{"to": [{"pod_selector": {"app": "b"}}]}],
                "egress_deny": [{"to": [{"ip_block": {"cidr": "10.244.1.0/24"}}], "ports": [{"port": 22}]}],
            }
        }
    )
    chain = _ruleset(lab, "n1").split("chain egress-a {")[1]
    deny = chain.index("ip daddr 10.244.1.0/24 meta l4proto tcp th dport 22 counter drop")
    allow = chain.index("ip daddr @to-a-out-0 counter return")
    assert deny < allow < chain.index("default-deny")


def test_ipv6_lets_neighbour_discovery_through() -> None:
    lab = _lab({"b-in": {"pod_selector": {"app": "b"}}}, pod_cidr="fd10:244::/56", backend="vxlan")
    table = _ruleset(lab, "n2")
    assert "icmpv6 type { nd-neighbor-solicit" in table and "typeof ip6 saddr . ip6 daddr" in table
    assert lab.nodes["n2"].sysctls["net.bridge.bridge-nf-call-ip6tables"] == 1


def test_a_service_selects_pods_of_its_own_namespace() -> None:
    pods = {"a": {"labels": {"app": "web"}, "namespace": "shop"}, "b": {"labels": {"app": "web"}}}
    lab = load_lab_data(
        {
            "name": "s",
            "cluster": {
                "nodes": {"n1": {}},
                "pods": pods,
                "services": {"web": {"namespace": "shop", "selector": {"app": "web"}, "ports": [{"port": 80}]}},
            },
        }
    )
    rules = lab.nodes["n1"].iptables[0].save
    assert rules is not None and rules.count("-j DNAT") == 1
    with pytest.raises(LabError, match="it matches pods of namespace shop"):
        load_lab_data(
            {
                "name": "s",
                "cluster": {
                    "nodes": {"n1": {}},
                    "pods": {"a": pods["a"]},
                    "services": {"web": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
                },
            }
        )


def test_dropped_by_is_checked_in_an_explicit_lab_by_the_rulesets_comments() -> None:
    spec = {
        "name": "p",
        "cluster": {
            "backend": "host-gw",
            "nodes": {"n1": {}},
            "pods": {"a": {"labels": {"app": "a"}}, "b": {"labels": {"app": "b"}}},
            "policies": {
                "b-in": {"pod_selector": {"app": "b"}, "ingress_deny": [{"from": [{"pod_selector": {"app": "a"}}]}]}
            },
        },
        "checks": [
            {"name": "x", "probe": {"from": "a", "to": "b:80"}, "expect": {"result": "timeout", "dropped_by": "b-in"}}
        ],
    }
    explicit = load_lab_data(spec)
    assert list(check_dropped_by(explicit)) == []
    rendered = load_lab_text(render_yaml(explicit), "rendered.yaml")  # what `netlab render` prints loads
    assert rendered.checks[0].expect.dropped_by == "b-in"  # type: ignore[union-attr]
    bad = explicit.model_copy(
        update={
            "checks": [
                explicit.checks[0].model_copy(
                    update={"expect": explicit.checks[0].expect.model_copy(update={"dropped_by": "nope"})}
                )
            ]
        }
    )
    ((path, message),) = check_dropped_by(bad)
    assert path == ("checks", 0, "expect", "dropped_by") and "b-in" in message and "default-deny" in message


def test_comments_stay_within_libnftnl_limit() -> None:
    assert _comment('a "b"') == "\"a 'b'\""
    long = _comment("drop 9: default-deny, ingress of pod " + "x" * 63 + "/" + "é" * 48)
    assert len(long.encode()) <= 129 and long.endswith('..."')


# ---------------------------------------------------------------- reading drops back

RULESET = """table inet network-policy {
	chain ingress-b {
		ip saddr @deny-from-b-in-0 meta mark set 1 update @dropped { ip saddr . ip daddr . meta l4proto . th dport }
		ip saddr @deny-from-b-in-0 counter drop comment "drop 1: policy b-in ingress_deny[0]"
		meta mark set 2 update @dropped { ip saddr . ip daddr . meta l4proto . th dport . meta mark }
		counter drop comment "drop 2: default-deny, ingress of pod default/b"
	}
}"""


def _set(*elems: tuple[list[Any], int]) -> dict[str, Any]:
    return {
        "nftables": [
            {"metainfo": {}},
            {
                "set": {
                    "family": "inet",
                    "name": "dropped",
                    "table": "network-policy",
                    "timeout": 600,
                    "elem": [{"elem": {"val": {"concat": key}, "expires": expires}} for key, expires in elems],
                }
            },
        ]
    }


def _result(
    outcome: str = "timeout", dst: str = "10.244.1.2", dport: int | None = 81, proto: str = "tcp"
) -> ProbeResult:
    return ProbeResult(outcome, proto, "10.244.0.2", 40000, dst, dport, None, None, None, None, outcome, None)  # type: ignore[arg-type]


def test_parse_drops_names_each_rule_by_its_comment() -> None:
    drops = parse_drops(
        "n2",
        drop_rules(RULESET),
        _set(
            (["10.244.0.2", "10.244.1.2", "tcp", 81, 1], 598),
            (["10.244.0.9", "10.244.1.2", "udp", 53, "0x00000002"], 540),
        ),
    )
    assert [(d.rule, d.by, d.age) for d in drops] == [
        ("policy b-in ingress_deny[0]", "b-in", 2),
        ("default-deny, ingress of pod default/b", "default-deny", 60),
    ]


def test_drop_of_matches_the_flow_and_only_timeouts() -> None:
    drops = [
        Drop("n2", "default-deny, ingress of pod default/b", "10.244.0.2", "10.244.1.2", "tcp", 81, 30),
        Drop("n2", "policy b-in ingress_deny[0]", "10.244.0.2", "10.244.1.3", "tcp", 8080, 1),
    ]
    assert drop_of(_result(), drops) is drops[0]
    assert drop_of(_result("refused"), drops) is None  # an answer, not a drop
    assert drop_of(_result(dport=82), drops) is drops[1]  # DNATed: the fresh entry from this source
    assert drop_of(_result(proto="udp"), drops) is None
    stale = [Drop("n2", "x", "10.244.0.2", "10.244.1.3", "tcp", 8080, 120)]
    assert drop_of(_result(dport=82), stale) is None
    assert drops_summary([_result(), _result()], drops) == "; dropped on n2 by default-deny, ingress of pod default/b"
