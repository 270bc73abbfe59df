"""How the kernel decides a lookup: the policy rules in priority order (following goto),
each selecting a flow by its selectors, the first lookup whose table has a route, and
the errnos a failed lookup is answered with. Used to tell which rule decided an answer
(or ended a failed lookup), since the kernel does not say."""

from __future__ import annotations

import errno as errnos
import ipaddress
import os
from collections.abc import Sequence

from netlab.observations import RouteAnswer, RouteQuery, RuleView, VrfMap
from netlab.vocabulary import DSCP_MASK, ECN_MASK, FLOWLABEL_MASK, IP_PROTOS

LEGACY_TOS_MASK = 0x1C  # the DS field bits an IPv4 `tos` rule compares (INET_DSCP_LEGACY_TOS_MASK)

# What RTM_GETROUTE's errno means: the kernel reports the route types that discard a
# packet (fib_props[].error) and the end of the rule list with these.
ERRNO_TYPES = {
    errnos.ENETUNREACH: "none",
    errnos.EHOSTUNREACH: "unreachable",
    errnos.EACCES: "prohibit",
    errnos.EINVAL: "blackhole",
}
REJECT_ERRNOS = {v: k for k, v in ERRNO_TYPES.items() if v != "none"}
# What a reject *rule* fails a lookup with (fib4_rule_action, fib6_rule_action): as the
# routes of the same name, except `unreachable`: ENETUNREACH, as if there were no route.
RULE_ERRNOS = {"unreachable": errnos.ENETUNREACH, "prohibit": errnos.EACCES, "blackhole": errnos.EINVAL}


def error_answer(
    q: RouteQuery, err: int, message: str, hint: str | None = None, rule: RuleView | None = None
) -> RouteAnswer:
    """The answer for a lookup the kernel failed with err (its message: strerror + extack);
    rule: the reject rule that ended the lookup, when that is certain."""
    type_ = ERRNO_TYPES.get(err, "none")
    why = {"none": "no route"}.get(type_, f"{type_} route") if err in ERRNO_TYPES else "the lookup failed"
    if rule is not None:
        type_, why = rule.action, f"the rule `{rule.text}`"
    if hint:
        why += f"; {hint}"
    return RouteAnswer(
        type=type_,
        table=None,
        dev=None,
        via=None,
        prefsrc=None,
        errno=err,
        error=message,
        text=f"error: {os.strerror(err)} ({why})",
        rule=rule,
    )


def l3mdev_table(q: RouteQuery, vrfs: VrfMap) -> int | None:
    """The table an l3mdev rule looks up for q, or None when it does not select q: the
    table of the VRF the lookup's device is in (l3mdev_update_flow) — for a received packet
    (iif) its input device, the output lookup's device (oif, or `vrf`) otherwise; a VRF
    device, or an interface enslaved to one. A locally sent packet without either is in no
    VRF."""
    dev = q.iif if q.iif is not None else (q.oif or q.vrf)
    found = vrfs.get(dev) if dev is not None else None
    return found[1] if found is not None else None


def rule_matches(rule: RuleView, q: RouteQuery, exotic: bool = False, vrfs: VrfMap | None = None) -> bool | None:
    """Does the rule select q's flow? None when it also has selectors this cannot tell
    (exotic: tun_id), or an l3mdev rule without the namespace's VRFs (vrfs)."""
    fam = ipaddress.ip_address(q.dst).version
    if rule.family != fam or not (
        _addresses_match(rule, q, fam) and _devices_match(rule, q) and _packet_fields_match(rule, q)
    ):
        return False
    if rule.l3mdev:
        if vrfs is None:
            return None
        if l3mdev_table(q, vrfs) is None:
            return False
    if rule.oif is not None and vrfs is not None and vrfs.get(rule.oif, ("", 0))[0] == rule.oif:
        # `oif VRF`: kernels since 5.17 clear a VRF output device from the flow before the
        # rules see it (l3mdev_update_flow), older ones put the VRF there: either may hold.
        return None
    return None if exotic else True


def _addresses_match(rule: RuleView, q: RouteQuery, fam: int) -> bool:
    if rule.src is not None:
        # A lookup without a source address matches `from` rules as source 0.0.0.0 / ::.
        src = q.src or ("0.0.0.0" if fam == 4 else "::")
        if ipaddress.ip_address(src) not in ipaddress.ip_network(rule.src):
            return False
    return rule.dst is None or ipaddress.ip_address(q.dst) in ipaddress.ip_network(rule.dst)


def _devices_match(rule: RuleView, q: RouteQuery) -> bool:
    # To the rules, a locally generated packet comes in from lo (flowi_iif = LOOPBACK_IFINDEX).
    if rule.iif is not None and rule.iif != (q.iif or "lo"):
        return False
    return rule.oif is None or rule.oif == (q.oif or q.vrf)


def _packet_fields_match(rule: RuleView, q: RouteQuery) -> bool:
    """fwmark, ipproto, ports, uid range, tos: the selectors on the packet and its socket."""
    if rule.fwmark is not None:
        mask = 0xFFFFFFFF if rule.fwmask is None else rule.fwmask
        if ((q.fwmark or 0) ^ rule.fwmark) & mask:
            return False
    if rule.ipproto is not None and rule.ipproto != (IP_PROTOS[q.ipproto] if q.ipproto else 0):
        return False
    for span, port_mask, port in ((rule.sport, rule.sport_mask, q.sport), (rule.dport, rule.dport_mask, q.dport)):
        if span is not None and not _port_fits(span, port_mask, port or 0):
            return False
    # A lookup without RTA_UID is made as uid 0 (the querying socket's owner is not used).
    if rule.uidrange is not None and not rule.uidrange[0] <= (q.uid or 0) <= rule.uidrange[1]:
        return False
    return _ds_and_flowlabel_match(rule, q)


def _ds_and_flowlabel_match(rule: RuleView, q: RouteQuery) -> bool:
    """The DS field (a TOS byte or FRA_DSCP, with its mask) and the IPv6 flow label."""
    if rule.flowlabel is not None:
        mask = FLOWLABEL_MASK if rule.flowlabel_mask is None else rule.flowlabel_mask
        if ((q.flowlabel or 0) ^ rule.flowlabel) & mask:
            return False
    if rule.dscp is not None:
        mask = DSCP_MASK if rule.dscp_mask is None else rule.dscp_mask
        return not (((q.tos or 0) >> 2) ^ rule.dscp) & mask
    # The TOS byte of a rule: IPv4 compares the old TOS bits of the packet's DSCP
    # (fib_dscp_masked_match), IPv6 the whole DSCP; neither the ECN bits.
    return not rule.tos or rule.tos == (q.tos or 0) & (LEGACY_TOS_MASK if rule.family == 4 else ~ECN_MASK & 0xFF)


def _port_fits(span: tuple[int, int], mask: int | None, port: int) -> bool:
    """A port selector: a range, or (with a mask, Linux 6.15+) the masked bits of one port."""
    return not (port ^ span[0]) & mask if mask is not None else span[0] <= port <= span[1]


def rule_selects(rule: RuleView, q: RouteQuery, exotic: bool = False, vrfs: VrfMap | None = None) -> bool | None:
    """rule_matches with `not` applied: does the kernel run this rule's action for q?"""
    match = rule_matches(rule, q, exotic, vrfs)
    return match if match is None or not rule.invert else not match


def deciding_rule(
    answer: RouteAnswer, q: RouteQuery, ruleset: Sequence[tuple[RuleView, bool]], vrfs: VrfMap | None = None
) -> RuleView | None:
    """The lookup rule that gave a successful answer: the kernel walks the rules in
    priority order (following goto) and stops at the first lookup whose table has a route
    that is not suppressed; the answer names that table (an l3mdev rule's table is the
    VRF's of q's device: the one the kernel adds at priority 1000 with the first VRF).
    Which rule it was is certain when every rule before it surely did or did not select
    q; else None."""
    if answer.errno is not None or answer.table is None:
        return None
    family = ipaddress.ip_address(q.dst).version
    ordered = sorted((r for r in ruleset if r[0].family == family), key=lambda r: r[0].priority)
    jump: int | None = None
    for rule, exotic in ordered:
        if jump is not None and rule.priority < jump:
            continue
        jump = None
        match = rule_selects(rule, q, exotic, vrfs)
        if match is False:
            continue
        if match is None:
            return None  # it may or may not have selected q: what came after is not certain
        table = l3mdev_table(q, vrfs) if rule.l3mdev and vrfs is not None else rule.table
        if rule.action == "goto":
            jump = rule.goto
        elif rule.action == "lookup" and table == answer.table:
            return rule
        elif rule.action in RULE_ERRNOS:
            return None  # a reject rule that selects q would have failed the lookup
    return None


def rule_cause(
    err: int, q: RouteQuery, ruleset: Sequence[tuple[RuleView, bool]], vrfs: VrfMap | None = None
) -> tuple[RuleView | None, str | None]:
    """Which reject rule may have ended a lookup that failed with err: (the rule, when
    certain; else None, and words naming the rules that may have). Certain only for an
    `unreachable` rule: it fails with ENETUNREACH, which no route type gives (an
    `unreachable` *route* gives EHOSTUNREACH), so it reads as "no route" otherwise."""
    maybe: list[RuleView] = []
    for rule, exotic in ruleset:
        if rule.action not in RULE_ERRNOS:
            continue  # a lookup rule: when its table has no route, the lookup goes on
        match = rule_selects(rule, q, exotic, vrfs)
        if match is False:
            continue
        if RULE_ERRNOS[rule.action] == err:
            if match and err == errnos.ENETUNREACH and not maybe:
                return rule, None
            maybe.append(rule)
        if match:
            break  # a reject rule that surely matches ends every lookup that gets to it
    return None, "; ".join(f"or the rule `{r.text}`" for r in maybe) or None
