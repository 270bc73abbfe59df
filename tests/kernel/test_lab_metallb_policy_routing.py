"""labs/metallb-policy-routing.yaml (scenario S0) on the real kernel: the lab's own checks
for the broken base and every variant, and the kernel evidence behind the article's
point and behind the DNAT caveat of fix B."""

from __future__ import annotations

from netlab.pytest_plugin import LabFactory, lab_checks

LAB = "labs/metallb-policy-routing.yaml"

test_broken = lab_checks(LAB, unique=True)
test_fix_a = lab_checks(LAB, variant="fix-a", unique=True)
test_fix_b = lab_checks(LAB, variant="fix-b", unique=True)
test_fix_b_ct = lab_checks(LAB, variant="fix-b-ct", unique=True)
test_egress = lab_checks(LAB, variant="egress", unique=True)
test_egress_fw = lab_checks(LAB, variant="egress-fw", unique=True)


def test_fix_b_reply_leaves_towards_vrf1_with_the_lb_ip(netlab_lab: LabFactory) -> None:
    """Fix B as the article writes it: the connection never completes and the node's
    counters show the SYN-ACKs leaving by eth1 (VRF1), already rewritten to 3.3.3.3."""
    lab = netlab_lab(LAB, variant="fix-b", unique=True)
    r = lab.probe("client", "3.3.3.3", port=22, timeout=0.5)
    assert r.outcome == "timeout", r.detail
    entries = lab.conntrack("node", r)
    assert entries, lab.exec("node", "conntrack", "-L").stdout
    entry = entries[0]
    assert entry.state == "SYN_RECV" and entry.reply.src == "192.168.1.1", entry.text  # no reply came back
    rules = lab.exec("node", "ip", "rule", "show", check=True).stdout
    assert "from 3.3.3.3 lookup vrf2" in rules or "from 3.3.3.3 lookup 102" in rules, rules


def test_fix_b_ct_marks_only_the_lb_connections_replies(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(LAB, variant="fix-b-ct", unique=True)
    r = lab.probe("client", "3.3.3.3", port=22)
    assert r.ok and r.served_by == "ssh", r.detail
    entry = lab.conntrack("node", r)[0]
    assert entry.dnat and entry.orig.dst == "3.3.3.3" and entry.reply.src == "192.168.1.1", entry.text
    # the pod's own egress is not a reply of a connection to 3.3.3.3: main, VRF1
    egress = lab.probe("ssh", "client", port=22, timeout=0.5)
    assert not egress.ok, egress.detail
