"""Cross-rules for the `checks:` section and the nodes' `serve:` lists: every node,
interface, table and address a check names exists, and each check asks something the
kernel can answer. Complaints are (key path, message), like consistency.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from netlab.lab.checks import (
    ANSWERED_BY_ICMP,
    COUNTER_IDS,
    DROPPED_BY_IDS,
    OTHER_NODES,
    CounterSpec,
    DroppedBy,
    FirewallRule,
    ProbeCheck,
    RouteCheck,
    RuleCheck,
    result_admits,
)
from netlab.lab.expect import Expect
from netlab.lab.model import Lab
from netlab.lab.source import Complaint, Path
from netlab.lab.targets import (
    TargetError,
    _did_you_mean,
    names_to_addresses,
    node_addresses,
    probe_target,
    split_target,
)
from netlab.lab.topology import Topology
from netlab.vocabulary import BUILTIN_TABLES, ECN_MASK


def check_checks(lab: Lab, topo: Topology) -> list[Complaint]:
    complaints: list[Complaint] = []
    nodes = set(lab.nodes)
    for name, node in lab.nodes.items():
        complaints += _serve_port_clashes(name, node.serve)
    seen: dict[str, int] = {}
    for i, check in enumerate(lab.checks):
        path: Path = ("checks", i)
        if check.name in seen:
            complaints.append(((*path, "name"), f"checks[{seen[check.name]}] has the same name; names must be unique"))
        seen.setdefault(check.name, i)
        if isinstance(check, ProbeCheck):
            complaints += _check_probe(lab, topo, nodes, check, path)
        elif isinstance(check, RouteCheck):
            complaints += _check_route(lab, topo, nodes, check, path)
        elif isinstance(check, RuleCheck):
            complaints += _node(nodes, check.rule.on, (*path, "rule", "on"))
            complaints += _table(lab, check.rule.table, (*path, "rule", "table"))
    return complaints


def _serve_port_clashes(node: str, serve: list[str]) -> Iterator[Complaint]:
    # tcp and http share the TCP port space: tcp/80 and http/80 would both bind it.
    owner: dict[tuple[str, int], int] = {}
    for i, spec in enumerate(serve):
        proto, _, port = spec.partition("/")
        key = ("udp" if proto == "udp" else "tcp", int(port))
        if key in owner:
            yield (
                ("nodes", node, "serve", i),
                (f"{spec} uses the same {key[0].upper()} port as {serve[owner[key]]}; one port serves one protocol"),
            )
        owner.setdefault(key, i)


def _node(nodes: set[str], name: str, path: Path) -> Iterator[Complaint]:
    if name not in nodes:
        yield path, f"no node {name!r} in this lab{_did_you_mean(name, nodes)}"


def _table(lab: Lab, table: int | str | None, path: Path) -> Iterator[Complaint]:
    if isinstance(table, str) and table not in lab.tables and table not in BUILTIN_TABLES:
        known = sorted({*lab.tables, *BUILTIN_TABLES})
        yield path, f"unknown table {table!r}; name one from top-level `tables:` ({', '.join(known)}) or give a number"


def _names(topo: Topology, nodes: set[str], names: Expect[str] | None, path: Path) -> Iterator[Complaint]:
    if names is None:
        return
    try:
        names_to_addresses(topo, nodes, names.values)
    except TargetError as err:
        yield path, str(err)


def _check_probe(lab: Lab, topo: Topology, nodes: set[str], check: ProbeCheck, path: Path) -> Iterator[Complaint]:
    probe, expect = check.probe, check.expect
    p = (*path, "probe")
    if probe.from_ not in nodes:
        yield from _node(nodes, probe.from_, (*p, "from"))
        return
    try:
        _, port = probe_target(topo, nodes, probe)
    except TargetError as err:
        yield (*p, "to"), str(err)
        return  # the rest depends on where the probe goes
    proto = probe.proto or ("tcp" if port is not None else "icmp")
    if proto == "icmp" and port is not None:
        yield (*p, "port"), "an icmp probe has no port; drop the port or say `proto: tcp`, `udp` or `http`"
    if proto != "icmp" and port is None and probe.proto is not None:
        yield (*p, "port"), f"a {proto} probe needs a port: `port: 8080` or `to: NODE:8080`"
    if probe.sport is not None and proto == "icmp":
        yield (*p, "sport"), "an icmp probe has no source port"
    yield from _check_ds_field(probe.tos, probe.dscp, proto, p)
    if probe.src and probe.src not in node_addresses(topo, probe.from_):
        yield (
            (*p, "src"),
            (
                f"src {probe.src} is not an address of {probe.from_} (it has "
                f"{', '.join(node_addresses(topo, probe.from_)) or 'none'}); the kernel binds only local addresses"
            ),
        )
    yield from _expect_problems(lab, topo, nodes, check, proto, port, (*path, "expect"))
    if proto == "icmp" and (expect.served_by or expect.server_saw):
        return  # said above: nobody serves an echo, and the observers would repeat it
    yield from _observer_problems(topo, nodes, check, proto, path)
    for k, spec in enumerate(check.counters):
        yield from _check_counter(lab, spec, (*path, "counters", k))


def _expect_problems(
    lab: Lab, topo: Topology, nodes: set[str], check: ProbeCheck, proto: str, port: int | None, e: Path
) -> Iterator[Complaint]:
    """The probe's `expect:`: consistent with itself and the probe, and naming nodes that serve."""
    expect = check.expect
    if not expect.result.admits_value("ok") and (expect.served_by or expect.server_saw):
        yield (
            (*e, "result"),
            (
                f"`result: {expect.result.written()}` and served_by/server_saw contradict each other: a probe that fails "
                "is served by nobody"
            ),
        )
    yield from _check_icmp_expect(topo, nodes, check, e)
    yield from _check_round_trips(check, e)
    yield from _check_dropped_by(lab, check, e)
    if proto == "icmp" and (expect.served_by or expect.server_saw):
        key = "served_by" if expect.served_by else "server_saw"
        yield (
            (*e, key),
            (
                "an icmp echo is answered by the kernel, not by a responder, so nobody reports who served it; "
                "probe a `serve:`d port with tcp, udp or http"
            ),
        )
        return
    if expect.served_by:
        for node in (n for n in expect.served_by if n != OTHER_NODES):
            yield from _node(nodes, node, (*e, "served_by"))
            if node in nodes and not lab.nodes[node].serve and expect.served_by[node][1] > 0:
                yield (
                    (*e, "served_by"),
                    (
                        f"node {node} runs no responder, so it can never be seen serving; add e.g. "
                        f"`serve: [{proto}/{port}]` to it"
                    ),
                )
        lows = sum(low for low, _ in expect.served_by.values())
        if lows > 1 + 1e-9:
            yield (*e, "served_by"), f"the lowest shares add up to {lows:.0%}, more than all the probes"
    yield from _names(topo, nodes, expect.server_saw, (*e, "server_saw"))


def _observer_problems(
    topo: Topology, nodes: set[str], check: ProbeCheck, proto: str, path: Path
) -> Iterator[Complaint]:
    """The probe check's `conntrack:`, `ipvs:` and `capture:` name nodes, interfaces and addresses of the lab."""
    if check.conntrack:
        c = (*path, "conntrack")
        yield from _node(nodes, check.conntrack.on, (*c, "on"))
        ct = check.conntrack.expect
        for key in ("orig_src", "orig_dst", "reply_src", "reply_dst"):
            yield from _names(topo, nodes, getattr(ct, key), (*c, "expect", key))
    if check.ipvs:
        yield from _check_ipvs(topo, nodes, check, proto, (*path, "ipvs"))
    if check.capture:
        c = (*path, "capture")
        node, _, ifname = check.capture.on.partition(":")
        if node not in nodes:
            yield from _node(nodes, node, (*c, "on"))
        elif ifname != "lo" and (node, ifname) not in topo.interfaces:
            have = sorted(i.name for i in topo.of_node(node))
            yield (*c, "on"), f"node {node} has no interface {ifname!r} (it has: {', '.join(have) or 'only lo'})"
        cap = check.capture.expect
        for key in ("outer_src", "outer_dst", "src", "dst"):
            yield from _names(topo, nodes, getattr(cap, key), (*c, "expect", key))


def _check_ipvs(topo: Topology, nodes: set[str], check: ProbeCheck, proto: str, c: Path) -> Iterator[Complaint]:
    """`ipvs:` names a node, real servers that resolve, and a flow IPVS can balance."""
    assert check.ipvs is not None
    yield from _node(nodes, check.ipvs.on, (*c, "on"))
    if proto == "icmp":
        yield (
            c,
            (
                "IPVS balances TCP, UDP and SCTP, not ICMP echo: the probe gets no IPVS connection; probe a "
                "service's port with tcp, udp or http"
            ),
        )
    ipvs = check.ipvs.expect
    if not ipvs.entry:
        given = [k for k in ("real", "forward", "state") if getattr(ipvs, k) is not None]
        if given:
            yield (
                (*c, "expect", given[0]),
                (
                    f"`entry: false` (no IPVS connection) contradicts {' and '.join(given)}, which "
                    f"describe{'s' if len(given) == 1 else ''} one"
                ),
            )
    for item in ipvs.real.values if ipvs.real else ():
        try:
            host, _port = split_target(item)
            names_to_addresses(topo, nodes, (host,))
        except TargetError as err:
            yield (*c, "expect", "real"), f"{err} (a real server is NODE, ADDRESS, NODE:PORT, ADDR:PORT or [V6]:PORT)"


def _firewall_node(lab: Lab, name: str, path: Path, why: str) -> Iterator[Complaint]:
    """The node exists and has a firewall: an nftables ruleset, an iptables dump or an exec
    command (which may load one)."""
    if name not in lab.nodes:
        yield from _node(set(lab.nodes), name, path)
        return
    node = lab.nodes[name]
    if not (node.nftables or node.iptables or node.exec):
        yield path, f"node {name} has no nftables ruleset, iptables dump or exec command, so {why}"


def _check_counter(lab: Lab, spec: CounterSpec, c: Path) -> Iterator[Complaint]:
    """A counter is named one way, on a node that has a firewall, and something is asked of it."""
    yield from _firewall_node(lab, spec.on, (*c, "on"), "nothing there counts")
    given = [k for k in COUNTER_IDS if getattr(spec, k) is not None]
    if len(given) != 1:
        said = f"it has {' and '.join(given)}" if given else "it has none"
        yield (
            (*c, given[1]) if len(given) > 1 else c,
            f"name the counter one way: comment, rule (words of its text), handle (with table) or name "
            f"(a named counter); {said}",
        )
    yield from _handle_in_table(spec, c)
    if spec.name is not None and spec.chain is not None:
        yield (*c, "chain"), "a named counter belongs to a table, not a chain: drop `chain:`"
    if spec.packets is None and spec.bytes is None:
        yield c, "say what the probes must count: `packets:` and/or `bytes:` (N, or {min: N, max: M})"


def _handle_in_table(spec: FirewallRule, c: Path) -> Iterator[Complaint]:
    if spec.handle is not None and spec.table is None:
        yield (*c, "table"), "a rule handle is unique only within its table: give `table:` with `handle:`"


def _check_dropped_by(lab: Lab, check: ProbeCheck, e: Path) -> Iterator[Complaint]:
    """`dropped_by:` goes with a result a drop gives (a timeout); its rule form names one
    rule or chain policy of a node that has a firewall."""
    wanted = check.expect.dropped_by
    if wanted is None:
        return
    if not result_admits(check.expect.result, "timeout"):
        yield (
            (*e, "dropped_by"),
            f"`result: {check.expect.result.written()}` and dropped_by contradict each other: a dropped probe "
            "gets no answer; say `result: timeout`",
        )
    if not isinstance(wanted, DroppedBy):
        return  # a network policy's name: netlab.expand.policy.check_dropped_by
    d = (*e, "dropped_by")
    yield from _firewall_node(lab, wanted.node, (*d, "node"), "no rule there drops anything")
    given = [k for k in DROPPED_BY_IDS if getattr(wanted, k) not in (None, False)]
    if len(given) != 1:
        said = f"it has {' and '.join(given)}" if given else "it has none"
        yield (
            (*d, given[1]) if len(given) > 1 else d,
            "name what dropped the probes one way: comment, rule (words of its text), handle (with table) or "
            f"`policy: true` (the chain's policy, with chain); {said}",
        )
    yield from _handle_in_table(wanted, d)
    if wanted.policy and wanted.chain is None:
        yield (*d, "chain"), "`policy: true` is the policy of a chain: give `chain:`"


def _check_ds_field(tos: int | None, dscp: int | None, proto: str, p: Path) -> Iterator[Complaint]:
    """A probe's `tos:`/`dscp:`: one of them, and no ECN bits where TCP owns them."""
    if tos is not None and dscp is not None:
        yield (*p, "dscp"), TOS_OR_DSCP
    elif tos is not None and tos & ECN_MASK and proto in ("tcp", "http"):
        yield (
            (*p, "tos"),
            (
                f"tos {tos:#04x} has ECN bits set (the low two), which TCP sets itself: the kernel clears them from "
                f"a TCP socket's TOS, so the probe would send {tos & ~ECN_MASK:#04x}; ECN bits go with udp or icmp"
            ),
        )


TOS_OR_DSCP = "give `tos:` (the whole DS field) or `dscp:` (its top six bits), not both"


def _check_round_trips(check: ProbeCheck, e: Path) -> Iterator[Complaint]:
    """`rtt_ms:` is measured on answered probes: a `result:` that admits no success leaves none."""
    expect = check.expect
    if expect.rtt_ms is not None and not result_admits(expect.result, "ok"):
        yield (
            (*e, "rtt_ms"),
            f"`result: {expect.result.written()}` leaves no answered probe to time: `rtt_ms:` is the round trip "
            "of the probes that got their answer",
        )


def _check_icmp_expect(topo: Topology, nodes: set[str], check: ProbeCheck, e: Path) -> Iterator[Complaint]:
    """`icmp_from:` names nodes or addresses, and only a failure carries an ICMP error
    (`icmp:` or `icmp_from:`): a probe that succeeds got none, and one that timed out got
    no answer at all."""
    expect = check.expect
    # {not: …} expects no particular ICMP error, which a probe that got none satisfies
    keys = [k for k in ("icmp", "icmp_from") if getattr(expect, k) is not None and not getattr(expect, k).negated]
    result = expect.result
    if keys and not any(result_admits(result, o) for o in ANSWERED_BY_ICMP):
        given = "result" in expect.model_fields_set
        said = f"`result: {result.written()}`" + ("" if given else " (the default)")
        why = (
            "a probe that succeeds gets no ICMP error"
            if result.admits_value("ok")
            else "a probe that times out got no answer at all, ICMP errors included"
        )
        yield (
            (*e, "result" if given else keys[0]),
            (
                f"{said} contradicts {' and '.join(keys)}: {why}; a probe answered with an ICMP error "
                f"(e.g. time exceeded, with a small `ttl:`) is `result: unreachable`"
            ),
        )
    yield from _names(topo, nodes, expect.icmp_from, (*e, "icmp_from"))


def _check_route(lab: Lab, topo: Topology, nodes: set[str], check: RouteCheck, path: Path) -> Iterator[Complaint]:
    q = check.route
    p = (*path, "route")
    if q.on not in nodes:
        yield from _node(nodes, q.on, (*p, "on"))
        return
    have = {i.name for i in topo.of_node(q.on)} | {"lo"}
    for key in ("iif", "oif"):
        ifname = getattr(q, key)
        if ifname is not None and ifname not in have:
            yield (*p, key), f"node {q.on} has no interface {ifname!r} (it has: {', '.join(sorted(have))})"
    if q.iif is not None and q.from_ is None:
        yield (*p, "from"), "a route lookup for a packet arriving on `iif:` needs `from:` (its source address)"
    if q.vrf is not None:
        vrfs = sorted(i.name for i in topo.of_node(q.on) if i.kind == "vrf")
        if q.vrf not in vrfs:
            what = next(
                (f"is a {i.kind}, not a vrf" for i in topo.of_node(q.on) if i.name == q.vrf),
                "is not an interface of it",
            )
            yield (
                (*p, "vrf"),
                (
                    f"vrf {q.vrf} of node {q.on} {what} ("
                    + (
                        f"its vrfs: {', '.join(vrfs)})"
                        if vrfs
                        else "it has none: declare one under `links:`, e.g. `blue: {kind: vrf, table: 10}`)"
                    )
                ),
            )
        for key in ("iif", "oif"):
            if getattr(q, key) is not None:
                yield (
                    (*p, key),
                    (
                        f"`vrf:` is the lookup's output device (`ip route get vrf {q.vrf}`), so it takes no `{key}:`"
                        + (": a packet arriving on iif is routed in the VRF iif is in" if key == "iif" else "")
                    ),
                )
    versions = {ipaddress.ip_address(a).version for a in (q.get, q.from_) if a}
    if len(versions) > 1:
        yield (*p, "from"), f"get {q.get} and from {q.from_} are of different IP families"
    if q.tos is not None and q.dscp is not None:
        yield (*p, "dscp"), TOS_OR_DSCP
    if q.flowlabel is not None and ipaddress.ip_address(q.get).version == 4:
        yield (*p, "flowlabel"), f"a flow label is IPv6's; get {q.get} is an IPv4 lookup"
    for table in check.expect.table.values if check.expect.table else ():
        yield from _table(lab, table, (*path, "expect", "table"))
