"""labs/host-gw.yaml (scenario S3) on the real kernel: its own checks, one test each, and
the property host-gw depends on: the nodes share one L2 segment."""

from __future__ import annotations

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

test_host_gw = lab_checks("labs/host-gw.yaml", unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module("labs/host-gw.yaml", unique=True)


def test_every_pod_reaches_every_pod_with_its_own_address(lab: LabHandle) -> None:
    pods = ["web-a", "web-b", "web-c", "tracer"]
    for src in pods:
        for dst in pods:
            if src != dst:
                r = lab.probe(src, dst, port=8080)
                assert r.ok and r.served_by == dst and r.server_saw == lab.address(src), r.detail


def test_no_tunnel_device_on_the_nodes(lab: LabHandle) -> None:
    out = lab.exec("node1", "ip", "-d", "link", "show", "type", "vxlan", check=True).stdout
    assert out.strip() == "", out


def test_without_the_route_a_remote_pod_subnet_is_lost(netlab_lab: LabFactory) -> None:
    lab = netlab_lab("labs/host-gw.yaml", unique=True)
    lab.exec("node1", "ip", "route", "del", "10.244.2.0/24", check=True)
    r = lab.probe("web-a", "web-c", port=8080, timeout=0.5)
    # node1 has no route (and no default) for web-c's subnet: it answers ICMP net unreachable.
    assert r.outcome == "unreachable" and "net unreachable" in (r.detail or ""), (r.outcome, r.detail)
    route = lab.route_get("node1", lab.address("web-c"))
    assert route.type == "none" and route.errno is not None, route.text  # no route: node1 has no default


def test_traceroute_first_hops(lab: LabHandle) -> None:
    """As the article's traceroute from 10.244.2.4: node3's cni0, then node1's eth0, then the pod."""
    hops = [lab.probe("tracer", "web-a", port=8080, ttl=ttl, timeout=0.5) for ttl in (1, 2, 3)]
    assert [h.icmp_from for h in hops[:2]] == ["10.244.2.1", "192.168.49.2"], [h.detail for h in hops]
    assert hops[2].ok and hops[2].served_by == "web-a", hops[2].detail
