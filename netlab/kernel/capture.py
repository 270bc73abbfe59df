"""Packet capture inside a lab namespace: which flows really crossed an interface.

A Capture opens an AF_PACKET socket in the node's namespace from a worker thread (the
caller's thread never moves; the socket stays bound to that namespace and interface
whatever thread reads it later) and is left open while a probe runs: the kernel queues
every frame the interface sends or receives in the socket's buffer, and packets() reads
them afterwards. No tcpdump process and no reader thread, so a check can afford one
capture per interface it wants evidence from. (The live observer's `capture`,
netlab.kernel.observe; the Flow and Packet values are netlab.observations'.)

parse_frame() decodes only what checks need, and never raises on a malformed or truncated
frame: Ethernet (802.1Q/802.1ad tags optional) → IPv4 (options too) or IPv6 (past the
usual extension headers) → TCP/UDP/SCTP ports or the ICMP type, code and echo id; and,
for UDP to a VXLAN port, the VNI and the flow of the encapsulated frame; for IP in IP
(protocol 4: ipip, Calico's tunl0; 41: IPv6 inside, ip6tnl), the flow of the inner packet.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Collection
from types import TracebackType

from netlab.kernel import netns
from netlab.observations import CaptureError, Flow, Packet, flow_text
from netlab.pcap import BpfProgram, Frame
from netlab.vocabulary import proto_name

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TAGS = (0x8100, 0x88A8)  # 802.1Q, 802.1ad (QinQ outer tag)
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS, the control message's type
VXLAN_FLAG_I = 0x08  # "the VNI field is valid" (RFC 7348)
# Bytes kept of each frame: enough for Ethernet + IP + UDP + VXLAN + the inner headers,
# even with IPv4 options and IPv6 extension headers. recv() with MSG_TRUNC still tells
# the full length, and a 64 KiB GSO frame is not copied whole.
SNAPLEN = 1024
MAX_DRAIN = 1.0  # packets() stops after this long on a link that never goes quiet

IP_IN_IP = {4: ETH_P_IP, 41: ETH_P_IPV6}  # an IP header's protocol → the inner packet's family
_PORT_PROTOS = frozenset({6, 17, 33, 132, 136})  # tcp, udp, dccp, sctp, udplite: ports first
_ECHO = {1: (8, 0), 58: (128, 129)}  # ICMP(v6) echo request/reply types, whose id we report
# IPv6 extension headers parse_frame steps over: hop-by-hop, routing, destination options
# (length in 8-octet units, not counting the first), and AH (4-octet units, minus 2).
_IPV6_EXT = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51


# --------------------------------------------------------------------------- parsing


def _ether(data: bytes, off: int) -> tuple[int, int] | None:
    """(ethertype, offset of the payload) of the Ethernet frame at off, past VLAN tags."""
    if len(data) < off + 14:
        return None
    (etype,) = struct.unpack_from("!H", data, off + 12)
    off += 14
    for _ in range(2):
        if etype not in VLAN_TAGS:
            break
        if len(data) < off + 4:
            return None
        (etype,) = struct.unpack_from("!H", data, off + 2)
        off += 4
    return etype, off


def _ip(data: bytes, etype: int, off: int) -> tuple[str, str, int, int | None, int] | None:
    """(src, dst, protocol, offset of the L4 header or None, end of the IP packet) of the
    IP packet at off. The L4 offset is None for a non-first fragment (no L4 header) and
    for a chain of extension headers that does not fit the captured bytes."""
    if etype == ETH_P_IP:
        if len(data) < off + 20 or data[off] >> 4 != 4:
            return None
        ihl = (data[off] & 0x0F) * 4
        if ihl < 20 or len(data) < off + ihl:
            return None
        total, frag = struct.unpack_from("!H2xH", data, off + 2)
        # total is 0 in a BIG TCP GSO packet; the frame's end is all there is then.
        end = min(len(data), off + total) if total >= ihl else len(data)
        src = socket.inet_ntop(socket.AF_INET, data[off + 12 : off + 16])
        dst = socket.inet_ntop(socket.AF_INET, data[off + 16 : off + 20])
        return src, dst, data[off + 9], (off + ihl if frag & 0x1FFF == 0 else None), end
    if etype == ETH_P_IPV6:
        if len(data) < off + 40 or data[off] >> 4 != 6:
            return None
        (plen,) = struct.unpack_from("!H", data, off + 4)
        end = min(len(data), off + 40 + plen) if plen else len(data)  # 0: jumbogram / BIG TCP
        src = socket.inet_ntop(socket.AF_INET6, data[off + 8 : off + 24])
        dst = socket.inet_ntop(socket.AF_INET6, data[off + 24 : off + 40])
        nh, pos = data[off + 6], off + 40
        l4: int | None = pos
        for _ in range(16):
            if nh not in _IPV6_EXT and nh not in (_IPV6_FRAGMENT, _IPV6_AH):
                break
            if pos + 8 > end:
                l4 = None
                break
            if nh == _IPV6_FRAGMENT:
                nh, (offset_flags,) = data[pos], struct.unpack_from("!H", data, pos + 2)
                pos += 8
                if offset_flags >> 3:
                    l4 = None  # not the first fragment: no L4 header here
                    break
            elif nh == _IPV6_AH:
                nh, pos = data[pos], pos + (data[pos + 1] + 2) * 4
            else:
                nh, pos = data[pos], pos + (data[pos + 1] + 1) * 8
            l4 = pos
        else:
            l4 = None  # more headers than any sane packet has
        return src, dst, nh, l4, end
    return None


def _flow(data: bytes, ip: tuple[str, str, int, int | None, int]) -> tuple[Flow, int | None, int]:
    """The Flow of a parsed IP header; also the L4 offset and the packet's end."""
    src, dst, num, l4, end = ip
    proto = "ipip" if num in IP_IN_IP else proto_name(num)  # tcpdump's word for both
    sport = dport = icmp_type = icmp_code = None
    if l4 is not None:
        if num in _PORT_PROTOS and l4 + 4 <= end:
            sport, dport = struct.unpack_from("!HH", data, l4)
        elif num in _ECHO and l4 + 2 <= end:
            icmp_type, icmp_code = data[l4], data[l4 + 1]
            if icmp_type in _ECHO[num] and l4 + 6 <= end:
                (sport,) = struct.unpack_from("!H", data, l4 + 4)
    return Flow(src, dst, proto, sport, dport, icmp_type, icmp_code), l4, end


def parse_frame(
    data: bytes,
    ifname: str = "",
    direction: str = "in",
    vxlan_ports: Collection[int] = (4789, 8472),
    *,
    length: int | None = None,
) -> Packet | None:
    """An Ethernet frame → Packet; None when it carries no IP packet (ARP, LLDP, …) or is
    too short for an IP header. length: the frame's real length when data is only its
    first bytes (a capture's snap length); len(data) otherwise."""
    eth = _ether(data, 0)
    if eth is None:
        return None
    ip = _ip(data, *eth)
    if ip is None:
        return None
    outer, l4, end = _flow(data, ip)
    vni = None
    inner = None
    text = f"{direction} {flow_text(outer)}"
    if ip[2] in IP_IN_IP and l4 is not None:
        inner_ip = _ip(data[:end], IP_IN_IP[ip[2]], l4)
        inner = _flow(data, inner_ip)[0] if inner_ip is not None else None
        what = flow_text(inner) if inner is not None else "truncated packet"
        text = f"{direction} {outer.src} > {outer.dst}: IPIP: {what}"
    if outer.proto == "udp" and outer.dport in vxlan_ports and l4 is not None and l4 + 16 <= end:
        vx = l4 + 8
        if data[vx] & VXLAN_FLAG_I:
            vni = int.from_bytes(data[vx + 4 : vx + 7], "big")
            inner_eth = _ether(data, vx + 8)
            inner_ip = _ip(data, *inner_eth) if inner_eth is not None else None
            inner = _flow(data, inner_ip)[0] if inner_ip is not None else None
            what = flow_text(inner) if inner is not None else "non-IP frame"
            text = f"{direction} {outer.src}.{outer.sport} > {outer.dst}.{outer.dport}: VXLAN vni {vni}: {what}"
    return Packet(
        ifname=ifname,
        direction=direction,
        outer=outer,
        vni=vni,
        inner=inner,
        length=len(data) if length is None else length,
        text=text,
    )


# --------------------------------------------------------------------------- capturing


class Capture:
    """Open before the probe, read after: packets queue in the socket meanwhile.

        with Capture(ns, "eth0") as cap:
            probe(...)
            seen = cap.packets()

    Close it (the with block does): an open capture socket keeps its namespace alive
    after `netlab down`.
    """

    def __init__(
        self,
        ns: str,
        ifname: str,
        *,
        vxlan_ports: Collection[int] = (4789, 8472),
        bufsize: int = 4 << 20,
        keep_frames: bool = False,
        bpf: BpfProgram | None = None,
        snaplen: int = SNAPLEN,
    ) -> None:
        self.ns = ns
        self.ifname = ifname
        self.vxlan_ports = frozenset(vxlan_ports)
        self.bufsize = bufsize
        self.keep_frames = keep_frames  # also keep every frame with the kernel's time stamp (pcap files)
        self.frames: list[Frame] = []
        self.bpf = bpf  # the kernel passes only frames this program accepts (netlab.pcap.compile_filter)
        self.snaplen = snaplen
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        self._buf = bytearray(snaplen)
        self._drops = 0

    def __enter__(self) -> Capture:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> Capture:
        """Start capturing; CaptureError if the namespace or the interface is missing."""
        if self._sock is not None:
            return self
        if not self.ns or "/" in self.ns or self.ns in (".", ".."):
            raise CaptureError(self.ns, self.ifname, "bad namespace name")
        try:
            self._sock = netns.in_thread(self._open_inside)
        except FileNotFoundError:
            raise CaptureError(self.ns, self.ifname, f"namespace {self.ns} does not exist") from None
        except OSError as e:
            if e.errno == errno.ENODEV:
                reason = f"no interface {self.ifname} in {self.ns}"
            else:
                reason = f"{e.strerror or e} ({errno.errorcode.get(e.errno or 0, e.errno)})"
            raise CaptureError(self.ns, self.ifname, reason) from None
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        return self

    def _open_inside(self) -> socket.socket:
        target = os.stat(netns.netns_path(self.ns))
        own = os.stat("/proc/self/ns/net")  # the process's (main thread's) namespace
        if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
            raise PermissionError(
                errno.EPERM, "this is the process's own network namespace; captures run only inside lab namespaces"
            )
        with netns.entered(self.ns):
            # Protocol 0: the socket receives nothing until bind() names the interface;
            # with ETH_P_ALL here it would queue every interface's frames until then.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.bufsize)
                except OSError:  # without CAP_NET_ADMIN: capped at net.core.rmem_max
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.bufsize)
                if self.keep_frames:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                if self.bpf is not None:  # before bind(): no frame is queued unfiltered
                    _attach(sock, self.bpf)
                sock.bind((self.ifname, ETH_P_ALL))  # the name is resolved in the socket's namespace
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock

    def packets(self, settle: float = 0.05) -> list[Packet]:
        """Every IP packet queued since the last call, oldest first. Waits until no frame
        has arrived for `settle` seconds (stragglers: a reply still on its way), but at
        most MAX_DRAIN seconds on a link that never goes quiet."""
        if self._sock is None or self._poll is None:
            raise CaptureError(self.ns, self.ifname, "the capture is not open")
        out: list[Packet] = []
        give_up = time.monotonic() + settle + MAX_DRAIN
        while True:
            self._drain(self._sock, out)
            left = min(settle, give_up - time.monotonic())
            if left <= 0 or not self._poll.poll(int(left * 1000 + 0.999)):
                break
        self._count_drops(self._sock)
        return out

    def _drain(self, sock: socket.socket, out: list[Packet]) -> None:
        buf = self._buf
        while True:
            try:
                # MSG_TRUNC: the return value is the frame's full length, not what fit.
                if self.keep_frames:
                    n, anc, _flags, addr = sock.recvmsg_into([buf], 64, socket.MSG_TRUNC)
                else:
                    n, addr = sock.recvfrom_into(buf, self.snaplen, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return
            direction = "out" if addr[2] == PACKET_OUTGOING else "in"
            data = bytes(buf[: min(n, self.snaplen)])
            if self.keep_frames:
                self.frames.append(Frame(_stamp(anc), data, n, direction))
            pkt = parse_frame(data, self.ifname, direction, self.vxlan_ports, length=n)
            if pkt is not None:
                out.append(pkt)

    def _count_drops(self, sock: socket.socket) -> None:
        # struct tpacket_stats {tp_packets, tp_drops}; reading it resets both.
        with contextlib.suppress(OSError):
            _packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self._drops += drops

    @property
    def drops(self) -> int:
        """Frames the kernel dropped because the socket's buffer was full (as of the last
        packets() call): a capture that dropped some cannot prove a packet absent."""
        return self._drops

    def close(self) -> None:
        """Stop capturing (queued packets not read yet are lost). Returns at once: the
        kernel's release of a packet socket waits for an RCU grace period
        (synchronize_net() in packet_release, 8-16 ms here), so a helper thread waits."""
        sock, self._sock, self._poll = self._sock, None, None
        if sock is not None:
            threading.Thread(target=sock.close, name="netlab-capture-close", daemon=True).start()


def _attach(sock: socket.socket, program: BpfProgram) -> None:
    """SO_ATTACH_FILTER: struct sock_fprog {unsigned short len; struct sock_filter *filter}."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(program), ctypes.addressof(code)))


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time of a frame (SCM_TIMESTAMPNS), else now."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("qq", data)
            return float(sec + nsec / 1e9)
    return time.time()
