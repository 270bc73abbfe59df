"""Every ip rule selector and action on the real kernel, IPv4 and IPv6, in the manner of
the kernel's own tools/testing/selftests/net/fib_rule_tests.sh: table 100 routes the test
destination via gateway .2, main via .1; one rule with one selector sends matching
lookups to table 100. A lookup that matches must use table 100 *and* be attributed to
that rule; one that does not must fall through to main (rule 32766)."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.pytest_plugin import LabFactory, LabHandle

RULE_PRIO = 100
FAMILIES = {
    4: {
        "addr": "192.0.2.10/24",
        "gw_main": "192.0.2.1",
        "gw_rule": "192.0.2.2",
        "dst": "198.51.100.7",
        "peer": "192.0.2.99/24",
        "src": "192.0.2.10",
        "icmp": "icmp",
    },
    6: {
        "addr": "2001:db8::10/64",
        "gw_main": "2001:db8::1",
        "gw_rule": "2001:db8::2",
        "dst": "2001:db8:100::7",
        "peer": "2001:db8::99/64",
        "src": "2001:db8::10",
        "icmp": "icmpv6",
    },
}

# (selector keys of the rule, lookup keys that match it, lookup keys that do not)
SELECTORS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "from": ({"from": "SRC"}, {"src": "SRC"}, {}),
    "to": ({"to": "DST"}, {}, {"dst": "OTHER"}),
    "iif": ({"iif": "eth1", "from": "FAR"}, {"iif": "eth1", "src": "FAR"}, {"iif": "eth0", "src": "FAR"}),
    "oif": ({"oif": "eth0"}, {"oif": "eth0"}, {}),
    "fwmark": ({"fwmark": "0x11"}, {"fwmark": 0x11}, {"fwmark": 0x12}),
    "fwmark/mask": ({"fwmark": "0x10/0xf0"}, {"fwmark": 0x1F}, {"fwmark": 0x2F}),
    "ipproto": ({"ipproto": "tcp"}, {"ipproto": "tcp"}, {"ipproto": "udp"}),
    "sport": ({"ipproto": "udp", "sport": 53}, {"ipproto": "udp", "sport": 53}, {"ipproto": "udp", "sport": 54}),
    "dport range": (
        {"ipproto": "tcp", "dport": "8000-8080"},
        {"ipproto": "tcp", "dport": 8080},
        {"ipproto": "tcp", "dport": 8081},
    ),
    "dscp": ({"dscp": 4}, {"dscp": 4}, {"dscp": 5}),
    # the raw DS field; a lookup's ECN bits are not compared
    "tos": ({"tos": "0x10"}, {"tos": 0x13}, {"tos": 0x0C}),
    # FRA_DSCP for IPv4 (Linux 6.13+), the TOS byte for IPv6
    "dscp 46": ({"dscp": 46}, {"dscp": 46}, {"dscp": 47}),
    "dscp/mask": ({"dscp": "0x28/0x38"}, {"dscp": 0x2D}, {"dscp": 0x18}),
    "sport/mask": (
        {"ipproto": "udp", "sport": "0x0f00/0xff00"},
        {"ipproto": "udp", "sport": 0x0F42},
        {"ipproto": "udp", "sport": 0x0E42},
    ),
    "uidrange": ({"uidrange": "1000-1999"}, {"uid": 1500}, {"uid": 2000}),
    "not": ({"not": True, "to": "DST"}, {"dst": "OTHER"}, {}),
}


def _lab(family: int, selector: dict[str, Any]) -> dict[str, Any]:
    f = FAMILIES[family]
    fam_routes = {4: ("198.51.100.0/24", "203.0.113.0/24"), 6: ("2001:db8:100::/64", "2001:db8:200::/64")}[family]
    rule = {k: _fill(v, family) for k, v in selector.items()}
    rule.update(priority=RULE_PRIO, table=100)
    if family == 6 and not any(k in rule for k in ("from", "to")):
        rule["family"] = 6
    far = {4: "10.9.0.0/24", 6: "fd09::/64"}[family]
    return {
        "name": "rsel",
        "nodes": {
            "r": {
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1},
                "links": {
                    "eth0": {"peer": "gw:eth0", "addresses": [f["addr"]]},
                    "eth1": {"peer": "far:eth0", "addresses": [{4: "10.9.0.1/24", 6: "fd09::1/64"}[family]]},
                },
                "routes": [
                    {"to": "default", "via": f["gw_main"]} if family == 4 else {"to": "::/0", "via": f["gw_main"]},
                    {"to": fam_routes[0], "via": f["gw_rule"], "table": 100},
                    {"to": fam_routes[1], "via": f["gw_rule"], "table": 100},
                ],
                "rules": [rule],
            },
            "gw": {"links": {"eth0": {"addresses": [f["peer"]]}}},
            "far": {"links": {"eth0": {"addresses": [far.replace(".0/24", ".2/24").replace("::/64", "::2/64")]}}},
        },
    }


def _fill(value: Any, family: int) -> Any:
    words = {
        4: {"SRC": "192.0.2.10", "DST": "198.51.100.7", "OTHER": "203.0.113.7", "FAR": "10.9.0.2"},
        6: {"SRC": "2001:db8::10", "DST": "2001:db8:100::7", "OTHER": "2001:db8:200::7", "FAR": "fd09::2"},
    }
    return words[family].get(value, value) if isinstance(value, str) else value


def _ask(lab: LabHandle, family: int, keys: dict[str, Any]) -> Any:
    keys = {k: _fill(v, family) for k, v in keys.items()}
    dst = keys.pop("dst", _fill("DST", family))
    if keys.get("ipproto") == "icmp":
        keys["ipproto"] = FAMILIES[family]["icmp"]
    return lab.route_get("r", dst, **keys)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("selector", list(SELECTORS))
def test_rule_selector_matches_and_misses(netlab_lab: LabFactory, selector: str, family: int) -> None:
    rule, hit, miss = SELECTORS[selector]
    lab = netlab_lab(_lab(family, rule), unique=True)
    shown = [r.text for r in lab.rules("r") if r.priority == RULE_PRIO]
    yes = _ask(lab, family, hit)
    assert yes.table == 100 and yes.via == FAMILIES[family]["gw_rule"], (shown, yes.text)
    assert yes.rule is not None and yes.rule.priority == RULE_PRIO, (shown, yes.text, yes.rule)
    no = _ask(lab, family, miss)
    assert no.table == 254 and no.via == FAMILIES[family]["gw_main"], (shown, no.text)
    assert no.rule is not None and no.rule.priority == 32766, (shown, no.text, no.rule)


@pytest.mark.parametrize("family", [4, 6])
def test_reject_actions_goto_nop_and_suppress(netlab_lab: LabFactory, family: int) -> None:
    f = FAMILIES[family]
    spec = _lab(family, {})
    spec["nodes"]["r"]["rules"] = [
        {"priority": 10, "fwmark": "0x1", "action": "blackhole", "family": family},
        {"priority": 11, "fwmark": "0x2", "action": "unreachable", "family": family},
        {"priority": 12, "fwmark": "0x3", "action": "prohibit", "family": family},
        {"priority": 20, "fwmark": "0x4", "action": "goto", "goto": 40, "family": family},
        {"priority": 30, "fwmark": "0x4", "action": "blackhole", "family": family},  # skipped by the goto
        {"priority": 40, "action": "nop", "family": family},
        {"priority": 50, "table": 100, "suppress_prefixlength": 0, "family": family},
        {"priority": 60, "fwmark": "0x4", "table": 100, "family": family},
    ]
    lab = netlab_lab(spec, unique=True)
    for mark, kind in ((1, "blackhole"), (2, "unreachable"), (3, "prohibit")):
        answer = lab.route_get("r", f["dst"], fwmark=mark)
        assert answer.errno is not None and answer.type in (kind, "none"), answer.text
    jumped = lab.route_get("r", f["dst"], fwmark=4)
    # goto 40 skips the blackhole at 30; 50's table-100 answer is a /24 (kept: only a
    # /0 is suppressed) — so rule 50 decides, not 60
    assert jumped.errno is None and jumped.table == 100 and jumped.rule is not None, jumped.text
    assert jumped.rule.priority == 50, jumped.rule.text
    plain = lab.route_get("r", {4: "8.8.8.8", 6: "2001:4860::8888"}[family])
    # table 100 has no default: 50's lookup finds nothing and main's default answers
    assert plain.table == 254 and plain.rule is not None and plain.rule.priority == 32766, plain.text


def test_route_check_reports_the_deciding_rule(netlab_lab: LabFactory) -> None:
    spec = _lab(4, {"from": "SRC"})
    spec["checks"] = [
        {
            "name": "from SRC uses rule 100",
            "route": {"on": "r", "get": "198.51.100.7", "from": "192.0.2.10"},
            "expect": {"rule": 100, "table": 100, "via": "192.0.2.2"},
        },
        {
            "name": "without a source: main",
            "route": {"on": "r", "get": "198.51.100.7"},
            "expect": {"rule": 32766, "table": "main"},
        },
        {"name": "wrong rule expected", "route": {"on": "r", "get": "198.51.100.7"}, "expect": {"rule": 100}},
    ]
    lab = netlab_lab(spec, unique=True)
    verdicts = {v.name: v for v in lab.run_checks()}
    assert verdicts["from SRC uses rule 100"].passed, verdicts["from SRC uses rule 100"]
    assert verdicts["without a source: main"].passed, verdicts["without a source: main"]
    wrong = verdicts["wrong rule expected"]
    assert not wrong.passed and any("lookup main" in r for r in wrong.reasons), wrong
