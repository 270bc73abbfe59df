"""The netem qdisc in rtnetlink messages: `tc qdisc replace dev DEV root netem …` (a
SetNetem op), `tc qdisc del dev DEV root` (DeleteNetem), and a dumped qdisc read back
as the words `status` shows.

pyroute2's tcmsg and its netem options class give the wire format; its nla_map stops at
TCA_NETEM_RATE and leaves the delay distribution's table undecoded, so `NetemOptions`
adds the table as an array of 16-bit values, as the kernel reads it. The numbers are
iproute2's: times in psched ticks (64 ns each: PSCHED_SHIFT 6, what /proc/net/psched has
said since 2.6.x), probabilities scaled to the whole u32 range and rounded as tc rounds
them, so each message is byte for byte what tc 6.1 sends (tests/unit/test_encode.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg

from netlab.plan.ops import DeleteNetem, SetNetem

RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_GETQDISC = 38
TC_H_ROOT = 0xFFFFFFFF
TICKS_PER_US = 1000 / 64  # psched ticks of 64 ns
NETEM_DEFAULT_LIMIT = 1000  # packets: what tc asks for when no limit is given
U32_MAX = 2**32 - 1
# Where iproute2 keeps the delay distributions' tables (tc looks there, or in $TC_LIB_DIR).
DIST_DIRS = ("/usr/lib/x86_64-linux-gnu/tc", "/usr/lib/aarch64-linux-gnu/tc", "/usr/lib/tc", "/usr/lib64/tc")

Ifindex = Callable[[str], int]


class NetemOptions(sched_netem.options):  # type: ignore[misc]
    """struct tc_netem_qopt, then the netem attributes (pyroute2's, and the delay table)."""

    nla_map = (
        ("TCA_NETEM_UNSPEC", "none"),
        ("TCA_NETEM_CORR", "netem_corr"),
        ("TCA_NETEM_DELAY_DIST", "array(int16)"),
        ("TCA_NETEM_REORDER", "netem_reorder"),
        ("TCA_NETEM_CORRUPT", "netem_corrupt"),
        ("TCA_NETEM_LOSS", "none"),
        ("TCA_NETEM_RATE", "netem_rate"),
    )


class NetemMsg(tcmsg):  # type: ignore[misc]
    """A tcmsg whose options, for a netem qdisc, are NetemOptions."""

    @staticmethod
    def get_options(self: Any, *argv: Any, **kwarg: Any) -> Any:
        if self.get_attr("TCA_KIND") == "netem":
            return NetemOptions
        return tcmsg.get_options(self, *argv, **kwarg)


def _ticks(us: int) -> int:
    return int(us * TICKS_PER_US)


def _u32(pct: float) -> int:
    """A percentage as netem's probability: 100 % is 2^32 - 1 (tc rounds to nearest)."""
    return min(U32_MAX, round(pct / 100 * U32_MAX))


def _header(index: int) -> Any:
    msg = NetemMsg()
    msg["index"] = index
    msg["handle"] = 0
    msg["parent"] = TC_H_ROOT
    return msg


def set_netem(op: SetNetem, ifindex: Ifindex) -> Any:
    """`tc qdisc replace dev DEV root netem …` (RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE)."""
    attrs: list[list[Any]] = []
    if op.correlation:
        attrs.append(["TCA_NETEM_CORR", {"delay_corr": _u32(op.correlation), "loss_corr": 0, "dup_corr": 0}])
    if op.reorder:
        attrs.append(["TCA_NETEM_REORDER", {"prob_reorder": _u32(op.reorder), "corr_reorder": 0}])
    if op.corrupt:
        attrs.append(["TCA_NETEM_CORRUPT", {"prob_corrupt": _u32(op.corrupt), "corr_corrupt": 0}])
    if op.rate is not None:
        rate = {"rate": op.rate // 8, "packet_overhead": 0, "cell_size": 0, "cell_overhead": 0}
        attrs.append(["TCA_NETEM_RATE", rate])
    if op.distribution and op.distribution != "uniform":
        attrs.append(["TCA_NETEM_DELAY_DIST", distribution_table(op.distribution)])
    options = {
        "delay": _ticks(op.delay),
        "limit": op.limit if op.limit is not None else NETEM_DEFAULT_LIMIT,
        "loss": _u32(op.loss),
        "gap": 1 if op.reorder else 0,  # tc's: reordering sends every other packet at once
        "duplicate": _u32(op.duplicate),
        "jitter": _ticks(op.jitter),
        "attrs": attrs,
    }
    msg = _header(ifindex(op.dev))
    msg["attrs"] = [("TCA_KIND", "netem"), ("TCA_OPTIONS", options)]
    return msg


def delete_qdisc(op: DeleteNetem, ifindex: Ifindex) -> Any:
    """`tc qdisc del dev DEV root` (RTM_DELQDISC)."""
    return _header(ifindex(op.dev))


@lru_cache(maxsize=8)
def distribution_table(name: str) -> tuple[int, ...]:
    """iproute2's table for a delay distribution (NAME.dist: whitespace-separated 16-bit
    values, # comments), as tc reads it. LookupError when iproute2's tables are not here."""
    dirs = [os.environ["TC_LIB_DIR"]] if os.environ.get("TC_LIB_DIR") else list(DIST_DIRS)
    for d in dirs:
        path = Path(d) / f"{name}.dist"
        try:
            text = path.read_text(encoding="ascii")
        except OSError:
            continue
        values = [int(word) for line in text.splitlines() for word in line.split("#", 1)[0].split()]
        return tuple(values)
    raise LookupError(
        f"no table for the {name} distribution ({name}.dist in {' or '.join(dirs)}); "
        "iproute2 ships them (apt-get install iproute2)"
    )


# --------------------------------------------------------------------------- reading back


def netem_words(msg: Any) -> str | None:
    """A dumped qdisc (RTM_NEWQDISC, decoded as NetemMsg) as tc's words after `netem`
    (`delay 100ms loss 5%`), None when it is not a netem qdisc at the root."""
    if msg.get_attr("TCA_KIND") != "netem" or msg["parent"] != TC_H_ROOT:
        return None
    opts = msg.get_attr("TCA_OPTIONS")
    if opts is None:
        return ""
    corr = opts.get_attr("TCA_NETEM_CORR")
    reorder = opts.get_attr("TCA_NETEM_REORDER")
    corrupt = opts.get_attr("TCA_NETEM_CORRUPT")
    rate = opts.get_attr("TCA_NETEM_RATE")
    table = opts.get_attr("TCA_NETEM_DELAY_DIST")
    op = SetNetem(
        "",
        delay=round(opts["delay"] / TICKS_PER_US),
        jitter=round(opts["jitter"] / TICKS_PER_US),
        correlation=_pct(corr["delay_corr"]) if corr else 0.0,
        distribution="custom" if table else None,  # the kernel keeps the table, not its name
        loss=_pct(opts["loss"]),
        duplicate=_pct(opts["duplicate"]),
        corrupt=_pct(corrupt["prob_corrupt"]) if corrupt else 0.0,
        reorder=_pct(reorder["prob_reorder"]) if reorder else 0.0,
        rate=rate["rate"] * 8 if rate and rate["rate"] else None,  # the kernel dumps a rate of 0 too
        limit=opts["limit"] if opts["limit"] != NETEM_DEFAULT_LIMIT else None,
    )
    return " ".join(op.args())


def _pct(u32: int) -> float:
    return round(u32 / U32_MAX * 100, 4)
