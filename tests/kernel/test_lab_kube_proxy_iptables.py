"""labs/kube-proxy-iptables.yaml (scenario S4: a ClusterIP in kube-proxy's iptables mode,
IPv6, the article's addresses) on the real kernel: the lab's own checks for the lab and
its `no-hairpin` variant, the rules and conntrack entries the article shows, and `netlab
status` listing the cluster's services, endpoints and pods."""

from __future__ import annotations

import json
import subprocess

import pytest
from jsonschema import Draft202012Validator

from netlab.json_output import schema
from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks
from tests.kernel.conftest import cli_argv, cli_env

LAB = "labs/kube-proxy-iptables.yaml"
VIP = "fd00:14ba:9ea:8800::ffff:1d22"

test_kube_proxy_iptables = lab_checks(LAB, unique=True)
test_kube_proxy_iptables_no_hairpin = lab_checks(LAB, variant="no-hairpin", unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def test_node_has_the_articles_chains(lab: LabHandle) -> None:
    rules = lab.exec("node1", "ip6tables-save", "-t", "nat", check=True).stdout
    svc = next(
        line.split()[-1]
        for line in rules.splitlines()
        if line.startswith("-A KUBE-SERVICES") and f"-d {VIP}/128" in line
    )
    assert svc.startswith("KUBE-SVC-"), rules
    chain = [line for line in rules.splitlines() if line.startswith(f"-A {svc} ")]
    # as the article lists it: MARK-MASQ for sources outside the pod /64, then the first SEP
    # with probability 0.5, then the second
    assert "! -s fd01:14ba:9ea:8800::/64" in chain[0] and "-j KUBE-MARK-MASQ" in chain[0], chain
    assert "--probability 0.5000000000" in chain[1] and "-j KUBE-SEP-" in chain[1], chain
    assert "statistic" not in chain[2] and "-j KUBE-SEP-" in chain[2], chain
    for sep in (line.split()[-1] for line in chain[1:]):
        mine = [line for line in rules.splitlines() if line.startswith(f"-A {sep} ")]
        assert "-j KUBE-MARK-MASQ" in mine[0] and "-j DNAT --to-destination [fd01:14ba:9ea:8800:" in mine[1], mine


def test_conntrack_on_the_clients_node(lab: LabHandle) -> None:
    flow = lab.probe("monkey", f"[{VIP}]:8080")
    assert flow.ok, flow.detail
    entries = lab.conntrack("node1", flow)
    assert len(entries) == 1, lab.exec("node1", "conntrack", "-L", "-f", "ipv6").stdout
    entry = entries[0]
    assert (entry.orig.src, entry.orig.dst, entry.orig.dport) == (lab.address("monkey"), VIP, 8080), entry.text
    assert entry.reply.src == lab.address(flow.served_by or "?"), entry.text
    assert entry.reply.dst == lab.address("monkey"), entry.text
    assert entry.dnat and not entry.snat, entry.text


def test_without_the_hairpin_masquerade_the_pod_sees_its_own_source(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(LAB, variant="no-hairpin", unique=True)
    rules = lab.exec("node2", "ip6tables-save", "-t", "nat", check=True).stdout
    own = "-s fd01:14ba:9ea:8800:b950:1075:b3ba:de17/128"
    assert not any(own in line and "mooncake-provider-0:" in line for line in rules.splitlines()), rules
    r = lab.probe("mooncake-provider-0", "[fd00:14ba:9ea:8800::ffff:1d23]:8080", timeout=0.5)
    assert r.outcome == "timeout", r.detail
    entry = lab.conntrack("node2", r)
    assert entry and entry[0].dnat and not entry[0].snat, [e.text for e in entry]


def test_status_shows_services_endpoints_and_pods(lab: LabHandle) -> None:
    argv = ["status", lab.name]
    shown = subprocess.run(cli_argv(*argv), capture_output=True, text=True, timeout=120, env=cli_env(), check=True)
    assert (
        f"    monkey-off-ds-2714/mooncake-provider  {VIP}  http-8080 8080/tcp → "
        "mooncake-provider-0 (node2) [fd01:14ba:9ea:8800:b950:1075:b3ba:de17]:8080, "
        "mooncake-provider-1 (node2) [fd01:14ba:9ea:8800:b3ec:e045:7b9a:e493]:8080"
    ) in shown.stdout.splitlines(), shown.stdout
    assert "    monkey-off-ds-2714/monkey on node1  fd01:14ba:9ea:8800:3c70:dc10:db2a:3340" in shown.stdout, (
        shown.stdout
    )
    doc = json.loads(
        subprocess.run(
            cli_argv(*argv, "--json"), capture_output=True, text=True, timeout=120, env=cli_env(), check=True
        ).stdout
    )
    Draft202012Validator(schema("status")).validate(doc)
    [mine] = doc["labs"]
    cluster = mine["cluster"]
    assert cluster["proxy_mode"] == "iptables"
    provider = next(s for s in cluster["services"] if s["name"] == "monkey-off-ds-2714/mooncake-provider")
    assert provider["cluster_ip"] == VIP
    [port] = provider["ports"]
    assert (port["name"], port["protocol"], port["port"], port["node_port"]) == ("http-8080", "tcp", 8080, None)
    assert {(e["pod"], e["node"], e["port"]) for e in port["endpoints"]} == {
        ("mooncake-provider-0", "node2", 8080),
        ("mooncake-provider-1", "node2", 8080),
    }
    assert {p["pod"]: (p["namespace"], p["node"]) for p in cluster["pods"]} == {
        "monkey": ("monkey-off-ds-2714", "node1"),
        "mooncake-provider-0": ("monkey-off-ds-2714", "node2"),
        "mooncake-provider-1": ("monkey-off-ds-2714", "node2"),
    }
