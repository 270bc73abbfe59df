"""`netlab check` on real labs (root): every kind of expectation, passing and failing for
the right reason, the report formats, exit codes, and the responders' lifetime.

One lab serves most tests. Its checks are rewritten between tests (checks are not part of
what is built, so no rebuild is needed — which is itself under test):

    client 10.1.0.2 ── eth1 router eth2/br0 10.2.0.1 ─┬─ server1 10.2.0.11 (tcp/8080 udp/53 http/80)
    fd01::2             fd01::1        fd02::1        └─ server2 10.2.0.12 (tcp/8080 tcp/9090)

The router DNATs the "service" 10.96.0.10:80 round-robin to both servers' 8080 and
masquerades client traffic to port 9090; it marks forwarded 8080 flows 0x42 and drops
port 7070. A rule sends traffic from 10.1.0.0/24 with fwmark 0x7 to table 100.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from netlab.json_output import schema
from netlab.probes.responders import is_running
from tests.kernel.conftest import LabFactory, LabFile, NetlabCli, namespaces_of, state_file

REPO = Path(__file__).resolve().parents[2]

NFT = """\
table ip nat {
  chain pre {
    type nat hook prerouting priority -100;
    ip daddr 10.96.0.10 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.2.0.11, 1 : 10.2.0.12 } : 8080
  }
  chain post {
    type nat hook postrouting priority 100;
    ip saddr 10.1.0.0/24 tcp dport 9090 masquerade
  }
}
table ip filter {
  chain forward {
    type filter hook forward priority 0;
    tcp dport 8080 ct mark set 0x42
    tcp dport 7070 drop
  }
}
"""


def base_lab(nft_path: Path) -> dict[str, Any]:
    icmp = {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0}
    return {
        "tables": {"special": 100},
        "nodes": {
            "client": {
                "sysctls": icmp,
                "links": {"eth0": {"peer": "router:eth1", "addresses": ["10.1.0.2/24", "fd01::2/64"]}},
                "routes": [{"to": "default", "via": "10.1.0.1"}, {"to": "default", "via": "fd01::1"}],
            },
            "router": {
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **icmp},
                "links": {
                    "eth1": {"addresses": ["10.1.0.1/24", "fd01::1/64"]},
                    "br0": {"kind": "bridge", "addresses": ["10.2.0.1/24", "fd02::1/64"]},
                    "v1": {"peer": "server1:eth0", "master": "br0"},
                    "v2": {"peer": "server2:eth0", "master": "br0"},
                },
                "routes": [{"to": "10.99.0.0/24", "via": "10.2.0.12", "table": "special"}],
                "rules": [{"priority": 100, "from": "10.1.0.0/24", "fwmark": "0x7", "table": "special"}],
                "exec": [["nft", "-f", str(nft_path)]],
            },
            "server1": {
                "serve": ["tcp/8080", "udp/53", "http/80"],
                "sysctls": icmp,
                "links": {"eth0": {"addresses": ["10.2.0.11/24", "fd02::11/64"]}},
                "routes": [{"to": "default", "via": "10.2.0.1"}, {"to": "default", "via": "fd02::1"}],
            },
            "server2": {
                "serve": ["tcp/8080", "tcp/9090"],
                "sysctls": icmp,
                "links": {"eth0": {"addresses": ["10.2.0.12/24", "fd02::12/64"]}},
                "routes": [{"to": "default", "via": "10.2.0.1"}, {"to": "default", "via": "fd02::1"}],
            },
        },
    }


class CheckLab:
    """The module's lab; `run(checks)` rewrites its checks and runs `netlab check --json`."""

    def __init__(self, lab: LabFile, spec: dict[str, Any], cli: NetlabCli) -> None:
        self.lab, self.spec, self.cli = lab, spec, cli

    def write(self, checks: list[dict[str, Any]]) -> None:
        self.lab.path.write_text(
            yaml.safe_dump({"name": self.lab.name, **self.spec, "checks": checks}, sort_keys=False)
        )

    def run(self, checks: list[dict[str, Any]], *args: str) -> tuple[int, dict[str, Any], str]:
        self.write(checks)
        r = self.cli("check", self.lab, "--json", *args)
        assert r.rc in (0, 1), f"netlab check failed to run (rc {r.rc}):\n{r.out}\n{r.err}"
        report = json.loads(r.out)
        Draft202012Validator(schema("check")).validate(report)  # every verdict this module sees keeps the contract
        return r.rc, report, r.err

    def verdicts(self, checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _, report, _ = self.run(checks)
        return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def checklab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[CheckLab]:
    d = tmp_path_factory.mktemp("checklab")
    nft = d / "router.nft"
    nft.write_text(NFT)
    factory = LabFactory(registry, d)
    spec = base_lab(nft)
    try:
        lab = factory(spec)
        r = netlab_cli("up", lab)
        assert r.rc == 0, r.err
        yield CheckLab(lab, spec, netlab_cli)
    finally:
        factory.cleanup()


def passed(v: dict[str, Any]) -> bool:
    return bool(v["passed"])


def why(v: dict[str, Any]) -> str:
    return "\n".join(v["reasons"] + v["evidence"])


# ---------------------------------------------------------------- probes


def test_probe_kinds_pass(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "tcp",
            "probe": {"from": "client", "to": "server1:8080"},
            "expect": {"served_by": "server1", "server_saw": "client"},
        },
        {"name": "udp", "probe": {"from": "client", "to": "server1", "proto": "udp", "port": 53}},
        {
            "name": "http",
            "probe": {"from": "client", "to": "server1", "proto": "http", "port": 80},
            "expect": {"served_by": "server1"},
        },
        {"name": "icmp", "probe": {"from": "client", "to": "server2"}},
        {"name": "icmp6", "probe": {"from": "client", "to": "server2", "family": 6}},
        {
            "name": "tcp6",
            "probe": {"from": "client", "to": "[fd02::12]:8080"},
            "expect": {"served_by": "server2", "server_saw": "fd01::2"},
        },
        {
            "name": "src",
            "probe": {"from": "router", "to": "server1:8080", "src": "10.1.0.1"},
            "expect": {"server_saw": "10.1.0.1"},
        },
    ]
    rc, report, _ = checklab.run(checks)
    bad = {c["name"]: why(c) for c in report["checks"] if not c["passed"]}
    assert rc == 0 and not bad, bad
    tcp = report["checks"][0]
    assert tcp["probes"][0]["served_by"] == "server1" and tcp["probes"][0]["server_saw"] == "10.1.0.2"
    assert tcp["kind"] == "probe" and "served by server1" in tcp["summary"]


def test_failure_outcomes_as_expected(checklab: CheckLab) -> None:
    checks = [
        {"name": "refused", "probe": {"from": "client", "to": "server1:9999"}, "expect": {"result": "refused"}},
        {
            "name": "dropped",
            "probe": {"from": "client", "to": "server1:7070", "timeout": 0.3},
            "expect": {"result": "timeout"},
        },
        {
            "name": "no route beyond the router",
            "probe": {"from": "client", "to": "203.0.113.9", "port": 80},
            "expect": {"result": "unreachable", "icmp": "net unreachable"},
        },
        {"name": "any failure", "probe": {"from": "client", "to": "server1:9998"}, "expect": {"result": "fail"}},
        {
            "name": "udp port unreachable",
            "probe": {"from": "client", "to": "server2:53", "proto": "udp"},
            "expect": {"result": "refused", "icmp": "port unreachable"},
        },
    ]
    v = checklab.verdicts(checks)
    assert all(passed(c) for c in v.values()), {n: why(c) for n, c in v.items() if not passed(c)}


def test_wrong_outcome_fails_with_reason(checklab: CheckLab) -> None:
    checks = [
        {"name": "expects ok but refused", "probe": {"from": "client", "to": "server1:9999"}},
        {
            "name": "expects failure but ok",
            "probe": {"from": "client", "to": "server1:8080"},
            "expect": {"result": "fail"},
        },
        {"name": "wrong server", "probe": {"from": "client", "to": "server1:8080"}, "expect": {"served_by": "server2"}},
    ]
    rc, report, _ = checklab.run(checks)
    assert rc == 1 and report["failed"] == 3
    v = {c["name"]: c for c in report["checks"]}
    assert v["expects ok but refused"]["reasons"][0].startswith("expected ok, saw refused: ")
    assert "connection refused" in v["expects ok but refused"]["reasons"][0].lower()
    assert v["expects failure but ok"]["reasons"][0].startswith("expected fail (any failure), saw ok")
    assert v["wrong server"]["reasons"] == [
        "expected only server2 to serve, but server1 did too (server1 1 of 1 probe)",
        "expected server2 to serve every probe, it served 0 of 1 (server1 1)",
    ]


def test_dnat_distribution_server_saw_and_conntrack(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "service spreads over both servers without SNAT",
            "probe": {"from": "client", "to": "10.96.0.10:80", "count": 20},
            "expect": {"served_by": {"server1": "30%", "server2": "30%"}, "server_saw": "client"},
            "conntrack": {
                "on": "router",
                "expect": {
                    "orig_src": "client",
                    "orig_dst": "10.96.0.10",
                    "orig_dport": 80,
                    "reply_src": ["server1", "server2"],
                    "reply_sport": 8080,
                    "reply_dst": "client",
                    "dnat": True,
                    "snat": False,
                    "mark": "0x42",
                    "zone": 0,
                },
            },
            "capture": {"on": "router:br0", "expect": {"src": "client", "dst": ["server1", "server2"]}},
        }
    ]
    v = checklab.verdicts(checks)["service spreads over both servers without SNAT"]
    assert passed(v), why(v)
    served = {p["served_by"] for p in v["probes"]}
    assert served == {"server1", "server2"}


def test_masquerade_seen_by_server_and_conntrack(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "masqueraded",
            "probe": {"from": "client", "to": "server2:9090"},
            "expect": {"server_saw": "10.2.0.1"},
            "conntrack": {"on": "router", "expect": {"snat": True, "dnat": False, "reply_dst": "10.2.0.1"}},
        },
        {
            "name": "wrongly expects no SNAT",
            "probe": {"from": "client", "to": "server2:9090"},
            "expect": {"server_saw": "client"},
            "conntrack": {"on": "router", "expect": {"snat": False}},
        },
    ]
    v = checklab.verdicts(checks)
    assert passed(v["masqueraded"]), why(v["masqueraded"])
    bad = v["wrongly expects no SNAT"]
    assert not passed(bad)
    assert bad["reasons"][0] == (
        "expected the server to see client, it saw 10.2.0.1 (router) — the client sent "
        "from 10.1.0.2 (client), so something on the way NATed it"
    )
    assert bad["reasons"][1].endswith("expected snat: false, the entry is SRC_NAT")
    assert any(e.startswith("conntrack in router: ") and "10.2.0.12" in e for e in bad["evidence"])


def test_conntrack_absent_where_nothing_tracks(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "server1 tracks nothing",
            "probe": {"from": "client", "to": "server1:8080"},
            "conntrack": {"on": "server1", "expect": {"entry": False}},
        },
        {
            "name": "wrongly expects an entry",
            "probe": {"from": "client", "to": "server1:8080"},
            "conntrack": {"on": "server1"},
        },
    ]
    v = checklab.verdicts(checks)
    assert passed(v["server1 tracks nothing"]), why(v["server1 tracks nothing"])
    assert "conntrack tracks only where netfilter uses it" in v["wrongly expects an entry"]["reasons"][0]


def test_capture_seen_and_not_seen(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "crosses v1",
            "probe": {"from": "client", "to": "server1:8080"},
            "capture": {"on": "router:v1", "expect": {"src": "client", "dst": "server1", "proto": "tcp"}},
        },
        {
            "name": "not on v2",
            "probe": {"from": "client", "to": "server1:8080"},
            "capture": {"on": "router:v2", "expect": {"seen": False}},
        },
        {
            "name": "wrongly expected on v2",
            "probe": {"from": "client", "to": "server1:8080"},
            "capture": {"on": "router:v2"},
        },
    ]
    v = checklab.verdicts(checks)
    assert passed(v["crosses v1"]), why(v["crosses v1"])
    assert passed(v["not on v2"]), why(v["not on v2"])
    assert v["wrongly expected on v2"]["reasons"][0].startswith(
        "expected the probe's packets on router:v2, saw none of them"
    )


# ---------------------------------------------------------------- routes and rules


def test_route_checks(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "connected",
            "route": {"on": "router", "get": "10.2.0.11"},
            "expect": {"type": "unicast", "dev": "br0", "prefsrc": "10.2.0.1", "table": "main"},
        },
        {
            "name": "via gateway",
            "route": {"on": "client", "get": "10.2.0.11"},
            "expect": {"dev": "eth0", "via": "10.1.0.1", "table": 254},
        },
        {"name": "local", "route": {"on": "router", "get": "10.1.0.1"}, "expect": {"type": "local", "table": "local"}},
        {
            "name": "marked traffic from the client uses table special",
            "route": {"on": "router", "get": "10.99.0.5", "from": "10.1.0.2", "iif": "eth1", "fwmark": "0x7"},
            "expect": {"table": "special", "via": "10.2.0.12", "dev": "br0"},
        },
        {"name": "unmarked has no route", "route": {"on": "router", "get": "10.99.0.5"}, "expect": {"type": "none"}},
        {"name": "ipv6", "route": {"on": "client", "get": "fd02::11"}, "expect": {"via": "fd01::1", "dev": "eth0"}},
        {"name": "wrong table", "route": {"on": "router", "get": "10.2.0.11"}, "expect": {"table": "special"}},
    ]
    v = checklab.verdicts(checks)
    bad = {n: why(c) for n, c in v.items() if not passed(c) and n != "wrong table"}
    assert not bad, bad
    assert v["wrong table"]["reasons"] == ["expected table special (100), the kernel used main (254)"]
    assert v["wrong table"]["evidence"][0].startswith("route get: ")


def test_rule_checks(checklab: CheckLab) -> None:
    checks = [
        {
            "name": "present",
            "rule": {"on": "router", "priority": 100, "from": "10.1.0.0/24", "fwmark": "0x7", "table": "special"},
        },
        {"name": "main", "rule": {"on": "router", "priority": 32766, "table": "main"}},
        {"name": "absent", "rule": {"on": "client", "table": "special"}, "expect": {"present": False}},
        {"name": "wrongly present", "rule": {"on": "router", "table": 100}, "expect": {"present": False}},
    ]
    v = checklab.verdicts(checks)
    assert all(passed(v[n]) for n in ("present", "main", "absent")), {n: why(c) for n, c in v.items()}
    assert v["wrongly present"]["reasons"][0].startswith("expected no such ip rule, found: 100:")


# ---------------------------------------------------------------- runner behaviour and reports


def test_wait_retries_until_budget(checklab: CheckLab) -> None:
    checks = [{"name": "never", "probe": {"from": "client", "to": "server1:9999", "timeout": 0.2}, "wait": 0.7}]
    v = checklab.verdicts(checks)["never"]
    assert not passed(v) and v["attempts"] >= 3 and v["seconds"] >= 0.6


def test_text_report_and_junit(checklab: CheckLab, tmp_path: Path) -> None:
    checklab.write(
        [
            {"name": "good one", "probe": {"from": "client", "to": "server1:8080"}},
            {"name": "bad one", "description": "must fail", "probe": {"from": "client", "to": "server1:9999"}},
        ]
    )
    junit = tmp_path / "report.xml"
    r = checklab.cli("check", checklab.lab, "--junit", junit)
    assert r.rc == 1
    assert "✓" in r.out and "✗" in r.out and "good one" in r.out
    assert "✗ bad one — must fail" in r.out
    assert "expected ok, saw refused" in r.out
    assert f"lab {checklab.lab.name}: 1 passed, 1 failed" in r.out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["bad one"].find("failure")
    assert failure is not None and "expected ok, saw refused" in (failure.get("message") or "")
    assert cases["good one"].find("failure") is None


def test_only_selects_checks(checklab: CheckLab) -> None:
    checks = [
        {"name": "alpha", "probe": {"from": "client", "to": "server1:8080"}},
        {"name": "beta", "probe": {"from": "client", "to": "server1:9999"}},
    ]
    rc, report, _ = checklab.run(checks, "--only", "ALPHA")
    assert rc == 0 and [c["name"] for c in report["checks"]] == ["alpha"]
    r = checklab.cli("check", checklab.lab, "--only", "gamma")
    assert r.rc == 2 and "no check of lab" in r.err and "alpha" in r.err


def test_check_by_name_uses_the_file_it_was_built_from(checklab: CheckLab) -> None:
    checklab.write([{"name": "by name", "probe": {"from": "client", "to": "server1:8080"}}])
    r = checklab.cli("check", checklab.lab.name, "--json")
    assert r.rc == 0, r.err
    assert [c["name"] for c in json.loads(r.out)["checks"]] == ["by name"]


def test_changed_lab_is_refused(checklab: CheckLab, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    spec = json.loads(json.dumps(checklab.spec))
    spec["nodes"]["client"]["links"]["eth0"]["mtu"] = 1400
    # Another file with the lab's name: the checks that judge the lab are its own file's.
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"name": checklab.lab.name, **spec, "checks": []}))
    r = netlab_cli("check", changed)
    assert r.rc == 2 and f"was built from {checklab.lab.path.resolve()}, not from {changed}" in r.err
    # The lab's own file, changed since: every key that differs is listed.
    original = checklab.lab.path.read_text()
    try:
        checklab.lab.path.write_text(yaml.safe_dump({"name": checklab.lab.name, **spec, "checks": []}))
        r = netlab_cli("check", checklab.lab.name)
        assert r.rc == 2 and "has changed since (other than its checks):" in r.err
        assert "  + nodes.client.links.eth0.mtu: 1400" in r.err
    finally:
        checklab.lab.path.write_text(original)


def test_not_up_and_bad_file(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = lab_file(
        {
            "nodes": {"a": {}},
            "checks": [{"name": "x", "route": {"on": "a", "get": "10.0.0.1"}, "expect": {"type": "none"}}],
        }
    )
    r = netlab_cli("check", lab)
    assert r.rc == 2 and f"lab {lab.name} is not up" in r.err
    lab.path.write_text(lab.path.read_text().replace("get: 10.0.0.1", "get: 10.0.0.300"))
    r = netlab_cli("check", lab)
    assert r.rc == 2 and "checks[0].route.get" in r.err and not namespaces_of(lab.name)


def test_check_up_builds_checks_and_removes(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    text = (REPO / "labs" / "docker-bridge.yaml").read_text().replace("name: docker-bridge", "name: @LAB@", 1)
    lab = lab_file(text)
    r = netlab_cli("check", "--up", lab)
    assert r.rc == 0, r.out + r.err
    assert "13 passed, 0 failed" in r.out
    assert not namespaces_of(lab.name) and not state_file(lab.name).exists()


# ---------------------------------------------------------------- responders' lifetime


def responder_pids(lab: str) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"netlab.probes.responder_server .*--lab {lab}$"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def serving_lab(lab_file: LabFactory) -> LabFile:
    return lab_file(
        {
            "nodes": {
                "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.3.0.1/24"]}}},
                "b": {"serve": ["tcp/80"], "links": {"eth0": {"addresses": ["10.3.0.2/24"]}}},
            }
        }
    )


def test_responders_live_with_the_lab(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = serving_lab(lab_file)
    assert netlab_cli("up", lab).rc == 0
    pids = json.loads(state_file(lab.name).read_text())["pids"]
    assert len(pids) == 1 and is_running(pids[0]) and responder_pids(lab.name) == pids
    assert netlab_cli("down", lab.name).rc == 0
    assert not is_running(pids[0]) and not responder_pids(lab.name)


def test_down_without_state_stops_responders(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = serving_lab(lab_file)
    assert netlab_cli("up", lab).rc == 0
    pid = json.loads(state_file(lab.name).read_text())["pids"][0]
    state_file(lab.name).unlink()
    assert netlab_cli("down", lab.name).rc == 0
    assert not is_running(pid) and not namespaces_of(lab.name)


def test_responder_failure_rolls_back(lab_file: LabFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab import lifecycle
    from netlab.errors import ApplyError
    from netlab.kernel.netlink import NetlinkDriver
    from netlab.probes.responders import ResponderError

    lab = serving_lab(lab_file)

    def refuse(*_a: Any, **_k: Any) -> int:
        raise ResponderError("cannot serve tcp/80 on node b (namespace x): Address already in use")

    monkeypatch.setattr(lifecycle, "start_responders", refuse)
    driver = NetlinkDriver()
    try:
        with pytest.raises(ApplyError, match="Address already in use"):
            lifecycle.up(lab.path, driver)
    finally:
        driver.close()
    assert not namespaces_of(lab.name) and not state_file(lab.name).exists()


def test_killed_up_leaves_down_able_responders(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    """`kill -9` of `up` after the responders started: `down` (from state) still ends them."""
    lab = serving_lab(lab_file)
    assert netlab_cli("up", lab).rc == 0
    pid = responder_pids(lab.name)[0]
    os.kill(pid, signal.SIGSTOP)  # a stuck responder must still be ended (SIGTERM, then SIGKILL)
    try:
        t0 = time.monotonic()
        assert netlab_cli("down", lab.name).rc == 0
        assert not is_running(pid), f"responder {pid} survived down ({time.monotonic() - t0:.1f} s)"
    finally:
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)
