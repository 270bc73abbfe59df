"""A probe's packets recognised after NAT rewrote them (netlab.probes.follow), and the
capture judge using it: hand-made conntrack entries, no kernel."""

from __future__ import annotations

from netlab.lab.checks import CaptureExpect
from netlab.observations import CtEntry, CtTuple, Flow, Packet
from netlab.probes.flow import ProbeResult
from netlab.probes.follow import belongs, flow_forms
from netlab.probes.judge import judge_capture, probe_packets


def probe(proto: str = "tcp", sport: int = 40000, dport: int | None = 80) -> ProbeResult:
    return ProbeResult(
        "ok",
        proto,
        "10.1.0.2",
        sport,
        "10.2.0.11",
        dport,
        None,
        None,
        None,
        None,
        "detail",
        0.1,
    )


def entry(orig: CtTuple, reply: CtTuple) -> CtEntry:
    return CtEntry(orig, reply, frozenset({"SRC_NAT", "SEEN_REPLY"}), 0, 0, None, 30, 4, "ct")


def packet(src: str, dst: str, sport: int | None, dport: int | None, proto: str = "tcp") -> Packet:
    return Packet("eth0", "in", Flow(src, dst, proto, sport, dport), None, None, 60, f"{src}.{sport} > {dst}.{dport}")


MASQ = entry(CtTuple("10.1.0.2", "10.2.0.11", "tcp", 40000, 80), CtTuple("10.2.0.11", "10.2.0.1", "tcp", 80, 23456))


def test_port_rewrite_followed_both_directions() -> None:
    forms = flow_forms(probe(), [MASQ])
    assert belongs(Flow("10.2.0.1", "10.2.0.11", "tcp", 23456, 80), forms)  # the request, after
    assert belongs(Flow("10.2.0.11", "10.2.0.1", "tcp", 80, 23456), forms)  # its reply
    assert not belongs(Flow("10.2.0.1", "10.2.0.11", "tcp", 23457, 80), forms)  # another flow of the router's
    assert not belongs(Flow("10.2.0.1", "10.2.0.11", "udp", 23456, 80), forms)


def test_chained_nat_and_unrelated_entries() -> None:
    # a second node DNATs the masqueraded flow to 10.3.0.5:8080; an unrelated entry changes nothing
    dnat = entry(
        CtTuple("10.2.0.1", "10.2.0.11", "tcp", 23456, 80), CtTuple("10.3.0.5", "10.2.0.1", "tcp", 8080, 23456)
    )
    other = entry(CtTuple("10.9.0.1", "10.2.0.11", "tcp", 5, 80), CtTuple("10.2.0.11", "10.9.0.1", "tcp", 80, 5))
    forms = flow_forms(probe(), [dnat, other, MASQ])  # in any order
    assert belongs(Flow("10.3.0.5", "10.2.0.1", "tcp", 8080, 23456), forms)
    assert not belongs(Flow("10.9.0.1", "10.2.0.11", "tcp", 5, 80), forms)
    assert len(forms) == 3


def test_icmp_id_rewrite() -> None:
    ct = entry(CtTuple("10.1.0.2", "10.2.0.11", "icmp", 7, None), CtTuple("10.2.0.11", "10.2.0.1", "icmp", 999, None))
    forms = flow_forms(probe("icmp", sport=7, dport=None), [ct])
    assert belongs(Flow("10.2.0.1", "10.2.0.11", "icmp", 999, None, 8, 0), forms)
    assert belongs(Flow("10.2.0.11", "10.2.0.1", "icmp", 999, None, 0, 0), forms)


def test_probe_without_a_flow_has_no_forms() -> None:
    r = ProbeResult("timeout", "tcp", None, None, "10.2.0.11", 80, None, None, None, None, "x", None)
    assert flow_forms(r, [MASQ]) == set()


def test_capture_judge_sees_the_rewritten_packets() -> None:
    after = [packet("10.2.0.1", "10.2.0.11", 23456, 80), packet("10.2.0.11", "10.2.0.1", 80, 23456)]
    assert probe_packets(after, probe()) == []  # without the entries: none of them (the bug)
    assert probe_packets(after, probe(), [MASQ]) == after
    want = CaptureExpect.model_validate({"src": "10.2.0.1"})
    j = judge_capture("server:eth0", want, [probe()], after, lambda n: set(n), lambda _a: None, [MASQ])
    assert j.passed, j.reasons
    hidden = judge_capture("server:eth0", CaptureExpect(seen=False), [probe()], after, set, lambda _a: None, [MASQ])
    assert hidden.reasons == ["expected none of the probe's packets on server:eth0, saw 2 packets"]
