"""Which captured packets belong to a probe, also after NAT rewrote them.

A probe knows its flow as the client sent it (address, port or ICMP echo id, both
ends). A router that masquerades `fully-random`, any port-rewriting SNAT, or a DNAT to
another port changes what crosses the next interface: the client's port becomes another,
the ICMP echo id too. The kernel that rewrote the packets says how in its conntrack
entry: the original tuple is the flow before, the reply tuple (read backwards) the flow
after. So the flow's forms are the probe's own tuple plus, for each entry whose original
or (reversed) reply tuple is a form already known, the other one — repeated, so NAT in
one node and then another is followed too. A packet belongs to the probe when its flow,
either way round, is one of those forms.

Pure: the runner reads the entries (netlab.kernel.conntrack via the observer), the judge
(netlab.probes.judge) asks `belongs`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from netlab.observations import CtEntry, CtTuple, Flow
from netlab.probes.flow import ProbeResult

# protocol, source, source port (ICMP: the echo id), destination, destination port (ICMP: None)
FlowKey = tuple[str, str, int | None, str, int | None]


def _addr(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _key(proto: str, src: str, sport: int | None, dst: str, dport: int | None) -> FlowKey:
    proto = "tcp" if proto == "http" else "icmp" if proto == "icmpv6" else proto
    return (proto, _addr(src), sport, _addr(dst), None if proto == "icmp" else dport)


def _reverse(k: FlowKey) -> FlowKey:
    proto, src, sport, dst, dport = k
    if proto == "icmp":  # an echo reply carries the request's id, between the same two ends
        return (proto, dst, sport, src, None)
    return (proto, dst, dport, src, sport)


def _tuple_key(t: CtTuple) -> FlowKey:
    return _key(t.proto, t.src, t.sport, t.dst, t.dport)


def flow_forms(r: ProbeResult, entries: Iterable[CtEntry] = ()) -> set[FlowKey]:
    """The probe's flow in the client-to-server direction, as it left the client and as
    every NAT along the way (that `entries` show) rewrote it. Empty when the probe never
    had a source address and port (it failed before sending)."""
    if r.src is None or r.sport is None:
        return set()
    known = {_key(r.proto, r.src, r.sport, r.dst, r.dport)}
    pairs = [(_tuple_key(e.orig), _reverse(_tuple_key(e.reply))) for e in entries]
    grew = True
    while grew:  # each pass adds at least one form, so at most len(pairs) + 1 passes
        grew = False
        for before, after in pairs:
            if (before in known) != (after in known):
                known |= {before, after}
                grew = True
    return known


def belongs(flow: Flow, forms: set[FlowKey]) -> bool:
    """Whether a captured packet's (innermost) flow is one of the forms, either way round."""
    k = _key(flow.proto, flow.src, flow.sport, flow.dst, flow.dport)
    return k in forms or _reverse(k) in forms
