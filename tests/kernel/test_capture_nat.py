"""`capture:` expectations follow a probe through NAT that rewrites its ports and ICMP ids
(root, real namespaces).

    client 10.1.0.2 ── eth1 router eth2 10.2.0.1 ── server 10.2.0.11 (tcp/8080, udp/53)

The router masquerades everything from 10.1.0.0/24 `fully-random`, as kube-proxy's
nftables mode does: the client's port (and ICMP echo id) is replaced by a random one on
the server's side. Before conntrack's reply tuple was used, the checks below reported
"saw none of the probe's packets" while listing exactly those packets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.kernel.conftest import LabFactory, LabFile, NetlabCli

MASQUERADE = """\
table ip nat {
  chain post {
    type nat hook postrouting priority 100;
    ip saddr 10.1.0.0/24 oifname "eth2" masquerade fully-random
  }
}
"""

SPEC: dict[str, Any] = {
    "nodes": {
        "client": {
            "links": {"eth0": {"peer": "router:eth1", "addresses": ["10.1.0.2/24"]}},
            "routes": [{"to": "default", "via": "10.1.0.1"}],
        },
        "router": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {
                "eth1": {"addresses": ["10.1.0.1/24"]},
                "eth2": {"peer": "server:eth0", "addresses": ["10.2.0.1/24"]},
            },
            "nftables": MASQUERADE,
        },
        "server": {
            "serve": ["tcp/8080", "udp/53"],
            "links": {"eth0": {"addresses": ["10.2.0.11/24"]}},
        },
    },
}


@pytest.fixture(scope="module")
def natlab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[LabFile]:
    factory = LabFactory(registry, tmp_path_factory.mktemp("natlab"))
    try:
        lab = factory(SPEC)
        r = netlab_cli("up", lab)
        assert r.rc == 0, r.err
        yield lab
    finally:
        factory.cleanup()


def run(lab: LabFile, cli: NetlabCli, checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    lab.path.write_text(yaml.safe_dump({"name": lab.name, **SPEC, "checks": checks}, sort_keys=False))
    r = cli("check", lab, "--json")
    assert r.rc in (0, 1), r.err
    return {c["name"]: c for c in json.loads(r.out)["checks"]}


def test_capture_after_fully_random_masquerade(natlab: LabFile, netlab_cli: NetlabCli) -> None:
    behind = {"on": "server:eth0", "expect": {"src": "router", "dst": "server"}}
    checks = [
        {"name": f"{proto} masqueraded", "probe": {"from": "client", "to": "server", **how}, "capture": behind}
        for proto, how in (
            ("tcp", {"port": 8080, "count": 3}),
            ("udp", {"proto": "udp", "port": 53}),
            ("icmp", {"count": 3}),
        )
    ]
    checks.append(
        {
            "name": "not on the client's side",
            "probe": {"from": "client", "to": "server:8080"},
            "capture": {"on": "client:eth0", "expect": {"src": "router"}},
        }
    )
    verdicts = run(natlab, netlab_cli, checks)
    for name in ("tcp masqueraded", "udp masqueraded", "icmp masqueraded"):
        v = verdicts[name]
        assert v["passed"], (name, v["reasons"], v["evidence"])
        assert v["probes"][0]["server_saw"] in (None, "10.2.0.1")
    wrong = verdicts["not on the client's side"]
    # the client's own packets were recognised (not "saw none"): they just carry the client's address
    assert wrong["reasons"] == [
        "no packet of the probe on client:eth0 matches: expected src router, saw 10.1.0.2 (client)"
    ], wrong


def test_seen_false_catches_rewritten_packets(natlab: LabFile, netlab_cli: NetlabCli) -> None:
    v = run(
        natlab,
        netlab_cli,
        [
            {
                "name": "hidden",
                "probe": {"from": "client", "to": "server:8080"},
                "capture": {"on": "router:eth2", "expect": {"seen": False}},
            }
        ],
    )["hidden"]
    assert not v["passed"]
    assert v["reasons"][0].startswith("expected none of the probe's packets on router:eth2, saw "), v["reasons"]
    shown = [line for line in v["evidence"] if line.startswith("on router:eth2: ")]
    assert shown and all("10.2.0.1." in line for line in shown), v["evidence"]  # the rewritten packets, as evidence


def test_rewrite_really_changed_the_port(natlab: LabFile) -> None:
    """The premise: the server sees another port than the client's (else the test proves nothing)."""
    from netlab.probes.flow import ProbeRequest, probe_many

    [r] = probe_many([ProbeRequest(natlab.ns("client"), "tcp", "10.2.0.11", 8080, sport=41234)], workers=1)
    assert r.ok, r.detail
    assert r.server_saw == "10.2.0.1"
    assert r.server_saw_port != 41234
