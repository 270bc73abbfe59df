"""A namespace's neighbour (ARP/NDP) table, as `ip neigh show` lists it: one RTM_GETNEIGH
dump. A trace reads it where its probe was last seen going out: a next hop that never
answered leaves an INCOMPLETE (then FAILED) entry, and the kernel drops the packets
queued for it in a timer, out of the trace's sight (netlab.kernel.tracefs)."""

from __future__ import annotations

import socket
from typing import Any

from netlab.kernel.inside import in_namespace
from netlab.kernel.nlsock import NetlinkSocket
from netlab.observations import NeighView

RTM_GETNEIGH = 30
# NUD_* (include/uapi/linux/neighbour.h)
STATES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}


def _view(m: Any, names: dict[int, str]) -> NeighView | None:
    dst = m.get_attr("NDA_DST")
    if dst is None:
        return None
    state = STATES.get(m["state"], "NONE" if m["state"] == 0 else hex(m["state"]))
    return NeighView(str(dst), names.get(m["ifindex"], f"if{m['ifindex']}"), state, m.get_attr("NDA_LLADDR"))


def neighbours(ns: str) -> list[NeighView]:
    """Every neighbour entry of ns, both families."""
    from pyroute2.netlink.rtnl.ndmsg import ndmsg  # only readers decode: `down` starts without pyroute2

    def read() -> list[NeighView]:
        names = {i: n for i, n in socket.if_nameindex()}
        sock = NetlinkSocket()
        try:
            msg = ndmsg()
            msg["family"] = socket.AF_UNSPEC
            return [v for m in sock.dump(msg, RTM_GETNEIGH) if (v := _view(m, names)) is not None]
        finally:
            sock.close()

    return in_namespace(ns, read)
