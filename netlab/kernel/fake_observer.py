"""A kernel observer that serves canned state behind the KernelObserver interface, for
rootless tests of the check runner (run_checks, retries, `wait:`) and the plugin.

Not a mere recorder: a route lookup is decided as the kernel decides it — the policy
rules in priority order (the kernel's three default rules unless a namespace has its
own), goto, reject rules, the longest matching prefix of the selected table, throw — and
answered with the same words and the same deciding rule as the live reader (both use
netlab.fib). A query the kernel could never answer raises QueryError; an unknown
namespace or interface raises ObserveError, as the live reader does.

Every read is recorded (`calls`, and each route query in `queries`), and `before_read`,
when set, runs before each: a test changes the canned state there to play a kernel that
settles (a route that appears on the third look).
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from netlab.fib.lookup import REJECT_ERRNOS, RULE_ERRNOS, deciding_rule, error_answer, l3mdev_table, rule_selects
from netlab.fib.query import check_query
from netlab.fib.text import route_text, rule_text
from netlab.observations import (
    TRACE_SETTLE,
    CaptureError,
    CounterView,
    CtEntry,
    Drop,
    IpvsState,
    KernelSeen,
    NeighView,
    ObserveError,
    Packet,
    RouteAnswer,
    RouteQuery,
    RuleView,
    TraceEvent,
    TraceFlow,
)
from netlab.pcap import Frame
from netlab.vocabulary import BUILTIN_TABLES

T = TypeVar("T")

MAIN, DEFAULT, LOCAL = (BUILTIN_TABLES[name] for name in ("main", "default", "local"))


@dataclass(frozen=True)
class FakeRoute:
    to: str  # a prefix, or "default"
    dev: str | None = None
    via: str | None = None
    table: int = MAIN
    type: str = "unicast"  # or blackhole, unreachable, prohibit, throw, local, …
    prefsrc: str | None = None


def default_rules(family: int) -> list[RuleView]:
    """The rules every namespace starts with: local (0), main (32766), default (32767)."""
    out = []
    for priority, table in ((0, LOCAL), (32766, MAIN), (32767, DEFAULT)):
        rule = RuleView(priority, family, None, None, None, None, None, None, table, "lookup", "")
        out.append(RuleView(**{**rule.__dict__, "text": rule_text(rule)}))
    return out


@dataclass
class FakeNamespace:
    routes: list[FakeRoute] = field(default_factory=list)
    rules: list[RuleView] | None = None  # None: the kernel's default rules, both families
    links: set[str] = field(default_factory=set)  # besides lo and every route's dev
    vrfs: dict[str, tuple[str, int]] = field(default_factory=dict)  # interface → (VRF, its table)
    conntrack: list[CtEntry] = field(default_factory=list)
    neighbours: list[NeighView] = field(default_factory=list)
    ipvs: IpvsState = field(default_factory=lambda: IpvsState((), ()))
    nft: dict[str, str] = field(default_factory=dict)  # `nft list WHAT` → its text
    counters: list[CounterView] = field(default_factory=list)  # a test changes them in before_read
    packets: dict[str, list[Packet]] = field(default_factory=dict)  # interface → what a capture there sees
    drops: list[Drop] = field(default_factory=list)
    trace: list[TraceEvent] = field(default_factory=list)  # what a trace through ns reports

    def interfaces(self) -> set[str]:
        return {"lo", *self.links, *self.packets, *self.vrfs, *(r.dev for r in self.routes if r.dev)}

    def ruleset(self) -> list[RuleView]:
        return self.rules if self.rules is not None else default_rules(4) + default_rules(6)


@dataclass
class FakeCapture:
    observer: FakeObserver
    ns: str
    ifname: str
    closed: bool = False
    frames: list[Frame] = field(default_factory=list)  # a fake has packets, not frames

    def packets(self) -> list[Packet]:
        if self.closed:
            raise CaptureError(self.ns, self.ifname, "the capture is not open")
        self.observer._read("packets", self.ns, self.ifname)
        return self.observer._space(self.ns).packets.pop(self.ifname, [])

    def close(self) -> None:
        self.closed = True
        self.observer.calls.append(("capture closed", self.ns, self.ifname))


@dataclass
class FakeObserver:
    namespaces: dict[str, FakeNamespace] = field(default_factory=dict)
    before_read: Callable[[FakeObserver, str, str], None] | None = None  # (what, ns), before each read
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (what, ns, detail), in order
    queries: list[RouteQuery] = field(default_factory=list)
    # what the kernel's drop tracepoints tell during a trace
    kernel_seen: KernelSeen = field(default_factory=lambda: KernelSeen(unavailable="the fake reads no tracepoints"))

    def _read(self, what: str, ns: str, detail: str = "") -> FakeNamespace:
        self.calls.append((what, ns, detail))
        if self.before_read is not None:
            self.before_read(self, what, ns)
        return self._space(ns)

    def _space(self, ns: str) -> FakeNamespace:
        if ns not in self.namespaces:
            raise ObserveError(f"namespace {ns} does not exist")
        return self.namespaces[ns]

    def route_get(self, ns: str, queries: Sequence[RouteQuery]) -> list[RouteAnswer]:
        for q in queries:
            check_query(q)
        space = self._read("route_get", ns, ", ".join(q.dst for q in queries))
        self.queries += queries
        return [_lookup(space, q) for q in queries]

    def rules(self, ns: str) -> list[RuleView]:
        return list(self._read("rules", ns).ruleset())

    def conntrack(self, ns: str) -> list[CtEntry]:
        return list(self._read("conntrack", ns).conntrack)

    def neighbours(self, ns: str) -> list[NeighView]:
        return list(self._read("neighbours", ns).neighbours)

    def ipvs(self, ns: str) -> IpvsState:
        return self._read("ipvs", ns).ipvs

    def nft_list(self, ns: str, what: str) -> str | None:
        return self._read("nft list", ns, what).nft.get(what)

    def counters(self, ns: str, *, iptables: bool = False) -> list[CounterView]:
        return list(self._read("counters", ns, "iptables" if iptables else "").counters)

    def capture(
        self, ns: str, ifname: str, *, vxlan_ports: Collection[int] = (4789, 8472), keep_frames: bool = False
    ) -> FakeCapture:
        space = self.namespaces.get(ns)
        self.calls.append(("capture", ns, ifname))
        if space is None:
            raise CaptureError(ns, ifname, f"namespace {ns} does not exist")
        if ifname not in space.interfaces():
            raise CaptureError(ns, ifname, f"no interface {ifname} in {ns}")
        return FakeCapture(self, ns, ifname)

    def drops(self, ns: str, node: str, rules: Mapping[int, str]) -> list[Drop]:
        return [d for d in self._read("drops", ns, node).drops if d.node == node]

    def trace(
        self, namespaces: Sequence[str], flow: TraceFlow, send: Callable[[], T], *, settle: float = TRACE_SETTLE
    ) -> tuple[T, list[TraceEvent]]:
        """send() and every namespace's canned events, merged in their `seq` order."""
        spaces = [self._read("trace", ns, flow.proto) for ns in namespaces]
        result = send()
        return result, sorted((e for space in spaces for e in space.trace), key=lambda e: e.seq)

    def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
        return send(), self.kernel_seen


def _lookup(space: FakeNamespace, q: RouteQuery) -> RouteAnswer:
    """The kernel's decision for q: fib_rules_lookup over the namespace's rules."""
    known = space.interfaces()
    for name, what in ((q.iif, "iif"), (q.oif, "oif"), (q.vrf, "vrf")):
        if name is not None and name not in known:
            raise ObserveError(f"no interface {name} (the query's {what})")
    family = ipaddress.ip_address(q.dst).version
    ruleset = sorted((r for r in space.ruleset() if r.family == family), key=lambda r: r.priority)
    jump: int | None = None
    for rule in ruleset:
        if (jump is not None and rule.priority < jump) or rule_selects(rule, q, vrfs=space.vrfs) is False:
            continue
        jump = None
        if rule.action == "goto":
            jump = rule.goto
        elif rule.action in RULE_ERRNOS:
            err = RULE_ERRNOS[rule.action]
            return error_answer(q, err, _words(err), rule=rule if err == errnos.ENETUNREACH else None)
        elif rule.action == "lookup":
            table = l3mdev_table(q, space.vrfs) if rule.l3mdev else rule.table
            route = _longest(space.routes, table, q.dst)
            if route is None or route.type == "throw":
                continue
            if route.type in REJECT_ERRNOS:
                return error_answer(q, REJECT_ERRNOS[route.type], _words(REJECT_ERRNOS[route.type]))
            answer = RouteAnswer(
                route.type,
                table,
                route.dev,
                route.via,
                route.prefsrc,
                None,
                None,
                route_text(q, route.type, table, route.dev, route.via, route.prefsrc),
            )
            decided = deciding_rule(answer, q, [(r, False) for r in ruleset], space.vrfs)
            return RouteAnswer(**{**answer.__dict__, "rule": decided})
    return error_answer(q, errnos.ENETUNREACH, _words(errnos.ENETUNREACH))


def _longest(routes: Sequence[FakeRoute], table: int | None, dst: str) -> FakeRoute | None:
    addr = ipaddress.ip_address(dst)
    best: tuple[int, FakeRoute] | None = None
    for route in routes:
        if route.table != table:
            continue
        net = (
            ipaddress.ip_network("0.0.0.0/0" if addr.version == 4 else "::/0")
            if route.to == "default"
            else ipaddress.ip_network(route.to, strict=False)
        )
        if net.version == addr.version and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, route)
    return best[1] if best is not None else None


def _words(err: int) -> str:
    """What the kernel's netlink error says, as the live reader reports it."""
    return f"{os.strerror(err)} ({errnos.errorcode.get(err, err)})"
