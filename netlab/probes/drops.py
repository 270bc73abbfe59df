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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netlab.kernel.nft import list_in
from netlab.lab.policy import DEFAULT_DENY, DROPPED_SET, POLICY_TABLE
from netlab.probes.flow import ProbeResult

_DROP = re.compile(r'comment "drop (\d+): ([^"]*)"')
_POLICY = re.compile(r"^policy (\S+) ")
FRESH = 5  # seconds: how old a DNATed flow's entry may be to be taken for the probe's
_PROTO = {"tcp": "tcp", "http": "tcp", "udp": "udp"}


@dataclass(frozen=True)
class Drop:
    """One recorded drop: where, which rule, and the flow."""

    node: str
    rule: str  # the drop rule's comment without its number: "default-deny, ingress of pod shop/x"
    saddr: str
    daddr: str
    proto: str  # tcp, udp, icmp, ipv6-icmp, or the protocol's number
    dport: int | None
    age: int  # seconds since it was recorded (newest: 0)

    @property
    def by(self) -> str:
        """What `dropped_by:` names: the policy whose deny rule it was, or default-deny."""
        if self.rule.startswith(DEFAULT_DENY):
            return DEFAULT_DENY
        m = _POLICY.match(self.rule)
        return m.group(1) if m else self.rule

    def words(self) -> str:
        return f"dropped on {self.node} by {self.rule}"


def drop_rules(ruleset: str) -> dict[int, str]:
    """The drop rules of a policy ruleset: number → its comment without the number."""
    return {int(m.group(1)): m.group(2) for m in _DROP.finditer(ruleset)}


def parse_drops(node: str, rules: dict[int, str], document: dict[str, Any]) -> list[Drop]:
    """The recorded drops in `nft -j list set inet network-policy dropped`, named by `rules`."""
    out: list[Drop] = []
    for item in document.get("nftables", []):
        found = item.get("set")
        if not found or found.get("name") != DROPPED_SET:
            continue
        timeout = int(found.get("timeout", 0))
        for key in found.get("elem", []):
            elem = key.get("elem", key) if isinstance(key, dict) else {"val": key}
            fields = elem.get("val", {}).get("concat") if isinstance(elem.get("val"), dict) else None
            if not isinstance(fields, list) or len(fields) != 5:
                continue
            saddr, daddr, proto, dport, number = fields
            number = int(number, 0) if isinstance(number, str) else int(number)
            expires = int(elem.get("expires", timeout))
            out.append(Drop(node, rules.get(number, f"drop rule {number}"), str(saddr), str(daddr), str(proto),
                            int(dport) if isinstance(dport, int) else None, max(0, timeout - expires)))
    return out


def read_drops(nodes: dict[str, tuple[str, dict[int, str]]]) -> list[Drop]:
    """The recorded drops of the nodes given as node → (namespace, its drop rules)."""
    out: list[Drop] = []
    for node, (ns, rules) in nodes.items():
        text = list_in(ns, f"set inet {POLICY_TABLE} {DROPPED_SET}", as_json=True)
        if text is not None:
            out += parse_drops(node, rules, json.loads(text))
    return out


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
