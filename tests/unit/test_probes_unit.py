"""Rootless tests of netlab.probes: reply format, parsing, outcome words, ICMP naming,
request checks, and the responder process's start/stop edges that need no namespace."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from netlab.kernel import netns
from netlab.observations import icmp_words
from netlab.probes import flow
from netlab.probes import responder_server as R
from netlab.probes.flow import ProbeRequest, probe, probe_many
from netlab.probes.responder_server import Service
from netlab.probes.responders import ResponderError, is_running, start_responders, stop_responders

# --------------------------------------------------------------------------- replies


def test_reply_json_format_and_order() -> None:
    raw = R.reply_json("c1", "tcp", ("::ffff:10.0.0.5", 40312), ("::ffff:10.0.0.2", 80))
    assert raw == (
        b'{"served_by": "c1", "peer": "10.0.0.5", "peer_port": 40312, '
        b'"local": "10.0.0.2", "local_port": 80, "proto": "tcp"}'
    )
    assert list(json.loads(raw)) == ["served_by", "peer", "peer_port", "local", "local_port", "proto"]


@pytest.mark.parametrize(
    "addr,want",
    [
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:c000:201", "192.0.2.1"),
        ("192.0.2.1", "192.0.2.1"),
        ("fd00::1", "fd00::1"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("not an address", "not an address"),
    ],
)
def test_normalise_addr(addr: str, want: str) -> None:
    assert R.normalise_addr(addr) == want


@pytest.mark.parametrize(
    "head,method,target",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n", "GET", "/"),
        (b"GET /a?b=c HTTP/1.0\r\n\r\n", "GET", "/a?b=c"),
        (b"HEAD / HTTP/1.0\n\n", "HEAD", "/"),
    ],
)
def test_parse_http_request(head: bytes, method: str, target: str) -> None:
    assert R.parse_http_request(head) == (method, target)


@pytest.mark.parametrize(
    "head",
    [
        b"hello\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / SPDY/3\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ],
)
def test_parse_http_request_rejects(head: bytes) -> None:
    with pytest.raises(R.BadRequest):
        R.parse_http_request(head)


def test_http_answers() -> None:
    reply = {"served_by": "c1"}
    body = json.dumps(reply).encode()
    ok = R.http_answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", reply)
    status, headers, got = flow.parse_http_response(ok)  # type: ignore[misc]
    assert status == 200 and got == body
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert ok.startswith(b"HTTP/1.0 200 OK\r\n")

    head = R.http_answer(b"HEAD / HTTP/1.1\r\n\r\n", reply)
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert R.http_answer(b"PUT / HTTP/1.1\r\n\r\n", reply).startswith(b"HTTP/1.0 405 ")
    assert R.http_answer(b"garbage\r\n\r\n", reply).startswith(b"HTTP/1.0 400 ")
    assert R.http_answer(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", reply).startswith(b"HTTP/1.0 400 ")
    too_big = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (R.MAX_KEPT + 1)
    assert R.http_answer(too_big, reply).startswith(b"HTTP/1.0 413 ")


def test_http_post_answers_with_the_body_s_receipt() -> None:
    """A POST's answer is the reply plus the receipt of its body, once the whole body is in."""
    request = flow.http_request("10.0.0.2:80", b"x" * 100)
    assert request.startswith(b"POST / HTTP/1.0\r\n") and b"Content-Length: 100\r\n" in request
    assert R.http_request(request[:-1]) is None  # one byte of the body still to come
    head, content = R.http_request(request)  # type: ignore[misc]
    assert content == b"x" * 100
    _status, _headers, body = flow.parse_http_response(R.http_answer(head, {"served_by": "c1"}, content))  # type: ignore[misc]
    answer = json.loads(body)
    assert answer["served_by"] == "c1" and answer["received"] == 100
    assert flow.compare_receipt(b"x" * 100, answer, "c1") == flow.Delivery(True, "c1 received the 100 bytes as sent")
    assert flow.http_request("h", None).startswith(b"GET / HTTP/1.0\r\n")
    assert R.http_request(b"GET / HTTP/1.0\r\n\r\n") == (b"GET / HTTP/1.0\r\n\r\n", b"")


# --------------------------------------------------------------------------- receipts


def _pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


@pytest.mark.parametrize(
    "sent,received,words",
    [
        (_pattern(1400), _pattern(1400), "s received the 1400 bytes as sent"),
        # 1400 bytes in 64 blocks of 22: byte 513 is in the 24th, bytes 507-528
        (
            _pattern(1400),
            _pattern(512) + b"\xff" + _pattern(1400)[513:],
            "s received 1400 bytes that differ from what was sent in bytes 507-528",
        ),
        # up to 64 bytes a block is one byte: the very byte
        (b"hello world", b"hello_world", "s received 11 bytes that differ from what was sent at byte 6"),
        (_pattern(1400), _pattern(1372), "s received 1372 bytes, not the 1400 sent"),
        (
            _pattern(65000),
            _pattern(64999) + b"\0",
            "s received 65000 bytes that differ from what was sent in bytes 64009-65000",
        ),
    ],
)
def test_receipt_words(sent: bytes, received: bytes, words: str) -> None:
    receipt = json.loads(json.dumps(R.receipt(received)))  # as it travels
    got = flow.compare_receipt(sent, receipt, "s")
    assert got == flow.Delivery(sent == received, words)


def test_receipt_stays_small() -> None:
    """A UDP answer must not outgrow the datagram it answers by much: 64 CRCs at most."""
    assert len(R.reply_json("c1", "udp", ("10.0.0.5", 1), ("10.0.0.2", 2), received=_pattern(65000))) < 800
    assert R.receipt(b"")["received"] == 0 and R.block_size(64) == 1 and R.block_size(65) == 2


def test_no_receipt_and_echo_words() -> None:
    nothing = flow.compare_receipt(b"abc", None, "the server")
    assert nothing.intact is None and nothing.words.startswith("the server did not say what it received")
    assert flow.compare_echo(b"abcd", b"abcd", "the echo reply") == flow.Delivery(
        True, "the echo reply carried the 4 bytes as sent"
    )
    assert (
        flow.compare_echo(b"abcd", b"abXd", "e").words == "e carried 4 bytes that differ from what was sent at byte 3"
    )
    assert flow.compare_echo(b"abcd", b"ab", "e").words == "e carried 2 bytes, not the 4 sent"
    packet = bytes([0x45]) + bytes(19) + bytes(8) + b"data"
    assert flow.echo_data(False, packet) == b"data" and flow.echo_data(True, bytes(8) + b"v6") == b"v6"


def test_find_head_end() -> None:
    assert R._find_head_end(b"GET / HTTP/1.0\r\n\r\nrest") == 18
    assert R._find_head_end(b"GET / HTTP/1.0\n\n") == 16
    assert R._find_head_end(b"GET / HTTP/1.0\r\nHost: x\r\n") == -1


def test_parse_reply() -> None:
    line = R.reply_json("c1", "udp", ("10.0.0.5", 1), ("10.0.0.2", 2))
    assert flow.parse_reply(line + b"\n")["served_by"] == "c1"  # type: ignore[index]
    assert flow.parse_reply(line)["peer"] == "10.0.0.5"  # type: ignore[index]
    for junk in (b"", b"hello", b"{not json", b'{"no_served_by": 1}', b"[1, 2]", b'{"served_by": 7}'):
        assert flow.parse_reply(junk) is None


@pytest.mark.parametrize(
    "data,want",
    [
        (b"HTTP/1.0 200 OK\r\nContent-Type: a/b\r\n\r\nbody", (200, {"content-type": "a/b"}, b"body")),
        (b"HTTP/1.1 404 Not Found\r\n\r\n", (404, {}, b"")),
        (b"HTTP/1.1 204\r\n\r\n", (204, {}, b"")),
        (b'{"served_by": "c1"}\n', None),
        (b"HTTP/2 200 OK\r\n\r\n", None),
        (b"HTTP/1.1 20 OK\r\n\r\n", None),
    ],
)
def test_parse_http_response(data: bytes, want: object) -> None:
    assert flow.parse_http_response(data) == want


# --------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    "err,outcome",
    [
        (errno.ECONNREFUSED, "refused"),
        (errno.ETIMEDOUT, "timeout"),
        (errno.ENETUNREACH, "unreachable"),  # no route
        (errno.EHOSTUNREACH, "unreachable"),  # `unreachable` route, ICMP host unreachable
        (errno.EACCES, "unreachable"),  # `prohibit` route, ICMP admin prohibited
        (errno.EINVAL, "unreachable"),  # `blackhole` route in the sending node
        (errno.EPERM, "unreachable"),  # a local firewall DROP
        (errno.EMSGSIZE, "unreachable"),  # a router's ICMP fragmentation needed
        (errno.ENETDOWN, "unreachable"),
        (errno.EADDRNOTAVAIL, "error"),
    ],
)
def test_classify_errno(err: int, outcome: str) -> None:
    assert flow.classify_errno(err) == outcome


def test_local_error_detail() -> None:
    assert (
        flow.local_error_detail(errno.ENETUNREACH, "10.0.0.2", "lab.c1")
        == "no route to 10.0.0.2 in lab.c1 (ENETUNREACH)"
    )
    assert "'prohibit' route in lab.c1" in flow.local_error_detail(errno.EACCES, "10.0.0.2", "lab.c1")
    assert "'blackhole' route" in flow.local_error_detail(errno.EINVAL, "10.0.0.2", "lab.c1")
    assert "firewall" in flow.local_error_detail(errno.EPERM, "10.0.0.2", "lab.c1")
    other = flow.local_error_detail(errno.EMSGSIZE, "10.0.0.2", "lab.c1")
    assert "EMSGSIZE" in other and "10.0.0.2" in other


@pytest.mark.parametrize(
    "v6,t,c,want",
    [
        (False, 3, 1, "host unreachable (type 3 code 1)"),
        (False, 3, 0, "net unreachable (type 3 code 0)"),
        (False, 3, 3, "port unreachable (type 3 code 3)"),
        (False, 3, 13, "admin prohibited (type 3 code 13)"),
        (False, 11, 0, "TTL exceeded in transit (type 11 code 0)"),
        (False, 12, 0, "parameter problem (type 12 code 0)"),
        (False, 3, 99, "destination unreachable (type 3 code 99)"),
        (False, 42, 0, "unknown ICMP message (type 42 code 0)"),
        (True, 1, 0, "no route to destination (ICMPv6 type 1 code 0)"),
        (True, 1, 1, "admin prohibited (ICMPv6 type 1 code 1)"),
        (True, 1, 3, "address unreachable (ICMPv6 type 1 code 3)"),
        (True, 1, 4, "port unreachable (ICMPv6 type 1 code 4)"),
        (True, 2, 0, "packet too big (ICMPv6 type 2 code 0)"),
        (True, 3, 0, "hop limit exceeded in transit (ICMPv6 type 3 code 0)"),
        (True, 200, 0, "unknown ICMPv6 message (ICMPv6 type 200 code 0)"),
    ],
)
def test_icmp_words(v6: bool, t: int, c: int, want: str) -> None:
    assert icmp_words(v6, t, c) == want


@pytest.mark.parametrize(
    "v6,t,c,want",
    [
        (False, 11, 0, "TTL exceeded in transit (time exceeded, type 11 code 0)"),
        (False, 11, 1, "fragment reassembly time exceeded (type 11 code 1)"),  # says it already
        (False, 11, 7, "time exceeded (type 11 code 7)"),
        (True, 3, 0, "hop limit exceeded in transit (time exceeded, ICMPv6 type 3 code 0)"),
        (False, 3, 1, "host unreachable (type 3 code 1)"),  # only time exceeded gets its type named
        (True, 1, 4, "port unreachable (ICMPv6 type 1 code 4)"),
    ],
)
def test_icmp_error_words_name_time_exceeded(v6: bool, t: int, c: int, want: str) -> None:
    """A probe's ICMP words say "time exceeded" for IPv4 and IPv6, so one lab line
    (`icmp: time exceeded`) matches a TTL that ran out in either family."""
    assert flow.icmp_error_words(v6, t, c) == want
    assert flow.IcmpError(v6, t, c, errno.EHOSTUNREACH, None).words == want
    assert flow.IcmpError(v6, t, c, errno.EHOSTUNREACH, None).time_exceeded == (t == (3 if v6 else 11))


def _ee(origin: int, t: int, c: int, err: int, offender: bytes) -> bytes:
    return struct.pack("=IBBBBII", err, origin, t, c, 0, 0, 0) + offender


def test_parse_extended_err() -> None:
    sin = struct.pack("=H", socket.AF_INET) + b"\0\0" + socket.inet_pton(socket.AF_INET, "10.0.0.1") + b"\0" * 8
    got = flow.parse_extended_err(_ee(2, 3, 1, errno.EHOSTUNREACH, sin))
    assert got == flow.IcmpError(False, 3, 1, errno.EHOSTUNREACH, "10.0.0.1")
    assert got.words == "host unreachable (type 3 code 1)"

    sin6 = (
        struct.pack("=H", socket.AF_INET6)
        + b"\0\0"
        + b"\0" * 4
        + socket.inet_pton(socket.AF_INET6, "fd00::1")
        + b"\0" * 4
    )
    got6 = flow.parse_extended_err(_ee(3, 1, 4, errno.ECONNREFUSED, sin6))
    assert got6 == flow.IcmpError(True, 1, 4, errno.ECONNREFUSED, "fd00::1")

    unspec = struct.pack("=H", 0) + b"\0" * 14
    assert flow.parse_extended_err(_ee(2, 3, 3, errno.ECONNREFUSED, unspec)).offender is None  # type: ignore[union-attr]
    assert flow.parse_extended_err(_ee(1, 0, 0, errno.EMSGSIZE, unspec)) is None  # local origin: no ICMP
    assert flow.parse_extended_err(b"short") is None


# --------------------------------------------------------------------------- ICMP packets


def test_build_echo_checksum() -> None:
    pkt = flow.build_echo(False, 0x1234, 7, b"netlab")
    assert pkt[:1] == b"\x08" and struct.unpack("!HH", pkt[4:8]) == (0x1234, 7)
    assert flow.checksum(pkt) == 0  # a correct checksum sums to zero
    assert flow.checksum(flow.build_echo(False, 1, 1, b"odd")) == 0
    v6 = flow.build_echo(True, 0x1234, 7, b"x")
    assert v6[:1] == bytes([128]) and v6[2:4] == b"\0\0"  # the kernel fills the ICMPv6 checksum


def _ipv4(proto: int, payload: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    return (
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0)
        + socket.inet_aton(src)
        + socket.inet_aton(dst)
        + payload
    )


def _ipv6(nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + b"\0" * 32 + payload


def test_match_icmp_v4() -> None:
    echo = flow.build_echo(False, 77, 1, b"netlab")
    assert flow.match_icmp(False, _ipv4(1, struct.pack("!BBHHH", 0, 0, 0, 77, 1)), 77, 1) == ("reply", 0, 0)
    assert flow.match_icmp(False, _ipv4(1, struct.pack("!BBHHH", 0, 0, 0, 78, 1)), 77, 1) is None
    unreach = struct.pack("!BBHI", 3, 1, 0, 0) + _ipv4(1, echo[:8], "10.0.0.2", "203.0.113.7")
    assert flow.match_icmp(False, _ipv4(1, unreach), 77, 1) == ("error", 3, 1)
    assert flow.match_icmp(False, _ipv4(1, unreach), 76, 1) is None  # someone else's echo
    udp_err = struct.pack("!BBHI", 3, 3, 0, 0) + _ipv4(17, b"\0" * 8)
    assert flow.match_icmp(False, _ipv4(1, udp_err), 77, 1) is None  # quotes UDP, not our echo
    assert flow.match_icmp(False, b"\x45", 77, 1) is None


def test_match_icmp_v6() -> None:
    echo = flow.build_echo(True, 9, 1, b"x")
    assert flow.match_icmp(True, struct.pack("!BBHHH", 129, 0, 0, 9, 1), 9, 1) == ("reply", 0, 0)
    assert flow.match_icmp(True, struct.pack("!BBHHH", 129, 0, 0, 9, 2), 9, 1) is None
    err = struct.pack("!BBHI", 1, 3, 0, 0) + _ipv6(58, echo)
    assert flow.match_icmp(True, err, 9, 1) == ("error", 1, 3)
    assert flow.match_icmp(True, struct.pack("!BBHI", 1, 3, 0, 0) + _ipv6(17, echo), 9, 1) is None
    assert flow.match_icmp(True, struct.pack("!BBHHH", 135, 0, 0, 9, 1), 9, 1) is None  # ND


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"proto": "sctp", "dst": "10.0.0.1", "port": 1}, "proto must be"),
        ({"proto": "tcp", "dst": "example.com", "port": 1}, "dst must be an IP"),
        ({"proto": "tcp", "dst": "10.0.0.1"}, "need a port"),
        ({"proto": "udp", "dst": "10.0.0.1", "port": 70000}, "need a port"),
        ({"proto": "icmp", "dst": "10.0.0.1", "port": 1}, "no port"),
        ({"proto": "tcp", "dst": "10.0.0.1", "port": 1, "src": "fd00::1"}, "different address families"),
        ({"proto": "tcp", "dst": "10.0.0.1", "port": 1, "sport": 0}, "sport"),
        ({"proto": "tcp", "dst": "10.0.0.1", "port": 1, "timeout": 0}, "timeout"),
        ({"proto": "tcp", "dst": "10.0.0.1", "port": 1, "payload": "str"}, "bytes"),
        ({"proto": "icmp", "dst": "10.0.0.1", "ttl": 0}, "ttl must be 1..255"),
        ({"proto": "udp", "dst": "10.0.0.1", "port": 53, "ttl": 256}, "ttl must be 1..255"),
        ({"proto": "tcp", "dst": "10.0.0.1", "port": 1, "ttl": True}, "ttl must be 1..255"),
    ],
)
def test_bad_requests(kwargs: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        probe("lab.c1", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=msg):
        probe_many([ProbeRequest("lab.c1", **kwargs)])  # type: ignore[arg-type]


def _flow(proto: str = "tcp", dst: str = "10.2.0.11", port: int | None = 8080, ttl: int | None = 1) -> flow._Flow:
    one = flow._Flow(ProbeRequest("lab.client", proto, dst, port, ttl=ttl), dst)
    one.src, one.sport = ("fd01::2" if ":" in dst else "10.1.0.2"), 40000
    return one


class _Sock:
    """Stands in for a socket whose error queue holds one ICMP error."""

    def __init__(self, err: flow.IcmpError | None) -> None:
        self.err = err


def test_ttl_expired_result_names_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    """TCP/UDP see EHOSTUNREACH and find the time exceeded (and its sender) in the error
    queue: an `unreachable` probe whose words say where the TTL ran out."""
    monkeypatch.setattr(flow, "read_errqueue", lambda sock: sock.err)
    te = flow.IcmpError(False, 11, 0, errno.EHOSTUNREACH, "10.1.0.1")
    r = _flow().failed(errno.EHOSTUNREACH, _Sock(te), "the connection", 0.001)  # type: ignore[arg-type]
    assert r.outcome == "unreachable"
    assert r.icmp == "TTL exceeded in transit (time exceeded, type 11 code 0)"
    assert r.icmp_from == "10.1.0.1" and r.ttl == 1
    assert r.detail == (
        "the connection to 10.2.0.11:8080 ran out of TTL at 10.1.0.1 (TTL 1); "
        "ICMP TTL exceeded in transit (time exceeded, type 11 code 0)"
    )

    te6 = flow.IcmpError(True, 3, 0, errno.EHOSTUNREACH, "fd01::1")
    r6 = _flow("udp", "fd02::11", 53, ttl=None).failed(errno.EHOSTUNREACH, _Sock(te6), "the datagram")  # type: ignore[arg-type]
    assert r6.outcome == "unreachable" and r6.icmp_from == "fd01::1" and r6.ttl is None
    assert r6.detail == (
        "the datagram to [fd02::11]:53 ran out of hop limit at fd01::1 with the default hop limit: "
        "a routing loop?; ICMP hop limit exceeded in transit (time exceeded, ICMPv6 type 3 code 0)"
    )


def test_icmp_from_is_the_sender_of_any_icmp_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "read_errqueue", lambda sock: sock.err)
    closed = flow.IcmpError(False, 3, 3, errno.ECONNREFUSED, "10.2.0.11")
    r = _flow("udp", port=53).failed(errno.ECONNREFUSED, _Sock(closed), "the datagram")  # type: ignore[arg-type]
    assert (r.outcome, r.icmp_from) == ("refused", "10.2.0.11")
    local = _flow().failed(errno.ENETUNREACH, _Sock(None), "the connection")  # type: ignore[arg-type]
    assert local.icmp is None and local.icmp_from is None  # the node's own stack: no ICMP, no sender
    scoped = _flow().result("unreachable", "x", icmp="words", icmp_from="fe80::1%eth0")
    assert scoped.icmp_from == "fe80::1"
    assert _flow().result("ok", "fine", icmp_from="10.1.0.1").icmp_from is None  # no ICMP error, no sender


def test_probe_in_missing_namespace_is_an_error_result() -> None:
    res = probe("netlab-test-no-such-ns.x", "tcp", "10.0.0.1", 80)
    assert res.outcome == "error"
    assert res.detail == "namespace netlab-test-no-such-ns.x does not exist"
    assert probe_many([]) == []


def test_probe_refuses_the_callers_own_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    # Safety: whatever a namespace name resolves to, a probe must never run in the
    # machine's own namespace.
    monkeypatch.setattr(netns, "netns_path", lambda _name: "/proc/self/ns/net")
    res = probe("looks-like-a-lab.node", "icmp", "10.0.0.1")
    assert res.outcome == "error"
    assert "own network namespace" in res.detail


# --------------------------------------------------------------------------- services


def test_service_validation() -> None:
    with pytest.raises(ValueError, match="both want tcp port 80"):
        start_responders([Service("l.a", "a", "tcp", 80), Service("l.a", "a", "http", 80)])
    with pytest.raises(ValueError, match="port"):
        start_responders([Service("l.a", "a", "udp", 0)])
    with pytest.raises(ValueError, match="proto"):
        start_responders([Service("l.a", "a", "sctp", 1)])  # type: ignore[arg-type]
    # tcp and udp on one port number, or one port in two namespaces, are fine
    R.validate([Service("l.a", "a", "tcp", 80), Service("l.a", "a", "udp", 80), Service("l.b", "b", "tcp", 80)])


def test_missing_namespace_fails_fast_and_leaves_no_child(tmp_path: object) -> None:
    with pytest.raises(ResponderError) as info:
        start_responders([Service("netlab-test-no-such-ns.x", "x", "tcp", 1234)])
    e = info.value
    assert "tcp/1234 on node x" in str(e) and "No such file or directory" in str(e)
    assert e.errno == errno.ENOENT
    assert e.pid is not None and not os.path.exists(f"/proc/{e.pid}")


def test_ready_timeout_kills_the_child() -> None:
    # A child that does not report in time is killed and reaped, not left running.
    with pytest.raises(
        ResponderError,
        match=r"did not report ready: waited \d+\.\d s for the responder process "
        r"\(PID \d+\) to bind 1 sockets and report ready \(budget",
    ) as info:
        start_responders([Service("netlab-test-no-such-ns.x", "x", "tcp", 1234)], ready_timeout=0.001)
    assert info.value.pid is not None and not os.path.exists(f"/proc/{info.value.pid}")
    with pytest.raises(ValueError, match="no services"):
        start_responders([])


def test_child_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "netlab.probes.responder_server"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert out.returncode == 2 and "usage" in out.stderr


def test_stop_responders_leaves_foreign_processes_alone() -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        stop_responders(other.pid, timeout=0.1)
        assert other.poll() is None
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    stop_responders(other.pid)  # gone: fine
    assert not is_running(other.pid)
