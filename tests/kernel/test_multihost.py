"""One lab over several hosts, for real: simulated hosts (netlab.multihost.simulate), each
a network namespace on a shared underlay with its own PID and mount namespace running
Debian's sshd; the coordinator runs `netlab … --hosts` in a namespace of its own and
reaches them through real ssh. Nothing is made in the machine's own network namespace;
the hosts' /run is their own, so the labs here never meet the machine's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from netlab import json_output
from netlab.multihost.inventory import DEFAULT_TUNNEL_PORT
from netlab.multihost.simulate import SimulatedHost, SimulatedHosts

NETLAB = str(Path(sys.executable).with_name("netlab"))
REPO = Path(__file__).resolve().parents[2]
FLANNEL = str(REPO / "labs" / "flannel-vxlan.yaml")

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedHosts]:
    with SimulatedHosts(3, netlab=NETLAB) as hosts:
        yield hosts
    left = [n for n in os.listdir("/run/netns") if n.startswith(hosts.prefix)]
    assert not left, f"simulated hosts' namespaces left behind: {left}"


def netlab(sim: SimulatedHosts, *args: str) -> subprocess.CompletedProcess[str]:
    return sim.coordinator([NETLAB, *args], timeout=300)


def lab_namespaces(sim: SimulatedHosts, host: SimulatedHost) -> list[str]:
    return sorted(sim.inside(host, ["ls", "/run/netns"]).stdout.split())


def tunnel_sockets(sim: SimulatedHosts, host: SimulatedHost) -> list[str]:
    """UDP sockets on the tunnel port in the host's own namespace (the only footprint there)."""
    return [
        line for line in sim.inside(host, ["ss", "-Huan"]).stdout.splitlines() if f":{DEFAULT_TUNNEL_PORT} " in line
    ]


def no_tunnel_sockets(sim: SimulatedHosts, host: SimulatedHost, within: float = 10.0) -> bool:
    """The tunnels' sockets go with the namespaces, which the kernel cleans up after `down`
    returns (netns cleanup runs in a workqueue): wait for it."""
    deadline = time.monotonic() + within
    while tunnel_sockets(sim, host):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def host_links(sim: SimulatedHosts, host: SimulatedHost) -> list[str]:
    return sorted(line.split()[0].split("@")[0] for line in sim.inside(host, ["ip", "-br", "link"]).stdout.splitlines())


def tcp_reply(
    sim: SimulatedHosts, host: SimulatedHost, lab: str, node: str, address: str, port: int
) -> dict[str, object]:
    """What a responder answers a TCP connection from `node` (on `host`) with."""
    code = f"import socket;s=socket.create_connection(({address!r},{port}),timeout=5);print(s.makefile().readline())"
    done = sim.ssh(host, [NETLAB, "exec", lab, node, "--", "python3", "-c", code])
    assert done.returncode == 0, done.stderr
    reply: dict[str, object] = json.loads(done.stdout)
    return reply


def test_flannel_over_three_hosts(sim: SimulatedHosts) -> None:
    h1, h2, _ = sim.hosts
    plan = netlab(sim, "up", "--dry-run", "--hosts", sim.inventory, FLANNEL)
    assert (
        "#   h1 (10.250.0.2): node1, pod1, pod2\n#   h2 (10.250.0.3): node2, pod3, pod4\n#   h3 (10.250.0.4): underlay"
        in plan.stdout
    )
    before = {h.name: host_links(sim, h) for h in sim.hosts}
    up = netlab(sim, "up", "--hosts", sim.inventory, FLANNEL)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith("lab flannel-vxlan is up on h1 (3 nodes), h2 (3 nodes), h3 (1 node), 2 links")
        assert lab_namespaces(sim, h2) == ["flannel-vxlan.node2", "flannel-vxlan.pod3", "flannel-vxlan.pod4"]
        # pod1 (h1) → pod4 (h2): flannel's VXLAN inside node1's eth0, itself a tunnel to the switch on h3
        reply = tcp_reply(sim, h1, "flannel-vxlan", "pod1", "10.244.1.3", 8080)
        assert (reply["served_by"], reply["peer"]) == ("pod4", "10.244.0.2")
        eth0 = sim.inside(h2, ["ip", "-n", "flannel-vxlan.node2", "-d", "link", "show", "eth0"]).stdout
        assert (
            "vxlan id" in eth0
            and "remote 10.250.0.4 local 10.250.0.3" in eth0
            and f"dstport {DEFAULT_TUNNEL_PORT}" in eth0
        )
        for host in sim.hosts:  # in the hosts' own namespaces: one UDP socket, nothing else
            assert len(tunnel_sockets(sim, host)) == 1, host.name
            assert host_links(sim, host) == before[host.name]
        check_all_pass(sim)
        trace_over_the_tunnels(sim)
        again = netlab(sim, "up", "--hosts", sim.inventory, FLANNEL)
        assert again.returncode == 0 and "is already up on" in again.stdout, again.stderr
    finally:
        down = netlab(sim, "down", "--hosts", sim.inventory, "flannel-vxlan")
    assert down.returncode == 0, down.stderr
    assert "h3: lab flannel-vxlan is down: removed 1 namespace" in down.stdout
    for host in sim.hosts:
        assert lab_namespaces(sim, host) == [] and no_tunnel_sockets(sim, host)
        assert sim.inside(host, ["ls", "/run/netlab/multihost"]).stdout == ""


def check_all_pass(sim: SimulatedHosts) -> None:
    """flannel-vxlan's checks over the hosts (probes from h1, captures on h1, routes on
    h1 and h2), by the lab's name alone: the coordinator's record has the file and inventory."""
    junit = sim.dir / "report.xml"
    done = netlab(sim, "check", "flannel-vxlan", "--json", "--junit", str(junit))
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == 0, [(c["name"], c["reasons"]) for c in report["checks"] if not c["passed"]]
    assert report["passed"] == 8 and report["failed"] == 0
    underlay = next(c for c in report["checks"] if c["name"].startswith("on node1's underlay"))
    assert "192.168.49.2" in underlay["summary"] or underlay["passed"]
    assert 'tests="8"' in junit.read_text() and 'failures="0"' in junit.read_text()
    text = netlab(sim, "check", "--hosts", sim.inventory, FLANNEL, "--only", "UDP crosses")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "UDP crosses the overlay too" in text.stdout and "lab flannel-vxlan: 1 passed, 0 failed" in text.stdout


def trace_over_the_tunnels(sim: SimulatedHosts) -> None:
    """`netlab trace` by the lab's name: pod1 and node1 traced on h1, node2 and pod4 on h2,
    one walk in the packets' order, there and back, over the hosts' tunnels."""
    done = netlab(sim, "trace", "flannel-vxlan", "--from", "pod1", "--to", "pod4:8080", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    walk = json.loads(done.stdout)
    assert walk["ok"] and walk["died"] is None
    visits = [e["node"] for e in walk["events"]]
    order = [n for i, n in enumerate(visits) if i == 0 or visits[i - 1] != n]
    # the SYN to pod4 (h2) and the SYN-ACK back to pod1 (h1), each crossing the hosts'
    # tunnels, flannel's outer packets over the underlay's bridge
    way = ["pod1", "node1", "underlay", "node2", "pod4", "node2", "underlay", "node1", "pod1"]
    assert order[:9] == way, "\n".join(
        str((e["node"], e["chain"], e["src"], e["dst"], e["iif"], e["oif"], e["ttl"])) for e in walk["events"]
    )
    assert [e["seq"] for e in walk["events"]] == list(range(len(visits)))
    into_pod4 = next(e for e in walk["events"] if e["node"] == "pod4")
    assert (into_pod4["src"], into_pod4["dst"], into_pod4["iif"]) == ("10.244.0.2", "10.244.1.3", "eth0")
    text = netlab(sim, "trace", "flannel-vxlan", "--from", "pod1", "--to", "10.244.1.3", "--proto", "icmp")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "node2" in text.stdout and "pod4" in text.stdout
    for host in sim.hosts:  # every temporary trace table is gone again
        for ns in lab_namespaces(sim, host):
            tables = sim.inside(host, ["ip", "netns", "exec", ns, "nft", "list", "tables"]).stdout
            assert "netlab-trace-" not in tables, (host.name, ns, tables)


PAIR_CHECKS = """
checks:
  - name: y reaches x, seen arriving on x's end of the tunnel
    probe: {from: y, to: x, port: 80}
    expect: {served_by: x, server_saw: y}
    capture: {on: "x:eth0", expect: {src: y, dst: x, proto: tcp, direction: in}}
  - name: a wrong expectation fails with its reason
    probe: {from: x, to: y, port: 81}
    expect: {result: ok}
  - name: x routes y's address onto the tunnel
    route: {on: x, get: 10.9.0.2}
    expect: {dev: eth0}
"""


def pair_lab(tmp_path: Path, y_exec: str = "", checks: str = "") -> str:
    """x on h1, y on h2, a veth between them (then a tunnel); y may run a command."""
    path = tmp_path / "pair.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: mh-pair
            nodes:
              x:
                host: h1
                links: {{eth0: {{peer: "y:eth0", addresses: [10.9.0.1/24]}}}}
                serve: [tcp/80]
              y:
                host: h2
                links: {{eth0: {{addresses: [10.9.0.2/24]}}}}
                {y_exec}
            """
        )
        + checks
    )
    return str(path)


def test_check_across_hosts_captures_on_the_far_host_and_reports_failures(sim: SimulatedHosts, tmp_path: Path) -> None:
    lab = pair_lab(tmp_path, checks=PAIR_CHECKS)
    before = netlab(sim, "check", "--hosts", sim.inventory, lab)
    assert before.returncode == 1, before.stderr
    assert "cannot check lab mh-pair:\n  host h1 (10.250.0.2): lab mh-pair is not up there" in before.stderr
    assert f"`netlab up --hosts {sim.inventory} {lab}` builds or updates it" in before.stderr
    up = netlab(sim, "up", "--hosts", sim.inventory, lab)
    try:
        assert up.returncode == 0, up.stderr
        done = netlab(sim, "check", "mh-pair", "--json")
        verdicts = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert done.returncode == 1, done.stderr
        far = verdicts["y reaches x, seen arriving on x's end of the tunnel"]
        assert far["passed"], far["reasons"]
        wrong = verdicts["a wrong expectation fails with its reason"]
        assert not wrong["passed"] and wrong["summary"] == "tcp 10.9.0.2:81: refused"
        assert wrong["reasons"] == ["expected ok, saw refused: connection refused by 10.9.0.2:81"], wrong["reasons"]
        assert verdicts["x routes y's address onto the tunnel"]["passed"]
        (tmp_path / "pair.yaml").write_text(Path(lab).read_text().replace("10.9.0.2/24", "10.9.0.3/24"))
        changed = netlab(sim, "check", "mh-pair")
        assert changed.returncode == 1
        assert "host h2 (10.250.0.3): its part of lab mh-pair was built from another version of" in changed.stderr
    finally:
        down = netlab(sim, "down", "mh-pair")  # by name: the record has the inventory
    assert down.returncode == 0, down.stderr
    assert "h2: lab mh-pair is down" in down.stdout
    gone = netlab(sim, "check", "--hosts", sim.inventory, "mh-pair")
    assert gone.returncode == 2 and "lab mh-pair was not built over hosts from this machine" in gone.stderr


def test_check_up_trace_and_watch_over_hosts(sim: SimulatedHosts, tmp_path: Path) -> None:
    """`check --up --trace` builds the lab on its hosts, traces the failed check's probe
    from x (h1) to y (h2) and back, and takes the lab down; `check --watch` runs the
    checks of a lab up over hosts again and again until Ctrl-C."""
    lab = pair_lab(tmp_path, checks=PAIR_CHECKS)
    done = netlab(sim, "check", "--up", "--hosts", sim.inventory, lab, "--trace", "--json")
    assert done.stdout, done.stderr
    verdicts = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert done.returncode == 1, done.stderr
    wrong = verdicts["a wrong expectation fails with its reason"]
    assert not wrong["passed"] and wrong["trace"] is not None, wrong
    visits = [e["node"] for e in wrong["trace"]["events"]]
    assert [n for i, n in enumerate(visits) if i == 0 or visits[i - 1] != n] == ["x", "y", "x"], visits
    drops = wrong["trace"]["kernel"]["drops"]  # from h2, where y refused the connection
    assert drops and (drops[0]["reason"], drops[0]["dev"]) == ("NO_SOCKET", "eth0"), wrong["trace"]["kernel"]
    assert verdicts["y reaches x, seen arriving on x's end of the tunnel"]["trace"] is None  # passed: not traced
    for host in sim.hosts:
        assert lab_namespaces(sim, host) == [] and no_tunnel_sockets(sim, host)
    assert not (sim.dir / "state" / "netlab" / "hosts" / "mh-pair.json").exists()  # down removed the record

    up = netlab(sim, "up", "--hosts", sim.inventory, lab)
    assert up.returncode == 0, up.stderr
    watch = subprocess.Popen(
        sim.coordinator_argv([NETLAB, "check", "mh-pair", "--watch", "--interval", "0.5"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=sim.env,
    )
    again = re.compile(r"\d\d:\d\d:\d\d lab mh-pair: 2 passed, 1 failed in")
    seen: list[str] = []
    stop = threading.Timer(120, watch.kill)  # a watch that never runs again fails, not hangs
    stop.start()
    try:
        assert watch.stdout is not None
        while not (seen and again.match(seen[-1])) and (line := watch.stdout.readline()):
            seen.append(line)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
    finally:
        stop.cancel()
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        down = netlab(sim, "down", "mh-pair")
    assert down.returncode == 0, down.stderr
    assert watch.returncode == 130, err
    assert "lab mh-pair: 2 passed, 1 failed in" in "".join(seen)  # the first run's report
    assert again.match(seen[-1]), seen  # and a line for the run after it
    assert "check --watch ended by SIGINT after" in err


def test_a_host_that_fails_rolls_back_every_host(sim: SimulatedHosts, tmp_path: Path) -> None:
    h1, h2, _ = sim.hosts
    up = netlab(sim, "up", "--hosts", sim.inventory, pair_lab(tmp_path, 'exec: [[sh, -c, "echo no >&2; exit 3"]]'))
    assert up.returncode == 1, up.stderr
    assert "up of lab mh-pair failed on 1 host:\n  h2: " in up.stderr and "exit" in up.stderr
    assert "taken down again on h1, h2" in up.stderr
    assert lab_namespaces(sim, h1) == [] == lab_namespaces(sim, h2)
    assert no_tunnel_sockets(sim, h1)


def test_a_host_with_another_netlab_builds_nothing_and_every_host_is_rolled_back(
    sim: SimulatedHosts, tmp_path: Path
) -> None:
    """Each host checks netlab's version in the session that builds (no round trip of its
    own first): a host with another netlab refuses, is named with the fix, and the host
    that built is taken down again."""
    h1, h2, _ = sim.hosts
    other = tmp_path / "old-netlab"
    other.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "netlab, version 0.0.9"; exit 0; fi\n'
        'echo "Error: No such option: --expect-version" >&2; exit 2\n'
    )
    other.chmod(0o755)
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        Path(sim.inventory)
        .read_text()
        .replace(f"h2: {{ansible_host: {h2.address}}}", f"h2: {{ansible_host: {h2.address}, netlab_command: {other}}}")
    )
    up = netlab(sim, "up", "--hosts", str(inventory), pair_lab(tmp_path))
    assert up.returncode == 1, up.stderr
    assert "up of lab mh-pair failed on 1 host:\n  host h2 has netlab 0.0.9, this machine " in up.stderr, up.stderr
    assert "\n  taken down again on h1\n" in up.stderr + "\n", up.stderr
    assert lab_namespaces(sim, h1) == [] == lab_namespaces(sim, h2)


def test_a_host_that_does_not_end_is_named_with_its_step_and_every_host_rolled_back(
    sim: SimulatedHosts, tmp_path: Path
) -> None:
    """The coordinator's wait for each host is bounded (NETLAB_HOSTS_TIMEOUT): a host whose
    up goes on past it is stopped, named with the step it was at, and every host is
    rolled back (its own up undoes its part when its session ends)."""
    h1, h2, _ = sim.hosts
    argv = sim.coordinator_argv([NETLAB, "up", "--hosts", sim.inventory, pair_lab(tmp_path, "exec: [[sleep, '60']]")])
    up = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**sim.env, "NETLAB_HOSTS_TIMEOUT": "4"})
    assert up.returncode == 1, up.stderr
    assert "h2: no end within 4 s (NETLAB_HOSTS_TIMEOUT), at: its netlab up building its part; stopped" in up.stderr
    assert "taken down again on h1, h2" in up.stderr, up.stderr
    deadline = time.monotonic() + 30
    while lab_namespaces(sim, h1) or lab_namespaces(sim, h2):
        assert time.monotonic() < deadline, (lab_namespaces(sim, h1), lab_namespaces(sim, h2))
        time.sleep(0.1)


def up_with_sshd_killed(sim: SimulatedHosts, host: SimulatedHost, lab: str) -> tuple[int, str]:
    """`up --hosts` of the pair lab, `host`'s sshd killed once its part runs its exec:
    the coordinator's exit code and stderr."""
    coordinator = subprocess.Popen(
        ["ip", "netns", "exec", sim.coordinator_ns, NETLAB, "up", "--hosts", sim.inventory, lab],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "mh-pair.y" not in lab_namespaces(sim, host):  # the host is building
            assert coordinator.poll() is None and time.monotonic() < deadline, coordinator.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # into the exec
        sim.kill_sshd(host)
        _, err = coordinator.communicate(timeout=120)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
    return coordinator.returncode, err


def test_sshd_killed_mid_up_rolls_back_every_host(sim: SimulatedHosts, tmp_path: Path) -> None:
    h1, h2, _ = sim.hosts
    code, err = up_with_sshd_killed(sim, h2, pair_lab(tmp_path, "exec: [[sleep, '60']]"))
    assert code == 1, err
    assert "h2: the connection was lost" in err
    assert "taken down again on h1; host h2 could not be cleaned" in err and "once it is back" in err
    assert lab_namespaces(sim, h1) == []
    deadline = time.monotonic() + 30  # h2's own up saw its session end and undid its part
    while lab_namespaces(sim, h2):
        assert time.monotonic() < deadline, lab_namespaces(sim, h2)
        time.sleep(0.1)
    sim.restart_sshd(h2)
    down = netlab(sim, "down", "--hosts", sim.inventory, "mh-pair")
    assert down.returncode == 0, down.stderr


def test_down_with_a_host_unreachable_then_again(sim: SimulatedHosts, tmp_path: Path) -> None:
    h1, h2, _ = sim.hosts
    lab = pair_lab(tmp_path)
    up = netlab(sim, "up", "--hosts", sim.inventory, lab)
    assert up.returncode == 0, up.stderr
    assert tcp_reply(sim, h2, "mh-pair", "y", "10.9.0.1", 80)["served_by"] == "x"
    sim.set_reachable(h2, False)
    try:
        down = netlab(sim, "down", "--hosts", sim.inventory, lab)
    finally:
        sim.set_reachable(h2, True)
    assert down.returncode == 1
    assert "h2: not taken down:" in down.stderr
    assert "lab mh-pair is down on every host but h2; run `netlab down mh-pair --hosts" in down.stderr
    assert "h1: lab mh-pair is down: removed 1 namespace" in down.stdout
    assert "h3: lab mh-pair was not up" in down.stdout
    assert lab_namespaces(sim, h1) == [] and lab_namespaces(sim, h2) == ["mh-pair.y"]
    again = netlab(sim, "down", "--hosts", sim.inventory, "mh-pair")
    assert again.returncode == 0, again.stderr
    assert "h2: lab mh-pair is down: removed 1 namespace" in again.stdout
    assert lab_namespaces(sim, h2) == [] and no_tunnel_sockets(sim, h2)


def test_status_and_exec_over_hosts(sim: SimulatedHosts, tmp_path: Path) -> None:
    lab = pair_lab(tmp_path)
    up = netlab(sim, "up", "--hosts", sim.inventory, lab)
    try:
        assert up.returncode == 0, up.stderr
        shown = netlab(sim, "status", "mh-pair", "--format", "tsv")  # by name: the record has the inventory
        assert shown.returncode == 0, shown.stderr
        rows = [line.split("\t") for line in shown.stdout.splitlines()]
        assert rows[0][:4] == ["host", "lab", "node", "interface"]
        assert [r[0:5] for r in rows[1:]] == [
            ["h1", "mh-pair", "x", "eth0", "vxlan"],
            ["h2", "mh-pair", "y", "eth0", "vxlan"],
        ]
        doc = json.loads(netlab(sim, "status", "mh-pair", "--json").stdout)["labs"][0]
        assert (doc["status"], doc["nodes"]["y"]["host"], doc["nodes"]["y"]["namespace"]) == ("up", "h2", "mh-pair.y")
        assert [link["addresses"] for link in doc["nodes"]["y"]["links"] if link["name"] == "eth0"] == [
            [{"address": "10.9.0.2/24", "family": 4}]
        ]
        text = netlab(sim, "status", "mh-pair")
        assert "lab mh-pair — up — " in text.stdout and "responders on h1: PID" in text.stdout
        ran = netlab(sim, "exec", "mh-pair", "y", "--", "sh", "-c", "ip -br -4 addr show eth0; exit 7")
        assert ran.returncode == 7, ran.stderr
        assert "10.9.0.2/24" in ran.stdout
        each = netlab(sim, "exec", "mh-pair", "--all", "--json", "--", "sh", "-c", "ip -br -4 addr show eth0; exit 3")
        runs = valid_json("exec", each)["nodes"]
        assert each.returncode == 3, each.stderr
        assert [(r["node"], r["host"], r["exit"]) for r in runs] == [("x", "h1", 3), ("y", "h2", 3)]
        assert "10.9.0.1/24" in runs[0]["stdout"] and "10.9.0.2/24" in runs[1]["stdout"]
        glob = netlab(sim, "exec", "mh-pair", "[xy]", "--", "ip", "-br", "-4", "addr", "show", "eth0")
        assert glob.returncode == 0, glob.stderr
        lines = glob.stdout.splitlines()
        assert lines[0].startswith("x | eth0") and "10.9.0.1/24" in lines[0], glob.stdout
        assert lines[1].startswith("y | eth0") and "10.9.0.2/24" in lines[1], glob.stdout
        sim.set_reachable(sim.host("h2"), False)
        try:
            partial = netlab(sim, "status", "mh-pair", "--format", "tsv")
            cut = netlab(sim, "exec", "mh-pair", "--all", "--json", "--", "true")
        finally:
            sim.set_reachable(sim.host("h2"), True)
        runs = valid_json("exec", cut)["nodes"]
        assert cut.returncode == 255 and [(r["node"], r["exit"]) for r in runs] == [("x", 0), ("y", 255)]
        assert runs[1]["stderr"].startswith("host h2: "), runs[1]
        assert partial.returncode == 1
        assert "host h2: not reachable:" in partial.stderr
        assert "h2\tmh-pair\ty\t—\t\tnamespace missing" in partial.stdout
    finally:
        down = netlab(sim, "down", "mh-pair")
    assert down.returncode == 0, down.stderr


def valid_json(command: str, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The command's one JSON document on stdout, valid against its shipped schema."""
    doc: dict[str, Any] = json.loads(done.stdout)
    assert doc["schema"] == f"netlab/{command}/v1", done.stdout
    Draft202012Validator(json_output.schema(command)).validate(doc)
    return doc


def two_hosts(sim: SimulatedHosts) -> str:
    """The simulation's inventory without h3: automatic placement then has h1 and h2 only."""
    path = sim.dir / "two-hosts.yaml"
    lines = Path(sim.inventory).read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.strip().startswith("h3:")))
    return str(path)


def pinned(tmp_path: Path, lab: Path, pins: dict[str, str]) -> str:
    """A copy of `lab` with `host:` on the given nodes (top-level or cluster nodes)."""
    text = lab.read_text()
    for node, host in pins.items():
        for indent in ("  ", "    "):
            text = text.replace(f"\n{indent}{node}:\n", f"\n{indent}{node}:\n{indent}  host: {host}\n", 1)
            text = text.replace(f"\n{indent}{node}: {{}}\n", f"\n{indent}{node}: {{host: {host}}}\n", 1)
    path = tmp_path / lab.name
    path.write_text(text)
    return str(path)


def up_check_down(sim: SimulatedHosts, inventory: str, lab: str, name: str) -> dict[str, object]:
    """up over the hosts, check (JSON), down; the report."""
    up = netlab(sim, "up", "--hosts", inventory, lab)
    try:
        assert up.returncode == 0, up.stderr
        done = netlab(sim, "check", name, "--json")
        assert done.stdout, done.stderr
        report: dict[str, object] = json.loads(done.stdout)
        failed = [(c["name"], c["reasons"]) for c in report["checks"] if not c["passed"]]  # type: ignore[attr-defined]
        assert done.returncode == 0 and not failed, failed
    finally:
        down = netlab(sim, "down", name)
    assert down.returncode == 0, down.stderr
    for host in sim.hosts:
        assert lab_namespaces(sim, host) == [] and no_tunnel_sockets(sim, host)
    return report


def test_kube_proxy_iptables_over_two_hosts(sim: SimulatedHosts, tmp_path: Path) -> None:
    """An IPv6 cluster with iptables-mode services, node1 on h1 and node2 on h2: the
    ClusterIP's DNAT, the pod-to-pod VXLAN, over IPv4 tunnels between the hosts."""
    lab = pinned(tmp_path, REPO / "labs" / "kube-proxy-iptables.yaml", {"node1": "h1", "node2": "h2"})
    inventory = two_hosts(sim)
    plan = netlab(sim, "up", "--dry-run", "--hosts", inventory, lab)
    assert plan.returncode == 0, plan.stderr
    assert (
        "#   h1 (10.250.0.2): underlay, node1*, monkey*\n#   h2 (10.250.0.3): node2*, mooncake-provider-0*"
        in plan.stdout
    )
    report = up_check_down(sim, inventory, lab, "kube-proxy-iptables")
    assert report["passed"] == len(report["checks"]) > 3  # type: ignore[arg-type]


def test_docker_bridge_with_the_outside_machine_on_another_host(sim: SimulatedHosts, tmp_path: Path) -> None:
    """The docker host and its containers on h1, the machine outside on h2: published
    ports, masquerade and the outside's route to the containers cross the tunnel."""
    pins = {node: "h1" for node in ("host", "c1", "c2", "c3", "lan")} | {"outside": "h2"}
    lab = pinned(tmp_path, REPO / "labs" / "docker-bridge.yaml", pins)
    inventory = two_hosts(sim)
    plan = netlab(sim, "up", "--dry-run", "--hosts", inventory, lab)
    assert plan.returncode == 0, plan.stderr
    assert "#   h2 (10.250.0.3): outside*" in plan.stdout
    report = up_check_down(sim, inventory, lab, "docker-bridge")
    assert report["passed"] == len(report["checks"]) > 5  # type: ignore[arg-type]


def test_flannel_scale_over_three_hosts(sim: SimulatedHosts) -> None:
    """labs/flannel-scale.yaml as it is — 10 nodes × 20 pods and the underlay switch, 211
    namespaces — placed automatically over three hosts (each node with its pods), passes
    every check: pod-to-pod probes between every ordered pair of nodes, most of them
    crossing two of the hosts' tunnels, the routes, and the VXLAN capture on node1."""
    up = netlab(sim, "up", "--hosts", sim.inventory, str(REPO / "labs" / "flannel-scale.yaml"))
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith("lab flannel-scale is up on h1 (84 nodes), h2 (64 nodes), h3 (63 nodes)")
        assert [len(lab_namespaces(sim, h)) for h in sim.hosts] == [84, 64, 63]
        assert "flannel-scale.underlay" in lab_namespaces(sim, sim.host("h2"))
        done = netlab(sim, "check", "flannel-scale", "--json")
        assert done.stdout, done.stderr
        report = valid_json("check", done)
        failed = [(c["name"], c["reasons"]) for c in report["checks"] if not c["passed"]]
        assert done.returncode == 0 and not failed, failed
        assert report["passed"] == len(report["checks"]) > 100
    finally:
        down = netlab(sim, "down", "flannel-scale")
    assert down.returncode == 0, down.stderr
    for host in sim.hosts:
        assert lab_namespaces(sim, host) == [] and no_tunnel_sockets(sim, host, within=30)


def test_doctor_over_hosts(sim: SimulatedHosts) -> None:
    """Every host reachable as root with this netlab; this kernel lacks IPVS, VRF, netem and
    dummy (exit 3); the tunnels' port is open between each pair — until h2 drops it."""
    done = netlab(sim, "doctor", "--hosts", sim.inventory, "--json")
    assert done.returncode in (0, 3), done.stdout + done.stderr
    found = {(f["where"], f["check"]): f for f in valid_json("doctor", done)["findings"]}
    for name in ("h1", "h2", "h3"):
        netlab_there = found[(name, "netlab")]
        assert netlab_there["ok"] and netlab_there["hosts"] == [name], netlab_there
        assert netlab_there["detail"].startswith("reachable as root, netlab ")
    for a, b in (("h1", "h2"), ("h1", "h3"), ("h2", "h3")):
        tunnel = found[(f"{a} ↔ {b}", "tunnel")]
        assert tunnel["ok"] and tunnel["hosts"] == [a, b], tunnel
    h2 = sim.host("h2")
    drop = "add table inet doctortest { chain input { type filter hook input priority 0; udp dport 4792 drop; }; }"
    assert sim.inside(h2, ["nft", drop]).returncode == 0
    try:
        blocked = netlab(sim, "doctor", "--hosts", sim.inventory)
    finally:
        sim.inside(h2, ["nft", "delete table inet doctortest"])
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    rows = {line.split("  ")[0].strip(): line for line in blocked.stdout.splitlines() if "↔" in line}
    assert "✓" in rows["h1 ↔ h3"] and "✗" in rows["h1 ↔ h2"] and "✗" in rows["h2 ↔ h3"], blocked.stdout
    assert "UDP 4792 is not open between them" in rows["h1 ↔ h2"]
    for host in sim.hosts:
        assert lab_namespaces(sim, host) == [] and no_tunnel_sockets(sim, host)


def agent_calls(
    sim: SimulatedHosts, host: SimulatedHost, calls: list[tuple[str, dict[str, Any]]], between: Any
) -> list[dict[str, Any]]:
    """`netlab host-agent` on host over ssh: the calls answered one by one, `between()` run
    after the first answer; each reply in order."""
    argv = sim.coordinator_argv(
        ["ssh", "-F", str(sim.dir / "ssh_config"), host.address, "--", sim.host_netlab, "host-agent"]
    )
    agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=sim.env)
    assert agent.stdin is not None and agent.stdout is not None
    replies = []
    try:
        for i, (call, args) in enumerate(calls):
            agent.stdin.write(json.dumps({"id": i, "call": call, "args": args}) + "\n")
            agent.stdin.flush()
            replies.append(json.loads(agent.stdout.readline()))
            if i == 0:
                between()
    finally:
        agent.stdin.close()
        agent.wait(timeout=60)
        agent.stdout.close()
    return replies


def test_kernel_drops_and_dead_responders_across_hosts(sim: SimulatedHosts, tmp_path: Path) -> None:
    """The kernel's drop reasons come from the host that owns the namespace: a trace from x
    (h1) to a closed port of y (h2) names y's NO_SOCKET drop, in on its end of the tunnel;
    h2's agent records every task's drops of the lab's interfaces while packets arrive
    over the wire (here a connection from a process on h1 that is no agent's). A responder
    process killed on h1 is named by `check` (y's probe to x fails because of it) and by
    `status`, from h1's own health of it."""
    h1, h2, _ = sim.hosts
    lab = pair_lab(tmp_path, checks=PAIR_CHECKS)
    up = netlab(sim, "up", "--hosts", sim.inventory, lab)
    try:
        assert up.returncode == 0, up.stderr
        done = netlab(sim, "trace", "mh-pair", "--from", "x", "--to", "y:81", "--json")
        assert done.returncode in (0, 1), done.stderr
        kernel = json.loads(done.stdout)["kernel"]
        assert kernel["unavailable"] is None, kernel
        assert {"reason": "NO_SOCKET", "dev": "eth0"}.items() <= kernel["drops"][0].items(), kernel["drops"]
        text = netlab(sim, "trace", "mh-pair", "--from", "x", "--to", "y:81")
        assert "the kernel dropped it in y (mh-pair.y), in on eth0: NO_SOCKET" in text.stdout, text.stdout

        connect = "import socket\ntry: socket.create_connection(('10.9.0.2', 82), timeout=2)\nexcept OSError: pass"
        replies = agent_calls(
            sim,
            h2,
            [
                ("drops_open", {"namespaces": ["mh-pair.y"], "addresses": ["10.9.0.1", "10.9.0.2"]}),
                ("drops_close", {"drops": 1}),
            ],
            lambda: sim.ssh(h1, [sim.host_netlab, "exec", "mh-pair", "x", "--", "python3", "-c", connect]),
        )
        assert "error" not in replies[1], replies
        drops = replies[1]["value"]["drops"]
        assert any(d["reason"] == "NO_SOCKET" and d["dev"] == "eth0" for d in drops), replies[1]

        state = json.loads(sim.inside(h1, [NETLAB, "status", "mh-pair", "--json"]).stdout)["labs"][0]
        pid = state["responders"][0]["pid"]
        assert sim.inside(h1, ["kill", "-KILL", str(pid)]).returncode == 0
        check = netlab(sim, "check", "mh-pair", "--json", "--only", "y reaches x")
        assert check.returncode == 1, check.stderr
        verdict = json.loads(check.stdout)["checks"][0]
        assert verdict["summary"].endswith(" — the lab's responder is dead"), verdict
        assert verdict["reasons"][0].startswith(
            f"nothing answers there: the lab's responder process is dead (on host h1: PID {pid} dead ("
        ), verdict["reasons"]
        shown = netlab(sim, "status", "mh-pair")
        assert shown.returncode == 1, shown.stderr
        assert f"responders on h1: PID {pid} dead" in shown.stdout
        assert "host h1: 1 of its 1 responder processes is dead" in shown.stderr, shown.stderr
    finally:
        down = netlab(sim, "down", "mh-pair")
    assert down.returncode == 0, down.stderr


# ---------------------------------------------------------------- hosts that run `netlab serve`


@pytest.fixture(scope="module")
def served() -> Iterator[SimulatedHosts]:
    """Two hosts, each also running `netlab serve` (as a host set up for speed would)."""
    with SimulatedHosts(2, netlab=NETLAB, serve=True) as hosts:  # started once each server listens
        yield hosts
    left = [n for n in os.listdir("/run/netns") if n.startswith(hosts.prefix)]
    assert not left, f"simulated hosts' namespaces left behind: {left}"


def served_log(sim: SimulatedHosts, host: SimulatedHost) -> str:
    """The host's sshd and `netlab serve` output: the server logs each command it ran."""
    return (sim.dir / f"{host.name}.log").read_text(errors="replace")


def test_hosts_running_netlab_serve_build_check_and_take_down_through_it(
    served: SimulatedHosts, tmp_path: Path
) -> None:
    h1, h2 = served.hosts
    lab = pair_lab(tmp_path, checks=PAIR_CHECKS.split("  - name: a wrong")[0])
    up = netlab(served, "up", "--hosts", served.inventory, lab)
    try:
        assert up.returncode == 0, up.stderr
        for host in (h1, h2):  # each host's part was built by its server's child, not a fresh netlab
            assert re.search(r"netlab up --expect-version \S+ \S+mh-pair\.yaml → exit 0 in", served_log(served, host))
        assert lab_namespaces(served, h1) == ["mh-pair.x"] and lab_namespaces(served, h2) == ["mh-pair.y"]
        done = netlab(served, "check", "mh-pair")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        down = netlab(served, "down", "mh-pair")
    assert down.returncode == 0, down.stderr
    assert re.search(r"netlab down mh-pair → exit 0 in", served_log(served, h2))
    assert lab_namespaces(served, h1) == [] == lab_namespaces(served, h2)
    assert no_tunnel_sockets(served, h1) and no_tunnel_sockets(served, h2)


def test_sshd_killed_mid_up_on_a_served_host_rolls_back_every_host(served: SimulatedHosts, tmp_path: Path) -> None:
    """The session's end reaches the server's child through its client (SIGTERM forwarded),
    and the child undoes the host's part as a netlab of its own would."""
    h1, h2 = served.hosts
    code, err = up_with_sshd_killed(served, h2, pair_lab(tmp_path, "exec: [[sleep, '60']]"))
    assert code == 1, err
    assert "h2: the connection was lost" in err and "taken down again on h1" in err
    assert lab_namespaces(served, h1) == []
    deadline = time.monotonic() + 30
    while lab_namespaces(served, h2):
        assert time.monotonic() < deadline, (lab_namespaces(served, h2), served_log(served, h2))
        time.sleep(0.1)
    # the server's child ran h2's part and failed (its stderr, the session, is gone with sshd)
    assert re.search(r"netlab up --expect-version \S+ \S+mh-pair\.yaml → exit [1-9]\d* in", served_log(served, h2))
    served.restart_sshd(h2)
    down = netlab(served, "down", "--hosts", served.inventory, "mh-pair")
    assert down.returncode == 0, down.stderr
