"""`up` returns only once the links it brought up are up (root, real kernel).

The kernel applies a carrier change (a veth whose both ends are up) in its linkwatch
work, 100-200 links a pass and, once it falls behind, a pass a second: until then the
link's operstate is stale, its queue discards what it sends, and a bridge port on it is
disabled. Right after an `up` of a few hundred links between two nodes, tens to
hundreds of them were still so (this test failed 10 of 12 times before `up` waited).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from netlab import lifecycle
from netlab.kernel.driver import OpFailed
from netlab.kernel.netlink import NetlinkDriver
from netlab.load import load_lab
from netlab.plan.build import build_plan

from .conftest import LabFactory

LINKS = 450  # more than one linkwatch pass takes (200 links)


def two_nodes(links: int) -> dict[str, Any]:
    """Node a's ends of `links` veths are ports of its bridge; node b holds the far ends."""
    ports: dict[str, Any] = {"br0": {"kind": "bridge"}}
    ports.update({f"a{i}": {"peer": f"b:e{i}", "master": "br0"} for i in range(links)})
    return {"nodes": {"a": {"links": ports}, "b": {}}}


def not_up(kn: Any, ns: str) -> list[str]:
    """Links that are admin up but not working yet: a veth end whose operstate is not UP,
    a bridge port that is not forwarding."""
    found = []
    for name, link in kn.links(ns).items():
        info = link.get("linkinfo", {})
        if "UP" not in link["flags"]:
            continue
        if info.get("info_kind") == "veth" and link["operstate"] != "UP":
            found.append(f"{name}: operstate {link['operstate']}")
        if info.get("info_slave_kind") == "bridge" and info["info_slave_data"]["state"] != "forwarding":
            found.append(f"{name}: bridge port {info['info_slave_data']['state']}")
    return found


def test_every_link_is_up_and_every_port_forwarding_when_up_returns(lab_file: LabFactory, kn: Any) -> None:
    lab = lab_file(two_nodes(LINKS))
    driver = NetlinkDriver()
    try:
        lifecycle.up(lab.path, driver)
    finally:
        driver.close()
    assert not_up(kn, lab.ns("a")) + not_up(kn, lab.ns("b")) == []


def test_a_link_that_does_not_come_up_is_named_with_its_state(lab_file: LabFactory, kn: Any, netlab_cli: Any) -> None:
    lab = lab_file(two_nodes(2))
    assert netlab_cli("up", lab).rc == 0
    # Link mode dormant: carrier on, but the kernel keeps the link's operstate DORMANT
    # (what a link waiting for 802.1X is), so it never becomes UP.
    for step in (["mode", "dormant"], ["down"], ["up"]):
        subprocess.run(["ip", "-n", lab.ns("b"), "link", "set", "e1", *step], check=True)
    plan = build_plan(load_lab(lab.path))
    driver = NetlinkDriver()
    try:
        with pytest.raises(OpFailed) as failed:
            driver.settle(plan.ops, timeout=0.3)
    finally:
        driver.close()
    assert failed.value.reason == f"1 link is not up after 0.3 s: e1 in {lab.ns('b')} (operstate dormant)"
    assert failed.value.op.what == "nodes.a.links.a1"  # the op that made it
