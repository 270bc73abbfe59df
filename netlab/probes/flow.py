"""Probes: one real flow from inside a lab namespace, and what became of it.

A probe opens its socket *inside* the node's namespace (a worker thread setns()es there,
works, and returns home; the caller's thread never moves) and sends real packets with the
kernel's own stack: raw ICMP echo, TCP connect, connected UDP, HTTP GET. No ping/curl
processes, so hundreds of probes run in a thread pool in a fraction of a second.

Each result says what happened in the words an engineer would use (ok / timeout /
refused / unreachable / error), the flow's 5-tuple as the client saw it, who served it
and which source the server saw (from the responder's JSON, see responder_server.py; a
difference from the client's own address means NAT), and, when an ICMP error explains a
failure, that ICMP message by name and the address that sent it. ICMP errors are read
from the socket error queue (IP_RECVERR), which carries the type, code and the router
that sent it, where a plain errno would only say "host unreachable".

A probe may set its packets' TTL (IPv6: hop limit). With a small one the packet dies at a
router on the way, which answers ICMP time exceeded: the probe is then `unreachable`
(it never got there; TCP and UDP see EHOSTUNREACH), its ICMP words say "time exceeded",
and `icmp_from` names that router's address — traceroute's hop, one probe at a time.

A probe may also set its packets' DS field (`tos`; IP_TOS, IPv6 IPV6_TCLASS), a mark
(SO_MARK: the firewall and `ip rule fwmark` of its own node see it) and its payload.
A probe given a payload proves it arrived intact: the echo reply carries it back, and a
responder answers a UDP datagram, an HTTP POST body or a TCP stream with a receipt (its
length, SHA-256 and block CRCs, see responder_server.receipt), which the probe compares
with what it sent and tells in words: "server1 received 1400 bytes that differ from what
was sent in bytes 507-528".

`timeout` bounds each wait: for the connection (or the echo/datagram answer), then for the
responder's greeting or HTTP response, then for a TCP responder's receipt.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import itertools
import json
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from netlab.kernel import netns
from netlab.observations import icmp_words
from netlab.probes.responder_server import block_crcs, normalise_addr
from netlab.vocabulary import MAX_PAYLOAD, host_port

Outcome = Literal["ok", "timeout", "refused", "unreachable", "error"]
PROBE_PROTOS = ("icmp", "tcp", "udp", "http")

# Not all exported by Python 3.11's socket module (linux/in.h, in6.h, errqueue.h, icmp.h).
IP_RECVERR = 11
IPV6_RECVERR = 25
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1

MAX_REPLY = 64 * 1024
DEFAULT_PAYLOAD = b"netlab"  # what a probe sends when it was given no payload


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    proto: str  # icmp | tcp | udp | http
    # The flow as the client saw it (for icmp, sport is the echo identifier).
    src: str | None
    sport: int | None
    dst: str
    dport: int | None
    served_by: str | None  # the responder's node name
    server_saw: str | None  # the source address the responder saw (≠ src: NAT)
    server_saw_port: int | None
    icmp: str | None  # the ICMP error that explains a failure, in words
    detail: str
    rtt_ms: float | None  # echo reply / TCP handshake / UDP reply / HTTP response
    http_status: int | None = None
    icmp_from: str | None = None  # the address that sent the ICMP error (a router, the server, this node)
    ttl: int | None = None  # the TTL / hop limit the probe set (None: the kernel's default)
    tos: int | None = None  # the DS field the probe set (IP_TOS / IPV6_TCLASS)
    mark: int | None = None  # the SO_MARK the probe set
    sent: int | None = None  # the bytes of the payload it was given (None: none given)
    intact: bool | None = None  # did the payload arrive as sent (None: nothing said)
    delivery: str | None = None  # what became of the payload, in words

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def lost(self) -> bool:
        """No answer at all (not even an ICMP error or a reset): what a probe's loss counts."""
        return self.outcome == "timeout"

    def to_json(self) -> dict[str, Any]:
        """asdict's dict (its fields in order), without asdict's deep copy: they are plain values."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProbeRequest:
    ns: str
    proto: str
    dst: str
    port: int | None = None
    src: str | None = None
    sport: int | None = None
    timeout: float = 1.0
    payload: bytes | None = None  # None: DEFAULT_PAYLOAD, and no proof asked for
    ttl: int | None = None  # IP_TTL / IPV6_UNICAST_HOPS of the probe's socket
    tos: int | None = None  # IP_TOS / IPV6_TCLASS: the DS field (DSCP << 2 | ECN)
    mark: int | None = None  # SO_MARK

    @property
    def data(self) -> bytes:
        return DEFAULT_PAYLOAD if self.payload is None else self.payload


@dataclass(frozen=True)
class Delivery:
    """What became of a payload: intact (True, False; None when nothing said) and words."""

    intact: bool | None
    words: str


def first_difference(sent: bytes, got: bytes) -> int | None:
    """The 1-based position of the first byte where got differs from sent (None: equal)."""
    if sent == got:
        return None
    return next(
        (i + 1 for i, (a, b) in enumerate(zip(sent, got, strict=False)) if a != b), min(len(sent), len(got)) + 1
    )


def compare_echo(sent: bytes, got: bytes, who: str) -> Delivery:
    """Bytes that came back (an echo reply's) against the ones sent."""
    at = first_difference(sent, got)
    if at is None:
        return Delivery(True, f"{who} carried the {len(sent)} bytes as sent")
    if len(got) != len(sent):
        return Delivery(False, f"{who} carried {len(got)} bytes, not the {len(sent)} sent")
    return Delivery(False, f"{who} carried {len(got)} bytes that differ from what was sent at byte {at}")


def compare_receipt(sent: bytes, receipt: dict[str, Any] | None, who: str) -> Delivery:
    """A responder's receipt (responder_server.receipt) against the bytes sent."""
    if receipt is None or not isinstance(receipt.get("received"), int):
        return Delivery(
            None, f"{who} did not say what it received (not a netlab responder, or one started before receipts)"
        )
    received = receipt["received"]
    if received != len(sent):
        return Delivery(False, f"{who} received {received} bytes, not the {len(sent)} sent")
    if receipt.get("sha256") == hashlib.sha256(sent).hexdigest():
        return Delivery(True, f"{who} received the {len(sent)} bytes as sent")
    return Delivery(
        False, f"{who} received {received} bytes that differ from what was sent {_where_differs(sent, receipt)}"
    )


def _where_differs(sent: bytes, receipt: dict[str, Any]) -> str:
    """'at byte 13' or 'in bytes 507-528': the first block whose CRC differs."""
    size, crcs = receipt.get("block"), receipt.get("crc32")
    if not isinstance(size, int) or size < 1 or not isinstance(crcs, str):
        return "(the receipt does not say where)"
    theirs = [crcs[i : i + 8] for i in range(0, len(crcs), 8)]
    for n, crc in enumerate(block_crcs(sent, size)):
        if n >= len(theirs) or theirs[n] != crc:
            first, last = n * size + 1, min(len(sent), (n + 1) * size)
            return f"at byte {first}" if first == last else f"in bytes {first}-{last}"
    return "(though every block's CRC matches)"


# --------------------------------------------------------------------------- words


def is_time_exceeded(v6: bool, type_: int) -> bool:
    return type_ == (3 if v6 else 11)


def icmp_error_words(v6: bool, type_: int, code: int) -> str:
    """A probe's ICMP error in words: icmp_words, and for a time exceeded message also
    its type's name, which the code's name ("TTL exceeded in transit") does not say:
    'TTL exceeded in transit (time exceeded, type 11 code 0)', so that `icmp: time
    exceeded` in a lab matches it for IPv4 and IPv6 alike."""
    words = icmp_words(v6, type_, code)
    if is_time_exceeded(v6, type_) and "time exceeded" not in words:
        name, _, rest = words.partition(" (")
        return f"{name} (time exceeded, {rest}"
    return words


# errno from connect()/send() → outcome. The routing errors are what the kernel returns
# for the route types: no route → ENETUNREACH, `unreachable` → EHOSTUNREACH, `prohibit`
# → EACCES, `blackhole` → EINVAL; a firewall DROP of a local packet → EPERM; a router's
# ICMP fragmentation needed (IPv6: packet too big) for a datagram over its MTU → EMSGSIZE.
_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EACCES,
        errno.EINVAL,
        errno.EPERM,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EMSGSIZE,
    }
)


def classify_errno(err: int) -> Outcome:
    """The outcome a failed connect/send/receive with this errno means."""
    if err == errno.ECONNREFUSED:
        return "refused"
    if err == errno.ETIMEDOUT:
        return "timeout"
    if err in _UNREACHABLE_ERRNOS:
        return "unreachable"
    return "error"


def local_error_detail(err: int, dst: str, ns: str) -> str:
    """Words for an error the namespace's own stack returned (no ICMP involved)."""
    words = {
        errno.ENETUNREACH: f"no route to {dst} in {ns} (ENETUNREACH)",
        errno.EHOSTUNREACH: f"{dst} is unreachable from {ns}: an 'unreachable' route, "
        f"or no neighbour answered (EHOSTUNREACH)",
        errno.EACCES: f"a 'prohibit' route in {ns} forbids {dst} (EACCES)",
        errno.EINVAL: f"a 'blackhole' route in {ns} discards packets to {dst} (EINVAL)",
        errno.EPERM: f"a firewall rule in {ns} dropped the packet to {dst} (EPERM)",
        errno.ENETDOWN: f"the interface toward {dst} in {ns} is down (ENETDOWN)",
        errno.EHOSTDOWN: f"{dst} is down as seen from {ns} (EHOSTDOWN)",
        errno.ECONNREFUSED: f"connection refused by {dst}",
        errno.ETIMEDOUT: f"{dst} did not answer (ETIMEDOUT)",
    }
    return words.get(err) or f"{os.strerror(err)} ({errno.errorcode.get(err, err)}) toward {dst} from {ns}"


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class IcmpError:
    """One entry of a socket's error queue that came from an ICMP message."""

    v6: bool
    type: int
    code: int
    errno: int
    offender: str | None  # the address that sent the ICMP error

    @property
    def words(self) -> str:
        return icmp_error_words(self.v6, self.type, self.code)

    @property
    def time_exceeded(self) -> bool:
        return is_time_exceeded(self.v6, self.type)


def parse_extended_err(data: bytes) -> IcmpError | None:
    """struct sock_extended_err (+ SO_EE_OFFENDER sockaddr) → IcmpError; None unless it
    came from an ICMP/ICMPv6 message."""
    if len(data) < 16:
        return None
    ee_errno, origin, type_, code, _pad, _info, _data = struct.unpack_from("=IBBBBII", data)
    if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
        return None
    offender = None
    if len(data) >= 18:
        family = struct.unpack_from("=H", data, 16)[0]
        if family == socket.AF_INET and len(data) >= 24:
            offender = socket.inet_ntop(socket.AF_INET, data[20:24])
        elif family == socket.AF_INET6 and len(data) >= 40:
            offender = socket.inet_ntop(socket.AF_INET6, data[24:40])
    return IcmpError(origin == SO_EE_ORIGIN_ICMP6, type_, code, ee_errno, offender)


def read_errqueue(sock: socket.socket) -> IcmpError | None:
    """The last ICMP error queued on sock (IP_RECVERR/IPV6_RECVERR), without waiting."""
    found = None
    sock.setblocking(False)  # with a timeout set, Python would wait for the queue to fill
    for _ in range(16):
        try:
            _d, anc, _f, _a = sock.recvmsg(512, 1024, socket.MSG_ERRQUEUE)
        except OSError:  # EAGAIN: queue empty
            break
        for level, kind, cdata in anc:
            if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                found = parse_extended_err(cdata) or found
    return found


def parse_reply(data: bytes) -> dict[str, Any] | None:
    """A responder's JSON object (first line), or None if it is not one."""
    line = data.split(b"\n", 1)[0].strip()
    if not line.startswith(b"{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("served_by"), str):
        return None
    return obj


def parse_http_response(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers with lower-case names, body) of an HTTP/1.x response, or None."""
    sep = data.find(b"\r\n\r\n")
    head, body = (data[:sep], data[sep + 4 :]) if sep >= 0 else (data, b"")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, body


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo(v6: bool, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP(v6) echo request. ICMPv6's checksum covers a pseudo-header only the kernel
    knows, and the kernel fills it in for raw ICMPv6 sockets; ICMPv4's is ours to do."""
    if v6:
        return struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = checksum(head + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


def match_icmp(v6: bool, packet: bytes, ident: int, seq: int) -> tuple[str, int, int] | None:
    """Is this received packet about our echo? ("reply", 0, 0), ("error", type, code) when
    it is an ICMP error quoting our echo request, or None (someone else's traffic).
    IPv4 raw sockets deliver the IP header; IPv6 ones start at the ICMPv6 header."""
    if v6:
        icmp = packet
        echo_req, echo_rep, quoted_ip_len, quoted_proto_at, proto = 128, 129, 40, 6, 58
    else:
        if len(packet) < 20:
            return None
        icmp = packet[(packet[0] & 0x0F) * 4 :]
        echo_req, echo_rep, quoted_ip_len, quoted_proto_at, proto = 8, 0, -1, 9, 1
    if len(icmp) < 8:
        return None
    type_, code, _csum, pid, pseq = struct.unpack_from("!BBHHH", icmp)
    if type_ == echo_rep:
        return ("reply", 0, 0) if (pid, pseq) == (ident, seq) else None
    if type_ not in ((1, 2, 3, 4) if v6 else (3, 11, 12)):
        return None
    inner = icmp[8:]
    if len(inner) < 20:
        return None
    if quoted_ip_len < 0:  # IPv4: the quoted header's own length
        quoted_ip_len = (inner[0] & 0x0F) * 4
    if len(inner) < quoted_ip_len + 8 or inner[quoted_proto_at] != proto:
        return None
    qtype, _qc, _qs, qid, qseq = struct.unpack_from("!BBHHH", inner, quoted_ip_len)
    if qtype == echo_req and (qid, qseq) == (ident, seq):
        return ("error", type_, code)
    return None


def echo_data(v6: bool, packet: bytes) -> bytes:
    """The data of an echo reply as a raw socket delivers it (IPv4: after the IP header)."""
    start = 0 if v6 else (packet[0] & 0x0F) * 4
    return packet[start + 8 :]


# --------------------------------------------------------------------------- running


class _Flow:
    """Collects what a probe learns about its flow and makes the ProbeResult."""

    def __init__(self, r: ProbeRequest, dst: str) -> None:
        self.r, self.dst = r, dst
        self.dport = r.port if r.proto != "icmp" else None
        self.src: str | None = r.src
        self.sport: int | None = r.sport or None

    def learn_local(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            host, port = sock.getsockname()[:2]
            if host not in ("0.0.0.0", "::"):
                self.src = normalise_addr(host)
            if port:
                self.sport = port

    def result(
        self,
        outcome: Outcome,
        detail: str,
        *,
        reply: dict[str, Any] | None = None,
        icmp: IcmpError | str | None = None,
        icmp_from: str | None = None,
        rtt: float | None = None,
        http_status: int | None = None,
        delivery: Delivery | None = None,
    ) -> ProbeResult:
        saw_port = reply.get("peer_port") if reply else None
        if isinstance(icmp, IcmpError):
            icmp_from = icmp_from or icmp.offender
        return ProbeResult(
            outcome=outcome,
            proto=self.r.proto,
            src=self.src,
            sport=self.sport,
            dst=self.dst,
            dport=self.dport,
            served_by=reply.get("served_by") if reply else None,
            server_saw=str(reply["peer"]) if reply and "peer" in reply else None,
            server_saw_port=saw_port if isinstance(saw_port, int) else None,
            icmp=icmp.words if isinstance(icmp, IcmpError) else icmp,
            detail=detail,
            rtt_ms=None if rtt is None else round(rtt * 1000, 3),
            http_status=http_status,
            icmp_from=_unscoped(icmp_from) if icmp is not None else None,
            ttl=self.r.ttl,
            tos=self.r.tos,
            mark=self.r.mark,
            sent=None if self.r.payload is None else len(self.r.payload),
            intact=delivery.intact if delivery else None,
            delivery=delivery.words if delivery else None,
        )

    def failed(self, err: int, sock: socket.socket | None, what: str, rtt: float | None = None) -> ProbeResult:
        """A connect/send/receive that failed with err: ICMP from the error queue if there
        is one (a router said no), else the local stack's reason."""
        icmp = read_errqueue(sock) if sock is not None else None
        outcome = classify_errno(err)
        where = host_port(self.dst, self.dport, no_port="address")
        if err == errno.ECONNREFUSED and icmp is None:
            detail = f"connection refused by {where}"  # a TCP RST
        elif err == errno.ECONNREFUSED and icmp is not None and icmp.offender == self.dst:
            detail = f"port {self.dport}/{self.r.proto} is closed at {self.dst}: ICMP {icmp.words}"
        elif icmp is not None and icmp.offender is not None and icmp.offender == self.src:
            detail = self.no_neighbour(icmp.words)
        elif icmp is not None and icmp.time_exceeded:
            detail = self.expired(what, icmp.offender, icmp.words, icmp.v6)
        elif icmp is not None:
            detail = f"{icmp.offender or 'someone'} answered {what} to {where} with ICMP {icmp.words}"
        else:
            detail = local_error_detail(err, self.dst, self.r.ns)
        return self.result(outcome, detail, icmp=icmp, rtt=rtt if icmp is not None or outcome == "refused" else None)

    def no_neighbour(self, words: str) -> str:
        # The sender's own stack gives up on ARP/ND after ~3 s and says so with an ICMP
        # error from its own address: nobody on the link owns dst (or the next hop).
        return (
            f"no neighbour answered for {self.dst} (or its next hop) on the link; {self.src} "
            f"(this node) reported ICMP {words}"
        )

    def expired(self, what: str, sender: str | None, words: str, v6: bool) -> str:
        """An ICMP time exceeded: the packet's TTL (hop limit) ran out at sender."""
        where = host_port(self.dst, self.dport, no_port="address")
        limit = "hop limit" if v6 else "TTL"
        why = f" ({limit} {self.r.ttl})" if self.r.ttl is not None else f" with the default {limit}: a routing loop?"
        return f"{what} to {where} ran out of {limit} at {sender or 'a router'}{why}; ICMP {words}"

    def error(self, detail: str) -> ProbeResult:
        return self.result("error", detail)


def _unscoped(addr: str | None) -> str | None:
    """fe80::1%eth0 → fe80::1: an address to compare with the lab's."""
    return None if addr is None else normalise_addr(addr.split("%", 1)[0])


def _family(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def _wait(sock: socket.socket, events: int, timeout: float) -> int:
    """poll() one socket; the revents, or 0 on timeout."""
    p = select.poll()
    p.register(sock, events)
    ready = p.poll(max(0, int(timeout * 1000 + 0.999)))
    return int(ready[0][1]) if ready else 0


def _set_recverr(sock: socket.socket) -> None:
    # Without IP_RECVERR the kernel reports only "hard" ICMP errors on connected UDP
    # sockets (a host unreachable would look like a timeout), and queues none of them
    # with their type, code and sender.
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def _set_options(sock: socket.socket, r: ProbeRequest) -> None:
    """The probe's TTL, DS field and mark, on every packet the socket sends (the echo
    request, the SYN, the datagram), set before connect() so its route lookup (and
    `ip rule` tos/dscp/fwmark selectors) sees them too."""
    v6 = sock.family == socket.AF_INET6
    if r.ttl is not None:
        sock.setsockopt(
            *((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) if v6 else (socket.IPPROTO_IP, socket.IP_TTL)), r.ttl
        )
    if r.tos is not None:
        sock.setsockopt(
            *((socket.IPPROTO_IPV6, socket.IPV6_TCLASS) if v6 else (socket.IPPROTO_IP, socket.IP_TOS)), r.tos
        )
    if r.mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, r.mark)


def _bind(sock: socket.socket, flow: _Flow) -> ProbeResult | None:
    r = flow.r
    if r.src is None and not r.sport:
        return None
    if r.sport and sock.type == socket.SOCK_STREAM:
        # A pinned source port is typically reused right away; let bind() pass the
        # previous flow's TIME_WAIT (and the close below avoids making new ones).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    any_addr = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
    try:
        sock.bind((r.src or any_addr, r.sport or 0))
    except OSError as e:
        return flow.error(
            f"cannot bind {r.src or any_addr}:{r.sport or 0} in {r.ns}: {e.strerror} "
            f"({errno.errorcode.get(e.errno or 0, e.errno)})"
        )
    return None


def _recv_until(sock: socket.socket, timeout: float, done: Any) -> tuple[bytes, str]:
    """Read until done(buf), EOF, MAX_REPLY bytes or timeout: (data, "done"|"eof"|
    "timeout"|"reset")."""
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        if done(buf):
            return buf, "done"
        if len(buf) >= MAX_REPLY:
            return buf, "done"
        if not _wait(sock, select.POLLIN, deadline - time.monotonic()):
            return buf, "timeout"
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return buf, "reset"
        if not chunk:
            return buf, "eof"
        buf += chunk


def _connect(sock: socket.socket, flow: _Flow, timeout: float) -> tuple[ProbeResult | None, float]:
    """Non-blocking connect: the 5-tuple is known as soon as the SYN is on its way, even
    if the connection then fails (a failed socket forgets its local port)."""
    r = flow.r
    sock.setblocking(False)
    t0 = time.monotonic()
    err = sock.connect_ex((flow.dst, r.port or 0))
    flow.learn_local(sock)
    if err == errno.EINPROGRESS:
        if not _wait(sock, select.POLLOUT, timeout):
            return flow.result(
                "timeout", f"no answer from {host_port(flow.dst, r.port)} within {timeout:g} s (SYN unanswered)"
            ), 0.0
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    rtt = time.monotonic() - t0
    if err:
        return flow.failed(err, sock, "the connection", rtt), rtt
    flow.learn_local(sock)
    return None, rtt


def _probe_tcp(r: ProbeRequest, flow: _Flow) -> ProbeResult:
    with socket.socket(_family(flow.dst), socket.SOCK_STREAM) as sock:
        _set_recverr(sock)
        _set_options(sock, r)
        failed = _bind(sock, flow)
        if failed:
            return failed
        failed, rtt = _connect(sock, flow, r.timeout)
        if failed:
            return failed
        try:
            if r.proto == "http":
                return _http_exchange(sock, r, flow)
            data, _how = _recv_until(sock, r.timeout, lambda b: b"\n" in b)
            reply = parse_reply(data)
            receipt = _send_payload(sock, r, greeted=reply is not None)
            where = host_port(flow.dst, r.port)
            if reply is None:
                return flow.result(
                    "ok",
                    f"connected to {where} in {rtt * 1000:.1f} ms; no responder greeting within {r.timeout:g} s",
                    rtt=rtt,
                    delivery=_delivery(r, None, "the server"),
                )
            return flow.result(
                "ok",
                f"connected to {where} in {rtt * 1000:.1f} ms; served by {reply['served_by']}, which saw {_saw(reply)}",
                reply=reply,
                rtt=rtt,
                delivery=_delivery(r, receipt, reply["served_by"]),
            )
        finally:
            if r.sport:
                # Close with RST: a FIN close would leave the flow in TIME_WAIT for 60 s
                # and the next probe with the same 5-tuple would fail to connect.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _send_payload(sock: socket.socket, r: ProbeRequest, greeted: bool) -> dict[str, Any] | None:
    """Send the payload over an open TCP connection; a responder (it greeted) then gets
    the end of the stream and answers with its receipt, which this returns. Another
    server is left at once, as before."""
    with contextlib.suppress(OSError):
        sock.setblocking(True)
        sock.settimeout(r.timeout)
        sock.sendall(r.data)
        if not greeted:
            return None
        sock.shutdown(socket.SHUT_WR)
        data, _how = _recv_until(sock, r.timeout, lambda _b: False)
        return parse_receipt(data)
    return None


def parse_receipt(data: bytes) -> dict[str, Any] | None:
    """A responder's receipt line (responder_server.receipt), or None."""
    try:
        obj = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "received" in obj else None


def _delivery(r: ProbeRequest, receipt: dict[str, Any] | None, who: str) -> Delivery | None:
    """What became of the payload the probe was given (None: it was given none)."""
    return None if r.payload is None else compare_receipt(r.payload, receipt, who)


def _saw(reply: dict[str, Any]) -> str:
    peer, port = reply.get("peer"), reply.get("peer_port")
    return host_port(str(peer), port)


def http_request(host: str, payload: bytes | None) -> bytes:
    """GET /, or with a payload a POST of it (the responder answers with its receipt)."""
    method, body = ("GET", b"") if payload is None else ("POST", payload)
    length = "" if payload is None else f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
    return (
        f"{method} / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: netlab-probe\r\n"
        f"Accept: application/json\r\n{length}Connection: close\r\n\r\n"
    ).encode() + body


def _http_exchange(sock: socket.socket, r: ProbeRequest, flow: _Flow) -> ProbeResult:
    request = http_request(host_port(flow.dst, r.port), r.payload)
    t0 = time.monotonic()
    try:
        sock.sendall(request)
    except OSError as e:
        return flow.failed(e.errno or 0, sock, "the request")
    data, how = _recv_until(sock, r.timeout, lambda _b: False)
    rtt = time.monotonic() - t0
    where = f"{flow.dst}:{r.port}"
    if not data:
        if how == "timeout":
            return flow.result("timeout", f"connected to {where}, but no HTTP response within {r.timeout:g} s")
        return flow.error(f"connected to {where}, but it closed without an HTTP response ({how})")
    parsed = parse_http_response(data)
    if parsed is None:
        return flow.error(f"connected to {where}, but the answer is not HTTP: {data[:60]!r}")
    status, _headers, body = parsed
    reply = parse_reply(body)
    who = f"; served by {reply['served_by']}, which saw {_saw(reply)}" if reply else ""
    return flow.result(
        "ok",
        f"HTTP {status} from {where} in {rtt * 1000:.1f} ms{who}",
        reply=reply,
        rtt=rtt,
        http_status=status,
        delivery=_delivery(r, reply, reply["served_by"] if reply else "the server"),
    )


def _probe_udp(r: ProbeRequest, flow: _Flow) -> ProbeResult:
    with socket.socket(_family(flow.dst), socket.SOCK_DGRAM) as sock:
        _set_recverr(sock)
        _set_options(sock, r)
        failed = _bind(sock, flow)
        if failed:
            return failed
        # connect(): the route lookup happens now (local errors show here), and the kernel
        # then delivers only the server's replies and the ICMP errors about this flow.
        err = sock.connect_ex((flow.dst, r.port or 0))
        if err:
            return flow.failed(err, sock, "the datagram")
        flow.learn_local(sock)
        sock.setblocking(False)
        t0 = time.monotonic()
        try:
            sock.send(r.data)
        except OSError as e:
            return flow.failed(e.errno or 0, sock, "the datagram")
        if not _wait(sock, select.POLLIN, r.timeout):
            return flow.result("timeout", f"no answer from {flow.dst}:{r.port}/udp within {r.timeout:g} s")
        try:
            data = sock.recv(65535)
        except OSError as e:  # the ICMP error that woke us
            return flow.failed(e.errno or 0, sock, "the datagram", time.monotonic() - t0)
        rtt = time.monotonic() - t0
        reply = parse_reply(data)
        where = f"{flow.dst}:{r.port}/udp"
        if reply is None:
            return flow.result(
                "ok",
                f"{len(data)} bytes back from {where} in {rtt * 1000:.1f} ms (not a responder)",
                rtt=rtt,
                delivery=_delivery(r, None, "the server"),
            )
        return flow.result(
            "ok",
            f"answer from {where} in {rtt * 1000:.1f} ms; served by {reply['served_by']}, which saw {_saw(reply)}",
            reply=reply,
            rtt=rtt,
            delivery=_delivery(r, reply, reply["served_by"]),
        )


_ident_lock = threading.Lock()
_idents = itertools.count(random.randrange(1 << 16))


def _next_ident() -> int:
    # Raw ICMP sockets see every ICMP packet of their namespace; the echo identifier is
    # how concurrent probes tell their replies apart.
    with _ident_lock:
        return next(_idents) & 0xFFFF


def _route_source(fam: int, dst: str) -> str | None:
    """The source address the kernel would use toward dst (a UDP connect sends nothing)."""
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.connect((dst, 9))
            return normalise_addr(s.getsockname()[0])
        except OSError:
            return None


def _icmp_filter(sock: socket.socket, v6: bool) -> None:
    # Let only echo replies and errors through, so unrelated ICMP (ND, our own echo
    # requests to local addresses) never wakes the probe. The masks list *blocked* types.
    if v6:
        words = [0xFFFFFFFF] * 8
        for t in (1, 2, 3, 4, 129):
            words[t >> 5] &= ~(1 << (t & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *words))
    else:
        allowed = (1 << 0) | (1 << 3) | (1 << 11) | (1 << 12)
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~allowed & 0xFFFFFFFF))


def _probe_icmp(r: ProbeRequest, flow: _Flow) -> ProbeResult:
    fam = _family(flow.dst)
    v6 = fam == socket.AF_INET6
    ident, seq = _next_ident(), 1
    flow.sport = ident
    with socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP) as sock:
        _icmp_filter(sock, v6)
        _set_options(sock, r)
        failed = _bind(sock, flow)
        if failed:
            return failed
        if flow.src is None:
            flow.src = _route_source(fam, flow.dst)
        sock.setblocking(False)
        t0 = time.monotonic()
        try:
            sock.sendto(build_echo(v6, ident, seq, r.data), (flow.dst, 0))
        except OSError as e:
            return flow.failed(e.errno or 0, None, "the echo request")
        deadline = t0 + r.timeout
        while True:
            if not _wait(sock, select.POLLIN, deadline - time.monotonic()):
                return flow.result("timeout", f"no answer from {flow.dst} within {r.timeout:g} s")
            try:
                packet, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                continue
            got = match_icmp(v6, packet, ident, seq)
            if got is None:
                continue
            rtt = time.monotonic() - t0
            sender = normalise_addr(addr[0])
            if got[0] == "reply":
                back = None if r.payload is None else compare_echo(r.payload, echo_data(v6, packet), "the echo reply")
                return flow.result("ok", f"echo reply from {sender} in {rtt * 1000:.1f} ms", rtt=rtt, delivery=back)
            words = icmp_error_words(v6, got[1], got[2])
            if sender == flow.src:
                detail = flow.no_neighbour(words)
            elif is_time_exceeded(v6, got[1]):
                detail = flow.expired("the echo request", sender, words, v6)
            else:
                detail = f"{sender} answered the echo request to {flow.dst} with ICMP {words}"
            return flow.result("unreachable", detail, icmp=words, icmp_from=sender, rtt=rtt)


_PROBERS = {"icmp": _probe_icmp, "tcp": _probe_tcp, "http": _probe_tcp, "udp": _probe_udp}


def check_request(r: ProbeRequest) -> None:
    """ValueError for a request that can never run (a programming error, not a network one)."""
    if r.proto not in PROBE_PROTOS:
        raise ValueError(f"proto must be one of {', '.join(PROBE_PROTOS)}, not {r.proto!r}")
    try:
        dst = ipaddress.ip_address(r.dst)
    except ValueError:
        raise ValueError(f"dst must be an IP address, not {r.dst!r}") from None
    if r.proto == "icmp":
        if r.port is not None or r.sport is not None:
            raise ValueError("icmp probes take no port or sport")
    elif not (isinstance(r.port, int) and 1 <= r.port <= 65535):
        raise ValueError(f"{r.proto} probes need a port 1..65535, not {r.port!r}")
    if r.src is not None:
        try:
            src = ipaddress.ip_address(r.src)
        except ValueError:
            raise ValueError(f"src must be an IP address, not {r.src!r}") from None
        if src.version != dst.version:
            raise ValueError(f"src {r.src} and dst {r.dst} are different address families")
    _check_options(r)
    if not r.ns or "/" in r.ns or r.ns in (".", ".."):
        raise ValueError(f"bad namespace name {r.ns!r}")


def _check_options(r: ProbeRequest) -> None:
    if not r.timeout > 0:
        raise ValueError("timeout must be positive")
    if r.payload is not None and not (isinstance(r.payload, bytes) and 1 <= len(r.payload) <= MAX_PAYLOAD):
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes")
    for name, value, low, high in (
        ("sport", r.sport, 1, 65535),
        ("ttl", r.ttl, 1, 255),
        ("tos", r.tos, 0, 255),
        ("mark", r.mark, 0, 2**32 - 1),
    ):
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise ValueError(f"{name} must be {low}..{high}, not {value!r}")


@contextlib.contextmanager
def _inside(ns: str) -> Iterator[None]:
    """Enter a lab namespace in this (worker) thread, and make sure it really is one:
    probing from the machine's own namespace is never acceptable."""
    target = os.stat(netns.netns_path(ns))
    own = os.stat("/proc/self/ns/net")  # the process's (main thread's) namespace
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        raise PermissionError(
            errno.EPERM, f"{ns} is this process's own network namespace; probes run only inside lab namespaces"
        )
    with netns.entered(ns):
        here = os.stat("/proc/thread-self/ns/net")
        if (here.st_dev, here.st_ino) != (target.st_dev, target.st_ino):  # pragma: no cover
            raise RuntimeError(f"setns into {ns} did not take effect")
        yield


def _run(r: ProbeRequest) -> ProbeResult:
    """One probe in the calling worker thread; never raises for network trouble."""
    flow = _Flow(r, str(ipaddress.ip_address(r.dst)))
    try:
        with _inside(r.ns):
            return _PROBERS[r.proto](r, flow)
    except FileNotFoundError:
        return flow.error(f"namespace {r.ns} does not exist")
    except OSError as e:
        return flow.error(
            f"{r.proto} probe in {r.ns} failed: {e.strerror or e} ({errno.errorcode.get(e.errno or 0, e.errno)})"
        )


def probe(ns: str, proto: str, dst: str, port: int | None = None, **options: Any) -> ProbeResult:
    """Send one flow from namespace ns to dst(:port) and report what happened; options
    are ProbeRequest's other fields (src, sport, timeout, payload, ttl, tos, mark)."""
    r = ProbeRequest(ns, proto, dst, port, **options)
    check_request(r)
    return netns.in_thread(lambda: _run(r))


def probe_many(requests: Sequence[ProbeRequest], *, workers: int = 16) -> list[ProbeResult]:
    """Run probes concurrently in a thread pool; results in request order. Every request
    is checked before any runs."""
    reqs = list(requests)
    for r in reqs:
        check_request(r)
    if not reqs:
        return []
    if len(reqs) == 1 and threading.current_thread() is not threading.main_thread():
        # A worker thread already (a check's): it may enter the namespace itself and come
        # back, without a pool and a thread of its own for one probe.
        return [_run(reqs[0])]
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(reqs))), thread_name_prefix="netlab-probe")
    try:
        return list(pool.map(_run, reqs))
    finally:  # interrupted: the running probes end, the queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
