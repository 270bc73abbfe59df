"""ipsets in the lab file and kube-proxy's IPVS mode (rootless): member parsing per type,
the plan's `ipset restore` lines, the preflight's problems at ipset keys, and what the
IPVS proxier's expansion puts on each node (k8s-datapaths.md §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netlab.errors import LabError
from netlab.expand.kube_ipvs import SETS, set_name
from netlab.kernel.features import kernel_hint
from netlab.kernel.ipset import add_message, create_message
from netlab.kernel.nft import Message
from netlab.lab.ipset import parse_element
from netlab.lab.model import Dummy, Lab
from netlab.load import load_lab, load_lab_data, load_lab_located
from netlab.plan.build import build_plan, firewall_ops
from netlab.plan.ops import CreateIpset, RestoreIptables, stage_of
from netlab.preflight import _problems, not_checked_note

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


# ---------------------------------------------------------------- members, as `ipset list` shows them


@pytest.mark.parametrize(
    ("kind", "family", "text", "shown"),
    [
        ("hash:ip", 4, "10.0.0.1", "10.0.0.1"),
        ("hash:ip", 6, "FD00::0001", "fd00::1"),
        ("hash:net", 4, "10.0.0.0/8", "10.0.0.0/8"),
        ("hash:net", 4, "10.0.0.7/32", "10.0.0.7"),  # a host is listed without its /32
        ("hash:ip,port", 4, "10.96.0.10,80", "10.96.0.10,tcp:80"),  # a bare port is TCP
        ("hash:ip,port", 4, "10.96.0.10,UDP:53", "10.96.0.10,udp:53"),
        ("hash:ip,port,ip", 4, "10.244.0.3,tcp:8080,10.244.0.3", "10.244.0.3,tcp:8080,10.244.0.3"),
        ("hash:ip,port,net", 6, "fd00::1,sctp:3868,fd01::/64", "fd00::1,sctp:3868,fd01::/64"),
        ("hash:net,port,net", 4, "10.0.0.0/8,udp:53,192.168.0.0/16", "10.0.0.0/8,udp:53,192.168.0.0/16"),
        ("hash:ip,mark", 4, "10.0.0.1,16384", "10.0.0.1,0x00004000"),
        ("hash:ip,mac", 4, "10.0.0.1,02:42:ac:11:00:02", "10.0.0.1,02:42:AC:11:00:02"),
        ("hash:net,iface", 4, "10.0.0.0/8,eth0", "10.0.0.0/8,eth0"),
        ("bitmap:port", 4, "30080", "30080"),
    ],
)
def test_members_are_written_as_ipset_lists_them(kind: str, family: int, text: str, shown: str) -> None:
    assert parse_element(kind, family, text).text == shown


@pytest.mark.parametrize(
    ("kind", "family", "text", "words"),
    [
        ("hash:ip,port", 4, "10.96.0.10", "one is ADDRESS,[PROTO:]PORT (e.g. 10.96.0.10,tcp:80)"),
        ("hash:ip,port", 4, "10.96.0.10,icmp:8", "unknown protocol 'icmp'"),
        ("hash:ip,port", 4, "10.96.0.10,tcp:70000", "not a port number from 0 to 65535"),
        ("hash:ip", 4, "10.0.0.0/24", "use a hash:net type for networks"),
        ("hash:ip", 4, "fd00::1", "is IPv6, but the set is IPv4"),
        ("hash:net", 4, "10.0.0.1/8", "has host bits set; did you mean 10.0.0.0/8?"),
        ("hash:net", 6, "::/0", "split it: ::/1 and 8000::/1"),
        ("bitmap:port", 4, "tcp:80", "a port number alone"),
        ("hash:ip,mac", 4, "10.0.0.1,02:42", "is not a MAC address"),
    ],
)
def test_members_that_are_not_of_the_type(kind: str, family: int, text: str, words: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_element(kind, family, text)
    assert words in str(info.value)


def _lab_error(data: dict[str, Any]) -> LabError:
    with pytest.raises(LabError) as info:
        load_lab_data(data)
    return info.value


def _sets(*sets: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "nodes": {"n": {"ipsets": list(sets)}}}


def test_set_problems_point_at_their_key() -> None:
    err = _lab_error(
        _sets(
            {"name": "a", "type": "bitmap:port", "hashsize": 64, "members": [30080]},
            {"name": "a", "type": "hash:ip", "range": "1-2", "members": ["1.2.3.4", "1.2.3.4"]},
            {"name": "c", "type": "bitmap:ip", "range": "10.0.0.0/24", "members": ["10.0.1.1"]},
        )
    )
    got = {p.path: p.message for p in err.problems}
    assert "a bitmap:port set needs `range:`" in got["nodes.n.ipsets[0]"]
    assert "`hashsize:` is an option of hash types" in got["nodes.n.ipsets[0].hashsize"]
    assert "already ipsets[0]" in got["nodes.n.ipsets[1].name"]
    assert "`range:` is an option of bitmap types" in got["nodes.n.ipsets[1].range"]
    assert "1.2.3.4 is already members[0]" in got["nodes.n.ipsets[1].members[1]"]
    assert "outside the set's range 10.0.0.0/24" in got["nodes.n.ipsets[2].members[0]"]


# ---------------------------------------------------------------- the plan: `ipset restore` lines


def test_ipsets_come_first_in_the_firewall_stage() -> None:
    data = _sets(
        {"name": "np", "type": "bitmap:port", "range": "32767-30000", "members": [30080]},
        {
            "name": "c",
            "type": "hash:ip",
            "comment": True,
            "members": [{"entry": "1.2.3.4", "comment": "the one"}, "1.2.3.5"],
        },
    )
    data["nodes"]["n"]["iptables"] = "*filter\nCOMMIT\n"
    ops = firewall_ops("t.n", "nodes.n", load_lab_data(data).nodes["n"])
    assert [type(op) for op in ops] == [CreateIpset, CreateIpset, RestoreIptables]
    assert all(stage_of(op) == "firewall" for op in ops)
    np, c = ops[0], ops[1]
    assert isinstance(np, CreateIpset) and isinstance(c, CreateIpset)
    assert np.render() == (
        "ip netns exec t.n ipset restore <<'EOF'\ncreate np bitmap:port range 30000-32767\nadd np 30080\nEOF"
    )
    assert c.add_lines() == ['add c 1.2.3.4 comment "the one"', "add c 1.2.3.5"]
    assert c.create_line() == "create c hash:ip family inet comment"
    assert np.brief() == "ip netns exec t.n ipset create np bitmap:port range 30000-32767 (+1 member)"


def test_netlink_messages_encode() -> None:
    op = CreateIpset(
        "t.n",
        name="s",
        type="hash:ip,port,net",
        family=6,
        hashsize=1024,
        maxelem=65536,
        comment=True,
        members=("fd00::1,udp:53,fd01::/64",),
        comments=("x",),
    )
    create = create_message(op, 3)
    create["header"]["type"] = (6 << 8) | 2
    create.encode()
    add = add_message(op, op.members[0], "x")
    add["header"]["type"] = (6 << 8) | 9
    add.encode()
    assert len(create.data) > 40 and len(add.data) > 60


# ---------------------------------------------------------------- the preflight


def test_a_refused_ipset_is_a_problem_at_its_key(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "name: t\nnodes:\n  n:\n    ipsets:\n      - {name: a, type: 'hash:ip'}\n"
        "      - {name: b, type: 'hash:mac'}\n    iptables: \"*nat\\nCOMMIT\\n\"\n"
    )
    lab, where = load_lab_located(path)
    [p] = _problems("n", lab.nodes["n"], 1, [Message("this kernel has no ipset type hash:mac")], where)
    assert (p.line, p.path, p.message) == (6, "nodes.n.ipsets[1]", "this kernel has no ipset type hash:mac")
    [p] = _problems("n", lab.nodes["n"], 2, [Message("Set nosuch doesn't exist.", 1)], where)
    assert p.path == "nodes.n.iptables[0].save"  # the dumps come after the sets
    assert (
        not_checked_note(lab) == "1 nftables/iptables ruleset and 2 ipsets not tried: that needs root "
        "(sudo netlab validate)"
    )


# ---------------------------------------------------------------- kube-proxy's IPVS mode


@pytest.fixture(scope="module")
def golden() -> Lab:
    return load_lab(REPO / "tests" / "golden" / "expand" / "services-ipvs.yaml")


def _ipvs(lab: Lab, node: str) -> dict[tuple[str, str, int], Any]:
    return {(s.proto, s.address or "", s.port or 0): s for s in lab.nodes[node].ipvs}


def test_kube_ipvs0_is_a_down_dummy_with_every_service_ip(golden: Lab) -> None:
    dummy = golden.nodes["node1"].links["kube-ipvs0"]
    assert isinstance(dummy, Dummy) and dummy.up is False
    assert dummy.addresses == ["10.96.0.10/32", "10.96.0.11/32", "192.168.49.200/32", "10.96.0.12/32", "10.96.0.13/32"]


def test_ipvs_services_rr_masq_weight_1(golden: Lab) -> None:
    services = _ipvs(golden, "node1")
    web = services[("tcp", "10.96.0.10", 80)]
    assert web.scheduler == "rr" and web.persistent is None
    assert [(r.address, r.port, r.forward, r.weight) for r in web.reals] == [
        ("10.244.1.2", 8080, "masq", 1),
        ("10.244.0.2", 8080, "masq", 1),
    ]
    sticky = services[("tcp", "10.96.0.11", 80)]
    assert sticky.persistent == 10800  # sessionAffinity: ClientIP
    assert ("tcp", "192.168.49.200", 80) in services  # the external IP
    assert services[("udp", "10.96.0.13", 53)].reals == []  # no endpoints: IPVS answers port unreachable


def test_node_ports_listen_on_every_node_address(golden: Lab) -> None:
    services = _ipvs(golden, "node1")
    assert {a for (_, a, port) in services if port == 30080} == {"192.168.49.2", "10.244.0.1"}  # eth0, cni0
    # Local policy: node1's own endpoint only (web-1)
    assert [r.address for r in services[("tcp", "192.168.49.2", 30000)].reals] == ["10.244.0.2"]
    vxlan = load_lab_data(
        {
            "name": "t",
            "cluster": {
                "proxy_mode": "ipvs",
                "nodes": {"n1": {"links": {"lo": {"addresses": ["192.0.2.9/32"]}}}},
                "pods": {"p": {"labels": {"a": "b"}}},
                "services": {
                    "s": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80, "node_port": 30001}]}
                },
            },
        }
    )
    assert [s.address for s in vxlan.nodes["n1"].ipvs if s.port == 30001] == [
        "192.168.49.2",
        "10.244.0.1",
        "10.244.0.0",
        "192.0.2.9",
    ]  # eth0, cni0, flannel.1, the user's lo address


def test_local_policy_without_a_local_endpoint_uses_all() -> None:
    lab = load_lab_data(
        {
            "name": "t",
            "cluster": {
                "backend": "host-gw",
                "proxy_mode": "ipvs",
                "nodes": {"n1": {}, "n2": {}},
                "pods": {"p": {"node": "n2", "labels": {"a": "b"}}},
                "services": {
                    "s": {
                        "type": "NodePort",
                        "external_traffic_policy": "Local",
                        "selector": {"a": "b"},
                        "ports": [{"port": 80}],
                    }
                },
            },
        }
    )
    (np,) = [s for s in lab.nodes["n1"].ipvs if s.address == "192.168.49.2"]
    assert [r.address for r in np.reals] == ["10.244.1.2"]  # kubernetes#97081: the node's pods may still use it


def test_ipsets_on_each_node(golden: Lab) -> None:
    sets = {s.name: s for s in golden.nodes["node1"].ipsets}
    assert list(sets) == [name for name, _, _ in SETS]  # all of them, in kube-proxy's order
    assert sets["KUBE-CLUSTER-IP"].members == [
        "10.96.0.10,tcp:80",
        "10.96.0.11,tcp:80",
        "10.96.0.12,tcp:8080",
        "10.96.0.13,udp:53",
    ]
    assert sets["KUBE-LOOP-BACK"].members == ["10.244.0.2,tcp:8080,10.244.0.2"]  # node1's endpoint only
    assert (sets["KUBE-NODE-PORT-TCP"].type, sets["KUBE-NODE-PORT-TCP"].range) == ("bitmap:port", "0-65535")
    assert sets["KUBE-NODE-PORT-TCP"].members == ["30080", "30000"]
    assert sets["KUBE-NODE-PORT-LOCAL-TCP"].members == ["30000"]
    assert sets["KUBE-EXTERNAL-IP"].members == ["192.168.49.200,tcp:80"]
    assert sets["KUBE-IPVS-IPS"].members == ["10.96.0.10", "10.96.0.11", "192.168.49.200", "10.96.0.12", "10.96.0.13"]


def test_iptables_rules_match_sets(golden: Lab) -> None:
    (dump,) = golden.nodes["node1"].iptables
    assert dump.noflush and dump.family == 4
    lines = (dump.save or "").splitlines()
    for rule in (
        '-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin '
        'purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE',
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
        "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with externalTrafficPolicy='
        'local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ):
        assert rule in lines, rule
    # no rule for a set that is empty (KUBE-NODE-PORT-UDP), the LOCAL RETURN before the masquerade
    assert not any("KUBE-NODE-PORT-UDP" in line for line in lines)
    local = next(i for i, line in enumerate(lines) if "KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN" in line)
    assert "KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ" in lines[local + 1]
    # the accept of service traffic is the last rule of KUBE-SERVICES
    services = [line for line in lines if line.startswith("-A KUBE-SERVICES")]
    assert services[-1] == "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"
    # EnsureRule(Prepend): the jump added last is first
    assert [line for line in lines if line.startswith("-A INPUT")] == [
        '-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
        '-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT',
    ]


def test_sysctls_kube_proxy_sets(golden: Lab) -> None:
    sysctls = golden.nodes["node1"].sysctls
    for key in (
        "net.ipv4.vs.conntrack",
        "net.ipv4.vs.expire_nodest_conn",
        "net.ipv4.vs.expire_quiescent_template",
        "net.ipv4.ip_forward",
        "net.bridge.bridge-nf-call-iptables",
    ):
        assert sysctls[key] == 1, key
    assert "net.ipv4.vs.conn_reuse_mode" not in sysctls  # only kernels 4.1 to 5.8 need it


def test_ipv6_sets_are_kube_6() -> None:
    assert set_name("KUBE-CLUSTER-IP", 6) == "KUBE-6-CLUSTER-IP"
    assert set_name("KUBE-LOAD-BALANCER-SOURCE-CIDR", 6) == "KUBE-6-LOAD-BALANCER-SOURCE-CID"  # 31 characters


def test_plan_makes_the_sets_before_the_dump_that_matches_them(golden: Lab) -> None:
    ops = [op for op in build_plan(golden).ops if op.ns.endswith(".node1") and stage_of(op) == "firewall"]
    assert [type(op).__name__ for op in ops] == ["CreateIpset"] * len(SETS) + ["RestoreIptables"]


def test_user_objects_may_not_take_kube_proxys_names() -> None:
    err = _lab_error(
        {
            "name": "t",
            "cluster": {
                "proxy_mode": "ipvs",
                "nodes": {
                    "n1": {
                        "links": {"kube-ipvs0": {"kind": "dummy"}},
                        "ipsets": [{"name": "KUBE-CLUSTER-IP", "type": "hash:ip"}],
                    }
                },
                "pods": {"p": {"labels": {"a": "b"}}},
                "services": {"s": {"selector": {"a": "b"}, "ports": [{"port": 80}]}},
            },
        }
    )
    assert {p.path for p in err.problems} == {"cluster.nodes.n1.links.kube-ipvs0", "cluster.nodes.n1.ipsets[0].name"}


# ---------------------------------------------------------------- what the kernel must have


def test_ipsets_and_bridge_sysctls_need_their_features(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab import lifecycle
    from netlab.errors import MissingFeature
    from netlab.kernel import features

    asked: list[str] = []

    def probe(names: list[str]) -> list[features.FeatureStatus]:
        asked.extend(names)
        return [features.FeatureStatus(n, n != "br_netfilter", "x", "h") for n in names]

    monkeypatch.setattr(features, "probe_features", probe)
    with pytest.raises(MissingFeature) as info:
        lifecycle.check_requirements(load_lab("labs/kube-proxy-ipvs.yaml"))
    assert {"ipvs", "ipset", "br_netfilter", "dummy", "nftables"} <= set(asked)
    assert "br_netfilter: x" in str(info.value)


def test_br_netfilter_hint_says_why_netlab_does_not_load_it() -> None:
    hint = kernel_hint("br_netfilter", {"CONFIG_BRIDGE_NETFILTER": "m"}, None)
    assert hint.startswith("modprobe br_netfilter (netlab does not load it") and "netlab vm run" in hint
