"""`netlab capture`: watch one interface of a lab that is up, live.

The checks' capture (netlab.kernel.capture: an AF_PACKET socket opened inside the
namespace, the same decoding) read in a loop: each frame becomes a tcpdump-like line and,
with a file, a pcap record (netlab.pcap). The kernel filters with the BPF program of the
user's pcap-filter expression. It ends after `count` frames, after `duration` seconds, or
on Ctrl-C / SIGTERM, which the loop runs under netlab.interrupts.deferred(): the signal is
recorded, the loop sees it within POLL seconds, and the file is never cut inside a record.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from netlab import interrupts
from netlab.kernel.capture import Capture, parse_frame
from netlab.pcap import SNAPLEN, BpfProgram, Frame, PcapWriter

POLL = 0.05  # seconds between looks at the flag and the clock on a quiet link
VXLAN_PORTS = (4789, 8472)  # decoded as VXLAN: IANA's port, and Linux's and flannel's
ETHERTYPES = {0x0806: "ARP", 0x88CC: "LLDP", 0x8035: "RARP"}


@dataclass
class LiveResult:
    frames: int = 0  # seen and printed (and written)
    dropped: int = 0  # frames the kernel dropped because the socket's buffer was full
    signal: int | None = None  # the signal that ended it, if one did


def frame_line(frame: Frame, ifname: str, vxlan_ports: Collection[int]) -> str:
    """'12:00:01.123456 out 10.244.0.2.40012 > 10.244.1.3.8080 tcp' (local time, as tcpdump)."""
    stamp = datetime.fromtimestamp(frame.time).strftime("%H:%M:%S.%f")
    pkt = parse_frame(frame.data, ifname, frame.direction or "in", vxlan_ports, length=frame.length)
    if pkt is not None:
        return f"{stamp} {pkt.text}, length {frame.length}"
    etype = struct.unpack_from("!H", frame.data, 12)[0] if len(frame.data) >= 14 else None
    what = ETHERTYPES.get(etype, f"ethertype 0x{etype:04x}") if etype is not None else "runt frame"
    return f"{stamp} {frame.direction or 'in'} {what}, length {frame.length}"


def capture_live(
    ns: str,
    ifname: str,
    *,
    on_line: Callable[[str], None],
    pcap: BinaryIO | None = None,
    count: int | None = None,
    duration: float | None = None,
    bpf: BpfProgram | None = None,
    vxlan_ports: Collection[int] = VXLAN_PORTS,
    on_start: Callable[[], None] | None = None,
) -> LiveResult:
    """Capture on ifname in ns until count frames, duration seconds or a signal (SIGINT,
    SIGTERM); on_start is called once the socket is capturing. CaptureError if the
    namespace or the interface is missing."""
    result = LiveResult()
    writer = None
    deadline = time.monotonic() + duration if duration is not None else None
    cap = Capture(ns, ifname, vxlan_ports=vxlan_ports, keep_frames=True, bpf=bpf, snaplen=SNAPLEN)
    with interrupts.deferred(), cap:
        writer = PcapWriter(pcap) if pcap is not None else None
        if on_start is not None:
            on_start()
        while interrupts.pending() is None and (count is None or result.frames < count):
            left = deadline - time.monotonic() if deadline is not None else POLL
            if left <= 0:
                break
            cap.packets(settle=min(POLL, left))
            frames, cap.frames = cap.frames, []
            for frame in frames[: None if count is None else count - result.frames]:
                on_line(frame_line(frame, ifname, cap.vxlan_ports))
                if writer is not None:
                    writer.write(frame)
                result.frames += 1
        result.dropped = cap.drops
        result.signal = interrupts.take_pending()  # honoured: the capture ends, exit 128 + signal
    return result
