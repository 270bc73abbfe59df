"""Run a lab's checks: gather the observations each one needs, let the judges decide.

A probe check opens its capture (if any) first, sends its probes, then reads the
conntrack table and the IPVS services and connections of the nodes it names; route and
rule checks ask the kernel directly. Every read goes through the context's
KernelObserver (the live one unless a test gives the fake) and every probe through its
`send_probes`, so the runner, its retries and `wait:` are tested without root.
Checks run in a thread pool: every observation is tied to the probe's own flow (its
client port or ICMP id), so checks running side by side do not see each other's traffic
as their own. A check with `wait:` is retried until it passes or the budget is spent —
for things that settle (a route learned, a service that takes a moment).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from netlab.lab.checks import (
    CounterSpec,
    DroppedBy,
    Probe,
    ProbeCheck,
    RouteCheck,
    RouteQuerySpec,
    RuleCheck,
    payload_bytes,
)
from netlab.lab.model import Check, Lab, Vxlan
from netlab.lab.parse import topology
from netlab.lab.policy import POLICY_TABLE
from netlab.lab.targets import names_to_addresses, probe_target
from netlab.lab.topology import Topology
from netlab.observations import CounterView, CtEntry, Drop, IpvsConn, IpvsState, ObserveError, Packet, RouteQuery
from netlab.pcap import Frame
from netlab.probes.drops import drop_rules, drops_summary
from netlab.probes.flow import ProbeRequest, ProbeResult
from netlab.probes.ipvs_flow import ipvs_flow
from netlab.probes.judge import (
    Judgement,
    RoundTrips,
    counted,
    judge_capture,
    judge_conntrack,
    judge_counters,
    judge_dropped_by,
    judge_dropped_by_rule,
    judge_ipvs,
    judge_probe,
    judge_round_trips,
    judge_route,
    judge_rule,
    round_trips,
)
from netlab.probes.trace import Trace, drop_words, text_lines, trace_probe, trace_requests
from netlab.probes.trace import to_json as trace_json
from netlab.vocabulary import BUILTIN_TABLES, host_port, parse_fwmark

if TYPE_CHECKING:
    from netlab.kernel.observer import KernelObserver, OpenCapture

RETRY_PAUSE = 0.2  # between attempts of a check with `wait:`


class SendProbes(Protocol):
    """netlab.probes.flow.probe_many's shape: real traffic, results in request order."""

    def __call__(self, requests: Sequence[ProbeRequest], *, workers: int) -> list[ProbeResult]: ...


def _live_observer() -> KernelObserver:
    from netlab.kernel.observe import LiveObserver

    return LiveObserver()


def _send_probes(requests: Sequence[ProbeRequest], *, workers: int) -> list[ProbeResult]:
    from netlab.probes.flow import probe_many

    return probe_many(requests, workers=workers)


@dataclass(frozen=True)
class Verdict:
    name: str
    kind: str  # probe | route | rule
    passed: bool
    summary: str  # what was observed, in one line (also for a check that passed)
    reasons: list[str] = field(default_factory=list)  # why it failed
    evidence: list[str] = field(default_factory=list)  # the kernel state behind it
    description: str = ""
    attempts: int = 1
    seconds: float = 0.0
    probes: list[dict[str, Any]] = field(default_factory=list)  # each probe's result, for --json
    round_trips: RoundTrips | None = None  # a probe check's: loss and rtt min/avg/max over its probes
    trace: Trace | None = None  # a failed probe check's probe sent again, traced (`check --trace`)

    def to_json(self) -> dict[str, Any]:
        # asdict's keys in its order, without its deep copy of every probe's dict again (a
        # tenth of a second per thousand checks).
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "evidence": list(self.evidence),
            "description": self.description,
            "attempts": self.attempts,
            "seconds": self.seconds,
            "probes": [dict(p) for p in self.probes],
            "round_trips": None if self.round_trips is None else self.round_trips.to_json(),
            "trace": None if self.trace is None else trace_json(self.trace),
        }

    def walk(self) -> list[str]:
        """The traced probe's walk as `netlab trace` prints it, or nothing."""
        return text_lines(self.trace) if self.trace is not None else []


@dataclass
class LabContext:
    """What the runner needs to know about an up lab: its model, where each node lives,
    how to read its kernel and how to send its probes."""

    lab: Lab
    nodes: dict[str, str]  # node → namespace
    observer: KernelObserver = field(default_factory=_live_observer)
    send_probes: SendProbes = _send_probes
    # Every probe check captures, on its `capture:` interface or else on the client's way
    # out, and keeps the frames of its last attempt in `frames` (`netlab check --pcap`).
    keep_frames: bool = False
    frames: dict[str, list[Frame]] = field(default_factory=dict)  # check name → frames
    topo: Topology = field(init=False)
    tables: dict[str, int] = field(init=False)
    _owner: dict[str, tuple[str, str]] = field(init=False)  # address → (node, interface)
    # nodes with `table inet network-policy` → its drop rules (netlab.probes.drops)
    policy_nodes: dict[str, dict[int, str]] = field(init=False)
    nat_nodes: list[str] = field(init=False)  # nodes that may rewrite a flow (NAT)
    # Asked again by every check (a thousand at a time): worked out once. The lab is
    # frozen, so a name always stands for the same addresses.
    node_names: set[str] = field(init=False)
    _resolved: dict[tuple[str, ...], frozenset[str]] = field(init=False)
    _vxlan_ports: frozenset[int] = field(init=False)
    _node_of_ns: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.topo = topology(self.lab)
        self.topo.of_node("")  # its index built now, before the checks' threads share it
        self.node_names = set(self.lab.nodes)
        self._resolved = {}
        self._vxlan_ports = frozenset(self._find_vxlan_ports())
        self._node_of_ns = {}
        for node, ns in reversed(self.nodes.items()):  # the first node of a namespace wins, as before
            self._node_of_ns[ns] = node
        self.tables = {**BUILTIN_TABLES, **self.lab.tables}
        marker = f"table inet {POLICY_TABLE} {{"
        self.policy_nodes = {
            name: drop_rules(r.ruleset)
            for name, node in self.lab.nodes.items()
            for r in node.nftables
            if r.ruleset and marker in r.ruleset
        }
        self.nat_nodes = [
            name for name, node in self.lab.nodes.items() if node.nftables or node.iptables or node.ipvs or node.exec
        ]
        self._owner = {}
        for (node, ifname), iface in self.topo.interfaces.items():
            for addr in iface.settings.addresses:
                self._owner.setdefault(str(ipaddress.ip_interface(addr).ip), (node, ifname))

    def resolve(self, names: tuple[str, ...]) -> set[str]:
        found = self._resolved.get(names)
        if found is None:  # a name that does not resolve raises each time, as it should
            found = self._resolved[names] = frozenset(names_to_addresses(self.topo, self.node_names, names))
        return set(found)

    def node_of(self, addr: str) -> str | None:
        owner = self._iface_of(addr)
        return owner[0] if owner else None

    def where(self, addr: str) -> str | None:
        """'router's eth1': the interface that has the address (for ICMP senders)."""
        owner = self._iface_of(addr)
        return f"{owner[0]}'s {owner[1]}" if owner else None

    def _iface_of(self, addr: str) -> tuple[str, str] | None:
        try:
            return self._owner.get(str(ipaddress.ip_address(addr)))
        except ValueError:
            return None

    def ns(self, node: str) -> str:
        return self.nodes[node]

    def node_in(self, ns: str) -> str | None:
        """The node whose namespace ns is."""
        return self._node_of_ns.get(ns)

    def policy_drops(self) -> list[Drop]:
        """The drops recorded by the network policy of every node that has one."""
        return [d for node, rules in self.policy_nodes.items() for d in self.observer.drops(self.ns(node), node, rules)]

    def vxlan_ports(self) -> set[int]:
        return set(self._vxlan_ports)

    def _find_vxlan_ports(self) -> set[int]:
        ports = {4789, 8472}
        for node in self.lab.nodes.values():
            ports |= {link.port for link in node.links.values() if isinstance(link, Vxlan)}
        return ports


def run_checks(
    ctx: LabContext,
    checks: Sequence[Check] | None = None,
    *,
    workers: int = 16,
    on_done: Callable[[Verdict], None] | None = None,
    fail_fast: bool = False,
) -> list[Verdict]:
    """Every check (or those given), in lab-file order in the result. fail_fast: once one
    has failed, the checks not yet started are not run (and not in the result). Checks with
    counter expectations or a `dropped_by:` rule run one at a time after the others: a
    counter counts every flow, a trace hears every traced packet, and the traffic of checks
    running beside one would be taken for its own."""
    todo = list(ctx.lab.checks if checks is None else checks)
    if not todo:
        return []
    failed = threading.Event()

    def one(check: Check) -> Verdict | None:
        if fail_fast and failed.is_set():
            return None
        verdict = run_check(ctx, check)
        if not verdict.passed:
            failed.set()
        if on_done is not None:
            on_done(verdict)
        return verdict

    alone = {i for i, check in enumerate(todo) if _alone(check)}
    together = [i for i in range(len(todo)) if i not in alone]
    verdicts: dict[int, Verdict | None] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="netlab-check")
    try:
        verdicts.update(zip(together, pool.map(one, [todo[i] for i in together]), strict=True))
    finally:  # interrupted: the running checks end, the queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
    verdicts.update((i, one(todo[i])) for i in sorted(alone))
    return [v for v in (verdicts[i] for i in range(len(todo))) if v is not None]


def _alone(check: Check) -> bool:
    """Checks that must run with no other traffic: counters count every flow, and a trace's
    listeners hear every traced packet of their namespace."""
    return isinstance(check, ProbeCheck) and bool(check.counters or isinstance(check.expect.dropped_by, DroppedBy))


def trace_failures(ctx: LabContext, checks: Sequence[Check], verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Each failed probe check's probe sent once more with tracing on, its walk attached to
    the verdict (`check --trace`). One at a time, after every check ran: a trace's listeners
    hear every traced packet of their namespace, and the checks' own traffic is over."""
    out = []
    for check, v in zip(checks, verdicts, strict=True):
        if not v.passed and isinstance(check, ProbeCheck) and v.trace is None:
            try:
                v = replace(v, trace=trace_probe(ctx, check.probe.from_, _requests(ctx, check)[0]))
            except (ObserveError, OSError) as err:
                v = replace(v, evidence=[*v.evidence, f"could not trace the probe: {err}"])
        out.append(v)
    return out


def run_check(ctx: LabContext, check: Check) -> Verdict:
    start = time.monotonic()
    deadline = start + check.wait
    attempts = 0
    while True:
        attempts += 1
        verdict = _attempt(ctx, check)
        if verdict.passed or time.monotonic() + RETRY_PAUSE > deadline:
            break
        time.sleep(RETRY_PAUSE)
    return replace(verdict, attempts=attempts, seconds=round(time.monotonic() - start, 4))


def _attempt(ctx: LabContext, check: Check) -> Verdict:
    kind = "probe" if isinstance(check, ProbeCheck) else "route" if isinstance(check, RouteCheck) else "rule"
    try:
        if isinstance(check, ProbeCheck):
            return _probe_check(ctx, check)
        if isinstance(check, RouteCheck):
            return _route_check(ctx, check)
        return _rule_check(ctx, check)
    except (ObserveError, OSError) as err:
        return Verdict(
            check.name, kind, False, "could not observe", [f"could not observe: {err}"], description=check.description
        )


# ---------------------------------------------------------------- probe checks


def _requests(ctx: LabContext, check: ProbeCheck) -> list[ProbeRequest]:
    dst, port = probe_target(ctx.topo, ctx.node_names, check.probe)
    return probe_requests(check.probe, ctx.ns(check.probe.from_), dst, port)


def probe_requests(p: Probe, ns: str, dst: str, port: int | None) -> list[ProbeRequest]:
    """A lab file's probe (sent from namespace ns to dst, port) as the requests it sends."""
    request = ProbeRequest(
        ns,
        p.proto or ("tcp" if port is not None else "icmp"),
        dst,
        port,
        src=p.src,
        sport=p.sport,
        timeout=p.timeout,
        payload=payload_bytes(p.payload),
        ttl=p.ttl,
        tos=p.ds_field,
        mark=p.mark,
    )
    return [request] * p.count


def _probe_check(ctx: LabContext, check: ProbeCheck) -> Verdict:
    requests = _requests(ctx, check)
    capture: OpenCapture | None = None
    if check.capture is not None or ctx.keep_frames:
        node, ifname = _capture_point(ctx, check, requests[0])
        capture = ctx.observer.capture(
            ctx.ns(node), ifname, vxlan_ports=sorted(ctx.vxlan_ports()), keep_frames=ctx.keep_frames
        )
    try:
        counters_before = _counter_readings(ctx, check)
        results, trace = _send(ctx, check, requests)
        counters_after = _counter_readings(ctx, check)
        entries = ctx.observer.conntrack(ctx.ns(check.conntrack.on)) if check.conntrack is not None else []
        ipvs = ctx.observer.ipvs(ctx.ns(check.ipvs.on)) if check.ipvs is not None else IpvsState((), ())
        services, conns = ipvs.services, ipvs.connections
        packets: list[Packet] = capture.packets() if capture is not None else []
        # the rewrites NAT made on the way, to know the probe's packets after them
        rewrites = _nat_entries(ctx) if check.capture is not None else []
        if capture is not None and ctx.keep_frames:
            ctx.frames[check.name] = capture.frames
        # which policy rule dropped the failed probes (a policy's drops record their flows)
        drops: list[Drop] = []
        if ctx.policy_nodes and (check.expect.dropped_by is not None or not all(r.ok for r in results)):
            drops = ctx.policy_drops()
    finally:
        if capture is not None:
            capture.close()
    j = judge_probe(check.expect, results, ctx.resolve, ctx.node_of, ctx.where)
    j.add(_judge_dropped_by(ctx, check, results, drops, trace))
    if check.conntrack is not None:
        j.add(judge_conntrack(check.conntrack.on, check.conntrack.expect, results, entries, ctx.resolve, ctx.node_of))
    rt = round_trips(results)
    j.add(judge_round_trips(check.expect, rt))
    summary = _probe_summary(results, ctx.where) + _delivery_summary(results)
    if _tells_round_trips(check, rt):
        summary += f"; {rt.words()}"
    summary += drops_summary(results, drops)
    if trace is not None and trace.death is not None:
        summary += f"; dropped in {trace.nodes.get(trace.death.ns, trace.death.ns)} by {drop_words(trace.death)}"
    if check.ipvs is not None:
        j.add(judge_ipvs(check.ipvs.on, check.ipvs.expect, results, conns, services, ctx.resolve, ctx.node_of))
        summary += _ipvs_summary(check.ipvs.on, results, conns, ctx)
    if check.capture is not None:
        j.add(
            judge_capture(check.capture.on, check.capture.expect, results, packets, ctx.resolve, ctx.node_of, rewrites)
        )
    if check.counters:
        j.add(judge_counters(check.counters, counters_before, counters_after))
        summary += _counters_summary(check.counters, counters_before, counters_after)
    if not j.passed:
        said = "\n".join(j.reasons)  # a detail the reasons already quote is not repeated
        j.evidence = [f"probe: {r.detail}" for r in _distinct(results) if r.detail not in said] + j.evidence
    # a trace taken for `dropped_by:` is the walk of a failed check (check --trace reuses it)
    trace = trace if not j.passed else None
    return _verdict(check, "probe", j, summary, probes=[r.to_json() for r in results], round_trips=rt, trace=trace)


def _send(ctx: LabContext, check: ProbeCheck, requests: list[ProbeRequest]) -> tuple[list[ProbeResult], Trace | None]:
    """The check's probes, sent; traced when a `dropped_by:` rule is judged from the trace."""
    # Several probes of one check run one after another when a fixed source port is
    # asked for (they would collide), else a few at a time.
    workers = 1 if check.probe.sport is not None else min(8, len(requests))
    if isinstance(check.expect.dropped_by, DroppedBy):
        trace = trace_requests(ctx, check.probe.from_, requests, workers=workers)
        return list(trace.probes), trace
    return ctx.send_probes(requests, workers=workers), None


def _judge_dropped_by(
    ctx: LabContext, check: ProbeCheck, results: list[ProbeResult], drops: list[Drop], trace: Trace | None
) -> Judgement:
    wanted = check.expect.dropped_by
    if isinstance(wanted, DroppedBy):
        events = trace.events if trace is not None else ()
        return judge_dropped_by_rule(wanted, ctx.ns(wanted.node), results, events, ctx.node_in)
    return judge_dropped_by(wanted, results, drops) if wanted is not None else Judgement()


def _tells_round_trips(check: ProbeCheck, rt: RoundTrips) -> bool:
    """As ping's last lines, over a count or when expected; but probes that were all
    answered by errors (refused, ICMP) have neither a round trip nor a loss to tell."""
    if check.expect.rtt_ms is not None or check.expect.loss is not None:
        return True
    return rt.sent > 1 and (rt.rtt_min is not None or rt.lost > 0)


def _nat_entries(ctx: LabContext) -> list[CtEntry]:
    """The conntrack entries of every node that can NAT: one with a ruleset, IPVS or
    `exec:` commands (which may load rules); its entries say how it rewrote a flow."""
    return [e for node in ctx.nat_nodes for e in ctx.observer.conntrack(ctx.ns(node))]


def _counter_readings(ctx: LabContext, check: ProbeCheck) -> dict[str, list[CounterView]]:
    """node → its firewall counters now, for each node a counter expectation names."""
    out: dict[str, list[CounterView]] = {}
    for node in dict.fromkeys(spec.on for spec in check.counters):
        spec = ctx.lab.nodes[node]
        out[node] = ctx.observer.counters(ctx.ns(node), iptables=bool(spec.iptables or spec.exec))
    return out


def _counters_summary(
    specs: Sequence[CounterSpec], before: dict[str, list[CounterView]], after: dict[str, list[CounterView]]
) -> str:
    """'; counted: svc web +4 packets (336 bytes)'."""
    parts = []
    for spec in specs:
        found, packets, octets = counted(spec, before.get(spec.on, []), after.get(spec.on, []))
        label = spec.name or spec.comment or (f"handle {spec.handle}" if spec.handle else f"`{spec.rule}`")
        parts.append(f"{label} +{packets} packets ({octets} bytes)" if found else f"{label}: no such counter")
    return "; counted: " + ", ".join(parts)


def _capture_point(ctx: LabContext, check: ProbeCheck, first: ProbeRequest) -> tuple[str, str]:
    """(node, interface) a probe check captures on: its `capture:`, else where the client
    sends the probe (the route's device; its only interface when there is no route)."""
    if check.capture is not None:
        node, _, ifname = check.capture.on.partition(":")
        return node, ifname
    client = check.probe.from_
    dev = ctx.observer.route_get(first.ns, [RouteQuery(first.dst, src=first.src)])[0].dev
    if dev is None:
        dev = next((i.name for i in ctx.topo.of_node(client) if i.kind != "lo"), "lo")
    return client, dev


def _ipvs_summary(node: str, results: Sequence[ProbeResult], conns: Sequence[IpvsConn], ctx: LabContext) -> str:
    """'; IPVS in director → rs1 (5), rs2 (5)': the real server each flow was given."""
    reals: Counter[str] = Counter()
    for r in results:
        mine = ipvs_flow(conns, r)
        if mine:
            reals[ctx.node_of(mine[0].daddr) or host_port(mine[0].daddr, mine[0].dport)] += 1
    if not reals:
        return f"; no IPVS connection in {node}"
    n = len(results)
    return f"; IPVS in {node} → " + ", ".join(f"{k} ({v})" if n > 1 else k for k, v in reals.most_common())


def _distinct(results: Sequence[ProbeResult]) -> list[ProbeResult]:
    """One result per outcome (fifty identical lines help nobody)."""
    seen: dict[str, ProbeResult] = {}
    for r in results:
        seen.setdefault(r.outcome, r)
    return list(seen.values())


def _probe_summary(results: Sequence[ProbeResult], where: Callable[[str], str | None] = lambda _a: None) -> str:
    n = len(results)
    outcomes = Counter(r.outcome for r in results)
    first = results[0]
    target = f"{first.proto} " + host_port(first.dst, first.dport, no_port="address")
    target += _set_fields(first)
    text = f"{target}: " + ", ".join(f"{o} {c}/{n}" if n > 1 else o for o, c in outcomes.most_common())
    served = Counter(r.served_by for r in results if r.served_by)
    if served:
        text += "; served by " + ", ".join(f"{k} ({v})" if n > 1 else k for k, v in served.most_common())
    saw = sorted({r.server_saw for r in results if r.server_saw})
    if saw:
        text += f"; server saw {', '.join(saw[:3])}"
    if n == 1 and first.outcome != "ok" and first.icmp:
        text += f"; {first.icmp}"
        if first.icmp_from:
            text += f" from {_at(first.icmp_from, where)}"
    elif n > 1:
        senders = Counter(_at(r.icmp_from, where) for r in results if r.icmp_from)
        if senders:
            text += "; ICMP errors from " + ", ".join(f"{k} ({v})" for k, v in senders.most_common(3))
    return text


def _set_fields(first: ProbeResult) -> str:
    """' (ttl 2, tos 0xb8, mark 0x7, 1400-byte payload)': what the probe set on its packets."""
    parts = [
        f"{name} {value if name == 'ttl' else hex(value)}"
        for name, value in (("ttl", first.ttl), ("tos", first.tos), ("mark", first.mark))
        if value is not None
    ]
    if first.sent is not None:
        parts.append(f"{first.sent}-byte payload")
    return f" ({', '.join(parts)})" if parts else ""


def _delivery_summary(results: Sequence[ProbeResult]) -> str:
    """'; payload intact' when every answered probe's payload arrived as sent, else what
    became of the first that did not."""
    answered = [r for r in results if r.ok and r.sent is not None]
    if not answered:
        return ""
    spoiled = [r for r in answered if r.intact is not True]
    if not spoiled:
        return "; payload intact"
    return f"; {spoiled[0].delivery}" + (f" ({len(spoiled)} of {len(answered)})" if len(answered) > 1 else "")


def _at(addr: str, where: Callable[[str], str | None]) -> str:
    place = where(addr)
    return f"{addr} ({place})" if place else addr


# ---------------------------------------------------------------- route and rule checks


def route_query(q: RouteQuerySpec) -> RouteQuery:
    """A route check's `route:` as the question the kernel is asked."""
    mark = parse_fwmark(q.fwmark)[0] if q.fwmark else None
    return RouteQuery(
        q.get,
        src=q.from_,
        iif=q.iif,
        oif=q.oif,
        vrf=q.vrf,
        fwmark=mark,
        ipproto=q.ipproto,
        sport=q.sport,
        dport=q.dport,
        uid=q.uid,
        tos=q.dscp << 2 if q.dscp is not None else q.tos,
        flowlabel=q.flowlabel,
    )


def _route_check(ctx: LabContext, check: RouteCheck) -> Verdict:
    q = check.route
    [answer] = ctx.observer.route_get(ctx.ns(q.on), [route_query(q)])
    j = judge_route(check.expect, answer, ctx.tables)
    decided = f" (rule {answer.rule.text})" if answer.rule is not None and answer.errno is None else ""
    return _verdict(check, "route", j, f"{q.on}: {answer.text}{decided}")


def _rule_check(ctx: LabContext, check: RuleCheck) -> Verdict:
    found = ctx.observer.rules(ctx.ns(check.rule.on))
    j = judge_rule(check.rule, check.expect.present, found, ctx.tables)
    summary = f"{check.rule.on}: {'present' if check.expect.present == j.passed else 'absent'}"
    return _verdict(check, "rule", j, summary)


def _verdict(check: Check, kind: str, j: Judgement, summary: str, **extra: Any) -> Verdict:
    return Verdict(check.name, kind, j.passed, summary, j.reasons, j.evidence, check.description, **extra)
