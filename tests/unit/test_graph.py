"""netlab graph: the model built from labs, its renderers, goldens of every shipped lab.

Regenerate the goldens (tests/golden/graph/LAB.dot and LAB.json) after an intended change
of the drawing with

    NETLAB_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/test_graph.py

then look at them (`netlab graph labs/LAB.yaml -o /tmp/LAB.svg`) and read `git diff
tests/golden/graph` before committing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from netlab.cli import cli
from netlab.errors import UsageError
from netlab.expand.cluster import ClusterLayout
from netlab.graph import build_graph, load_graph, render, render_svg, route_line, rule_line, to_dot, to_mermaid
from netlab.lab.model import Lab, Route, Rule
from netlab.load import load_lab_text, load_variants

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "graph"
LABS = sorted((REPO / "labs").glob("*.yaml"))
REGEN = os.environ.get("NETLAB_REGEN_GOLDEN") == "1"


def _golden(path: Path, actual: str) -> None:
    if REGEN:
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path.relative_to(REPO)} is missing; run with NETLAB_REGEN_GOLDEN=1 and review it"
    assert actual == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_shipped_lab_graph_goldens(lab: Path) -> None:
    g = load_graph(str(lab))
    _golden(GOLDEN / f"{lab.stem}.dot", to_dot(g))
    _golden(GOLDEN / f"{lab.stem}.json", render(g, "json"))


def test_no_orphan_goldens() -> None:
    stems = {p.stem for p in LABS}
    assert sorted(p.name for p in GOLDEN.iterdir() if p.stem not in stems) == []


def _cluster(text: str) -> str:
    return "name: t\ncluster:\n" + text


def test_pods_sit_in_their_cluster_node_and_services_point_at_endpoints() -> None:
    lab_text = _cluster("""
  nodes: {a: {}, b: {}}
  pods:
    web: {replicas: 3, labels: {app: web}}
    client: {node: b}
  services:
    web: {selector: {app: web}, ports: [{port: 80, target_port: 8080}], type: NodePort}
""")
    labs = load_variants_text(lab_text)
    g = build_graph(*labs)
    roles = {b.name: (b.role, b.host) for b in g.boxes}
    assert roles["underlay"] == ("switch", None)
    assert roles["a"] == ("node", None)
    assert roles["client"] == ("pod", "b")  # placed where its `node:` says
    assert {roles[f"web-{k}"][1] for k in range(3)} == {"a", "b"}  # replicas spread over both
    assert g.box("web-0").host in ("a", "b")
    assert g.box("web-0").labels == {"app": "web"} and g.box("web-0").namespace == "default"
    (svc,) = g.services
    assert svc.name == "default/web" and svc.type == "NodePort"
    assert svc.frontends[0] == "10.96.0.10:80/tcp" and svc.frontends[1].startswith("nodes:30")
    assert [e.pod for e in svc.endpoints] == ["web-0", "web-1", "web-2"]
    assert svc.endpoints[0].address.endswith(":8080")
    (overlay,) = g.overlays
    assert (overlay.vni, overlay.port) == (1, 8472)
    assert overlay.members == ("a:flannel.1", "b:flannel.1")
    assert overlay.underlay == ("192.168.49.2", "192.168.49.3")
    dot = to_dot(g)
    assert 'subgraph "cluster_a"' in dot and '"svc#default/web" -- "web-0"' in dot
    assert "<B>web-0</B><BR/>eth0 10.244." in dot and "app=web</FONT>" in dot  # its labels, under its address
    # a pod's box is drawn inside its node's: it comes before the node's box closes
    a_box = dot.index('subgraph "cluster_a"')
    assert a_box < dot.index('"web-0" [label') < dot.index('subgraph "cluster_b"')


def load_variants_text(text: str) -> tuple[Lab, ClusterLayout | None]:
    """(lab, layout) of a lab written inline."""
    from netlab.expand import expand
    from netlab.lab.parse import validate_model
    from netlab.lab.source import parse_yaml

    data, source, problems = parse_yaml(text, "<t>")
    expansion = expand(validate_model(data, source, problems))
    assert not expansion.complaints
    return expansion.lab, expansion.layout


def test_bridge_ports_fold_into_lines_and_a_crowd_becomes_one_table() -> None:
    lab_text = _cluster("""
  nodes: {a: {}}
  pods:
    web: {replicas: 9}
""")
    g = build_graph(*load_variants_text(lab_text))
    dot = to_dot(g)
    # the host ends (vethweb-0 …) are not drawn as interfaces, the 9 pods are one table
    assert '"a:vethweb-0"' not in dot
    assert '"a:cni0" -- "a:cni0#crowd" [label="9 veths"]' in dot
    assert "9 pods on cni0" in dot and "web-8" in dot
    assert '"web-0" [label' not in dot
    # the model keeps every pod and every wire all the same
    assert len([b for b in g.boxes if b.role == "pod"]) == 9
    assert len(g.wires) == 9 + 1  # nine pods, one uplink


def test_plain_lab_roles_and_tables() -> None:
    lab = load_lab_text("""
name: t
nodes:
  sw:
    links:
      br0: {kind: bridge}
      p1: {peer: "r:eth0", master: br0}
      p2: {peer: "h:eth0", master: br0}
  r:
    sysctls: {net.ipv4.ip_forward: 1}
    links:
      eth0: {addresses: [10.0.0.1/24]}
      lo: {addresses: [10.9.9.9/32]}
    routes: [{to: 10.1.0.0/16, via: 10.0.0.2}]
    rules: [{priority: 100, from: 10.0.0.0/24, table: 10}]
  h:
    links:
      eth0: {addresses: [10.0.0.2/24]}
    routes: [{to: default, via: 10.0.0.1}]
""")
    g = build_graph(lab)
    assert [(b.name, b.role) for b in g.boxes] == [("sw", "switch"), ("r", "router"), ("h", "host")]
    r = g.box("r")
    assert r.tables == ("10.1.0.0/16 via 10.0.0.2", "rule 100: from 10.0.0.0/24 lookup 10")
    assert [i.name for i in r.interfaces] == ["eth0", "lo"]  # lo is shown because it holds an address
    assert g.box("h").tables == ()  # a host's lone default route says nothing
    dot = to_dot(g)
    assert '"sw:br0" -- "h" [taillabel="p2"]' in dot  # h is one node: one interface, nothing else
    assert '"sw:br0" -- "r:eth0" [taillabel="p1"]' in dot
    mermaid = to_mermaid(g)
    assert mermaid.startswith("flowchart TB\n") and "n_sw_3a_br0 ---|" in mermaid


def test_route_and_rule_text() -> None:
    assert route_line(Route(to="10.244.1.0/24", via="10.244.1.0", dev="flannel.1", onlink=True)) == (
        "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink"
    )
    assert route_line(Route(to="10.0.0.0/8", type="blackhole")) == "blackhole 10.0.0.0/8"
    assert rule_line(Rule.model_validate({"priority": 5, "not": True, "fwmark": "0x1", "action": "prohibit"})) == (
        "rule 5: not fwmark 0x1 prohibit"
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (scripts/setup installs it)")
def test_svg_through_graphviz(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["graph", str(REPO / "labs/flannel-vxlan.yaml"), "-o", str(tmp_path / "g.svg")])
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "flannel.1" in svg and "VXLAN overlay" in svg
    inline = render_svg(load_graph(str(REPO / "labs/flannel-vxlan.yaml")), inline=True)
    assert inline.startswith("<svg") and inline.rstrip().endswith("</svg>") and "<!DOCTYPE" not in inline


def test_a_lab_that_is_up_is_drawn_from_its_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """By name: the lab file its state records, and the variant it was built as."""
    monkeypatch.setenv("NETLAB_STATE_DIR", str(tmp_path))
    state = {
        "lab": "lvs-nat-dnat-only",
        "source": str(REPO / "labs/lvs-nat.yaml"),
        "fingerprint": "x",
        "status": "up",
        "nodes": {},
    }
    (tmp_path / "lvs-nat-dnat-only.json").write_text(json.dumps(state))
    g = load_graph("lvs-nat", "dnat-only")
    assert g.lab == "lvs-nat-dnat-only" and g.box("ds").role == "router"
    assert load_graph("lvs-nat-dnat-only") == g


def test_cli_formats_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["graph", str(REPO / "labs/lvs-nat.yaml"), "--variant", "dnat-only", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["lab"] == "lvs-nat-dnat-only"
    result = runner.invoke(cli, ["graph", str(REPO / "labs/flannel-vxlan.yaml"), "-o", str(tmp_path / "g.mmd")])
    assert result.exit_code == 0 and (tmp_path / "g.mmd").read_text().startswith("flowchart TB")
    result = runner.invoke(cli, ["graph", str(REPO / "labs/flannel-vxlan.yaml"), "-o", str(tmp_path / "g.png")])
    assert isinstance(result.exception, UsageError) and "| dot -Tpng >" in str(result.exception)
    assert not (tmp_path / "g.png").exists()
    result = runner.invoke(cli, ["graph", "no-such-lab"])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert "no lab file 'no-such-lab' and no lab 'no-such-lab' up" in str(result.exception)


def test_variants_load_the_same_way() -> None:
    lab, where = load_variants(str(REPO / "labs/kube-proxy-iptables.yaml")).base
    assert where.cluster is not None and where.cluster.proxy_mode == "iptables"
    assert build_graph(lab, where.cluster).proxy_mode == "iptables"


def test_a_vrf_is_a_box_in_its_namespace() -> None:
    dot = to_dot(load_graph(str(REPO / "labs/vrf-smoke.yaml")))
    vrf = dot.index('subgraph "cluster_router/blue"')
    assert 'label=<<B>blue</B> <FONT POINT-SIZE="9">vrf, table blue</FONT>>' in dot
    assert vrf < dot.index('"router:eth1" [') < dot.index('"router:eth2" [')  # its interfaces inside it
    assert dot.index('"router:eth3" [') < vrf  # the third outside
    assert "master blue" not in dot  # said by the box
