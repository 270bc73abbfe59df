"""The lab model and loader: defaults, normalisation, equivalent spellings, YAML details
(anchors, merge keys, YAML 1.1 keys), line numbers, and how errors are collected and shown."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from netlab.errors import LabError, Problem
from netlab.lab.model import Bridge, Lab, PeerEnd, Veth, Vxlan
from netlab.lab.parse import topology
from netlab.lab.source import format_path, parse_yaml, printable
from netlab.load import load_lab, load_lab_data, load_lab_text, peek_lab_name
from netlab.plan.build import build_plan


def lab(text: str) -> Lab:
    return load_lab_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")  # line 1 is `name:`


def problems(text: str) -> list[Problem]:
    with pytest.raises(LabError) as info:
        lab(text)
    return info.value.problems


def one_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


TWO_PODS = """
    name: two-pods
    nodes:
      pod1:
        links:
          eth0: {peer: "pod2:eth0", addresses: [10.0.0.1/24]}
      pod2:
        links:
          eth0: {addresses: [10.0.0.2/24]}
"""


# ---------------------------------------------------------------- defaults and normalisation


def test_defaults() -> None:
    loaded = lab("""
        name: d
        nodes:
          n:
            links:
              br0: {kind: bridge}
              vx0: {kind: vxlan, vni: 1, remote: 192.0.2.1}
            routes:
              - {to: default, dev: br0}
            rules:
              - {table: 5}
    """)
    assert (loaded.description, loaded.requires, loaded.tables) == ("", [], {})
    node = loaded.nodes["n"]
    assert (node.description, node.sysctls, node.exec) == ("", {}, [])
    br0, vx0 = node.links["br0"], node.links["vx0"]
    assert isinstance(br0, Bridge) and isinstance(vx0, Vxlan)
    assert (br0.up, br0.addresses, br0.mtu, br0.mac, br0.master, br0.ports, br0.stp) == (
        True,
        [],
        None,
        None,
        None,
        [],
        False,
    )
    assert (vx0.port, vx0.learning, vx0.local, vx0.dev, vx0.ttl) == (8472, True, None, None, None)
    route, rule = node.routes[0], node.rules[0]
    assert (route.type, route.onlink, route.table, route.metric, route.family) == ("unicast", False, None, None, None)
    assert (rule.action, rule.priority, rule.from_, rule.fwmark) == ("lookup", None, None, None)


def test_ipv6_and_mac_normalised() -> None:
    loaded = lab("""
        name: v6
        nodes:
          n:
            links:
              d0: {kind: dummy, mac: "02:AB:CD:EF:00:01", addresses: ["2001:DB8:0:0::1/64", "10.0.0.1/24"]}
            routes:
              - {to: "2001:0db8:0001::/48", via: "2001:DB8::FFFF"}
            rules:
              - {from: "2001:DB8:0:0::/64", to: "2001:db8:1::/48", table: 5}
    """)
    d0 = loaded.nodes["n"].links["d0"]
    assert d0.addresses == ["2001:db8::1/64", "10.0.0.1/24"]
    assert d0.mac == "02:ab:cd:ef:00:01"
    route = loaded.nodes["n"].routes[0]
    assert (route.to, route.via) == ("2001:db8:1::/48", "2001:db8::ffff")
    assert loaded.nodes["n"].rules[0].from_ == "2001:db8::/64"


def test_from_alias_in_rules() -> None:
    loaded = lab("""
        name: r
        nodes:
          n:
            rules:
              - {from: 10.1.0.0/16, table: 100}
    """)
    rule = loaded.nodes["n"].rules[0]
    assert rule.from_ == "10.1.0.0/16"
    assert rule.model_dump(by_alias=True)["from"] == "10.1.0.0/16"


def test_fwmark_forms() -> None:
    loaded = lab("""
        name: m
        nodes:
          n:
            rules:
              - {fwmark: 16, table: 1}
              - {fwmark: 0x4000/0xff00, table: 1}
              - {fwmark: "7/15", table: 1}
    """)
    assert [r.fwmark for r in loaded.nodes["n"].rules] == ["0x10", "0x4000/0xff00", "0x7/0xf"]


@pytest.mark.parametrize("mark", ["0x1/0x2/0x3", "0x100000000", "abc", "-1", "0x10/"])
def test_fwmark_garbage(mark: str) -> None:
    p = one_problem(f"""
        name: m
        nodes:
          n:
            rules:
              - {{fwmark: "{mark}", table: 1}}
    """)
    assert p.path == "nodes.n.rules[0].fwmark" and p.line == 5


# ---------------------------------------------------------------- equivalent spellings


def test_bridge_ports_same_as_master_on_port() -> None:
    by_master = lab("""
        name: same
        nodes:
          host:
            links:
              br0: {kind: bridge}
              veth1: {peer: "pod:eth0", master: br0}
          pod: {}
    """)
    by_ports = lab("""
        name: same
        nodes:
          host:
            links:
              br0: {kind: bridge, ports: [veth1]}
              veth1: {peer: "pod:eth0"}
          pod: {}
    """)
    for loaded in (by_master, by_ports):
        assert topology(loaded).interfaces[("host", "veth1")].master == "br0"
    assert build_plan(by_master).render() == build_plan(by_ports).render()


def test_implicit_veth_end() -> None:
    loaded = lab("""
        name: implicit
        nodes:
          a:
            links:
              eth0: {peer: "b:eth7"}
          b: {}
    """)
    topo = topology(loaded)
    far = topo.interfaces[("b", "eth7")]
    assert far.kind == "veth" and far.peer == ("a", "eth0")
    assert isinstance(far.settings, PeerEnd) and far.settings.up
    assert far.path == ("nodes", "a", "links", "eth0")  # errors about it point at the veth that made it
    assert [(p.near, p.far) for p in topo.pairs] == [(("a", "eth0"), ("b", "eth7"))]


def test_both_ends_declared_as_veths() -> None:
    loaded = lab("""
        name: both
        nodes:
          a:
            links:
              eth0: {peer: "b:eth0"}
          b:
            links:
              eth0: {peer: "a:eth0", mtu: 1400}
    """)
    topo = topology(loaded)
    assert len(topo.pairs) == 1
    assert isinstance(loaded.nodes["b"].links["eth0"], Veth)


def test_lo_settings() -> None:
    loaded = lab("""
        name: lo
        nodes:
          n:
            links:
              lo: {mtu: 16384, addresses: [192.0.2.1/32, "2001:db8::1/128"]}
    """)
    iface = topology(loaded).interfaces[("n", "lo")]
    assert iface.kind == "lo"
    assert iface.settings.addresses == ["192.0.2.1/32", "2001:db8::1/128"]


def test_lo_cannot_be_veth_peer_or_bridge_port() -> None:
    p = one_problem("""
        name: lo
        nodes:
          a:
            links:
              eth0: {peer: "b:lo"}
          b:
            links:
              lo: {addresses: [10.0.0.1/32]}
    """)
    assert p.path == "nodes.a.links.eth0.peer" and "lo cannot be a veth peer" in p.message


# ---------------------------------------------------------------- YAML details


def test_anchors_and_merge_keys() -> None:
    loaded = lab("""
        name: anchors
        nodes:
          a:
            links:
              eth0: &end {peer: "b:eth0", mtu: 1400, addresses: [10.0.0.1/24]}
              eth1:
                <<: *end
                peer: "b:eth1"
                addresses: [10.0.1.1/24]
          b:
            sysctls: &fwd {net.ipv4.ip_forward: 1}
          c:
            sysctls: *fwd
    """)
    eth1 = loaded.nodes["a"].links["eth1"]
    assert isinstance(eth1, Veth)
    assert (eth1.peer, eth1.mtu, eth1.addresses) == ("b:eth1", 1400, ["10.0.1.1/24"])
    assert loaded.nodes["c"].sysctls == {"net.ipv4.ip_forward": 1}


def test_merge_keys_keep_line_numbers() -> None:
    found = problems("""
        name: anchors
        nodes:
          a:
            links:
              eth0: &end {peer: "b:eth0", mtu: 10}
              eth1:
                <<: *end
                peer: "b:eth1"
                addresses: [10.0.1.1]
          b: {}
    """)
    where = {(p.path, p.line) for p in found}
    assert where == {
        ("nodes.a.links.eth0.mtu", 5),  # the anchor's own line
        ("nodes.a.links.eth1.mtu", 5),  # merged in: where the value is written
        ("nodes.a.links.eth1.addresses[0]", 9),  # an explicit key after the merge: its own line
    }


def test_merge_key_overrides_without_duplicate_error_but_real_duplicates_fail() -> None:
    p = one_problem("""
        name: dup
        nodes:
          a:
            links:
              eth0: &base {kind: dummy, mtu: 1400}
              eth1: {<<: *base, mtu: 1500, mtu: 1600}
    """)
    assert (p.line, p.path) == (6, "nodes.a.links.eth1.mtu")
    assert "duplicate key" in p.message


@pytest.mark.parametrize("name", ["on", "off", "no", "yes", "y", "true", "null", "1", "1_0", "010"])
def test_yaml_11_keys_keep_their_spelling(name: str) -> None:
    # YAML 1.1 turns these into booleans, None or numbers; a node's name is what was written.
    loaded = lab(f"""
        name: keys
        nodes:
          {name}: {{}}
    """)
    assert list(loaded.nodes) == [name]


def test_line_numbers_point_at_key_and_item() -> None:
    found = problems("""
        name: lines
        nodes:
          n:
            links:
              d0:
                kind: dummy
                addresses:
                  - 10.0.0.1/24
                  - 10.0.0.300/24
                mtu: 1
            routes:
              - {to: default, dev: d0}
              - to: 10.9.0.0/16
                via: 10.0.0.1/24
    """)
    assert [(p.line, p.path) for p in found] == [
        (9, "nodes.n.links.d0.addresses[1]"),
        (10, "nodes.n.links.d0.mtu"),
        (14, "nodes.n.routes[1].via"),
    ]


def test_missing_key_points_at_its_parent() -> None:
    p = one_problem("""
        name: missing
        nodes:
          n:
            routes:
              - via: 10.0.0.1
    """)
    assert (p.line, p.path) == (5, "nodes.n.routes[0].to")
    assert "to: default" in p.message


# ---------------------------------------------------------------- load_lab_data and friends


def test_load_lab_data_with_a_dict() -> None:
    data: dict[str, Any] = {
        "name": "d",
        "nodes": {"a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.0.0.1/24"]}}}, "b": {}},
    }
    loaded = load_lab_data(data)
    assert loaded.nodes["a"].links["eth0"].addresses == ["10.0.0.1/24"]
    data["nodes"]["a"]["links"]["eth0"]["mtu"] = 1
    with pytest.raises(LabError) as info:
        load_lab_data(data)
    (p,) = info.value.problems
    assert (p.file, p.line, p.path) == ("<dict>", 0, "nodes.a.links.eth0.mtu")
    assert str(p).startswith("<dict>: nodes.a.links.eth0.mtu: ")  # no ":0" without a line


def test_load_lab_data_rejects_non_mapping() -> None:
    with pytest.raises(LabError, match="the top level is a list"):
        load_lab_data([1, 2])


def test_load_lab_from_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(TWO_PODS), encoding="utf-8")
    assert load_lab(path).name == "two-pods"
    with pytest.raises(LabError, match="cannot read the lab file"):
        load_lab(tmp_path / "nope.yaml")
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(LabError, match="not UTF-8"):
        load_lab(path)


def test_every_problem_is_collected_and_sorted() -> None:
    found = problems("""
        name: many
        nodes:
          b:
            links:
              eth0: {kind: dummy, mtu: 1}
          a:
            links:
              eth0: {kind: dummy, mac: "01:00:00:00:00:00", adresses: []}
    """)
    assert [p.line for p in found] == sorted(p.line for p in found)
    assert {p.path for p in found} == {
        "nodes.b.links.eth0.mtu",
        "nodes.a.links.eth0.mac",
        "nodes.a.links.eth0.adresses",
    }
    text = str(LabError(found))
    assert text.startswith("3 problems in the lab:\n  t.yaml:")


def test_typo_of_required_key_is_one_problem() -> None:
    p = one_problem("""
        name: typo
        nodes:
          n:
            links:
              vx0: {kind: vxlan, vin: 5, remote: 192.0.2.1}
    """)
    assert p.path == "nodes.n.links.vx0.vin" and "did you mean 'vni'?" in p.message


def test_int_or_str_union_is_one_problem() -> None:
    p = one_problem("""
        name: union
        nodes:
          n:
            sysctls:
              net.core.somaxconn: [1024]
    """)
    assert p.path == 'nodes.n.sysctls["net.core.somaxconn"]'
    assert p.message == "a sysctl value is a number or a string, got [1024]"


def test_control_characters_never_reach_the_terminal() -> None:
    found = problems("""
        name: esc
        nodes:
          n:
            links:
              "e\\x1b[2J": {kind: dummy}
            routes:
              - {to: default, dev: "x\\x07"}
    """)
    for p in found:
        assert not any(ord(c) < 32 for c in str(p)), repr(str(p))
    assert any('links["e\\x1b[2J"]' in p.path for p in found)


def test_format_path_and_printable() -> None:
    assert format_path(("nodes", "n1", "routes", 2, "via")) == "nodes.n1.routes[2].via"
    assert format_path(("nodes", "r", "links", "eth0.100")) == 'nodes.r.links["eth0.100"]'
    assert format_path(("nodes", "..")) == 'nodes[".."]'
    assert format_path(("a", 'b"c')) == 'a["b\\"c"]'
    assert printable("a\tb\x7f") == "a\\x09b\\x7f"


def test_parse_yaml_syntax_error_has_line() -> None:
    data, _, found = parse_yaml("name: x\nnodes:\n  a: [1, 2\n", "f.yaml")
    assert data is None
    (p,) = found
    assert p.line == 4 and "not closed" in p.message


# ---------------------------------------------------------------- cross-checks that need a kernel's view


def test_gateway_reachable_through_a_dev_route_or_onlink() -> None:
    loaded = lab("""
        name: gw
        nodes:
          n:
            links:
              d0: {kind: dummy, addresses: [10.0.0.2/24]}
              d1: {kind: dummy}
            routes:
              - {to: 10.9.0.0/16, dev: d1}
              - {to: 10.8.0.0/16, via: 10.9.0.1}
              - {to: 10.7.0.0/16, via: 10.6.0.1, dev: d1, onlink: true}
              - {to: "::/0", via: "fe80::1", dev: d0}
              - {to: default, via: 10.0.0.1, src: 10.0.0.2}
    """)
    assert len(loaded.nodes["n"].routes) == 5


def test_gateway_on_the_wrong_device() -> None:
    p = one_problem("""
        name: gw
        nodes:
          n:
            links:
              d0: {kind: dummy, addresses: [10.0.0.2/24]}
              d1: {kind: dummy, addresses: [10.1.0.2/24]}
            routes:
              - {to: 10.8.0.0/16, via: 10.0.0.1, dev: d1}
    """)
    assert p.path == "nodes.n.routes[0].via"
    assert "on d1 (it has 10.1.0.2/24 on d1)" in p.message


@pytest.mark.parametrize(
    ("text", "variant", "expected"),
    [
        ("name: lab1\nnodes: {a: {}}\n", None, "lab1"),
        ("# a lab\nname: 'lab-2'  # quoted, with a comment\nnodes: {}\n", None, "lab-2"),
        ('nodes:\n  a: {}\nname: "lab3"\n', "v1", "lab3-v1"),
        ("nodes:\n  a:\n    name: x\n", None, None),  # only a top-level key counts
        ("name: &n lab4\n", None, None),  # not plainly written: loading decides
        ("{name: lab5, nodes: {}}\n", None, None),
        ("name: a\n---\nname: b\n", None, None),
    ],
)
def test_peek_lab_name_reads_only_a_plain_top_level_name(
    tmp_path: Path, text: str, variant: str | None, expected: str | None
) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    assert peek_lab_name(path, variant) == expected


def test_peek_lab_name_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert peek_lab_name(tmp_path / "nothing.yaml") is None
