"""Which IPVS connection is a probe's, and how its real server is reached: what the IPVS
checks judge (netlab.probes.judge) and what a trace's walk tells of a director's
scheduling decision (netlab.probes.hops)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from netlab.observations import IpvsConn, IpvsServiceView
from netlab.probes.flow import ProbeResult


def norm_address(addr: str | None) -> str | None:
    if addr is None:
        return None
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr


def ipvs_flow(conns: Iterable[IpvsConn], r: ProbeResult) -> list[IpvsConn]:
    """The IPVS connections of one probe's flow (persistence templates left out), best
    first: same protocol and client port, and the client's address or the probe's
    destination (a client NATed before the director still has its port)."""
    proto = "tcp" if r.proto == "http" else r.proto
    found = [
        c
        for c in conns
        if not c.template
        and c.proto == proto
        and c.cport == r.sport
        and (
            norm_address(c.client) == norm_address(r.src)
            or (norm_address(c.vaddr) == norm_address(r.dst) and c.vport == r.dport)
        )
    ]
    found.sort(
        key=lambda c: (norm_address(c.client) != norm_address(r.src), norm_address(c.vaddr) != norm_address(r.dst))
    )
    return found


def ipvs_service(c: IpvsConn, services: Sequence[IpvsServiceView]) -> IpvsServiceView | None:
    """The virtual service connection c belongs to: its address and port, else a fwmark
    service with its real server."""
    found = [s for s in services if s.matches(c.proto, c.vaddr, c.vport)]
    found += [s for s in services if s.fwmark is not None and _real_of(c, s) is not None]
    return found[0] if found else None


def _real_of(c: IpvsConn, svc: IpvsServiceView) -> str | None:
    for real in svc.reals:
        if norm_address(real.address) == norm_address(c.daddr) and real.port in (c.dport, 0):
            return real.forward
    return None


def ipvs_forward(c: IpvsConn, services: Sequence[IpvsServiceView]) -> str | None:
    """How the real server of connection c is reached (masq, dr, tun, …): from the
    service's real server entry, since the connection table does not show it."""
    candidates = [s for s in services if s.matches(c.proto, c.vaddr, c.vport)] or [
        s for s in services if s.fwmark is not None
    ]
    for svc in candidates:
        if (forward := _real_of(c, svc)) is not None:
            return forward
    return None
