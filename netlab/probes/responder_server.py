"""The responder process: tiny servers inside lab namespaces that tell each client who
served it. Started and stopped by netlab/probes/responders.py (the parent's side).

Every answer is one JSON object naming the node that served the connection and the
peer address it saw, so a probe learns both *who* answered (which backend a VIP picked)
and *what source* arrived (whether something NATed it on the way):

    {"served_by": "c1", "peer": "10.0.0.5", "peer_port": 40312,
     "local": "10.0.0.2", "local_port": 80, "proto": "tcp"}

and it says what the client sent, so a probe proves its payload arrived intact: a UDP
answer and an HTTP POST's carry a receipt of the datagram or body, and a TCP responder
sends one more line, the receipt, once the client has sent its bytes and shut down its
side of the connection:

    {"received": 1400, "sha256": "…", "block": 22, "crc32": "…"}

The SHA-256 says whether the bytes are the ones sent; a CRC-32 per block (at most 64
blocks, so the receipt stays small: a UDP answer must not outgrow the datagram it
answers) says where they first differ.

All services of a lab run in ONE process (`python -m netlab.probes.responder_server`): it
reads the spec (a JSON list of services) on stdin, opens every listening socket inside
its namespace from a helper thread (a socket stays in the namespace it was created in,
whatever thread uses it later), reports "every socket is bound" (or the first bind
error) on the ready pipe, then serves them all from a single `selectors` loop. No thread
or process per service or per connection, so hundreds of services and concurrent clients
cost one process. Its last log line says why it stopped (`netlab status` shows it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Proto = Literal["tcp", "udp", "http"]
PROTOS: tuple[Proto, ...] = ("tcp", "udp", "http")
MODULE = "netlab.probes.responder_server"

EXIT_WORDS = "exit status"  # the log line the process leaves when it ends: "exit status N: why"
TCP_IDLE = 5.0  # a TCP client that neither talks nor closes for this long is dropped
HTTP_MAX_REQUEST = 16 * 1024  # an HTTP request's head
MAX_KEPT = 64 * 1024  # of a client's bytes (a TCP stream, an HTTP body), what a receipt covers
RECEIPT_BLOCKS = 64
LISTEN_BACKLOG = 1024

# Not exported by Python 3.11's socket module (values from linux/in.h, linux/in6.h).
IP_PKTINFO = 8
IP_FREEBIND = 15
IPV6_FREEBIND = 78


@dataclass(frozen=True)
class Service:
    ns: str  # namespace name (e.g. "lab.c1")
    node: str  # node name reported to clients as served_by
    proto: Proto
    port: int


# --------------------------------------------------------------------------- replies
# Pure helpers, shared with the probe side and unit-tested without root.


def normalise_addr(addr: str) -> str:
    """A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; clients compare against
    the plain IPv4 address they bound, so report that."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return addr


def reply_obj(
    node: str, proto: str, peer: tuple[str, int], local: tuple[str, int], received: bytes | None = None
) -> dict[str, Any]:
    """The answer; with `received` (a datagram, a body), also its receipt."""
    obj = {
        "served_by": node,
        "peer": normalise_addr(peer[0]),
        "peer_port": peer[1],
        "local": normalise_addr(local[0]),
        "local_port": local[1],
        "proto": proto,
    }
    return obj if received is None else obj | receipt(received)


def reply_json(
    node: str, proto: str, peer: tuple[str, int], local: tuple[str, int], received: bytes | None = None
) -> bytes:
    return json.dumps(reply_obj(node, proto, peer, local, received)).encode()


def block_size(length: int) -> int:
    """The bytes one CRC of a receipt covers: 1 up to 64 bytes, then length/64."""
    return max(1, -(-length // RECEIPT_BLOCKS))


def block_crcs(data: bytes, size: int) -> list[str]:
    return [f"{zlib.crc32(data[i : i + size]):08x}" for i in range(0, len(data), size)]


def receipt(data: bytes, total: int | None = None) -> dict[str, Any]:
    """What a responder received (of `total` bytes, when it kept only the first ones):
    enough for the sender to tell whether, and where, it differs from what was sent."""
    size = block_size(len(data))
    return {
        "received": len(data) if total is None else total,
        "sha256": hashlib.sha256(data).hexdigest(),
        "block": size,
        "crc32": "".join(block_crcs(data, size)),
    }


class BadRequest(ValueError):
    pass


def parse_http_request(head: bytes) -> tuple[str, str]:
    """The request line of an HTTP/1.x request head (everything up to the blank line).
    Returns (method, target); headers are accepted and ignored."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # latin-1 decodes anything; kept for clarity
        raise BadRequest(str(e)) from e
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise BadRequest(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    for line in lines[1:]:
        if line and ":" not in line:
            raise BadRequest(f"bad header line: {line[:80]!r}")
    return parts[0], parts[1]


def http_response(status: int, reason: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def content_length(head: bytes) -> int:
    """The Content-Length of a request head (0 without one)."""
    for line in head.decode("latin-1").replace("\r\n", "\n").split("\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            if not value.strip().isdigit():
                raise BadRequest(f"bad Content-Length: {value.strip()[:20]!r}")
            return int(value)
    return 0


def http_answer(head: bytes, reply: dict[str, Any], content: bytes = b"") -> bytes:
    """What the HTTP responder sends for a request (its head and body): the JSON reply
    for GET (headers only for HEAD), with the body's receipt for POST; 405 for other
    methods, 400 for garbage."""
    try:
        method, _target = parse_http_request(head)
        length = content_length(head)
    except BadRequest as e:
        return http_response(400, "Bad Request", (str(e) + "\n").encode(), "text/plain")
    if length > MAX_KEPT:
        return http_response(413, "Content Too Large", f"at most {MAX_KEPT} bytes\n".encode(), "text/plain")
    if method == "POST":
        return http_response(200, "OK", json.dumps(reply | receipt(content)).encode())
    body = json.dumps(reply).encode()
    if method == "GET":
        return http_response(200, "OK", body)
    if method == "HEAD":
        full = http_response(200, "OK", body)
        return full[: len(full) - len(body)]
    return http_response(405, "Method Not Allowed", b"GET, HEAD or POST only\n", "text/plain")


def http_request(buf: bytes | bytearray) -> tuple[bytes, bytes] | None:
    """(head, body) once the whole request is in buf, else None. A head that does not
    end within HTTP_MAX_REQUEST, or a bad or too large Content-Length, is complete as it
    is: http_answer refuses it."""
    end = _find_head_end(buf)
    if end < 0:
        return (bytes(buf), b"") if len(buf) >= HTTP_MAX_REQUEST else None
    head = bytes(buf[:end])
    try:
        length = content_length(head)
    except BadRequest:
        return head, b""
    if length > MAX_KEPT:
        return head, b""
    return (head, bytes(buf[end : end + length])) if len(buf) >= end + length else None


def _find_head_end(buf: bytes | bytearray) -> int:
    """Index just past the blank line ending a request head, or -1 (tolerates bare LF)."""
    i = buf.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    i = buf.find(b"\n\n")
    return i + 2 if i >= 0 else -1


def validate(services: Sequence[Service]) -> None:
    seen: dict[tuple[str, str, int], Service] = {}
    for s in services:
        if not isinstance(s, Service):
            raise TypeError(f"expected Service, got {type(s).__name__}")
        if s.proto not in PROTOS:
            raise ValueError(f"{s}: proto must be one of {', '.join(PROTOS)}")
        if not (isinstance(s.port, int) and 1 <= s.port <= 65535):
            raise ValueError(f"{s}: port must be 1..65535")
        if not s.ns or "/" in s.ns or s.ns in (".", ".."):
            raise ValueError(f"{s}: bad namespace name")
        # tcp and http both listen on TCP: the same port twice can never both bind
        key = (s.ns, "udp" if s.proto == "udp" else "tcp", s.port)
        if key in seen:
            raise ValueError(f"{s} and {seen[key]} both want {key[1]} port {s.port} in {s.ns}")
        seen[key] = s


def describe(s: Service) -> str:
    return f"{s.proto}/{s.port} on node {s.node} (namespace {s.ns})"


# --------------------------------------------------------------------------- child side


class _BindError(Exception):
    def __init__(self, service: Service, err: int | None, text: str) -> None:
        super().__init__(text)
        self.service, self.err, self.text = service, err, text


def _ipv6_enabled() -> bool:
    """Whether the *calling thread's* namespace has IPv6 (net sysctls follow the reading
    task's namespace). netlab disables IPv6 in nodes that never use it."""
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "rb") as f:
            return f.read().strip() != b"1"
    except FileNotFoundError:  # no IPv6 in this kernel at all
        return False


def _bind_one(s: Service, v6: bool) -> socket.socket:
    """Create and bind the socket for one service in the calling thread's namespace."""
    stype = socket.SOCK_DGRAM if s.proto == "udp" else socket.SOCK_STREAM
    if v6:
        sock = socket.socket(socket.AF_INET6, stype)
        try:
            # Dual-stack: one socket answers IPv4 (as ::ffff:a.b.c.d) and IPv6 clients.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            # FREEBIND: a service may be declared before (or without) its address, e.g. a
            # VIP that a later step adds; the bind must not depend on that ordering.
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            _common_opts(sock, s)
            sock.bind(("::", s.port))
        except OSError as e:
            sock.close()
            if e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            v6 = False
    if not v6:
        sock = socket.socket(socket.AF_INET, stype)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            _common_opts(sock, s)
            sock.bind(("0.0.0.0", s.port))
        except OSError:
            sock.close()
            raise
    try:
        if s.proto == "udp":
            # Learn which local address each datagram was sent to, to report it and to
            # answer *from* it: a wildcard socket would otherwise reply from whatever
            # source the route picks, and a connected client drops such replies.
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _common_opts(sock: socket.socket, s: Service) -> None:
    if s.proto != "udp":
        # Rebinding a port that still has TIME_WAIT connections (a restarted responder)
        # must work. Not for UDP: there SO_REUSEADDR lets a second socket silently share
        # the port, hiding exactly the "port already in use" mistake we want reported.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def open_sockets(services: Sequence[Service]) -> list[tuple[Service, socket.socket]]:
    """Bind every service's socket in its namespace (from a helper thread, so this
    thread's namespace never changes). On the first failure close everything and raise
    _BindError naming the service."""
    from netlab.kernel import netns

    groups: dict[str, list[Service]] = {}
    for s in services:
        groups.setdefault(s.ns, []).append(s)
    out: list[tuple[Service, socket.socket]] = []

    def work() -> None:
        for ns, group in groups.items():
            try:
                with netns.entered(ns):
                    v6 = _ipv6_enabled()
                    for s in group:
                        try:
                            out.append((s, _bind_one(s, v6)))
                        except OSError as e:  # re-raised as _BindError, which is no OSError
                            raise _BindError(s, e.errno, f"bind: {e.strerror or e}") from e
            except OSError as e:  # only entering (or leaving) the namespace gets here
                raise _BindError(group[0], e.errno, f"cannot enter the namespace: {e.strerror or e}") from e

    try:
        netns.in_thread(work)
    except BaseException:
        for _, sock in out:
            sock.close()
        raise
    return out


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    service: Service
    peer: tuple[str, int]
    deadline: float
    out: bytes = b""
    inbuf: bytearray = field(default_factory=bytearray)
    received: int = 0  # bytes the client sent (inbuf keeps the first MAX_KEPT)
    closing: bool = False  # close once `out` is sent


class _Server:
    """One selectors loop over every listening socket and every open connection."""

    def __init__(self, bound: list[tuple[Service, socket.socket]], wake_fd: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.stop = False
        self.wake_fd = wake_fd
        self.sel.register(wake_fd, selectors.EVENT_READ, ("wake", None))
        for s, sock in bound:
            self.sel.register(sock, selectors.EVENT_READ, ("udp" if s.proto == "udp" else "listen", (s, sock)))
        self.v6 = {id(sock): sock.family == socket.AF_INET6 for _, sock in bound}

    def run(self) -> None:
        next_sweep = time.monotonic() + 0.5
        while not self.stop:
            for key, mask in self.sel.select(timeout=0.5):
                kind, data = key.data
                try:
                    if kind == "listen":
                        self._accept(*data)
                    elif kind == "udp":
                        self._udp(*data)
                    elif kind == "conn":
                        self._conn_event(data, mask)
                    else:
                        self._wake()
                except Exception as e:  # one bad peer must never take every service down
                    _log(f"error handling {kind}: {e!r}")
                    if kind == "conn":
                        self._close(data)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.5
                for c in [c for c in self.conns.values() if c.deadline <= now]:
                    self._close(c)
        for c in list(self.conns.values()):
            self._close(c)
        self.sel.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass
        # The signal handler already set self.stop; nothing else wakes us.

    def _accept(self, s: Service, lsock: socket.socket) -> None:
        for _ in range(64):  # drain a burst, but let other sockets have a turn
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ECONNABORTED, EMFILE, ...: skip this one
                _log(f"accept on {describe(s)}: {e}")
                return
            sock.setblocking(False)
            c = _Conn(sock, s, peer[:2], time.monotonic() + TCP_IDLE)
            self.conns[sock.fileno()] = c
            if s.proto == "tcp":
                c.out = reply_json(s.node, "tcp", peer[:2], sock.getsockname()[:2]) + b"\n"
            _log(f"{s.proto} {s.node}:{s.port} <- {normalise_addr(peer[0])}:{peer[1]}")
            self.sel.register(sock, selectors.EVENT_READ, ("conn", c))
            self._flush(c)

    def _conn_event(self, c: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(c)
            if c.sock.fileno() < 0:
                return
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET and friends: the client is gone
            self._close(c)
            return
        if not data:
            self._end_of_stream(c)
            return
        c.deadline = time.monotonic() + TCP_IDLE
        if c.closing:
            return
        c.received += len(data)
        c.inbuf += data[: max(0, MAX_KEPT + HTTP_MAX_REQUEST - len(c.inbuf))]
        if c.service.proto != "http":
            return  # tcp: the receipt goes when the client has sent everything
        request = http_request(c.inbuf)
        if request is None:
            return
        head, content = request
        reply = reply_obj(c.service.node, "http", c.peer, c.sock.getsockname()[:2])
        c.out, c.closing = http_answer(head, reply, content), True
        self._flush(c)

    def _end_of_stream(self, c: _Conn) -> None:
        """The client shut down its side. A TCP client that sent bytes gets their receipt
        (then the connection closes); anything else just closes."""
        if c.service.proto != "tcp" or c.closing or not c.received:
            self._close(c)
            return
        c.out += json.dumps(receipt(bytes(c.inbuf[:MAX_KEPT]), c.received)).encode() + b"\n"
        c.closing = True
        self._flush(c)

    def _flush(self, c: _Conn) -> None:
        while c.out:
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(c)
                return
            c.out = c.out[n:]
        if not c.out and c.closing:
            self._close(c)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        if self.sel.get_key(c.sock).events != want:
            self.sel.modify(c.sock, want, ("conn", c))

    def _close(self, c: _Conn) -> None:
        if self.conns.pop(c.sock.fileno(), None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        c.sock.close()

    def _udp(self, s: Service, sock: socket.socket) -> None:
        v6 = self.v6[id(sock)]
        for _ in range(64):  # a burst, then let other sockets have a turn
            try:
                data, anc, _flags, peer = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. an ICMP error for an earlier reply: not fatal
                _log(f"udp {describe(s)}: {e}")
                continue
            local_ip, cmsg = _pktinfo(anc, v6)
            local = (local_ip or sock.getsockname()[0], s.port)
            reply = reply_json(s.node, "udp", peer[:2], local, received=data)
            try:
                sock.sendmsg([reply], cmsg, 0, peer)
            except OSError:
                # e.g. EINVAL when the client targeted a broadcast address, which is not a
                # valid source: let the kernel pick the source instead.
                with contextlib.suppress(OSError):
                    sock.sendmsg([reply], [], 0, peer)
            _log(f"udp {s.node}:{s.port} <- {normalise_addr(peer[0])}:{peer[1]}")


def _pktinfo(anc: list[tuple[int, int, bytes]], v6: bool) -> tuple[str | None, list[tuple[int, int, bytes]]]:
    """The destination address of a received datagram, and the ancillary data that makes
    the reply leave from it (interface left to routing, except for link-local)."""
    for level, kind, data in anc:
        if v6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            addr = socket.inet_ntop(socket.AF_INET6, data[:16])
            ifindex = struct.unpack("I", data[16:20])[0]
            keep_if = addr.lower().startswith("fe80")
            return addr, [
                (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data[:16] + struct.pack("I", ifindex if keep_if else 0))
            ]
        if not v6 and level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }: addr is the
            # header destination, i.e. what the client targeted.
            dst = data[8:12]
            return socket.inet_ntop(socket.AF_INET, dst), [
                (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i", 0) + dst + b"\0\0\0\0")
            ]
    return None, []


def _log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} responders[{os.getpid()}]: {msg}\n")


def _raise_nofile() -> None:
    # Hundreds of services plus their clients need more than the usual 1024 descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 4) or args[0] != "--ready-fd" or (len(args) == 4 and args[2] != "--lab"):
        sys.stderr.write(f"usage: python -m {MODULE} --ready-fd FD [--lab LAB] < spec.json\n")
        return 2
    ready_fd = int(args[1])

    def report(obj: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, json.dumps(obj).encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(ready_fd)

    try:
        spec = json.loads(sys.stdin.buffer.read())
        services = [Service(**d) for d in spec["services"]]
        validate(services)
    except Exception as e:
        report({"ok": False, "error": f"bad responder spec: {e}"})
        return 2
    _raise_nofile()

    started = time.monotonic()
    try:
        bound = open_sockets(services)
    except _BindError as e:
        _log(f"cannot serve {describe(e.service)}: {e.text}")
        report(
            {
                "ok": False,
                "service": asdict(e.service),
                "errno": e.err,
                "error": e.text + (f" ({errno.errorcode.get(e.err, e.err)})" if e.err else ""),
            }
        )
        return 1
    except Exception as e:
        report({"ok": False, "error": f"cannot open sockets: {e!r}"})
        return 1

    server, stopped_by = _stoppable_server(bound)
    # Don't keep the spec memfd (stdin) open for the daemon's whole life.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _log(
        f"serving {len(bound)} services in {len({s.ns for s in services})} namespaces "
        f"(bound in {(time.monotonic() - started) * 1000:.1f} ms)"
    )
    report({"ok": True, "pid": os.getpid(), "services": len(bound)})
    try:
        server.run()
    except BaseException as e:
        _log(f"{EXIT_WORDS} 1: crashed: {e!r}")  # its last words, for `netlab status`
        raise
    for _, sock in bound:
        sock.close()
    _log(f"{EXIT_WORDS} 0: stopped by {stopped_by[0] if stopped_by else 'request'}")
    return 0


def _stoppable_server(bound: list[tuple[Service, socket.socket]]) -> tuple[_Server, list[str]]:
    """The server, and the names of the signals that stopped it. SIGTERM/SIGINT end the
    loop cleanly: the handler only sets a flag, and the wakeup pipe makes the selector
    return at once instead of at its next timeout."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    server = _Server(bound, wake_r)
    stopped_by: list[str] = []

    def on_signal(sig: int, _frame: object) -> None:
        stopped_by.append(signal.Signals(sig).name)
        server.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # detached: no terminal to hang up on
    return server, stopped_by


if __name__ == "__main__":
    sys.exit(main())
