"""Realistic kube-proxy rules, loaded into a node's namespace as they are: the iptables-save
dump of iptables mode (tests/data/kube-proxy-iptables.save, and its IPv6 twin for
ip6tables) and the table of nftables mode (tests/data/kube-proxy-nftables.nft), written
from k8s-datapaths.md §1–2 for Service ns4/svc4: ClusterIP 172.30.0.44:80 → two pods :8080.

The lab is one Kubernetes node: cni0 (10.180.0.1/24, fd00:10:180::1/64) with a client pod
and the two endpoint pods on veths, as the CNI bridge plugin makes them. Real probes show
what kube-proxy promises: the VIP spreads over both endpoints, a pod's connection keeps
its own source address (no SNAT from a pod), conntrack on the node holds the DNAT — and
a pod reaching itself through the VIP (hairpin) is masqueraded to the node's cni0 address.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from netlab.kernel.nft import list_ruleset
from netlab.pytest_plugin import LabFactory, LabHandle

DATA = Path(__file__).resolve().parents[1] / "data"
VIP4, VIP6 = "172.30.0.44", "fd00:172:30::44"
PODS = {"client": 2, "ep-a": 4, "ep-b": 5}  # last byte / group of each pod's address


def node_lab(**firewall: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1},
        "links": {"cni0": {"kind": "bridge", "addresses": ["10.180.0.1/24", "fd00:10:180::1/64"]}},
        **firewall,
    }
    nodes: dict[str, Any] = {"node": node}
    for pod, n in PODS.items():
        node["links"][f"veth{pod}"] = {"peer": f"{pod}:eth0", "master": "cni0"}
        nodes[pod] = {
            "links": {"eth0": {"addresses": [f"10.180.0.{n}/24", f"fd00:10:180::{n}/64"]}},
            "routes": [{"to": "default", "via": "10.180.0.1"}, {"to": "default", "via": "fd00:10:180::1"}],
            **({"serve": ["tcp/8080"]} if pod != "client" else {}),
        }
    return {"name": "kube-proxy", "nodes": nodes}


MODES = {
    "iptables": node_lab(
        iptables=[
            {"file": str(DATA / "kube-proxy-iptables.save")},
            {"file": str(DATA / "kube-proxy-ip6tables.save"), "family": 6},
        ]
    ),
    "nftables": node_lab(nftables=[{"file": str(DATA / "kube-proxy-nftables.nft")}]),
}


@pytest.fixture(scope="module", params=list(MODES))
def lab(request: pytest.FixtureRequest, netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(MODES[request.param], name=f"kp-{request.param[:3]}", unique=True)


@pytest.fixture(scope="module")
def iptables_lab(netlab_lab_module: LabFactory) -> LabHandle:
    """The iptables-mode lab (the same one `lab` gives for that mode)."""
    return netlab_lab_module(MODES["iptables"], name="kp-ipt", unique=True)


def evidence(lab: LabHandle) -> str:
    return f"\n--- nft list ruleset in {lab.ns('node')}:\n{list_ruleset(lab.ns('node'))}"


def test_the_vip_spreads_over_both_endpoints_without_snat(lab: LabHandle) -> None:
    results = lab.probe("client", f"{VIP4}:80", count=20)
    failed = [f"{r.outcome}: {r.detail}" for r in results if not r.ok]
    assert not failed, f"{failed}{evidence(lab)}"
    served = Counter(r.served_by for r in results)
    assert set(served) == {"ep-a", "ep-b"}, f"served by {dict(served)} in 20 probes{evidence(lab)}"
    saw = {r.server_saw for r in results}
    assert saw == {"10.180.0.2"}, f"the endpoints saw {saw}: a pod's connection to a ClusterIP is not SNATed"


def test_conntrack_on_the_node_shows_the_dnat(lab: LabHandle) -> None:
    r = lab.probe("client", f"{VIP4}:80")
    assert r.ok, f"{r.outcome}: {r.detail}{evidence(lab)}"
    entries = lab.conntrack("node", r)
    assert entries, f"no conntrack entry for the probe{evidence(lab)}"
    ct = entries[0]
    assert ct.dnat and not ct.snat, ct.text
    assert (ct.orig.src, ct.orig.dst, ct.orig.dport) == ("10.180.0.2", VIP4, 80), ct.text
    assert ct.reply.src == lab.address(r.served_by or "", 4) and ct.reply.sport == 8080, ct.text


def test_hairpin_through_the_vip_is_masqueraded(lab: LabHandle) -> None:
    """ep-a → VIP → ep-a itself: the endpoint chain's "from the endpoint itself" rule marks
    it for masquerade, so ep-a sees the node (cni0's 10.180.0.1), not itself. The frame
    leaves the bridge by the port it came in on (br_netfilter DNATs in the bridge), which
    the bridge allows only with hairpin mode on that port, as the CNI plugin's hairpinMode
    sets it — netlab has no link setting for it, so the test sets it in the lab's node."""
    lab.exec("node", "bridge", "link", "set", "dev", "vethep-a", "hairpin", "on", check=True)
    try:
        results = lab.probe("ep-a", f"{VIP4}:80", count=20)
    finally:
        lab.exec("node", "bridge", "link", "set", "dev", "vethep-a", "hairpin", "off", check=True)
    failed = [f"{r.outcome}: {r.detail}" for r in results if not r.ok]
    assert not failed, f"{failed}{evidence(lab)}"
    to_self = [r for r in results if r.served_by == "ep-a"]
    assert to_self, "the VIP never chose ep-a itself in 20 probes"
    assert {r.server_saw for r in to_self} == {"10.180.0.1"}, [r.detail for r in to_self]
    to_other = [r for r in results if r.served_by == "ep-b"]
    assert {r.server_saw for r in to_other} <= {"10.180.0.4"}, "pod to another pod: not SNATed"


def test_without_hairpin_mode_a_pod_cannot_reach_itself_through_the_vip(lab: LabHandle) -> None:
    """The kernel fact behind the CNI plugin's hairpinMode: with the port's hairpin off (the
    default, and all netlab can build today), the connections the VIP sends back to ep-a
    time out; those to ep-b work."""
    results = lab.probe("ep-a", f"{VIP4}:80", count=12, timeout=0.5)
    to_self = [r for r in results if not r.ok]
    assert to_self, "the VIP never chose ep-a itself in 12 probes (or hairpin needs no port setting here)"
    assert all(r.outcome == "timeout" for r in to_self), [r.detail for r in to_self]
    assert all(r.served_by == "ep-b" for r in results if r.ok)


def test_the_dump_is_what_iptables_save_prints(iptables_lab: LabHandle) -> None:
    lab = iptables_lab
    for tool, file in (
        ("iptables-nft-save", "kube-proxy-iptables.save"),
        ("ip6tables-nft-save", "kube-proxy-ip6tables.save"),
    ):
        saved = lab.exec("node", tool, check=True).stdout
        rules = [line for line in (DATA / file).read_text().splitlines() if not line.startswith("#")]
        # the chains' packet counters have moved since (other tests' traffic)
        got = [re.sub(r"\[\d+:\d+\]$", "[0:0]", line) for line in saved.splitlines() if not line.startswith("#")]
        assert got == rules, saved


def test_ipv6_dump_spreads_over_both_endpoints(iptables_lab: LabHandle) -> None:
    """ip6tables-nft-restore of the IPv6 dump (`family: 6`), probed over IPv6."""
    lab = iptables_lab
    results = lab.probe("client", f"[{VIP6}]:80", count=20)
    failed = [f"{r.outcome}: {r.detail}" for r in results if not r.ok]
    assert not failed, f"{failed}\n{lab.exec('node', 'ip6tables-nft-save').stdout}"
    served = Counter(r.served_by for r in results)
    assert set(served) == {"ep-a", "ep-b"}, dict(served)
    assert {r.server_saw for r in results} == {"fd00:10:180::2"}, "no SNAT from a pod, over IPv6 too"
