"""labs/flannel-vxlan.yaml (scenario S2) on the real kernel: its own checks, one test each,
and the device settings flannel is known for, read back from the kernel."""

from __future__ import annotations

import json

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

test_flannel_vxlan = lab_checks("labs/flannel-vxlan.yaml", unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module("labs/flannel-vxlan.yaml", unique=True)


def _json(lab: LabHandle, node: str, *argv: str) -> list[dict]:  # type: ignore[type-arg]
    proc = lab.exec(node, *argv, check=True)
    return json.loads(proc.stdout or "[]")  # type: ignore[no-any-return]


def test_flannel_1_is_built_as_flanneld_builds_it(lab: LabHandle) -> None:
    (link,) = _json(lab, "node1", "ip", "-d", "-j", "link", "show", "flannel.1")
    data = link["linkinfo"]["info_data"]
    evidence = json.dumps(link, indent=1)
    assert link["linkinfo"]["info_kind"] == "vxlan", evidence
    assert (data["id"], data["port"], data["learning"], data["local"]) == (1, 8472, False, "192.168.49.2"), evidence
    assert link["mtu"] == 1450 and link["address"] == "0e:fa:c0:a8:31:02", evidence
    (addr,) = _json(lab, "node1", "ip", "-j", "addr", "show", "flannel.1")
    assert [(a["local"], a["prefixlen"]) for a in addr["addr_info"]] == [("10.244.0.0", 32)], addr


def test_per_remote_node_neighbour_fdb_and_onlink_route(lab: LabHandle) -> None:
    neigh = _json(lab, "node1", "ip", "-j", "neigh", "show", "dev", "flannel.1")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [
        ("10.244.1.0", "0e:fa:c0:a8:31:03", ["PERMANENT"])
    ], neigh
    fdb = _json(lab, "node1", "bridge", "-j", "fdb", "show", "dev", "flannel.1")
    mine = [f for f in fdb if f["mac"] == "0e:fa:c0:a8:31:03"]
    assert [(f.get("dst"), f.get("state"), "self" in f.get("flags", [])) for f in mine] == [
        ("192.168.49.3", "permanent", True)
    ], fdb
    routes = _json(lab, "node1", "ip", "-j", "route", "show", "10.244.1.0/24")
    assert [(r["gateway"], r["dev"], "onlink" in r.get("flags", [])) for r in routes] == [
        ("10.244.1.0", "flannel.1", True)
    ], routes


def test_pod_mtu_leaves_room_for_the_vxlan_header(lab: LabHandle) -> None:
    (eth0,) = _json(lab, "pod1", "ip", "-j", "link", "show", "eth0")
    (cni0,) = _json(lab, "node1", "ip", "-j", "link", "show", "cni0")
    (under,) = _json(lab, "node1", "ip", "-j", "link", "show", "eth0")
    assert (eth0["mtu"], cni0["mtu"], under["mtu"]) == (1450, 1450, 1500)


def test_a_full_size_pod_packet_crosses_the_overlay(lab: LabHandle) -> None:
    """1450-byte pod packets + 50 bytes of VXLAN fit the 1500-byte underlay without fragments."""
    proc = lab.exec("pod1", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", lab.address("pod4"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_without_the_fdb_entry_node1_does_not_know_where_node2s_vtep_is(netlab_lab: LabFactory) -> None:
    lab = netlab_lab("labs/flannel-vxlan.yaml", unique=True)  # its own copy: this test breaks it
    lab.exec("node1", "bridge", "fdb", "del", "0e:fa:c0:a8:31:03", "dev", "flannel.1", "self", check=True)
    result = lab.probe("pod1", "pod4", port=8080, timeout=0.5)
    # flannel.1 learns nothing (nolearning): with no FDB entry the encapsulated SYN has no
    # underlay destination and is dropped, so the SYN goes unanswered.
    assert (result.outcome, "SYN unanswered" in (result.detail or "")) == ("timeout", True), result.detail
