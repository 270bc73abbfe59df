"""The kernel observer that reads the real kernel (KernelObserver, observer.py), one
reader module per kind of state: routes.py (route get, rules, VRFs), conntrack.py,
ipvs.py (its read half), nft.py (listings), trace.py (nftables tracing), drops.py (network-policy drop records) and
capture.py (AF_PACKET captures). Each read enters the lab namespace from a worker
thread and leaves nothing open behind it, except a capture until it is closed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from netlab.kernel import conntrack, counters, drops, neighbours, nft, trace, tracefs
from netlab.kernel.capture import SNAPLEN, Capture
from netlab.observations import (
    TRACE_SETTLE,
    CounterView,
    CtEntry,
    Drop,
    IpvsState,
    KernelSeen,
    NeighView,
    ObserveError,
    RouteAnswer,
    RouteQuery,
    RuleView,
    TraceEvent,
    TraceFlow,
)
from netlab.pcap import KEPT_SNAPLEN

T = TypeVar("T")


class LiveObserver:
    """KernelObserver over the real kernel. Stateless: one instance serves every thread."""

    def route_get(self, ns: str, queries: Sequence[RouteQuery]) -> list[RouteAnswer]:
        from netlab.kernel import routes  # pyroute2's route messages: not for a trace that arrived

        return routes.route_get_many(ns, queries)

    def rules(self, ns: str) -> list[RuleView]:
        from netlab.kernel import routes

        return routes.rules(ns)

    def conntrack(self, ns: str) -> list[CtEntry]:
        return conntrack.conntrack(ns)

    def neighbours(self, ns: str) -> list[NeighView]:
        try:
            return neighbours.neighbours(ns)
        except OSError as e:
            raise ObserveError(f"in {ns}: neighbours: {e}") from e

    def ipvs(self, ns: str) -> IpvsState:
        from netlab.kernel import ipvs  # pyroute2's generic netlink: ~20 ms, for a lab with IPVS only

        return ipvs.ipvs_state(ns)

    def nft_list(self, ns: str, what: str) -> str | None:
        try:
            return nft.list_in(ns, what)
        except nft.FirewallError as e:
            raise ObserveError(f"in {ns}: nft list {what}: {e}") from e

    def counters(self, ns: str, *, iptables: bool = False) -> list[CounterView]:
        try:
            return counters.read_counters(ns, iptables=iptables)
        except nft.FirewallError as e:
            raise ObserveError(f"in {ns}: {e}") from e

    def capture(
        self, ns: str, ifname: str, *, vxlan_ports: Collection[int] = (4789, 8472), keep_frames: bool = False
    ) -> Capture:
        snaplen = KEPT_SNAPLEN if keep_frames else SNAPLEN
        return Capture(ns, ifname, vxlan_ports=vxlan_ports, keep_frames=keep_frames, snaplen=snaplen).open()

    def drops(self, ns: str, node: str, rules: Mapping[int, str]) -> list[Drop]:
        try:
            return drops.read_drops(ns, node, rules)
        except nft.FirewallError as e:
            # the words the runner printed before this seam: "could not observe: <nft's>"
            raise ObserveError(str(e)) from e

    def trace(
        self, namespaces: Sequence[str], flow: TraceFlow, send: Callable[[], T], *, settle: float = TRACE_SETTLE
    ) -> tuple[T, list[TraceEvent]]:
        try:
            return trace.trace(namespaces, flow, send, settle=settle)
        except nft.FirewallError as e:
            raise ObserveError(f"nft trace: {e}") from e

    def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
        return tracefs.watch_drops(send)
