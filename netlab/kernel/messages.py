"""pyroute2's route and rule message classes, extended with the attributes of newer
kernels that pyroute2 0.9 lacks — one definition each, for the encoder (encode.py) and the
readers (routes.py).

pyroute2 compiles a class's attribute table once, on its first instance, and marks it
compiled on the class: a subclass made after its parent was first used would inherit the
parent's table (and mark) and silently drop the attributes below. So each starts uncompiled.
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg


class RouteMsg(rtmsg):  # type: ignore[misc]
    """rtmsg with the flow attributes of a route query (RTA_PAD … RTA_FLOWLABEL, numbers
    24-31 in linux/rtnetlink.h; RTA_FLOWLABEL since Linux 6.15)."""

    __slots__ = ()
    _nlmsg_base__compiled_nla = False
    nla_map = (
        *rtmsg.nla_map,
        ("RTA_PAD", "hex"),
        ("RTA_UID", "uint32"),
        ("RTA_TTL_PROPAGATE", "uint8"),
        ("RTA_IP_PROTO", "uint8"),
        ("RTA_SPORT", "be16"),
        ("RTA_DPORT", "be16"),
        ("RTA_NH_ID", "uint32"),
        ("RTA_FLOWLABEL", "be32"),
    )


class RuleMsg(fibmsg):  # type: ignore[misc]
    """fibmsg with the selectors of Linux 6.13-6.15 (linux/fib_rules.h): FRA_DSCP (the
    full 6-bit DSCP, also for IPv4), the IPv6 flow label and its mask, port masks and the
    DSCP mask. An older kernel ignores attributes it does not know (and makes the rule
    without them): netlab.kernel.features probes for each before a lab may use it."""

    __slots__ = ()
    _nlmsg_base__compiled_nla = False
    nla_map = (
        *fibmsg.nla_map,
        (25, "FRA_DSCP", "uint8"),
        (26, "FRA_FLOWLABEL", "be32"),
        (27, "FRA_FLOWLABEL_MASK", "be32"),
        (28, "FRA_SPORT_MASK", "uint16"),
        (29, "FRA_DPORT_MASK", "uint16"),
        (30, "FRA_DSCP_MASK", "uint8"),
    )


def decode_rule(data: bytes) -> Any:
    """One RTM_NEWRULE message's bytes → its decoded RuleMsg."""
    msg = RuleMsg(data)
    msg.decode()
    return msg
