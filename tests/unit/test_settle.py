"""kernel/settle.py's reading of RTM_NEWLINK answers, on messages shaped as the kernel
sends them (a VRF's port data reuses the bridge port state's attribute number)."""

from __future__ import annotations

import struct

from netlab.kernel import settle


def attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def newlink(slave_kind: str, slave_data: bytes, kind: str = "veth") -> bytes:
    info = (
        attr(settle.IFLA_INFO_KIND, kind.encode() + b"\0")
        + attr(settle.IFLA_INFO_SLAVE_KIND, slave_kind.encode() + b"\0")
        + attr(settle.IFLA_INFO_SLAVE_DATA, slave_data)
    )
    body = (
        struct.pack("=BxHiII", 0, 1, 7, settle.IFF_UP, 0)
        + attr(settle.IFLA_CARRIER, b"\1")
        + attr(settle.IFLA_OPERSTATE, bytes([settle.IF_OPER_UP]))
        + attr(settle.IFLA_LINKINFO | 0x8000, info)
    )
    return struct.pack("=IHHII", 16 + len(body), 16, 0, 1, 0) + body


def test_a_vrf_port_has_no_bridge_port_state() -> None:
    # IFLA_VRF_PORT_TABLE (1) = table 10: not a bridge port state of 10
    seen = settle._seen(newlink("vrf", attr(1, struct.pack("=I", 10))))
    assert (seen.up, seen.carrier, seen.kind, seen.port) == (True, True, "veth", None)
    want = settle.Want(op=None, name="eth1", master="blue", carrier=True)  # type: ignore[arg-type]
    vrf = settle.Seen(up=True, carrier=True, oper=settle.IF_OPER_UP, kind="vrf", stp=False, port=None)
    assert settle._trouble(want, {"eth1": seen, "blue": vrf}) is None


def test_a_bridge_port_state_is_read_and_judged() -> None:
    learning = settle._seen(newlink("bridge", attr(settle.IFLA_BRPORT_STATE, b"\2")))
    assert learning.port == 2
    want = settle.Want(op=None, name="p1", master="br0", carrier=True)  # type: ignore[arg-type]
    bridge = settle.Seen(up=True, carrier=True, oper=settle.IF_OPER_UP, kind="bridge", stp=False, port=None)
    assert settle._trouble(want, {"p1": learning, "br0": bridge}) == "bridge port learning"
    forwarding = settle._seen(newlink("bridge", attr(settle.IFLA_BRPORT_STATE, b"\3")))
    assert settle._trouble(want, {"p1": forwarding, "br0": bridge}) is None
