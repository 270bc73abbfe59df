"""Real-kernel tests of netlab.probes: responders serving inside lab namespaces, probes
sent from others, and what each outcome looks like (root only).

One lab for the module, built with `netlab up` and removed in the finalizer:

    outside 192.0.2.2, fd78::2 ── router ── br0 10.77.0.1/24, fd77::1/64 ─┬─ p1 .11 (+ .111), ::11
                                   │                                      ├─ p2 .12, ::12
       lonely 10.79.0.2/30 ────────┘ (IPv4 only, no routes)               └─ p3 .13, ::13 (local reject routes)

The router holds blackhole / unreachable / prohibit routes (203.0.113.0/26, .64/26,
.128/26; fd99:1::/64, fd99:2::/64, fd99:3::/64), so pods see what a gateway answers.
Every node sets icmp_ratelimit 0: the default (1 error/s per peer, burst 6) would turn a
quick series of "refused" probes into timeouts. The router's *forwarding* errors (IPv4
`unreachable`/`prohibit` routes) have a second limiter that only the root namespace can
tune (net.ipv4.route.error_cost: burst 5, then 1/s per source), so each test sends at most
three of those from any one pod.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from netlab.kernel import netns
from netlab.naming import netns_name
from netlab.probes.flow import ProbeRequest, ProbeResult, probe, probe_many
from netlab.probes.responder_server import Proto, Service
from netlab.probes.responders import ResponderError, is_running, start_responders, stop_responders

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.skip("needs root: builds a lab of real namespaces", allow_module_level=True)

NETLAB = (
    str(Path(sys.executable).with_name("netlab"))
    if Path(sys.executable).with_name("netlab").exists()
    else (shutil.which("netlab") or "netlab")
)

LAB_YAML = """\
name: {name}
description: netlab.probes test lab (tests/kernel/test_probes.py)
requires: [netns, veth, bridge]
nodes:
  router:
    sysctls:
      net.ipv4.ip_forward: 1
      net.ipv6.conf.all.forwarding: 1
      net.ipv4.icmp_ratelimit: 0
      net.ipv6.icmp.ratelimit: 0
    links:
      br0: {{kind: bridge, addresses: [10.77.0.1/24, "fd77::1/64"]}}
      v1: {{peer: p1:eth0, master: br0}}
      v2: {{peer: p2:eth0, master: br0}}
      v3: {{peer: p3:eth0, master: br0}}
      vo: {{peer: outside:eth0, addresses: [192.0.2.1/24, "fd78::1/64"]}}
      vl: {{peer: lonely:eth0, addresses: [10.79.0.1/30]}}
    routes:
      - {{to: 203.0.113.0/26, type: blackhole}}
      - {{to: 203.0.113.64/26, type: unreachable}}
      - {{to: 203.0.113.128/26, type: prohibit}}
      - {{to: "fd99:1::/64", type: blackhole}}
      - {{to: "fd99:2::/64", type: unreachable}}
      - {{to: "fd99:3::/64", type: prohibit}}
  p1:
    sysctls: {{net.ipv4.icmp_ratelimit: 0, net.ipv6.icmp.ratelimit: 0}}
    links:
      eth0: {{addresses: [10.77.0.11/24, 10.77.0.111/24, "fd77::11/64"]}}
    routes:
      - {{to: default, via: 10.77.0.1}}
      - {{to: default, via: "fd77::1"}}
  p2:
    sysctls: {{net.ipv4.icmp_ratelimit: 0, net.ipv6.icmp.ratelimit: 0}}
    links:
      eth0: {{addresses: [10.77.0.12/24, "fd77::12/64"]}}
    routes:
      - {{to: default, via: 10.77.0.1}}
      - {{to: default, via: "fd77::1"}}
  p3:
    sysctls: {{net.ipv4.icmp_ratelimit: 0, net.ipv6.icmp.ratelimit: 0}}
    links:
      eth0: {{addresses: [10.77.0.13/24, "fd77::13/64"]}}
    routes:
      - {{to: default, via: 10.77.0.1}}
      - {{to: default, via: "fd77::1"}}
      - {{to: 198.18.0.0/24, type: unreachable}}
      - {{to: 198.18.1.0/24, type: prohibit}}
      - {{to: 198.18.2.0/24, type: blackhole}}
      - {{to: "fd98:1::/64", type: unreachable}}
      - {{to: "fd98:2::/64", type: prohibit}}
      - {{to: "fd98:3::/64", type: blackhole}}
  outside:
    sysctls: {{net.ipv4.icmp_ratelimit: 0, net.ipv6.icmp.ratelimit: 0}}
    links:
      eth0: {{addresses: [192.0.2.2/24, "fd78::2/64"]}}
    routes:
      - {{to: 10.77.0.0/24, via: 192.0.2.1}}
      - {{to: "fd77::/64", via: "fd78::1"}}
  lonely:
    sysctls: {{net.ipv4.icmp_ratelimit: 0}}
    links:
      eth0: {{addresses: [10.79.0.2/30]}}
"""

V4 = {"p1": "10.77.0.11", "p2": "10.77.0.12", "p3": "10.77.0.13", "outside": "192.0.2.2", "lonely": "10.79.0.2"}
V6 = {"p1": "fd77::11", "p2": "fd77::12", "p3": "fd77::13", "outside": "fd78::2"}
TCP, UDP, HTTP = 7000, 7001, 8080
SERVED: tuple[tuple[Proto, int], ...] = (("tcp", TCP), ("udp", UDP), ("http", HTTP))
CLOSED = 7999  # no responder anywhere
T = TypeVar("T")
ANSWER_TIMEOUT = 3.0


@dataclass(frozen=True)
class Lab:
    name: str
    dir: Path

    def ns(self, node: str) -> str:
        return netns_name(self.name, node)


def _lab_namespaces(name: str) -> list[str]:
    return [n for n in netns.list_netns() if n.startswith(name + ".")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = f"pr-{uuid.uuid4().hex[:6]}"
    d = tmp_path_factory.mktemp("probes")
    path = d / "lab.yaml"
    path.write_text(LAB_YAML.format(name=name))
    try:
        up = subprocess.run([NETLAB, "up", str(path)], capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, f"netlab up failed:\n{up.stdout}{up.stderr}"
        yield Lab(name, d)
    finally:
        down = subprocess.run([NETLAB, "down", name], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, f"netlab down failed:\n{down.stdout}{down.stderr}"
        assert _lab_namespaces(name) == []


@pytest.fixture(scope="module")
def responders(lab: Lab) -> Iterator[int]:
    services = [
        Service(lab.ns(node), node, proto, port)
        for node in ("p1", "p2", "p3", "outside", "lonely")
        for proto, port in SERVED
    ]
    pid = start_responders(services, log_path=str(lab.dir / "responders.log"))
    try:
        yield pid
    finally:
        stop_responders(pid)
        assert not os.path.exists(f"/proc/{pid}")


def _probe(
    ns: str, proto: str, dst: str, port: int | None = None, *, src: str | None = None, sport: int | None = None
) -> ProbeResult:
    """probe() for a probe that expects an answer (ok, refused, unreachable). Those return
    as soon as it comes, so a roomy timeout costs nothing when they pass, and rides out
    one lost SYN or ARP request (each retried after 1 s) on a busy machine."""
    return probe(ns, proto, dst, port, src=src, sport=sport, timeout=ANSWER_TIMEOUT)


def _served(res: ProbeResult, node: str) -> None:
    """An ok probe served by node, whose responder saw exactly the client's own address."""
    assert res.outcome == "ok", res
    assert res.served_by == node, res
    assert res.src is not None and res.sport is not None, res
    assert res.server_saw == res.src, res  # no NAT anywhere in this lab
    assert res.server_saw_port == res.sport, res
    assert res.rtt_ms is not None, res


# --------------------------------------------------------------------------- ok


@pytest.mark.parametrize("proto,port", [("tcp", TCP), ("udp", UDP), ("http", HTTP)])
@pytest.mark.parametrize("fam", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("client", ["p2", "outside"])  # same segment, and routed
def test_ok_served_and_seen(lab: Lab, responders: int, proto: str, port: int, fam: dict[str, str], client: str) -> None:
    res = _probe(lab.ns(client), proto, fam["p1"], port)
    _served(res, "p1")
    assert res.src == fam[client]
    assert (res.proto, res.dst, res.dport) == (proto, fam["p1"], port)
    assert res.icmp is None
    if proto == "http":
        assert res.http_status == 200
    assert "served by p1" in res.detail


@pytest.mark.parametrize("fam", [V4, V6], ids=["v4", "v6"])
def test_icmp_echo_ok(lab: Lab, fam: dict[str, str]) -> None:
    res = _probe(lab.ns("outside"), "icmp", fam["p3"])
    assert res.outcome == "ok", res
    assert res.src == fam["outside"] and res.dst == fam["p3"]
    assert res.sport is not None and res.dport is None  # the echo id stands in for a port
    assert res.rtt_ms is not None and res.served_by is None
    assert f"echo reply from {fam['p3']}" in res.detail


def test_ipv4_only_node_is_served(lab: Lab, responders: int) -> None:
    # lonely has IPv6 disabled, so its responders bind AF_INET 0.0.0.0 instead of [::].
    for proto, port in (("tcp", TCP), ("udp", UDP), ("http", HTTP)):
        _served(_probe(lab.ns("router"), proto, V4["lonely"], port), "lonely")


def test_probe_leaves_caller_namespace_alone(lab: Lab, responders: int) -> None:
    before = os.stat("/proc/thread-self/ns/net").st_ino
    _probe(lab.ns("p2"), "tcp", V4["p1"], TCP)
    probe_many([ProbeRequest(lab.ns("p2"), "udp", V4["p1"], UDP, timeout=ANSWER_TIMEOUT)] * 4)
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


# --------------------------------------------------------------------------- source binding


def test_src_and_sport_are_what_the_server_sees(lab: Lab, responders: int) -> None:
    ns = lab.ns("p1")
    for proto, port in (("tcp", TCP), ("udp", UDP), ("http", HTTP)):
        res = probe(ns, proto, V4["p2"], port, src="10.77.0.111", sport=41000)
        _served(res, "p2")
        assert (res.src, res.sport) == ("10.77.0.111", 41000)
        assert (res.server_saw, res.server_saw_port) == ("10.77.0.111", 41000)
    # The same pinned 5-tuple again at once: the RST close left no TIME_WAIT behind.
    again = probe(ns, "tcp", V4["p2"], TCP, src="10.77.0.111", sport=41000)
    _served(again, "p2")
    v6 = probe(ns, "udp", V6["p2"], UDP, sport=41001)
    _served(v6, "p2")
    assert v6.server_saw_port == 41001


def test_bind_to_foreign_source_is_an_error(lab: Lab) -> None:
    res = _probe(lab.ns("p1"), "tcp", V4["p2"], TCP, src="10.77.0.222")
    assert res.outcome == "error"
    assert "cannot bind 10.77.0.222" in res.detail and "EADDRNOTAVAIL" in res.detail


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("fam", [V4, V6], ids=["v4", "v6"])
def test_refused(lab: Lab, responders: int, fam: dict[str, str]) -> None:
    tcp = _probe(lab.ns("outside"), "tcp", fam["p1"], CLOSED)
    assert tcp.outcome == "refused", tcp
    where = f"[{fam['p1']}]" if ":" in fam["p1"] else fam["p1"]
    assert tcp.detail == f"connection refused by {where}:{CLOSED}"
    assert tcp.icmp is None and tcp.src == fam["outside"] and tcp.sport

    udp = _probe(lab.ns("outside"), "udp", fam["p1"], CLOSED)
    assert udp.outcome == "refused", udp
    assert udp.icmp is not None and udp.icmp.startswith("port unreachable")
    assert udp.icmp == ("port unreachable (type 3 code 3)" if fam is V4 else "port unreachable (ICMPv6 type 1 code 4)")
    assert f"port {CLOSED}/udp is closed at {fam['p1']}" in udp.detail


def test_http_to_a_non_http_responder_is_an_error(lab: Lab, responders: int) -> None:
    res = _probe(lab.ns("p2"), "http", V4["p1"], TCP)  # the tcp responder greets with JSON, not HTTP
    assert res.outcome == "error", res
    assert "not HTTP" in res.detail


# --------------------------------------------------------------------------- unreachable


def test_unreachable_route_on_router_v4(lab: Lab) -> None:
    for proto, port in (("icmp", None), ("tcp", 80), ("udp", 80)):  # three errors to p1: under the burst
        res = _probe(lab.ns("p1"), proto, "203.0.113.70", port)
        assert res.outcome == "unreachable", res
        assert res.icmp == "host unreachable (type 3 code 1)", res
        assert res.detail.startswith("10.77.0.1 answered"), res  # the router said so
        assert res.src == V4["p1"]


def test_prohibit_route_on_router_v4(lab: Lab) -> None:
    for proto, port in (("icmp", None), ("tcp", 80), ("udp", 80)):  # from p2: a separate budget
        res = _probe(lab.ns("p2"), proto, "203.0.113.130", port)
        assert res.outcome == "unreachable", res
        assert res.icmp == "admin prohibited (type 3 code 13)", res


@pytest.mark.parametrize(
    "prefix,words",
    [
        ("fd99:2::", "no route to destination (ICMPv6 type 1 code 0)"),
        ("fd99:3::", "admin prohibited (ICMPv6 type 1 code 1)"),
    ],
)
def test_reject_routes_on_router_v6(lab: Lab, prefix: str, words: str) -> None:
    for proto, port in (("icmp", None), ("tcp", 80), ("udp", 80)):
        res = _probe(lab.ns("p3"), proto, prefix + "7", port)
        assert res.outcome == "unreachable", res
        assert res.icmp == words, res
        assert res.detail.startswith("fd77::1 answered"), res


@pytest.mark.parametrize(
    "dst,errname,words",
    [
        ("198.18.0.7", "EHOSTUNREACH", "'unreachable' route"),
        ("198.18.1.7", "EACCES", "'prohibit' route"),
        ("198.18.2.7", "EINVAL", "'blackhole' route"),
        ("fd98:1::7", "EHOSTUNREACH", "'unreachable' route"),
        ("fd98:2::7", "EACCES", "'prohibit' route"),
        ("fd98:3::7", "EINVAL", "'blackhole' route"),
    ],
)
def test_local_reject_routes(lab: Lab, dst: str, errname: str, words: str) -> None:
    # The kernel refuses these in the sending node itself: no packet, no ICMP, at once.
    for proto, port in (("icmp", None), ("tcp", 80), ("udp", 80)):
        start = time.monotonic()
        res = _probe(lab.ns("p3"), proto, dst, port)
        assert time.monotonic() - start < ANSWER_TIMEOUT / 2  # no waiting at all, really
        assert res.outcome == "unreachable", res
        assert res.icmp is None
        assert errname in res.detail and words in res.detail, res


def test_no_route(lab: Lab) -> None:
    for proto, port in (("icmp", None), ("tcp", TCP), ("udp", UDP), ("http", HTTP)):
        res = _probe(lab.ns("lonely"), proto, V4["p1"], port)
        assert res.outcome == "unreachable", res
        assert res.detail == f"no route to {V4['p1']} in {lab.ns('lonely')} (ENETUNREACH)"
        assert res.icmp is None


# --------------------------------------------------------------------------- timeout


@pytest.mark.parametrize(
    "dst",
    ["203.0.113.5", "fd99:1::5", "10.77.0.99", "fd77::99"],
    ids=["blackhole-v4", "blackhole-v6", "unowned-v4", "unowned-v6"],
)
def test_timeout(lab: Lab, dst: str) -> None:
    # Dropped silently by the router's blackhole route, or sent to an on-link address no
    # one owns (neighbour resolution gives up only after 3 s, well past the timeout).
    reqs = [
        ProbeRequest(lab.ns("p2"), proto, dst, port, timeout=0.4)
        for proto, port in (("icmp", None), ("tcp", 80), ("udp", 80))
    ]
    start = time.monotonic()
    results = probe_many(reqs)
    took = time.monotonic() - start
    assert 0.35 < took < 1.5, took
    for res in results:
        assert res.outcome == "timeout", res
        assert "within 0.4 s" in res.detail
        assert res.src == (V4 if ":" not in dst else V6)["p2"]


def test_no_neighbour_after_arp_gives_up(lab: Lab) -> None:
    # Given longer than ARP/ND's ~3 s, the sender's own stack reports the failure, as an
    # ICMP error from its own address.
    reqs = [
        ProbeRequest(lab.ns("p2"), proto, dst, port, timeout=4.5)
        for dst in ("10.77.0.98", "fd77::98")
        for proto, port in (("icmp", None), ("tcp", 80), ("udp", 80))
    ]
    for res in probe_many(reqs):
        v6 = ":" in res.dst
        assert res.outcome == "unreachable", res
        assert res.icmp == ("address unreachable (ICMPv6 type 1 code 3)" if v6 else "host unreachable (type 3 code 1)")
        assert res.detail.startswith(f"no neighbour answered for {res.dst}"), res
        assert f"{(V6 if v6 else V4)['p2']} (this node)" in res.detail


# --------------------------------------------------------------------------- many


def test_probe_many_200_in_order(lab: Lab, responders: int, capsys: pytest.CaptureFixture[str]) -> None:
    targets = ["p1", "p2", "p3", "outside"]
    clients = ["p1", "p2", "p3", "outside"]
    reqs: list[ProbeRequest] = []
    expect: list[tuple[str, str | None]] = []  # (outcome, served_by)
    protos = [("tcp", TCP), ("udp", UDP), ("http", HTTP), ("icmp", None)]
    i = 0
    while len(reqs) < 180:
        client, target = clients[i % 4], targets[(i // 4) % 4]
        proto, port = protos[(i // 16) % 4]
        fam = V4 if (i // 64) % 2 == 0 else V6
        reqs.append(ProbeRequest(lab.ns(client), proto, fam[target], port, timeout=ANSWER_TIMEOUT))
        expect.append(("ok", None if proto == "icmp" else target))
        i += 1
    for j in range(10):  # refused, and no route
        reqs.append(
            ProbeRequest(lab.ns("outside"), "udp" if j % 2 else "tcp", V4["p2"], CLOSED, timeout=ANSWER_TIMEOUT)
        )
        expect.append(("refused", None))
        reqs.append(ProbeRequest(lab.ns("lonely"), "tcp", V4["p3"], TCP, timeout=ANSWER_TIMEOUT))
        expect.append(("unreachable", None))
    start = time.monotonic()
    results = probe_many(reqs)
    took = time.monotonic() - start
    assert len(results) == len(reqs) == 200
    for req, res, (outcome, node) in zip(reqs, results, expect, strict=True):
        assert (res.proto, res.dst, res.dport) == (req.proto, str(ipaddress.ip_address(req.dst)), req.port)
        assert res.outcome == outcome, (req, res)
        if node is not None:
            _served(res, node)
    with capsys.disabled():
        print(f"\n  probe_many: 200 probes (180 ok, 10 refused, 10 no-route) in {took * 1000:.0f} ms")
    assert took < 5


def test_hundreds_of_services_in_one_process(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    protos: tuple[Proto, ...] = ("tcp", "udp", "http")
    services = [Service(lab.ns(node), node, protos[i % 3], 20000 + i) for node in ("p1", "p2", "p3") for i in range(50)]
    start = time.monotonic()
    pid = start_responders(services)
    took = time.monotonic() - start
    try:
        assert is_running(pid)
        sockets = [
            fd for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        ]
        assert len(sockets) >= 150
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert children == []  # one process, nothing forked
        reqs = [
            ProbeRequest(lab.ns("outside"), s.proto, fam[s.node], s.port, timeout=ANSWER_TIMEOUT)
            for fam in (V4, V6)
            for s in services
        ]
        t0 = time.monotonic()
        results = probe_many(reqs, workers=32)
        took_probes = time.monotonic() - t0
        for s, res in zip(services + services, results, strict=True):
            _served(res, s.node)
            assert res.dport == s.port
    finally:
        stop_responders(pid)
    assert not os.path.exists(f"/proc/{pid}")
    with capsys.disabled():
        print(
            f"\n  responders: 150 services in 3 namespaces ready in {took * 1000:.0f} ms; "
            f"300 probes (v4+v6) answered in {took_probes * 1000:.0f} ms"
        )
    assert took < 3


def _in_ns(ns: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread inside ns: sockets it opens belong to the lab, never to the host."""

    def run() -> T:
        with netns.entered(ns):
            return fn()

    return netns.in_thread(run)


def test_concurrent_idle_clients_do_not_block_and_are_dropped(lab: Lab, responders: int) -> None:
    # 100 clients connect and then say nothing. A blocking or thread-per-client server
    # would stall; this one keeps answering others, and drops the idle ones after 5 s.
    def connect_all() -> list[socket.socket]:
        return [socket.create_connection((V4["p1"], TCP), timeout=2) for _ in range(100)]

    socks = _in_ns(lab.ns("outside"), connect_all)
    try:
        for s in socks:
            assert b'"served_by": "p1"' in s.recv(4096)
        start = time.monotonic()
        results = probe_many([ProbeRequest(lab.ns("p2"), "tcp", V4["p1"], TCP, timeout=ANSWER_TIMEOUT)] * 50)
        assert time.monotonic() - start < 2
        for res in results:
            _served(res, "p1")
        # Each idle client is closed by the server: EOF within the 5 s idle time + sweep.
        pending = set(socks)
        deadline = time.monotonic() + 8
        while pending and time.monotonic() < deadline:
            readable, _, _ = select.select(list(pending), [], [], 0.5)
            for s in readable:
                assert s.recv(4096) == b""
                pending.discard(s)
        assert not pending, f"{len(pending)} idle connections still open"
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- start/stop


@pytest.mark.parametrize("proto,port", SERVED)
def test_port_in_use(lab: Lab, responders: int, proto: Proto, port: int) -> None:
    ok = Service(lab.ns("p2"), "p2", "tcp", 30000)
    busy = Service(lab.ns("p1"), "p1", proto, port)  # the module's responders hold it
    with pytest.raises(ResponderError) as info:
        start_responders([ok, busy])
    e = info.value
    assert e.service == busy
    assert f"{proto}/{port} on node p1" in str(e)
    assert "Address already in use" in str(e)
    assert e.pid is not None and not os.path.exists(f"/proc/{e.pid}")
    # Nothing of the failed start is left: its first socket is free again ...
    pid = start_responders([ok])
    stop_responders(pid)
    # ... and the responders that own the port still serve.
    _served(_probe(lab.ns("p2"), proto, V4["p1"], port), "p1")


def test_missing_namespace(lab: Lab) -> None:
    with pytest.raises(ResponderError) as info:
        start_responders([Service(lab.ns("nosuchnode"), "x", "tcp", 1234)])
    assert "No such file or directory" in str(info.value)
    assert info.value.pid is not None and not os.path.exists(f"/proc/{info.value.pid}")


def test_stop_responders(lab: Lab) -> None:
    log = lab.dir / "stop.log"
    pid = start_responders([Service(lab.ns("p3"), "p3", "udp", 31000)], log_path=str(log))
    assert is_running(pid)
    _served(_probe(lab.ns("p2"), "udp", V4["p3"], 31000), "p3")
    stop_responders(pid)
    assert not os.path.exists(f"/proc/{pid}")
    assert not is_running(pid)
    assert "stopped" in log.read_text()  # SIGTERM ended the loop cleanly
    stop_responders(pid)  # already gone: fine
    assert _probe(lab.ns("p2"), "udp", V4["p3"], 31000).outcome == "refused"


def test_stop_responders_ignores_a_foreign_pid() -> None:
    # PIDs are reused: stop_responders must never kill what is not a responder.
    other = subprocess.Popen(["sleep", "30"])
    try:
        stop_responders(other.pid, timeout=0.2)
        assert other.poll() is None
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_stop_responders_kills_a_stuck_responder(lab: Lab) -> None:
    pid = start_responders([Service(lab.ns("p3"), "p3", "tcp", 31001)])
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    try:
        start = time.monotonic()
        stop_responders(pid, timeout=0.3)
        assert time.monotonic() - start < 3
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        if is_running(pid):  # only if the test failed; never signal a reused PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
