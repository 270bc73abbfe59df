"""The planner: lab → ordered kernel operations. Pure, so everything here runs without root."""

from __future__ import annotations

import textwrap
from typing import TypeVar

import pytest

from netlab.lab.model import Lab
from netlab.lab.render import fingerprint
from netlab.load import load_lab_text
from netlab.plan.build import build_plan
from netlab.plan.ops import (
    STAGES,
    AddAddress,
    AddFdb,
    AddNeighbor,
    AddRoute,
    AddRule,
    CreateLink,
    CreateNetns,
    DeleteNetem,
    DeleteNetns,
    MarkNetns,
    Op,
    RunCommand,
    SetLink,
    SetNetem,
    SetSysctl,
    VethType,
    stage_of,
)

EVERYTHING = """
name: all
tables: {vpn: 100}
nodes:
  host:
    sysctls: {net.ipv4.ip_forward: 1}
    links:
      br0: {kind: bridge, addresses: [10.0.0.1/24]}
      d0: {kind: dummy, addresses: [192.168.9.1/24]}
      veth1: {peer: "pod:eth0", master: br0, hairpin: true, netem: {delay: 10ms}}
      vx0: {kind: vxlan, vni: 7, remote: 192.168.9.2, dev: d0}
      blue: {kind: vrf, table: 20}
      lo: {mtu: 9000}
    routes:
      - {to: 10.9.0.0/16, via: 10.0.0.2, table: vpn}
    rules:
      - {from: 10.0.0.0/24, table: vpn, priority: 10}
    neighbors:
      - {to: 10.9.0.0, lladdr: "0a:58:0a:09:00:00", dev: vx0}
    fdb:
      - {lladdr: "0a:58:0a:09:00:00", dev: vx0, dst: 192.168.9.2}
      - {lladdr: "02:00:00:00:00:0a", dev: veth1}
    exec:
      - [ip, route]
    nftables:
      - ruleset: |
          table inet all {
            chain post { type nat hook postrouting priority srcnat; oifname "d0" masquerade; }
          }
    ipvs:
      - {address: 192.168.9.1, port: 80, scheduler: rr, reals: [{address: 10.0.0.2, port: 8080}]}
  pod:
    links:
      eth0: {addresses: [10.0.0.2/24], mtu: 1400}
"""


def lab(text: str) -> Lab:
    return load_lab_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")


OpT = TypeVar("OpT", bound=Op)


def ops_of(text: str, kind: type[OpT]) -> list[OpT]:
    return [op for op in build_plan(lab(text)).ops if isinstance(op, kind)]


def test_plan_is_deterministic() -> None:
    first, second = build_plan(lab(EVERYTHING)), build_plan(lab(EVERYTHING))
    assert first == second
    assert first.render() == second.render()
    assert first.namespaces == ("all.host", "all.pod")


def test_stage_order() -> None:
    plan = build_plan(lab(EVERYTHING))
    order = [STAGES.index(stage_of(op)) for op in plan.ops]
    assert order == sorted(order)
    assert [stage for stage, _ in plan.by_stage()] == list(STAGES)  # this lab uses every stage
    assert list(STAGES) == [
        "namespaces",
        "vrfs",
        "bridges",
        "veths",
        "tunnels",
        "link settings",
        "port settings",
        "qdiscs",
        "sysctls",
        "addresses",
        "neighbors",
        "routes",
        "rules",
        "firewall",
        "ipvs",
        "commands",
    ]
    headers = [line[2:] for line in plan.render().splitlines()[1:] if line.startswith("# ")]
    assert headers == list(STAGES)


def test_every_namespace_first_then_marked_then_defaults() -> None:
    ops = build_plan(lab(EVERYTHING)).ops
    assert isinstance(ops[0], CreateNetns) and isinstance(ops[1], MarkNetns)
    assert ops[1].render() == "ip -n all.host link set lo up alias netlab:all:host"
    early = [op for op in ops if isinstance(op, SetSysctl) and op.early]
    assert early and all(stage_of(op) == "namespaces" for op in early)


def test_far_end_of_veth_gets_setlink() -> None:
    plan = build_plan(
        lab("""
        name: far
        nodes:
          a:
            links:
              eth0: {peer: "b:eth0", mtu: 1400}
          b:
            links:
              eth0: {up: false, mtu: 1300, mac: "02:00:00:00:00:02"}
    """)
    )
    (create,) = [op for op in plan.ops if isinstance(op, CreateLink)]
    assert (create.ns, create.name, create.mtu) == ("far.a", "eth0", 1400)
    assert create.type == VethType(peer_ns="far.b", peer_name="eth0", peer_mtu=1300, peer_mac="02:00:00:00:00:02")
    (far,) = [op for op in plan.ops if isinstance(op, SetLink)]
    assert (far.ns, far.name, far.up) == ("far.b", "eth0", False)
    assert far.render() == "ip -n far.b link set eth0 down"


def test_veth_created_from_the_end_with_a_master() -> None:
    plan = build_plan(
        lab("""
        name: swap
        nodes:
          pod:
            links:
              eth0: {peer: "host:veth1"}
          host:
            links:
              br0: {kind: bridge}
              veth1: {master: br0}
    """)
    )
    (create,) = [op for op in plan.ops if isinstance(op, CreateLink) and op.kind == "veth"]
    assert (create.ns, create.name, create.master, create.type) == (
        "swap.host",
        "veth1",
        "br0",
        VethType("swap.pod", "eth0"),
    )
    (far,) = [op for op in plan.ops if isinstance(op, SetLink)]
    assert (far.ns, far.name, far.master) == ("swap.pod", "eth0", None)


def test_veth_between_two_bridges_sets_both_masters() -> None:
    plan = build_plan(
        lab("""
        name: two
        nodes:
          l:
            links:
              br0: {kind: bridge}
              t: {peer: "r:t", master: br0}
          r:
            links:
              br1: {kind: bridge, ports: [t]}
    """)
    )
    (create,) = [op for op in plan.ops if isinstance(op, CreateLink) and op.kind == "veth"]
    (far,) = [op for op in plan.ops if isinstance(op, SetLink)]
    assert (create.ns, create.master) == ("two.l", "br0")
    assert (far.ns, far.name, far.master) == ("two.r", "t", "br1")


def test_ipv6_free_nodes_disable_ipv6_and_ipv6_nodes_skip_dad() -> None:
    plan = build_plan(
        lab("""
        name: six
        nodes:
          v4:
            links:
              d: {kind: dummy, addresses: [10.0.0.1/24]}
          v6addr:
            links:
              d: {kind: dummy, addresses: ["2001:db8::1/64"]}
          v6route:
            routes:
              - {to: "2001:db8:1::/48", dev: lo}
          v6sysctl:
            sysctls: {net.ipv6.conf.all.forwarding: 1}
          v6rule:
            rules:
              - {family: 6, table: 5}
          v6vxlan:
            links:
              vx: {kind: vxlan, vni: 1, remote: "2001:db8::9"}
    """)
    )
    defaults: dict[str, dict[str, str]] = {}
    for op in plan.ops:
        if isinstance(op, SetSysctl) and op.early:
            defaults.setdefault(op.ns, {})[op.key] = op.value
    assert defaults["six.v4"] == {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
    }
    for node in ("v6addr", "v6route", "v6sysctl", "v6rule", "v6vxlan"):
        assert defaults[f"six.{node}"]["net.ipv6.conf.all.accept_dad"] == "0", node
        assert defaults[f"six.{node}"]["net.ipv6.conf.default.accept_dad"] == "0", node
        assert "net.ipv6.conf.all.disable_ipv6" not in defaults[f"six.{node}"], node
    (addr,) = [op for op in plan.ops if isinstance(op, AddAddress) and ":" in op.address]
    assert addr.render().endswith(" nodad")


def test_table_names_resolve_to_numbers() -> None:
    text = """
        name: tables
        tables: {vpn: 100}
        nodes:
          n:
            links:
              d: {kind: dummy, addresses: [10.0.0.1/24]}
            routes:
              - {to: default, via: 10.0.0.2, table: vpn}
              - {to: 10.1.0.0/16, dev: d, table: main}
              - {to: 10.2.0.0/16, dev: d, table: 200}
              - {to: 10.3.0.0/16, dev: d}
            rules:
              - {from: 10.0.0.0/24, table: vpn}
              - {to: 10.9.0.0/16, table: local}
    """
    routes = ops_of(text, AddRoute)
    assert [(r.table, r.table_name) for r in routes] == [(100, "vpn"), (254, "main"), (200, None), (None, None)]
    assert routes[0].render() == "ip -n tables.n route add default via 10.0.0.2 table vpn"
    assert routes[2].render() == "ip -n tables.n route add 10.2.0.0/16 dev d table 200"
    rules = ops_of(text, AddRule)
    assert [(r.table, r.table_name) for r in rules] == [(100, "vpn"), (255, "local")]


def test_default_route_family() -> None:
    routes = ops_of(
        """
        name: fam
        nodes:
          n:
            links:
              d: {kind: dummy, addresses: [10.0.0.1/24, "2001:db8::1/64"]}
            routes:
              - {to: default, via: "2001:db8::2"}
              - {to: default, type: unreachable, family: 6, metric: 9}
              - {to: default, via: 10.0.0.2}
    """,
        AddRoute,
    )
    assert [r.family for r in routes] == [6, 6, 4]
    assert routes[1].render() == "ip -6 -n fam.n route add unreachable default metric 9"


@pytest.mark.parametrize(
    ("written", "mark", "mask", "shown"),
    [
        ("0x4000/0xff00", 0x4000, 0xFF00, "fwmark 0x4000/0xff00"),
        ("7", 7, None, "fwmark 0x7"),
        ("16/255", 16, 255, "fwmark 0x10/0xff"),
        # Unmarked packets only: `ip rule … fwmark 0x0` alone would match every packet (mask 0).
        ("0", 0, None, "fwmark 0x0/0xffffffff"),
    ],
)
def test_fwmark_and_mask(written: str, mark: int, mask: int | None, shown: str) -> None:
    (rule,) = ops_of(
        f"""
        name: marks
        nodes:
          n:
            rules:
              - {{fwmark: "{written}", table: 9, priority: 5}}
    """,
        AddRule,
    )
    assert isinstance(rule, AddRule)
    assert (rule.fwmark, rule.fwmask) == (mark, mask)
    assert rule.render() == f"ip -n marks.n rule add pref 5 from all {shown} lookup 9"


def test_undo() -> None:
    plan = build_plan(lab(EVERYTHING))
    for op in plan.ops:
        if isinstance(op, CreateNetns):
            assert op.undo() == DeleteNetns(op.ns)
            assert op.undo().render() == f"ip netns del {op.ns}"
        elif isinstance(op, SetNetem):  # an impairment can be taken off a link that stays
            assert op.undo() == DeleteNetem(op.ns, dev=op.dev)
            assert op.undo().render() == f"tc -n {op.ns} qdisc del dev {op.dev} root"
        else:
            assert op.undo() is None, op


def test_lo_settings_become_setlink() -> None:
    plan = build_plan(
        lab("""
        name: lo
        nodes:
          a:
            links:
              lo: {mtu: 9000, addresses: [192.0.2.1/32]}
          b:
            links:
              lo: {mac: "02:00:00:00:00:01"}
          c:
            links:
              lo: {addresses: [192.0.2.3/32]}
    """)
    )
    setlinks = [op for op in plan.ops if isinstance(op, SetLink)]
    assert [op.render() for op in setlinks] == [
        "ip -n lo.a link set lo mtu 9000 up",
        "ip -n lo.b link set lo address 02:00:00:00:00:01 up",
    ]
    assert [op.render() for op in plan.ops if isinstance(op, AddAddress)] == [
        "ip -n lo.a addr add 192.0.2.1/32 dev lo",
        "ip -n lo.c addr add 192.0.2.3/32 dev lo",
    ]


def test_commands_run_last_without_a_shell() -> None:
    plan = build_plan(lab(EVERYTHING))
    assert isinstance(plan.ops[-1], RunCommand)
    assert plan.ops[-1].render() == "ip netns exec all.host ip route"
    cmd = RunCommand("x.y", argv=("sh", "-c", "echo a; echo b"))
    assert cmd.render() == "ip netns exec x.y sh -c 'echo a; echo b'"


def test_unresolvable_lab_is_refused() -> None:
    loaded = lab("""
        name: ok
        nodes:
          a:
            links:
              eth0: {peer: "b:eth0"}
          b: {}
    """)
    broken = loaded.model_copy(update={"nodes": {"a": loaded.nodes["a"]}})
    with pytest.raises(ValueError, match="does not resolve"):
        build_plan(broken)


# ---------------------------------------------------------------- neighbours and FDB entries


FLANNEL_NODE = """
name: fl
nodes:
  node1:
    links:
      eth0: {peer: "node2:eth0", addresses: [192.168.49.2/24]}
      flannel.1:
        kind: vxlan
        vni: 1
        local: 192.168.49.2
        dev: eth0
        learning: false
        mtu: 1450
        mac: "0a:58:0a:f4:00:00"
        addresses: [10.244.0.0/32]
      cni0: {kind: bridge, addresses: [10.244.0.1/24]}
      veth1: {peer: "pod1:eth0", master: cni0}
    neighbors:
      - {to: 10.244.1.0, lladdr: "0a:58:0a:f4:01:00", dev: flannel.1}
      - {to: "fd00:244:1::", lladdr: "0a:58:0a:f4:01:00", dev: flannel.1}
    fdb:
      - {lladdr: "0a:58:0a:f4:01:00", dev: flannel.1, dst: 192.168.49.3}
      - {lladdr: "02:00:00:00:01:02", dev: veth1}
    routes:
      - {to: 10.244.1.0/24, via: 10.244.1.0, dev: flannel.1, onlink: true}
  node2:
    links:
      eth0: {addresses: [192.168.49.3/24]}
  pod1:
    links:
      eth0: {addresses: [10.244.0.2/24], mac: "02:00:00:00:01:02"}
"""


def test_neighbors_and_fdb_render_as_ip_and_bridge_commands() -> None:
    plan = build_plan(lab(FLANNEL_NODE))
    neighbors = [op for op in plan.ops if isinstance(op, AddNeighbor)]
    fdb = [op for op in plan.ops if isinstance(op, AddFdb)]
    assert [op.render() for op in neighbors] == [
        "ip -n fl.node1 neigh replace 10.244.1.0 lladdr 0a:58:0a:f4:01:00 dev flannel.1 nud permanent",
        "ip -6 -n fl.node1 neigh replace fd00:244:1:: lladdr 0a:58:0a:f4:01:00 dev flannel.1 nud permanent",
    ]
    assert [op.render() for op in fdb] == [
        "bridge -n fl.node1 fdb append 0a:58:0a:f4:01:00 dev flannel.1 dst 192.168.49.3 self permanent",
        "bridge -n fl.node1 fdb append 02:00:00:00:01:02 dev veth1 master static",
    ]
    assert [op.what for op in neighbors + fdb] == [
        "nodes.node1.neighbors[0]",
        "nodes.node1.neighbors[1]",
        "nodes.node1.fdb[0]",
        "nodes.node1.fdb[1]",
    ]
    assert [(op.master, op.dst) for op in fdb] == [(False, "192.168.49.3"), (True, None)]
    assert all(op.undo() is None for op in neighbors + fdb)  # gone with the namespace


def test_neighbors_stage_runs_after_addresses_and_before_routes() -> None:
    plan = build_plan(lab(FLANNEL_NODE))
    assert STAGES.index("addresses") + 1 == STAGES.index("neighbors") == STAGES.index("routes") - 1
    assert stage_of(AddNeighbor("x.y")) == stage_of(AddFdb("x.y")) == "neighbors"
    # flanneld's order per remote node: neighbour, FDB entry, then the onlink route
    kinds = [type(op).__name__ for op in plan.ops if isinstance(op, (AddNeighbor, AddFdb, AddRoute))]
    assert kinds == ["AddNeighbor", "AddNeighbor", "AddFdb", "AddFdb", "AddRoute"]
    stages = dict(plan.by_stage())
    assert [op.what for op in stages["neighbors"]] == [
        "nodes.node1.neighbors[0]",
        "nodes.node1.neighbors[1]",
        "nodes.node1.fdb[0]",
        "nodes.node1.fdb[1]",
    ]
    text = plan.render()
    assert text.index("# addresses") < text.index("# neighbors") < text.index("# routes")
    assert "ip -n fl.node1 route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in text


def test_ipv6_neighbor_keeps_ipv6_on() -> None:
    """An IPv6 neighbour is the only IPv6 in node1's own objects; the kernel refuses an NDP
    entry on a device with IPv6 disabled, so the node gets IPv6 (without DAD)."""
    defaults = {
        op.key: op.value
        for op in build_plan(lab(FLANNEL_NODE)).ops
        if isinstance(op, SetSysctl) and op.early and op.ns == "fl.node1"
    }
    assert "net.ipv6.conf.all.disable_ipv6" not in defaults
    assert defaults["net.ipv6.conf.all.accept_dad"] == "0"


def test_fdb_on_a_vxlan_that_is_a_bridge_port_is_self() -> None:
    """An EVPN-style vxlan enslaved to a bridge still keeps its remote MACs in its own table."""
    (fdb,) = ops_of(
        """
        name: evpn
        nodes:
          n:
            links:
              br0: {kind: bridge}
              vx0: {kind: vxlan, vni: 10, local: 192.0.2.1, master: br0}
            fdb:
              - {lladdr: "00:00:00:00:00:00", dev: vx0, dst: 192.0.2.2}
    """,
        AddFdb,
    )
    assert (fdb.master, fdb.render()) == (
        False,
        "bridge -n evpn.n fdb append 00:00:00:00:00:00 dev vx0 dst 192.0.2.2 self permanent",
    )


def test_neighbors_and_fdb_on_a_link_that_is_down_are_fine() -> None:
    plan = build_plan(
        lab("""
        name: down
        nodes:
          n:
            links:
              br0: {kind: bridge}
              p0: {peer: "m:eth0", master: br0, up: false}
              vx0: {kind: vxlan, vni: 10, local: 192.0.2.1, up: false}
            neighbors:
              - {to: 10.0.0.9, lladdr: "02:00:00:00:00:09", dev: p0}
            fdb:
              - {lladdr: "02:00:00:00:00:09", dev: p0}
              - {lladdr: "02:00:00:00:00:09", dev: vx0, dst: 192.0.2.2}
          m: {}
    """)
    )
    assert len([op for op in plan.ops if isinstance(op, (AddNeighbor, AddFdb))]) == 3


def test_fdb_and_neighbor_change_the_fingerprint() -> None:
    base = lab(FLANNEL_NODE)
    fewer = FLANNEL_NODE.replace('      - {lladdr: "02:00:00:00:01:02", dev: veth1}\n', "")
    assert fewer != FLANNEL_NODE
    assert fingerprint(base) != fingerprint(lab(fewer))


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_formatting_and_comments() -> None:
    block = """
        # a comment
        name: fp
        nodes:
          a:
            links:
              eth0:
                peer: b:eth0      # trailing comment
                addresses:
                  - 10.0.0.1/24
          b: {}
    """
    flow = """
        name: "fp"
        nodes: {a: {links: {eth0: {addresses: ["10.0.0.1/24"], peer: 'b:eth0'}}}, b: {}}
    """
    explicit_defaults = """
        name: fp
        description: ""
        nodes:
          a:
            links:
              eth0: {peer: "b:eth0", up: true, addresses: [10.0.0.1/24]}
          b: {}
    """
    prints = {build_plan(lab(t)).fingerprint for t in (block, flow, explicit_defaults)}
    assert len(prints) == 1
    assert fingerprint(lab(block)) == build_plan(lab(block)).fingerprint


@pytest.mark.parametrize(
    "change",
    [
        ("10.0.0.1/24", "10.0.0.9/24"),
        ("peer: b:eth0", "peer: b:eth1"),
        ("name: fp", "name: fp2"),
        ("b: {}", "b: {sysctls: {net.ipv4.ip_forward: 1}}"),
    ],
)
def test_fingerprint_changes_with_the_lab(change: tuple[str, str]) -> None:
    text = """
        name: fp
        nodes:
          a:
            links:
              eth0:
                peer: b:eth0
                addresses: [10.0.0.1/24]
          b: {}
    """
    changed = text.replace(*change)
    assert changed != text
    assert build_plan(lab(text)).fingerprint != build_plan(lab(changed)).fingerprint


def test_hairpin_port_is_set_once_the_port_has_its_master() -> None:
    plan = build_plan(lab(EVERYTHING))
    (op,) = [op for op in plan.ops if stage_of(op) == "port settings"]
    assert op.render() == "ip -n all.host link set veth1 type bridge_slave hairpin on"
    assert STAGES.index("port settings") == STAGES.index("link settings") + 1
