"""labs/metallb-policy-routing.yaml (scenario S0) with kube-proxy in IPVS mode, under a
kernel with IPVS and dummy links (the VM): the article's fix B (`ip rule from 3.3.3.3
lookup vrf2`) works as written there, because IPVS rewrites the pod's reply to 3.3.3.3
in its FORWARD hook and then routes it again from that source (net.ipv4.vs.snat_reroute,
default 1: ip_vs_route_me_harder → ip_route_me_harder). With snat_reroute=0 the reply
keeps the route chosen for the pod's source: main, towards VRF1, and the client times out.

The lab's own checks for both variants, then the kernel's evidence: `ipvsadm -Ln`/`-Lnc`,
the sysctls, `conntrack -L`, which interface's TX counter rose and tcpdump on the wire.

    ssh pod 192.168.1.1 ── node (kube-ipvs0 3.3.3.3, IPVS 3.3.3.3:22 → 192.168.1.1:22 masq)
                            ├─ eth1 ── vrf1                 (main's default)
                            └─ eth2 ── vrf2 ── client 10.10.10.10   (table vrf2)
"""

from __future__ import annotations

import json
import re

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks
from tests.vm.wire import tcpdump

LAB = "labs/metallb-policy-routing.yaml"
FIXB = "ipvs-fixb"
NOSR = "ipvs-nosr"  # snat_reroute=0
VIP, POD, CLIENT = "3.3.3.3", "192.168.1.1", "10.10.10.10"

test_ipvs_fixb = lab_checks(LAB, variant=FIXB, unique=True)
test_ipvs_nosr = lab_checks(LAB, variant=NOSR, unique=True)


@pytest.fixture(scope="module")
def fixb(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, variant=FIXB, unique=True)  # the lab lab_checks built above


@pytest.fixture(scope="module")
def nosr(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, variant=NOSR, unique=True)


# ---------------------------------------------------------------- the kernel's tools


def sysctl(lab: LabHandle, key: str) -> str:
    return lab.exec("node", "sysctl", "-n", key, check=True).stdout.strip()


def tx_packets(lab: LabHandle) -> dict[str, int]:
    """The node's TX packet counters of eth1 (VRF1) and eth2 (VRF2), from `ip -s link`."""
    out = lab.exec("node", "ip", "-s", "-j", "link", "show", check=True).stdout
    return {
        link["ifname"]: int(link["stats64"]["tx"]["packets"])
        for link in json.loads(out)
        if link["ifname"] in ("eth1", "eth2")
    }


def ipvsadm(lab: LabHandle, *args: str) -> str:
    return lab.exec("node", "ipvsadm", *args, check=True).stdout


def ipvs_conn(lab: LabHandle, sport: int) -> list[str]:
    """`ipvsadm -Lnc` on the node: the connection of the client's port sport."""
    return [line for line in ipvsadm(lab, "-Lnc").splitlines() if f"{CLIENT}:{sport} " in line]


def conntrack_lines(lab: LabHandle, sport: int) -> list[str]:
    out = lab.exec("node", "conntrack", "-L", "-p", "tcp", check=True).stdout
    return [line for line in out.splitlines() if f" sport={sport} " in line]


def evidence(lab: LabHandle, before: dict[str, int]) -> str:
    return (
        f"TX packets before {before}, after {tx_packets(lab)}\n"
        f"snat_reroute={sysctl(lab, 'net.ipv4.vs.snat_reroute')} conntrack={sysctl(lab, 'net.ipv4.vs.conntrack')}\n"
        f"ipvsadm -Ln:\n{ipvsadm(lab, '-Ln')}ipvsadm -Lnc:\n{ipvsadm(lab, '-Lnc')}"
        f"conntrack -L:\n{lab.exec('node', 'conntrack', '-L', check=True).stdout}"
    )


# ---------------------------------------------------------------- fix B works under IPVS


def test_fixb_the_reply_leaves_by_vrf2_rerouted_by_ipvs(fixb: LabHandle) -> None:
    """snat_reroute is at its default (the lab does not set it); the connection completes;
    every packet of it leaves by eth2, none by eth1; IPVS, not netfilter, did the NAT."""
    assert sysctl(fixb, "net.ipv4.vs.snat_reroute") == "1"  # the kernel's default, untouched
    table = ipvsadm(fixb, "-Ln")
    assert f"TCP  {VIP}:22 rr" in table and re.search(rf"-> {POD}:22\s+Masq\s+1\b", table), table

    before = tx_packets(fixb)
    with tcpdump(fixb, "node", "eth2", f"tcp and host {CLIENT}") as wire:
        r = fixb.probe("client", VIP, port=22)
    assert r.ok and (r.served_by, r.server_saw) == ("ssh", CLIENT), f"{r.detail}\n{evidence(fixb, before)}"
    s = r.sport
    assert s is not None
    after = tx_packets(fixb)
    why = evidence(fixb, before)
    assert after["eth1"] == before["eth1"], f"something left towards VRF1:\n{why}"
    assert after["eth2"] - before["eth2"] >= 3, f"the replies did not leave by eth2:\n{why}"  # SYN-ACK, data, FIN…
    text = "\n".join(wire)
    assert f"{VIP}.22 > {CLIENT}.{s}: Flags [S.]" in text, f"{text}\n{why}"
    assert f"{POD}.22 >" not in text, f"{text}\n{why}"  # never the pod's own address on the wire

    conn = ipvs_conn(fixb, s)
    assert len(conn) == 1 and f"{VIP}:22" in conn[0] and conn[0].rstrip().endswith(f"{POD}:22"), f"{conn}\n{why}"
    ct = conntrack_lines(fixb, s)
    want = f"src={CLIENT} dst={VIP} sport={s} dport=22 src={POD} dst={CLIENT} sport=22 dport={s} "
    assert len(ct) == 1 and want in ct[0], f"{ct}\n{why}"
    [entry] = fixb.conntrack("node", flow=r)
    assert not entry.dnat and not entry.snat, entry.text  # vs.conntrack=1 wrote the reply tuple; no netfilter NAT


def test_fixb_route_lookups_show_both_decisions(fixb: LabHandle) -> None:
    """The forward lookup IPVS corrects (pod source, main, eth1) and the output lookup it
    makes after rewriting the source (3.3.3.3, rule 100, vrf2, eth2)."""
    first = fixb.route_get("node", CLIENT, src=POD, iif="cni0")
    assert (first.dev, first.table) == ("eth1", 254), first.text
    again = fixb.route_get("node", CLIENT, src=VIP)
    assert (again.dev, again.table, again.via) == ("eth2", 102, "172.16.2.1"), again.text
    assert again.rule is not None and again.rule.priority == 100, again.text


def test_fixb_does_not_need_vs_conntrack(netlab_lab: LabFactory) -> None:
    """kube-proxy sets net.ipv4.vs.conntrack=1 (for its own masquerade rules); the re-route
    does not depend on it: with 0 the login works the same, IPVS's connection untracked."""
    lab = netlab_lab(LAB, variant=FIXB, unique=True)
    lab.exec("node", "sysctl", "-qw", "net.ipv4.vs.conntrack=0", check=True)
    before = tx_packets(lab)
    r = lab.probe("client", VIP, port=22)
    why = evidence(lab, before)
    assert r.ok and r.served_by == "ssh", f"{r.detail}\n{why}"
    assert r.sport is not None and len(ipvs_conn(lab, r.sport)) == 1, why
    assert tx_packets(lab)["eth1"] == before["eth1"], why


# ---------------------------------------------------------------- snat_reroute=0


def test_nosr_the_reply_leaves_towards_vrf1_as_the_vip(nosr: LabHandle) -> None:
    """The SYN-ACK is rewritten to 3.3.3.3 but leaves by eth1 (the route chosen for the
    pod's source); eth2 carries none of it; IPVS and conntrack stay in SYN_RECV."""
    assert sysctl(nosr, "net.ipv4.vs.snat_reroute") == "0"
    before = tx_packets(nosr)
    with (
        tcpdump(nosr, "node", "eth1", f"tcp and host {CLIENT}") as vrf1,
        tcpdump(nosr, "node", "eth2", f"tcp and src host {VIP}") as vrf2,
    ):
        r = nosr.probe("client", VIP, port=22, timeout=1.5)
    why = evidence(nosr, before)
    assert r.outcome == "timeout", f"{r.detail}\n{why}"
    s = r.sport
    assert s is not None
    assert tx_packets(nosr)["eth1"] > before["eth1"], why
    text = "\n".join(vrf1)
    assert f"{VIP}.22 > {CLIENT}.{s}: Flags [S.]" in text, f"{text}\n{why}"
    assert vrf2 == [], f"a reply left by eth2 after all: {vrf2}\n{why}"

    conn = ipvs_conn(nosr, s)
    assert len(conn) == 1 and " SYN_RECV " in conn[0] and conn[0].rstrip().endswith(f"{POD}:22"), f"{conn}\n{why}"
    ct = conntrack_lines(nosr, s)
    assert len(ct) == 1 and " SYN_RECV " in ct[0] and f"src={POD} dst={CLIENT} " in ct[0], f"{ct}\n{why}"


def test_turning_snat_reroute_on_fixes_it(netlab_lab: LabFactory) -> None:
    """The sysctl is the switch, live: `sysctl -w net.ipv4.vs.snat_reroute=1` on the node
    of the failing variant, and the next connection works, by eth2."""
    lab = netlab_lab(LAB, variant=NOSR, unique=True)
    assert lab.probe("client", VIP, port=22, timeout=0.5).outcome == "timeout"
    lab.exec("node", "sysctl", "-qw", "net.ipv4.vs.snat_reroute=1", check=True)
    before = tx_packets(lab)
    r = lab.probe("client", VIP, port=22)
    after = tx_packets(lab)
    why = evidence(lab, before)
    assert r.ok and (r.served_by, r.server_saw) == ("ssh", CLIENT), f"{r.detail}\n{why}"
    assert after["eth2"] - before["eth2"] >= 3, why
    # eth1 only carries the earlier connection's SYN-ACK retransmissions, not this one's
    assert r.sport is not None and " SYN_RECV " not in "".join(ipvs_conn(lab, r.sport)), why
