"""VRF devices (`kind: vrf` links) without a kernel: the model, the cross-object rules, the
plan (its order held to by the fake driver), the render, the derived `vrf` requirement, and
the deciding-rule walker's handling of the kernel's l3mdev rule. The kernel's own answers
are in tests/vm/test_vrf.py."""

from __future__ import annotations

import socket
import textwrap
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netlab import lifecycle
from netlab.apply import apply_plan
from netlab.errors import ApplyError, LabError, MissingFeature
from netlab.fib import lookup as fib_lookup
from netlab.fib import query as fib_query
from netlab.fib import text as fib_text
from netlab.kernel import routes
from netlab.kernel.driver import OpFailed
from netlab.kernel.fake import FakeDriver
from netlab.kernel.features import FeatureStatus
from netlab.lab.model import LINK_KINDS, Lab, Vrf
from netlab.lab.parse import topology
from netlab.load import load_lab, load_lab_text
from netlab.observations import RouteAnswer, RouteQuery, RuleView
from netlab.plan.build import Plan, build_plan
from netlab.plan.ops import CreateLink, SetLink, VrfType, stage_of

LAB = """
name: v
tables: {blue: 10}
nodes:
  r:
    links:
      blue: {kind: vrf, table: blue}
      red: {kind: vrf, table: 20, mtu: 9000}
      eth1: {peer: "a:eth0", master: blue, addresses: [10.1.0.1/24]}
      br0: {kind: bridge, master: red, addresses: [10.5.0.1/24]}
      p1: {peer: "c:eth0", master: br0}
      d0: {kind: dummy, master: blue, addresses: [10.9.0.1/32]}
      eth3: {peer: "o:eth0", addresses: [10.3.0.1/24]}
    routes:
      - {to: default, type: unreachable, table: blue, metric: 4278198272}
      - {to: 10.8.0.0/24, via: 10.1.0.2, table: blue}
      - {to: 10.7.0.0/24, via: 10.1.0.2, dev: eth1}
  a:
    links:
      eth0: {addresses: [10.1.0.2/24]}
  c:
    links:
      eth0: {addresses: [10.5.0.2/24]}
  o:
    links:
      eth0: {addresses: [10.3.0.2/24]}
"""


def lab(text: str = LAB) -> Lab:
    return load_lab_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(LabError) as info:
        lab(text)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


# --------------------------------------------------------------------------- model and checks


def test_vrf_link_model() -> None:
    model = lab()
    blue, red = model.nodes["r"].links["blue"], model.nodes["r"].links["red"]
    assert isinstance(blue, Vrf) and isinstance(red, Vrf)
    assert (blue.table, red.table, red.mtu) == ("blue", 20, 9000)
    assert "vrf" in LINK_KINDS
    topo = topology(model)
    kinds = {i.name: (i.kind, i.master) for i in topo.of_node("r")}
    assert kinds["blue"] == ("vrf", None) and kinds["br0"] == ("bridge", "red")
    assert kinds["eth1"] == ("veth", "blue") and kinds["d0"] == ("dummy", "blue")
    eth1, p1 = topo.interfaces[("r", "eth1")], topo.interfaces[("r", "p1")]
    assert (topo.bridge_of(eth1), topo.bridge_of(p1)) == (None, "br0")


def test_a_vrf_joins_its_interfaces_at_layer_3_only() -> None:
    """Two interfaces of one VRF are two segments: the same address on both is no clash
    (a bridge would make it one)."""
    text = """
        name: v
        nodes:
          r:
            links:
              blue: {kind: vrf, table: 10}
              eth1: {peer: "a:eth0", master: blue, addresses: [10.1.0.1/24]}
              eth2: {peer: "b:eth0", master: blue, addresses: [10.2.0.1/24]}
          a: {links: {eth0: {addresses: [10.1.0.2/24]}}}
          b: {links: {eth0: {addresses: [10.1.0.2/24]}}}
    """
    segments = topology(lab(text)).segments()
    assert not any({("r", "eth1"), ("r", "eth2")} <= s for s in segments)


@pytest.mark.parametrize(
    "link,words",
    [
        ({"kind": "vrf", "table": "main"}, "table main is a built-in table (254)"),
        ({"kind": "vrf", "table": 255}, "table 255 is the built-in table 'local'"),
        ({"kind": "vrf", "table": 0}, "Invalid VRF table id"),
        ({"kind": "vrf", "table": "nosuch"}, "table 'nosuch' is not declared"),
        ({"kind": "vrf", "table": 10, "mtu": 1279}, "a vrf's MTU is at least 1280"),
        ({"kind": "vrf", "table": 10, "master": "br0"}, "a vrf cannot have a master"),
        ({"kind": "vrf"}, "required key 'table' is missing; a vrf needs `table:`"),
        ({"kind": "vrf", "table": 10, "ports": ["eth1"]}, "'ports' is a setting of bridge links, and this is a vrf"),
    ],
)
def test_vrf_mistakes(link: dict[str, Any], words: str) -> None:
    data = {"name": "v", "nodes": {"r": {"links": {"x": link, "br0": {"kind": "bridge"}}}}}
    import yaml

    found = problems(yaml.safe_dump(data))
    assert any(words in p for p in found), found


def test_two_vrfs_of_one_node_may_not_share_a_table_but_two_nodes_may() -> None:
    found = problems("""
        name: v
        tables: {blue: 10}
        nodes:
          r: {links: {blue: {kind: vrf, table: blue}, red: {kind: vrf, table: 10}}}
          s: {links: {blue: {kind: vrf, table: blue}}}
    """)
    assert found == [
        "nodes.r.links.red.table: vrf blue of this node already uses table 10; two "
        "VRFs sharing a table are one VRF (the kernel takes it only while net.vrf.strict_mode is 0): "
        "give each its own table"
    ]


def test_master_is_a_bridge_or_a_vrf() -> None:
    found = problems("""
        name: v
        nodes:
          r:
            links:
              d0: {kind: dummy}
              blue: {kind: vrf, table: 10}
              eth1: {peer: "a:eth0", master: d0}
              br0: {kind: bridge}
              br1: {kind: bridge, master: br0}
          a: {}
    """)
    assert any(
        "master d0 in node r is a dummy, not a bridge or vrf (bridges and vrfs there: blue, br0, br1)" in p
        for p in found
    ), found
    assert any("a bridge cannot be a port of another bridge" in p for p in found), found


def test_gateway_of_a_vrf_subnet() -> None:
    lab()  # in the VRF's table, or with dev: fine
    found = problems(LAB.replace("{to: 10.7.0.0/24, via: 10.1.0.2, dev: eth1}", "{to: 10.7.0.0/24, via: 10.1.0.2}"))
    assert found == [
        "nodes.r.routes[2].via: gateway 10.1.0.2 is on eth1's subnet, in VRF blue "
        "(table 10), but this route is in table main (254), where the kernel does not find it "
        '("Nexthop has invalid gateway"): add `dev: eth1` (the l3mdev rule then looks it up in the '
        "VRF's table), or put the route in VRF blue's table"
    ]
    # a subnet of the main table serves a route in a VRF's table (the kernel falls back to the rules)
    lab(LAB.replace("{to: 10.8.0.0/24, via: 10.1.0.2, table: blue}", "{to: 10.8.0.0/24, via: 10.3.0.2, table: blue}"))


def test_route_check_vrf_key() -> None:
    model = lab(
        LAB
        + """
checks:
  - name: in blue
    route: {on: r, get: 10.1.0.2, vrf: blue}
    expect: {rule: 1000, table: blue, dev: eth1}
"""
    )
    assert model.checks[0].route.vrf == "blue"  # type: ignore[union-attr]
    found = problems(
        LAB
        + """
checks:
  - name: not a vrf
    route: {on: r, get: 10.1.0.2, vrf: br0}
    expect: {table: blue}
  - name: with oif
    route: {on: r, get: 10.1.0.2, vrf: blue, oif: eth1}
    expect: {table: blue}
"""
    )
    assert any("vrf br0 of node r is a bridge, not a vrf (its vrfs: blue, red)" in p for p in found), found
    assert any("so it takes no `oif:`" in p for p in found), found


def test_a_vrf_link_needs_the_vrf_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    """As for link kinds and IPVS objects, the lab need not say `requires: [vrf]`."""
    asked: list[str] = []

    def probe(names: list[str]) -> list[FeatureStatus]:
        asked.extend(names)
        return [FeatureStatus(n, n != "vrf", "absent" if n == "vrf" else "ok", "run it in the VM") for n in names]

    import netlab.kernel.features as features

    monkeypatch.setattr(features, "probe_features", probe)
    with pytest.raises(MissingFeature) as info:
        lifecycle.check_requirements(lab())
    assert "vrf" in asked and "  vrf: absent" in str(info.value)
    # what `up` adds: the command that runs this very lab under a kernel with VRF, quoted for the shell
    said = "  → this lab under such a kernel: sudo netlab vm run -- netlab check --up 'my lab.yaml' --variant v1"
    assert lifecycle._in_a_vm("my lab.yaml", "v1") == said
    assert not lab().requires


# --------------------------------------------------------------------------- plan, render, fake driver


def test_vrfs_are_made_first_then_their_members() -> None:
    plan = build_plan(lab())
    links = [op for op in plan.ops if isinstance(op, CreateLink)]
    assert [(op.name, stage_of(op)) for op in links] == [
        ("blue", "vrfs"),
        ("red", "vrfs"),
        ("br0", "bridges"),
        ("d0", "bridges"),
        ("eth1", "veths"),
        ("p1", "veths"),
        ("eth3", "veths"),
    ]
    stages = [s for s, _ in plan.by_stage()]
    assert stages.index("vrfs") < stages.index("bridges") < stages.index("veths")
    blue = links[0]
    assert (blue.type, blue.kind, blue.up) == (VrfType(10), "vrf", True)


def test_render() -> None:
    text = build_plan(lab()).render()
    assert (
        "# vrfs\nip -n v.r link add blue up type vrf table 10\nip -n v.r link add red mtu 9000 up type vrf "
        "table 20\n# bridges\n" in text
    )
    assert "ip -n v.r link add br0 master red up type bridge stp_state 0" in text
    assert "ip -n v.r link add d0 master blue up type dummy" in text
    assert "ip -n v.r link add eth1 master blue up type veth peer name eth0 netns v.a" in text
    assert "ip -n v.r route add unreachable default metric 4278198272 table blue" in text


def test_fake_driver_builds_the_plan_and_shows_the_vrfs() -> None:
    driver = FakeDriver()
    apply_plan(build_plan(lab()), driver, None)
    links = {link.name: link for link in driver.observe("v.r").links}
    assert (links["blue"].kind, links["blue"].table, links["blue"].master) == ("vrf", 10, None)
    assert (links["br0"].master, links["p1"].master, links["eth1"].master) == ("red", "br0", "blue")


def test_fake_driver_holds_the_plan_to_the_order_the_real_one_needs() -> None:
    """A VRF made in the same stage as a link enslaved to it is not there yet when the
    stage's messages are built (NetlinkDriver resolves the master's ifindex first)."""
    plan = build_plan(lab())
    late = tuple(op for op in plan.ops if not (isinstance(op, CreateLink) and op.kind == "vrf"))
    vrfs = tuple(op for op in plan.ops if isinstance(op, CreateLink) and op.kind == "vrf")
    i = next(n for n, op in enumerate(late) if stage_of(op) == "bridges")
    driver = FakeDriver()
    with pytest.raises(OpFailed) as info:
        driver.apply([op for op in late[:i] if stage_of(op) == "namespaces"], lambda op: None)
        driver.apply([*vrfs, *[op for op in late if stage_of(op) == "bridges"]], lambda op: None)
    assert info.value.reason == "no interface red in namespace v.r"


def test_a_dummy_joins_its_bridge_after_both_exist() -> None:
    """A dummy and its bridge are made in one stage: the dummy gets its master with the
    link settings (NetlinkDriver would not find the bridge while building the stage)."""
    model = lab("""
        name: v
        nodes:
          r:
            links:
              d1: {kind: dummy, master: br0}
              br0: {kind: bridge, master: blue, addresses: [10.5.0.1/24]}
              d0: {kind: dummy, master: blue}
              blue: {kind: vrf, table: 10}
    """)
    plan = build_plan(model)
    lines = plan.render().splitlines()
    assert "ip -n v.r link add d1 up type dummy" in lines
    assert "ip -n v.r link set d1 master br0 up" in lines
    assert "ip -n v.r link add d0 master blue up type dummy" in lines  # a VRF exists by then
    driver = FakeDriver()
    apply_plan(plan, driver, None)
    links = {link.name: link.master for link in driver.observe("v.r").links}
    assert (links["d1"], links["d0"], links["br0"]) == ("br0", "blue", "blue")


def test_fake_driver_refuses_a_vrf_in_a_vrf() -> None:
    driver = FakeDriver()
    plan = build_plan(lab())
    done: list[Any] = []
    driver.apply([op for op in plan.ops if stage_of(op) == "namespaces"], done.append)
    driver.apply([op for op in plan.ops if stage_of(op) == "vrfs"], done.append)
    with pytest.raises(OpFailed) as info:
        driver.apply([SetLink("v.r", "x", name="red", master="blue")], done.append)
    assert "Can not enslave an L3 master device to a VRF" in info.value.reason


def test_a_refused_vrf_rolls_the_build_back() -> None:
    driver = FakeDriver(
        fail=lambda op: (
            "Invalid argument (EINVAL): Invalid VRF table id"
            if isinstance(op, CreateLink) and op.name == "red"
            else None
        )
    )
    with pytest.raises(ApplyError) as info:
        apply_plan(build_plan(lab()), driver, None)
    assert "nodes.r.links.red (ip -n v.r link add red mtu 9000 up type vrf table 20)" in str(info.value)
    assert driver.netns == {} and sorted(driver.deleted) == ["v.a", "v.c", "v.o", "v.r"]


def test_metallb_vrf_variants() -> None:
    for variant in ("vrf-devs", "vrf-fix-a"):
        model = load_lab("labs/metallb-policy-routing.yaml", variant)
        assert "vrf" in model.requires and {"vrf1", "vrf2"}.isdisjoint(model.nodes)
        router = model.nodes["router"].links
        assert (router["vrf1"].table, router["vrf2"].table) == ("vrf1", "vrf2")  # type: ignore[union-attr]
        plan: Plan = build_plan(model)
        assert (
            "ip -n metallb-policy-routing-" + variant + ".router link add vrf1 up type vrf table 101" in plan.render()
        )
    base = load_lab("labs/metallb-policy-routing.yaml")
    assert "vrf" not in base.requires and not any(
        isinstance(link, Vrf) for n in base.nodes.values() for link in n.links.values()
    )


# --------------------------------------------------------------------------- the l3mdev rule in route checks


def view(priority: int, action: str = "lookup", table: int | None = 254, **sel: Any) -> RuleView:
    fields: dict[str, Any] = {"src": None, "dst": None, "iif": None, "oif": None, "fwmark": None, "fwmask": None}
    fields.update(sel)
    r = RuleView(priority=priority, family=4, action=action, table=table, text="", **fields)
    return RuleView(**{**r.__dict__, "text": fib_text.rule_text(r, extra=" l3mdev" if r.l3mdev else "")})


# What the kernel's rules look like once a namespace has its first VRF.
KERNEL_RULES = [
    (view(0, table=255), False),
    (view(1000, table=None, l3mdev=True), False),
    (view(32766), False),
    (view(32767, table=253), False),
]
VRFS = {"blue": ("blue", 10), "eth1": ("blue", 10), "eth2": ("blue", 10), "br0": ("red", 20), "red": ("red", 20)}


def answer(table: int) -> RouteAnswer:
    return RouteAnswer("unicast", table, "eth2", None, None, None, None, "")


@pytest.mark.parametrize(
    "q,table",
    [
        (RouteQuery("10.2.0.2", src="10.1.0.2", iif="eth1"), 10),  # arriving on a VRF member
        (RouteQuery("10.2.0.2", vrf="blue"), 10),  # ip route get vrf blue
        (RouteQuery("10.2.0.2", oif="eth2"), 10),  # leaving by a VRF member
        (RouteQuery("10.5.0.3", src="10.5.0.2", iif="br0"), 20),  # a bridge in a VRF
        (RouteQuery("10.2.0.2", src="10.1.0.2", iif="eth1", oif="eth3"), 10),  # an input lookup has no oif
    ],
)
def test_l3mdev_table(q: RouteQuery, table: int) -> None:
    assert fib_lookup.l3mdev_table(q, VRFS) == table
    assert fib_lookup.rule_matches(KERNEL_RULES[1][0], q, vrfs=VRFS) is True


@pytest.mark.parametrize(
    "q",
    [
        RouteQuery("10.2.0.2"),  # sent locally, no device: no VRF
        RouteQuery("10.2.0.2", src="10.3.0.2", iif="eth3"),  # a device in no VRF
        RouteQuery("10.5.0.3", src="10.5.0.2", iif="p1"),  # a bridge port: the kernel sees the bridge's packet
    ],
)
def test_l3mdev_rule_does_not_select(q: RouteQuery) -> None:
    assert fib_lookup.l3mdev_table(q, VRFS) is None
    assert fib_lookup.rule_matches(KERNEL_RULES[1][0], q, vrfs=VRFS) is False


def test_the_l3mdev_rule_decides_a_lookup_in_the_vrf() -> None:
    q = RouteQuery("10.2.0.2", src="10.1.0.2", iif="eth1")
    rule = fib_lookup.deciding_rule(answer(10), q, KERNEL_RULES, VRFS)
    assert rule is not None and (rule.priority, rule.l3mdev) == (1000, True)
    assert rule.text == "1000: from all l3mdev lookup ?"  # the kernel's rule has no table of its own
    # a vrf query too
    rule = fib_lookup.deciding_rule(answer(10), RouteQuery("10.2.0.2", vrf="blue"), KERNEL_RULES, VRFS)
    assert rule is not None and rule.priority == 1000


def test_a_lookup_the_vrf_table_misses_goes_on_to_main() -> None:
    """A VRF table without an unreachable default: the lookup falls through to main, and
    main's rule decided it."""
    rule = fib_lookup.deciding_rule(answer(254), RouteQuery("10.3.0.2", src="10.1.0.2", iif="eth1"), KERNEL_RULES, VRFS)
    assert rule is not None and rule.priority == 32766


def test_outside_a_vrf_main_decides() -> None:
    rule = fib_lookup.deciding_rule(answer(254), RouteQuery("10.3.0.2"), KERNEL_RULES, VRFS)
    assert rule is not None and rule.priority == 32766


def test_without_the_vrfs_an_l3mdev_rule_cannot_be_told() -> None:
    q = RouteQuery("10.2.0.2", src="10.1.0.2", iif="eth1")
    assert fib_lookup.rule_matches(KERNEL_RULES[1][0], q) is None
    assert fib_lookup.deciding_rule(answer(10), q, KERNEL_RULES) is None


def test_an_oif_rule_naming_a_vrf_is_uncertain() -> None:
    """Kernels since 5.17 clear a VRF output device from the flow before the rules see
    it, older ones put the VRF there."""
    rule = view(500, table=100, oif="blue")
    assert fib_lookup.rule_matches(rule, RouteQuery("10.2.0.2", vrf="blue"), vrfs=VRFS) is None
    assert fib_lookup.rule_matches(rule, RouteQuery("10.2.0.2", oif="eth2"), vrfs=VRFS) is False


def test_vrf_query() -> None:
    msg = routes.build_route_request(RouteQuery("10.2.0.2", vrf="blue"), {"blue": 7})
    assert dict((k, v) for k, v, *_ in msg["attrs"]) == {"RTA_DST": "10.2.0.2", "RTA_OIF": 7}
    with pytest.raises(fib_query.QueryError, match="give it without oif and iif"):
        fib_query.check_query(RouteQuery("10.2.0.2", vrf="blue", oif="eth2"))
    assert (
        fib_text.route_text(RouteQuery("10.2.0.2", vrf="blue"), "unicast", 10, "eth2", None, "10.2.0.1")
        == "10.2.0.2 dev eth2 table 10 src 10.2.0.1 vrf blue"
    )


def link(index: int, name: str, kind: str | None = None, master: int | None = None, table: int | None = None) -> Any:
    msg = ifinfmsg()
    msg["family"], msg["index"] = socket.AF_UNSPEC, index
    attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name)]
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if kind is not None:
        info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", kind)]
        if table is not None:
            info.append(("IFLA_INFO_DATA", {"attrs": [("IFLA_VRF_TABLE", table)]}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    msg["attrs"] = attrs
    msg["header"]["type"] = 16
    msg.encode()
    back = ifinfmsg(msg.data)
    back.decode()
    return back


def test_vrf_map_of_a_link_dump() -> None:
    links = [
        link(1, "lo"),
        link(2, "blue", "vrf", table=10),
        link(3, "eth1", "veth", master=2),
        link(4, "br0", "bridge", master=2),
        link(5, "p1", "veth", master=4),
        link(6, "eth3", "veth"),
    ]
    assert routes.vrf_map(links) == {"blue": ("blue", 10), "eth1": ("blue", 10), "br0": ("blue", 10)}
