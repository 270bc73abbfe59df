"""`netlab trace`: one probe, traced by nftables through every namespace of a lab, told
as a walk — namespace by namespace in time order, both directions, each rule the packet
met with its verdict, where it died, the NAT it went through.

The tracing itself is the observer's (KernelObserver.trace); this module chooses the
flow, sends the probe, and turns the events into the walk (`walk_lines`, `to_json`).
Where no event says why a packet died, the walk says what nftables tracing cannot see
and asks the last namespace that saw the packet for its route decision.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from netlab.lab.targets import node_addresses
from netlab.observations import (
    TRACE_TABLE_PREFIX,
    CtEntry,
    ObserveError,
    RouteAnswer,
    RouteQuery,
    TraceEvent,
    TraceFlow,
)
from netlab.probes.flow import ProbeRequest, ProbeResult

if TYPE_CHECKING:
    from netlab.probes.checks import LabContext

BLIND_SPOTS = (
    "nftables tracing does not see routing decisions, rp_filter, neighbour (ARP/NDP) "
    "resolution, bridge forwarding without br_netfilter or IPVS scheduling"
)
_L4 = {"http": "tcp"}  # what the trace table matches for a probe protocol
_HOOKS = {"pre": "prerouting", "out": "output", "post": "postrouting", "in": "input"}


@dataclass(frozen=True)
class Trace:
    """What one `netlab trace` saw."""

    node: str  # the client
    proto: str
    dst: str
    port: int | None
    probes: tuple[ProbeResult, ...]
    events: tuple[TraceEvent, ...]
    nodes: dict[str, str]  # namespace → node
    conntrack: tuple[CtEntry, ...] = ()  # the flow's entries, in the namespaces that NATed it
    route: RouteAnswer | None = None  # the last namespace's decision, when no event says why it died

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.probes)

    @property
    def death(self) -> TraceEvent | None:
        """The last drop verdict (a rule or a chain's policy), if any."""
        drops = [e for e in self.events if e.verdict == "drop"]
        return drops[-1] if drops else None


def run_trace(
    ctx: LabContext,
    node: str,
    dst: str,
    proto: str,
    port: int | None,
    *,
    count: int = 1,
    timeout: float = 1.0,
    settle: float = 0.3,
) -> Trace:
    """Send `count` probes from node to dst(:port), traced in every namespace of the lab."""
    return trace_probe(ctx, node, ProbeRequest(ctx.ns(node), proto, dst, port, timeout=timeout), count, settle=settle)


def trace_probe(ctx: LabContext, node: str, request: ProbeRequest, count: int = 1, *, settle: float = 0.3) -> Trace:
    """Send `count` copies of request (from node) traced in every namespace of the lab;
    each tcp/udp copy gets its own source port unless the request fixes one."""
    if request.proto == "icmp":
        sports: tuple[int, ...] = ()
    elif request.sport is not None:
        sports, count = (request.sport,), 1  # copies would collide on one port
    else:
        sports = tuple(random.sample(range(40000, 60000), count))
    requests = [replace(request, sport=sports[i] if sports else None) for i in range(count)]
    return trace_requests(ctx, node, requests, workers=count, settle=settle)


def trace_requests(
    ctx: LabContext, node: str, requests: Sequence[ProbeRequest], *, workers: int, settle: float = 0.3
) -> Trace:
    """Send the requests (one flow: from node to one target) traced in every namespace of
    the lab. The trace marks the flow by its addresses, and by the requests' source ports
    when they fix them: without, any traffic between the client and the target is traced."""
    request = requests[0]
    family = ipaddress.ip_address(request.dst).version
    sports = tuple(sorted({r.sport for r in requests if r.sport is not None}))
    client = (request.src,) if request.src else tuple(node_addresses(ctx.topo, node, family))
    flow = TraceFlow(_L4.get(request.proto, request.proto), tuple(dict.fromkeys((request.dst, *client))), sports)
    namespaces = [request.ns, *(n for n in ctx.nodes.values() if n != request.ns)]
    probes, events = ctx.observer.trace(
        namespaces, flow, lambda: ctx.send_probes(requests, workers=workers), settle=settle
    )
    nodes = {v: k for k, v in ctx.nodes.items()}
    port = request.port if request.proto != "icmp" else None
    trace = Trace(node, request.proto, request.dst, port, tuple(probes), tuple(events), nodes)
    return _explained(ctx, trace, flow)


def _explained(ctx: LabContext, trace: Trace, flow: TraceFlow) -> Trace:
    conntrack: list[CtEntry] = []
    for ns in dict.fromkeys(e.ns for e in trace.events):
        try:
            conntrack += [c for c in ctx.observer.conntrack(ns) if (c.dnat or c.snat) and _of_flow(c, flow)]
        except ObserveError:
            continue
    route = None
    last = _last_outbound(trace)
    if not trace.ok and trace.death is None and last is not None and last.dst is not None:
        inbound = last.iif is not None and last.iif != "lo" and last.src is not None
        query = RouteQuery(last.dst, src=last.src if inbound else None, iif=last.iif if inbound else None)
        try:
            route = ctx.observer.route_get(last.ns, [query])[0]
        except ObserveError:
            route = None
    return Trace(**{**trace.__dict__, "conntrack": tuple(conntrack), "route": route})


def _last_outbound(trace: Trace) -> TraceEvent | None:
    """The last event of the probe on its way out (from the client's address), not of an
    answer or an ICMP error coming back."""
    if not trace.events:
        return None
    out = [e for e in trace.events if e.src == trace.events[0].src]
    return out[-1] if out else trace.events[-1]


def _of_flow(c: CtEntry, flow: TraceFlow) -> bool:
    if flow.ports:
        return c.orig.sport in flow.ports
    return c.orig.src in flow.addresses or c.orig.dst in flow.addresses


# ---------------------------------------------------------------- the walk


def _packet(e: TraceEvent) -> str:
    return f"{e.src} → {e.dst}" if e.src else "?"


def _seen(e: TraceEvent) -> str:
    where = _HOOKS.get(e.chain, e.chain)
    ifs = " ".join(x for x in (f"in {e.iif}" if e.iif else "", f"out {e.oif}" if e.oif else "") if x)
    return f"{where}{', ' + ifs if ifs else ''}"


def _verdict(e: TraceEvent) -> str:
    if e.verdict in ("jump", "goto") and e.target:
        return f"{e.verdict} {e.target}"
    return e.verdict or "?"


def _event_line(e: TraceEvent, depth: int, death: TraceEvent | None) -> str:
    where = f"{e.family} {e.table} {e.chain}"
    if e.type == "policy":
        what = f"policy {e.verdict}"
    elif e.type == "return":
        what = "end of chain, return"
    else:
        what = e.rule_words or f"rule handle {e.handle}"
    mark = "   ✗ dropped here" if e is death else ""
    return f"    {'  ' * depth}{where}: {what}  → {_verdict(e)}{mark}"


def walk_lines(trace: Trace) -> list[str]:
    """The walk, one block per packet per namespace, in the order the events arrived."""
    lines: list[str] = []
    death = trace.death
    key: tuple[str, int] | None = None
    depth = 0
    addresses: tuple[str | None, str | None] = (None, None)
    for e in trace.events:
        if (e.ns, e.id) != key:
            key, depth, addresses = (e.ns, e.id), 0, (e.src, e.dst)
            node = trace.nodes.get(e.ns, e.ns)
            lines.append(f"  {node} ({e.ns})  {_packet(e)}  [{_seen(e)}]")
        elif (e.src, e.dst) != addresses and e.src:
            lines.append(f"    {'  ' * depth}NAT: {addresses[0]} → {addresses[1]} is now {_packet(e)}")
            addresses = (e.src, e.dst)
        if e.table.startswith(TRACE_TABLE_PREFIX):
            if e.chain in ("post", "in") and e.type == "policy":
                lines.append(f"    ↳ {'delivered (input)' if e.chain == 'in' else _seen(e)}")
            continue
        if e.type == "rule" and e.handle is None:
            continue  # the end of a chain's rules, before its policy
        if e.type == "return" or (e.type == "rule" and e.verdict == "return"):
            depth = max(0, depth - 1)
            continue
        lines.append(_event_line(e, depth, death))
        if e.verdict == "jump":
            depth += 1
        elif e.verdict in ("accept", "drop") or e.type == "policy":
            depth = 0
    return lines


def drop_words(e: TraceEvent) -> str:
    """'inet filter forward: the policy of chain forward', 'ip filter FORWARD: rule `…`'."""
    what = f"the policy of chain {e.chain}" if e.type == "policy" else f"rule `{e.rule_words or e.handle}`"
    return f"{e.family} {e.table} {e.chain}: {what}"


def summary_lines(trace: Trace) -> list[str]:
    """Where it died (or that it arrived), the NAT conntrack recorded, the blind spots."""
    out = []
    death = trace.death
    if death is not None:
        node = trace.nodes.get(death.ns, death.ns)
        what = (
            f"the policy of chain {death.chain}"
            if death.type == "policy"
            else f"rule `{death.rule_words or death.handle}`"
        )
        out.append(f"died in {node}: {death.family} {death.table} {death.chain}: {what} dropped it")
    elif not trace.ok:
        last = _last_outbound(trace)
        where = f"{trace.nodes.get(last.ns, last.ns)} ({_packet(last)})" if last else "no namespace"
        out.append(f"no rule dropped it; the last namespace that saw it: {where}")
        out.append(f"  {BLIND_SPOTS}")
        if trace.route is not None:
            out.append(f"  route decision there: {trace.route.text}")
    for c in trace.conntrack:
        kinds = " ".join(k for k, on in (("dnat", c.dnat), ("snat", c.snat)) if on)
        out.append(f"conntrack ({kinds}): {c.text}")
    return out


def text_lines(trace: Trace) -> list[str]:
    target = f"{trace.dst}:{trace.port}" if trace.port is not None else trace.dst
    head = [f"trace {trace.proto} {trace.node} → {target}"]
    for p in trace.probes:
        head.append(f"  probe: {p.outcome}" + (f" — {p.detail}" if p.detail else ""))
    if not trace.events:
        return [*head, "  no trace event: nothing the flow sent reached a netfilter hook", *summary_lines(trace)]
    return [*head, *walk_lines(trace), *summary_lines(trace)]


def to_json(trace: Trace) -> dict[str, Any]:
    death = trace.death
    return {
        "node": trace.node,
        "proto": trace.proto,
        "dst": trace.dst,
        "port": trace.port,
        "ok": trace.ok,
        "probes": [asdict(p) for p in trace.probes],
        "events": [{**asdict(e), "node": trace.nodes.get(e.ns, e.ns)} for e in trace.events],
        "died": None if death is None else {**asdict(death), "node": trace.nodes.get(death.ns, death.ns)},
        "conntrack": [c.text for c in trace.conntrack],
        "route": None if trace.route is None else trace.route.text,
        "summary": summary_lines(trace),
    }


def flows_of(events: Sequence[TraceEvent]) -> list[str]:
    """The packets the events saw, as 'ns: src → dst', each once (for tests and evidence)."""
    return list(dict.fromkeys(f"{e.ns}: {_packet(e)}" for e in events))
