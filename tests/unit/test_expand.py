"""Cluster expansion (rootless): cluster in → explicit lab out, and the explicit form builds
the same plan.

Golden files: tests/golden/expand/NAME.yaml (a lab with `cluster:`) → NAME.rendered.yaml
(what `netlab render` prints). Regenerate after an intended change with
NETLAB_REGEN_GOLDEN=1 and read the diff: it is what users see spelled out.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netlab.cli import cli
from netlab.errors import LabError
from netlab.expand.cluster import ifname_for, vtep_mac
from netlab.lab.model import Lab, Vxlan
from netlab.lab.render import lab_data, render_yaml
from netlab.load import load_lab, load_lab_data, load_lab_text
from netlab.plan.build import build_plan

REPO = Path(__file__).resolve().parents[2]
EXPAND = sorted((REPO / "tests" / "golden" / "expand").glob("*.yaml"))
EXPAND = [p for p in EXPAND if not p.name.endswith(".rendered.yaml")]
LABS = sorted((REPO / "labs").glob("*.yaml"))
REGEN = os.environ.get("NETLAB_REGEN_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _plan_lines(lab: Lab) -> list[str]:
    return [op.render() for op in build_plan(lab).ops]


# ---------------------------------------------------------------- golden: cluster in → explicit out


def test_enough_expansion_goldens() -> None:
    assert len(EXPAND) >= 3


@pytest.mark.parametrize("path", EXPAND, ids=[p.stem for p in EXPAND])
def test_expansion_golden(path: Path) -> None:
    rendered = render_yaml(load_lab(_rel(path)))
    golden = path.with_name(path.stem + ".rendered.yaml")
    if REGEN:
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"{_rel(golden)} is missing; run with NETLAB_REGEN_GOLDEN=1 and review it"
    assert rendered == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", EXPAND + LABS, ids=[p.stem for p in EXPAND + LABS])
def test_rendered_lab_builds_the_same(path: Path) -> None:
    """The explicit form alone gives the same plan, checks and responders; rendering it
    again changes nothing (expansion leaves nothing implicit behind)."""
    lab = load_lab(_rel(path))
    text = render_yaml(lab)
    again = load_lab_text(text, "rendered.yaml")
    assert _plan_lines(again) == _plan_lines(lab)
    assert again.checks == lab.checks
    assert {n: node.serve for n, node in again.nodes.items()} == {n: node.serve for n, node in lab.nodes.items()}
    assert render_yaml(again) == text


def test_render_command_prints_a_lab_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["render", "labs/flannel-vxlan.yaml"], standalone_mode=False)
    assert result.exception is None, result.output
    assert result.output.startswith("# lab flannel-vxlan, rendered by netlab")
    out = tmp_path / "explicit.yaml"
    out.write_text(result.output, encoding="utf-8")
    assert _plan_lines(load_lab(out)) == _plan_lines(load_lab("labs/flannel-vxlan.yaml"))


def test_render_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["render", "--json", "labs/host-gw.yaml"], standalone_mode=False)
    assert result.exception is None, result.output
    import json

    data = json.loads(result.output)["lab"]
    assert "cluster" not in data and set(data["nodes"]) >= {"underlay", "node1", "node2", "node3", "tracer"}
    assert _plan_lines(load_lab_data(data)) == _plan_lines(load_lab("labs/host-gw.yaml"))


def test_render_of_a_bad_lab_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "render", "tests/golden/bad/07-missing-nodes.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "07-missing-nodes.yaml:1: nodes: a lab needs at least one node" in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------- faithful to flannel (k8s-datapaths.md §4)


def _cluster(**cluster: object) -> Lab:
    return load_lab_data({"name": "t", "cluster": cluster})


def test_flannel_vxlan_device_settings() -> None:
    lab = _cluster(nodes={"n1": {}, "n2": {}}, pods={"p1": {"node": "n1"}})
    dev = lab.nodes["n1"].links["flannel.1"]
    assert isinstance(dev, Vxlan)
    assert (dev.vni, dev.port, dev.learning, dev.mtu, dev.dev) == (1, 8472, False, 1450, "eth0")
    assert dev.local == "192.168.49.2"
    assert dev.addresses == ["10.244.0.0/32"]  # the lease's network address as /32
    n1 = lab.nodes["n1"]
    # per remote node, in flannel's order: neighbour, FDB, onlink route
    vtep2 = vtep_mac(_ip("192.168.49.3"))
    assert [(n.to, n.lladdr, n.dev) for n in n1.neighbors] == [("10.244.1.0", vtep2, "flannel.1")]
    assert [(f.lladdr, f.dst) for f in n1.fdb] == [(vtep_mac(_ip("192.168.49.3")), "192.168.49.3")]
    assert [(r.to, r.via, r.dev, r.onlink) for r in n1.routes] == [("10.244.1.0/24", "10.244.1.0", "flannel.1", True)]
    assert n1.links["cni0"].addresses == ["10.244.0.1/24"]
    assert n1.sysctls["net.ipv4.ip_forward"] == 1
    pod = lab.nodes["p1"]
    assert pod.links["eth0"].addresses == ["10.244.0.2/24"] and pod.links["eth0"].mtu == 1450
    assert [(r.to, r.via) for r in pod.routes] == [("default", "10.244.0.1")]


def test_host_gw_routes_via_node_ips_and_full_mtu() -> None:
    lab = _cluster(backend="host-gw", nodes={"a": {}, "b": {}, "c": {}})
    assert "flannel.1" not in lab.nodes["a"].links
    assert [(r.to, r.via, r.dev) for r in lab.nodes["c"].routes] == [
        ("10.244.0.0/24", "192.168.49.2", "eth0"),
        ("10.244.1.0/24", "192.168.49.3", "eth0"),
    ]
    assert lab.nodes["a"].links["cni0"].mtu == 1500
    assert not lab.nodes["a"].neighbors and not lab.nodes["a"].fdb


def test_vtep_mac_is_unicast_local_and_from_the_node_ip() -> None:
    mac = vtep_mac(_ip("192.168.49.2"))
    assert mac == "0e:fa:c0:a8:31:02"
    first = int(mac[:2], 16)
    assert first & 1 == 0 and first & 2 == 2


def test_interface_names_fit_ifnamsiz() -> None:
    assert ifname_for("veth", "pod1") == "vethpod1"
    long = ifname_for("veth", "a-very-long-pod-name")
    assert len(long) <= 15 and long.startswith("veth") and long != ifname_for("veth", "a-very-long-pod-nam")
    assert ifname_for("", "node.with.dots") != "node.with.dots"  # dots would read as sysctl separators


def test_replicas_spread_like_a_scheduler() -> None:
    lab = _cluster(nodes={"n1": {}, "n2": {}, "n3": {}}, pods={"pinned": {"node": "n1"}, "web": {"replicas": 5}})
    where = {name: _node_of(lab, name) for name in lab.nodes if name.startswith("web")}
    assert list(where) == [f"web-{i}" for i in range(5)]
    # n1 already has `pinned`: the spread fills n2 and n3 first
    assert where == {"web-0": "n2", "web-1": "n3", "web-2": "n1", "web-3": "n2", "web-4": "n3"}


def test_addresses_skip_explicit_ones() -> None:
    lab = _cluster(
        nodes={"n1": {"address": "192.168.49.3"}, "n2": {}},
        pods={"a": {"node": "n1", "address": "10.244.0.2"}, "b": {"node": "n1"}},
    )
    assert lab.nodes["n2"].links["eth0"].addresses == ["192.168.49.2/24"]
    assert lab.nodes["b"].links["eth0"].addresses == ["10.244.0.3/24"]


def test_user_extras_come_first_and_keep_their_indices() -> None:
    lab = _cluster(
        nodes={
            "n1": {"routes": [{"to": "198.51.100.0/24", "via": "192.168.49.1"}], "sysctls": {"net.ipv4.ip_forward": 0}},
            "n2": {},
        }
    )
    n1 = lab.nodes["n1"]
    assert n1.routes[0].to == "198.51.100.0/24"
    assert n1.sysctls["net.ipv4.ip_forward"] == 0  # the user's value wins over the generated one


def test_a_problem_in_a_generated_node_points_into_the_cluster_section() -> None:
    text = "\n".join(
        [
            "name: t",
            "cluster:",
            "  nodes: {n1: {}}",
            "  pods:",
            "    p1:",
            "      node: n1",
            "      routes:",
            "        - {to: 10.9.0.0/16, via: 10.8.0.1}",
        ]
    )
    with pytest.raises(LabError) as info:
        load_lab_text(text, "lab.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (8, "cluster.pods.p1.routes[0].via")
    assert "not on a subnet this node reaches directly" in problem.message


def test_plain_node_plugged_into_the_switch_is_a_port() -> None:
    lab = load_lab_data(
        {
            "name": "t",
            "cluster": {"nodes": {"n1": {}}},
            "nodes": {"c": {"links": {"eth0": {"peer": "underlay:c", "addresses": ["192.168.49.9/24"]}}}},
        }
    )
    assert "c" in lab.nodes["underlay"].links["br0"].ports  # type: ignore[union-attr]


def test_data_has_no_cluster_left() -> None:
    lab = _cluster(nodes={"n1": {}})
    assert lab.cluster is None and "cluster" not in lab_data(lab)


def _ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def _node_of(lab: Lab, pod: str) -> str:
    return next(n for n, node in lab.nodes.items() if f"veth{pod}" in node.links)


# ---------------------------------------------------------------- services (kube-proxy iptables mode)


def test_kube_proxy_chain_hashes_match_kube_proxys_own_tests() -> None:
    from netlab.expand.services import endpoint_hash, port_proto_hash

    # pkg/proxy/iptables/proxier_test.go: ns1/svc1:p80 → KUBE-SVC-XPGD46QRK7WJZT7O, its endpoint
    # 10.180.0.1:80 → KUBE-SEP-SXIVWICOYRO3J4NJ
    assert port_proto_hash("ns1/svc1:p80", "tcp") == "XPGD46QRK7WJZT7O"
    assert endpoint_hash("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "SXIVWICOYRO3J4NJ"


def test_services_expand_into_an_iptables_dump_on_every_node() -> None:
    lab = load_lab("tests/golden/expand/services-iptables.yaml")
    for node in ("node1", "node2"):
        (dump,) = lab.nodes[node].iptables
        text = dump.save or ""
        assert '-A KUBE-SERVICES -m comment --comment "default/web cluster IP"' in text
        assert "--probability 0.5000000000" in text and "KUBE-MARK-MASQ" in text
    # Local policy: node1's KUBE-SVL chain has only node1's endpoint
    node1 = lab.nodes["node1"].iptables[0].save or ""
    svl = [line for line in node1.splitlines() if line.startswith("-A KUBE-SVL-")]
    assert len(svl) == 1 and "10.244.0.2:8080" in svl[0], svl
    # the pods' host veths are hairpin ports, as the CNI bridge plugin's hairpinMode makes them
    assert all(link.hairpin for name, link in lab.nodes["node1"].links.items() if name.startswith("veth"))


def test_service_cluster_ips_are_handed_out_from_dot_10() -> None:
    lab = load_lab("tests/golden/expand/services-iptables.yaml")
    text = lab.nodes["node1"].iptables[0].save or ""
    for ip in ("10.96.0.10", "10.96.0.11", "10.96.0.12", "10.96.0.13"):
        assert f"-d {ip}/32" in text
