"""The kernel-feature smoke labs, under a kernel that has the features (the VM): their
own checks as tests, and what the kernel shows about the objects they build."""

from __future__ import annotations

import subprocess

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

IPVS = "labs/ipvs-smoke.yaml"
VRF = "labs/vrf-smoke.yaml"

test_ipvs_smoke = lab_checks(IPVS, unique=True)
test_vrf_smoke = lab_checks(VRF, unique=True)


@pytest.fixture(scope="module")
def ipvs(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(IPVS, unique=True)


@pytest.fixture(scope="module")
def vrf(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(VRF, unique=True)


def test_ipvs_service_as_the_kernel_shows_it(ipvs: LabHandle) -> None:
    results = ipvs.probe("client", "192.0.2.100:80", count=4)
    assert {r.served_by for r in results} == {"rs1", "rs2"}, [r.detail for r in results]
    table = ipvs.exec("director", "ipvsadm", "-Ln", check=True).stdout
    assert "TCP  192.0.2.100:80 rr" in table, table
    for rs in ("10.1.0.11:8080", "10.1.0.12:8080"):
        assert any(rs in line and "Masq" in line for line in table.splitlines()), table
    conns = ipvs.exec("director", "ipvsadm", "-Lnc", check=True).stdout
    assert "192.0.2.2" in conns and "192.0.2.100:80" in conns, conns


def test_ipvs_without_route_back_fails(netlab_lab: LabFactory) -> None:
    """LVS-NAT needs the real servers to answer through the director: without that route
    the client's connection is never completed (the reply goes nowhere)."""
    lab = netlab_lab(IPVS, unique=True)
    lab.exec("rs1", "ip", "route", "del", "default", check=True)
    lab.exec("rs2", "ip", "route", "del", "default", check=True)
    r = lab.probe("client", "192.0.2.100:80", timeout=0.5)
    assert r.outcome == "timeout", r.detail


def test_vrf_device_as_the_kernel_shows_it(vrf: LabHandle) -> None:
    detail = vrf.exec("router", "ip", "-d", "link", "show", "blue", check=True).stdout
    assert "vrf table 10" in detail, detail
    for ifname in ("eth1", "eth2"):
        assert "master blue" in vrf.exec("router", "ip", "link", "show", ifname, check=True).stdout
    assert "master" not in vrf.exec("router", "ip", "link", "show", "eth3", check=True).stdout
    table = vrf.exec("router", "ip", "route", "show", "table", "10", check=True).stdout
    assert "10.1.0.0/24 dev eth1" in table and "10.2.0.0/24 dev eth2" in table, table


def test_netem_delays_a_link(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(
        {
            "name": "netem",
            "nodes": {
                "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.9.0.1/24"]}}},
                "b": {"serve": ["tcp/80"], "links": {"eth0": {"addresses": ["10.9.0.2/24"]}}},
            },
        },
        unique=True,
    )
    before = lab.probe("a", "b:80")
    lab.exec("a", "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "100ms", check=True)
    after = lab.probe("a", "b:80")
    assert before.ok and after.ok, (before.detail, after.detail)
    assert after.rtt_ms is not None and after.rtt_ms >= 95, after.detail


def test_dummy_link_holds_a_local_address(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(
        {
            "name": "dummy",
            "nodes": {
                "node": {"links": {"kube-ipvs0": {"kind": "dummy", "addresses": ["10.96.0.10/32"]}}},
            },
        },
        unique=True,
    )
    kind = subprocess.run(
        ["ip", "-n", lab.ns("node"), "-d", "link", "show", "kube-ipvs0"], capture_output=True, text=True, check=True
    ).stdout
    assert "dummy" in kind, kind
    answer = lab.route_get("node", "10.96.0.10")
    # Table main, not local: until a namespace has an ip rule of its own, the kernel keeps
    # the local table merged into main and reports main for local routes too.
    assert (answer.type, answer.dev, answer.table) == ("local", "lo", 254), answer.text
