"""VRF devices (`kind: vrf` links) under a kernel that has VRF (the VM): what the kernel
shows about the devices netlab makes (`ip -d link`: `vrf table N`, the members' `master`),
where their interfaces' routes land (`ip route show vrf NAME`), the l3mdev rule the
kernel adds with the first VRF, traffic through a VRF and isolation from outside it, route
checks that name the l3mdev rule and the VRF's table, a bridge in a VRF, the plan's ip(8)
lines replayed by hand, the kernel's refusals behind the load-time checks, a rollback, and
labs/metallb-policy-routing.yaml's VRF-device variants.

One lab for most of the module:

    a 10.1.0.2 fd00:1::2 ── eth1 ┐ VRF blue (table 10, ends in an unreachable default)
    b 10.2.0.2 fd00:2::2 ── eth2 ┘   + d0 (dummy) 10.9.0.1/32
    c 10.5.0.2 ── p1 ┐ br0 10.5.0.1/24 ── VRF red (table 20, no unreachable default: it leaks)
    d 10.5.0.3 ── p2 ┘
    o 10.3.0.2 ── eth3 (main table)
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlab import lifecycle, teardown
from netlab.errors import ApplyError, LabError
from netlab.kernel.driver import OpFailed
from netlab.kernel.netlink import NetlinkDriver
from netlab.lab.source import parse_yaml
from netlab.load import load_lab_data
from netlab.plan.build import build_plan
from netlab.plan.ops import CreateLink, SetLink, VrfType
from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks, unique_name

REPO = Path(__file__).resolve().parents[2]
METALLB = "labs/metallb-policy-routing.yaml"
GOLDEN = "tests/golden/good/vrf-devices.yaml"

LAB: dict[str, Any] = parse_yaml(
    """
name: vrf
tables: {blue: 10}
nodes:
  router:
    sysctls:
      net.ipv4.ip_forward: 1
      net.ipv6.conf.all.forwarding: 1
      net.ipv4.icmp_ratelimit: 0
      net.ipv6.icmp.ratelimit: 0
    links:
      blue: {kind: vrf, table: blue}
      red: {kind: vrf, table: 20}
      eth1: {peer: "a:eth0", master: blue, addresses: [10.1.0.1/24, "fd00:1::1/64"]}
      eth2: {peer: "b:eth0", master: blue, addresses: [10.2.0.1/24, "fd00:2::1/64"]}
      d0: {kind: dummy, master: blue, addresses: [10.9.0.1/32]}
      br0: {kind: bridge, master: red, addresses: [10.5.0.1/24]}
      p1: {peer: "c:eth0", master: br0}
      p2: {peer: "d:eth0", master: br0}
      d1: {kind: dummy, master: br0}
      eth3: {peer: "o:eth0", addresses: [10.3.0.1/24]}
    routes:
      - {to: default, type: unreachable, table: blue, metric: 4278198272}
      - {to: default, type: unreachable, table: blue, metric: 4278198272, family: 6}
  a:
    serve: [tcp/80]
    links: {eth0: {addresses: [10.1.0.2/24, "fd00:1::2/64"]}}
    routes: [{to: default, via: 10.1.0.1}, {to: default, via: "fd00:1::1"}]
  b:
    serve: [tcp/80]
    links: {eth0: {addresses: [10.2.0.2/24, "fd00:2::2/64"]}}
    routes: [{to: default, via: 10.2.0.1}, {to: default, via: "fd00:2::1"}]
  c:
    serve: [tcp/80]
    links: {eth0: {addresses: [10.5.0.2/24]}}
    routes: [{to: default, via: 10.5.0.1}]
  d:
    serve: [tcp/80]
    links: {eth0: {addresses: [10.5.0.3/24]}}
    routes: [{to: default, via: 10.5.0.1}]
  o:
    serve: [tcp/80]
    links: {eth0: {addresses: [10.3.0.2/24]}}
    routes: [{to: default, via: 10.3.0.1}]
checks:
  - name: a reaches b through VRF blue
    probe: {from: a, to: "b:80"}
    expect: {served_by: b, server_saw: a}
  - name: a reaches b through VRF blue over IPv6
    probe: {from: a, to: "[fd00:2::2]:80"}
    expect: {served_by: b, server_saw: "fd00:1::2"}
  - name: a reaches the VRF's own address on d0
    probe: {from: a, to: 10.9.0.1}
  - name: c reaches d on the bridge in VRF red
    probe: {from: c, to: "d:80"}
    expect: {served_by: d, server_saw: c}
  - name: o, outside the VRFs, cannot reach a
    probe: {from: o, to: "a:80", timeout: 0.5}
    expect: {result: unreachable, icmp: net unreachable, icmp_from: 10.3.0.1}
  - name: a cannot leave blue - its table ends in an unreachable default
    probe: {from: a, to: "o:80", timeout: 0.5}
    expect: {result: unreachable, icmp: host unreachable, icmp_from: 10.1.0.1}
  - name: a packet from a to b is routed by the l3mdev rule in table blue
    route: {on: router, get: 10.2.0.2, from: 10.1.0.2, iif: eth1}
    expect: {rule: 1000, table: blue, dev: eth2}
  - name: the same over IPv6
    route: {on: router, get: "fd00:2::2", from: "fd00:1::2", iif: eth1}
    expect: {rule: 1000, table: blue, dev: eth2}
  - name: ip route get vrf blue
    route: {on: router, get: 10.2.0.2, vrf: blue}
    expect: {rule: 1000, table: blue, dev: eth2, prefsrc: 10.2.0.1}
  - name: a bridge in VRF red routes in table 20
    route: {on: router, get: 10.5.0.3, from: 10.5.0.2, iif: br0}
    expect: {rule: 1000, table: 20, dev: br0}
  - name: red leaks - c's SYN reaches o through main, o's answer finds no way back into red
    probe: {from: c, to: "o:80", timeout: 0.5}
    expect: {result: timeout}
    capture: {on: "o:eth0", expect: {src: c, dst: o, direction: in}}
  - name: red's table has no default, so its lookups go on to main
    route: {on: router, get: 10.3.0.2, from: 10.5.0.2, iif: br0}
    expect: {rule: 32766, table: main, dev: eth3}
  - name: blue's do not
    route: {on: router, get: 10.3.0.2, from: 10.1.0.2, iif: eth1}
    expect: {type: unreachable}
  - name: outside a VRF the main table decides
    route: {on: router, get: 10.3.0.2}
    expect: {rule: 32766, table: main, dev: eth3}
  - name: the kernel added the l3mdev rule with the first VRF
    rule: {on: router, priority: 1000, l3mdev: true, family: 4}
  - name: for IPv6 too
    rule: {on: router, priority: 1000, l3mdev: true, family: 6}
""",
    "test_vrf.py",
)[0]

test_vrf_lab = lab_checks(LAB, unique=True)
test_metallb_vrf_devs = lab_checks(METALLB, variant="vrf-devs", unique=True)
test_metallb_vrf_fix_a = lab_checks(METALLB, variant="vrf-fix-a", unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def ip(lab: LabHandle, node: str, *argv: str) -> str:
    return lab.exec(node, "ip", *argv, check=True).stdout


def netns_list() -> list[str]:
    return sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []


# --------------------------------------------------------------------------- the devices


def test_vrf_devices_as_the_kernel_shows_them(lab: LabHandle) -> None:
    assert "vrf table 10" in ip(lab, "router", "-d", "link", "show", "blue")
    assert "vrf table 20" in ip(lab, "router", "-d", "link", "show", "red")
    for ifname, master, table in (("eth1", "blue", 10), ("eth2", "blue", 10), ("d0", "blue", 10), ("br0", "red", 20)):
        detail = ip(lab, "router", "-d", "link", "show", ifname)
        assert f"master {master} " in detail and f"vrf_slave table {table}" in detail, detail
    for port in ("p1", "p2", "d1"):  # d1: a dummy in a bridge (made in one stage, joined after)
        assert "master br0 " in ip(lab, "router", "-d", "link", "show", port)
    assert "master" not in ip(lab, "router", "link", "show", "eth3")
    assert "state UP" in ip(lab, "router", "link", "show", "blue")  # a VRF device routes only when up


def test_the_driver_observes_kind_master_and_table(lab: LabHandle) -> None:
    driver = NetlinkDriver()
    try:
        links = {link.name: link for link in driver.observe(lab.ns("router")).links}
    finally:
        driver.close()
    assert (links["blue"].kind, links["blue"].table, links["blue"].up) == ("vrf", 10, True)
    assert (links["red"].kind, links["red"].table) == ("vrf", 20)
    assert (links["eth1"].master, links["br0"].master, links["p1"].master) == ("blue", "red", "br0")
    assert links["eth1"].table is None and links["eth3"].master is None


def test_enslaved_interfaces_routes_are_in_the_vrf_table(lab: LabHandle) -> None:
    blue = ip(lab, "router", "route", "show", "vrf", "blue")
    for line in ("10.1.0.0/24 dev eth1", "10.2.0.0/24 dev eth2", "unreachable default proto static metric 4278198272"):
        assert line in blue, blue
    blue6 = ip(lab, "router", "-6", "route", "show", "vrf", "blue")
    assert "fd00:1::/64 dev eth1" in blue6 and "fd00:2::/64 dev eth2" in blue6, blue6
    local10 = ip(lab, "router", "route", "show", "table", "10")
    assert "local 10.1.0.1 dev eth1" in local10 and "local 10.9.0.1 dev d0" in local10, local10
    assert "10.5.0.0/24 dev br0" in ip(lab, "router", "route", "show", "vrf", "red")
    main = ip(lab, "router", "route", "show", "table", "main")
    assert "10.3.0.0/24 dev eth3" in main, main
    assert not any(net in main for net in ("10.1.0.", "10.2.0.", "10.5.0.")), main
    local = ip(lab, "router", "route", "show", "table", "local")
    assert "10.3.0.1" in local and "10.1.0.1" not in local and "10.5.0.1" not in local, local


def test_the_l3mdev_rule(lab: LabHandle) -> None:
    for fam in ("-4", "-6"):
        rules = ip(lab, "router", fam, "rule", "show")
        assert "1000:\tfrom all lookup [l3mdev-table]" in rules, rules
    views = [r for r in lab.rules("router") if r.l3mdev]
    assert sorted((r.priority, r.family, r.table, r.action) for r in views) == [
        (1000, 4, None, "lookup"),
        (1000, 6, None, "lookup"),
    ], [r.text for r in views]
    # a namespace without a VRF has none
    assert not [r for r in lab.rules("a") if r.l3mdev]


def test_route_get_reports_the_l3mdev_rule_and_the_vrf_table(lab: LabHandle) -> None:
    cases = [
        # (query, table, dev, rule)
        ({"dst": "10.2.0.2", "src": "10.1.0.2", "iif": "eth1"}, 10, "eth2", 1000),
        ({"dst": "10.2.0.2", "vrf": "blue"}, 10, "eth2", 1000),
        ({"dst": "10.2.0.2", "oif": "eth2"}, 10, "eth2", 1000),  # leaving by a member: its VRF
        ({"dst": "10.3.0.2", "src": "10.5.0.2", "iif": "br0"}, 254, "eth3", 32766),  # red leaks into main
        ({"dst": "10.3.0.2"}, 254, "eth3", 32766),
    ]
    for query, table, dev, rule in cases:
        args = dict(query)
        answer = lab.route_get("router", args.pop("dst"), **args)
        assert (answer.table, answer.dev) == (table, dev), (query, answer.text)
        assert answer.rule is not None and answer.rule.priority == rule, (query, answer.text, answer.rule)
    local = lab.route_get("router", "10.9.0.1", src="10.2.0.2", iif="eth2")  # d0's address: local in blue
    assert (local.type, local.table) == ("local", 10), local.text
    assert local.rule is not None and local.rule.priority == 1000, local.text


def test_a_bridge_port_is_not_in_the_vrf_its_bridge_is_in(lab: LabHandle) -> None:
    """The kernel's l3mdev rule takes the VRF of the lookup's device only when the device
    is a VRF or its direct member: a packet the kernel routes comes in on the bridge, and a
    lookup made as if on a port finds no VRF (and main knows nothing of red's subnet)."""
    on_port = lab.route_get("router", "10.5.0.3", src="10.5.0.2", iif="p1")
    assert on_port.type != "unicast" or on_port.table != 20, on_port.text
    on_bridge = lab.route_get("router", "10.5.0.3", src="10.5.0.2", iif="br0")
    assert (on_bridge.type, on_bridge.table, on_bridge.dev) == ("unicast", 20, "br0"), on_bridge.text


def test_vrf_isolation_with_real_traffic(lab: LabHandle) -> None:
    a_to_b = lab.probe("a", "b:80")
    assert a_to_b.ok and a_to_b.served_by == "b" and a_to_b.server_saw == "10.1.0.2", a_to_b.detail
    c_to_a = lab.probe("c", "a:80", timeout=0.5)  # red → main (no route to blue's subnets)
    assert not c_to_a.ok and c_to_a.outcome == "unreachable", c_to_a.detail
    o_to_b = lab.probe("o", "b:80", timeout=0.5)
    assert o_to_b.outcome == "unreachable" and "net unreachable" in (o_to_b.icmp or ""), o_to_b.detail
    a_to_o = lab.probe("a", "o:80", timeout=0.5)  # blue ends in its unreachable default
    assert a_to_o.outcome == "unreachable" and "host unreachable" in (a_to_o.icmp or ""), a_to_o.detail


# --------------------------------------------------------------------------- the plan as ip(8) lines


def _state(ns: str) -> dict[str, Any]:
    def j(*argv: str) -> Any:
        out = subprocess.run(["ip", "-n", ns, "-j", *argv], capture_output=True, text=True, check=True).stdout
        return json.loads(out or "[]")

    links = {}
    for link in j("-d", "link", "show"):
        info = link.get("linkinfo", {})
        links[link["ifname"]] = (
            info.get("info_kind"),
            link.get("master"),
            info.get("info_data", {}).get("table"),
            "UP" in link.get("flags", []),
        )
    routes = sorted(
        json.dumps({k: r.get(k) for k in ("type", "dst", "dev", "gateway", "table", "metric")}, sort_keys=True)
        for fam in ("-4", "-6")
        for r in j(fam, "route", "show", "table", "all")
        if not str(r.get("dst", "")).startswith(("fe80:", "ff00:"))
    )  # link-local: random MACs
    rules = sorted(json.dumps(r, sort_keys=True) for fam in ("-4", "-6") for r in j(fam, "rule", "show"))
    return {"links": links, "routes": routes, "rules": rules}


def test_the_plans_ip_lines_build_the_same(netlab_lab: LabFactory) -> None:
    """tests/golden/good/vrf-devices.yaml built by netlab, and the same lab under another
    name built by running its plan's lines (`netlab up --dry-run`) in a shell: the same
    links, masters, VRF tables, routes and rules."""
    built = netlab_lab(GOLDEN, unique=True)
    data = parse_yaml((REPO / GOLDEN).read_text(), GOLDEN)[0]
    data["name"] = unique_name("vrfs-ip")
    model = load_lab_data(data)
    plan = build_plan(model)
    before = netns_list()
    try:
        script = "set -e\n" + plan.render()
        for name, number in model.tables.items():  # iproute2 knows no lab table names
            script = script.replace(f" table {name}\n", f" table {number}\n")
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        for node in ("router", "a"):
            mine, theirs = _state(built.ns(node)), _state(f"{data['name']}.{node}")
            assert mine == theirs, node
        assert _state(built.ns("router"))["links"]["blue"] == ("vrf", None, 10, True)
        assert _state(built.ns("router"))["links"]["br0"][:3] == ("bridge", "red", None)
    finally:
        for ns in plan.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert netns_list() == before


# --------------------------------------------------------------------------- bad input, refusals, rollback


REFUSALS = {
    "name": "vrfno",
    "nodes": {
        "r": {
            "links": {
                "blue": {"kind": "vrf", "table": 10},
                "red": {"kind": "vrf", "table": 20},
                "eth1": {"peer": "a:eth0", "master": "blue"},
            }
        },
        "a": {},
    },
}


def test_the_kernel_refuses_what_the_load_time_checks_refuse(netlab_lab: LabFactory) -> None:
    """The kernel's own words behind the checks on `kind: vrf` links (which keep such a lab
    from ever reaching it), and the one thing it accepts that netlab refuses: two VRFs of
    one table, unless net.vrf.strict_mode is 1."""
    lab = netlab_lab(REFUSALS, unique=True)
    ns = lab.ns("r")
    driver = NetlinkDriver()

    def refused(op: CreateLink | SetLink) -> str:
        with pytest.raises(OpFailed) as info:
            driver.apply([op], lambda _op: None)
        return info.value.reason

    try:
        assert "Invalid VRF table id" in refused(CreateLink(ns, "t", name="v0", type=VrfType(0)))
        assert "mtu less than device minimum" in refused(CreateLink(ns, "t", name="v1", type=VrfType(30), mtu=1000))
        assert "Can not enslave an L3 master device to a VRF" in refused(SetLink(ns, "t", name="red", master="blue"))
        assert "Can not enslave loopback device to a VRF" in refused(SetLink(ns, "t", name="lo", master="blue"))
        # in strict mode, a second VRF of a table is refused ...
        lab.exec("r", "sysctl", "-qw", "net.vrf.strict_mode=1", check=True)
        strict = refused(CreateLink(ns, "t", name="twin", type=VrfType(20)))
        assert "Table is used by another VRF" in strict, strict
        # ... and taken by default (strict_mode 0): the kernel would let two VRFs share table 10
        lab.exec("r", "sysctl", "-qw", "net.vrf.strict_mode=0", check=True)
        driver.apply([CreateLink(ns, "t", name="twin", type=VrfType(10))], lambda _op: None)
        assert "vrf table 10" in ip(lab, "r", "-d", "link", "show", "twin")
    finally:
        driver.close()
    links = ip(lab, "r", "link", "show")
    assert "v0" not in links and "v1" not in links and "master blue" not in ip(lab, "r", "link", "show", "red")


def test_a_refused_route_rolls_the_vrf_lab_back(tmp_path: Path) -> None:
    """A route through a VRF member's gateway in the main table, as a command after the
    build (the load-time check refuses it as a route): the kernel refuses it, and `up`
    removes everything it made."""
    data: dict[str, Any] = {
        "name": unique_name("vrfrb"),
        "tables": {"blue": 10},
        "nodes": {
            "r": {
                "links": {
                    "blue": {"kind": "vrf", "table": "blue"},
                    "eth1": {"peer": "a:eth0", "master": "blue", "addresses": ["10.1.0.1/24"]},
                },
                "exec": [["ip", "route", "add", "10.9.0.0/24", "via", "10.1.0.2"]],
            },
            "a": {"links": {"eth0": {"addresses": ["10.1.0.2/24"]}}},
        },
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    before = netns_list()
    driver = NetlinkDriver()
    try:
        with pytest.raises(ApplyError) as info:
            lifecycle.up(path, driver)
    finally:
        driver.close()
    text = str(info.value)
    assert "nodes.r.exec[0]" in text and "Nexthop has invalid gateway" in text, text
    assert shlex.join(["ip", "route", "add", "10.9.0.0/24", "via", "10.1.0.2"]) in text, text
    assert netns_list() == before
    # as a route in the lab, the same is refused before anything is built
    data["nodes"]["r"]["routes"] = [{"to": "10.9.0.0/24", "via": "10.1.0.2"}]
    del data["nodes"]["r"]["exec"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LabError) as loaded:
        lifecycle.load_and_plan(path)
    assert "is on eth1's subnet, in VRF blue (table 10)" in str(loaded.value), loaded.value
    # with dev: the l3mdev rule finds the gateway, and the kernel takes the route
    data["nodes"]["r"]["routes"] = [{"to": "10.9.0.0/24", "via": "10.1.0.2", "dev": "eth1"}]
    path.write_text(yaml.safe_dump(data))
    driver = NetlinkDriver()
    try:
        lifecycle.up(path, driver)
        shown = subprocess.run(
            ["ip", "-n", f"{data['name']}.r", "route", "show", "10.9.0.0/24"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "10.9.0.0/24 via 10.1.0.2 dev eth1" in shown, shown
    finally:
        teardown.down(data["name"], driver)
        driver.close()
    assert netns_list() == before


# --------------------------------------------------------------------------- metallb-policy-routing, VRF devices


def test_metallb_vrf_devs_reply_goes_into_vrf1(netlab_lab_module: LabFactory) -> None:
    """The article's failure with real VRFs upstream: the client's SYN comes in through
    vrf2, the node's SYN-ACK (already 3.3.3.3 again) goes out by eth1 into vrf1, whose
    table has no route to the client; the connection never completes. (The lab the
    variant's checks above built.)"""
    lab = netlab_lab_module(METALLB, variant="vrf-devs", unique=True)
    assert "10.10.10.0/24" not in ip(lab, "router", "route", "show", "vrf", "vrf1")
    assert "10.10.10.0/24 dev eth3" in ip(lab, "router", "route", "show", "vrf", "vrf2")
    r = lab.probe("client", "3.3.3.3", port=22, timeout=0.5)
    assert r.outcome == "timeout", r.detail
    entry = lab.conntrack("node", r)[0]
    assert entry.state == "SYN_RECV" and entry.dnat and entry.reply.src == "192.168.1.1", entry.text
    dropped = lab.route_get("router", "10.10.10.10", src="3.3.3.3", iif="eth1")
    assert dropped.type == "unreachable", dropped.text
