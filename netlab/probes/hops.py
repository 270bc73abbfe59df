"""What a trace's walk says besides rules: the hops nftables' inet tables do not show —
a bridge forwarding the packet from port to port (or flooding it), a packet entering a
VXLAN tunnel (the device, the VNI, the outer packet's addresses and UDP ports) and
coming out of one on the far side, and an IPVS director's scheduling decision (IPVS
runs in hooks of its own, which nftables tracing does not see).

All of it is the kernel's own evidence, from the trace's events (netlab.kernel.trace):
the temporary bridge family table's chains at the bridge's hooks name the ports each
copy of the packet went in and out by; the outer packet of a tunnel is traced by what it
carries, and its event's transport header holds its UDP ports and VXLAN header; the
VXLAN device a packet left by or came in on is read from the device itself. IPVS keeps
its decision in its connection table: the probe's connection there (its client address
and port) names the virtual service and the real server it picked, and the service's
real server entry how it is forwarded.

`visit_hops` derives them per visit (one namespace, one packet); the walk prints each
hop's `text` under its visit and `--json` lists them (`hops`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from netlab.observations import FORWARD_WORDS, TRACE_TABLE_PREFIX, FibLookup, IpvsState, TraceEvent, VxlanDev
from netlab.probes.ipvs_flow import ipvs_forward, ipvs_service, norm_address
from netlab.vocabulary import host_port, table_words

BRIDGE_EVIDENCE = "nftables bridge family trace (the bridge's forward, input and output hooks)"
FDB_EVIDENCE = (
    "the bridge's FDB read before the probe, and what it learned since from the frames traced "
    "(the flow's and the ARP/NDP about its addresses)"
)
ENCAP_EVIDENCE = "the VXLAN device the packet left by, and the trace of the outer packet its namespace sent next"
DECAP_EVIDENCE = "the VXLAN device the packet came in on"
ROUTE_EVIDENCE = (
    "the kernel's fib:fib_table_lookup / fib6:fib6_table_lookup tracepoints, recorded for netlab's own threads while "
    "the probe was out: the first lookup after the previous hop's of the packet's destination that found the "
    "visit's way out"
)
IPVS_EVIDENCE = (
    "the director's IPVS connection table and virtual services (ipvsadm -Lnc, -Ln), read right after the probe "
    "returned; its connection is the one keyed by a packet the trace saw in the director (client and virtual "
    "address and ports)"
)


@dataclass(frozen=True)
class Hop:
    """One hop of the walk that is not a rule: a bridge's forwarding, a tunnel's way in or out."""

    kind: str  # bridge | vxlan-encap | vxlan-decap | ipvs
    ns: str
    text: str  # the walk's line, without indent
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self, nodes: Mapping[str, str]) -> dict[str, Any]:
        return {"kind": self.kind, "node": nodes.get(self.ns, self.ns), "ns": self.ns, **self.fields, "text": self.text}


def _ours(e: TraceEvent, family: str, chains: tuple[str, ...]) -> bool:
    return e.family == family and e.table.startswith(TRACE_TABLE_PREFIX) and e.chain in chains and e.type == "policy"


def bridge_hop(visit: Sequence[TraceEvent]) -> Hop | None:
    """What a bridge did with the packet: the ports the copies went out by (its forward
    hook: between ports; output: the host's own, through the bridge device), and whether
    it passed it up to its host (input hook)."""
    moved = [e for e in visit if _ours(e, "bridge", ("switch", "down", "up"))]
    if not moved:
        return None
    bridge = next((e.bridge for e in moved if e.bridge), None) or "?"
    outs = sorted(
        {e.oif for e in moved if e.chain in ("switch", "down") and e.oif}
    )  # by name: the order of a flood's copies says nothing
    came = next((e.iif for e in visit if e.family == "bridge" and e.iif), None)
    up = any(e.chain == "up" for e in moved)
    fdb = next((e.fdb for e in visit if e.family == "bridge" and e.fdb is not None), None)
    # Flooded or forwarded is the FDB's answer when the frame came in: a flood may leave by
    # one port (the only other one), a frame the FDB knew by one only.
    flood = fdb.floods if fdb is not None else len(outs) > 1
    what = []
    if outs:
        verb = "floods it (a copy out of each port)" if flood else "forwards it"
        what.append(f"{verb} out {', '.join(outs)}")
    if up:
        what.append(f"passes it up to the host ({bridge})")
    origin = f"from {came}" if came else "from the host"
    hook = "forward" if any(e.chain == "switch" for e in moved) else "output" if outs else "input"
    why = f"; FDB: {fdb.text}" if fdb is not None else ""
    text = f"bridge {bridge} {origin}: {' and '.join(what)} (bridge {hook} hook{why})"
    fields = {
        "bridge": bridge,
        "in": came,
        "out": outs,
        "up": up,
        "flood": flood,
        "fdb": asdict(fdb) if fdb is not None else None,
        "evidence": BRIDGE_EVIDENCE + (f"; {FDB_EVIDENCE}" if fdb is not None else ""),
    }
    return Hop("bridge", visit[0].ns, text, fields)


def _dev(d: VxlanDev) -> str:
    details = ", ".join(
        x for x in (f"VNI {d.vni}" if d.vni is not None else "", f"UDP port {d.port}" if d.port else "") if x
    )
    return f"{d.dev} ({details})" if details else d.dev


def encap_hop(visit: Sequence[TraceEvent], outer: Sequence[TraceEvent] | None) -> Hop | None:
    """The packet left by a VXLAN device: the device, and the outer packet (the next one
    its namespace sent that carries the flow), if it was seen."""
    inner = next((e for e in visit if e.encap is not None and e.outer is None), None)
    if inner is None or inner.encap is None:
        return None
    fields: dict[str, Any] = {
        "dev": inner.encap.dev,
        "vni": inner.encap.vni,
        "port": inner.encap.port,
        "inner": {"src": inner.src, "dst": inner.dst},
        "outer": None,
        "evidence": ENCAP_EVIDENCE,
    }
    text = f"into the VXLAN tunnel {_dev(inner.encap)}"
    head = next((e for e in outer or () if e.outer is not None), None)
    if head is not None and head.outer is not None:
        o = head.outer
        fields["outer"] = {"src": head.src, "dst": head.dst, "sport": o.sport, "dport": o.dport, "vni": o.vni}
        text += f": outer packet {head.src} → {head.dst}, UDP {o.sport} → {o.dport}, VXLAN VNI {o.vni}"
    else:
        text += ": its outer packet was not seen in the lab's namespaces"
    return Hop("vxlan-encap", visit[0].ns, text, fields)


def decap_hop(visit: Sequence[TraceEvent]) -> Hop | None:
    first = visit[0]
    if first.decap is None or first.outer is not None:
        return None
    fields = {
        "dev": first.decap.dev,
        "vni": first.decap.vni,
        "port": first.decap.port,
        "inner": {"src": first.src, "dst": first.dst},
        "evidence": DECAP_EVIDENCE,
    }
    return Hop("vxlan-decap", first.ns, f"out of the VXLAN tunnel {_dev(first.decap)}", fields)


def outer_line(visit: Sequence[TraceEvent]) -> str | None:
    """A visit of a tunnel's outer packet: its UDP ports and VNI, from its own trace."""
    head = next((e for e in visit if e.outer is not None), None)
    if head is None or head.outer is None:
        return None
    o = head.outer
    return f"VXLAN outer packet: UDP {o.sport} → {o.dport}, VNI {o.vni}"


def _outer_after(visits: Sequence[Sequence[TraceEvent]], i: int) -> Sequence[TraceEvent] | None:
    """The outer packet a packet sent into a tunnel became: the next packet its namespace
    sent that carries the flow in a tunnel, before it sent another one into a tunnel."""
    ns = visits[i][0].ns
    for visit in visits[i + 1 :]:
        if visit[0].ns != ns:
            continue
        if visit[0].outer is not None and visit[0].iif in (None, "lo"):
            return visit
        if any(e.encap is not None and e.outer is None for e in visit):
            return None
    return None


def visit_hops(visits: Sequence[Sequence[TraceEvent]], i: int) -> list[Hop]:
    """The hops of visits[i] (the walk's visits in order): its decapsulation, its bridge,
    its encapsulation (with the outer packet it became)."""
    visit = visits[i]
    found = (decap_hop(visit), bridge_hop(visit), encap_hop(visit, _outer_after(visits, i)))
    return [h for h in found if h is not None]


@dataclass(frozen=True)
class IpvsRead:
    """A director's IPVS state, read right after the probes returned (before the trace's
    quiet, while the connections are as the probes left them)."""

    state: IpvsState
    after: float  # seconds from the probes' return to the read's


Arrival = tuple[str | None, str | None, int | None, str | None, int | None]  # proto, src, sport, dst, dport


def arrival(proto: str | None, src: str | None, sport: int | None, dst: str | None, dport: int | None) -> Arrival:
    return proto, norm_address(src), sport, norm_address(dst), dport


def ipvs_hops(ns: str, read: IpvsRead, seen: Collection[Arrival]) -> list[Hop]:
    """The scheduling decisions a director's IPVS made for the probes: the connections
    whose client and virtual address and ports are those of a packet the trace saw in the
    director (`seen`, its events' headers: the probe's own tuple there, after any NAT on
    the way), each with its virtual service, the real server it picked and how that is
    reached, and its state as read (`read`)."""
    out: list[Hop] = []
    for c in sorted(read.state.connections, key=lambda c: (c.cport, c.client)):
        if c.template or arrival(c.proto, c.client, c.cport, c.vaddr, c.vport) not in seen:
            continue
        svc = ipvs_service(c, read.state.services)
        forward = ipvs_forward(c, read.state.services)
        service = " ".join(svc.text.split()) if svc else f"{c.proto.upper()} {host_port(c.vaddr, c.vport)}"
        how = FORWARD_WORDS.get(forward, forward) if forward else "forwarding unknown"
        real = host_port(c.daddr, c.dport)
        when = f"{read.after * 1000:.0f} ms after the probe returned"
        text = (
            f"IPVS {service}: {host_port(c.client, c.cport)} scheduled to real server {real} ({how}); "
            f"its connection {c.state} when read, {when}"
        )
        fields = {
            "service": service,
            "scheduler": svc.scheduler if svc else None,
            "vip": c.vaddr,
            "vport": c.vport,
            "proto": c.proto,
            "client": {"address": c.client, "port": c.cport},
            "real": {"address": c.daddr, "port": c.dport},
            "forward": forward,
            "state": c.state,
            "read_after_s": round(read.after, 4),
            "connection": c.text,
            "evidence": IPVS_EVIDENCE,
        }
        out.append(Hop("ipvs", ns, text, fields))
    return out


def ipvs_places(visits: Sequence[Sequence[TraceEvent]], found: Sequence[Hop]) -> dict[int, list[Hop]]:
    """Under which visit each IPVS decision goes: the first visit of its director that took
    in a packet to the virtual address, else the director's first visit."""
    out: dict[int, list[Hop]] = {}
    for hop in found:
        mine = [i for i, v in enumerate(visits) if v[0].ns == hop.ns]
        at = next((i for i in mine if visits[i][0].dst == hop.fields["vip"]), mine[0] if mine else None)
        if at is not None:
            out.setdefault(at, []).append(hop)
    return out


# The local table's lookups are the kernel asking what kind an address is (ARP, a source's
# check), not a route decision for a packet that leaves by an interface.
LOCAL_TABLE = 255


def _way_out(visit: Sequence[TraceEvent]) -> str | None:
    """The interface the IP stack sent the visit's packet out of (not a bridge's port)."""
    return next((e.oif for e in reversed(visit) if e.family != "bridge" and e.oif not in (None, "lo")), None)


def route_hops(
    visits: Sequence[Sequence[TraceEvent]], lookups: Sequence[FibLookup], tables: Mapping[str, int] | None = None
) -> dict[int, Hop]:
    """Each visit's route decision where the kernel's FIB tracepoint recorded it: visits
    and lookups are both in the order the packets went (the lookups are global, not per
    namespace): a visit that sent its packet out of an interface takes the first lookup,
    after the one the previous visit took, of one of its destinations that found a route
    out of that interface — an output lookup (from no interface, or lo; a tunnel's, from its
    own source) for a packet the namespace sent, an input one for a packet it forwarded.
    The local table's lookups are left out."""
    out: dict[int, Hop] = {}
    cursor = 0
    for i, visit in enumerate(visits):
        dev = _way_out(visit)
        if dev is None:
            continue
        dsts = {e.dst for e in visit if e.family != "bridge" and e.dst}
        sent = visit[0].iif in (None, "lo")
        for j in range(cursor, len(lookups)):
            f = lookups[j]
            if f.err or f.table == LOCAL_TABLE or f.dev != dev or f.dst not in dsts:
                continue
            output = f.iif in (0, 1)  # from lo, or no interface
            # a tunnel's outer packet is looked up with an iif of its own, from the source it has
            tunnel = f.src == visit[0].src and f.src not in ("0.0.0.0", "::")
            if (output or tunnel) if sent else not output:
                out[i] = _route_hop(visit[0].ns, f, tables)
                cursor = j + 1
                break
    return out


def _route_hop(ns: str, f: FibLookup, tables: Mapping[str, int] | None) -> Hop:
    via = f" via {f.gw}" if f.gw else ""
    source = f" from {f.src}" if f.src not in ("0.0.0.0", "::") else ""
    text = f"route: table {table_words(f.table, tables)}: {f.dst}{source} → dev {f.dev}{via}"
    fields = {"table": f.table, "dst": f.dst, "src": f.src, "dev": f.dev, "via": f.gw, "evidence": ROUTE_EVIDENCE}
    return Hop("route", ns, text, fields)
