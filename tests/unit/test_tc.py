"""A netem qdisc read back (what `status` shows): a dumped message decoded into tc's
words, including the parts the kernel always dumps (a rate, reorder and corruption of
0, the 64-bit times pyroute2's map does not name)."""

from __future__ import annotations

import struct

import pytest

from netlab.kernel import tc
from netlab.kernel.netlink import _qdisc
from netlab.plan.ops import SetNetem

TCA_NETEM_LATENCY64 = 10


def dumped(op: SetNetem, *, kernel_extras: bool = True, parent: int = tc.TC_H_ROOT) -> bytes:
    """The message the kernel would dump for op's qdisc: as it was sent, plus what
    netem_dump always adds."""
    msg = tc.set_netem(op, lambda _name: 3)
    msg["parent"] = parent
    if kernel_extras:
        options = dict(msg.get_attr("TCA_OPTIONS"))
        attrs = list(options["attrs"])
        names = {name for name, _ in attrs}
        for name, zero in (
            ("TCA_NETEM_CORR", {"delay_corr": 0, "loss_corr": 0, "dup_corr": 0}),
            ("TCA_NETEM_REORDER", {"prob_reorder": 0, "corr_reorder": 0}),
            ("TCA_NETEM_CORRUPT", {"prob_corrupt": 0, "corr_corrupt": 0}),
            ("TCA_NETEM_RATE", {"rate": 0, "packet_overhead": 0, "cell_size": 0, "cell_overhead": 0}),
        ):
            if name not in names:
                attrs.append([name, zero])
        msg["attrs"] = [("TCA_KIND", "netem"), ("TCA_OPTIONS", {**options, "attrs": attrs})]
    msg["header"]["type"] = tc.RTM_NEWQDISC
    msg.encode()
    data = bytes(msg.data)
    if kernel_extras:  # a TCA_NETEM_LATENCY64 (s64 ns) inside TCA_OPTIONS, unknown to the map
        extra = struct.pack("=HHq", 12, TCA_NETEM_LATENCY64, op.delay * 1000)
        data = _grow_options(data, extra)
    return data


def _grow_options(data: bytes, extra: bytes) -> bytes:
    """Append an attribute at the end of TCA_OPTIONS (the message's last attribute)."""
    head = bytearray(data[:16])
    body = data[16:]
    pos = 20  # after struct tcmsg
    while pos < len(body):
        alen, atype = struct.unpack_from("=HH", body, pos)
        if atype == 2:  # TCA_OPTIONS
            new = struct.pack("=HH", alen + len(extra), 2) + body[pos + 4 : pos + alen] + extra
            body = body[:pos] + new + body[pos + ((alen + 3) & ~3) :]
            break
        pos += (alen + 3) & ~3
    struct.pack_into("=I", head, 0, 16 + len(body))
    return bytes(head) + body


@pytest.mark.parametrize(
    "op",
    [
        SetNetem("x", dev="eth0", delay=100_000, loss=5),
        SetNetem("x", dev="eth0", delay=20_000, jitter=5000, correlation=25, loss=0.5, duplicate=1),
        SetNetem("x", dev="eth0", delay=5000, corrupt=0.1, reorder=25),
        SetNetem("x", dev="eth0", rate=10_000_000, limit=200),
    ],
    ids=lambda op: " ".join(op.args()),
)
def test_a_dumped_netem_reads_as_it_was_set(op: SetNetem) -> None:
    assert tc.netem_words(_qdisc(dumped(op))) == " ".join(op.args())


def test_only_a_root_netem_counts() -> None:
    op = SetNetem("x", dev="eth0", delay=1000)
    assert tc.netem_words(_qdisc(dumped(op, parent=0x10001))) is None
    other = tc.NetemMsg()
    other["attrs"] = [("TCA_KIND", "noqueue")]
    other["parent"] = tc.TC_H_ROOT
    other.encode()
    assert tc.netem_words(_qdisc(bytes(other.data))) is None
