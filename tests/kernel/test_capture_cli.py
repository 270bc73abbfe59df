"""`netlab capture` and `netlab check --pcap` on a real lab (root): the pcap files are read
back with `tcpdump -r`, the flow's addresses and ports asserted; --count, --duration and
Ctrl-C end a capture; a bad NODE:IF or filter is exit 2 with what exists.

    client 10.7.0.1 ── eth0 ═ eth0 ── server 10.7.0.2 (tcp/8080)
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import LabFactory, LabFile, NetlabCli, run_in, tcp_exchange

SPEC: dict[str, Any] = {
    "nodes": {
        "client": {"links": {"eth0": {"peer": "server:eth0", "addresses": ["10.7.0.1/24"]}}},
        "server": {"links": {"eth0": {"addresses": ["10.7.0.2/24"]}}, "serve": ["tcp/8080"]},
    },
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Any, netlab_cli: NetlabCli) -> Iterator[LabFile]:
    factory = LabFactory(registry, tmp_path_factory.mktemp("capture"))
    try:
        made = factory(SPEC)
        r = netlab_cli("up", made)
        assert r.rc == 0, r.err
        yield made
    finally:
        factory.cleanup()


def tcpdump_read(path: Path) -> list[str]:
    done = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def start_capture(netlab_cli: NetlabCli, *args: Any) -> subprocess.Popen[str]:
    """`netlab capture ARGS` in the background, returned once it is capturing."""
    proc = netlab_cli.popen("capture", *args)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("capturing on "), line + (proc.stderr.read() if proc.poll() is not None else "")
    return proc


def test_capture_a_flow_to_pcap_and_read_it_back(lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    pcap = tmp_path / "flow.pcap"
    proc = start_capture(netlab_cli, lab.name, "client:eth0", "-w", pcap, "--count", "3", "tcp", "port", "7777")
    answer = tcp_exchange(lab.ns("server"), "10.7.0.2", lab.ns("client"), port=7777)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert answer  # the exchange itself worked
    # the first three frames of the connection: SYN out, SYN-ACK in, ACK out — and nothing but port 7777
    lines = tcpdump_read(pcap)
    assert len(lines) == 3, lines
    assert "10.7.0.1." in lines[0] and "> 10.7.0.2.7777: Flags [S]" in lines[0]
    assert "10.7.0.2.7777 > 10.7.0.1." in lines[1] and "Flags [S.]" in lines[1]
    live = out.splitlines()
    assert len(live) == 3 and " out 10.7.0.1." in live[0] and "> 10.7.0.2.7777 tcp" in live[0]
    assert " in 10.7.0.2.7777 > 10.7.0.1." in live[1]
    assert "3 frames on client:eth0, written to" in err


def test_count_bounds_the_capture(lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    pcap = tmp_path / "two.pcap"
    proc = start_capture(netlab_cli, lab.name, "server:eth0", "-w", pcap, "-c", "2", "icmp")
    run_in(lab.ns("client"), "ping", "-c", "4", "-i", "0.05", "10.7.0.2")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = tcpdump_read(pcap)
    assert len(lines) == 2
    assert "10.7.0.1 > 10.7.0.2: ICMP echo request" in lines[0]
    assert "10.7.0.2 > 10.7.0.1: ICMP echo reply" in lines[1]


def test_duration_bounds_a_quiet_capture(lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    pcap = tmp_path / "quiet.pcap"
    start = time.monotonic()
    r = netlab_cli("capture", lab.name, "client:eth0", "-w", pcap, "--duration", "0.5", "udp", "port", "9")
    took = time.monotonic() - start
    assert r.rc == 0, r.err
    assert "0 frames on client:eth0" in r.err
    assert took < 10
    assert tcpdump_read(pcap) == []  # a valid, empty capture file


def test_ctrl_c_ends_cleanly_with_a_complete_file(lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    pcap = tmp_path / "interrupted.pcap"
    proc = start_capture(netlab_cli, lab.name, "client:eth0", "-w", pcap, "icmp")
    run_in(lab.ns("client"), "ping", "-c", "2", "-i", "0.05", "10.7.0.2")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "4 frames on client:eth0" in err
    lines = tcpdump_read(pcap)
    assert [("request" in x, "reply" in x) for x in lines] == [(True, False), (False, True)] * 2
    assert len(out.splitlines()) == 4


def test_bad_node_interface_or_filter_is_exit_2(lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    r = netlab_cli("capture", lab.name, "nosuch:eth0", "--count", "1")
    assert r.rc == 2 and f"lab {lab.name} has no node 'nosuch' (nodes: client, server)" in r.err
    r = netlab_cli("capture", lab.name, "client:eth9", "--count", "1", "-w", tmp_path / "x.pcap")
    assert r.rc == 2 and "node client of lab" in r.err and "has no interface 'eth9' (its interfaces: eth0, lo)" in r.err
    assert not (tmp_path / "x.pcap").exists()
    r = netlab_cli("capture", lab.name, "client", "--count", "1")
    assert r.rc == 2 and "'client' is not NODE:IF" in r.err
    r = netlab_cli("capture", lab.name, "client:eth0", "--count", "1", "tcp", "port", "banana")
    assert r.rc == 2 and "bad filter 'tcp port banana'" in r.err
    r = netlab_cli("capture", lab.name, "client:eth0", "--count", "1", nobody=True)
    assert r.rc == 3 and "`netlab capture` changes network namespaces and needs root" in r.err


def test_check_pcap_keeps_the_captures_of_failed_checks(lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    checks = [
        {"name": "server answers on 8080", "probe": {"from": "client", "to": "server:8080"}},
        {
            "name": "server answers on 9999 (it does not)",
            "probe": {"from": "client", "to": "server:9999"},
            "expect": {"result": "ok"},
        },
        {
            "name": "seen on the server's side",
            "probe": {"from": "client", "to": "server:9998"},
            "expect": {"result": "ok"},
            "capture": {"on": "server:eth0", "expect": {"dst": "server"}},
        },
    ]
    text = lab.path.read_text()
    lab.path.write_text(f"{text}\nchecks: {json.dumps(checks)}\n")  # JSON is YAML
    try:
        out = tmp_path / "failed"
        r = netlab_cli("check", lab, "--json", "--pcap", out)
        assert r.rc == 1, r.err
        assert sorted(p.name for p in out.iterdir()) == [
            "seen-on-the-server-s-side.pcap",
            "server-answers-on-9999-it-does-not.pcap",
        ]
        refused = tcpdump_read(out / "server-answers-on-9999-it-does-not.pcap")
        assert any("10.7.0.1." in x and "> 10.7.0.2.9999: Flags [S]" in x for x in refused), refused
        assert any("10.7.0.2.9999 > 10.7.0.1." in x and "Flags [R." in x for x in refused), refused
        server_side = tcpdump_read(out / "seen-on-the-server-s-side.pcap")
        assert any("> 10.7.0.2.9998: Flags [S]" in x for x in server_side), server_side
        assert "capture of a failed check:" in r.err
    finally:
        lab.path.write_text(text)


def test_graph_of_a_lab_that_is_up(lab: LabFile, netlab_cli: NetlabCli) -> None:
    """By name, from the lab file its state records."""
    r = netlab_cli("graph", lab.name, "--format", "json")
    assert r.rc == 0, r.err
    g = json.loads(r.out)
    assert g["lab"] == lab.name
    assert [(b["name"], b["role"]) for b in g["boxes"]] == [("client", "host"), ("server", "host")]
    assert g["wires"] == [{"a": "client:eth0", "b": "server:eth0"}]
