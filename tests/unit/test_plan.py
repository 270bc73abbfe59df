"""The planner: lab → ordered kernel operations. Pure, so everything here runs without root."""

from __future__ import annotations

import textwrap
from typing import TypeVar

import pytest

from netlab.plan.build import build_plan, fingerprint
from netlab.plan.ops import (
    STAGES,
    AddAddress,
    AddRoute,
    AddRule,
    CreateLink,
    CreateNetns,
    DeleteNetns,
    MarkNetns,
    Op,
    RunCommand,
    SetLink,
    SetSysctl,
    stage_of,
)
from netlab.spec.load import load_lab_text
from netlab.spec.model import Lab

EVERYTHING = """
name: all
tables: {vpn: 100}
nodes:
  host:
    sysctls: {net.ipv4.ip_forward: 1}
    links:
      br0: {kind: bridge, addresses: [10.0.0.1/24]}
      d0: {kind: dummy, addresses: [192.168.9.1/24]}
      veth1: {peer: "pod:eth0", master: br0}
      vx0: {kind: vxlan, vni: 7, remote: 192.168.9.2, dev: d0}
      lo: {mtu: 9000}
    routes:
      - {to: 10.9.0.0/16, via: 10.0.0.2, table: vpn}
    rules:
      - {from: 10.0.0.0/24, table: vpn, priority: 10}
    exec:
      - [ip, route]
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
        "namespaces", "bridges", "veths", "tunnels", "link settings",
        "sysctls", "addresses", "routes", "rules", "commands",
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
    plan = build_plan(lab("""
        name: far
        nodes:
          a:
            links:
              eth0: {peer: "b:eth0", mtu: 1400}
          b:
            links:
              eth0: {up: false, mtu: 1300, mac: "02:00:00:00:00:02"}
    """))
    (create,) = [op for op in plan.ops if isinstance(op, CreateLink)]
    assert (create.ns, create.name, create.peer_ns, create.peer_name) == ("far.a", "eth0", "far.b", "eth0")
    assert (create.mtu, create.peer_mtu, create.peer_mac) == (1400, 1300, "02:00:00:00:00:02")
    (far,) = [op for op in plan.ops if isinstance(op, SetLink)]
    assert (far.ns, far.name, far.up) == ("far.b", "eth0", False)
    assert far.render() == "ip -n far.b link set eth0 down"


def test_veth_created_from_the_end_with_a_master() -> None:
    plan = build_plan(lab("""
        name: swap
        nodes:
          pod:
            links:
              eth0: {peer: "host:veth1"}
          host:
            links:
              br0: {kind: bridge}
              veth1: {master: br0}
    """))
    (create,) = [op for op in plan.ops if isinstance(op, CreateLink) and op.kind == "veth"]
    assert (create.ns, create.name, create.master, create.peer_ns) == ("swap.host", "veth1", "br0", "swap.pod")
    (far,) = [op for op in plan.ops if isinstance(op, SetLink)]
    assert (far.ns, far.name, far.master) == ("swap.pod", "eth0", None)


def test_veth_between_two_bridges_sets_both_masters() -> None:
    plan = build_plan(lab("""
        name: two
        nodes:
          l:
            links:
              br0: {kind: bridge}
              t: {peer: "r:t", master: br0}
          r:
            links:
              br1: {kind: bridge, ports: [t]}
    """))
    (create,) = [op for op in plan.ops if isinstance(op, CreateLink) and op.kind == "veth"]
    (far,) = [op for op in plan.ops if isinstance(op, SetLink)]
    assert (create.ns, create.master) == ("two.l", "br0")
    assert (far.ns, far.name, far.master) == ("two.r", "t", "br1")


def test_ipv6_free_nodes_disable_ipv6_and_ipv6_nodes_skip_dad() -> None:
    plan = build_plan(lab("""
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
    """))
    defaults: dict[str, dict[str, str]] = {}
    for op in plan.ops:
        if isinstance(op, SetSysctl) and op.early:
            defaults.setdefault(op.ns, {})[op.key] = op.value
    assert defaults["six.v4"] == {
        "net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1",
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
    routes = ops_of("""
        name: fam
        nodes:
          n:
            links:
              d: {kind: dummy, addresses: [10.0.0.1/24, "2001:db8::1/64"]}
            routes:
              - {to: default, via: "2001:db8::2"}
              - {to: default, type: unreachable, family: 6, metric: 9}
              - {to: default, via: 10.0.0.2}
    """, AddRoute)
    assert [r.family for r in routes] == [6, 6, 4]
    assert routes[1].render() == "ip -6 -n fam.n route add unreachable default metric 9"


@pytest.mark.parametrize(
    ("written", "mark", "mask", "shown"),
    [
        ("0x4000/0xff00", 0x4000, 0xFF00, "fwmark 0x4000/0xff00"),
        ("7", 7, None, "fwmark 0x7"),
        ("16/255", 16, 255, "fwmark 0x10/0xff"),
        ("0", 0, None, "fwmark 0x0"),
    ],
)
def test_fwmark_and_mask(written: str, mark: int, mask: int | None, shown: str) -> None:
    (rule,) = ops_of(f"""
        name: marks
        nodes:
          n:
            rules:
              - {{fwmark: "{written}", table: 9, priority: 5}}
    """, AddRule)
    assert isinstance(rule, AddRule)
    assert (rule.fwmark, rule.fwmask) == (mark, mask)
    assert rule.render() == f"ip -n marks.n rule add pref 5 from all {shown} lookup 9"


def test_undo() -> None:
    plan = build_plan(lab(EVERYTHING))
    for op in plan.ops:
        if isinstance(op, CreateNetns):
            assert op.undo() == DeleteNetns(op.ns)
            assert op.undo().render() == f"ip netns del {op.ns}"
        else:
            assert op.undo() is None, op


def test_lo_settings_become_setlink() -> None:
    plan = build_plan(lab("""
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
    """))
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
