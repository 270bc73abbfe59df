"""Rootless tests of netlab.pcap (the classic pcap format, byte by byte, and back) and of
the live capture's lines (netlab.probes.live.frame_line). Real files read back by
`tcpdump -r` are in tests/kernel/test_capture_cli.py."""

from __future__ import annotations

import io
import struct
from datetime import datetime
from pathlib import Path

import pytest

from netlab.pcap import (
    LINKTYPE_ETHERNET,
    SNAPLEN,
    Frame,
    PcapWriter,
    check_file_name,
    header,
    read_pcap,
    record,
    save_captures,
)
from netlab.probes.live import frame_line
from tests.unit.test_capture_unit import eth, ipv4, tcp

FRAME = eth(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 8080)))


def test_header_is_tcpdumps_classic_microsecond_format() -> None:
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("=IHHiIII", header())
    assert (magic, major, minor, zone, sigfigs) == (0xA1B2C3D4, 2, 4, 0, 0)
    assert (snaplen, linktype) == (SNAPLEN, LINKTYPE_ETHERNET) == (262144, 1)


def test_record_carries_time_captured_and_wire_length() -> None:
    rec = record(Frame(1700000000.25, b"\x01\x02\x03", 1514))
    assert struct.unpack("=IIII", rec[:16]) == (1700000000, 250000, 3, 1514)
    assert rec[16:] == b"\x01\x02\x03"
    # a frame never claims less on the wire than was captured
    assert struct.unpack("=IIII", record(Frame(1.0, b"abcd", 0))[:16])[3] == 4


def test_writer_round_trip_and_each_record_lands_whole() -> None:
    buf = io.BytesIO()
    writer = PcapWriter(buf)
    assert buf.getvalue() == header()  # the header at once: an empty capture is a valid file
    frames = [Frame(10.5, FRAME, len(FRAME)), Frame(11.000001, FRAME[:20], 60)]
    for f in frames:
        writer.write(f)
    assert writer.count == 2
    linktype, back = read_pcap(buf.getvalue())
    assert linktype == LINKTYPE_ETHERNET
    assert [(f.data, f.length) for f in back] == [(FRAME, len(FRAME)), (FRAME[:20], 60)]
    assert [round(f.time, 6) for f in back] == [10.5, 11.000001]


def test_read_pcap_refuses_what_is_not_one() -> None:
    with pytest.raises(ValueError, match="not a pcap file: magic 0a0d0d0a"):
        read_pcap(bytes.fromhex("0a0d0d0a") + bytes(24))  # pcapng
    with pytest.raises(ValueError, match="cut short"):
        read_pcap(header() + record(Frame(1.0, FRAME, len(FRAME)))[:-1])


def test_check_file_names_and_duplicates(tmp_path: Path) -> None:
    assert check_file_name("pod1 reaches pod4 across the overlay") == "pod1-reaches-pod4-across-the-overlay.pcap"
    assert check_file_name("../../etc/passwd") == "etc-passwd.pcap"
    assert check_file_name("✗✗") == "check.pcap"
    written = save_captures(str(tmp_path / "out"), {"a b": [Frame(1.0, FRAME, len(FRAME))], "a/b": []})
    assert [Path(p).name for p in written] == ["a-b.pcap", "a-b-2.pcap"]
    assert read_pcap(Path(written[0]).read_bytes())[1][0].data == FRAME
    assert read_pcap(Path(written[1]).read_bytes())[1] == []


def test_live_lines_decode_like_the_checks_evidence() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901).timestamp()
    line = frame_line(Frame(stamp, FRAME, len(FRAME), "out"), "eth0", (8472,))
    assert line == "03:04:05.678901 out 10.0.0.1.40000 > 10.0.0.2.8080 tcp, length 54"
    arp = eth(0x0806, bytes(28))
    assert frame_line(Frame(stamp, arp, 60, "in"), "eth0", ()) == "03:04:05.678901 in ARP, length 60"
    assert frame_line(Frame(stamp, b"\x00" * 6, 6), "eth0", ()).endswith(" in runt frame, length 6")
