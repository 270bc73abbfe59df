"""The read-side seam: everything `netlab check` (and the pytest plugin) reads from the
kernel of an up lab, behind one interface — as KernelDriver (driver.py) is the seam for
everything `up` and `down` write.

`LiveObserver` (observe.py) reads the kernel; `FakeObserver` (fake_observer.py) serves
canned observations with the kernel's semantics where they are cheap (a route lookup
walks the rules and the longest prefix), and records what it was asked, for rootless
tests of the check runner, its retries and `wait:`.

Every method takes the lab namespace to read in and returns the plain values of
netlab.observations. What is not an answer (the namespace is gone, an interface is
unknown, the kernel refused the request) raises ObserveError; a routing error is an
answer (RouteAnswer.type blackhole/unreachable/prohibit/none with its errno).
Probes are not observations: they make traffic (netlab.probes.flow) and are passed to
the runner beside the observer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol, TypeVar

from netlab.observations import (
    TRACE_SETTLE,
    CounterView,
    CtEntry,
    Drop,
    IpvsState,
    KernelSeen,
    NeighView,
    Packet,
    RouteAnswer,
    RouteQuery,
    RuleView,
    TraceEvent,
    TraceFlow,
)
from netlab.pcap import Frame

T = TypeVar("T")


class OpenCapture(Protocol):
    """A capture started on one interface: packets queue until read."""

    frames: list[Frame]  # with keep_frames: every frame read so far, as a pcap file holds it

    def packets(self) -> list[Packet]:
        """Every IP packet seen since the capture started or was last read, oldest first."""
        ...

    def close(self) -> None:
        """Stop capturing (unread packets are lost); the namespace is not kept alive."""
        ...


class KernelObserver(Protocol):
    def route_get(self, ns: str, queries: Sequence[RouteQuery]) -> list[RouteAnswer]:
        """`ip route get` for each query in ns, answers in query order, each with the
        rule that decided it when that is certain (RouteAnswer.rule). QueryError (an
        ObserveError) for a query the kernel could never answer."""
        ...

    def rules(self, ns: str) -> list[RuleView]:
        """The policy routing rules of ns, IPv4 then IPv6, each in priority order (`ip rule`)."""
        ...

    def conntrack(self, ns: str) -> list[CtEntry]:
        """Every conntrack entry of ns, both families (`conntrack -L`)."""
        ...

    def neighbours(self, ns: str) -> list[NeighView]:
        """Every neighbour (ARP/NDP) entry of ns, both families (`ip neigh show`)."""
        ...

    def ipvs(self, ns: str) -> IpvsState:
        """The IPVS services (with reals and counts) and connections of ns, read in one visit."""
        ...

    def nft_list(self, ns: str, what: str) -> str | None:
        """`nft list WHAT` in ns (a table, a chain, a set, a counter); None when it does not exist."""
        ...

    def counters(self, ns: str, *, iptables: bool = False) -> list[CounterView]:
        """Every firewall counter of ns: nftables rules with a `counter` and named counters;
        iptables: also read the tables iptables-nft manages as `iptables-save -c` does."""
        ...

    def capture(
        self, ns: str, ifname: str, *, vxlan_ports: Collection[int] = (4789, 8472), keep_frames: bool = False
    ) -> OpenCapture:
        """Start capturing on ifname in ns (CaptureError, an ObserveError, if it cannot);
        keep_frames: also keep the frames themselves in `frames` (pcap files)."""
        ...

    def drops(self, ns: str, node: str, rules: Mapping[int, str]) -> list[Drop]:
        """The network-policy drops recorded in ns (node `node`, drop rule number → its words)."""
        ...

    def trace(
        self, namespaces: Sequence[str], flow: TraceFlow, send: Callable[[], T], *, settle: float = TRACE_SETTLE
    ) -> tuple[T, list[TraceEvent]]:
        """send() with the flow traced by nftables in each namespace (a temporary table and a
        listener in each, all removed again, also on Ctrl-C): its result and the trace
        events in arrival order, rule handles resolved to their text."""
        ...

    def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
        """send() with the kernel's drop and FIB tracepoints recorded for netlab's own
        threads: its result and what they told (or why they could not be read)."""
        ...
