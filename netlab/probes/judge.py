"""Judges: expectations (from the lab file) against observations (from the kernel).

Pure functions, no I/O: each returns the reasons a check fails, in words an engineer
would use — what was expected, what was seen, and the evidence (the conntrack entry,
the route, the packets) — or no reasons when it passes. The runner gathers the
observations; these decide.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from netlab.lab.checks import (
    OTHER_NODES,
    CaptureExpect,
    ConntrackExpect,
    CounterSpec,
    DroppedBy,
    FirewallRule,
    IpvsExpect,
    ProbeExpect,
    RouteExpect,
    RuleQuerySpec,
    result_admits,
)
from netlab.lab.expect import Expect
from netlab.lab.targets import split_target
from netlab.observations import (
    FORWARD_WORDS,
    CounterView,
    CtEntry,
    Drop,
    IpvsConn,
    IpvsServiceView,
    Packet,
    RouteAnswer,
    RuleView,
    TraceEvent,
    table_text,
)
from netlab.probes.drops import drop_of
from netlab.probes.flow import ProbeResult
from netlab.probes.follow import belongs, flow_forms
from netlab.probes.ipvs_flow import ipvs_flow, ipvs_forward
from netlab.probes.trace import drop_words
from netlab.vocabulary import IP_PROTOS, host_port, parse_fwmark, table_number, table_words

# Names in expectations → the addresses they stand for, and an address → its node (for
# words). A "where" is an address → "node3's cni0", for messages about routers.
Resolve = Callable[[tuple[str, ...]], set[str]]
NodeOf = Callable[[str], str | None]
T = TypeVar("T")


@dataclass
class Judgement:
    reasons: list[str] = field(default_factory=list)  # empty: passed
    evidence: list[str] = field(default_factory=list)  # kernel state behind the verdict

    @property
    def passed(self) -> bool:
        return not self.reasons

    def add(self, other: Judgement) -> None:
        self.reasons += other.reasons
        self.evidence += other.evidence


def _norm(addr: str | None) -> str | None:
    if addr is None:
        return None
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr


def _who(addr: str | None, node_of: NodeOf) -> str:
    if addr is None:
        return "nothing"
    node = node_of(addr)
    return f"{addr} ({node})" if node else addr


def mismatch(
    what: str,
    expect: Expect[T] | None,
    fits: Callable[[T], bool],
    seen: str,
    *,
    show: Callable[[T], str] = str,
    saw: str = "saw",
) -> str | None:
    """The one judgement of an expected value (one, alternatives or {not: …}) in words —
    'expected table not 100, the kernel used 100' — or None when the observation fits or
    nothing was expected. fits(value): does the observation match this expected value."""
    if expect is None or expect.admits(fits):
        return None
    return f"expected {what} {expect.words(show)}, {saw} {seen}"


def _is(got: object, norm: Callable[[T], object] = lambda value: value) -> Callable[[T], bool]:
    """Is an expected value (normalised by norm) the observation?"""
    return lambda value: norm(value) == got


def _says(text: str) -> Callable[[str], bool]:
    """Does the text (an ICMP error) contain the expected words?"""
    return lambda words: words.lower() in text.lower()


def _stands_for(resolve: Resolve, got: str | None) -> Callable[[str], bool]:
    """Does a name in an expectation (a node: any of its addresses; an address) stand for got?"""
    addr = _norm(got)
    return lambda name: addr is not None and addr in resolve((name,))


def _count(n: int, what: str) -> str:
    if n == 1:
        return f"1 {what}"
    return f"{n} {what[:-1]}ies" if what.endswith("y") else f"{n} {what}s"


# ---------------------------------------------------------------- probes


def judge_probe(
    expect: ProbeExpect,
    results: Sequence[ProbeResult],
    resolve: Resolve,
    node_of: NodeOf,
    where_of: NodeOf | None = None,
) -> Judgement:
    """where_of (address → "router's eth1") words the ICMP senders; node_of when not given."""
    j = Judgement()
    n = len(results)
    # with `loss:`, a probe that got no answer is lost: the loss's business, not a wrong result
    lost_ok = expect.loss is not None
    wrong = [r for r in results if not result_admits(expect.result, r.outcome) and not (lost_ok and r.lost)]
    if wrong:
        seen = Counter(r.outcome for r in results)
        tally = ", ".join(f"{k} {v}" for k, v in seen.most_common())
        first = wrong[0]
        j.reasons.append(
            f"expected {expect.result.words(lambda want: 'fail (any failure)' if want == 'fail' else want)}, "
            f"saw {first.outcome}"
            + (f" in {len(wrong)} of {n} probes ({tally})" if n > 1 else "")
            + f": {first.detail}"
        )
    for text in dict.fromkeys(r.icmp or "" for r in results):
        problem = mismatch(
            "an ICMP error saying",
            expect.icmp,
            _says(text),
            text or "no ICMP error",
            show=repr,
        )
        if problem:
            j.reasons.append(problem)
            break
    if expect.icmp_from is not None:
        j.add(_judge_icmp_from(expect.icmp_from, results, resolve, where_of or node_of))
    served = [r for r in results if r.ok]
    j.add(_judge_delivery(served))
    if expect.served_by is not None and served:
        j.add(_judge_served_by(expect.served_by, results))
    if expect.server_saw is not None and served:
        saw = expect.server_saw
        off = [r for r in served if not saw.admits(_stands_for(resolve, r.server_saw))]
        if off:
            r = off[0]
            why = ""
            if r.server_saw and r.src and _norm(r.server_saw) != _norm(r.src):
                why = f" — the client sent from {_who(r.src, node_of)}, so something on the way NATed it"
            elif r.server_saw and r.src:
                why = " — the client's own address: nothing NATed it"
            j.reasons.append(
                f"expected the server to see {saw.words()}, it saw "
                f"{_who(r.server_saw, node_of)}"
                + (f" in {len(off)} of {len(served)} connections" if len(served) > 1 else "")
                + why
            )
    return j


def _judge_delivery(answered: Sequence[ProbeResult]) -> Judgement:
    """A probe given a payload passes only if its answer proves the payload arrived as sent."""
    j = Judgement()
    sent = [r for r in answered if r.sent is not None]
    spoiled = [r for r in sent if r.intact is not True]
    if spoiled:
        j.reasons.append(
            f"expected the payload to arrive as sent; {spoiled[0].delivery}"
            + (f" (in {len(spoiled)} of {len(sent)} probes)" if len(sent) > 1 else "")
        )
    return j


@dataclass(frozen=True)
class RoundTrips:
    """What `count` probes add up to, as ping's last lines say it: how many got no answer
    (timed out), and the round trips of those that succeeded (ms)."""

    sent: int
    lost: int
    rtt_min: float | None = None
    rtt_avg: float | None = None
    rtt_max: float | None = None

    @property
    def loss(self) -> float:
        return round(100 * self.lost / self.sent, 2) if self.sent else 0.0

    def rtt_words(self) -> str:
        if self.rtt_min is None:
            return "no round trip"
        return f"rtt min/avg/max {self.rtt_min:g}/{self.rtt_avg:g}/{self.rtt_max:g} ms"

    def words(self) -> str:
        """'rtt min/avg/max 40.2/41/45.1 ms, loss 19% (19 of 100)'."""
        lost = f" ({self.lost} of {self.sent})" if self.lost else ""
        return f"{self.rtt_words()}, loss {self.loss:g}%{lost}"

    def to_json(self) -> dict[str, Any]:
        rtt = None if self.rtt_min is None else {"min": self.rtt_min, "avg": self.rtt_avg, "max": self.rtt_max}
        return {"sent": self.sent, "lost": self.lost, "loss": self.loss, "rtt_ms": rtt}


def round_trips(results: Sequence[ProbeResult]) -> RoundTrips:
    rtts = [r.rtt_ms for r in results if r.ok and r.rtt_ms is not None]
    lost = sum(1 for r in results if r.lost)
    if not rtts:
        return RoundTrips(len(results), lost)
    return RoundTrips(len(results), lost, min(rtts), round(sum(rtts) / len(rtts), 3), max(rtts))


def judge_round_trips(expect: ProbeExpect, rt: RoundTrips) -> Judgement:
    """`rtt_ms:` bounds the fastest and the slowest answered probe and their mean; `loss:` the
    share unanswered."""
    j = Judgement()
    want = expect.rtt_ms
    if want is not None:
        expected = f"expected round trips of {want.words(' ms')}"
        if rt.rtt_min is None:
            j.reasons.append(f"{expected}, but no probe succeeded ({rt.lost} of {rt.sent} got no answer)")
        elif want.min is not None and rt.rtt_min < want.min:
            j.reasons.append(f"{expected}, the fastest took {rt.rtt_min:g} ms ({rt.rtt_words()})")
        elif want.max is not None and rt.rtt_max is not None and rt.rtt_max > want.max:
            j.reasons.append(f"{expected}, the slowest took {rt.rtt_max:g} ms ({rt.rtt_words()})")
        elif want.avg is not None and rt.rtt_avg is not None and not _within(want.avg.min, rt.rtt_avg, want.avg.max):
            j.reasons.append(f"{expected}, the mean was {rt.rtt_avg:g} ms ({rt.rtt_words()})")
    if expect.loss is not None and not _within(expect.loss.min, rt.loss, expect.loss.max):
        j.reasons.append(
            f"expected a loss of {expect.loss.words('%')}, saw {rt.loss:g}% "
            f"({rt.lost} of {_count(rt.sent, 'probe')} got no answer)"
        )
    return j


def _within(low: float | None, value: float, high: float | None) -> bool:
    return (low is None or value >= low - 1e-9) and (high is None or value <= high + 1e-9)


def judge_dropped_by(wanted: str, results: Sequence[ProbeResult], drops: Sequence[Drop]) -> Judgement:
    """Every failed probe was dropped by `wanted`: a policy (its deny rules) or default-deny.
    (Probes that got through are the `result:` expectation's business.)"""
    j = Judgement()
    failed = [r for r in results if not r.ok]
    for r in failed:
        drop = drop_of(r, drops)
        if drop is None:
            j.reasons.append(
                f"expected the probe to be dropped by {wanted}, but no policy recorded dropping "
                f"{r.proto} {r.src} → {r.dst}" + (f":{r.dport}" if r.dport else "") + " (it failed some other way)"
            )
            break
        if drop.by != wanted:
            j.reasons.append(f"expected the probe to be dropped by {wanted}, it was {drop.words()}")
            break
    if failed and drops:
        j.evidence += [f"recorded drops: {d.saddr} → {d.daddr} {d.proto}/{d.dport} {d.words()}" for d in drops][:5]
    return j


def dropped_by_fits(wanted: DroppedBy, ns: str, e: TraceEvent) -> bool:
    """Is this drop event (of a trace) the rule or chain policy `wanted` names (in namespace ns)?"""
    if e.ns != ns or e.verdict != "drop":
        return False
    if wanted.policy:
        return e.type == "policy" and _in_scope(wanted, e.family, e.table, e.chain)
    return e.type == "rule" and firewall_rule_fits(
        wanted, e.family, e.table, e.chain, e.handle, e.comment, (e.rule, e.iptables)
    )


def judge_dropped_by_rule(
    wanted: DroppedBy, ns: str, results: Sequence[ProbeResult], events: Sequence[TraceEvent], node_of_ns: NodeOf
) -> Judgement:
    """The failed probes were dropped by the rule or chain policy `wanted` names: judged
    from their nftables trace — every drop it saw is that one, and there is one."""
    j = Judgement()
    if all(r.ok for r in results):
        return j  # nothing was dropped: the `result:` expectation says what is wrong
    expected = f"expected the probe to be dropped by {wanted.what()} in {wanted.where()}"
    drops = [e for e in events if e.verdict == "drop" and e.type in ("rule", "policy")]
    if not drops:
        j.reasons.append(f"{expected}, but no rule or chain policy dropped it (its trace saw no drop)")
        return j
    other = next((e for e in reversed(drops) if not dropped_by_fits(wanted, ns, e)), None)
    if other is not None:
        j.reasons.append(f"{expected}, it was dropped in {node_of_ns(other.ns) or other.ns} by {drop_words(other)}")
    return j


def _judge_icmp_from(
    names: Expect[str], results: Sequence[ProbeResult], resolve: Resolve, where_of: NodeOf
) -> Judgement:
    """Which router (or host) sent the ICMP error: traceroute's hop, for a probe with a
    small ttl."""
    j = Judgement()
    off = [r for r in results if not names.admits(_stands_for(resolve, r.icmp_from))]
    if not off:
        return j
    n = len(results)
    expected = f"expected the ICMP error from {names.words(lambda x: _who(x, where_of))}"
    answered = [r for r in off if r.icmp_from]
    silent = len(off) - len(answered)
    if not answered:
        of = f" in {silent} of {n} probes" if n > 1 else ""
        j.reasons.append(f"{expected}, but no ICMP error came back{of} (the probe was {off[0].outcome})")
        return j
    senders = Counter(_who(r.icmp_from, where_of) for r in answered)
    parts = [who + (f" in {k}" if n > 1 else "") for who, k in senders.most_common()]
    came = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if n > 1:
        came += f" of {n} probes"
    if silent:
        came += f", and no ICMP error came back in {silent}"
    first = answered[0]
    hint = ""
    if first.ttl is not None and first.icmp and "time exceeded" in first.icmp:
        hint = f" — the probe's ttl {first.ttl} ran out there"
    j.reasons.append(f"{expected}, it came from {came}{hint}")
    return j


def _judge_served_by(want: dict[str, tuple[float, float]], results: Sequence[ProbeResult]) -> Judgement:
    j = Judgement()
    n = len(results)
    tally = Counter(r.served_by or "(no responder greeting)" for r in results if r.ok)
    failed = n - sum(tally.values())
    shown = ", ".join(f"{node} {count}" for node, count in tally.most_common())
    if failed:
        shown += f", failed {failed}"
    strangers = [] if OTHER_NODES in want else [node for node in tally if node not in want]
    if strangers:
        j.reasons.append(
            f"expected only {', '.join(want)} to serve, but {', '.join(strangers)} did too "
            f"({shown} of {_count(n, 'probe')})"
        )
    for node, (low, high) in want.items():
        if node == OTHER_NODES:
            continue
        share = tally.get(node, 0) / n
        if high == 0.0:  # {not: node}
            if share > 0.0:
                j.reasons.append(
                    f"expected {node} to serve none of the probes, it served {tally.get(node, 0)} of {n} ({shown})"
                )
        elif (low, high) == (1.0, 1.0):
            if share < 1.0:
                j.reasons.append(
                    f"expected {node} to serve every probe, it served {tally.get(node, 0)} of {n} ({shown})"
                )
        elif not (low - 1e-9 <= share <= high + 1e-9):
            rng = f"at least {low:.0%}" if high >= 1.0 else f"{low:.0%}..{high:.0%}"
            j.reasons.append(
                f"expected {node} to serve {rng} of the probes, it served {share:.0%} "
                f"({tally.get(node, 0)} of {n}; {shown})"
            )
    if j.reasons:
        j.evidence.append(f"served: {shown}")
    return j


# ---------------------------------------------------------------- conntrack


def flow_entries(entries: Iterable[CtEntry], r: ProbeResult) -> list[CtEntry]:
    """The conntrack entries of one probe's flow, best match first.

    The flow is recognised by protocol and the client's source port (or ICMP echo id)
    plus its destination address or port; an entry whose original source is the client's
    own address ranks first (in a node behind a NAT it is not, and the port still is)."""
    proto = "tcp" if r.proto == "http" else r.proto
    if proto == "icmp" and r.src and ":" in r.src:
        proto = "icmpv6"
    found = []
    for e in entries:
        o = e.orig
        if o.proto != proto or o.sport != r.sport:
            continue
        if _norm(o.dst) != _norm(r.dst) and (r.dport is None or o.dport != r.dport):
            continue
        found.append(e)
    found.sort(key=lambda e: (_norm(e.orig.src) != _norm(r.src), _norm(e.orig.dst) != _norm(r.dst)))
    return found


def judge_conntrack(
    node: str,
    expect: ConntrackExpect,
    results: Sequence[ProbeResult],
    entries: Sequence[CtEntry],
    resolve: Resolve,
    node_of: NodeOf,
) -> Judgement:
    j = Judgement()
    for r in results:
        if r.sport is None:
            j.reasons.append(f"the probe has no client port to find its conntrack entry by ({r.detail})")
            continue
        mine = flow_entries(entries, r)
        flow = f"{r.proto} {host_port(r.src or '?', r.sport)} → " + (host_port(r.dst, r.dport, no_port="address"))
        if not expect.entry:
            if mine:
                j.reasons.append(f"expected no conntrack entry in {node} for {flow}, found one")
                j.evidence.append(f"conntrack in {node}: {mine[0].text}")
            continue
        if not mine:
            j.reasons.append(
                f"expected a conntrack entry in {node} for {flow}, found none among {_count(len(entries), 'entry')}"
                + (
                    ""
                    if entries
                    else " (conntrack tracks only where netfilter uses it: an nft ruleset "
                    "with ct, nat or a stateful match in that node)"
                )
            )
            j.evidence += [f"conntrack in {node}: {e.text}" for e in list(entries)[:5]]
            continue
        e = mine[0]
        problems = _entry_mismatches(expect, e, resolve, node_of)
        if problems:
            j.reasons += [f"conntrack in {node} for {flow}: {p}" for p in problems]
            j.evidence.append(f"conntrack in {node}: {e.text}")
        if j.reasons:
            break  # one failing flow says it; fifty would drown it
    return j


def _entry_mismatches(expect: ConntrackExpect, e: CtEntry, resolve: Resolve, node_of: NodeOf) -> list[str]:
    found = [
        mismatch(key, getattr(expect, key), _stands_for(resolve, value), _who(value, node_of))
        for key, value in (
            ("orig_src", e.orig.src),
            ("orig_dst", e.orig.dst),
            ("reply_src", e.reply.src),
            ("reply_dst", e.reply.dst),
        )
    ]
    found += [
        mismatch(key, getattr(expect, key), _is(got), str(got))
        for key, got in (
            ("orig_sport", e.orig.sport),
            ("orig_dport", e.orig.dport),
            ("reply_sport", e.reply.sport),
            ("reply_dport", e.reply.dport),
        )
    ]
    for key, got_flag in (("dnat", e.dnat), ("snat", e.snat)):
        want_flag = getattr(expect, key)
        if want_flag is not None and want_flag != got_flag:
            found.append(
                f"expected {key}: {str(want_flag).lower()}, the entry is "
                f"{'' if got_flag else 'not '}{'DST_NAT' if key == 'dnat' else 'SRC_NAT'}"
            )
    found.append(mismatch("zone", expect.zone, _is(e.zone), str(e.zone)))
    found.append(mismatch("mark", expect.mark, lambda want: _mark_matches(want, e.mark), f"{e.mark:#x}"))
    found.append(
        mismatch(
            "state",
            expect.state,
            lambda want: want.upper() == (e.state or "").upper(),
            e.state or "none",
            show=str.upper,
        )
    )
    return [text for text in found if text]


def _mark_matches(want: str, got: int) -> bool:
    """A mark `VALUE[/MASK]` against a conntrack entry's mark."""
    mark, mask = parse_fwmark(want)
    m = mask if mask is not None else 0xFFFFFFFF
    return got & m == mark & m


# ---------------------------------------------------------------- IPVS


def _real_matches(item: str, c: IpvsConn, resolve: Resolve) -> bool:
    host, port = split_target(item)
    return _norm(c.daddr) in resolve((host,)) and (port is None or port == c.dport)


def judge_ipvs(
    node: str,
    expect: IpvsExpect,
    results: Sequence[ProbeResult],
    conns: Sequence[IpvsConn],
    services: Sequence[IpvsServiceView],
    resolve: Resolve,
    node_of: NodeOf,
) -> Judgement:
    j = Judgement()
    table = [f"ipvsadm -Ln in {node}: {line}" for line in table_text(services)]
    for r in results:
        if r.sport is None:
            j.reasons.append(f"the probe has no client port to find its IPVS connection by ({r.detail})")
            continue
        mine = ipvs_flow(conns, r)
        flow = f"{r.proto} {host_port(r.src or '?', r.sport)} → {host_port(r.dst, r.dport)}"
        if not expect.entry:
            if mine:
                j.reasons.append(
                    f"expected no IPVS connection in {node} for {flow}, found one to "
                    f"{_who_at(mine[0].daddr, mine[0].dport, node_of)}"
                )
                j.evidence += [f"ipvsadm -Lnc in {node}: {mine[0].text}", *table]
                break  # one flow says it
            continue
        if not mine:
            proto = "tcp" if r.proto == "http" else r.proto
            none = ""
            if not any(s.matches(proto, r.dst, r.dport or 0) for s in services):
                marks = [str(s.fwmark) for s in services if s.fwmark is not None]
                none = f"; {node} has no virtual service {proto.upper()} {host_port(r.dst, r.dport)}" + (
                    f" (its fwmark service{'s' if len(marks) > 1 else ''} {', '.join(marks)} take only "
                    "packets carrying the mark)"
                    if marks
                    else ""
                )
            j.reasons.append(
                f"expected an IPVS connection in {node} for {flow}, found none among "
                f"{_count(len(conns), 'connection')}{none}"
            )
            j.evidence += [*table, *(f"ipvsadm -Lnc in {node}: {c.text}" for c in list(conns)[:5])]
            continue
        c = mine[0]
        problems = _ipvs_mismatches(node, expect, c, services, resolve, node_of)
        if problems:
            j.reasons += [f"IPVS in {node} for {flow}: {p}" for p in problems]
            j.evidence += [f"ipvsadm -Lnc in {node}: {c.text}", *table]
        if j.reasons:
            break  # one failing flow says it; fifty would drown it
    return j


def _ipvs_mismatches(
    node: str, expect: IpvsExpect, c: IpvsConn, services: Sequence[IpvsServiceView], resolve: Resolve, node_of: NodeOf
) -> list[str]:
    real = host_port(c.daddr, c.dport)
    found = [
        mismatch(
            "real server",
            expect.real,
            lambda item: _real_matches(item, c, resolve),
            _who_at(c.daddr, c.dport, node_of),
            saw="the connection went to",
        ),
    ]
    if expect.forward is not None:
        forward = ipvs_forward(c, services)
        if forward is None:
            found.append(
                f"expected forward {expect.forward.words()}, but {real} is a real server of no service of {node} any more"
            )
        else:
            found.append(
                mismatch(
                    "forward",
                    expect.forward,
                    _is(forward),
                    f"{forward} ({FORWARD_WORDS.get(forward, forward)})",
                    saw=f"the real server {real} is",
                )
            )
    found.append(mismatch("state", expect.state, lambda want: want.upper() == c.state.upper(), c.state, show=str.upper))
    return [text for text in found if text]


def _who_at(addr: str, port: int, node_of: NodeOf) -> str:
    node = node_of(addr)
    return f"{host_port(addr, port)} ({node})" if node else host_port(addr, port)


# ---------------------------------------------------------------- capture


def probe_packets(packets: Iterable[Packet], r: ProbeResult, entries: Iterable[CtEntry] = ()) -> list[Packet]:
    """The captured packets that belong to one probe: same protocol, and the client's
    port (or ICMP echo id) on one side of the innermost header; or, after NAT, the flow
    as the conntrack `entries` say it was rewritten (netlab.probes.follow)."""
    proto = "tcp" if r.proto == "http" else r.proto
    forms = flow_forms(r, entries)
    out = []
    for p in packets:
        f = p.flow
        fproto = "icmp" if f.proto == "icmpv6" else f.proto
        if fproto != proto or r.sport is None:
            continue
        if (
            (proto == "icmp" and f.sport == r.sport)
            or (proto != "icmp" and r.sport in (f.sport, f.dport))
            or belongs(f, forms)
        ):
            out.append(p)
    return out


def judge_capture(
    where: str,
    expect: CaptureExpect,
    results: Sequence[ProbeResult],
    packets: Sequence[Packet],
    resolve: Resolve,
    node_of: NodeOf,
    entries: Sequence[CtEntry] = (),
) -> Judgement:
    """`entries`: the conntrack entries of the nodes that may NAT the flow, to recognise
    its packets after their ports or ICMP ids were rewritten."""
    j = Judgement()
    mine = [p for r in results for p in probe_packets(packets, r, entries)]
    if not expect.seen:
        if mine:
            j.reasons.append(f"expected none of the probe's packets on {where}, saw {_count(len(mine), 'packet')}")
            j.evidence += [f"on {where}: {p.text}" for p in mine[:5]]
        return j
    if not mine:
        j.reasons.append(
            f"expected the probe's packets on {where}, saw none of them "
            f"(captured {_count(len(packets), 'other packet')})"
        )
        j.evidence += [f"on {where}: {p.text}" for p in list(packets)[:5]]
        return j
    misses: list[list[str]] = [_packet_mismatches(expect, p, resolve, node_of) for p in mine]
    if all(misses):
        best = min(misses, key=len)
        j.reasons.append(f"no packet of the probe on {where} matches: {'; '.join(best)}")
        j.evidence += [f"on {where}: {p.text}" for p in mine[:6]]
    return j


def _packet_mismatches(expect: CaptureExpect, p: Packet, resolve: Resolve, node_of: NodeOf) -> list[str]:
    inner, outer = p.flow, p.outer
    found = [
        mismatch(key, getattr(expect, key), _stands_for(resolve, got), _who(got, node_of))
        for key, got in (("outer_src", outer.src), ("outer_dst", outer.dst), ("src", inner.src), ("dst", inner.dst))
    ]
    found.append(mismatch("outer protocol", expect.proto, _is(outer.proto), outer.proto))
    found.append(
        mismatch(
            "UDP destination port",
            expect.udp_dport,
            lambda port: outer.proto == "udp" and outer.dport == port,
            f"{outer.proto} port {outer.dport}" if outer.dport else outer.proto,
        )
    )
    found.append(mismatch("VXLAN VNI", expect.vxlan_vni, _is(p.vni), "no VXLAN" if p.vni is None else f"VNI {p.vni}"))
    if expect.direction is not None and p.direction != expect.direction:
        found.append(f"expected direction {expect.direction}, saw {p.direction}")
    return [text for text in found if text]


# ---------------------------------------------------------------- counters


def _in_scope(ref: FirewallRule, family: str, table: str, chain: str | None) -> bool:
    return all((want or got) == got for want, got in ((ref.family, family), (ref.table, table), (ref.chain, chain)))


def firewall_rule_fits(
    ref: FirewallRule,
    family: str,
    table: str,
    chain: str | None,
    handle: int | None,
    comment: str | None,
    texts: Sequence[str | None],
) -> bool:
    """Is this rule (in family/table/chain, with its handle, comment and texts) the one ref
    names — by comment, by handle or by words of any of its texts?"""
    if not _in_scope(ref, family, table, chain):
        return False
    if ref.comment is not None:
        return comment == ref.comment
    if ref.handle is not None:
        return handle == ref.handle
    words = " ".join(ref.rule.split()) if ref.rule is not None else None
    return words is not None and any(words in " ".join(t.split()) for t in texts if t)


def counter_fits(spec: CounterSpec, c: CounterView) -> bool:
    """Is c (one of them) the counter spec names?"""
    if spec.name is not None or c.name is not None:
        return c.name == spec.name and _in_scope(spec, c.family, c.table, c.chain)
    return firewall_rule_fits(spec, c.family, c.table, c.chain, c.handle, c.comment, (c.text,))


def counted(spec: CounterSpec, before: Sequence[CounterView], after: Sequence[CounterView]) -> tuple[int, int, int]:
    """(counters that fit, packets, bytes): what the counters spec names counted between the readings."""
    then = {c.key: c for c in before}
    now = [c for c in after if counter_fits(spec, c)]
    packets = sum(c.packets - (then[c.key].packets if c.key in then else 0) for c in now)
    octets = sum(c.bytes - (then[c.key].bytes if c.key in then else 0) for c in now)
    return len(now), packets, octets


def judge_counters(
    specs: Sequence[CounterSpec], before: dict[str, list[CounterView]], after: dict[str, list[CounterView]]
) -> Judgement:
    """Each counter counted what its spec asks, between a reading before the probes and one after."""
    j = Judgement()
    for spec in specs:
        found, packets, octets = counted(spec, before.get(spec.on, []), after.get(spec.on, []))
        if not found:
            j.reasons.append(f"expected {spec.what()} in {spec.where()} to count, but there is no such counter")
            j.evidence += [f"counter in {spec.on}: {_counter_text(c)}" for c in after.get(spec.on, [])[:8]]
            continue
        together = f" ({found} counters together)" if found > 1 else ""
        problems = [
            f"expected {spec.what()} in {spec.where()} to count {amount.words()} {unit}, it counted {got}{together}"
            for unit, amount, got in (("packets", spec.packets, packets), ("bytes", spec.bytes, octets))
            if amount is not None and not amount.admits(got)
        ]
        if problems:
            j.reasons += problems
            then = {c.key: c for c in before.get(spec.on, [])}
            j.evidence += [
                f"counter in {spec.on}: {_counter_text(c, then.get(c.key))}"
                for c in after.get(spec.on, [])
                if counter_fits(spec, c)
            ][:5]
    return j


def _counter_text(c: CounterView, then: CounterView | None = None) -> str:
    """'ip filter forward: tcp dport 8080 counter accept — packets 3 → 7, bytes 180 → 420'."""
    if then is None:
        counts = f"packets {c.packets} bytes {c.bytes}"
    else:
        counts = f"packets {then.packets} → {c.packets}, bytes {then.bytes} → {c.bytes}"
    return f"{c.where()}: {c.text} — {counts}"


# ---------------------------------------------------------------- routes and rules


def judge_route(expect: RouteExpect, answer: RouteAnswer, tables: dict[str, int]) -> Judgement:
    j = Judgement()
    error = f" ({answer.error})" if answer.error else ""
    found = [
        mismatch("route type", expect.type, _is(answer.type), answer.type + error),
        _rule_mismatch(expect, answer),
        mismatch(
            "table",
            expect.table,
            lambda want: table_number(want, tables) == answer.table,
            table_words(answer.table, tables),
            show=lambda want: table_words(table_number(want, tables), tables),
            saw="the kernel used",
        ),
    ]
    found += [
        mismatch(key, getattr(expect, key), _is(_norm(got), _norm), got or "none")
        for key, got in (("dev", answer.dev), ("via", answer.via), ("prefsrc", answer.prefsrc))
    ]
    j.reasons += [text for text in found if text]
    if j.reasons or answer.errno:
        j.evidence.append(f"route get: {answer.text}")
    return j


def _rule_mismatch(expect: RouteExpect, answer: RouteAnswer) -> str | None:
    """The rule that decided the lookup (by priority), when netlab could tell which did."""
    if expect.rule is None:
        return None
    if answer.rule is None:
        if answer.errno is not None:
            return f"expected rule {expect.rule.words()} to decide the lookup, but it failed: {answer.error}"
        return (
            f"expected rule {expect.rule.words()} to decide the lookup; which rule did cannot be told "
            "(a rule before it has selectors a lookup cannot be matched against, e.g. tun_id)"
        )
    decided = answer.rule
    return mismatch(
        "the lookup decided by rule", expect.rule, _is(decided.priority), f"rule `{decided.text}`", saw="it was"
    )


def rule_fits(q: RuleQuerySpec, rule: RuleView, tables: dict[str, int]) -> bool:
    """Is rule the one a rule check describes? Every key the check gives must match, the
    others are free. (Which flows a rule selects is netlab.fib.lookup.rule_matches.)"""
    same = (
        (q.family, rule.family),
        (q.priority, rule.priority),
        (q.iif, rule.iif),
        (q.oif, rule.oif),
        (q.not_, rule.invert),
        (q.l3mdev, rule.l3mdev),
        (q.goto, rule.goto),
        (q.action, rule.action),
    )
    if any(want is not None and want != got for want, got in same):
        return False
    if any(want is not None and _net(want) != _net(got) for want, got in ((q.from_, rule.src), (q.to, rule.dst))):
        return False
    if q.table is not None and rule.table != table_number(q.table, tables):
        return False
    return _mark_fits(q, rule) and _packet_keys_fit(q, rule)


def _mark_fits(q: RuleQuerySpec, rule: RuleView) -> bool:
    if q.fwmark is None:
        return True
    value, mask = parse_fwmark(q.fwmark)
    # `fwmark 0x1` without a mask is what `ip rule … fwmark 0x1` makes: mask 0xffffffff.
    full = 0xFFFFFFFF
    return rule.fwmark == value and (rule.fwmask if rule.fwmask is not None else full) == (
        mask if mask is not None else full
    )


def _packet_keys_fit(q: RuleQuerySpec, rule: RuleView) -> bool:
    """ipproto, ports, uid range, tos/dscp (as the TOS byte or FRA_DSCP), flow label."""
    if q.ipproto is not None and rule.ipproto != (IP_PROTOS[q.ipproto] if isinstance(q.ipproto, str) else q.ipproto):
        return False
    for want_span, got_span in ((q.sport, rule.sport), (q.dport, rule.dport), (q.uidrange, rule.uidrange)):
        if want_span is not None and tuple(want_span) != got_span:
            return False
    if q.tos is not None and rule.tos != q.tos:
        return False
    if q.flowlabel is not None and rule.flowlabel != q.flowlabel:
        return False
    return q.dscp is None or q.dscp in (rule.dscp, (rule.tos or 0) >> 2)


def _net(value: str | None) -> str | None:
    if value is None or value == "default":
        return None
    net = ipaddress.ip_network(value, strict=False)
    return None if net.prefixlen == 0 else net.with_prefixlen


def judge_rule(q: RuleQuerySpec, present: bool, rules: Sequence[RuleView], tables: dict[str, int]) -> Judgement:
    j = Judgement()
    found = [r for r in rules if rule_fits(q, r, tables)]
    if present and not found:
        j.reasons.append("expected such an ip rule, found none")
        j.evidence += [f"ip rule: {r.text}" for r in rules]
    elif not present and found:
        j.reasons.append(f"expected no such ip rule, found: {found[0].text}")
    return j
