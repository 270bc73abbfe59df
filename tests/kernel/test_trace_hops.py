"""`netlab trace` on the real kernel, for the hops no rule shows: a bridge forwarding a
packet from port to port or flooding it (seen by the trace's bridge family table at the
bridge's own hooks; which of the two, by the bridge's FDB when the frame came in), and a VXLAN hop across labs/flannel-vxlan.yaml — the packet into
flannel.1, the outer packet over the underlay's bridge with its UDP ports and VNI, and
the packet out of flannel.1 on the far node. No temporary table is left behind."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netlab.kernel.nft import list_ruleset
from netlab.observations import TRACE_TABLE_PREFIX
from netlab.probes.trace import Trace, hops, run_trace, text_lines
from netlab.pytest_plugin import LabFactory, LabHandle
from tests.kernel.conftest import NetlabCli


def switch(names: tuple[str, ...] = ("a", "b", "c")) -> dict[str, Any]:
    """a, b and c (10.9.0.1-3) on bridge br0 of namespace sw, ports pa, pb, pc."""
    hosts = {name: {"links": {"eth0": {"addresses": [f"10.9.0.{i}/24"]}}} for i, name in enumerate(names, start=1)}
    ports = {f"p{name}": {"peer": f"{name}:eth0", "master": "br0"} for name in hosts}
    return {"name": "hops", "nodes": {"sw": {"links": {"br0": {"kind": "bridge"}, **ports}}, **hosts}}


def traced(lab: LabHandle, node: str, dst: str) -> tuple[Trace, str]:
    trace = run_trace(lab.context, node, dst, "icmp", None)
    return trace, "\n" + "\n".join(text_lines(trace))


def assert_no_trace_tables(lab: LabHandle) -> None:
    for node, ns in lab.context.nodes.items():
        ruleset = list_ruleset(ns)
        assert TRACE_TABLE_PREFIX not in ruleset, f"{node} still has a trace table:\n{ruleset}"


def bridged(trace: Trace) -> list[tuple[str, str | None, list[str], bool]]:
    return [
        (h.fields["bridge"], h.fields["in"], h.fields["out"], h.fields["flood"])
        for h in hops(trace)
        if h.kind == "bridge"
    ]


def test_a_bridge_forwards_by_port_and_floods_a_destination_it_never_learned(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(switch(), unique=True)
    trace, why = traced(lab, "a", "10.9.0.3")
    assert trace.ok, why
    assert bridged(trace) == [("br0", "pa", ["pc"], False), ("br0", "pc", ["pa"], False)], why
    # c's MAC: learned from its ARP answer, in this trace (the lab is new)
    assert (
        "↳ bridge br0 from pa: forwards it out pc (bridge forward hook; FDB: destination MAC "
        f"{mac(lab, 'c')} on port pc, learned from an earlier frame of this trace)"
    ) in why, why
    # pb learns no address: frames to b's MAC go out of every other port
    lab.exec("sw", "ip", "link", "set", "pb", "type", "bridge_slave", "learning", "off", check=True)
    lab.exec("sw", "ip", "link", "set", "br0", "type", "bridge", "fdb_flush", check=True)
    trace, why = traced(lab, "a", "10.9.0.2")
    assert trace.ok, why
    assert bridged(trace) == [("br0", "pa", ["pb", "pc"], True), ("br0", "pb", ["pa"], False)], why
    assert (
        "↳ bridge br0 from pa: floods it (a copy out of each port) out pb, pc (bridge forward hook; FDB: "
        f"destination MAC {mac(lab, 'b')} not in its FDB (unknown unicast))"
    ) in why, why
    assert_no_trace_tables(lab)


def mac(lab: LabHandle, node: str) -> str:
    return str(json.loads(lab.exec(node, "ip", "-j", "link", "show", "eth0", check=True).stdout)[0]["address"])


def test_a_flood_out_of_the_only_other_port_is_a_flood(netlab_lab: LabFactory) -> None:
    """Flooded or forwarded is what the bridge's FDB held for the frame's destination when
    it came in, not how many ports it left by: with two ports, both go out of one."""
    lab = netlab_lab(switch(("a", "b")), unique=True)
    lab.exec("sw", "ip", "link", "set", "pb", "type", "bridge_slave", "learning", "off", check=True)
    lab.exec("sw", "ip", "link", "set", "br0", "type", "bridge", "fdb_flush", check=True)
    trace, why = traced(lab, "a", "10.9.0.2")
    assert trace.ok, why
    assert bridged(trace) == [("br0", "pa", ["pb"], True), ("br0", "pb", ["pa"], False)], why
    first = next(h for h in hops(trace) if h.kind == "bridge")
    assert first.fields["fdb"] == {"mac": mac(lab, "b"), "found": "unknown", "port": None, "learned": False}, why
    assert "from pa: floods it (a copy out of each port) out pb (bridge forward hook; FDB: destination MAC" in why
    # b's MAC as a static entry, there before the probe: forwarded by the FDB, the same single port
    lab.exec("sw", "bridge", "fdb", "add", mac(lab, "b"), "dev", "pb", "master", "static", check=True)
    trace, why = traced(lab, "a", "10.9.0.2")
    assert trace.ok, why
    assert bridged(trace) == [("br0", "pa", ["pb"], False), ("br0", "pb", ["pa"], False)], why
    assert (
        f"from pa: forwards it out pb (bridge forward hook; FDB: destination MAC {mac(lab, 'b')} on port pb, "
        "in its FDB before the probe)"
    ) in why, why
    assert_no_trace_tables(lab)


def test_a_vxlan_hop_from_pod_to_pod_across_the_overlay(netlab_lab: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = netlab_lab("labs/flannel-vxlan.yaml", unique=True)
    trace, why = traced(lab, "pod1", "10.244.1.3")  # pod4
    assert trace.ok, why
    found = [(trace.nodes[h.ns], h.kind, h.fields.get("dev") or h.fields.get("bridge")) for h in hops(trace)]
    # each node's route decision, from the kernel's FIB lookups: node1 into flannel.1 via node2's VTEP
    routes = [(n, dev) for n, kind, dev in found if kind == "route"]
    found = [f for f in found if f[1] != "route"]
    assert ("node1", "flannel.1") in routes and ("node2", "cni0") in routes, why
    assert "↳ route: table main (254): 10.244.1.3 from 10.244.0.2 → dev flannel.1 via 10.244.1.0" in why, why
    way = [
        ("node1", "bridge", "cni0"),  # up to node1, which routes it into flannel.1
        ("node1", "vxlan-encap", "flannel.1"),
        ("underlay", "bridge", "br0"),
        ("node2", "vxlan-decap", "flannel.1"),
        ("node2", "bridge", "cni0"),  # node2 sends it out of pod4's port
    ]
    assert found == way + [(n.replace("1", "x").replace("2", "1").replace("x", "2"), k, d) for n, k, d in way], why
    encap = next(h for h in hops(trace) if h.kind == "vxlan-encap")
    outer = encap.fields["outer"]
    assert (encap.fields["vni"], encap.fields["port"]) == (1, 8472), why
    assert (outer["src"], outer["dst"], outer["dport"], outer["vni"]) == ("192.168.49.2", "192.168.49.3", 8472, 1), why
    assert encap.fields["inner"] == {"src": "10.244.0.2", "dst": "10.244.1.3"}, why
    underlay = next(h for h in hops(trace) if h.kind == "bridge" and trace.nodes[h.ns] == "underlay")
    assert (underlay.fields["in"], underlay.fields["out"]) == ("node1", ["node2"]), why
    assert "    ↳ out of the VXLAN tunnel flannel.1 (VNI 1, UDP port 8472)" in why, why
    assert f"UDP {outer['sport']} → 8472, VXLAN VNI 1" in why, why
    doc = json.loads(netlab_cli("trace", lab.name, "--from", "pod1", "--to", "pod4:8080", "--json").out)
    kinds = [(h["node"], h["kind"]) for h in doc["hops"]]
    assert ("node1", "vxlan-encap") in kinds and ("node2", "vxlan-decap") in kinds, doc["hops"]
    assert_no_trace_tables(lab)
    # flannel's FDB entry for node2's VTEP gone: into flannel.1, and no further
    lab.exec("node1", "bridge", "fdb", "del", "0e:fa:c0:a8:31:03", "dev", "flannel.1", "self", check=True)
    trace, why = traced(lab, "pod1", "10.244.1.3")
    assert not trace.ok, why
    assert [(trace.nodes[h.ns], h.kind) for h in hops(trace) if h.kind != "route"] == [
        ("node1", "bridge"),
        ("node1", "vxlan-encap"),
    ], why
    assert "↳ into the VXLAN tunnel flannel.1 (VNI 1, UDP port 8472): its outer packet was not seen" in why, why
    assert "the kernel dropped it in node1" in why and "NO_TX_TARGET — no target to send it to" in why, why
    assert_no_trace_tables(lab)


@pytest.mark.parametrize("underlay", ["fd00:49::/64", "192.168.49.0/24"])
def test_ipv6_pods_traced_through_vxlan_over_either_underlay(netlab_lab: LabFactory, underlay: str) -> None:
    """The outer packets are marked by the IPv6 addresses (and ports) they carry, over an
    IPv6 or an IPv4 underlay."""
    lab = netlab_lab(_v6_cluster(underlay), unique=True)
    b = next(a for a in lab.context.resolve(("b",)) if ":" in a)
    trace = run_trace(lab.context, "a", b, "tcp", 8080)
    why = "\n" + "\n".join(text_lines(trace))
    assert trace.ok, why
    tunnels = [(trace.nodes[h.ns], h.kind) for h in hops(trace) if h.kind.startswith("vxlan")]
    assert tunnels[:2] == [("node1", "vxlan-encap"), ("node2", "vxlan-decap")], why
    encap = next(h for h in hops(trace) if h.kind == "vxlan-encap")
    assert encap.fields["outer"] is not None and (encap.fields["outer"]["dport"], encap.fields["outer"]["vni"]) == (
        8472,
        1,
    ), why
    assert ":" in encap.fields["outer"]["src"] if ":" in underlay else "." in encap.fields["outer"]["src"], why
    assert_no_trace_tables(lab)


def _v6_cluster(underlay: str) -> dict[str, Any]:
    return {
        "name": "hops6",
        "cluster": {
            "backend": "vxlan",
            "pod_cidr": "fd00:10:244::/56",
            "underlay": {"subnet": underlay},
            "nodes": {"node1": {}, "node2": {}},
            "pods": {"a": {"node": "node1"}, "b": {"node": "node2", "serve": ["tcp/8080"]}},
        },
    }


def test_check_trace_carries_the_bridge_hops(netlab_lab: LabFactory, netlab_cli: NetlabCli) -> None:
    """`check --trace`: a failed check's walk has its hops, in the text and the JSON."""
    spec = switch()
    spec["nodes"]["b"]["serve"] = ["tcp/8080"]
    spec["checks"] = [{"name": "b on 81", "probe": {"from": "a", "to": "b", "port": 81}, "expect": {"result": "ok"}}]
    lab = netlab_lab(spec, unique=True)
    text = netlab_cli("check", lab.name, "--trace")
    assert "↳ bridge br0 from pa: forwards it out pb (bridge forward hook; FDB: destination MAC" in text.out, text.out
    doc = json.loads(netlab_cli("check", lab.name, "--trace", "--json").out)
    (check,) = doc["checks"]
    assert not check["passed"], check
    bridged = [(h["node"], h["in"], h["out"]) for h in check["trace"]["hops"] if h["kind"] == "bridge"]
    assert ("sw", "pa", ["pb"]) in bridged and ("sw", "pb", ["pa"]) in bridged, check["trace"]["hops"]
    assert_no_trace_tables(lab)


def test_a_pod_calling_itself_without_the_hairpin_masquerade(netlab_lab: LabFactory) -> None:
    """S4's failure (labs/kube-proxy-iptables.yaml, variant no-hairpin), as the article
    walks it: the SYN to the VIP goes through KUBE-SERVICES → KUBE-SVC → KUBE-SEP, is DNATed
    to the pod itself, and comes back to it from its own address; its answer, to itself over
    lo, belongs to no socket. The NDP the bridge table traces for what cni0 learns (through
    br_netfilter, in the IP hooks too) stays out of the walk."""
    lab = netlab_lab("labs/kube-proxy-iptables.yaml", unique=True, variant="no-hairpin")
    pod = "fd01:14ba:9ea:8800:b950:1075:b3ba:de17"
    trace = run_trace(lab.context, "mooncake-provider-0", "fd00:14ba:9ea:8800::ffff:1d23", "tcp", 8080)
    why = "\n" + "\n".join(text_lines(trace))
    assert not trace.ok, why
    assert not any(e.dst and e.dst.startswith("ff02:") for e in trace.events), why
    assert all(not e.learning for e in trace.events), why
    for chain in ("KUBE-SERVICES", "KUBE-SVC-", "KUBE-SEP-"):
        assert f"ip6 nat {chain}" in why, why
    assert f"is now [{pod}]:" in why and f"[{pod}]:8080" in why, why
    assert f"mooncake-provider-0 ({lab.ns('mooncake-provider-0')})  {pod} → {pod}  [prerouting, in eth0]" in why, why
    assert "NO_SOCKET" in why, why
    assert_no_trace_tables(lab)


def test_s0_the_reply_follows_the_main_tables_default_towards_vrf1(netlab_lab: LabFactory) -> None:
    """S0's failure (labs/metallb-policy-routing.yaml as built), as the article walks it:
    the client's SYN to 3.3.3.3 is DNATed to the pod; the pod's reply is routed by the
    node's main table — its one default, via VRF1 — before its source is turned back into
    3.3.3.3, and VRF1 has no route to the client."""
    lab = netlab_lab("labs/metallb-policy-routing.yaml", unique=True)
    trace = run_trace(lab.context, "client", "3.3.3.3", "tcp", 22)
    lines = text_lines(trace)
    why = "\n" + "\n".join(lines)
    assert not trace.ok, why
    node = lab.ns("node")
    reply = lines.index(f"  node ({node})  192.168.1.1 → 10.10.10.10  [prerouting, in cni0]")
    assert (
        lines[reply + 1] == "    ↳ route: table main (254): 10.10.10.10 from 192.168.1.1 → dev eth1 via 172.16.1.1"
    ), why
    assert lines[reply + 2].startswith("    NAT (reply, DNAT undone, at postrouting): 192.168.1.1:22 → "), why
    assert "is now 3.3.3.3:22 → 10.10.10.10:" in lines[reply + 2], why
    assert any("NAT (DNAT, at prerouting)" in line and "is now 10.10.10.10:" in line for line in lines[:reply]), why
    assert f"the kernel dropped it in vrf1 ({lab.ns('vrf1')}), in on eth0: IP_INNOROUTES" in why, why
    assert any(h.kind == "route" and h.fields["via"] == "172.16.1.1" for h in hops(trace)), why
    assert_no_trace_tables(lab)
