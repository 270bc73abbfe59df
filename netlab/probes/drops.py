"""Which network policy rule dropped a probe.

Each node with isolated pods has `table inet network-policy` (netlab.expand.policy), whose
drop rule N first records the flow in the set `dropped` as saddr . daddr . l4proto .
dport . N, and whose comment says "drop N: …" (read from the lab's ruleset: the kernel
holds the same text). A policy's verdict depends on exactly those four fields, so the
entry for a probe's flow names the rule that decides it — also for checks running side
by side.

A probe to a service address is DNATed before the forward hook: its entry carries the
endpoint, not the address the probe used. Then the newest entry from the probe's source
with its protocol and port is taken.

The records are read by the observer (netlab.kernel.drops, behind KernelObserver.drops);
this module judges them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from netlab.observations import Drop
from netlab.probes.flow import ProbeResult

_DROP = re.compile(r'comment "drop (\d+): ([^"]*)"')
FRESH = 5  # seconds: how old a DNATed flow's entry may be to be taken for the probe's
_PROTO = {"tcp": "tcp", "http": "tcp", "udp": "udp"}


def drop_rules(ruleset: str) -> dict[int, str]:
    """The drop rules of a policy ruleset: number → its comment without the number."""
    return {int(m.group(1)): m.group(2) for m in _DROP.finditer(ruleset)}


def _proto_matches(r: ProbeResult, proto: str) -> bool:
    if r.proto == "icmp":
        return proto in ("icmp", "ipv6-icmp", "1", "58")
    return _PROTO.get(r.proto) == proto


def drop_of(r: ProbeResult, drops: Iterable[Drop]) -> Drop | None:
    """The drop that decided this probe's flow, if one was recorded. Only a probe that
    timed out can have been dropped (a refusal or an ICMP error is an answer)."""
    if r.src is None or r.outcome != "timeout":
        return None
    mine = [d for d in drops if d.saddr == r.src and _proto_matches(r, d.proto)]
    exact = [d for d in mine if d.daddr == r.dst and (r.proto == "icmp" or d.dport == r.dport)]
    if exact:
        return min(exact, key=lambda d: d.age)
    # DNATed on the way (a service address, a node port): the entry has the endpoint
    # instead, and is as fresh as the probe
    fresh = [d for d in mine if d.age <= FRESH]
    return min(fresh, key=lambda d: (d.dport != r.dport, d.age)) if fresh else None


def drops_summary(results: Sequence[ProbeResult], drops: Sequence[Drop]) -> str:
    """'; dropped on node3 by default-deny, ingress of pod shop/x' (each distinct drop once)."""
    seen = list(dict.fromkeys(d.words() for r in results if not r.ok and (d := drop_of(r, drops)) is not None))
    return "".join(f"; {w}" for w in seen)
