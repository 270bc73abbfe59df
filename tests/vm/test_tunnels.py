"""Tunnels and VLANs under a kernel that has their modules (the VM): every kind of
tests/golden/good/tunnels.yaml built by netlab is the device `ip link add` makes from the
plan's own lines (as `ip -d -j link` reads both back), the fallback device tunl0 is set
up by name, and traffic crosses each tunnel; a VLAN-filtering bridge's port VLANs are
what `bridge vlan add` makes, and its lab's checks pass (VLANs kept apart, routed on a
stick); labs/calico-ipip.yaml passes its checks (the outer IPIP header captured)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from netlab.lab.source import parse_yaml
from netlab.load import load_lab_data
from netlab.plan.build import build_plan
from netlab.pytest_plugin import LabFactory, lab_checks, unique_name

REPO = Path(__file__).resolve().parents[2]
GOLDEN = "tests/golden/good/tunnels.yaml"
MADE = ("eth0.100", "qinq", "ipip1", "gre1", "gretap1", "ip6tnl1", "ip6gre1", "gnv1", "gnv-ext", "gre-ext", "tunl0")

VLANS = "tests/golden/good/bridge-vlans.yaml"

test_calico_ipip = lab_checks("labs/calico-ipip.yaml", unique=True)
test_bridge_vlans = lab_checks(VLANS, unique=True)


def _links(ns: str) -> dict[str, Any]:
    """Each device as `ip -d -j link` has it: kind and kind data, MTU, state, master."""
    shown = json.loads(
        subprocess.run(["ip", "-n", ns, "-d", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    )
    return {
        link["ifname"]: {
            "info": link.get("linkinfo", {}).get("info_kind"),
            "data": link.get("linkinfo", {}).get("info_data"),
            "mtu": link["mtu"],
            "up": "UP" in link["flags"],
            "master": link.get("master"),
            "link": link.get("link"),
        }
        for link in shown
        if link["ifname"] in MADE
    }


def test_every_kind_is_what_ip_link_add_makes(netlab_lab: LabFactory) -> None:
    """The lab built by netlab, and the same lab under another name built by running its
    plan's lines in a shell: every tunnel, vlan and the fallback tunl0 alike."""
    built = netlab_lab(GOLDEN, unique=True)
    data = parse_yaml((REPO / GOLDEN).read_text(), GOLDEN)[0]
    data["name"] = unique_name("tunnels-ip")
    plan = build_plan(load_lab_data(data))
    try:
        done = subprocess.run(["bash", "-c", "set -e\n" + plan.render()], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        for node in ("a", "b"):
            ours, theirs = _links(built.ns(node)), _links(f"{data['name']}.{node}")
            assert ours == theirs, node
        a = _links(built.ns("a"))
        assert set(a) == {"eth0.100", "qinq", "ipip1", "gre1", "gretap1", "ip6tnl1", "ip6gre1", "gnv1", "tunl0"}
        assert a["tunl0"]["mtu"] == 1480 and a["tunl0"]["up"], a["tunl0"]
        assert a["gretap1"]["master"] == "br0"
        assert a["qinq"]["data"]["protocol"] == "802.1ad" and a["eth0.100"]["data"]["id"] == 100
        assert a["gre1"]["data"]["ikey"] in ("0.0.0.42", 42), a["gre1"]["data"]
        b = _links(built.ns("b"))
        assert b["gnv-ext"]["data"].get("external") is True, b["gnv-ext"]
        rp = subprocess.run(
            ["ip", "netns", "exec", built.ns("a"), "sysctl", "-n", "net.ipv4.conf.tunl0.rp_filter"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert rp.stdout.strip() == "0"
    finally:
        for ns in plan.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"{data['name']}.")]


def test_traffic_crosses_each_tunnel(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(GOLDEN, unique=True)
    for to in ("10.100.0.2", "10.1.0.2", "10.2.0.2", "10.6.0.2"):  # vlan, ipip, gre, geneve
        result = lab.probe("a", to)
        assert result.ok, (to, result.detail)


def _port_vlans(ns: str) -> Any:
    shown = subprocess.run(["bridge", "-n", ns, "-j", "vlan", "show"], capture_output=True, text=True, check=True)
    return sorted(json.loads(shown.stdout), key=lambda port: port["ifname"])


def test_port_vlans_are_what_bridge_vlan_add_makes(netlab_lab: LabFactory) -> None:
    built = netlab_lab(VLANS, unique=True)
    data = parse_yaml((REPO / VLANS).read_text(), VLANS)[0]
    data["name"] = unique_name("vlans-ip")
    plan = build_plan(load_lab_data(data))
    try:
        done = subprocess.run(["bash", "-c", "set -e\n" + plan.render()], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        ours = _port_vlans(built.ns("switch"))
        assert ours == _port_vlans(f"{data['name']}.switch")
        by_port = {port["ifname"]: port["vlans"] for port in ours}
        [p1] = by_port["p1"]  # default_pvid 0: only the VLAN it lists
        assert p1["vlan"] == 10 and {"PVID", "Egress Untagged"} <= set(p1["flags"]), by_port
        assert [v["vlan"] for v in by_port["trunk"]] == [10, 20] and not any(v.get("flags") for v in by_port["trunk"])
    finally:
        for ns in plan.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
