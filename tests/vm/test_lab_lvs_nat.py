"""labs/lvs-nat.yaml — S1's LVS NAT experiment — under a kernel with IPVS (the VM): the
lab's own checks for the working lab and for both failing steps (its variants), and the
kernel's evidence the article shows: `ipvsadm -Lnc` and `conntrack -L` on the director
and the client, and what crosses the wire (tcpdump) when the director only DNATs.

    client 192.168.113.102 ─┐
    ds     192.168.113.101 ─┼─ switch br0     VIP 10.10.0.1:8410 on ds → rs 192.168.113.99:8080
    rs     192.168.113.99  ─┘
"""

from __future__ import annotations

import re

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks
from tests.vm.wire import tcpdump

LAB = "labs/lvs-nat.yaml"
CIP, DIP, RIP, VIP = "192.168.113.102", "192.168.113.101", "192.168.113.99", "10.10.0.1"
DNAT_ONLY = "dnat-only"
SNAT_NO_CT = "snat-without-conntrack"

test_lvs_nat = lab_checks(LAB, unique=True)
test_lvs_nat_dnat_only = lab_checks(LAB, variant=DNAT_ONLY, unique=True)
test_lvs_nat_snat_without_conntrack = lab_checks(LAB, variant=SNAT_NO_CT, unique=True)


@pytest.fixture(scope="module")
def works(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)  # the lab lab_checks built above


@pytest.fixture(scope="module")
def dnat_only(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, variant=DNAT_ONLY, unique=True)


@pytest.fixture(scope="module")
def snat_no_ct(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, variant=SNAT_NO_CT, unique=True)


# ---------------------------------------------------------------- the kernel's tools


def conntrack_lines(lab: LabHandle, node: str, sport: int) -> list[str]:
    """`conntrack -L` in node: the lines of the flow from client port sport."""
    out = lab.exec(node, "conntrack", "-L", "-p", "tcp", check=True).stdout
    return [line for line in out.splitlines() if f" sport={sport} " in line]


def ipvs_lines(lab: LabHandle, sport: int) -> list[str]:
    """`ipvsadm -Lnc` in the director: the connection of client port sport."""
    out = lab.exec("ds", "ipvsadm", "-Lnc", check=True).stdout
    return [line for line in out.splitlines() if f"{CIP}:{sport} " in line]


def masquerade_packets(lab: LabHandle) -> int:
    """The packet counter of the director's MASQUERADE rule (`iptables -t nat -L -v -x`)."""
    out = lab.exec("ds", "iptables-nft", "-t", "nat", "-L", "POSTROUTING", "-n", "-v", "-x", check=True).stdout
    rule = next(line for line in out.splitlines() if "MASQUERADE" in line)
    return int(rule.split()[0])


def invalid_packets(lab: LabHandle) -> int:
    """The counter of the client's `ct state invalid counter` rule."""
    out = lab.exec("client", "nft", "list", "chain", "inet", "client", "input", check=True).stdout
    found = re.search(r"ct state invalid counter packets (\d+)", out)
    assert found, out
    return int(found.group(1))


# ---------------------------------------------------------------- the working lab


def test_works_as_the_article_shows(works: LabHandle) -> None:
    """curl 10.10.0.1:8410 → the real server, which sees the director; the director's and
    the client's conntrack entries are the article's (§1.3), port for port."""
    r = works.probe("client", f"{VIP}:8410", proto="http")
    assert r.ok and (r.served_by, r.server_saw) == ("rs", DIP), r.detail
    s = r.sport
    assert s is not None

    table = works.exec("ds", "ipvsadm", "-Ln", check=True).stdout
    assert f"TCP  {VIP}:8410 rr" in table and re.search(rf"-> {RIP}:8080\s+Masq\s+1\b", table), table
    conn = ipvs_lines(works, s)
    assert len(conn) == 1 and f"{VIP}:8410" in conn[0] and conn[0].rstrip().endswith(f"{RIP}:8080"), conn

    ds = conntrack_lines(works, "ds", s)
    want_ds = f"src={CIP} dst={VIP} sport={s} dport=8410 src={RIP} dst={DIP} sport=8080 dport={s} "
    assert len(ds) == 1 and want_ds in ds[0], ds
    client = conntrack_lines(works, "client", s)
    want_client = f"src={CIP} dst={VIP} sport={s} dport=8410 src={VIP} dst={CIP} sport=8410 dport={s} "
    assert len(client) == 1 and want_client in client[0], client

    [entry] = works.conntrack("ds", flow=r)
    assert entry.snat and not entry.dnat, entry.text  # IPVS's DNAT is its own, not netfilter's
    assert masquerade_packets(works) >= 1
    assert works.exec("ds", "sysctl", "-n", "net.ipv4.vs.conntrack", check=True).stdout.strip() == "1"


# ---------------------------------------------------------------- step 1: DNAT only


def test_dnat_only_the_client_resets_the_real_servers_answer(dnat_only: LabHandle) -> None:
    """The real server answers the client directly; the client's conntrack calls that
    SYN-ACK invalid and its TCP resets it; its connection to the VIP never completes."""
    before = invalid_packets(dnat_only)
    with tcpdump(dnat_only, "client", "eth0", "tcp", settle=0.3) as wire:
        r = dnat_only.probe("client", f"{VIP}:8410", proto="http")
    assert r.outcome == "timeout", r.detail
    s = r.sport
    assert s is not None
    text = "\n".join(wire)
    assert f"{CIP}.{s} > {VIP}.8410: Flags [S]" in text, text
    assert f"{RIP}.8080 > {CIP}.{s}: Flags [S.]" in text, text  # straight from the real server
    assert f"{CIP}.{s} > {RIP}.8080: Flags [R]" in text, text  # the client resets it
    assert f"{VIP}.8410 > {CIP}.{s}" not in text, text  # nothing ever comes from the VIP
    assert invalid_packets(dnat_only) > before

    client = conntrack_lines(dnat_only, "client", s)
    assert len(client) == 1 and " SYN_SENT " in client[0] and "[UNREPLIED]" in client[0], client
    assert f"src={VIP} dst={CIP} sport=8410 dport={s} " in client[0], client
    conn = ipvs_lines(dnat_only, s)
    assert len(conn) == 1 and " SYN_RECV " in conn[0] and conn[0].rstrip().endswith(f"{RIP}:8080"), conn


def test_dnat_only_the_real_server_sees_the_client(dnat_only: LabHandle) -> None:
    with tcpdump(dnat_only, "rs", "eth0", "tcp port 8080", settle=0.3) as wire:
        r = dnat_only.probe("client", f"{VIP}:8410", proto="http")
    assert r.outcome == "timeout", r.detail
    text = "\n".join(wire)
    assert f"{CIP}.{r.sport} > {RIP}.8080: Flags [S]" in text, text
    assert f"{RIP}.8080 > {CIP}.{r.sport}: Flags [S.]" in text, text


# ---------------------------------------------------------------- step 2: SNAT, vs.conntrack=0


def test_snat_without_conntrack_the_rule_never_matches(snat_no_ct: LabHandle) -> None:
    """IPVS untracks what it sends (ip_vs_notrack): no conntrack entry on the director,
    the MASQUERADE rule's counter stays 0, the real server sees the client."""
    with tcpdump(snat_no_ct, "rs", "eth0", "tcp port 8080", settle=0.3) as wire:
        r = snat_no_ct.probe("client", f"{VIP}:8410", proto="http")
    assert r.outcome == "timeout", r.detail
    s = r.sport
    assert s is not None
    assert f"{CIP}.{s} > {RIP}.8080: Flags [S]" in "\n".join(wire), wire
    assert conntrack_lines(snat_no_ct, "ds", s) == []
    assert masquerade_packets(snat_no_ct) == 0  # every probe of this lab so far went past it
    conn = ipvs_lines(snat_no_ct, s)
    assert len(conn) == 1 and " SYN_RECV " in conn[0], conn
    assert snat_no_ct.exec("ds", "sysctl", "-n", "net.ipv4.vs.conntrack", check=True).stdout.strip() == "0"


def test_turning_vs_conntrack_on_fixes_it(netlab_lab: LabFactory) -> None:
    """The article's last move, live: `sysctl -w net.ipv4.vs.conntrack=1` on the director
    of the failing step, and the next connection works (earlier ones stay untracked)."""
    lab = netlab_lab(LAB, variant=SNAT_NO_CT, unique=True)
    assert lab.probe("client", f"{VIP}:8410", proto="http", timeout=0.5).outcome == "timeout"
    lab.exec("ds", "sysctl", "-qw", "net.ipv4.vs.conntrack=1", check=True)
    r = lab.probe("client", f"{VIP}:8410", proto="http")
    assert r.ok and (r.served_by, r.server_saw) == ("rs", DIP), r.detail
    assert masquerade_packets(lab) == 1
