"""Rootless tests of netlab.kernel.capture: frames crafted by hand (IPv4 with and without
options, IPv6 with extension headers, TCP/UDP/ICMP, VXLAN around UDP/TCP/ARP, VLAN tags,
fragments, truncation) through parse_frame, and the Capture edges that need no namespace."""

from __future__ import annotations

import socket
import struct

import pytest

from netlab.kernel.capture import Capture, parse_frame
from netlab.observations import CaptureError, Flow, Packet, flow_text

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


# --------------------------------------------------------------------------- frame makers


def eth(etype: int, payload: bytes, tags: tuple[int, ...] = ()) -> bytes:
    head = MAC_B + MAC_A
    for i, vid in enumerate(tags):
        head += struct.pack("!HH", 0x88A8 if i == 0 and len(tags) > 1 else 0x8100, vid)
    return head + struct.pack("!H", etype) + payload


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, *, options: bytes = b"", frag: int = 0, total: int | None = None
) -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    length = ihl * 4 + len(payload) if total is None else total
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 1, frag, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return head + options + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, plen: int | None = None) -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s",
            6 << 28,
            len(payload) if plen is None else plen,
            nh,
            64,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        + payload
    )


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"hello") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(type_: int, code: int, ident: int = 0, seq: int = 1, rest: bytes = b"ping") -> bytes:
    return struct.pack("!BBHHH", type_, code, 0, ident, seq) + rest


def vxlan(vni: int, inner: bytes, flags: int = 0x08) -> bytes:
    return struct.pack("!B3xI", flags, vni << 8) + inner


ARP = eth(0x0806, bytes.fromhex("0001080006040001") + MAC_A + bytes(4) + bytes(6) + bytes(4))


def v4_tcp() -> bytes:
    return eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80)))


def overlay_frame(inner_l4: bytes, proto: int = 17, dport: int = 8472) -> bytes:
    inner = eth(0x0800, ipv4("10.244.1.2", "10.244.2.3", proto, inner_l4))
    return eth(0x0800, ipv4("192.168.49.2", "192.168.49.3", 17, udp(41000, dport, vxlan(1, inner))))


# --------------------------------------------------------------------------- IPv4


def test_ipv4_tcp() -> None:
    pkt = parse_frame(v4_tcp(), "eth0", "out")
    assert pkt == Packet(
        ifname="eth0",
        direction="out",
        outer=Flow("10.0.0.1", "10.0.0.2", "tcp", 40000, 80),
        vni=None,
        inner=None,
        length=len(v4_tcp()),
        text="out 10.0.0.1.40000 > 10.0.0.2.80 tcp",
    )
    assert pkt.flow is pkt.outer


def test_ipv4_with_options_finds_the_l4_header_after_them() -> None:
    options = bytes([0x94, 0x04, 0, 0]) + bytes([1, 1, 1, 0])  # router alert, NOPs, end
    frame = eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(5353, 53), options=options))
    pkt = parse_frame(frame)
    assert pkt is not None
    assert pkt.outer == Flow("10.0.0.1", "10.0.0.2", "udp", 5353, 53)
    assert pkt.direction == "in" and pkt.ifname == ""


def test_ipv4_udp_ignores_ethernet_padding() -> None:
    frame = eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b""))) + bytes(18)  # padded to 60
    pkt = parse_frame(frame)
    assert pkt is not None and pkt.outer == Flow("10.0.0.1", "10.0.0.2", "udp", 1, 2)
    assert pkt.length == len(frame) == 60


@pytest.mark.parametrize("type_,words", [(8, "echo request"), (0, "echo reply")])
def test_icmp_echo_id_is_the_sport(type_: int, words: str) -> None:
    pkt = parse_frame(eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp(type_, 0, ident=4242))), "eth0", "in")
    assert pkt is not None
    assert pkt.outer == Flow("10.0.0.1", "10.0.0.2", "icmp", 4242, None, type_, 0)
    assert pkt.text == f"in 10.0.0.1 > 10.0.0.2 icmp {words} (type {type_} code 0) id 4242"


def test_icmp_error_has_no_id() -> None:
    quoted = ipv4("10.0.0.2", "10.9.9.9", 17, udp(1000, 53))
    pkt = parse_frame(eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp(3, 1, rest=quoted))))
    assert pkt is not None
    assert pkt.outer == Flow("10.0.0.1", "10.0.0.2", "icmp", None, None, 3, 1)
    assert pkt.text == "in 10.0.0.1 > 10.0.0.2 icmp host unreachable (type 3 code 1)"


def test_ipv4_later_fragment_has_no_ports() -> None:
    frame = eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, b"\x00" * 16, frag=185))  # offset 1480
    pkt = parse_frame(frame)
    assert pkt is not None and pkt.outer == Flow("10.0.0.1", "10.0.0.2", "udp", None, None)
    assert pkt.text == "in 10.0.0.1 > 10.0.0.2 udp"


def test_ipv4_first_fragment_has_ports() -> None:
    frame = eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 9), frag=0x2000))  # MF set, offset 0
    pkt = parse_frame(frame)
    assert pkt is not None and (pkt.outer.sport, pkt.outer.dport) == (7, 9)


def test_gso_packet_with_zero_total_length() -> None:
    # BIG TCP: a GSO packet larger than 64 KiB carries total length 0.
    frame = eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2), total=0))
    pkt = parse_frame(frame, length=200_000)
    assert pkt is not None and pkt.outer.sport == 1 and pkt.length == 200_000


def test_other_protocols_are_numbers() -> None:
    pkt = parse_frame(eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 47, b"\x00" * 8)))  # GRE
    assert pkt is not None and pkt.outer == Flow("10.0.0.1", "10.0.0.2", "47", None, None)
    sctp = parse_frame(eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 132, struct.pack("!HHI", 5000, 38412, 0))))
    assert sctp is not None and sctp.outer == Flow("10.0.0.1", "10.0.0.2", "sctp", 5000, 38412)


@pytest.mark.parametrize("tags", [(100,), (10, 20)], ids=["802.1q", "qinq"])
def test_vlan_tags_are_skipped(tags: tuple[int, ...]) -> None:
    pkt = parse_frame(eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80)), tags))
    assert pkt is not None and pkt.outer == Flow("10.0.0.1", "10.0.0.2", "tcp", 40000, 80)


# --------------------------------------------------------------------------- IPv6


def test_ipv6_tcp() -> None:
    pkt = parse_frame(eth(0x86DD, ipv6("fd00::1", "fd00::2", 6, tcp(43154, 8080))), "eth0", "out")
    assert pkt is not None
    assert pkt.outer == Flow("fd00::1", "fd00::2", "tcp", 43154, 8080)
    assert pkt.text == "out fd00::1.43154 > fd00::2.8080 tcp"


def test_ipv6_icmpv6_echo() -> None:
    pkt = parse_frame(eth(0x86DD, ipv6("fd00::1", "fd00::2", 58, icmp(128, 0, ident=7))))
    assert pkt is not None
    assert pkt.outer == Flow("fd00::1", "fd00::2", "icmpv6", 7, None, 128, 0)
    assert pkt.text == "in fd00::1 > fd00::2 icmpv6 echo request (ICMPv6 type 128 code 0) id 7"


def test_ipv6_neighbour_solicitation_has_no_id() -> None:
    pkt = parse_frame(eth(0x86DD, ipv6("fe80::1", "ff02::1:ff00:2", 58, icmp(135, 0, ident=99))))
    assert pkt is not None and pkt.outer == Flow("fe80::1", "ff02::1:ff00:2", "icmpv6", None, None, 135, 0)


def test_ipv6_extension_headers_are_skipped() -> None:
    # hop-by-hop (8 bytes) → destination options (16 bytes) → fragment (first) → UDP
    hbh = bytes([60, 0, 5, 2, 0, 0, 1, 0])  # next: dest opts; router alert
    dst_opts = bytes([44, 1]) + bytes([1, 12]) + bytes(12)  # next: fragment; PadN
    frag = struct.pack("!BBHI", 17, 0, 0x0001, 0x1234)  # next: UDP; offset 0, M=1
    frame = eth(0x86DD, ipv6("fd00::1", "fd00::2", 0, hbh + dst_opts + frag + udp(546, 547)))
    pkt = parse_frame(frame)
    assert pkt is not None and pkt.outer == Flow("fd00::1", "fd00::2", "udp", 546, 547)


def test_ipv6_later_fragment_has_no_ports() -> None:
    frag = struct.pack("!BBHI", 6, 0, 1480 << 3, 0x1234)
    pkt = parse_frame(eth(0x86DD, ipv6("fd00::1", "fd00::2", 44, frag + bytes(40))))
    assert pkt is not None and pkt.outer == Flow("fd00::1", "fd00::2", "tcp", None, None)


def test_ipv6_ah_is_skipped() -> None:
    ah = bytes([6, 4]) + bytes(22)  # next: TCP; (4 + 2) * 4 = 24 bytes
    pkt = parse_frame(eth(0x86DD, ipv6("fd00::1", "fd00::2", 51, ah + tcp(1, 2))))
    assert pkt is not None and pkt.outer == Flow("fd00::1", "fd00::2", "tcp", 1, 2)


# --------------------------------------------------------------------------- VXLAN


def test_vxlan_udp_inner_flow() -> None:
    frame = eth(
        0x0800,
        ipv4(
            "192.168.49.2",
            "192.168.49.3",
            17,
            udp(41000, 8472, vxlan(1, eth(0x0800, ipv4("10.244.1.2", "10.244.2.3", 17, udp(35000, 53))))),
        ),
    )
    pkt = parse_frame(frame, "eth0", "out")
    assert pkt is not None
    assert pkt.outer == Flow("192.168.49.2", "192.168.49.3", "udp", 41000, 8472)
    assert pkt.vni == 1
    assert pkt.inner == Flow("10.244.1.2", "10.244.2.3", "udp", 35000, 53)
    assert pkt.flow == pkt.inner


def test_vxlan_tcp_text_reads_like_tcpdump() -> None:
    frame = overlay_frame(tcp(35000, 8080), proto=6)
    pkt = parse_frame(frame, "eth0", "out")
    assert pkt is not None and pkt.flow == Flow("10.244.1.2", "10.244.2.3", "tcp", 35000, 8080)
    assert pkt.text == (
        "out 192.168.49.2.41000 > 192.168.49.3.8472: VXLAN vni 1: 10.244.1.2.35000 > 10.244.2.3.8080 tcp"
    )


def test_vxlan_large_vni_and_ipv6_underlay() -> None:
    inner = eth(0x86DD, ipv6("fd10::1", "fd10::2", 58, icmp(129, 0, ident=3)))
    frame = eth(0x86DD, ipv6("fd00::1", "fd00::2", 17, udp(50000, 4789, vxlan(0xABCDEF, inner))))
    pkt = parse_frame(frame)
    assert pkt is not None and pkt.vni == 0xABCDEF
    assert pkt.inner == Flow("fd10::1", "fd10::2", "icmpv6", 3, None, 129, 0)


def test_vxlan_carrying_arp_has_a_vni_but_no_inner_flow() -> None:
    frame = eth(0x0800, ipv4("192.168.49.2", "192.168.49.3", 17, udp(41000, 8472, vxlan(1, ARP))))
    pkt = parse_frame(frame, direction="out")
    assert pkt is not None and pkt.vni == 1 and pkt.inner is None
    assert pkt.flow == pkt.outer
    assert pkt.text == "out 192.168.49.2.41000 > 192.168.49.3.8472: VXLAN vni 1: non-IP frame"


def test_vxlan_needs_a_vxlan_port() -> None:
    frame = overlay_frame(udp(1, 2), dport=9999)
    pkt = parse_frame(frame)
    assert pkt is not None and pkt.vni is None and pkt.inner is None
    custom = parse_frame(frame, vxlan_ports={9999})
    assert custom is not None and custom.vni == 1 and custom.inner is not None


def test_vxlan_needs_the_i_flag() -> None:
    inner = eth(0x0800, ipv4("10.244.1.2", "10.244.2.3", 17, udp(1, 2)))
    frame = eth(0x0800, ipv4("192.168.49.2", "192.168.49.3", 17, udp(41000, 8472, vxlan(1, inner, flags=0))))
    pkt = parse_frame(frame)
    assert pkt is not None and pkt.vni is None and pkt.inner is None


# --------------------------------------------------------------------------- not IP, broken


def test_arp_is_not_a_packet() -> None:
    assert parse_frame(ARP) is None


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00" * 13,
        eth(0x0800, b"\x45\x00"),  # IPv4 header cut short
        eth(0x0800, b"\x65" + bytes(19)),  # version 6 in an IPv4 ethertype
        eth(0x0800, b"\x43" + bytes(19)),  # IHL 3 (< 5)
        eth(0x86DD, bytes(39)),  # IPv6 header cut short
        eth(0x8100, b"\x00"),  # VLAN tag cut short
    ],
    ids=["empty", "short-ethernet", "short-ipv4", "bad-version", "bad-ihl", "short-ipv6", "short-vlan"],
)
def test_broken_frames_are_none(frame: bytes) -> None:
    assert parse_frame(frame) is None


@pytest.mark.parametrize(
    "frame",
    [
        overlay_frame(tcp(35000, 8080), proto=6),
        eth(0x86DD, ipv6("fd00::1", "fd00::2", 0, bytes([60, 0]) + bytes(6) + bytes([6, 0]) + bytes(6) + tcp(1, 2))),
        eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, ident=1))),
    ],
    ids=["vxlan", "ipv6-ext", "icmp"],
)
def test_every_truncation_is_safe(frame: bytes) -> None:
    """A capture keeps only the first bytes of a frame: whatever the cut, parse_frame
    returns None or a Packet, never raises, and never invents ports it did not see."""
    full = parse_frame(frame)
    assert full is not None
    for cut in range(len(frame)):
        pkt = parse_frame(frame[:cut], length=len(frame))
        if pkt is None:
            continue
        assert pkt.length == len(frame)
        assert pkt.outer.src == full.outer.src and pkt.outer.dst == full.outer.dst
        assert pkt.outer.sport in (None, full.outer.sport)
        if pkt.inner is not None:
            assert full.inner is not None and pkt.inner.sport in (None, full.inner.sport)


def test_ipv6_header_chain_longer_than_the_frame() -> None:
    hbh = bytes([0, 200]) + bytes(6)  # claims (200 + 1) * 8 bytes, next header hop-by-hop again
    pkt = parse_frame(eth(0x86DD, ipv6("fd00::1", "fd00::2", 0, hbh)))
    assert pkt is not None and pkt.outer.sport is None


# --------------------------------------------------------------------------- words, Capture edges


def test_flow_text_forms() -> None:
    assert flow_text(Flow("10.0.0.1", "10.0.0.2", "udp", 1, 2)) == "10.0.0.1.1 > 10.0.0.2.2 udp"
    assert flow_text(Flow("10.0.0.1", "10.0.0.2", "47", None, None)) == "10.0.0.1 > 10.0.0.2 47"
    assert (
        flow_text(Flow("10.0.0.1", "10.0.0.2", "icmp", None, None, 11, 0))
        == "10.0.0.1 > 10.0.0.2 icmp TTL exceeded in transit (type 11 code 0)"
    )


def test_capture_error_names_namespace_interface_and_reason() -> None:
    err = CaptureError("lab.a", "eth9", "no interface eth9 in lab.a")
    assert (err.ns, err.ifname, err.reason) == ("lab.a", "eth9", "no interface eth9 in lab.a")
    assert str(err) == "cannot capture on eth9 in lab.a: no interface eth9 in lab.a"


def test_unopened_capture_refuses_to_read() -> None:
    cap = Capture("lab.a", "eth0")
    with pytest.raises(CaptureError, match="not open"):
        cap.packets()
    cap.close()  # closing an unopened capture is harmless


@pytest.mark.parametrize("ns", ["", "..", "a/b"])
def test_bad_namespace_names(ns: str) -> None:
    with pytest.raises(CaptureError, match="bad namespace name"):
        Capture(ns, "eth0").open()


def test_missing_namespace() -> None:
    with pytest.raises(CaptureError) as info, Capture("netlab-no-such-namespace.x", "eth0"):
        pass
    assert info.value.reason == "namespace netlab-no-such-namespace.x does not exist"


# --------------------------------------------------------------------------- IP in IP


def test_ipip_inner_flow_and_text() -> None:
    """Calico's tunl0 on the wire: protocol 4, the pod's packet right after the outer header."""
    frame = eth(0x0800, ipv4("192.168.49.2", "192.168.49.3", 4, ipv4("10.244.0.2", "10.244.1.2", 6, tcp(40000, 8080))))
    pkt = parse_frame(frame, "eth0", "out")
    assert pkt is not None
    assert pkt.outer == Flow("192.168.49.2", "192.168.49.3", "ipip", None, None)
    assert pkt.inner == Flow("10.244.0.2", "10.244.1.2", "tcp", 40000, 8080)
    assert pkt.flow == pkt.inner and pkt.vni is None
    assert pkt.text == "out 192.168.49.2 > 192.168.49.3: IPIP: 10.244.0.2.40000 > 10.244.1.2.8080 tcp"


def test_ipv6_inside_ipv6_is_ipip_too() -> None:
    inner = ipv6("fd00::1", "fd00::2", 58, icmp(128, 0, ident=9))
    pkt = parse_frame(eth(0x86DD, ipv6("2001:db8::1", "2001:db8::2", 41, inner)))
    assert pkt is not None and pkt.outer.proto == "ipip"
    assert pkt.inner is not None and (pkt.inner.src, pkt.inner.proto, pkt.inner.sport) == ("fd00::1", "icmpv6", 9)


def test_ipip_truncated_inside_has_no_inner_flow() -> None:
    pkt = parse_frame(eth(0x0800, ipv4("192.168.49.2", "192.168.49.3", 4, b"\x45\x00")))
    assert pkt is not None and pkt.inner is None and pkt.text.endswith("IPIP: truncated packet")
