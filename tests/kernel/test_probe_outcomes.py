"""What each probe outcome means, as docs/lab-file.md ("What a probe's outcome means")
tells it, on a real kernel (root): every row of that table is a check here.

    client 10.5.0.2, fd05::2 ── router ── server 10.6.0.2, fd06::2 (tcp/80, udp/53)

The server's input chain answers port 81 with an ICMP port unreachable, 82 with admin
prohibited, 83 with a TCP reset, and drops 86; the router rejects forwarded port 87
(`reject`: its default is port unreachable) and holds an unreachable route to
203.0.113.0/24. A TCP probe answered by an ICMP port unreachable is `refused`, as a reset
is, but only the ICMP error carries `icmp:` and `icmp_from:`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel.conftest import LabFactory, NetlabCli
from tests.kernel.test_check import CheckLab, why

SERVER_NFT = """\
table inet input {
  chain input {
    type filter hook input priority 0;
    tcp dport 81 reject with icmpx port-unreachable
    tcp dport 82 reject with icmpx admin-prohibited
    tcp dport 83 reject with tcp reset
    meta l4proto { tcp, udp } th dport 86 drop
  }
}
"""
ROUTER_NFT = """\
table inet forward {
  chain forward {
    type filter hook forward priority 0;
    tcp dport 87 reject
  }
}
"""
ICMP_LIMITS = {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0}


def outcomes_lab() -> dict[str, Any]:
    return {
        "nodes": {
            "client": {
                "sysctls": ICMP_LIMITS,
                "links": {"eth0": {"peer": "router:eth1", "addresses": ["10.5.0.2/24", "fd05::2/64"]}},
                "routes": [{"to": "default", "via": "10.5.0.1"}, {"to": "default", "via": "fd05::1"}],
            },
            "router": {
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **ICMP_LIMITS},
                "links": {
                    "eth1": {"addresses": ["10.5.0.1/24", "fd05::1/64"]},
                    "eth2": {"peer": "server:eth0", "addresses": ["10.6.0.1/24", "fd06::1/64"], "mtu": 1280},
                },
                "routes": [{"to": "203.0.113.0/24", "type": "unreachable"}],
                "nftables": ROUTER_NFT,
            },
            "server": {
                "serve": ["tcp/80", "udp/53"],
                "sysctls": ICMP_LIMITS,
                "links": {"eth0": {"addresses": ["10.6.0.2/24", "fd06::2/64"], "mtu": 1280}},
                "routes": [{"to": "default", "via": "10.6.0.1"}, {"to": "default", "via": "fd06::1"}],
                "nftables": SERVER_NFT,
            },
        },
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[CheckLab]:
    factory = LabFactory(registry, tmp_path_factory.mktemp("outcomes"))
    spec = outcomes_lab()
    try:
        built = factory(spec)
        r = netlab_cli("up", built)
        assert r.rc == 0, r.err
        yield CheckLab(built, spec, netlab_cli)
    finally:
        factory.cleanup()


def _check(name: str, port: int, expect: dict[str, Any], family: int, **probe: Any) -> dict[str, Any]:
    return {
        "name": f"{name} (IPv{family})",
        "probe": {"from": "client", "to": "server", "family": family, "port": port, "timeout": 0.5, **probe},
        "expect": expect,
    }


@pytest.mark.parametrize("family", [4, 6])
def test_each_outcome_as_documented(lab: CheckLab, family: int) -> None:
    server = "10.6.0.2" if family == 4 else "fd06::2"
    router = "10.5.0.1" if family == 4 else "fd05::1"
    checks = [
        _check("ok: a handshake", 80, {"result": "ok", "served_by": "server"}, family),
        _check("ok: a datagram back", 53, {"result": "ok", "served_by": "server"}, family, proto="udp"),
        _check(
            "refused: TCP answered by ICMP port unreachable",
            81,
            {"result": "refused", "icmp": "port unreachable", "icmp_from": "server"},
            family,
        ),
        _check(
            "refused: UDP answered by ICMP port unreachable",
            54,
            {"result": "refused", "icmp": "port unreachable", "icmp_from": "server"},
            family,
            proto="udp",
        ),
        _check("refused: a reset", 83, {"result": "refused", "icmp": {"not": "port unreachable"}}, family),
        _check("refused: nothing listens", 84, {"result": "refused"}, family),
        _check(
            "refused: rejected on the way",
            87,
            {"result": "refused", "icmp": "port unreachable", "icmp_from": router},
            family,
        ),
        _check("unreachable: admin prohibited", 82, {"result": "unreachable", "icmp": "admin prohibited"}, family),
        # the router's link to the server has MTU 1280: a bigger datagram is answered by
        # ICMP fragmentation needed (packet too big), and a TCP stream adapts to it
        _check(
            "unreachable: too big for the next link",
            53,
            {"result": "unreachable", "icmp": "fragmentation needed" if family == 4 else "packet too big"},
            family,
            proto="udp",
            payload=1400,
        ),
        _check("ok: a TCP stream fits itself", 80, {"result": "ok", "served_by": "server"}, family, payload=1400),
        _check("timeout: dropped", 86, {"result": "timeout"}, family),
        _check("fail: any failure", 86, {"result": "fail"}, family),
    ]
    if family == 4:
        checks.append(
            {
                "name": "unreachable: a router's unreachable route (IPv4)",
                "probe": {"from": "client", "to": "203.0.113.9", "port": 80, "timeout": 2},
                "expect": {"result": "unreachable", "icmp": "host unreachable", "icmp_from": "router"},
            }
        )
    verdicts = lab.verdicts(checks)
    bad = {name: why(v) for name, v in verdicts.items() if not v["passed"]}
    assert not bad, bad
    probe = {name.split(" (")[0]: v["probes"][0] for name, v in verdicts.items()}
    # a reset and an ICMP port unreachable are both `refused`; only the ICMP error says who sent it
    port_unreachable = probe["refused: TCP answered by ICMP port unreachable"]
    assert (port_unreachable["icmp_from"], port_unreachable["outcome"]) == (server, "refused")
    assert port_unreachable["detail"].startswith(f"port 81/tcp is closed at {server}: ICMP port unreachable")
    for reset in ("refused: a reset", "refused: nothing listens"):
        assert probe[reset]["icmp"] is None and probe[reset]["icmp_from"] is None, probe[reset]
        assert probe[reset]["detail"].startswith("connection refused by "), probe[reset]
    assert probe["timeout: dropped"]["icmp"] is None


def test_icmp_words_on_a_reset_fail_in_words(lab: CheckLab) -> None:
    """`icmp: port unreachable` does not fit a reset: refused, but no ICMP error came."""
    verdicts = lab.verdicts([_check("reset", 83, {"result": "refused", "icmp": "port unreachable"}, 4)])
    [v] = verdicts.values()
    assert not v["passed"]
    assert v["reasons"] == ["expected an ICMP error saying 'port unreachable', saw no ICMP error"], v["reasons"]
