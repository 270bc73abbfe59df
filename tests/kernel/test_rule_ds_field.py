"""The selectors of newer kernels on the real one (root): an IPv6 rule's flow label, route
checks asking `tos`/`flowlabel`, and the kernel's own refusals that netlab reproduces at
load time (so a lab shows "dsfield with ECN bits is rejected" without building anything)."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.errors import LabError
from netlab.kernel import encode, netns
from netlab.kernel.nlsock import NetlinkSocket
from netlab.load import load_lab_text
from netlab.plan.ops import AddRule
from netlab.pytest_plugin import LabFactory
from tests.kernel.test_rule_selectors import _lab


def _spec(rule: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    spec = _lab(6, rule)
    spec["checks"] = checks
    return spec


def test_flowlabel_rule_and_route_checks(netlab_lab: LabFactory) -> None:
    checks = [
        {
            "name": "the flow label selects table 100",
            "route": {"on": "r", "get": "2001:db8:100::7", "flowlabel": "0x12345"},
            "expect": {"rule": 100, "table": 100, "via": "2001:db8::2"},
        },
        {
            "name": "another label: main",
            "route": {"on": "r", "get": "2001:db8:100::7", "flowlabel": 0x22345},
            "expect": {"rule": 32766, "table": "main"},
        },
        {
            "name": "a raw tos with ECN bits is a fine lookup",
            "route": {"on": "r", "get": "2001:db8:100::7", "tos": "0xbb"},
            "expect": {"table": "main"},
        },
    ]
    lab = netlab_lab(_spec({"flowlabel": "0x12345/0xfffff"}, checks), unique=True)
    [shown] = [r.text for r in lab.rules("r") if r.priority == 100]
    assert "flowlabel 0x12345/0xfffff lookup 100" in shown, shown
    verdicts = {v.name: v for v in lab.run_checks()}
    bad = {n: v.reasons for n, v in verdicts.items() if not v.passed}
    assert not bad, bad


def _kernel_says(op: AddRule) -> str:
    def add() -> str:
        netns.unshare_here()  # a namespace of this thread's own, gone with it
        sock = NetlinkSocket()
        try:
            failures = sock.request([encode.request(op, lambda _n: 0, lambda _n: -1)])
        finally:
            sock.close()
        return failures[0].message if failures else "accepted"

    return netns.in_thread(add)


@pytest.mark.parametrize(
    ("selector", "kernel", "words"),
    [
        ({"tos": 1}, {"tos": 1}, "Invalid dsfield (tos): ECN bits must be 0"),
        ({"tos": 0xB8}, {"tos": 0xB8}, "Invalid tos"),
        ({"dscp": "0x2f/0x38"}, {"dscp": 0x2F, "dscp_mask": 0x38}, "Invalid DSCP mask"),
        (
            {"ipproto": "udp", "sport": "0x0f01/0xff00"},
            {"ipproto": 17, "sport": (0xF01, 0xF01), "sport_mask": 0xFF00},
            "Invalid port mask",
        ),
    ],
)
def test_load_refuses_what_the_kernel_refuses(selector: dict[str, Any], kernel: dict[str, Any], words: str) -> None:
    said = _kernel_says(AddRule("x", priority=100, table=100, **kernel))
    assert said.endswith(words), said
    text = f"name: t\nnodes:\n  r:\n    rules:\n      - {{priority: 100, table: 100, {', '.join(f'{k}: {v!r}' for k, v in selector.items())}}}\n"
    with pytest.raises(LabError) as err:
        load_lab_text(text)
    assert f"'{words}'" in str(err.value), str(err.value)
