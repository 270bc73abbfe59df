"""Classic pcap files (what `tcpdump -w` writes, what Wireshark and `tcpdump -r` open),
written from the frames a capture (netlab.kernel.capture) read off an AF_PACKET socket.

Why netlab writes the file itself instead of running tcpdump in the namespace: the
checks already capture with an AF_PACKET socket opened inside the namespace (no process
per capture, frames queued while the probe runs), so `check --pcap` has the frames in
hand; `netlab capture` reuses that socket and its decoding for its live lines, and the
file is the same frames, one record each. Every lab interface is Ethernet (veth, bridge,
vxlan, dummy; lo too, with a zeroed header), so the link type is LINKTYPE_ETHERNET, as
tcpdump writes for one such interface. Each record is written whole with one write(), so
a capture ended by Ctrl-C leaves a complete file.

Filters are pcap-filter expressions (`tcp port 80`), compiled by `tcpdump -ddd` (which
opens no socket) into the classic BPF program the kernel runs on the socket.

Pure but for compile_filter's tcpdump run and the file writes.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = 0xA1B2C3D4  # microsecond timestamps, written in the host's byte order
VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144  # tcpdump's default: what a file's header says records may hold
KEPT_SNAPLEN = 65535  # bytes of each frame a check keeps for its pcap file (an IP packet's most)
_HEADER = struct.Struct("=IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_RECORD = struct.Struct("=IIII")  # ts_sec, ts_usec, incl_len, orig_len

BpfProgram = list[tuple[int, int, int, int]]  # struct sock_filter: code, jt, jf, k


@dataclass(frozen=True)
class Frame:
    """One frame as captured: when (seconds since the epoch, the kernel's stamp), its
    first bytes, and its length on the wire."""

    time: float
    data: bytes
    length: int
    direction: str = ""  # "in" | "out" as the interface saw it (a classic pcap record has no room for it)


class FilterError(ValueError):
    """tcpdump refused a filter expression; the message is tcpdump's."""


def header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = SNAPLEN) -> bytes:
    return _HEADER.pack(MAGIC, *VERSION, 0, 0, snaplen, linktype)


def record(frame: Frame) -> bytes:
    sec = int(frame.time)
    usec = min(999_999, round((frame.time - sec) * 1e6))
    return _RECORD.pack(sec, usec, len(frame.data), max(frame.length, len(frame.data))) + frame.data


class PcapWriter:
    """A pcap file being written: the header at once, then one record per write()."""

    def __init__(self, file: BinaryIO, linktype: int = LINKTYPE_ETHERNET) -> None:
        self.file = file
        self.count = 0
        file.write(header(linktype))
        file.flush()

    def write(self, frame: Frame) -> None:
        self.file.write(record(frame))
        self.file.flush()
        self.count += 1


def write_pcap(path: str, frames: Iterable[Frame]) -> int:
    """Write `frames` to a new pcap file at `path`; how many were written."""
    with open(path, "wb") as f:
        writer = PcapWriter(f)
        for frame in frames:
            writer.write(frame)
        return writer.count


def read_pcap(data: bytes) -> tuple[int, list[Frame]]:
    """(link type, frames) of a classic pcap file (either byte order, µs or ns stamps)."""
    if len(data) < _HEADER.size:
        raise ValueError("not a pcap file: shorter than its header")
    for order in "<>":
        magic = struct.unpack_from(order + "I", data)[0]
        if magic in (MAGIC, 0xA1B23C4D):
            break
    else:
        raise ValueError(f"not a pcap file: magic {data[:4].hex()}")
    scale = 1e-6 if magic == MAGIC else 1e-9
    linktype = struct.unpack_from(order + "I", data, 20)[0]
    return linktype, list(_records(data, order, scale))


def _records(data: bytes, order: str, scale: float) -> Iterator[Frame]:
    off = _HEADER.size
    rec = struct.Struct(order + "IIII")
    while off + rec.size <= len(data):
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += rec.size
        if off + incl > len(data):
            raise ValueError(f"pcap record at byte {off - rec.size} is cut short")
        yield Frame(sec + frac * scale, data[off : off + incl], orig)
        off += incl


def compile_filter(expression: str) -> BpfProgram:
    """A pcap-filter expression → the classic BPF program for Ethernet frames; FilterError
    with tcpdump's message when the expression is wrong."""
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    try:
        done = subprocess.run(
            [tcpdump, "-ddd", "-y", "EN10MB", "--", expression], capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError:
        raise FilterError("a filter needs tcpdump (apt-get install tcpdump)") from None
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise FilterError(said[-1] if said else f"tcpdump exited with {done.returncode}")
    numbers = [int(n) for n in re.findall(r"-?\d+", done.stdout)]
    count, rest = numbers[0], numbers[1:]
    return [(rest[i] & 0xFFFF, rest[i + 1], rest[i + 2], rest[i + 3] & 0xFFFFFFFF) for i in range(0, 4 * count, 4)]


def check_file_name(check: str) -> str:
    """A check's name as a file name: its words, with nothing a path could trip on."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", check).strip("-.")[:100]
    return (name or "check") + ".pcap"


def save_captures(directory: str, captures: dict[str, list[Frame]]) -> list[str]:
    """One pcap file per check in `directory` (made if missing), named after the check
    (a second check whose name reads the same gets -2, -3, …); the paths written."""
    os.makedirs(directory, exist_ok=True)
    written: list[str] = []
    for check, frames in captures.items():
        base = check_file_name(check)
        path, n = os.path.join(directory, base), 1
        while path in written:
            n += 1
            path = os.path.join(directory, f"{base[: -len('.pcap')]}-{n}.pcap")
        write_pcap(path, frames)
        written.append(path)
    return written
