"""Datapath tests for labs/docker-bridge.yaml.
Run as root: sudo .venv/bin/pytest tests/kernel/test_example_docker_bridge.py

The example of docs/pytest.md and the README, kept here so it is run with the suite."""

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

# The lab file's own checks: one test per check (ids = check names), one lab per module.
test_docker_bridge = lab_checks("labs/docker-bridge.yaml", unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    # Same arguments as lab_checks above: the same lab, built once for the module.
    return netlab_lab_module("labs/docker-bridge.yaml", unique=True)


def test_c1_gets_nginx_on_c2_without_nat(lab: LabHandle) -> None:
    r = lab.probe("c1", "c2", proto="http", port=80)
    assert r.ok, r.detail
    assert (r.http_status, r.served_by, r.server_saw) == (200, "c2", lab.address("c1"))


def test_outside_reaches_c3_through_the_host(lab: LabHandle) -> None:
    route = lab.route_get("outside", lab.address("c3"))
    assert (route.dev, route.via) == ("eth0", "198.51.100.1")
    results = lab.probe("outside", "c3:8080", count=5)
    assert {r.served_by for r in results} == {"c3"}


def test_a_dead_veth_cuts_c1_off(netlab_lab: LabFactory) -> None:
    lab = netlab_lab("labs/docker-bridge.yaml", unique=True)  # a copy of its own: this test breaks it
    lab.exec("host", "ip", "link", "set", "veth1", "down", check=True)
    assert lab.probe("c1", "172.17.0.1", timeout=0.5).outcome in ("timeout", "unreachable")


def test_lan_reaches_nginx_through_the_published_port(lab: LabHandle) -> None:
    # docker run -p 8080:80: the host's chain DOCKER DNATs 192.168.1.10:8080 to c2:80
    r = lab.probe("lan", "192.168.1.10:8080", proto="http")
    assert r.ok, r.detail
    assert (r.served_by, r.server_saw) == ("c2", lab.address("lan"))  # DNAT only: no SNAT
    [entry, *_] = lab.conntrack("host", flow=r)
    assert (entry.dnat, entry.snat) == (True, False), entry.text
    assert (entry.reply.src, entry.reply.sport) == (lab.address("c2"), 80), entry.text


def test_a_marked_post_crosses_the_published_port_intact(lab: LabHandle) -> None:
    # 1400 bytes as an HTTP POST body, EF-marked: nginx's stand-in says what it received
    r = lab.probe("lan", "192.168.1.10:8080", proto="http", dscp=46, payload=1400)
    assert r.ok and r.intact, r.delivery
    assert (r.sent, r.tos) == (1400, 0xB8)


def test_containers_reach_the_lan_masqueraded(lab: LabHandle) -> None:
    # POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE: the LAN sees the host
    r = lab.probe("c1", "lan:80", proto="http")
    assert r.ok, r.detail
    assert r.server_saw == "192.168.1.10"
    assert lab.conntrack("host", flow=r)[0].snat
