"""The coordinator ↔ host-agent wire of `check --hosts` (rootless): every call's values go
through JSON and come back equal, the agent answers a bad request with the reason, and
the coordinator's record of a lab over hosts is what `check LAB` finds (or why not)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from netlab.errors import UsageError
from netlab.multihost.agent import Agent, of_lab, serve
from netlab.multihost.calls import CALLS, CaptureRead, HostLab, ProbesSeen, decode, decode_args, encode, encode_args
from netlab.multihost.checks import over_hosts
from netlab.multihost.record import Record, read_record, record_path, remove_record, write_record
from netlab.multihost.remote import merge_seen
from netlab.observations import (
    CtEntry,
    CtTuple,
    FibLookup,
    Flow,
    IpvsRealView,
    IpvsServiceView,
    IpvsState,
    KernelDrop,
    KernelSeen,
    Packet,
    RouteAnswer,
    RouteQuery,
    RuleView,
)
from netlab.pcap import Frame
from netlab.probes.flow import ProbeRequest, ProbeResult
from netlab.probes.responders import ResponderHealth

RULE = RuleView(
    100, 4, "10.0.0.0/8", None, None, None, 0x10, 0xFF, 7, "lookup", "100: from 10.0.0.0/8 lookup 7", sport=(1, 2)
)
TUPLE = CtTuple("10.0.0.1", "10.0.0.2", "tcp", 40000, 80)
FLOW = Flow("10.0.0.1", "10.0.0.2", "udp", 1, 8472)
SAMPLES = {
    "lab": HostLab("up", "0123456789abcdef"),
    "route_get": [RouteAnswer("unicast", 254, "eth0", None, "10.0.0.1", None, None, "10.0.0.2 dev eth0", RULE)],
    "rules": [RULE],
    "conntrack": [CtEntry(TUPLE, TUPLE, frozenset({"ASSURED", "DST_NAT"}), 0, 0, "ESTABLISHED", 10, 4, "tcp …")],
    "ipvs": IpvsState(
        (
            IpvsServiceView(
                "tcp", 4, "10.96.0.1", 80, None, "rr", None, 32, (IpvsRealView("10.244.0.2", 8080, "masq", 1, 0, 0),)
            ),
        ),
        (),
    ),
    "nft_list": None,
    "capture_read": CaptureRead(
        [Packet("eth0", "in", FLOW, 1, Flow("10.244.0.2", "10.244.1.3", "tcp", 40000, 8080), 110, "…")],
        [Frame(1.5, bytes(range(256)), 300, "in")],
    ),
    "probe": [ProbeResult("ok", "tcp", "10.0.0.1", 40000, "10.0.0.2", 80, "x", "10.0.0.1", 40000, None, "", 0.2)],
    "probe_watched": ProbesSeen(
        [ProbeResult("refused", "tcp", "10.0.0.1", 40000, "10.0.0.2", 81, None, None, None, None, "", 0.1)],
        KernelSeen((KernelDrop("NO_SOCKET", "tcp_v4_rcv+0x1", "eth0", 2048),), ()),
    ),
    "drops_close": KernelSeen(unavailable="tracefs: Operation not permitted"),
    "responders": [ResponderHealth(12, True, None), ResponderHealth(13, False, "exit status 0: stopped by SIGTERM")],
}

NO_SOCKET = KernelDrop("NO_SOCKET", "tcp_v4_rcv+0x1", "eth0", 2048)
RPF = KernelDrop("IP_RPFILTER", "ip_rcv_finish+0x2", "eth1", 2048)
LOOKUP = FibLookup(254, "10.0.0.1", "10.0.0.9", 3, 0, None, None, -101)


def test_a_far_hosts_every_task_watch_keeps_the_labs_interfaces_and_addresses() -> None:
    other = FibLookup(254, "192.168.1.1", "192.168.1.2", 2, 0, "eth0", None, 0)
    seen = KernelSeen((NO_SOCKET, RPF, KernelDrop("NO_SOCKET", "x", None, 2048)), (LOOKUP, other))
    assert of_lab(seen, {"eth0"}, {"10.0.0.9"}) == KernelSeen((NO_SOCKET,), (LOOKUP,))


def test_the_hosts_kernels_merge_in_host_order_each_drop_once() -> None:
    merged = merge_seen(
        {
            "h1": KernelSeen((NO_SOCKET,), (LOOKUP,)),
            "h2": KernelSeen((RPF, NO_SOCKET), (LOOKUP,)),
            "h3": KernelSeen(unavailable="tracefs: no"),
        }
    )
    assert merged == KernelSeen((NO_SOCKET, RPF), (LOOKUP,))
    down = merge_seen({"h1": KernelSeen(unavailable="a"), "h2": KernelSeen(unavailable="b")})
    assert down.unavailable == "host h1: a; host h2: b"


@pytest.mark.parametrize("call", sorted(SAMPLES))
def test_a_result_travels_as_json_and_comes_back_equal(call: str) -> None:
    kind = CALLS[call].result
    assert decode(kind, json.loads(json.dumps(encode(kind, SAMPLES[call])))) == SAMPLES[call]


def test_arguments_travel_too_and_a_wrong_set_is_refused() -> None:
    args = {"requests": [ProbeRequest("lab.x", "udp", "10.0.0.2", 53, payload=b"\x00\xff")], "workers": 4}
    assert decode_args("probe", json.loads(json.dumps(encode_args("probe", args)))) == args
    query = {"ns": "lab.x", "queries": [RouteQuery("10.0.0.2", fwmark=7, tos=0x10)]}
    assert decode_args("route_get", encode_args("route_get", query)) == query
    with pytest.raises(ValueError, match="call rules takes ns, got ns, what"):
        decode_args("rules", {"ns": "lab.x", "what": "x"})


def test_the_agent_answers_each_line_with_its_id_or_the_reason() -> None:
    agent = Agent()
    assert agent.answer("{")["error"].startswith("not a request:")
    assert agent.answer(json.dumps({"id": 3, "call": "format_disk", "args": {}})) == {
        "id": 3,
        "error": "no call 'format_disk'",
    }
    assert agent.answer(json.dumps({"id": 4, "call": "capture_read", "args": {"capture": 9}})) == {
        "id": 4,
        "error": "no capture 9 is open on this host",
    }
    replies = io.StringIO()
    serve(io.StringIO(json.dumps({"id": 5, "call": "capture_close", "args": {"capture": 1}}) + "\n\n"), replies)
    assert json.loads(replies.getvalue()) == {"id": 5, "value": None}


def test_the_record_names_the_file_and_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    record = Record("l", "/labs/l.yaml", "v", "/inv/hosts.yaml", {"a": ["x", "y"], "b": ["z"]})
    write_record(record)
    assert record_path("l") == tmp_path / "netlab" / "hosts" / "l.json"
    assert read_record("l") == record and record.host_of() == {"x": "a", "y": "a", "z": "b"}
    where = over_hosts("l", None, None, "check")
    assert (where.source, where.variant, where.inventory) == ("/labs/l.yaml", "v", "/inv/hosts.yaml")
    assert over_hosts("l", None, "other.yaml", "check").inventory == "other.yaml"  # --hosts wins
    record_path("l").write_text("{")
    with pytest.raises(UsageError, match=r"the record of lab l over hosts \(.*l.json\) cannot be read"):
        read_record("l")
    remove_record("l")
    with pytest.raises(UsageError, match="lab l was not built over hosts from this machine"):
        over_hosts("l", None, "hosts.yaml", "check")
    with pytest.raises(UsageError, match=r"check --hosts needs the inventory"):
        over_hosts("labs/x.yaml", None, None, "check")


def test_doctor_pings_every_pair_of_hosts_in_one_throwaway_lab() -> None:
    from netlab.load import load_lab_text
    from netlab.multihost.doctor import _mesh
    from netlab.multihost.inventory import Host

    hosts = [Host(f"h{i}", f"h{i}", f"192.0.2.{i}") for i in (1, 2, 3)]
    data = _mesh("netlab-doctor-1", hosts, [(0, 1), (0, 2), (1, 2)])
    lab = load_lab_text(json.dumps(data), "doctor.yaml")  # a lab netlab accepts
    assert [c.name for c in lab.checks] == ["h1 ↔ h2", "h1 ↔ h3", "h2 ↔ h3"]
    assert data["nodes"]["n0"] == {
        "host": "h1",
        "links": {
            "t0": {"peer": "n1:t0", "addresses": ["10.254.0.1/30"]},
            "t1": {"peer": "n2:t1", "addresses": ["10.254.0.5/30"]},
        },
    }
    assert data["checks"][2]["probe"] == {"from": "n1", "to": "10.254.0.10", "count": 2}


def test_doctor_reads_each_hosts_own_doctor() -> None:
    from netlab.multihost.doctor import _kernel
    from netlab.multihost.engine import host_problem
    from netlab.multihost.inventory import Host
    from netlab.multihost.ssh import Reply

    host = Host("h1", "10.0.0.1", "10.0.0.1")
    features = [{"name": "netns", "ok": True, "hint": ""}, {"name": "ipvs", "ok": False, "hint": "modprobe ip_vs"}]
    reply = Reply("h1", 3, "netlab, version 0.1.0\n" + json.dumps({"features": features}), "")
    assert host_problem(host, reply) == ""
    found = _kernel(host, reply)
    assert not found.ok and found.detail == "lacks ipvs (labs that need them stop there): ipvs: modprobe ip_vs"
    old = Reply("h1", 0, "netlab, version 0.0.1\n", "")
    assert "host h1 has netlab 0.0.1, this machine" in host_problem(host, old)
    gone = Reply("h1", 255, "", "ssh: connect to host 10.0.0.1 port 22: No route to host")
    assert host_problem(host, gone) == (
        "host h1 (10.0.0.1) is not reachable: ssh: connect to host 10.0.0.1 port 22: No route to host"
    )


def test_exec_over_hosts_reads_each_hosts_json_and_gives_its_error_to_its_nodes() -> None:
    from netlab.multihost.execs import _results
    from netlab.multihost.inventory import Host
    from netlab.multihost.ssh import Reply
    from netlab.nodeexec import NodeRun

    host = Host("h2", "10.250.0.3", "10.250.0.3")
    ran = '{"schema": "netlab/exec/v1", "lab": "l", "command": ["true"], "nodes": [{"node": "y", "exit": 3, "stdout": "a\\n", "stderr": ""}]}'
    assert _results(host, Reply("h2", 3, ran, ""), ["y", "z"]) == [
        NodeRun("y", 3, "a\n", ""),
        NodeRun("z", 1, "", "host h2: its netlab did not run it there\n"),
    ]
    refused = (
        '{"schema": "netlab/exec/v1", "error": {"code": 127, "message": "nope: command not found", "problems": []}}'
    )
    assert _results(host, Reply("h2", 127, refused, "netlab: nope: command not found"), ["y"]) == [
        NodeRun("y", 127, "", "host h2: nope: command not found\n")
    ]
    lost = Reply("h2", 255, "", "ssh: connect to host 10.250.0.3 port 22: No route to host")
    assert _results(host, lost, ["y"]) == [NodeRun("y", 255, "", f"host h2: {lost.err}\n")]


def test_early_agents_are_taken_for_the_same_hosts_else_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`check LAB` starts its recorded hosts' agents before loading the lab; the check
    takes them only for the same hosts (the lab's file may have moved its nodes)."""
    import subprocess
    import tempfile

    from netlab.multihost import early
    from netlab.multihost.inventory import load_inventory

    def fake_agent(ssh: object, host: object) -> early.Spawned:
        process = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return early.Spawned(process, tempfile.TemporaryFile())

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(early, "spawn_agent", fake_agent)
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("all:\n  hosts:\n    h1: {ansible_host: 192.0.2.1}\n    h2: {ansible_host: 192.0.2.2}\n")
    write_record(Record("lab1", str(tmp_path / "lab1.yaml"), None, str(inventory), {"h1": ["x"], "h2": ["y"]}))
    hosts = load_inventory(str(inventory)).hosts
    early.start("nolab", None)  # no record: nothing started
    assert early.take(hosts) is None
    early.start("lab1", None)
    found = early.take(list(reversed(hosts)))
    assert found is not None and set(found.agents) == {"h1", "h2"}
    found.close()
    assert all(s.process.poll() is not None for s in found.agents.values())
    early.start("lab1", None)
    assert early.take(hosts[:1]) is None  # not the same hosts: closed, the check starts its own
    assert early.take(hosts) is None


def test_a_netlink_answer_that_never_comes_is_an_error_not_a_hang() -> None:
    """A request whose answer was lost (another worker read the ACKs of a shared socket:
    an up over three hosts waited forever for it) ends after the socket's receive timeout."""
    import errno
    import socket
    import struct

    from netlab.kernel.nlsock import receive

    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20000))
        with pytest.raises(OSError, match="no answer from the kernel to 3 requests") as err:
            receive(a, 1024, 3)
    assert err.value.errno == errno.ETIMEDOUT
