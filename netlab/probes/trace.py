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
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from netlab.lab.targets import node_addresses
from netlab.observations import (
    TRACE_SETTLE,
    TRACE_TABLE_PREFIX,
    CtEntry,
    CtTuple,
    FibLookup,
    KernelDrop,
    KernelSeen,
    NeighView,
    ObserveError,
    RouteAnswer,
    RouteQuery,
    TraceEvent,
    TraceFlow,
    trace_visits,
)
from netlab.probes.flow import ProbeRequest, ProbeResult
from netlab.probes.hops import Hop, IpvsRead, arrival, ipvs_hops, ipvs_places, outer_line, route_hops, visit_hops
from netlab.vocabulary import table_words

if TYPE_CHECKING:
    from netlab.probes.checks import LabContext

BLIND_SPOTS = (
    "nftables tracing does not see routing decisions, rp_filter, neighbour (ARP/NDP) resolution or IPVS scheduling"
)
_L4 = {"http": "tcp"}  # what the trace table matches for a probe protocol
_HOOKS = {
    "pre": "prerouting",
    "out": "output",
    "ctpre": "prerouting",
    "ctout": "output",
    "post": "postrouting",
    "in": "input",
}
Key = tuple[str | None, str | None, int | None, str | None, int | None]  # proto, src, sport, dst, dport


@dataclass(frozen=True)
class Endpoints:
    """A packet's addresses and ports (an ICMP echo's id as sport), as one event saw them."""

    src: str | None
    sport: int | None
    dst: str | None
    dport: int | None

    @property
    def text(self) -> str:
        return f"{_at(self.src, self.sport)} → {_at(self.dst, self.dport)}"


@dataclass(frozen=True)
class NatStep:
    """A translation, where the walk first shows it: the event `seq` of namespace `ns`
    carries the new headers. `kind` is the rule's (dnat, snat, or both); a reply's
    translation back (direction reply) undoes it. `conntrack`: the entry that holds it."""

    ns: str
    seq: int
    kind: str  # dnat | snat | dnat+snat
    direction: str  # original | reply
    hooks: tuple[
        str, ...
    ]  # where the kernel translated it: prerouting/output (a destination), postrouting/input (a source)
    before: Endpoints
    after: Endpoints
    conntrack: CtEntry | None

    @property
    def text(self) -> str:
        what = self.kind.upper() if self.direction == "original" else f"reply, {self.kind.upper()} undone"
        return f"NAT ({what}, at {' and '.join(self.hooks)}): {self.before.text} is now {self.after.text}"


BRIDGE_CHAINS = ("switch", "up", "down")  # the trace's bridge table: forward, input, output


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
    nat: tuple[NatStep, ...] = ()  # each translation, where the walk shows it
    route: RouteAnswer | None = None  # the last namespace's decision, when no event says why it died
    kernel: KernelSeen | None = None  # the kernel's own drop reasons and FIB lookups meanwhile
    ipvs: tuple[Hop, ...] = ()  # the IPVS directors' scheduling decisions for the probes
    neighbour: tuple[str, NeighView] | None = None  # (ns, entry): the next hop that never answered
    tables: Mapping[str, int] = field(default_factory=dict)  # the routing tables' names (the lab's and the kernel's)

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
    settle: float = TRACE_SETTLE,
    src: str | None = None,
) -> Trace:
    """Send `count` probes from node (from its address src) to dst(:port), traced in every
    namespace of the lab."""
    request = ProbeRequest(ctx.ns(node), proto, dst, port, src=src, timeout=timeout)
    return trace_probe(ctx, node, request, count, settle=settle)


def trace_probe(
    ctx: LabContext, node: str, request: ProbeRequest, count: int = 1, *, settle: float = TRACE_SETTLE
) -> Trace:
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
    ctx: LabContext, node: str, requests: Sequence[ProbeRequest], *, workers: int, settle: float = TRACE_SETTLE
) -> Trace:
    """Send the requests (one flow: from node to one target) traced in every namespace of
    the lab. The trace marks the flow by its addresses, and by the requests' source ports
    when they fix them: without, any traffic between the client and the target is traced."""
    request = requests[0]
    family = ipaddress.ip_address(request.dst).version
    sports = tuple(sorted({r.sport for r in requests if r.sport is not None}))
    client = (request.src,) if request.src else tuple(node_addresses(ctx.topo, node, family))
    addresses = tuple(dict.fromkeys((request.dst, *client)))
    flow = TraceFlow(_L4.get(request.proto, request.proto), addresses, sports, tuple(sorted(ctx.vxlan_ports())))
    namespaces = [request.ns, *(n for n in ctx.nodes.values() if n != request.ns)]
    directors = [ctx.ns(name) for name, n in ctx.lab.nodes.items() if n.ipvs] if flow.proto != "icmp" else []

    def send() -> tuple[list[ProbeResult], KernelSeen, dict[str, IpvsRead]]:
        # Read once before too: the read after the probe then finds its reader loaded (in an
        # emulated VM, pyroute2's generic netlink took 3.4 s to import there).
        _read_ipvs(ctx, directors)
        probes, kernel = ctx.observer.watch_drops(lambda: ctx.send_probes(requests, workers=workers))
        return probes, kernel, _read_ipvs(ctx, directors)

    (probes, kernel, reads), events = ctx.observer.trace(namespaces, flow, send, settle=settle)
    nodes = {v: k for k, v in ctx.nodes.items()}
    port = request.port if request.proto != "icmp" else None
    entries = _entries(ctx, list(dict.fromkeys(e.ns for e in events)))
    known = flow_keys(flow, [c for _, c in entries])
    events = [replace(e, seq=i) for i, e in enumerate(of_flow(events, flow, known))]
    nat = tuple((ns, c) for ns, c in entries if (c.dnat or c.snat) and _key(c.orig) in known)
    ipvs = _ipvs(events, reads)
    trace = Trace(
        node,
        request.proto,
        request.dst,
        port,
        tuple(probes),
        tuple(events),
        nodes,
        conntrack=tuple(c for _, c in nat),
        nat=tuple(_by_ipvs(step, ipvs) for step in nat_steps(events, nat)),
        kernel=kernel,
        ipvs=ipvs,
        tables=dict(ctx.tables),
    )
    return _explained(ctx, trace)


def _by_ipvs(step: NatStep, ipvs: Sequence[Hop]) -> NatStep:
    """A translation to the real server an IPVS decision picked is IPVS's own: made in its
    input hook (ip_vs_remote_request), not before routing as netfilter's DNAT."""
    if "prerouting" in step.hooks and any(h.ns == step.ns and _to_real(step, h) for h in ipvs):
        return replace(step, hooks=tuple("input" if h == "prerouting" else h for h in step.hooks))
    return step


def _read_ipvs(ctx: LabContext, directors: Sequence[str]) -> dict[str, IpvsRead]:
    """Each director's IPVS state, read as soon as the probes returned (all at once): the
    connections as the probes left them, not as the trace's quiet and cleanup aged them."""
    if not directors:
        return {}
    ended = time.monotonic()

    def read(ns: str) -> tuple[str, IpvsRead | None]:
        try:
            state = ctx.observer.ipvs(ns)
        except ObserveError:
            return ns, None
        return ns, IpvsRead(state, time.monotonic() - ended)

    with ThreadPoolExecutor(max_workers=min(len(directors), 16), thread_name_prefix="netlab-trace") as pool:
        return {ns: found for ns, found in pool.map(read, directors) if found is not None}


def _ipvs(events: Sequence[TraceEvent], reads: Mapping[str, IpvsRead]) -> tuple[Hop, ...]:
    """The IPVS decisions for the probes, in the directors the walk went through (IPVS
    runs in hooks of its own: its connection table says what it decided): the
    connections keyed by the packets the walk shows in each director."""
    out: list[Hop] = []
    for ns in dict.fromkeys(e.ns for e in events):
        if ns in reads:
            seen = {arrival(e.proto, e.src, e.sport, e.dst, e.dport) for e in events if e.ns == ns and e.src}
            out += ipvs_hops(ns, reads[ns], seen)
    return tuple(out)


def _entries(ctx: LabContext, namespaces: Sequence[str]) -> list[tuple[str, CtEntry]]:
    """Every conntrack entry of the namespaces, read at once (each read waits for a thread
    to enter its namespace)."""

    def read(ns: str) -> list[tuple[str, CtEntry]]:
        try:
            return [(ns, c) for c in ctx.observer.conntrack(ns)]
        except ObserveError:
            return []

    if len(namespaces) <= 1:
        return [e for ns in namespaces for e in read(ns)]
    with ThreadPoolExecutor(max_workers=min(len(namespaces), 16), thread_name_prefix="netlab-trace") as pool:
        return [e for found in pool.map(read, namespaces) for e in found]


def _explained(ctx: LabContext, trace: Trace) -> Trace:
    route = None
    last = _stopped(trace)
    if trace.ok or trace.death is not None or last is None or last.dst is None:
        return trace
    inbound = last.iif is not None and last.iif != "lo" and last.src is not None
    query = RouteQuery(last.dst, src=last.src if inbound else None, iif=last.iif if inbound else None)
    try:
        route = ctx.observer.route_get(last.ns, [query])[0]
    except ObserveError:
        route = None
    return replace(trace, route=route, neighbour=_unanswered(ctx, last, route))


def _unanswered(ctx: LabContext, last: TraceEvent, route: RouteAnswer | None) -> tuple[str, NeighView] | None:
    """The neighbour entry of the next hop the packet was last seen going out to, when it
    never answered (INCOMPLETE: the packets wait for it; FAILED: the kernel gave up and
    dropped them, NEIGH_FAILED, in a timer the tracepoints do not see for netlab)."""
    if last.oif in (None, "lo") or route is None or route.errno is not None:
        return None
    hop, dev = route.via or last.dst, route.dev or last.oif
    try:
        found = ctx.observer.neighbours(last.ns)
    except ObserveError:
        return None
    for n in found:
        if (n.dst, n.dev) == (hop, dev) and n.state in UNANSWERED:
            return last.ns, n
    return None


# ---------------------------------------------------------------- the flow through NAT


def _at(address: str | None, port: int | None) -> str:
    if address is None:
        return "?"
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _key(t: CtTuple) -> Key:
    return (t.proto, t.src, t.sport, t.dst, t.dport)


def _reverse(k: Key) -> Key:
    proto, src, sport, dst, dport = k
    if proto in ("icmp", "icmpv6"):
        return k[0], dst, sport, src, dport  # an echo reply keeps the request's id
    return proto, dst, dport, src, sport


def _event_key(e: TraceEvent) -> Key:
    return (e.proto, e.src, e.sport, e.dst, e.dport)


def _strict(c: CtEntry, flow: TraceFlow) -> bool:
    """An entry the trace table's own marks select (by the flow's ports, else addresses)."""
    if flow.ports:
        return c.orig.sport in flow.ports
    return c.orig.src in flow.addresses or c.orig.dst in flow.addresses


def flow_keys(flow: TraceFlow, entries: Sequence[CtEntry]) -> set[Key]:
    """The flow's packets through every NAT, as keys both ways: the entries the flow's
    marks select, then, again and again, the entries of any namespace whose original
    tuple is a packet already known (what a NAT elsewhere sent on)."""
    known: set[Key] = set()
    left = list(entries)
    taken = [c for c in left if _strict(c, flow)]
    while taken:
        for c in taken:
            left.remove(c)
            for k in (_key(c.orig), _key(c.reply)):
                known |= {k, _reverse(k)}
        taken = [c for c in left if _key(c.orig) in known]
    return known


def _marked(e: TraceEvent, flow: TraceFlow) -> bool:
    """Whether the trace table's marks select the packet (trace_table): a tunnel's outer
    packet by what it carries."""
    if e.src in flow.addresses or e.dst in flow.addresses or e.outer is not None:
        return True
    return bool(flow.ports) and e.proto == flow.proto and (e.sport in flow.ports or e.dport in flow.ports)


def of_flow(events: Sequence[TraceEvent], flow: TraceFlow, known: set[Key]) -> list[TraceEvent]:
    """The events of the flow's packets: each visit (a packet in a namespace) the marks
    select or the flow's conntrack entries account for. The trace table also traces new
    connections that turn out not to be the flow (it cannot tell a NATed copy of the flow
    from them before the conntrack entries are read)."""
    out: list[TraceEvent] = []
    visit: list[TraceEvent] = []
    for e in [*events, None]:
        if e is not None and visit and (visit[0].ns, visit[0].id) == (e.ns, e.id):
            visit.append(e)
            continue
        if visit and any(_marked(v, flow) or _event_key(v) in known for v in visit if v.src is not None):
            out += visit
        visit = [e] if e is not None else []
    return out


def nat_steps(events: Sequence[TraceEvent], entries: Sequence[tuple[str, CtEntry]]) -> list[NatStep]:
    """Every change of a packet's addresses or ports within a namespace (the event after
    the translation carries the new headers), with the entry that holds it."""
    steps: list[NatStep] = []
    prev: TraceEvent | None = None
    first: TraceEvent | None = None
    for e in events:
        if prev is None or (prev.ns, prev.id) != (e.ns, e.id):
            prev = first = e
            continue
        if e.src is not None and _event_key(e) != _event_key(prev) and first is not None:
            steps.append(_step(first, prev, e, entries))
        prev = e
    return steps


def _between(k: Key, start: Key, end: Key) -> bool:
    """k is a packet on its way from headers `start` to `end`: each side is one or the other's."""
    src, dst = (k[1], k[2]), (k[3], k[4])
    return k[0] == start[0] and src in (start[1:3], end[1:3]) and dst in (start[3:5], end[3:5])


def _holder(ns: str, old: Key, entries: Sequence[tuple[str, CtEntry]]) -> tuple[CtEntry | None, str]:
    """The entry of ns that holds a translation of a packet with headers `old`, and the
    packet's direction: an original packet goes from the entry's original tuple to its
    reply reversed, a reply from the reply tuple to the original reversed."""
    for where, c in entries:
        orig, reply = _key(c.orig), _key(c.reply)
        if where == ns and _between(old, orig, _reverse(reply)):
            return c, "original"
        if where == ns and _between(old, reply, _reverse(orig)):
            return c, "reply"
    return None, "original"


def _step(first: TraceEvent, before: TraceEvent, after: TraceEvent, entries: Sequence[tuple[str, CtEntry]]) -> NatStep:
    old, new = _event_key(before), _event_key(after)
    entry, direction = _holder(after.ns, old, entries)
    dst_moved = (old[3], old[4]) != (new[3], new[4])
    src_moved = (old[1], old[2]) != (new[1], new[2])
    # A reply's destination is put back where the original's source was translated, and
    # the other way round: name the rule's kind, not the field.
    dnat, snat = (dst_moved, src_moved) if direction == "original" else (src_moved, dst_moved)
    kind = "+".join(k for k, on in (("dnat", dnat), ("snat", snat)) if on) or "nat"
    hooks = []
    if dst_moved:  # the kernel rewrites destinations before routing, sources after it
        hooks.append("prerouting" if first.iif is not None else "output")
    if src_moved:
        hooks.append("input" if after.chain == "in" and after.table.startswith(TRACE_TABLE_PREFIX) else "postrouting")
    return NatStep(
        after.ns,
        after.seq,
        kind,
        direction,
        tuple(hooks),
        Endpoints(before.src, before.sport, before.dst, before.dport),
        Endpoints(after.src, after.sport, after.dst, after.dport),
        entry,
    )


def _dead_end(trace: Trace, dev: str | None = None) -> TraceEvent | None:
    """The first event of the last visit that took a packet in from a wire (by `dev`, when
    given) and sent it nowhere: not delivered, not forwarded, not dropped by a rule (the
    temporary tables' input and postrouting chains, and a bridge's, saw nothing of it). Where a packet the
    kernel dropped by itself was last seen."""
    for visit in reversed(trace_visits(trace.events)):
        first = visit[0]
        if first.iif in (None, "lo") or (dev is not None and first.iif != dev):
            continue
        onward = any(
            (e.table.startswith(TRACE_TABLE_PREFIX) and e.chain in ("post", "in", *BRIDGE_CHAINS))
            or e.verdict == "drop"
            for e in visit
        )
        if not onward:
            return first
    return None


def _stopped(trace: Trace) -> TraceEvent | None:
    """Where the probe's packets were last seen: a dead end, else the last event of the probe
    on its way out."""
    return _dead_end(trace) or _last_outbound(trace)


def _last_outbound(trace: Trace) -> TraceEvent | None:
    """The last event of the probe on its way out (from the client's address), not of an
    answer or an ICMP error coming back."""
    if not trace.events:
        return None
    out = [e for e in trace.events if e.src == trace.events[0].src]
    return out[-1] if out else trace.events[-1]


# ---------------------------------------------------------------- the walk


def _packet(e: TraceEvent) -> str:
    return f"{e.src} → {e.dst}" if e.src else "?"


def _seen(e: TraceEvent) -> str:
    where = _HOOKS.get(e.chain, e.chain)
    if e.family == "bridge" and e.bridge:
        where = f"bridge {e.bridge} {where}"
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
    """The walk, one block per packet per namespace (a visit), in the order the events
    arrived; a rule is indented under the jumps that led to its chain (the chains the
    packet is in, by the events' own chains: a chain that ends without a verdict sends no
    event of its end). Under each block, the hops rules do not show (netlab.probes.hops):
    a tunnel's way out at its start, a bridge's forwarding where the bridge's hooks saw
    it, a tunnel's way in at its end."""
    lines: list[str] = []
    told: list[CtEntry] = []
    visits = trace_visits(trace.events)
    ipvs = ipvs_places(visits, trace.ipvs)
    routes = route_hops(visits, trace.kernel.lookups if trace.kernel else (), trace.tables)
    for i, visit in enumerate(visits):
        first = visit[0]
        node = trace.nodes.get(first.ns, first.ns)
        lines.append(f"  {node} ({first.ns})  {_packet(first)}  [{_seen(first)}]")
        hops = {h.kind: h for h in visit_hops(visits, i)}
        if (outer := outer_line(visit)) is not None:
            lines.append(f"    {outer}")
        if "vxlan-decap" in hops:
            lines.append(f"    ↳ {hops['vxlan-decap'].text}")
        pending = list(ipvs.get(i, []))
        lines += _visit_lines(trace, visit, hops.get("bridge"), told, pending, routes.get(i))
        if "vxlan-encap" in hops:
            lines.append(f"    ↳ {hops['vxlan-encap'].text}")
        lines += [f"    ↳ {h.text}" for h in pending]  # no translation to the real server shown
    return lines


def _visit_lines(
    trace: Trace,
    visit: Sequence[TraceEvent],
    bridge: Hop | None,
    told: list[CtEntry],
    ipvs: list[Hop],
    route: Hop | None = None,
) -> list[str]:
    """A visit's rules and NAT steps (each conntrack entry once in the walk: `told`); an
    IPVS decision right after the translation to its real server (taken from `ipvs`); the
    route decision before the first event past it (one with a way out: the output hook's,
    the forward's, postrouting's), else at the visit's end."""
    lines: list[str] = []
    death = trace.death
    steps = {n.seq: n for n in trace.nat}
    stack: list[tuple[str, str]] = []  # (table, chain) of the jumps the packet is in
    jumped: tuple[str, str | None] | None = None  # where the last rule jumped to
    for e in visit:
        step = steps.get(e.seq) if e is not visit[0] else None
        routed = route is not None and e.family != "bridge" and e.oif is not None  # an event past the routing
        if routed and route is not None and (step is None or "postrouting" in step.hooks):
            lines.append(f"    ↳ {route.text}")  # before a source NAT, after a destination NAT
            route = None
        if step is not None:
            lines += _step_lines(step, "    " + "  " * max(0, len(stack) - 1), told, ipvs)
        if routed and route is not None:
            lines.append(f"    ↳ {route.text}")
            route = None
        if e.table.startswith(TRACE_TABLE_PREFIX):
            if e.family != "bridge" and e.chain in ("post", "in") and e.type == "policy":
                lines.append(f"    ↳ {'delivered (input)' if e.chain == 'in' else _seen(e)}")
            elif bridge is not None and e.family == "bridge" and e.chain in BRIDGE_CHAINS and e.type == "policy":
                lines.append(f"    ↳ {bridge.text}")
                bridge = None  # once per visit: a flood's copies are one line
            continue
        if (e.type == "rule" and e.handle is None) or e.type == "return" or e.verdict == "return":
            continue  # the end of a chain's rules, or a return: the next event's chain says where
        here = (e.table, e.chain)
        if here in stack:
            del stack[stack.index(here) + 1 :]
        elif stack and jumped == here:
            stack.append(here)
        else:
            stack = [here]  # another base chain (hook)
        lines.append(_event_line(e, len(stack) - 1, death))
        jumped = (e.table, e.target) if e.verdict in ("jump", "goto") else None
    return lines + ([f"    ↳ {route.text}"] if route is not None else [])


def _step_lines(step: NatStep, indent: str, told: list[CtEntry], ipvs: list[Hop]) -> list[str]:
    """A translation, its conntrack entry the first time (`told`), and the IPVS decision it
    carried out (taken from `ipvs`)."""
    lines = [f"{indent}{step.text}"]
    if step.conntrack is not None and step.conntrack not in told:  # once: later packets repeat it
        told.append(step.conntrack)
        lines.append(f"{indent}  conntrack: {_entry_words(step.conntrack)}")
    for hop in [h for h in ipvs if _to_real(step, h)]:
        lines.append(f"{indent}↳ {hop.text}")
        ipvs.remove(hop)
    return lines


def _to_real(step: NatStep, hop: Hop) -> bool:
    """The step is the translation of an IPVS decision: to the real server it picked."""
    real = hop.fields["real"]
    if step.direction != "original" or step.after.dst is None or step.after.dport != real["port"]:
        return False
    return ipaddress.ip_address(step.after.dst) == ipaddress.ip_address(real["address"])


def _tuple_words(t: CtTuple) -> str:
    return f"{_at(t.src, t.sport)} → {_at(t.dst, t.dport)}"


def _entry_words(c: CtEntry) -> str:
    """'tcp original 10.0.0.2:41234 → 203.0.113.10:80, reply 10.1.0.2:8080 → 10.0.0.2:41234'."""
    return f"{c.orig.proto} original {_tuple_words(c.orig)}, reply {_tuple_words(c.reply)}"


def drop_words(e: TraceEvent) -> str:
    """'inet filter forward: the policy of chain forward', 'ip filter FORWARD: rule `…`'."""
    what = f"the policy of chain {e.chain}" if e.type == "policy" else f"rule `{e.rule_words or e.handle}`"
    return f"{e.family} {e.table} {e.chain}: {what}"


def summary_lines(trace: Trace) -> list[str]:
    """Where it died (or that it arrived), the NAT conntrack recorded, the blind spots."""
    out = []
    death = trace.death
    if death is not None:
        out.append(f"died in {trace.nodes.get(death.ns, death.ns)}: {drop_words(death)} dropped it")
    elif not trace.ok:
        last = _stopped(trace)
        where = f"{trace.nodes.get(last.ns, last.ns)} ({_packet(last)})" if last else "no namespace"
        out.append(f"no rule dropped it; the last namespace that saw it: {where}")
        neighbour = _neighbour_lines(trace)
        out += _kernel_lines(trace, last, explained=bool(neighbour)) + neighbour
        if trace.route is not None:
            out.append(f"  route decision there: {trace.route.text}")
    for c in trace.conntrack:
        kinds = " ".join(k for k, on in (("dnat", c.dnat), ("snat", c.snat)) if on)
        out.append(f"conntrack ({kinds}): {c.text}")
    return out


# The kernel's drop reasons (include/net/dropreason-core.h) a lab runs into, in words.
REASON_WORDS = {
    "IP_RPFILTER": "reverse path filter (rp_filter): the route back to its source does not leave by the interface it came in on",
    "IP_INNOROUTES": "no route to forward it by",
    "IP_OUTNOROUTES": "no route to send it by",
    "IP_INADDRERRORS": "its destination is not an address this host accepts or forwards",
    "IP_INVALID_SOURCE": "its source is not a valid one here (martian)",
    "IP_LOCAL_SOURCE": "its source is one of this host's own addresses",
    "IP_LOCALNET": "its source or destination is in 127.0.0.0/8 and route_localnet is off",
    "IP_INVALID_DEST": "its destination is invalid here",
    "NEIGH_FAILED": "the neighbour (ARP/NDP) of its next hop did not answer",
    "NEIGH_CREATEFAIL": "no neighbour entry could be made for its next hop",
    "NEIGH_QUEUEFULL": "too many packets were waiting for the next hop's ARP/NDP answer",
    "NEIGH_DEAD": "the next hop's neighbour entry was gone",
    "NO_SOCKET": "no socket takes it: no listener on its port, nor a connection it belongs to",
    "OTHERHOST": "the frame was not addressed to this host",
    "PKT_TOO_BIG": "larger than the route's MTU, and it may not be fragmented",
    "IP_NOPROTO": "no handler for its IP protocol",
    "IPV6DISABLED": "IPv6 is off on the interface",
    "UNICAST_IN_L2_MULTICAST": "a unicast packet in a link-layer multicast or broadcast frame",
    "XFRM_POLICY": "an IPsec policy",
    "TC_INGRESS": "a tc ingress filter",
    "TC_EGRESS": "a tc egress filter",
    "QDISC_DROP": "the qdisc (a full queue, or netem's loss)",
    "VXLAN_VNI_NOT_FOUND": "no VXLAN device here has its VNI",
    "NO_TX_TARGET": "no target to send it to: a tunnel device with no remote for it (a VXLAN device without an FDB entry for its destination MAC)",
    "VXLAN_NO_REMOTE": "the VXLAN device has no remote to send it to",
    "VXLAN_INVALID_HDR": "a malformed VXLAN header",
    "MAC_INVALID_SOURCE": "an invalid source MAC address",
    "BRIDGE_INGRESS_STP_STATE": "the bridge port is not forwarding (STP)",
}
_IP_ETHERTYPES = (0x0800, 0x86DD)
UNANSWERED = ("INCOMPLETE", "FAILED")  # a neighbour entry whose address no one answered
NO_ROUTE = ("IP_INNOROUTES", "IP_OUTNOROUTES")


def kernel_drop(trace: Trace) -> tuple[KernelDrop, str | None] | None:
    """The first drop of the probe's packets the kernel gave a reason for, besides a
    netfilter verdict (the walk names the rule): the drop, and the namespace it happened in
    (the last one the walk saw the packet arrive in by that interface), if known."""
    drops = [
        d
        for d in (trace.kernel.drops if trace.kernel else ())
        if d.reason != "NETFILTER_DROP" and d.protocol in _IP_ETHERTYPES
    ]
    if not drops:
        return None
    drop = drops[0]
    if (end := _dead_end(trace, drop.dev)) is not None:
        return drop, end.ns
    last = _last_outbound(trace)
    if last is not None and (drop.dev is None or last.iif == drop.dev):
        return drop, last.ns
    seen = [e for e in trace.events if drop.dev is not None and e.iif == drop.dev]
    return drop, (seen[-1].ns if seen else None)


def failed_lookups(trace: Trace, dst: str | None) -> list[FibLookup]:
    """The FIB lookups of the probe's destination that found no route, each table once."""
    found = [f for f in (trace.kernel.lookups if trace.kernel else ()) if f.err != 0 and f.dst == dst]
    return list({f.table: f for f in found}.values())


def _kernel_lines(trace: Trace, last: TraceEvent | None, *, explained: bool = False) -> list[str]:
    if trace.kernel is None:
        return []
    if trace.kernel.unavailable is not None:
        return [f"  the kernel's drop reasons could not be read ({trace.kernel.unavailable})", f"  {BLIND_SPOTS}"]
    out = []
    found = kernel_drop(trace)
    if found is not None:
        drop, ns = found
        where = f"{trace.nodes.get(ns, ns)} ({ns})" if ns else "a namespace"
        dev = f", in on {drop.dev}" if drop.dev else ""
        words = REASON_WORDS.get(drop.reason, drop.reason.lower().replace("_", " "))
        out.append(f"  the kernel dropped it in {where}{dev}: {drop.reason} — {words} ({drop.location})")
    dst = last.dst if last else trace.dst
    if found is None or found[0].reason in NO_ROUTE:
        tables = ", ".join(table_words(f.table) for f in failed_lookups(trace, dst))
        if tables:
            out.append(f"  FIB lookups of {dst} that found no route: {tables}")
    if not out and not explained:
        out.append(f"  {BLIND_SPOTS}; the kernel gave no drop reason for it")
    return out


def neighbour_words(trace: Trace) -> str | None:
    """'the kernel drops it in router (lab.router), out on eth1: NEIGH_FAILED — …'."""
    if trace.neighbour is None:
        return None
    ns, n = trace.neighbour
    arp = "NDP" if ":" in n.dst else "ARP"
    when = "drops" if n.state == "INCOMPLETE" else "dropped"
    return (
        f"the kernel {when} it in {trace.nodes.get(ns, ns)} ({ns}), out on {n.dev}: NEIGH_FAILED — its next hop "
        f"{n.dst} does not answer {arp} (neighbour {n.state}: the packets wait for it, and are dropped when the "
        "kernel gives up)"
    )


def _neighbour_lines(trace: Trace) -> list[str]:
    words = neighbour_words(trace)
    return [] if words is None else [f"  {words}"]


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
        "nat": [_nat_json(n, trace) for n in trace.nat],
        "route": None if trace.route is None else trace.route.text,
        "kernel": None if trace.kernel is None else asdict(trace.kernel),
        "kernel_drop": _kernel_drop_json(trace),
        "neighbour": _neighbour_json(trace),
        "summary": summary_lines(trace),
        "hops": [h.to_json(trace.nodes) for h in hops(trace)],
    }


def _nat_json(step: NatStep, trace: Trace) -> dict[str, Any]:
    ct = step.conntrack
    return {
        **asdict(replace(step, conntrack=None)),
        "node": trace.nodes.get(step.ns, step.ns),
        "conntrack": None if ct is None else {"original": asdict(ct.orig), "reply": asdict(ct.reply), "text": ct.text},
    }


def hops(trace: Trace) -> list[Hop]:
    """The walk's hops that are not rules (bridges, tunnels, IPVS), in the walk's order."""
    visits = trace_visits(trace.events)
    ipvs = ipvs_places(visits, trace.ipvs)
    routes = route_hops(visits, trace.kernel.lookups if trace.kernel else (), trace.tables)
    return [
        h
        for i in range(len(visits))
        for h in [*visit_hops(visits, i), *([routes[i]] if i in routes else []), *ipvs.get(i, [])]
    ]


def _neighbour_json(trace: Trace) -> dict[str, Any] | None:
    if trace.neighbour is None:
        return None
    ns, n = trace.neighbour
    return {**asdict(n), "ns": ns, "node": trace.nodes.get(ns, ns)}


def _kernel_drop_json(trace: Trace) -> dict[str, Any] | None:
    found = kernel_drop(trace) if trace.death is None and not trace.ok else None
    if found is None:
        return None
    drop, ns = found
    return {**asdict(drop), "ns": ns, "node": trace.nodes.get(ns, ns) if ns else None}


def flows_of(events: Sequence[TraceEvent]) -> list[str]:
    """The packets the events saw, as 'ns: src → dst', each once (for tests and evidence)."""
    return list(dict.fromkeys(f"{e.ns}: {_packet(e)}" for e in events))
