"""The judges, without a kernel: hand-made observations against lab-file expectations.
Each failing case asserts the *reason* a user would read, not just that it failed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from netlab.lab.checks import CaptureExpect, ConntrackExpect, ProbeExpect, RouteExpect, RuleQuerySpec
from netlab.observations import CtEntry, CtTuple, Flow, Packet, RouteAnswer, RuleView
from netlab.probes.flow import ProbeResult
from netlab.probes.judge import (
    flow_entries,
    judge_capture,
    judge_conntrack,
    judge_probe,
    judge_route,
    judge_rule,
    probe_packets,
)

NODES = {"c1": {"10.0.0.1"}, "c2": {"10.0.0.2"}, "c3": {"10.0.0.3"}, "host": {"10.0.0.254", "192.0.2.1"}}
OWNER = {a: n for n, addrs in NODES.items() for a in addrs}
TABLES = {"main": 254, "local": 255, "default": 253, "vrf2": 102}


def resolve(names: tuple[str, ...]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= NODES.get(n, {n})
    return out


def node_of(addr: str) -> str | None:
    return OWNER.get(addr)


def result(
    outcome: str = "ok",
    *,
    served_by: str | None = "c2",
    saw: str | None = "10.0.0.1",
    sport: int = 40000,
    proto: str = "tcp",
    dst: str = "10.0.0.2",
    dport: int | None = 80,
    icmp: str | None = None,
) -> ProbeResult:
    ok = outcome == "ok"
    return ProbeResult(
        outcome,  # type: ignore[arg-type]
        proto,
        "10.0.0.1",
        sport,
        dst,
        dport,
        served_by if ok else None,
        saw if ok else None,
        50000 if ok else None,
        icmp,
        f"{outcome} detail",
        0.1 if ok else None,
    )


def expect(**kw: Any) -> ProbeExpect:
    return ProbeExpect.model_validate(kw)


# ---------------------------------------------------------------- probe outcome


def test_ok_passes_and_failure_reason_names_outcome_and_detail() -> None:
    assert judge_probe(expect(), [result()], resolve, node_of).passed
    j = judge_probe(expect(), [result("timeout")], resolve, node_of)
    assert j.reasons == ["expected ok, saw timeout: timeout detail"]


@pytest.mark.parametrize("outcome", ["timeout", "refused", "unreachable", "error"])
def test_result_fail_accepts_any_failure(outcome: str) -> None:
    assert judge_probe(expect(result="fail"), [result(outcome)], resolve, node_of).passed


def test_result_fail_rejects_success() -> None:
    j = judge_probe(expect(result="fail"), [result()], resolve, node_of)
    assert j.reasons == ["expected fail (any failure), saw ok: ok detail"]


def test_specific_failure_must_match() -> None:
    j = judge_probe(expect(result="refused"), [result("timeout")], resolve, node_of)
    assert "expected refused, saw timeout" in j.reasons[0]


def test_counts_tally_mixed_outcomes() -> None:
    rs = [result(), result("timeout"), result(), result("timeout")]
    j = judge_probe(expect(), rs, resolve, node_of)
    assert j.reasons[0].startswith("expected ok, saw timeout in 2 of 4 probes (ok 2, timeout 2)")


def test_icmp_words() -> None:
    r = result("unreachable", icmp="net unreachable (type 3 code 0)")
    assert judge_probe(expect(result="unreachable", icmp="net unreachable"), [r], resolve, node_of).passed
    j = judge_probe(expect(result="unreachable", icmp="port unreachable"), [r], resolve, node_of)
    assert j.reasons == ["expected an ICMP error saying 'port unreachable', saw net unreachable (type 3 code 0)"]


# ---------------------------------------------------------------- TTL and the ICMP error's sender

TE4 = "TTL exceeded in transit (time exceeded, type 11 code 0)"
TE6 = "hop limit exceeded in transit (time exceeded, ICMPv6 type 3 code 0)"
WHERE = {"10.0.0.254": "host's br0", "192.0.2.1": "host's eth0", "10.0.0.3": "c3's eth0"}


def where_of(addr: str) -> str | None:
    return WHERE.get(addr)


def expired(
    icmp_from: str | None = "10.0.0.254", *, ttl: int | None = 1, icmp: str | None = TE4, proto: str = "icmp"
) -> ProbeResult:
    r = result("unreachable", proto=proto, dport=None if proto == "icmp" else 80, icmp=icmp)
    return dataclasses.replace(r, icmp_from=icmp_from if icmp else None, ttl=ttl)


def test_ttl_expiry_is_unreachable_with_time_exceeded_words() -> None:
    want = expect(result="unreachable", icmp="time exceeded", icmp_from="host")
    assert judge_probe(want, [expired()], resolve, node_of).passed
    assert judge_probe(want, [dataclasses.replace(expired(), icmp=TE6)], resolve, node_of).passed
    assert judge_probe(expect(result="fail", icmp="TTL exceeded"), [expired()], resolve, node_of).passed


def test_icmp_from_node_name_address_or_list() -> None:
    for names in ("host", "10.0.0.254", ["c3", "host"], ["192.0.2.9", "10.0.0.254"]):
        assert judge_probe(expect(result="unreachable", icmp_from=names), [expired()], resolve, node_of).passed


def test_icmp_from_wrong_router_names_both_and_the_ttl() -> None:
    j = judge_probe(expect(result="unreachable", icmp_from="c3"), [expired()], resolve, node_of)
    assert j.reasons == [
        "expected the ICMP error from c3, it came from 10.0.0.254 (host) — the probe's ttl 1 ran out there"
    ]
    j = judge_probe(expect(result="unreachable", icmp_from="10.0.0.3"), [expired()], resolve, node_of, where_of)
    assert j.reasons == [
        "expected the ICMP error from 10.0.0.3 (c3's eth0), it came from 10.0.0.254 "
        "(host's br0) — the probe's ttl 1 ran out there"
    ]
    j = judge_probe(
        expect(result="unreachable", icmp_from=["10.0.0.3", "c1"]), [expired("203.0.113.1")], resolve, node_of, where_of
    )
    assert j.reasons == [
        "expected the ICMP error from 10.0.0.3 (c3's eth0) or c1, it came from 203.0.113.1 "
        "— the probe's ttl 1 ran out there"
    ]


def test_icmp_from_other_icmp_errors_have_no_ttl_hint() -> None:
    closed = expired("10.0.0.2", ttl=None, icmp="port unreachable (type 3 code 3)", proto="udp")
    j = judge_probe(expect(result="unreachable", icmp_from="host"), [closed], resolve, node_of)
    assert j.reasons == ["expected the ICMP error from host, it came from 10.0.0.2 (c2)"]


def test_icmp_from_without_any_icmp_error() -> None:
    j = judge_probe(expect(result="unreachable", icmp_from="host"), [result()], resolve, node_of)
    assert j.reasons == [
        "expected unreachable, saw ok: ok detail",
        "expected the ICMP error from host, but no ICMP error came back (the probe was ok)",
    ]
    j = judge_probe(expect(result="fail", icmp_from="host"), [result("timeout")], resolve, node_of)
    assert j.reasons == ["expected the ICMP error from host, but no ICMP error came back (the probe was timeout)"]


def test_icmp_from_counts_probes_and_tallies_senders() -> None:
    rs = [expired(), expired("10.0.0.3"), expired("192.0.2.1"), expired("10.0.0.3")]
    j = judge_probe(expect(result="unreachable", icmp_from="host"), rs, resolve, node_of, where_of)
    assert j.reasons == [
        "expected the ICMP error from host, it came from 10.0.0.3 (c3's eth0) in 2 of 4 probes "
        "— the probe's ttl 1 ran out there"
    ]
    rs = [expired("10.0.0.3"), expired("10.0.0.2"), expired(), result("timeout")]
    j = judge_probe(expect(result="fail", icmp_from="host"), rs, resolve, node_of)
    assert j.reasons == [
        "expected the ICMP error from host, it came from 10.0.0.3 (c3) in 1 and 10.0.0.2 (c2) in 1 "
        "of 4 probes, and no ICMP error came back in 1 — the probe's ttl 1 ran out there"
    ]
    j = judge_probe(expect(result="fail", icmp_from="host"), [result("timeout")] * 3, resolve, node_of)
    assert j.reasons == [
        "expected the ICMP error from host, but no ICMP error came back in 3 of 3 probes (the probe was timeout)"
    ]


def test_probe_summary_shows_ttl_and_icmp_sender() -> None:
    from netlab.probes.checks import _probe_summary

    assert _probe_summary([expired()], where_of) == (
        f"icmp 10.0.0.2 (ttl 1): unreachable; {TE4} from 10.0.0.254 (host's br0)"
    )
    assert _probe_summary([expired(), expired("10.0.0.3"), expired()]) == (
        "icmp 10.0.0.2 (ttl 1): unreachable 3/3; ICMP errors from 10.0.0.254 (2), 10.0.0.3 (1)"
    )
    assert _probe_summary([result()]) == "tcp 10.0.0.2:80: ok; served by c2; server saw 10.0.0.1"


# ---------------------------------------------------------------- served_by


def test_served_by_one_node() -> None:
    assert judge_probe(expect(served_by="c2"), [result()] * 3, resolve, node_of).passed
    j = judge_probe(expect(served_by="c2"), [result(), result(served_by="c3")], resolve, node_of)
    assert "expected only c2 to serve, but c3 did too (c2 1, c3 1 of 2 probes)" in j.reasons
    assert "expected c2 to serve every probe, it served 1 of 2 (c2 1, c3 1)" in j.reasons


def test_served_by_set_allows_any_member() -> None:
    rs = [result(served_by="c2"), result(served_by="c3")]
    assert judge_probe(expect(served_by=["c2", "c3"]), rs, resolve, node_of).passed
    j = judge_probe(expect(served_by=["c2"]), rs, resolve, node_of)
    assert j.reasons == ["expected only c2 to serve, but c3 did too (c2 1, c3 1 of 2 probes)"]


def test_distribution_with_minimum_share() -> None:
    balanced = [result(served_by="c2")] * 25 + [result(served_by="c3")] * 25
    assert judge_probe(expect(served_by={"c2": "20%", "c3": "20%"}), balanced, resolve, node_of).passed
    skewed = [result(served_by="c2")] * 45 + [result(served_by="c3")] * 5
    j = judge_probe(expect(served_by={"c2": "20%", "c3": "20%"}), skewed, resolve, node_of)
    assert j.reasons == ["expected c3 to serve at least 20% of the probes, it served 10% (5 of 50; c2 45, c3 5)"]
    assert j.evidence == ["served: c2 45, c3 5"]


def test_distribution_range_and_failed_probes_count_against_shares() -> None:
    rs = [result(served_by="c2")] * 6 + [result("timeout")] * 4
    j = judge_probe(expect(served_by={"c2": "40%..50%"}), rs, resolve, node_of)
    assert any("expected c2 to serve 40%..50% of the probes, it served 60%" in r for r in j.reasons)
    assert "failed 4" in j.evidence[0]


# ---------------------------------------------------------------- server_saw


def test_server_saw_node_name_or_address() -> None:
    assert judge_probe(expect(server_saw="c1"), [result()], resolve, node_of).passed
    assert judge_probe(expect(server_saw="10.0.0.1"), [result()], resolve, node_of).passed
    assert judge_probe(expect(server_saw=["c3", "c1"]), [result()], resolve, node_of).passed


def test_server_saw_explains_snat() -> None:
    j = judge_probe(expect(server_saw="c1"), [result(saw="10.0.0.254")], resolve, node_of)
    assert j.reasons == [
        "expected the server to see c1, it saw 10.0.0.254 (host) — the client sent from 10.0.0.1 (c1), "
        "so something on the way NATed it"
    ]


def test_server_saw_explains_no_snat() -> None:
    j = judge_probe(expect(server_saw="host"), [result()], resolve, node_of)
    assert j.reasons == [
        "expected the server to see host, it saw 10.0.0.1 (c1) — the client's own address: nothing NATed it"
    ]


# ---------------------------------------------------------------- conntrack


CT_DEFAULTS: dict[str, Any] = {
    "src": "10.0.0.1",
    "dst": "10.96.0.10",
    "sport": 40000,
    "dport": 80,
    "rsrc": "10.0.0.2",
    "rdst": "10.0.0.1",
    "rsport": 8080,
    "status": frozenset(),
    "proto": "tcp",
    "mark": 0,
    "zone": 0,
    "state": "ESTABLISHED",
}


def ct(**changes: Any) -> CtEntry:
    """A conntrack entry: a DNATed tcp flow unless `changes` (CT_DEFAULTS' keys) say otherwise."""
    unknown = set(changes) - set(CT_DEFAULTS)
    assert not unknown, f"ct() has no field {unknown}"
    f = {**CT_DEFAULTS, **changes}
    src, dst, sport, dport, proto = f["src"], f["dst"], f["sport"], f["dport"], f["proto"]
    rsrc, rdst, rsport, status, mark, zone, state = (
        f[k] for k in ("rsrc", "rdst", "rsport", "status", "mark", "zone", "state")
    )
    orig = CtTuple(src, dst, proto, sport, dport)
    reply = CtTuple(rsrc, rdst, proto, rsport, sport)
    return CtEntry(
        orig,
        reply,
        status,
        mark,
        zone,
        state,
        100,
        4,
        f"{proto} src={src} dst={dst} sport={sport} dport={dport} src={rsrc} dst={rdst}",
    )


def vip_result() -> ProbeResult:
    return result(dst="10.96.0.10", dport=80)


def test_flow_entries_match_by_port_and_prefer_own_source() -> None:
    other = ct(sport=40001)
    natted = ct(src="192.0.2.1")
    mine = ct()
    assert flow_entries([other, natted, mine], vip_result()) == [mine, natted]


def test_conntrack_dnat_passes() -> None:
    e = ct(status=frozenset({"DST_NAT", "ASSURED"}))
    ex = ConntrackExpect.model_validate(
        {"orig_dst": "10.96.0.10", "reply_src": ["c2", "c3"], "dnat": True, "snat": False, "state": "established"}
    )
    assert judge_conntrack("host", ex, [vip_result()], [e], resolve, node_of).passed


def test_conntrack_mismatch_names_fields_and_shows_entry() -> None:
    e = ct(status=frozenset({"DST_NAT", "SRC_NAT"}), rdst="10.0.0.254")
    ex = ConntrackExpect.model_validate({"snat": False, "reply_dst": "c1", "mark": "0x4000/0x4000"})
    j = judge_conntrack("host", ex, [vip_result()], [e], resolve, node_of)
    flow = "conntrack in host for tcp 10.0.0.1:40000 → 10.96.0.10:80: "
    assert j.reasons == [
        flow + "expected reply_dst c1, saw 10.0.0.254 (host)",
        flow + "expected snat: false, the entry is SRC_NAT",
        flow + "expected mark 0x4000/0x4000, saw 0x0",
    ]
    assert j.evidence == [f"conntrack in host: {e.text}"]


def test_conntrack_no_entry_hint_when_table_empty() -> None:
    j = judge_conntrack("host", ConntrackExpect(), [vip_result()], [], resolve, node_of)
    assert "found none among 0 entries (conntrack tracks only where netfilter uses it" in j.reasons[0]


def test_conntrack_expect_no_entry() -> None:
    ex = ConntrackExpect(entry=False)
    assert judge_conntrack("host", ex, [vip_result()], [ct(sport=1)], resolve, node_of).passed
    j = judge_conntrack("host", ex, [vip_result()], [ct()], resolve, node_of)
    assert j.reasons == ["expected no conntrack entry in host for tcp 10.0.0.1:40000 → 10.96.0.10:80, found one"]


def test_conntrack_icmp_flow_uses_echo_id() -> None:
    r = result(proto="icmp", dport=None, sport=77, served_by=None, saw=None)
    e = ct(proto="icmp", sport=77, dport=None, dst="10.0.0.2", state=None)
    assert flow_entries([e], r) == [e]


# ---------------------------------------------------------------- capture


def pkt(
    src: str,
    dst: str,
    sport: int | None,
    dport: int | None,
    *,
    proto: str = "tcp",
    vni: int | None = None,
    outer: tuple[str, str] | None = None,
    direction: str = "out",
) -> Packet:
    inner = Flow(src, dst, proto, sport, dport)
    if outer is None:
        return Packet("eth0", direction, inner, None, None, 60, f"{src} > {dst}")
    o = Flow(outer[0], outer[1], "udp", 41000, 8472)
    return Packet("eth0", direction, o, vni, inner, 110, f"{outer[0]} > {outer[1]}: vni {vni}: {src} > {dst}")


def test_probe_packets_both_directions_only_this_flow() -> None:
    r = result()
    req, rep, other = (
        pkt("10.0.0.1", "10.0.0.2", 40000, 80),
        pkt("10.0.0.2", "10.0.0.1", 80, 40000),
        pkt("10.0.0.1", "10.0.0.2", 40001, 80),
    )
    assert probe_packets([req, rep, other], r) == [req, rep]


def test_capture_vxlan_headers() -> None:
    r = result()
    p = pkt("10.0.0.1", "10.0.0.2", 40000, 80, vni=1, outer=("192.0.2.1", "192.0.2.2"))
    ok = CaptureExpect.model_validate({"udp_dport": 8472, "vxlan_vni": 1, "outer_src": "host", "src": "c1"})
    assert judge_capture("host:eth0", ok, [r], [p], resolve, node_of).passed
    bad = CaptureExpect.model_validate({"vxlan_vni": 2, "udp_dport": 4789})
    j = judge_capture("host:eth0", bad, [r], [p], resolve, node_of)
    assert j.reasons == [
        "no packet of the probe on host:eth0 matches: expected UDP destination port 4789, "
        "saw udp port 8472; expected VXLAN VNI 2, saw VNI 1"
    ]
    assert j.evidence == [f"on host:eth0: {p.text}"]


def test_capture_seen_false() -> None:
    r = result()
    unrelated = pkt("10.0.0.3", "10.0.0.2", 5000, 80)
    assert judge_capture("host:eth1", CaptureExpect(seen=False), [r], [unrelated], resolve, node_of).passed
    j = judge_capture(
        "host:eth1", CaptureExpect(seen=False), [r], [pkt("10.0.0.1", "10.0.0.2", 40000, 80)], resolve, node_of
    )
    assert j.reasons == ["expected none of the probe's packets on host:eth1, saw 1 packet"]


def test_capture_nothing_seen() -> None:
    j = judge_capture("host:eth0", CaptureExpect(), [result()], [], resolve, node_of)
    assert j.reasons == ["expected the probe's packets on host:eth0, saw none of them (captured 0 other packets)"]


# ---------------------------------------------------------------- routes and rules


def answer(**kw: Any) -> RouteAnswer:
    base: dict[str, Any] = {
        "type": "unicast",
        "table": 254,
        "dev": "eth0",
        "via": "10.0.0.254",
        "prefsrc": "10.0.0.1",
        "errno": None,
        "error": None,
        "text": "route text",
    }
    return RouteAnswer(**{**base, **kw})


def test_route_matches() -> None:
    ex = RouteExpect.model_validate({"table": "main", "dev": "eth0", "via": "10.0.0.254", "type": "unicast"})
    assert judge_route(ex, answer(), TABLES).passed


def test_route_table_named_in_words() -> None:
    j = judge_route(RouteExpect.model_validate({"table": "vrf2"}), answer(), TABLES)
    assert j.reasons == ["expected table vrf2 (102), the kernel used main (254)"]
    assert j.evidence == ["route get: route text"]


def test_route_error_type() -> None:
    a = answer(type="unreachable", table=None, dev=None, via=None, prefsrc=None, errno=113, error="No route to host")
    j = judge_route(RouteExpect.model_validate({"type": "unicast", "dev": "eth0"}), a, TABLES)
    assert j.reasons == [
        "expected route type unicast, saw unreachable (No route to host)",
        "expected dev eth0, saw none",
    ]


def rule(
    priority: int, table: int, src: str | None = None, fwmark: int | None = None, fwmask: int | None = None
) -> RuleView:
    return RuleView(priority, 4, src, None, None, None, fwmark, fwmask, table, "lookup", f"{priority}: lookup {table}")


RULES = [rule(0, 255), rule(100, 102, src="3.3.3.3/32"), rule(200, 102, fwmark=1, fwmask=0xFF), rule(32766, 254)]


def test_rule_present_and_absent() -> None:
    q = RuleQuerySpec.model_validate({"on": "r", "from": "3.3.3.3", "table": "vrf2"})
    assert judge_rule(q, True, RULES, TABLES).passed
    assert judge_rule(q, False, RULES, TABLES).reasons == ["expected no such ip rule, found: 100: lookup 102"]
    q2 = RuleQuerySpec.model_validate({"on": "r", "from": "4.4.4.4", "table": "vrf2"})
    j = judge_rule(q2, True, RULES, TABLES)
    assert j.reasons == ["expected such an ip rule, found none"]
    assert len(j.evidence) == len(RULES)


def test_rule_fwmark_mask() -> None:
    assert judge_rule(RuleQuerySpec.model_validate({"on": "r", "fwmark": "0x1/0xff"}), True, RULES, TABLES).passed
    assert not judge_rule(RuleQuerySpec.model_validate({"on": "r", "fwmark": "0x1"}), True, RULES, TABLES).passed
