"""`netlab up` / `down` / `status` / `exec` on the real kernel, checked with the kernel's
own answers (`ip -j … link/addr/route/rule`, /proc/sys inside the namespace) and with
real packets between lab namespaces. Root only; every lab has a unique name and is
taken down after its test, pass or fail.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from netlab.json_output import schema

# The root namespace's values must be exactly the same after a lab set its own.
ROOT_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/all/accept_dad",
    "net/ipv6/conf/default/accept_dad",
    "net/ipv6/conf/all/disable_ipv6",
    "net/ipv6/conf/default/disable_ipv6",
    "net/ipv6/conf/all/accept_ra",
)


def root_sysctls() -> dict[str, str]:
    """Read (never write) the test process's own namespace's values."""
    out = {}
    for key in ROOT_SYSCTLS:
        try:
            out[key] = Path("/proc/sys", key).read_text().strip()
        except OSError:
            out[key] = "<absent>"
    return out


def full_spec(exec_out: Path) -> dict[str, Any]:
    """A docker-like host: a bridge with three containers, an outside machine on a routed
    veth (MTU and MAC on both ends), an admin-down veth, VXLAN between host and outside
    over that veth, IPv4+IPv6, every route and rule form, sysctls and an exec command."""
    return {
        "tables": {"vrf2": 100, "blue": 200},
        "nodes": {
            "host": {
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1},
                "links": {
                    "br0": {"kind": "bridge", "addresses": ["172.30.0.1/24", "fd00:30::1/64"]},
                    "v1": {"peer": "c1:eth0", "master": "br0"},
                    "v2": {"peer": "c2:eth0", "master": "br0"},
                    "v3": {"peer": "c3:eth0", "master": "br0"},
                    "out0": {
                        "peer": "outside:eth0",
                        "addresses": ["192.0.2.1/24", "2001:db8::1/64"],
                        "mtu": 1400,
                        "mac": "02:00:00:00:00:01",
                    },
                    "spare": {"peer": "outside:spare", "up": False, "addresses": ["10.98.0.1/30"]},
                    "vx0": {
                        "kind": "vxlan",
                        "vni": 42,
                        "port": 4789,
                        "dev": "out0",
                        "local": "192.0.2.1",
                        "remote": "192.0.2.2",
                        "learning": False,
                        "addresses": ["10.200.0.1/24"],
                    },
                },
                "routes": [
                    {"to": "198.51.100.0/24", "via": "192.0.2.2", "metric": 50},
                    {"to": "203.0.113.0/24", "via": "192.0.2.2", "dev": "out0", "table": "vrf2"},
                    {"to": "10.66.0.0/16", "type": "blackhole"},
                    {"to": "10.67.0.0/16", "type": "unreachable"},
                    {"to": "10.68.0.0/16", "via": "10.99.99.1", "dev": "out0", "onlink": True},
                    {"to": "2001:db8:77::/64", "via": "2001:db8::2"},
                    {"to": "10.69.0.0/16", "dev": "out0", "src": "192.0.2.1"},
                    {"to": "default", "via": "192.0.2.2", "table": "blue"},
                ],
                "rules": [
                    {"from": "10.10.0.0/16", "table": "vrf2", "priority": 100, "fwmark": "0x4000/0x4000"},
                    {"to": "203.0.113.0/24", "table": "vrf2", "priority": 110},
                    {"iif": "v1", "table": "blue", "priority": 120},
                    {"oif": "out0", "table": 300, "priority": 130},
                    {"from": "2001:db8:1::/48", "table": "vrf2", "priority": 140},
                    {"from": "10.11.0.0/16", "action": "blackhole", "priority": 150},
                ],
            },
            "c1": {
                "links": {
                    "eth0": {"addresses": ["172.30.0.11/24", "fd00:30::11/64"], "mtu": 1450, "mac": "02:00:00:00:01:01"}
                },
                "routes": [{"to": "default", "via": "172.30.0.1"}, {"to": "default", "via": "fd00:30::1"}],
                # Runs after the build: the route it asks about must exist, in c1's namespace.
                "exec": [["sh", "-c", f"ip route get 192.0.2.2 > {exec_out}; ip -o addr show dev eth0 >> {exec_out}"]],
            },
            "c2": {
                "links": {"eth0": {"addresses": ["172.30.0.12/24"]}},
                "routes": [{"to": "default", "via": "172.30.0.1"}],
            },
            "c3": {
                "links": {"eth0": {"addresses": ["172.30.0.13/24"]}},
                "routes": [{"to": "default", "via": "172.30.0.1"}],
            },
            "outside": {
                "links": {
                    "eth0": {"addresses": ["192.0.2.2/24", "2001:db8::2/64"], "mtu": 1400, "mac": "02:00:00:00:00:02"},
                    "spare": {},
                    "vx0": {
                        "kind": "vxlan",
                        "vni": 42,
                        "port": 4789,
                        "dev": "eth0",
                        "local": "192.0.2.2",
                        "remote": "192.0.2.1",
                        "learning": False,
                        "addresses": ["10.200.0.2/24"],
                    },
                },
                "routes": [{"to": "172.30.0.0/24", "via": "192.0.2.1"}, {"to": "fd00:30::/64", "via": "2001:db8::1"}],
            },
        },
    }


NODES = ["c1", "c2", "c3", "host", "outside"]


@dataclass
class FullLab:
    name: str
    path: Path
    exec_out: Path
    up_out: str
    root_before: dict[str, str]

    def ns(self, node: str) -> str:
        return f"{self.name}.{node}"


@pytest.fixture(scope="module")
def full(registry: Any, kn: Any, netlab_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullLab]:
    d = tmp_path_factory.mktemp("full")
    exec_out = d / "exec-out"
    lab = kn.write_lab(registry, d, full_spec(exec_out))
    before = root_sysctls()
    try:
        rc, out, err = netlab_cli("up", lab.path)
        assert rc == 0, err
        yield FullLab(lab.name, lab.path, exec_out, out, before)
    finally:
        kn.take_down(lab.name)


def small_spec(addr_a: str = "10.0.0.1/24", addr_b: str = "10.0.0.2/24") -> dict[str, Any]:
    return {
        "nodes": {
            "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": [addr_a]}}},
            "b": {"links": {"eth0": {"addresses": [addr_b]}}},
        }
    }


# ---------------------------------------------------------------- the full lab, as built


def test_up_builds_every_namespace_with_state(full: FullLab, kn: Any) -> None:
    assert f"lab {full.name} is up: 5 nodes" in full.up_out
    assert kn.namespaces_of(full.name) == [full.ns(n) for n in NODES]
    state = json.loads(kn.state_file(full.name).read_text())
    assert state["status"] == "up"
    assert state["source"] == str(full.path.resolve())
    assert state["nodes"] == {n: full.ns(n) for n in ["host", "c1", "c2", "c3", "outside"]}
    for node in NODES:  # the ownership mark on lo
        lo = kn.links(full.ns(node))["lo"]
        assert lo.get("ifalias") == f"netlab:{full.name}:{node}"
        assert "UP" in lo["flags"]


def test_veth_pairs_and_bridge_ports(full: FullLab, kn: Any) -> None:
    def all_operstates_up() -> bool:  # operstate follows carrier through linkwatch: asynchronous
        h = kn.links(full.ns("host"))
        return all(
            h[f"v{i}"]["operstate"] == "UP" and kn.links(full.ns(c))["eth0"]["operstate"] == "UP"
            for i, c in enumerate(["c1", "c2", "c3"], start=1)
        )

    kn.wait_for(all_operstates_up, 3, 0.05)
    host = kn.links(full.ns("host"))
    assert host["br0"]["linkinfo"]["info_kind"] == "bridge"
    assert host["br0"]["linkinfo"]["info_data"]["stp_state"] == 0
    for i, c in enumerate(["c1", "c2", "c3"], start=1):
        near, far = host[f"v{i}"], kn.links(full.ns(c))["eth0"]
        assert near["linkinfo"]["info_kind"] == "veth" and far["linkinfo"]["info_kind"] == "veth"
        assert near["master"] == "br0"
        assert near["linkinfo"]["info_slave_kind"] == "bridge"
        assert near["link_index"] == far["ifindex"] and far["link_index"] == near["ifindex"]  # one pair
        assert "UP" in near["flags"] and "UP" in far["flags"]
        assert near["operstate"] == "UP" and far["operstate"] == "UP"
        assert "master" not in far
    out0, eth0 = host["out0"], kn.links(full.ns("outside"))["eth0"]
    assert out0["link_index"] == eth0["ifindex"] and eth0["link_index"] == out0["ifindex"]
    assert "master" not in out0


def test_mtu_and_mac_on_both_ends(full: FullLab, kn: Any) -> None:
    out0, eth0 = kn.links(full.ns("host"))["out0"], kn.links(full.ns("outside"))["eth0"]
    assert (out0["mtu"], out0["address"]) == (1400, "02:00:00:00:00:01")
    assert (eth0["mtu"], eth0["address"]) == (1400, "02:00:00:00:00:02")
    c1 = kn.links(full.ns("c1"))["eth0"]  # the far end of v1: MTU and MAC set on it
    assert (c1["mtu"], c1["address"]) == (1450, "02:00:00:00:01:01")
    assert kn.links(full.ns("host"))["v1"]["mtu"] == 1500
    assert kn.links(full.ns("c2"))["eth0"]["mtu"] == 1500


def test_admin_down_link(full: FullLab, kn: Any) -> None:
    near = kn.links(full.ns("host"))["spare"]
    assert "UP" not in near["flags"] and near["operstate"] == "DOWN"

    # The far end is administratively up but has no carrier: its peer is down. Carrier
    # changes reach the flags through the kernel's linkwatch, which batches them (up to
    # ~1 s), so wait for the kernel to settle rather than sample once.
    def far() -> dict[str, Any]:
        return dict(kn.links(full.ns("outside"))["spare"])

    kn.wait_for(lambda: "NO-CARRIER" in far()["flags"], 3, 0.05)
    seen = far()
    assert "UP" in seen["flags"] and "NO-CARRIER" in seen["flags"] and seen["operstate"] != "UP", seen
    assert "10.98.0.1/30" in kn.address_set(full.ns("host"))  # addresses go on a down link too


def test_addresses_ipv4_and_ipv6_without_dad(full: FullLab, kn: Any) -> None:
    def lab_addresses(node: str) -> set[str]:
        return {a for a in kn.address_set(full.ns(node)) if not a.startswith(("fe80:", "127.", "::1/"))}

    assert lab_addresses("host") == {
        "172.30.0.1/24",
        "fd00:30::1/64",
        "192.0.2.1/24",
        "2001:db8::1/64",
        "10.98.0.1/30",
        "10.200.0.1/24",
    }
    assert lab_addresses("c1") == {"172.30.0.11/24", "fd00:30::11/64"}
    assert lab_addresses("c2") == {"172.30.0.12/24"}
    assert lab_addresses("outside") == {"192.0.2.2/24", "2001:db8::2/64", "10.200.0.2/24"}
    for node in NODES:
        ns = full.ns(node)
        for ifname, infos in kn.addresses(ns).items():
            for a in infos:
                assert not a.get("tentative") and not a.get("dadfailed"), f"{ns} {ifname}: {a}"
        text = kn.run_in(ns, "ip", "addr").stdout
        assert "tentative" not in text and "dadfailed" not in text, text
    # IPv6 nodes have DAD off; IPv4-only nodes have no IPv6 at all.
    for node in ("host", "c1", "outside"):
        assert kn.sysctl(full.ns(node), "net.ipv6.conf.default.accept_dad") == "0"
        assert kn.sysctl(full.ns(node), "net.ipv6.conf.all.disable_ipv6") == "0"
    for node in ("c2", "c3"):
        assert kn.sysctl(full.ns(node), "net.ipv6.conf.all.disable_ipv6") == "1"
        assert not any(a["family"] == "inet6" for infos in kn.addresses(full.ns(node)).values() for a in infos)


def _route(routes: list[dict[str, Any]], dst: str, table: str | None = None) -> dict[str, Any]:
    found = [r for r in routes if r["dst"] == dst and r.get("table") == table]
    assert len(found) == 1, f"route {dst} table {table}: {found} in {routes}"
    return found[0]


def test_routes(full: FullLab, kn: Any) -> None:
    v4 = kn.routes(full.ns("host"), 4)
    r = _route(v4, "198.51.100.0/24")
    assert (r["gateway"], r["dev"], r["metric"], r["protocol"]) == ("192.0.2.2", "out0", 50, "static")
    r = _route(v4, "203.0.113.0/24", table="100")  # table vrf2, by name
    assert (r["gateway"], r["dev"]) == ("192.0.2.2", "out0")
    r = _route(v4, "default", table="200")  # table blue, by name
    assert r["gateway"] == "192.0.2.2"
    assert _route(v4, "10.66.0.0/16")["type"] == "blackhole"
    assert _route(v4, "10.67.0.0/16")["type"] == "unreachable"
    r = _route(v4, "10.68.0.0/16")
    assert (r["gateway"], r["dev"]) == ("10.99.99.1", "out0") and "onlink" in r["flags"]
    r = _route(v4, "10.69.0.0/16")
    assert (r["dev"], r["prefsrc"], r["scope"]) == ("out0", "192.0.2.1", "link") and "gateway" not in r
    assert not [x for x in v4 if x["dst"] == "198.51.100.0/24" and x.get("table")]  # only in main
    r = _route(kn.routes(full.ns("host"), 6), "2001:db8:77::/64")
    assert (r["gateway"], r["dev"]) == ("2001:db8::2", "out0")
    c1 = kn.routes(full.ns("c1"), 4)
    assert _route(c1, "default")["gateway"] == "172.30.0.1"
    assert _route(kn.routes(full.ns("c1"), 6), "default")["gateway"] == "fd00:30::1"
    # What the kernel does with them:
    host = full.ns("host")
    got = kn.run_in(host, "ip", "route", "get", "10.67.0.1", check=False)
    assert got.returncode != 0 and "No route to host" in got.stderr
    got = kn.run_in(host, "ip", "route", "get", "10.68.1.1").stdout
    assert "via 10.99.99.1 dev out0" in got


def test_rules(full: FullLab, kn: Any) -> None:
    v4 = {r["priority"]: r for r in kn.rules(full.ns("host"), 4)}
    assert v4[100] == {
        "priority": 100,
        "src": "10.10.0.0",
        "srclen": 16,
        "fwmark": "0x4000",
        "fwmask": "0x4000",
        "table": "100",
    }
    assert v4[110] == {"priority": 110, "src": "all", "dst": "203.0.113.0", "dstlen": 24, "table": "100"}
    assert v4[120] == {"priority": 120, "src": "all", "iif": "v1", "table": "200"}
    assert v4[130] == {"priority": 130, "src": "all", "oif": "out0", "table": "300"}
    assert v4[150] == {"priority": 150, "src": "10.11.0.0", "srclen": 16, "action": "blackhole"}
    assert set(v4) == {0, 100, 110, 120, 130, 150, 32766, 32767}
    v6 = {r["priority"]: r for r in kn.rules(full.ns("host"), 6)}
    assert v6[140] == {"priority": 140, "src": "2001:db8:1::", "srclen": 48, "table": "100"}
    assert 140 not in v4 and 100 not in v6
    # The kernel applies them: `to 203.0.113.0/24` looks up table vrf2 (100).
    got = kn.run_in(full.ns("host"), "ip", "route", "get", "203.0.113.9").stdout
    assert "via 192.0.2.2 dev out0 table 100" in got


def test_vxlan(full: FullLab, kn: Any) -> None:
    for node, local, remote, dev in (
        ("host", "192.0.2.1", "192.0.2.2", "out0"),
        ("outside", "192.0.2.2", "192.0.2.1", "eth0"),
    ):
        vx = kn.links(full.ns(node))["vx0"]
        info = vx["linkinfo"]
        assert info["info_kind"] == "vxlan"
        data = info["info_data"]
        assert (data["id"], data["port"], data["local"], data["remote"], data["link"], data["learning"]) == (
            42,
            4789,
            local,
            remote,
            dev,
            False,
        )
        text = kn.run_in(full.ns(node), "ip", "-d", "link", "show", "vx0").stdout
        for words in ("vxlan id 42", f"remote {remote}", f"local {local}", f"dev {dev}", "dstport 4789", "nolearning"):
            assert words in text, text
    # Real packets through the tunnel (encapsulated over out0 ↔ eth0).
    kn.assert_ping(full.ns("host"), "10.200.0.2")
    kn.assert_ping(full.ns("outside"), "10.200.0.1")


def test_sysctls_inside_the_namespace_only(full: FullLab, kn: Any) -> None:
    assert kn.sysctl(full.ns("host"), "net.ipv4.ip_forward") == "1"
    assert kn.sysctl(full.ns("host"), "net.ipv6.conf.all.forwarding") == "1"
    for node in ("c1", "c2", "outside"):
        assert kn.sysctl(full.ns(node), "net.ipv4.ip_forward") == "0"
    assert root_sysctls() == full.root_before, "a lab changed a sysctl of the machine's own namespace"


def test_exec_ran_inside_after_the_build(full: FullLab) -> None:
    text = full.exec_out.read_text()
    assert "192.0.2.2 via 172.30.0.1 dev eth0" in text  # c1's default route existed already
    assert "inet 172.30.0.11/24" in text  # and it ran in c1's namespace


def test_traffic(full: FullLab, kn: Any) -> None:
    c1, c2, host, outside = (full.ns(n) for n in ("c1", "c2", "host", "outside"))
    kn.assert_ping(c1, "172.30.0.12")  # across the bridge
    kn.assert_ping(c2, "172.30.0.13")
    kn.assert_ping(c1, "172.30.0.1")  # the bridge's own address
    kn.assert_ping(c1, "192.0.2.2")  # routed by host (ip_forward=1 there)
    kn.assert_ping(outside, "172.30.0.13")
    kn.assert_ping(c1, "fd00:30::1")  # IPv6, no DAD wait
    kn.assert_ping(c1, "2001:db8::2")  # IPv6 routed (host forwards IPv6)
    kn.assert_ping(host, "192.0.2.2")
    kn.assert_no_ping(c2, "10.66.0.1")  # blackholed at host
    kn.assert_no_ping(host, "10.98.0.2")  # nobody there, and the link is down anyway
    answer = kn.tcp_exchange(c1, "172.30.0.11", outside, port=7001)
    assert answer == "HELLO from 192.0.2.2"  # routed, not NATed
    answer = kn.tcp_exchange(outside, "2001:db8::2", c1, port=7002)
    assert answer == "HELLO from fd00:30::11"


def test_python_pinger(full: FullLab, kn: Any) -> None:
    """The raw-socket ICMP echo used where iputils ping is missing tells answers from silence."""
    for src, dst in (("c1", "172.30.0.12"), ("c1", "2001:db8::2"), ("outside", "10.200.0.1")):
        ok, out = kn.ping(full.ns(src), dst, python=True)
        assert ok and out == f"echo reply from {dst}", out
    for src, dst in (("c2", "10.66.0.1"), ("c1", "fd00:30::99")):
        ok, out = kn.ping(full.ns(src), dst, timeout=0.5, attempts=1, python=True)
        assert not ok and out == f"no echo reply from {dst}", out


def test_second_up_is_a_no_op(full: FullLab, kn: Any, netlab_cli: Any) -> None:
    before, state = kn.snapshot(full.name), kn.state_file(full.name).read_text()
    rc, out, err = netlab_cli("up", full.path)
    assert rc == 0, err
    assert f"lab {full.name} is already up from this file; nothing changed" in out
    assert kn.snapshot(full.name) == before
    assert kn.state_file(full.name).read_text() == state


def test_status_json(full: FullLab, netlab_cli: Any) -> None:
    rc, out, err = netlab_cli("status", full.name, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    Draft202012Validator(schema("status")).validate(doc)
    assert doc["schema"] == "netlab/status/v1"
    (lab,) = doc["labs"]
    assert (lab["lab"], lab["status"], lab["source"]) == (full.name, "up", str(full.path.resolve()))
    assert lab["created"]
    assert set(lab["nodes"]) == set(NODES)
    host = lab["nodes"]["host"]
    assert host["namespace"] == full.ns("host")
    links = {link["name"]: link for link in host["links"]}
    assert set(links) == {"lo", "br0", "v1", "v2", "v3", "out0", "spare", "vx0"}
    assert links["br0"]["kind"] == "bridge" and links["vx0"]["kind"] == "vxlan"
    assert links["v1"]["master"] == "br0" and links["v1"]["kind"] == "veth"
    out0 = links["out0"]
    assert (out0["up"], out0["mtu"], out0["mac"], out0["oper"]) == (True, 1400, "02:00:00:00:00:01", "up")
    assert {"address": "192.0.2.1/24", "family": 4} in out0["addresses"]
    assert {"address": "2001:db8::1/64", "family": 6} in out0["addresses"]
    assert (links["spare"]["up"], links["spare"]["oper"]) == (False, "down")
    assert links["lo"]["alias"] == f"netlab:{full.name}:host"
    c1 = {link["name"]: link for link in lab["nodes"]["c1"]["links"]}
    assert (c1["eth0"]["mtu"], c1["eth0"]["mac"]) == (1450, "02:00:00:00:01:01")
    # By file too, and the table form names the lab and its state.
    rc, out, _ = netlab_cli("status", full.path, "--json")
    assert rc == 0 and json.loads(out)["labs"][0]["lab"] == full.name
    rc, out, _ = netlab_cli("status", full.name)
    assert rc == 0 and f"lab {full.name} — up" in out and "172.30.0.11/24" in out


def test_exec_passes_the_exit_code_and_runs_inside(full: FullLab, netlab_cli: Any) -> None:
    rc, _, _ = netlab_cli("exec", full.name, "c1", "--", "sh", "-c", "exit 7")
    assert rc == 7
    rc, out, _ = netlab_cli("exec", full.name, "c1", "--", "ip", "-o", "addr", "show", "dev", "eth0")
    assert rc == 0 and "172.30.0.11/24" in out
    rc, out, _ = netlab_cli("exec", full.name, "host", "cat", "/proc/sys/net/ipv4/ip_forward")
    assert (rc, out.strip()) == (0, "1")
    rc, _, err = netlab_cli("exec", full.name, "nosuch", "--", "true")
    assert rc == 2 and "has no node 'nosuch'" in err


# ---------------------------------------------------------------- labs of their own


def test_up_from_a_changed_file_reconciles_it_in_place(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    lab = lab_file(small_spec())
    rc, _, err = netlab_cli("up", lab.path)
    assert rc == 0, err
    changed = small_spec()
    changed["nodes"]["a"]["routes"] = [{"to": "10.5.0.0/16", "via": "10.0.0.2"}]
    lab.path.write_text(yaml.safe_dump({"name": lab.name, **changed}))
    rc, out, err = netlab_cli("up", "--dry-run", lab.path)
    assert rc == 0 and f"+ ip -n {lab.ns('a')} route add 10.5.0.0/16 via 10.0.0.2  # nodes.a.routes[0]" in out, out
    rc, out, err = netlab_cli("up", lab.path)
    assert rc == 0, err
    assert out.startswith(f"lab {lab.name} reconciled in place: 1 made, 0 changed, 0 taken away in "), out
    assert ("10.5.0.0/16", "10.0.0.2") in [(r["dst"], r.get("gateway")) for r in kn.routes(lab.ns("a"))]
    before = kn.snapshot(lab.name)
    # The same lab name from another file with other content: refused, and named.
    other = lab_file(small_spec(addr_b="10.0.0.3/24"), name=lab.name, filename="other.yaml")
    rc, _, err = netlab_cli("up", other.path)
    assert rc == 1
    assert f"- ip -n {lab.ns('b')} addr add 10.0.0.2/24 dev eth0" in err
    assert f"+ ip -n {lab.ns('b')} addr add 10.0.0.3/24 dev eth0" in err
    assert (
        f"lab {lab.name} is already up, built from {lab.path.resolve()}; {other.path.resolve()} defines "
        "a lab of the same name, and it differs:" in err
    )
    assert '  ~ nodes.b.links.eth0.addresses[0]: "10.0.0.2/24" → "10.0.0.3/24"' in err
    assert kn.snapshot(lab.name) == before
    rc, _, _ = netlab_cli("down", lab.name)
    assert rc == 0 and kn.leftovers(lab.name) == []


def test_two_labs_with_the_same_node_names(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    one, two = lab_file(small_spec()), lab_file(small_spec())
    for lab in (one, two):
        rc, _, err = netlab_cli("up", lab.path)
        assert rc == 0, err
    for lab in (one, two):
        assert kn.namespaces_of(lab.name) == [lab.ns("a"), lab.ns("b")]
        kn.assert_ping(lab.ns("a"), "10.0.0.2")
    rc, out, _ = netlab_cli("down", one.name)
    assert rc == 0 and f"lab {one.name} is down: removed 2 namespaces" in out
    assert kn.leftovers(one.name) == []
    assert kn.namespaces_of(two.name) == [two.ns("a"), two.ns("b")]
    assert kn.state_file(two.name).exists()
    kn.assert_ping(two.ns("b"), "10.0.0.1")
    rc, _, _ = netlab_cli("down", two.name)
    assert rc == 0 and kn.leftovers(two.name) == []


def test_down_of_a_lab_that_is_not_up(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    name = lab_file.new_name()
    rc, out, err = netlab_cli("down", name)
    assert rc == 0, err
    assert f"lab {name} was not up; nothing to remove" in out
    assert kn.leftovers(name) == []  # not even a lock file


def test_down_by_file_path(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    lab = lab_file(small_spec())
    assert netlab_cli("up", lab.path).rc == 0
    rc, out, _ = netlab_cli("down", lab.path)
    assert rc == 0 and f"lab {lab.name} is down: removed 2 namespaces" in out
    assert kn.leftovers(lab.name) == []
    rc, out, _ = netlab_cli("down", lab.path)  # again: not up, still fine
    assert rc == 0 and "was not up" in out
    rc, _, err = netlab_cli("down", lab.path.with_name("missing.yaml"))
    assert rc == 2 and "no such lab file" in err


# `down --all` takes down every lab on the machine, so it runs where it can only see
# its own: a private mount namespace with an empty /run/netns (and its own state dir).
# The network namespaces made there die with it, so nothing can leak to the machine.
DOWN_ALL_PY = r"""
import json, os, subprocess, sys
os.makedirs("/run/netns", exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "netlab-test", "/run/netns"], check=True)
results = {}
def netlab(*args):
    p = subprocess.run([sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True)
    return [p.returncode, p.stdout, p.stderr]
results["up1"] = netlab("up", sys.argv[1])
results["up2"] = netlab("up", sys.argv[2])
results["before"] = sorted(os.listdir("/run/netns"))
results["status"] = netlab("status", "--json")
results["refused"] = netlab("down", "--all")  # stdin and stdout are no terminal: --yes is needed
results["kept"] = sorted(os.listdir("/run/netns"))
results["down"] = netlab("down", "--all", "--yes")
results["after"] = sorted(os.listdir("/run/netns"))
results["state"] = sorted(os.listdir(os.environ["NETLAB_STATE_DIR"]))
results["again"] = netlab("down", "--all")  # nothing to remove: nothing to ask
print(json.dumps(results))
"""


def test_down_all(lab_file: Any, kn: Any, tmp_path: Path) -> None:
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1) (util-linux) for a private mount namespace")
    one, two = lab_file(small_spec()), lab_file(small_spec())
    state = tmp_path / "state"
    env = {
        **os.environ,
        "NETLAB_STATE_DIR": str(state),
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join(p for p in (str(kn.repo), os.environ.get("PYTHONPATH", "")) if p),
    }
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            DOWN_ALL_PY,
            str(one.path),
            str(two.path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["up1"][0] == 0 and r["up2"][0] == 0, r
    assert r["before"] == sorted([one.ns("a"), one.ns("b"), two.ns("a"), two.ns("b")])
    assert {s["lab"] for s in json.loads(r["status"][1])["labs"]} == {one.name, two.name}
    rc, out, err = r["refused"]
    assert rc == 2 and "without a terminal to ask on, give --yes" in err and out == "", r["refused"]
    assert f"2 labs would be taken down: {', '.join(sorted([one.name, two.name]))}" in err
    assert r["kept"] == r["before"]
    rc, out, _ = r["down"]
    assert rc == 0
    assert f"lab {one.name} is down: removed 2 namespaces" in out
    assert f"lab {two.name} is down: removed 2 namespaces" in out
    assert r["after"] == [] and r["state"] == []
    assert r["again"][0] == 0 and "no labs are up" in r["again"][1]


def test_dry_run_creates_nothing(lab_file: Any, kn: Any, netlab_cli: Any, public_dir: Path) -> None:
    lab = lab_file(small_spec(), directory=public_dir)
    rc, out, err = netlab_cli("up", "--dry-run", lab.path)
    assert rc == 0, err
    assert out.startswith(f"# plan for lab {lab.name}:")
    assert f"ip netns add {lab.ns('a')}" in out
    assert f"ip -n {lab.ns('a')} addr add 10.0.0.1/24 dev eth0" in out
    assert kn.leftovers(lab.name) == []
    rc, out2, err = netlab_cli("up", "--dry-run", lab.path, nobody=True)  # no root needed
    assert rc == 0, err
    assert out2 == out
    assert kn.leftovers(lab.name) == []


BAD_TYPO = """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: b:eth0, adresses: [10.0.1.1/24]}
"""

BAD_REFS = """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: nosuch:eth0, addresses: [10.0.0.1/24]}
      eth1: {peer: b:eth0, addresses: [10.0.1.1/24]}
  b:
    routes:
      - {to: 10.9.0.0/24}
"""


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (BAD_TYPO, [":5: nodes.a.links.eth0.adresses: unknown key 'adresses'; did you mean 'addresses'?"]),
        (
            BAD_REFS,
            [
                ":5: nodes.a.links.eth0.peer: peer node 'nosuch' is not defined",
                ":9: nodes.b.routes[0]: a unicast route needs `via:` or `dev:`",
            ],
        ),
    ],
    ids=["typo", "references"],
)
def test_bad_lab_is_refused_with_nothing_created(
    text: str, problems: list[str], lab_file: Any, kn: Any, netlab_cli: Any
) -> None:
    lab = lab_file(text)
    for args in (("validate", lab.path), ("up", lab.path)):
        rc, out, err = netlab_cli(*args)
        assert rc == 2, (out, err)
        assert f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the lab" in err
        for problem in problems:
            assert f"{lab.path}{problem}" in err
        assert kn.leftovers(lab.name) == []
    rc, _, err = netlab_cli("up", lab.path.with_name("missing.yaml"))
    assert rc == 2 and "cannot read the lab file" in err


def test_not_root(lab_file: Any, kn: Any, netlab_cli: Any, public_dir: Path) -> None:
    lab = lab_file(small_spec(), directory=public_dir)
    rc, out, err = netlab_cli("validate", lab.path, nobody=True)
    assert rc == 0, err
    assert f"lab {lab.name} — 2 nodes" in out
    for args in (
        ("up", lab.path),
        ("down", lab.name),
        ("down", "--all"),
        ("status",),
        ("exec", lab.name, "a", "--", "true"),
    ):
        rc, out, err = netlab_cli(*args, nobody=True)
        assert rc == 3, (args, out, err)
        why = (
            "needs root to read the lab's network namespaces"
            if args[0] == "status"
            else "changes network namespaces and needs root"
        )
        assert f"`netlab {args[0]}` {why}; run it with sudo" in err
        assert args[0] != "status" or "changes" not in err
        assert "Traceback" not in err
    assert kn.leftovers(lab.name) == []
    # The lab still comes up as root afterwards: nothing half-made was left.
    assert netlab_cli("up", lab.path).rc == 0
    rc, _, err = netlab_cli("down", lab.name, nobody=True)
    assert rc == 3 and kn.namespaces_of(lab.name) == [lab.ns("a"), lab.ns("b")]
    assert netlab_cli("down", lab.name).rc == 0
    assert kn.leftovers(lab.name) == []


# ---------------------------------------------------------------- the shipped example


DOCKER_BRIDGE = Path(__file__).resolve().parents[2] / "labs" / "docker-bridge.yaml"


def test_docker_bridge_example(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    rc, out, err = netlab_cli("validate", DOCKER_BRIDGE)
    assert rc == 0, err
    # The same lab under a unique name, so it never meets a copy someone else has up. As
    # text: PyYAML would read the checks' `on:` keys as YAML 1.1 booleans (netlab does not).
    text = DOCKER_BRIDGE.read_text()
    spec = yaml.safe_load(text)
    lab = lab_file(text.replace("name: docker-bridge", "name: @LAB@", 1))
    rc, out, err = netlab_cli("up", lab.path)
    assert rc == 0, err
    nodes = list(spec["nodes"])
    assert kn.namespaces_of(lab.name) == sorted(lab.ns(n) for n in nodes)
    for node, body in spec["nodes"].items():  # every declared address is there
        declared = {a for link in (body.get("links") or {}).values() for a in (link or {}).get("addresses", [])}
        assert declared <= kn.address_set(lab.ns(node)), node
    # Every IPv4 address answers from every other interface on its L2 segment.
    from netlab.lab.parse import topology
    from netlab.load import load_lab

    topo = topology(load_lab(lab.path))
    for segment in topo.segments():
        ends = [
            (node, a.split("/")[0])
            for key in segment
            for node in [key[0]]
            for a in topo.interfaces[key].settings.addresses
            if ":" not in a
        ]
        for (n1, _), (_, a2) in itertools.pairwise(ends):
            kn.assert_ping(lab.ns(n1), a2)
    if {"outside", "c1", "c2", "host"} <= set(nodes):  # docker's routed path, both ways
        c1 = spec["nodes"]["c1"]["links"]["eth0"]["addresses"][0].split("/")[0]
        outside = spec["nodes"]["outside"]["links"]["eth0"]["addresses"][0].split("/")[0]
        kn.assert_ping(lab.ns("outside"), c1)
        kn.assert_ping(lab.ns("c2"), outside)
        assert kn.tcp_exchange(lab.ns("c1"), c1, lab.ns("outside"), port=7003) == f"HELLO from {outside}"
    rc, out, err = netlab_cli("down", lab.path)
    assert rc == 0, err
    assert f"removed {len(nodes)} namespaces" in out
    assert kn.leftovers(lab.name) == []


def test_exec_on_a_lab_that_is_not_up(lab_file: Any, netlab_cli: Any) -> None:
    name = lab_file.new_name()
    rc, _, err = netlab_cli("exec", name, "a", "--", "true")
    assert rc == 2 and f"lab {name} is not up" in err


def test_python_used_by_the_cli_is_this_one() -> None:
    # The helpers run `python -m netlab.cli` with this interpreter: it must be the venv's.
    proc = subprocess.run(
        [sys.executable, "-c", "import netlab.cli, sys; print(sys.prefix)"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == sys.prefix
