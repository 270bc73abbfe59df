"""Rootless tests of the check runner (netlab.probes.checks) over the read-side seam: a lab's
checks run against FakeObserver (netlab.kernel.fake_observer), probes against a canned
sender. Route verdicts come from the fake's own lookup (rules, longest prefix), `wait:`
retries until the kernel settles or the budget is spent, conntrack expectations are
judged from the fake's entries, and what cannot be observed says why."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import pytest

from netlab.fib.query import QueryError
from netlab.kernel.conntrack import ct_text
from netlab.kernel.fake_observer import FakeNamespace, FakeObserver, FakeRoute
from netlab.lab.model import Lab
from netlab.load import load_lab_text
from netlab.observations import CtEntry, CtTuple, ObserveError, RouteQuery, RuleView
from netlab.probes.checks import LabContext, Verdict, run_check, run_checks
from netlab.probes.flow import ProbeRequest, ProbeResult
from netlab.pytest_plugin import format_verdict

HOST_GW = Path(__file__).resolve().parents[2] / "labs" / "host-gw.yaml"


def lab_with(checks: str) -> Lab:
    """labs/host-gw.yaml (three nodes, pods web-a 10.244.0.2 on node1, web-c 10.244.2.2 on
    node3) with these checks instead of its own."""
    text = HOST_GW.read_text()
    return load_lab_text(text[: text.index("\nchecks:")] + "\nchecks:\n" + checks, str(HOST_GW))


def spaces(lab: Lab) -> dict[str, FakeNamespace]:
    return {f"hg.{node}": FakeNamespace(links={"eth0"}) for node in lab.nodes}


def context(lab: Lab, fake: FakeObserver, send: Sender | None = None) -> LabContext:
    return LabContext(lab, {node: f"hg.{node}" for node in lab.nodes}, fake, send or Sender())


class Sender:
    """Canned probe results: each request answered ok from web-c, client port 40000 + n."""

    def __init__(self, outcome: str = "ok") -> None:
        self.outcome = outcome
        self.sent: list[ProbeRequest] = []

    def __call__(self, requests: Sequence[ProbeRequest], *, workers: int) -> list[ProbeResult]:
        out = []
        for r in requests:
            self.sent.append(r)
            ok = self.outcome == "ok"
            out.append(
                ProbeResult(
                    self.outcome,  # type: ignore[arg-type]
                    r.proto,
                    "10.244.0.2",
                    40000 + len(self.sent),
                    r.dst,
                    r.port,
                    "web-c" if ok else None,
                    "10.244.0.2" if ok else None,
                    None,
                    None,
                    "served by web-c" if ok else "no answer within 1s",
                    0.1 if ok else None,
                )
            )
        return out


def node3_route(via: str = "192.168.49.2") -> FakeRoute:
    return FakeRoute("10.244.0.0/24", dev="eth0", via=via)


# --------------------------------------------------------------------------- route checks


ROUTE_CHECK = """
  - name: node3 sends node1's pod subnet via node1's IP
    route: {on: node3, get: 10.244.0.2}
    expect: {dev: eth0, via: 192.168.49.2}
"""


def test_a_route_check_passes_on_the_fakes_answer_and_names_the_deciding_rule() -> None:
    lab = lab_with(ROUTE_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node3"].routes = [FakeRoute("default", dev="eth0", via="192.168.49.1"), node3_route()]
    [v] = run_checks(context(lab, fake))
    assert v.passed and v.kind == "route" and v.attempts == 1
    assert v.summary == ("node3: 10.244.0.2 via 192.168.49.2 dev eth0 table main (rule 32766: from all lookup main)")
    assert fake.calls == [("route_get", "hg.node3", "10.244.0.2")]
    assert fake.queries == [RouteQuery("10.244.0.2")]


def test_a_route_check_fails_with_what_the_kernel_answered() -> None:
    lab = lab_with(ROUTE_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node3"].routes = [node3_route(via="192.168.49.9")]
    [v] = run_checks(context(lab, fake))
    assert not v.passed
    assert v.reasons == ["expected via 192.168.49.2, saw 192.168.49.9"]
    assert v.evidence == ["route get: 10.244.0.2 via 192.168.49.9 dev eth0 table main"]


def test_no_route_is_an_answer_not_an_error() -> None:
    lab = lab_with(ROUTE_CHECK)
    fake = FakeObserver(spaces(lab))
    [v] = run_checks(context(lab, fake))
    assert not v.passed
    assert v.summary == "node3: error: Network is unreachable (no route)"
    assert v.reasons == ["expected dev eth0, saw none", "expected via 192.168.49.2, saw none"]


# --------------------------------------------------------------------------- wait: and retries


def test_wait_retries_until_the_route_appears_on_the_third_look() -> None:
    lab = lab_with(ROUTE_CHECK.replace("expect:", "wait: 5\n    expect:"))
    looks = []

    def settle(fake: FakeObserver, what: str, ns: str) -> None:
        looks.append(what)
        if len(looks) == 3:  # the route is learned between the second and the third look
            fake.namespaces[ns].routes.append(node3_route())

    fake = FakeObserver(spaces(lab), before_read=settle)
    start = time.monotonic()
    [v] = run_checks(context(lab, fake))
    assert v.passed and v.attempts == 3
    assert [c[0] for c in fake.calls] == ["route_get"] * 3
    assert 0.4 <= time.monotonic() - start < 2  # two pauses of RETRY_PAUSE, not the whole budget


def test_a_wait_budget_that_runs_out_fails_and_says_how_often_it_tried() -> None:
    lab = lab_with(ROUTE_CHECK.replace("expect:", "wait: 0.5\n    expect:"))
    fake = FakeObserver(spaces(lab))
    [v] = run_checks(context(lab, fake))
    assert not v.passed
    assert v.attempts == len(fake.calls) >= 2  # one read per attempt, and more than one attempt
    assert 0.4 <= v.seconds < 1.5
    assert v.reasons == ["expected dev eth0, saw none", "expected via 192.168.49.2, saw none"]
    assert format_verdict(v).splitlines()[0] == (
        f"check \"node3 sends node1's pod subnet via node1's IP\" failed: node3: error: Network is unreachable "
        f"(no route) ({v.attempts} attempts)"
    )


def test_without_wait_a_failing_check_is_tried_once() -> None:
    lab = lab_with(ROUTE_CHECK)
    fake = FakeObserver(spaces(lab))
    v = run_check(context(lab, fake), lab.checks[0])
    assert (v.passed, v.attempts, len(fake.calls)) == (False, 1, 1)


# --------------------------------------------------------------------------- probe checks


CONNTRACK_CHECK = """
  - name: web-a reaches web-c without NAT in node1
    probe: {from: web-a, to: web-c, port: 8080}
    conntrack: {on: node1, expect: {orig_dst: web-c, reply_src: web-c, snat: false}}
    expect: {served_by: web-c}
"""


def entry(sport: int, *, snat: bool = False) -> CtEntry:
    reply_dst = "192.168.49.2" if snat else "10.244.0.2"
    status = frozenset({"CONFIRMED", "SEEN_REPLY", "ASSURED", *(["SRC_NAT"] if snat else [])})
    fields = (
        CtTuple("10.244.0.2", "10.244.2.2", "tcp", sport, 8080),
        CtTuple("10.244.2.2", reply_dst, "tcp", 8080, sport if not snat else 61000),
        status,
        0,
        0,
        "ESTABLISHED",
        431999,
        4,
    )
    return CtEntry(*fields, ct_text(CtEntry(*fields, "")))


def test_conntrack_expectations_are_judged_from_the_fakes_entries() -> None:
    lab = lab_with(CONNTRACK_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node1"].conntrack = [entry(40001)]
    send = Sender()
    [v] = run_checks(context(lab, fake, send))
    assert v.passed, v.reasons
    assert [r.ns for r in send.sent] == ["hg.web-a"] and (send.sent[0].dst, send.sent[0].port) == ("10.244.2.2", 8080)
    assert fake.calls == [("conntrack", "hg.node1", "")]
    assert v.probes[0]["served_by"] == "web-c"


def test_a_snatted_entry_fails_the_check_and_is_quoted() -> None:
    lab = lab_with(CONNTRACK_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node1"].conntrack = [entry(40001, snat=True)]
    [v] = run_checks(context(lab, fake))
    assert not v.passed
    assert v.reasons == [
        "conntrack in node1 for tcp 10.244.0.2:40001 → 10.244.2.2:8080: expected snat: false, the entry is SRC_NAT"
    ]
    assert v.evidence == ["probe: served by web-c", f"conntrack in node1: {entry(40001, snat=True).text}"]
    assert v.evidence[1].endswith("dport=61000 [ASSURED] mark=0 [SNAT]")


def test_a_probe_with_no_entry_in_conntrack_says_how_many_it_looked_at() -> None:
    lab = lab_with(CONNTRACK_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node1"].conntrack = [entry(50000)]  # another flow's
    [v] = run_checks(context(lab, fake))
    assert v.reasons == [
        "expected a conntrack entry in node1 for tcp 10.244.0.2:40001 → 10.244.2.2:8080, found none among 1 entry"
    ]


CAPTURE_CHECK = """
  - name: pod traffic crosses the underlay
    probe: {from: web-a, to: web-c, port: 8080}
    capture: {on: node1:cni0, expect: {outer_src: web-a}}
"""


def test_a_capture_that_cannot_start_is_could_not_observe_and_no_probe_is_sent() -> None:
    lab = lab_with(CAPTURE_CHECK)
    fake = FakeObserver(spaces(lab))
    send = Sender()
    [v] = run_checks(context(lab, fake, send))
    assert (v.passed, v.summary) == (False, "could not observe")
    assert v.reasons == ["could not observe: cannot capture on cni0 in hg.node1: no interface cni0 in hg.node1"]
    assert send.sent == []


def test_a_capture_is_closed_after_the_probes_even_when_none_matched() -> None:
    lab = lab_with(CAPTURE_CHECK.replace("cni0", "eth0"))
    fake = FakeObserver(spaces(lab))
    [v] = run_checks(context(lab, fake))
    assert v.reasons == ["expected the probe's packets on node1:eth0, saw none of them (captured 0 other packets)"]
    assert [c[0] for c in fake.calls] == ["capture", "packets", "capture closed"]


def test_a_missing_namespace_is_could_not_observe() -> None:
    lab = lab_with(ROUTE_CHECK)
    fake = FakeObserver({})
    [v] = run_checks(context(lab, fake))
    assert v.reasons == ["could not observe: namespace hg.node3 does not exist"]


# --------------------------------------------------------------------------- rule checks, order


def test_rule_checks_read_the_fakes_rules_and_verdicts_keep_lab_file_order() -> None:
    lab = lab_with(
        ROUTE_CHECK
        + """
  - name: node1 looks up main
    rule: {on: node1, priority: 32766, table: main}
  - name: node1 has no fwmark rule
    rule: {on: node1, fwmark: "0x1"}
"""
    )
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node3"].routes = [node3_route()]
    done: list[Verdict] = []
    verdicts = run_checks(context(lab, fake), on_done=done.append)
    assert [v.name for v in verdicts] == [c.name for c in lab.checks]
    assert sorted(v.name for v in done) == sorted(c.name for c in lab.checks)
    assert [v.passed for v in verdicts] == [True, True, False]
    assert verdicts[1].summary == "node1: present"
    assert verdicts[2].reasons == ["expected such an ip rule, found none"]
    assert "ip rule: 32766: from all lookup main" in verdicts[2].evidence


# --------------------------------------------------------------------------- the fake's lookup


def rule(priority: int, action: str = "lookup", table: int | None = None, **kw: Any) -> RuleView:
    from netlab.fib.text import rule_text

    view = RuleView(
        priority,
        4,
        kw.pop("src", None),
        kw.pop("dst", None),
        None,
        None,
        kw.pop("fwmark", None),
        None,
        table,
        action,
        "",
        **kw,
    )
    return RuleView(**{**view.__dict__, "text": rule_text(view, goto=view.goto)})


def test_the_fakes_lookup_follows_rules_goto_and_reject_routes() -> None:
    fake = FakeObserver(
        {
            "n": FakeNamespace(
                routes=[
                    FakeRoute("default", dev="eth0", via="10.0.0.1"),
                    FakeRoute("10.9.0.0/16", dev="eth1", table=100),
                    FakeRoute("10.9.9.0/24", type="unreachable", table=100),
                    FakeRoute("10.7.0.0/16", type="throw"),
                ],
                rules=[
                    rule(0, table=255),
                    rule(10, "goto", goto=32766, fwmark=0x2),
                    rule(100, table=100, fwmark=0x1),
                    rule(150, "prohibit", dst="10.8.0.0/16"),
                    rule(32766, table=254),
                ],
            )
        }
    )
    marked, jumped, rejected, unreachable, thrown = fake.route_get(
        "n",
        [
            RouteQuery("10.9.1.1", fwmark=0x1),
            RouteQuery("10.9.1.1", fwmark=0x2),
            RouteQuery("10.8.0.1"),
            RouteQuery("10.9.9.9", fwmark=0x1),
            RouteQuery("10.7.0.1"),
        ],
    )
    assert (marked.dev, marked.table, marked.rule and marked.rule.priority) == ("eth1", 100, 100)
    assert (jumped.dev, jumped.table) == ("eth0", 254)  # goto 32766 skips the fwmark rule and the prohibit
    assert (rejected.type, rejected.errno) == ("prohibit", errno.EACCES)
    assert (unreachable.type, unreachable.errno) == ("unreachable", errno.EHOSTUNREACH)
    assert (thrown.type, thrown.errno) == ("none", errno.ENETUNREACH)  # main throws, nothing after it


def test_the_fake_refuses_what_the_kernel_refuses() -> None:
    fake = FakeObserver({"n": FakeNamespace(links={"eth0"})})
    with pytest.raises(QueryError, match="an input lookup"):
        fake.route_get("n", [RouteQuery("10.0.0.1", iif="eth0")])
    with pytest.raises(ObserveError, match=r"^no interface eth5 \(the query's oif\)$"):
        fake.route_get("n", [RouteQuery("10.0.0.1", oif="eth5")])
    assert fake.nft_list("n", "table inet filter") is None


# --------------------------------------------------------------------------- the plugin's handle


def test_the_plugins_handle_reads_through_its_observer() -> None:
    from netlab.pytest_plugin import LabHandle

    lab = lab_with(CONNTRACK_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node3"].routes = [node3_route()]
    fake.namespaces["hg.node1"].conntrack = [entry(40001), entry(50000)]
    handle = LabHandle(lab, {node: f"hg.{node}" for node in lab.nodes}, HOST_GW, observer=fake)
    answer = handle.route_get("node3", "10.244.0.2", fwmark=0x1)
    assert (answer.dev, answer.via, answer.text) == (
        "eth0",
        "192.168.49.2",
        "10.244.0.2 via 192.168.49.2 dev eth0 table main mark 0x1",
    )
    assert [r.text for r in handle.rules("node3")][:3] == [
        "0: from all lookup local",
        "32766: from all lookup main",
        "32767: from all lookup default",
    ]
    [flow] = Sender()([ProbeRequest("hg.web-a", "tcp", "10.244.2.2", 8080)], workers=1)
    assert handle.conntrack("node1", flow) == [entry(40001)]
    assert len(handle.conntrack("node1")) == 2
    assert handle.ipvs("node1").text == "(no virtual services)\n(no connections)"
    assert [c[:2] for c in fake.calls] == [
        ("route_get", "hg.node3"),
        ("rules", "hg.node3"),
        ("conntrack", "hg.node1"),
        ("conntrack", "hg.node1"),
        ("ipvs", "hg.node1"),
    ]
    assert fake.queries == [RouteQuery("10.244.0.2", fwmark=0x1)]


def test_the_judges_the_fib_and_the_fake_import_no_netlink_layer() -> None:
    """The read side's pure half stays pure: importing it loads neither pyroute2 nor libnftables
    (netlab.kernel registers the pyroute2 package unloaded: its __init__ has not run)."""
    pure = (
        "netlab.observations",
        "netlab.fib.query",
        "netlab.fib.lookup",
        "netlab.fib.text",
        "netlab.probes.judge",
        "netlab.probes.drops",
        "netlab.probes.checks",
        "netlab.kernel.observer",
        "netlab.kernel.fake_observer",
    )
    code = (
        f"import sys; import {', '.join(pure)}; "
        "unloaded = lambda m: m == 'pyroute2' and '__getattr__' in vars(sys.modules[m]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'nftables') and not unloaded(m)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


PAYLOAD_CHECK = """\
  - name: EF traffic with a payload
    probe: {from: web-a, to: "web-c:8080", dscp: 46, mark: 0x7, payload: 1400, count: 2}
  - name: hex bytes as written
    probe: {from: web-a, to: "web-c:8080", tos: "0x10", payload: 0x4142}
"""


def test_a_probe_s_ds_field_mark_and_payload_reach_its_requests_and_its_verdict() -> None:
    """What the lab file sets is what the requests carry (the payload as bytes: a size is a
    pattern, unquoted 0x… is hex bytes, not YAML's number); a payload that arrived changed
    fails the check with the responder's account of it, and the summary says what was set."""
    lab = lab_with(PAYLOAD_CHECK)
    send = Sender()
    spoilt = "web-c received 1400 bytes that differ from what was sent in bytes 507-528"

    def changed(requests: Sequence[ProbeRequest], *, workers: int) -> list[ProbeResult]:
        return [
            replace(r, tos=q.tos, mark=q.mark, sent=len(q.payload or b""), intact=i == 0, delivery=spoilt)
            for i, (q, r) in enumerate(zip(requests, send(requests, workers=workers), strict=True))
        ]

    ef, hexed = run_checks(
        LabContext(lab, {node: f"hg.{node}" for node in lab.nodes}, FakeObserver(spaces(lab)), changed)
    )
    first, second = send.sent[0], send.sent[2]
    assert (first.tos, first.mark, first.payload) == (46 << 2, 7, (bytes(range(251)) * 6)[:1400])
    assert (second.tos, second.mark, second.payload) == (0x10, None, b"AB")
    assert not ef.passed
    assert ef.reasons == [f"expected the payload to arrive as sent; {spoilt} (in 1 of 2 probes)"]
    assert ef.summary.startswith("tcp 10.244.2.2:8080 (tos 0xb8, mark 0x7, 1400-byte payload): ok 2/2")
    assert f"; server saw 10.244.0.2; {spoilt} (1 of 2); rtt" in ef.summary
    assert hexed.passed and "; payload intact" in hexed.summary, hexed.summary


def test_a_verdict_s_json_is_asdict_s_in_its_key_order() -> None:
    """Verdict.to_json and ProbeResult.to_json skip asdict's deep copy (a thousand checks'
    worth of it); what they give is still asdict's, key for key, in the same order."""
    lab = lab_with(CONNTRACK_CHECK)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.node1"].conntrack = [entry(40001)]
    [v] = run_checks(context(lab, fake, Sender()))
    v = replace(v, reasons=["why"], evidence=["seen"])
    assert v.round_trips is not None
    expected = {**asdict(replace(v, trace=None, round_trips=None)), "round_trips": v.round_trips.to_json()}
    got = v.to_json()
    assert list(got) == [f.name for f in fields(Verdict)] and got == {**expected, "trace": None}
    result = Sender()([ProbeRequest("hg.web-a", "tcp", "10.244.2.2", 8080)], workers=1)[0]
    assert list(result.to_json().items()) == list(asdict(result).items())
