"""Ops that take away what a plan op made: what reconcile (netlab/reconcile) needs to change
a running lab in place, and to put it back when that fails.

`Remove(op)` deletes the kernel object `op` made, with the message that made it sent as
its delete (RTM_DEL*, IPSET_CMD_DESTROY, IPVS_CMD_DEL_*): the kernel finds the object by
the same attributes. It means "make sure it is gone": a driver takes "no such object"
for success, because deleting a link or a namespace, or the last IPv4 address of a link,
takes other objects with it. `FlushFirewall` empties a namespace's nftables ruleset
(iptables-nft's tables with it) before its firewall is loaded again from the top.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from netlab.plan.ops import (
    AddAddress,
    AddFdb,
    AddIpvsReal,
    AddIpvsService,
    AddNeighbor,
    AddRoute,
    AddRule,
    CreateIpset,
    CreateLink,
    LoadNftables,
    Op,
)
from netlab.vocabulary import host_port

# What a kernel answers a delete of something that is not there: it went with its link or
# namespace (or, for IPv4 routes, its address). Taking away means "make sure it is gone".
GONE_ALREADY = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENODEV})

# The op kinds Remove can take away; any other kind changes by rebuilding what holds it.
REMOVABLE: tuple[type[Op], ...] = (
    CreateLink,
    AddAddress,
    AddNeighbor,
    AddFdb,
    AddRoute,
    AddRule,
    CreateIpset,
    AddIpvsService,
    AddIpvsReal,
)


@dataclass(frozen=True)
class Remove(Op):
    """Delete what `op` made, found by the same attributes (`ip … del`)."""

    op: Op = field(kw_only=True)

    def render(self) -> str:
        op, ns = self.op, self.ns
        if isinstance(op, CreateLink):
            return f"ip -n {ns} link del {op.name}"
        if isinstance(op, AddAddress):
            return f"ip -n {ns} addr del {op.address} dev {op.dev}"
        if isinstance(op, AddNeighbor):
            fam = " -6" if ":" in op.to else ""
            return f"ip{fam} -n {ns} neigh del {op.to} dev {op.dev}"
        if isinstance(op, AddFdb):
            dst = f" dst {op.dst}" if op.dst else ""
            return f"bridge -n {ns} fdb del {op.lladdr} dev {op.dev}{dst} {'master' if op.master else 'self'}"
        if isinstance(op, (AddRoute, AddRule)):
            word = "route" if isinstance(op, AddRoute) else "rule"
            return op.render().replace(f" {word} add", f" {word} del", 1)
        if isinstance(op, CreateIpset):
            return f"ip netns exec {ns} ipset destroy {op.name}"
        if isinstance(op, AddIpvsService):
            return f"ip netns exec {ns} ipvsadm -D {op.service_args()}"
        if isinstance(op, AddIpvsReal):
            real = host_port(op.real, op.real_port, no_port="address")
            return f"ip netns exec {ns} ipvsadm -d {op.service_args()} -r {real}"
        raise TypeError(f"netlab cannot remove a {type(op).__name__} in place")


@dataclass(frozen=True)
class FlushFirewall(LoadNftables):
    """`nft flush ruleset` in the namespace: every table, iptables-nft's too."""

    text: str = "flush ruleset"

    def render(self) -> str:
        return f"ip netns exec {self.ns} nft flush ruleset"

    def brief(self) -> str:
        return self.render()


def removable(op: Op) -> bool:
    return isinstance(op, REMOVABLE)
