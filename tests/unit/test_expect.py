"""Negative and alternative expectations (netlab.lab.expect): the three forms a lab file
writes, how each is worded, and how the judges use them — one helper for every key."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.lab.checks import ConntrackExpect, IpvsExpect, ProbeExpect, RouteExpect
from netlab.lab.expect import Expect
from netlab.lab.model import Lab
from netlab.lab.render import lab_data, render_yaml
from netlab.load import load_lab_text
from netlab.observations import RuleView
from netlab.probes.judge import judge_conntrack, judge_probe, judge_route, mismatch
from tests.unit.test_judge import TABLES, answer, ct, node_of, resolve, result, vip_result


@pytest.mark.parametrize(
    ("written", "values", "negated"),
    [
        (100, (100,), False),
        ([100, "main"], (100, "main"), False),
        ({"not": 100}, (100,), True),
        ({"not": [100, "vrf2"]}, (100, "vrf2"), True),
    ],
)
def test_forms_validate_and_write_back(written: Any, values: tuple[Any, ...], negated: bool) -> None:
    ex = RouteExpect.model_validate({"table": written})
    assert ex.table == Expect(values, negated)
    assert ex.model_dump(mode="json", exclude_unset=True) == {"table": written}
    assert RouteExpect.model_validate(ex.model_dump()) == ex  # and validates again as it is written


@pytest.mark.parametrize(
    ("expect", "words"),
    [
        (Expect((1,)), "1"),
        (Expect((1, 2)), "1 or 2"),
        (Expect((1, 2, 3)), "one of 1, 2, 3"),
        (Expect((1,), True), "not 1"),
        (Expect((1, 2), True), "neither 1 nor 2"),
        (Expect((1, 2, 3), True), "none of 1, 2, 3"),
    ],
)
def test_words(expect: Expect[int], words: str) -> None:
    assert expect.words() == words


def test_mismatch_is_the_one_judgement() -> None:
    assert mismatch("dev", None, lambda v: False, "eth0") is None  # nothing expected
    assert mismatch("dev", Expect(("eth0", "eth1")), lambda v: v == "eth1", "eth1") is None
    assert mismatch("dev", Expect(("eth0",), True), lambda v: v == "eth0", "eth0") == "expected dev not eth0, saw eth0"


def route(written: dict[str, Any], **seen: Any) -> list[str]:
    return judge_route(RouteExpect.model_validate(written), answer(**seen), TABLES).reasons


def test_route_not_table_in_words_with_the_rule() -> None:
    decided = RuleView(100, 4, None, None, None, None, None, None, 102, "lookup", "100: from all lookup vrf2")
    assert route({"table": {"not": "vrf2"}}) == []  # the kernel used main
    assert route({"table": {"not": "vrf2"}, "rule": {"not": 100}}, table=102, rule=decided) == [
        "expected the lookup decided by rule not 100, it was rule `100: from all lookup vrf2`",
        "expected table not vrf2 (102), the kernel used vrf2 (102)",
    ]


def test_route_alternatives() -> None:
    assert route({"dev": ["eth1", "eth0"], "via": ["10.0.0.253", "10.0.0.254"], "type": ["unicast", "local"]}) == []
    assert route({"table": [100, "vrf2"], "via": {"not": ["10.0.0.254"]}}) == [
        "expected table 100 or vrf2 (102), the kernel used main (254)",
        "expected via not 10.0.0.254, saw 10.0.0.254",
    ]


def test_probe_negations() -> None:
    natted = result(saw="10.0.0.254")
    assert judge_probe(ProbeExpect.model_validate({"server_saw": {"not": "c1"}}), [natted], resolve, node_of).passed
    j = judge_probe(ProbeExpect.model_validate({"server_saw": {"not": "c1"}}), [result()], resolve, node_of)
    assert j.reasons == [
        "expected the server to see not c1, it saw 10.0.0.1 (c1) — the client's own address: nothing NATed it"
    ]
    refused = result("unreachable", icmp="admin prohibited filter (type 3 code 13)")
    ok_icmp = ProbeExpect.model_validate({"result": "unreachable", "icmp": {"not": "port unreachable"}})
    assert judge_probe(ok_icmp, [refused], resolve, node_of).passed
    bad_icmp = ProbeExpect.model_validate({"result": "unreachable", "icmp": {"not": ["port", "admin prohibited"]}})
    assert judge_probe(bad_icmp, [refused], resolve, node_of).reasons == [
        "expected an ICMP error saying neither 'port' nor 'admin prohibited', saw admin prohibited filter (type 3 code 13)"
    ]


def test_served_by_not() -> None:
    never_c3 = ProbeExpect.model_validate({"served_by": {"not": "c3"}})
    assert judge_probe(never_c3, [result(served_by="c2"), result(served_by="host")], resolve, node_of).passed
    j = judge_probe(never_c3, [result(served_by="c2"), result(served_by="c3")], resolve, node_of)
    assert j.reasons == ["expected c3 to serve none of the probes, it served 1 of 2 (c2 1, c3 1)"]


def test_conntrack_negations() -> None:
    e = ct(status=frozenset({"DST_NAT", "ASSURED"}))
    ok = ConntrackExpect.model_validate(
        {"reply_src": {"not": "c1"}, "reply_sport": [80, 8080], "state": {"not": ["close", "time_wait"]}}
    )
    assert judge_conntrack("host", ok, [vip_result()], [e], resolve, node_of).passed
    bad = ConntrackExpect.model_validate({"reply_src": {"not": ["c2", "c3"]}, "state": {"not": "established"}})
    j = judge_conntrack("host", bad, [vip_result()], [e], resolve, node_of)
    flow = "conntrack in host for tcp 10.0.0.1:40000 → 10.96.0.10:80: "
    assert j.reasons == [
        flow + "expected reply_src neither c2 nor c3, saw 10.0.0.2 (c2)",
        flow + "expected state not ESTABLISHED, saw ESTABLISHED",
    ]


def test_ipvs_forward_alternatives_normalised() -> None:
    ex = IpvsExpect.model_validate({"forward": {"not": ["gatewaying", "ipip"]}, "real": {"not": "rs1"}})
    assert ex.forward == Expect(("dr", "tun"), True) and ex.real == Expect(("rs1",), True)


LAB = """
name: ex
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.0.0.1/24]}
  b:
    serve: [tcp/80]
    links:
      eth0: {addresses: [10.0.0.2/24]}
checks:
  - name: negations
    probe: {from: a, to: "b:80"}
    expect: {served_by: {not: a}, server_saw: {not: [b]}, icmp_from: {not: b}}
    conntrack: {on: b, expect: {reply_src: [b, a], state: {not: [CLOSE, TIME_WAIT]}}}
  - name: route
    route: {on: a, get: 10.0.0.2}
    expect: {table: {not: 100}, dev: [eth0]}
"""


def test_render_writes_the_forms_back() -> None:
    lab = load_lab_text(LAB, "ex.yaml")
    data = lab_data(lab)
    assert data["checks"][0]["expect"] == {
        "served_by": {"not": "a"},
        "server_saw": {"not": "b"},
        "icmp_from": {"not": "b"},
    }
    assert data["checks"][0]["conntrack"]["expect"] == {
        "reply_src": ["b", "a"],
        "state": {"not": ["CLOSE", "TIME_WAIT"]},
    }
    assert data["checks"][1]["expect"] == {"table": {"not": 100}, "dev": "eth0"}
    assert Lab.model_validate(load_lab_text(render_yaml(lab), "rendered.yaml").model_dump()) == lab
