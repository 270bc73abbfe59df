"""Static neighbour and FDB entries on the real kernel: flannel's vxlan backend between two
node namespaces, built by netlab from `neighbors:`, `fdb:` and onlink routes exactly as
flanneld programs them per remote node (see /work/shared/design/k8s-datapaths.md §4):

    ip neigh replace 10.244.Y.0 lladdr <VtepMAC> dev flannel.1 nud permanent
    bridge fdb append <VtepMAC> dev flannel.1 dst <nodeIP> self permanent
    ip route replace 10.244.Y.0/24 via 10.244.Y.0 dev flannel.1 onlink

Checked with the kernel's own answers (`ip -d -j link`, `ip -j neigh`, `bridge -j fdb`)
and with pod-to-pod pings across the underlay. Root only; every lab has a unique name
from the session registry and is taken down after its test (or module), pass or fail.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle

NODES = {"node1": ("192.168.49.2", 0), "node2": ("192.168.49.3", 1)}  # underlay address, pod subnet index
VTEP_MAC = {"node1": "0a:58:0a:f4:00:00", "node2": "0a:58:0a:f4:01:00"}
POD_MAC = {"pod1": "02:00:0a:f4:00:02", "pod2": "02:00:0a:f4:01:02"}


def flannel_spec(*, fdb: bool = True, flannel_up: bool = True) -> dict[str, Any]:
    """node1 —veth (underlay 192.168.49.0/24)— node2, each with flannel.1 (10.244.X.0/32)
    and cni0 (10.244.X.1/24) holding one pod (10.244.X.2). node1 also has an IPv6
    neighbour and pins its pod's MAC to the pod's bridge port (`master static`)."""
    nodes: dict[str, Any] = {}
    for name, (ip, x) in NODES.items():
        other = next(n for n in NODES if n != name)
        other_ip, y = NODES[other]
        pod = f"pod{x + 1}"
        nodes[name] = {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {
                **(
                    {"eth0": {"peer": "node2:eth0", "addresses": [f"{ip}/24"]}}
                    if name == "node1"
                    else {"eth0": {"addresses": [f"{ip}/24"]}}
                ),
                "flannel.1": {
                    "kind": "vxlan",
                    "vni": 1,
                    "port": 8472,
                    "local": ip,
                    "dev": "eth0",
                    "learning": False,
                    "mtu": 1450,
                    "mac": VTEP_MAC[name],
                    "addresses": [f"10.244.{x}.0/32"],
                    "up": flannel_up,
                },
                "cni0": {"kind": "bridge", "addresses": [f"10.244.{x}.1/24"]},
                f"veth{pod}": {"peer": f"{pod}:eth0", "master": "cni0"},
            },
            "neighbors": [{"to": f"10.244.{y}.0", "lladdr": VTEP_MAC[other], "dev": "flannel.1"}],
            "fdb": [{"lladdr": VTEP_MAC[other], "dev": "flannel.1", "dst": other_ip}] if fdb else [],
            # (no route through a link that is down: the kernel refuses it, and so does netlab)
            "routes": [{"to": f"10.244.{y}.0/24", "via": f"10.244.{y}.0", "dev": "flannel.1", "onlink": True}]
            if flannel_up
            else [],
        }
        nodes[pod] = {
            "links": {"eth0": {"addresses": [f"10.244.{x}.2/24"], "mac": POD_MAC[pod]}},
            "routes": [{"to": "default", "via": f"10.244.{x}.1"}],
        }
    nodes["node1"]["neighbors"].append({"to": "fd00:244:1::", "lladdr": VTEP_MAC["node2"], "dev": "flannel.1"})
    nodes["node1"]["fdb"].append({"lladdr": POD_MAC["pod1"], "dev": "vethpod1"})
    return {"nodes": nodes}


def kernel_json(lab: LabHandle, node: str, *argv: str) -> tuple[Any, str]:
    """(parsed JSON, raw text) of `ip`/`bridge` run with `-n NS -j` on the node."""
    tool, *rest = argv
    out = subprocess.run(
        [tool, "-n", lab.ns(node), "-j", *rest], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return (json.loads(out) if out.strip() else []), out.strip()


def ping(lab: LabHandle, frm: str, to: str, attempts: int = 3, timeout: float = 1.0) -> tuple[bool, str]:
    """netlab's own ICMP probe; a few attempts for the positive case (the first packet
    also resolves the pod's gateway and the far pod by ARP)."""
    seen = []
    for _ in range(attempts):
        r = lab.probe(frm, to, proto="icmp", timeout=timeout)
        seen.append(f"{r.outcome}: {r.detail}")
        if r.ok:
            return True, "; ".join(seen)
    return False, "; ".join(seen)


def evidence(lab: LabHandle, node: str) -> str:
    parts = []
    for argv in (
        ("ip", "neigh", "show", "dev", "flannel.1"),
        ("bridge", "fdb", "show", "dev", "flannel.1"),
        ("ip", "route", "show"),
    ):
        _, raw = kernel_json(lab, node, *argv)
        parts.append(f"{' '.join(argv)} in {node}: {raw}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def flannel(netlab_lab_module: LabFactory, registry: Any) -> LabHandle:
    return netlab_lab_module(flannel_spec(), name=registry.new_name())


# ---------------------------------------------------------------- what the kernel holds


@pytest.mark.parametrize("node", list(NODES))
def test_flannel_vxlan_device(flannel: LabHandle, node: str) -> None:
    (link,), raw = kernel_json(flannel, node, "ip", "-d", "link", "show", "flannel.1")
    data = link["linkinfo"]["info_data"]
    assert link["linkinfo"]["info_kind"] == "vxlan", raw
    assert (data["id"], data["port"], data["learning"]) == (1, 8472, False), raw
    assert (data["local"], data["link"]) == (NODES[node][0], "eth0"), raw
    assert (link["mtu"], link["address"]) == (1450, VTEP_MAC[node]), raw
    assert "UP" in link["flags"], raw


@pytest.mark.parametrize("node", list(NODES))
def test_neighbor_is_permanent_with_the_remote_vtep_mac(flannel: LabHandle, node: str) -> None:
    other = next(n for n in NODES if n != node)
    entries, raw = kernel_json(flannel, node, "ip", "-4", "neigh", "show", "dev", "flannel.1")
    mine = [e for e in entries if e["dst"] == f"10.244.{NODES[other][1]}.0"]
    assert len(mine) == 1, raw
    assert mine[0]["lladdr"] == VTEP_MAC[other], raw
    assert mine[0]["state"] == ["PERMANENT"], raw


def test_ipv6_neighbor(flannel: LabHandle) -> None:
    entries, raw = kernel_json(flannel, "node1", "ip", "-6", "neigh", "show", "dev", "flannel.1")
    mine = [e for e in entries if e["dst"] == "fd00:244:1::"]
    assert len(mine) == 1, raw
    assert (mine[0]["lladdr"], mine[0]["state"]) == (VTEP_MAC["node2"], ["PERMANENT"]), raw


@pytest.mark.parametrize("node", list(NODES))
def test_fdb_entry_on_vxlan_is_self_permanent_with_dst(flannel: LabHandle, node: str) -> None:
    other = next(n for n in NODES if n != node)
    entries, raw = kernel_json(flannel, node, "bridge", "fdb", "show", "dev", "flannel.1")
    mine = [e for e in entries if e["mac"] == VTEP_MAC[other]]
    assert len(mine) == 1, raw
    assert mine[0].get("dst") == NODES[other][0], raw
    assert mine[0]["flags"] == ["self"], raw
    assert mine[0]["state"] == "permanent", raw
    assert "master" not in mine[0], raw


def test_fdb_entry_on_bridge_port_is_master_static(flannel: LabHandle) -> None:
    entries, raw = kernel_json(flannel, "node1", "bridge", "fdb", "show", "dev", "vethpod1")
    mine = [e for e in entries if e["mac"] == POD_MAC["pod1"]]
    assert len(mine) == 1, raw
    assert (mine[0].get("master"), mine[0]["state"]) == ("cni0", "static"), raw
    assert "self" not in mine[0]["flags"] and "dst" not in mine[0], raw


@pytest.mark.parametrize("node", list(NODES))
def test_onlink_route_through_flannel(flannel: LabHandle, node: str) -> None:
    other = NODES[next(n for n in NODES if n != node)][1]
    route = flannel.route_get(node, f"10.244.{other}.2")
    assert (route.dev, route.via) == ("flannel.1", f"10.244.{other}.0"), evidence(flannel, node)


# ---------------------------------------------------------------- traffic


@pytest.mark.parametrize(("frm", "to"), [("pod1", "pod2"), ("pod2", "pod1")])
def test_pod_to_pod_across_nodes(flannel: LabHandle, frm: str, to: str) -> None:
    ok, seen = ping(flannel, frm, to)
    assert ok, f"{frm} → {to}: {seen}\n{evidence(flannel, 'node1')}\n{evidence(flannel, 'node2')}"


def test_without_the_fdb_entry_pods_do_not_reach_each_other(netlab_lab: LabFactory, registry: Any) -> None:
    """Neighbour and route are there, but flannel.1 has no remote and no FDB entry: the
    vxlan does not know where to send the frame for the remote VTEP MAC and drops it."""
    lab = netlab_lab(flannel_spec(fdb=False), name=registry.new_name())
    entries, raw = kernel_json(lab, "node1", "bridge", "fdb", "show", "dev", "flannel.1")
    assert not [e for e in entries if e["mac"] == VTEP_MAC["node2"]], raw
    neigh, raw_neigh = kernel_json(lab, "node1", "ip", "-4", "neigh", "show", "dev", "flannel.1")
    assert [e["lladdr"] for e in neigh] == [VTEP_MAC["node2"]], raw_neigh
    ok, seen = ping(lab, "pod1", "pod2", attempts=1)
    assert not ok, f"pod1 → pod2 should fail without the FDB entry, but: {seen}\n{evidence(lab, 'node1')}"
    (link,), raw = kernel_json(lab, "node1", "ip", "-s", "link", "show", "flannel.1")
    assert link["stats64"]["tx"]["dropped"] > 0, f"flannel.1 should have dropped the frames: {raw}"
    # the same lab with the entries added by hand, as flanneld would: now it works
    for node, other in (("node1", "node2"), ("node2", "node1")):
        lab.exec(
            node,
            "bridge",
            "fdb",
            "append",
            VTEP_MAC[other],
            "dev",
            "flannel.1",
            "dst",
            NODES[other][0],
            "self",
            "permanent",
            check=True,
        )
    ok, seen = ping(lab, "pod1", "pod2")
    assert ok, f"pod1 → pod2 after adding the FDB entries: {seen}\n{evidence(lab, 'node1')}"


def test_entries_on_a_link_that_is_down(netlab_lab: LabFactory, registry: Any) -> None:
    """The kernel takes neighbour and FDB entries on a link that is down, and the
    permanent ones survive bringing it up."""
    lab = netlab_lab(flannel_spec(flannel_up=False), name=registry.new_name())
    (link,), raw = kernel_json(lab, "node1", "ip", "link", "show", "flannel.1")
    assert "UP" not in link["flags"], raw
    neigh, raw = kernel_json(lab, "node1", "ip", "-4", "neigh", "show", "dev", "flannel.1")
    assert [(e["lladdr"], e["state"]) for e in neigh] == [(VTEP_MAC["node2"], ["PERMANENT"])], raw
    fdb, raw = kernel_json(lab, "node1", "bridge", "fdb", "show", "dev", "flannel.1")
    assert [(e.get("dst"), e["state"]) for e in fdb if e["mac"] == VTEP_MAC["node2"]] == [
        ("192.168.49.3", "permanent")
    ], raw
    lab.exec("node1", "ip", "link", "set", "flannel.1", "up", check=True)
    neigh, raw = kernel_json(lab, "node1", "ip", "-4", "neigh", "show", "dev", "flannel.1")
    assert [e["state"] for e in neigh] == [["PERMANENT"]], raw


def test_kernel_facts_behind_the_checks(netlab_lab: LabFactory, registry: Any) -> None:
    """What netlab validate refuses, the kernel refuses or quietly gets wrong (by hand here,
    since netlab will not build these)."""
    lab = netlab_lab(flannel_spec(fdb=False), name=registry.new_name())

    def bridge(*argv: str) -> subprocess.CompletedProcess[str]:
        return lab.exec("node1", "bridge", "fdb", "append", *argv)

    mac = VTEP_MAC["node2"]
    no_dst = bridge(mac, "dev", "flannel.1", "self", "permanent")
    assert no_dst.returncode != 0 and "Invalid argument" in no_dst.stderr, no_dst
    v6_dst = bridge(mac, "dev", "flannel.1", "dst", "2001:db8::3", "self", "permanent")
    assert v6_dst.returncode != 0 and "Address family not supported" in v6_dst.stderr, v6_dst
    # a unicast MAC keeps its first dst: a second append succeeds and changes nothing
    assert bridge(mac, "dev", "flannel.1", "dst", "192.168.49.3", "self", "permanent").returncode == 0
    second = bridge(mac, "dev", "flannel.1", "dst", "192.168.49.9", "self", "permanent")
    assert second.returncode == 0, second
    entries, raw = kernel_json(lab, "node1", "bridge", "fdb", "show", "dev", "flannel.1")
    assert [e.get("dst") for e in entries if e["mac"] == mac] == ["192.168.49.3"], raw
    # … while the all-zero MAC (the flood list) takes several
    for dst in ("192.168.49.3", "192.168.49.9"):
        assert bridge("00:00:00:00:00:00", "dev", "flannel.1", "dst", dst, "self", "permanent").returncode == 0
    entries, raw = kernel_json(lab, "node1", "bridge", "fdb", "show", "dev", "flannel.1")
    assert sorted(e.get("dst") for e in entries if e["mac"] == "00:00:00:00:00:00") == [
        "192.168.49.3",
        "192.168.49.9",
    ], raw
    # a neighbour on lo is filed under 0.0.0.0
    lab.exec("node1", "ip", "neigh", "replace", "10.9.9.9", "lladdr", mac, "dev", "lo", "nud", "permanent", check=True)
    entries, raw = kernel_json(lab, "node1", "ip", "-4", "neigh", "show", "dev", "lo")
    assert [e["dst"] for e in entries] == ["0.0.0.0"], raw
