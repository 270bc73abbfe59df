"""`netlab check --pcap` in the check runner, rootless: with keep_frames every probe check
captures — on its `capture:` interface, else where the client's route sends the probe —
and the run keeps each check's frames; without it nothing extra is captured. (Files read
back by tcpdump: tests/kernel/test_capture_cli.py.)"""

from __future__ import annotations

from netlab.kernel.fake_observer import FakeObserver, FakeRoute
from netlab.probes.checks import run_checks
from tests.unit.test_check_runner import Sender, context, lab_with, spaces

CHECKS = """
  - name: web-a reaches web-c
    probe: {from: web-a, to: web-c, port: 8080}
  - name: and node3 sees it
    probe: {from: web-a, to: web-c, port: 8080}
    capture: {on: "node3:eth0", expect: {dst: web-c}}
"""


def test_keep_frames_captures_every_probe_check_where_the_client_sends() -> None:
    lab = lab_with(CHECKS)
    fake = FakeObserver(spaces(lab))
    fake.namespaces["hg.web-a"].routes = [FakeRoute("default", dev="eth0", via="10.244.0.1")]
    ctx = context(lab, fake, Sender("timeout"))
    ctx.keep_frames = True
    verdicts = run_checks(ctx, workers=1)
    assert [v.passed for v in verdicts] == [False, False]
    captures = sorted(c for c in fake.calls if c[0] == "capture")
    assert captures == [("capture", "hg.node3", "eth0"), ("capture", "hg.web-a", "eth0")]
    assert sorted(ctx.frames) == ["and node3 sees it", "web-a reaches web-c"]


def test_without_keep_frames_only_capture_checks_capture() -> None:
    lab = lab_with(CHECKS)
    fake = FakeObserver(spaces(lab))
    ctx = context(lab, fake, Sender("timeout"))
    run_checks(ctx, workers=1)
    assert [c for c in fake.calls if c[0] == "capture"] == [("capture", "hg.node3", "eth0")]
    assert ctx.frames == {}
