"""`netlab trace` on the real kernel: nftables trace events from every namespace of a
client → router → server lab, stitched into a walk that names where the packet died (a
chain's policy, a rule of an nft ruleset or of an iptables-save dump), shows a DNAT, and
leaves no temporary `netlab-trace` table behind — also when it is interrupted."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from jsonschema import Draft202012Validator

from netlab import interrupts, json_output
from netlab.kernel.nft import list_ruleset
from netlab.kernel.observe import LiveObserver
from netlab.kernel.tracefs import private_tracefs, wait_removed
from netlab.observations import TRACE_TABLE_PREFIX, KernelSeen, TraceFlow
from netlab.probes.checks import run_checks, trace_failures
from netlab.probes.flow import ProbeRequest
from netlab.probes.trace import Trace, run_trace, text_lines, to_json, trace_probe
from netlab.pytest_plugin import LabFactory, LabHandle
from tests.kernel.conftest import NetlabCli

T = TypeVar("T")

POLICY_DROP = """\
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ip daddr 10.1.0.2 udp dport 9 accept
  }
}
"""

DNAT = """\
table ip nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 203.0.113.10 tcp dport 80 dnat to 10.1.0.2:8080
  }
}
"""

IPTABLES_DROP = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -d 10.1.0.2/32 -p tcp -j DROP
COMMIT
"""


def spec(**router_extra: Any) -> dict[str, Any]:
    """client 10.0.0.2 — router (10.0.0.1 | 10.1.0.1) — server 10.1.0.2 (tcp/8080), routed both ways."""
    return {
        "name": "trace",
        "nodes": {
            "router": {
                "sysctls": {"net.ipv4.ip_forward": 1},
                "links": {
                    "eth0": {"peer": "client:eth0", "addresses": ["10.0.0.1/24"]},
                    "eth1": {"peer": "server:eth0", "addresses": ["10.1.0.1/24"]},
                },
                **router_extra,
            },
            "client": {
                "links": {"eth0": {"addresses": ["10.0.0.2/24"]}},
                "routes": [{"to": "default", "via": "10.0.0.1"}],
            },
            "server": {
                "links": {"eth0": {"addresses": ["10.1.0.2/24"]}},
                "routes": [{"to": "default", "via": "10.1.0.1"}],
                "serve": ["tcp/8080"],
            },
        },
    }


def traced(lab: LabHandle, dst: str, port: int | None, proto: str = "tcp") -> tuple[Trace, str]:
    trace = run_trace(lab.context, "client", dst, proto, port)
    text = "\n".join(text_lines(trace))
    return trace, f"\n{text}\n--- router ruleset:\n{list_ruleset(lab.ns('router'))}"


def assert_no_trace_tables(lab: LabHandle) -> None:
    for node in ("client", "router", "server"):
        ruleset = list_ruleset(lab.ns(node))
        assert TRACE_TABLE_PREFIX not in ruleset, f"{node} still has a trace table:\n{ruleset}"


def test_a_chain_policy_drop_is_named(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(spec(nftables=POLICY_DROP), unique=True)
    trace, why = traced(lab, "10.1.0.2", 8080)
    assert not trace.ok, why
    death = trace.death
    assert death is not None, why
    assert (lab.ns("router"), death.table, death.chain, death.type) == (
        lab.ns("router"),
        "filter",
        "forward",
        "policy",
    ), why
    assert "died in router: inet filter forward: the policy of chain forward dropped it" in why, why
    assert_no_trace_tables(lab)


def test_a_dnat_across_three_namespaces_shows_the_translation(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(spec(nftables=DNAT), unique=True)
    trace, why = traced(lab, "203.0.113.10", 80)
    assert trace.ok, why
    assert "NAT (DNAT, at prerouting): 10.0.0.2:" in why and " → 203.0.113.10:80 is now 10.0.0.2:" in why, why
    sport = trace.probes[0].sport
    assert f"conntrack: tcp original 10.0.0.2:{sport} → 203.0.113.10:80, reply 10.1.0.2:8080 → 10.0.0.2:{sport}" in why
    assert "ip nat prerouting: ip daddr 203.0.113.10 tcp dport 80 dnat to 10.1.0.2:8080  → accept" in why, why
    nodes = [trace.nodes[e.ns] for e in trace.events]
    first = {n: nodes.index(n) for n in ("client", "router", "server")}
    assert first["client"] < first["router"] < first["server"], why
    assert any(c.dnat and c.reply.src == "10.1.0.2" for c in trace.conntrack), why
    assert_no_trace_tables(lab)


DNAT_AND_MASQUERADE = """\
table ip nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 203.0.113.10 tcp dport 80 dnat to 10.1.0.2:8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth1" masquerade fully-random
  }
}
"""


def test_a_flow_dnated_and_masqueraded_fully_random_is_followed_end_to_end(netlab_lab: LabFactory) -> None:
    """kube-proxy's hairpin / masquerade-all shape: the router rewrites both addresses and
    the source port, so the server sees nothing of the probe's own tuple. The walk still
    goes client → router → server and back, each translation shown where it happens with
    its conntrack entry."""
    lab = netlab_lab(spec(nftables=DNAT_AND_MASQUERADE), unique=True)
    trace, why = traced(lab, "203.0.113.10", 80)
    assert trace.ok, why
    sport = trace.probes[0].sport
    (entry,) = trace.conntrack
    masq = entry.reply.dport
    assert (entry.orig.sport, entry.reply.dst, entry.reply.src) == (sport, "10.1.0.1", "10.1.0.2"), why
    visits = [(trace.nodes[e.ns], e.src, e.dst) for e in trace.events]
    for seen in (
        ("server", "10.1.0.1", "10.1.0.2"),
        ("server", "10.1.0.2", "10.1.0.1"),
        ("router", "10.1.0.2", "10.1.0.1"),
    ):
        assert seen in visits, f"{seen} not in the walk: {why}"
    nodes = [n for n, _, _ in visits]
    assert nodes.index("client") < nodes.index("router") < nodes.index("server"), why
    ct = f"conntrack: tcp original 10.0.0.2:{sport} → 203.0.113.10:80, reply 10.1.0.2:8080 → 10.1.0.1:{masq}"
    first = f"NAT (DNAT, at prerouting): 10.0.0.2:{sport} → 203.0.113.10:80 is now 10.0.0.2:{sport} → 10.1.0.2:8080"
    for line in (
        first,
        f"NAT (SNAT, at postrouting): 10.0.0.2:{sport} → 10.1.0.2:8080 is now 10.1.0.1:{masq} → 10.1.0.2:8080",
        # the reply meets no rule between the two: both are undone in one step
        f"NAT (reply, DNAT+SNAT undone, at prerouting and postrouting): 10.1.0.2:8080 → 10.1.0.1:{masq} is now "
        f"203.0.113.10:80 → 10.0.0.2:{sport}",
    ):
        assert line in why, f"{line!r} not in {why}"
    assert why.count(ct) == 1 and f"{first}\n      {ct}" in why, why  # with the first step of its entry
    doc = to_json(trace)
    kinds = [(n["node"], n["kind"], n["direction"], list(n["hooks"])) for n in doc["nat"]]
    assert kinds[:3] == [
        ("router", "dnat", "original", ["prerouting"]),
        ("router", "snat", "original", ["postrouting"]),
        ("router", "dnat+snat", "reply", ["prerouting", "postrouting"]),
    ], doc["nat"]
    assert doc["nat"][0]["conntrack"]["reply"] == {
        "src": "10.1.0.2",
        "dst": "10.1.0.1",
        "proto": "tcp",
        "sport": 8080,
        "dport": masq,
    }
    Draft202012Validator(json_output.schema("trace")).validate(json.loads(json_output.dumps("trace", doc)))
    assert_no_trace_tables(lab)


def test_a_rule_of_an_iptables_dump_is_named(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(spec(iptables=IPTABLES_DROP), unique=True)
    trace, why = traced(lab, "10.1.0.2", 8080)
    death = trace.death
    assert death is not None and death.type == "rule", why
    assert (death.table, death.chain) == ("filter", "FORWARD"), why
    assert death.rule is not None and "ip daddr 10.1.0.2" in death.rule and "drop" in death.rule, why
    assert_no_trace_tables(lab)


def test_an_interrupted_trace_leaves_no_table(netlab_lab: LabFactory) -> None:
    """Ctrl-C while the probe is out (in-process: the send raises it) still removes every table."""
    lab = netlab_lab(spec(nftables=POLICY_DROP), unique=True)
    namespaces = [lab.ns(n) for n in ("client", "router", "server")]
    seen: list[str] = []

    def send() -> None:
        seen.extend(n for n in namespaces if TRACE_TABLE_PREFIX in list_ruleset(n))
        raise interrupts.Signalled(signal.SIGINT)

    with pytest.raises(interrupts.Signalled):
        LiveObserver().trace(namespaces, TraceFlow("tcp", ("10.0.0.2", "10.1.0.2")), send)
    assert seen == namespaces, f"the tables were not all in place while the probe was out: {seen}"
    assert_no_trace_tables(lab)


def test_cli_trace_names_the_drop_and_sigint_cleans_up(netlab_lab: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = netlab_lab(spec(nftables=POLICY_DROP), unique=True)
    r = netlab_cli("trace", lab.name, "--from", "client", "--to", "server:8080")
    assert r.rc == 1, r
    assert "died in router: inet filter forward: the policy of chain forward dropped it" in r.out, r
    r = netlab_cli("trace", lab.name, "--from", "client", "--to", "10.1.0.2", "--port", "8080", "--json")
    doc = json.loads(r.out)
    assert (doc["ok"], doc["died"]["node"], doc["died"]["chain"], doc["died"]["type"]) == (
        False,
        "router",
        "forward",
        "policy",
    ), r.out
    # SIGINT while the probe waits for its answer: exit 130, every table gone
    proc = netlab_cli.popen("trace", lab.name, "--from", "client", "--to", "server:8080")
    deadline = time.monotonic() + 20
    while TRACE_TABLE_PREFIX not in list_ruleset(lab.ns("server")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted by SIGINT" in err, err
    assert_no_trace_tables(lab)


class _NoTracepoints(LiveObserver):
    """A kernel without the drop tracepoints (or without tracefs)."""

    def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
        return send(), KernelSeen(unavailable="this kernel has no tracepoint skb/kfree_skb")


def test_without_a_drop_the_route_decision_of_the_last_namespace_is_given(netlab_lab: LabFactory) -> None:
    """The router has no route to 10.9.9.9 (routing: a blind spot of tracing) and the
    kernel's drop reasons cannot be read: no rule dropped the echo, the trace says what it
    cannot see, and the router's own route decision says why."""
    lab = netlab_lab(spec(nftables=DNAT), unique=True)
    ctx = replace(lab.context, observer=_NoTracepoints())
    trace = run_trace(ctx, "client", "10.9.9.9", "icmp", None)
    why = "\n".join(text_lines(trace))
    assert not trace.ok and trace.death is None, why
    assert "no rule dropped it; the last namespace that saw it: router (10.0.0.2 → 10.9.9.9)" in why, why
    assert "the kernel's drop reasons could not be read (this kernel has no tracepoint skb/kfree_skb)" in why, why
    assert "routing decisions, rp_filter, neighbour" in why, why
    assert trace.route is not None and trace.route.errno is not None, why
    assert f"route decision there: {trace.route.text}" in why, why


def test_check_trace_attaches_the_walk_to_failed_checks_only(
    netlab_lab: LabFactory, netlab_cli: NetlabCli, tmp_path: Any
) -> None:
    """`check --trace`: the failed check's probe is re-sent traced and its walk is in the
    text, the JSON and the JUnit report; the passing check carries no trace."""
    lab = netlab_lab(
        {
            **spec(nftables=POLICY_DROP),
            "checks": [
                {"name": "blocked", "probe": {"from": "client", "to": "server", "port": 8080}},
                {"name": "router answers", "probe": {"from": "client", "to": "10.0.0.1"}},
            ],
        },
        unique=True,
    )
    junit = tmp_path / "junit.xml"
    r = netlab_cli("check", lab.name, "--trace", "--junit", str(junit))
    assert r.rc == 1, r
    died = "died in router: inet filter forward: the policy of chain forward dropped it"
    assert died in r.out and "trace tcp client → 10.1.0.2:8080" in r.out, r.out
    assert died in junit.read_text(), junit.read_text()
    doc = json.loads(netlab_cli("check", lab.name, "--trace", "--json").out)
    traces = {c["name"]: c["trace"] for c in doc["checks"]}
    assert traces["router answers"] is None, doc
    assert (traces["blocked"]["died"]["node"], traces["blocked"]["died"]["type"]) == ("router", "policy"), doc
    assert_no_trace_tables(lab)


IPTABLES_COMMENTED_DROP = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -s 10.1.0.2/32 -j ACCEPT
-A FORWARD -d 10.1.0.2/32 -p tcp -m comment --comment "block the server" -j DROP
COMMIT
"""


def _dropped_by_checks(*wanted: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": f"dropped {i}",
            "probe": {"from": "client", "to": "server", "port": 8080, "timeout": 0.5},
            "expect": {"result": "timeout", "dropped_by": w},
        }
        for i, w in enumerate(wanted)
    ]


def test_dropped_by_a_chain_policy_is_judged_from_the_trace(netlab_lab: LabFactory) -> None:
    """dropped_by names an nft chain's `policy drop`: the right one passes; a rule of that
    chain, or another table's chain, fails saying what did drop it, with the walk attached."""
    checks = _dropped_by_checks(
        {"node": "router", "table": "filter", "chain": "forward", "policy": True},
        {"node": "router", "family": "inet", "chain": "forward", "rule": "udp dport 9 accept"},
        {"node": "router", "table": "nat", "chain": "forward", "policy": True},
    )
    lab = netlab_lab({**spec(nftables=POLICY_DROP), "checks": checks}, unique=True)
    right, rule, elsewhere = lab.run_checks()
    assert right.passed, right
    assert "dropped in router by inet filter forward: the policy of chain forward" in right.summary, right
    assert right.trace is None, "a passing check carries no walk"
    died = "it was dropped in router by inet filter forward: the policy of chain forward"
    assert not rule.passed and rule.reasons == [
        f"expected the probe to be dropped by the rule `udp dport 9 accept` in router (inet forward), {died}"
    ], rule
    assert rule.trace is not None and rule.trace.death is not None, rule
    assert not elsewhere.passed and died in elsewhere.reasons[0], elsewhere
    assert_no_trace_tables(lab)


def test_dropped_by_an_iptables_dump_rule_by_comment_or_words(netlab_lab: LabFactory) -> None:
    """dropped_by names a rule of an iptables-save dump by its `-m comment` (which nft's
    listing does not show) or by the dump's own words; the walk prints the dump's words."""
    checks = _dropped_by_checks(
        {"node": "router", "table": "filter", "chain": "FORWARD", "comment": "block the server"},
        {"node": "router", "rule": "-d 10.1.0.2/32 -p tcp"},
        {"node": "router", "comment": "another comment"},
    )
    lab = netlab_lab({**spec(iptables=IPTABLES_COMMENTED_DROP), "checks": checks}, unique=True)
    by_comment, by_words, wrong = lab.run_checks()
    assert by_comment.passed and by_words.passed, (by_comment, by_words)
    saved = '-A FORWARD -d 10.1.0.2/32 -p tcp -m comment --comment "block the server" -j DROP'
    assert f"dropped in router by ip filter FORWARD: rule `{saved}`" in by_comment.summary, by_comment
    assert not wrong.passed, wrong
    assert wrong.reasons == [
        'expected the probe to be dropped by the rule with comment "another comment" in router, '
        f"it was dropped in router by ip filter FORWARD: rule `{saved}`"
    ], wrong
    walk = "\n".join(wrong.walk())
    assert f"ip filter FORWARD: {saved}  → drop   ✗ dropped here" in walk, walk
    death = wrong.trace.death if wrong.trace else None
    assert death is not None and death.comment == "block the server" and death.rule and "ip daddr" in death.rule
    assert_no_trace_tables(lab)


def test_dropped_by_a_rule_when_the_kernel_dropped_it_says_no_rule_did(netlab_lab: LabFactory) -> None:
    """No route on the router: no rule dropped the probe, and the judgement says so."""
    checks = [
        {
            "name": "no route",
            "probe": {"from": "client", "to": "10.9.9.9", "port": 80, "timeout": 0.5},
            "expect": {"result": "fail", "dropped_by": {"node": "router", "chain": "forward", "policy": True}},
        }
    ]
    lab = netlab_lab({**spec(nftables=POLICY_DROP), "checks": checks}, unique=True)
    (v,) = lab.run_checks()
    assert not v.passed, v
    assert v.reasons == [
        "expected the probe to be dropped by the policy of chain forward in router (forward), but no rule or "
        "chain policy dropped it (its trace saw no drop)"
    ], v
    assert_no_trace_tables(lab)


def test_a_missing_route_is_named_by_the_kernels_drop_reason(netlab_lab: LabFactory) -> None:
    """The router has no route to 10.9.9.9: no rule dropped the probe; the kernel's drop
    tracepoint (read through a private tracefs) names the reason, the namespace and the
    interface, and the failed FIB lookup is shown."""
    lab = netlab_lab(spec(nftables=DNAT), unique=True)
    trace, why = traced(lab, "10.9.9.9", 80)
    assert not trace.ok and trace.death is None, why
    assert trace.kernel is not None and trace.kernel.unavailable is None, why
    router = lab.ns("router")
    assert (
        f"the kernel dropped it in router ({router}), in on eth0: IP_INNOROUTES — no route to forward it by (ip_error"
        in why
    ), why
    assert "FIB lookups of 10.9.9.9 that found no route: main (254)" in why, why
    assert "route decision there: error: Network is unreachable" in why, why
    assert to_json(trace)["kernel_drop"] | {"location": None} == {
        "reason": "IP_INNOROUTES",
        "location": None,
        "dev": "eth0",
        "protocol": 0x0800,
        "ns": router,
        "node": "router",
    }, why
    assert_no_trace_tables(lab)
    assert_no_tracing_instance()


def test_rp_filter_is_named_by_the_kernels_drop_reason(netlab_lab: LabFactory) -> None:
    """The client sends from 10.5.0.2, which the router routes back through eth1: strict
    rp_filter on the router's eth0 drops it, and the trace says so."""
    s = spec(
        sysctls={"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 1},
        routes=[{"to": "10.5.0.0/24", "via": "10.1.0.2"}],
    )
    client = s["nodes"]["client"]
    client["links"]["eth0"]["addresses"].append("10.5.0.2/32")
    client["sysctls"] = {"net.ipv4.conf.all.arp_announce": 2}  # ARP from 10.0.0.2, which rp_filter lets by
    lab = netlab_lab(s, unique=True)
    trace = trace_probe(lab.context, "client", ProbeRequest(lab.ns("client"), "tcp", "10.1.0.2", 8080, src="10.5.0.2"))
    why = "\n".join(text_lines(trace))
    assert not trace.ok and trace.death is None, why
    assert (
        f"the kernel dropped it in router ({lab.ns('router')}), in on eth0: IP_RPFILTER — reverse path filter "
        "(rp_filter): the route back to its source does not leave by the interface it came in on" in why
    ), why
    assert "FIB lookups" not in why, why
    assert_no_trace_tables(lab)
    assert_no_tracing_instance()


def assert_no_tracing_instance() -> None:
    """The trace's tracefs instance is gone (its removal, done beside the trace's last wait,
    has ended), and no tracefs is mounted in this mount namespace."""
    wait_removed()
    root = private_tracefs()
    try:
        left = [n for n in os.listdir(os.path.join(f"/proc/self/fd/{root}", "instances")) if n.startswith("netlab-")]
    finally:
        os.close(root)
    assert not left, f"tracing instances left: {left}"
    with open("/proc/self/mounts") as mounts:
        # ours only: another tool (perf) may have mounted the machine's own at /sys/kernel/tracing
        assert "netlab-tracefs" not in mounts.read()


def test_a_next_hop_that_never_answers_arp_is_named_with_its_namespace_and_interface(netlab_lab: LabFactory) -> None:
    """10.1.0.99 is on the router's eth1 link, and no one has it: the router's ARP for it
    goes unanswered, the SYN waits in its neighbour queue until the kernel gives up (a
    timer's NEIGH_FAILED, seconds after the probe's timeout): the trace names the
    router, eth1 and the INCOMPLETE entry."""
    lab = netlab_lab(spec(), unique=True)
    trace, why = traced(lab, "10.1.0.99", 8080)
    assert not trace.ok and trace.death is None, why
    router = lab.ns("router")
    assert (
        f"the kernel drops it in router ({router}), out on eth1: NEIGH_FAILED — its next hop 10.1.0.99 does not "
        "answer ARP (neighbour INCOMPLETE" in why
    ), why
    assert "the kernel gave no drop reason" not in why, why
    doc = to_json(trace)
    Draft202012Validator(json_output.schema("trace")).validate(json.loads(json_output.dumps("trace", doc)))
    neighbour = doc["neighbour"]
    assert {k: neighbour[k] for k in ("node", "ns", "dev", "dst", "state")} == {
        "node": "router",
        "ns": router,
        "dev": "eth1",
        "dst": "10.1.0.99",
        "state": "INCOMPLETE",
    }, why
    assert_no_trace_tables(lab)


class _CountingTraces(LiveObserver):
    """The real kernel, counting the traces and tracepoint watches asked of it."""

    def __init__(self) -> None:
        self.asked = 0

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return super().trace(*args, **kwargs)

    def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
        self.asked += 1
        return super().watch_drops(send)


def test_check_trace_adds_nothing_to_passing_checks(netlab_lab: LabFactory, netlab_cli: NetlabCli) -> None:
    """`check --trace` with every check passing: no trace is run (no table, no listener,
    no tracepoint, no time), and the verdicts are those of a plain check."""
    checks = [
        {"name": "served", "probe": {"from": "client", "to": "server", "port": 8080}},
        {"name": "router answers", "probe": {"from": "client", "to": "10.0.0.1"}},
    ]
    lab = netlab_lab({**spec(nftables=DNAT), "checks": checks}, unique=True)
    counting = _CountingTraces()
    ctx = replace(lab.context, observer=counting)
    verdicts = run_checks(ctx)
    assert all(v.passed for v in verdicts), verdicts
    t0 = time.monotonic()
    traced = trace_failures(ctx, ctx.lab.checks, verdicts)
    spent = time.monotonic() - t0
    assert (counting.asked, traced) == (0, verdicts), traced
    assert spent < 0.005, f"trace_failures took {spent:.4f} s with nothing to trace"
    doc = json.loads(netlab_cli("check", lab.name, "--trace", "--json").out)
    assert [(c["passed"], c["trace"]) for c in doc["checks"]] == [(True, None), (True, None)], doc
    assert_no_trace_tables(lab)


def test_two_processes_with_the_same_pid_get_their_own_tracing_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing instances are the kernel's, not a PID namespace's: the agents of two hosts
    simulated on one kernel can have the same pid and the same count of watches. Each
    watch gets its own instance (one took the other's: 'File exists', and once that was
    removed the other's reads failed with 'No such device')."""
    from netlab.kernel import tracefs

    monkeypatch.setattr(os, "getpid", lambda: 7)
    watches = []
    for _ in range(2):
        monkeypatch.setattr(tracefs, "_ids", itertools.count(1))  # each "process" counts from 1
        watch = tracefs.DropWatch()
        watch.open()
        watches.append(watch)
    try:
        assert [w.unavailable for w in watches] == [None, None], [w.unavailable for w in watches]
        assert watches[0].name != watches[1].name
    finally:
        seen = [w.close() for w in watches]
    assert [s.unavailable for s in seen] == [None, None], seen
    monkeypatch.undo()
    assert_no_tracing_instance()
