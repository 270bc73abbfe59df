"""Impairments and link flaps on this host's kernel, which has no sch_netem: a lab with
`netem:` (and `netlab impair`) is refused with the VM hint, nothing changed; `netlab link
… down|up` flaps a veth, and probes' loss and round trips show it (the netem qdisc
itself is tested in tests/vm/test_netem.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from netlab.deadline import Deadline
from netlab.json_output import schema
from netlab.kernel.features import probe_features
from tests.kernel.conftest import LabFactory


def test_a_lab_with_netem_needs_netem_without_saying_so(netlab_cli: Any, lab_file: Any) -> None:
    """A link end's `netem:` needs sch_netem whether or not `requires:` lists it: exit 3
    before anything exists, saying how to get a kernel that has it."""
    if probe_features(["netem"])[0].ok:
        pytest.skip("this kernel has netem (the VM?); the test needs one without it")
    lab = lab_file("""\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.1.0.1/24], netem: {delay: 50ms, loss: 5%}}
  b:
    links:
      eth0: {addresses: [10.1.0.2/24]}
""")
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err and "  netem: " in r.err, r.err
    assert "qdisc kind 'netem' unknown to this kernel (no sch_netem)" in r.err
    assert "netlab vm run" in r.err, r.err
    assert not list(Path("/run/netns").glob(f"{lab.name}.*"))


# ---------------------------------------------------------------- flapping a link, probes' loss and RTT

FLAP = """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.1.0.1/24]}
  b:
    links:
      eth0: {addresses: [10.1.0.2/24]}
    routes:
      - {to: 10.9.0.0/24, via: 10.1.0.1}
checks:
  - name: a pings b, none lost
    probe: {from: a, to: b, count: 6, timeout: 0.5}
    expect: {rtt_ms: {max: 2000}, loss: {max: 0}}
"""


@pytest.fixture(scope="module")
def flap_lab(netlab_cli: Any, registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One small lab for the module's tests (each leaves its link up again)."""
    factory = LabFactory(registry, tmp_path_factory.mktemp("impair"))
    lab = factory(FLAP)
    try:
        r = netlab_cli("up", lab)
        assert r.rc == 0, r.err
        yield lab
    finally:
        factory.cleanup()


def _check(netlab_cli: Any, lab: Any) -> tuple[int, dict[str, Any]]:
    r = netlab_cli("check", lab.name, "--json")
    doc = json.loads(r.out)
    Draft202012Validator(schema("check")).validate(doc)
    return r.rc, doc["checks"][0]


def _neigh(lab: Any, node: str) -> str:
    return subprocess.run(["ip", "-n", lab.ns(node), "neigh"], capture_output=True, text=True, check=True).stdout


def test_a_flapped_link_loses_every_probe_and_comes_back(netlab_cli: Any, flap_lab: Any) -> None:
    """`link b:eth0 down`: a's probes get no answer (loss 100 %, no round trip; a's end has
    no carrier); `link … up`: none lost again, each round trip timed."""
    rc, verdict = _check(netlab_cli, flap_lab)
    assert rc == 0, verdict
    rt = verdict["round_trips"]
    assert (rt["sent"], rt["lost"], rt["loss"]) == (6, 0, 0.0)
    assert 0 < rt["rtt_ms"]["min"] <= rt["rtt_ms"]["avg"] <= rt["rtt_ms"]["max"]
    assert "; rtt min/avg/max " in verdict["summary"] and verdict["summary"].endswith(", loss 0%")

    down = netlab_cli("link", flap_lab.name, "b:eth0", "down", "--json")
    try:
        assert down.rc == 0, down.err
        doc = json.loads(down.out)
        Draft202012Validator(schema("link")).validate(doc)
        assert (doc["before"]["up"], doc["after"]["up"], doc["changed"]) == (True, False, True)
        # a's end loses its carrier (the kernel tells it a moment later: linkwatch)
        deadline = Deadline(3, "a:eth0 to lose its carrier")
        while (a_end := _link(netlab_cli, flap_lab, "a", "eth0"))["oper"] == "up" and not deadline.expired():
            time.sleep(0.1)
        assert a_end["up"] and a_end["oper"] != "up", deadline.message()
        rc, verdict = _check(netlab_cli, flap_lab)
        assert rc == 1
        assert verdict["round_trips"] == {"sent": 6, "lost": 6, "loss": 100.0, "rtt_ms": None}
        assert verdict["reasons"] == [
            "expected round trips of at most 2000 ms, but no probe succeeded (6 of 6 got no answer)",
            "expected a loss of at most 0%, saw 100% (6 of 6 probes got no answer)",
        ]
    finally:
        up = netlab_cli("link", flap_lab.name, "b:eth0", "up")
    # the kernel dropped b's route via a when eth0 went down; `up` put it back
    assert up.rc == 0 and up.out.strip() == f"b:eth0 of lab {flap_lab.name}: up; 1 route of the lab file put back", (
        up.out + up.err
    )
    routes = subprocess.run(["ip", "-n", flap_lab.ns("b"), "route"], capture_output=True, text=True, check=True)
    assert "10.9.0.0/24 via 10.1.0.1 dev eth0" in routes.stdout, routes.stdout
    # a's probes while b was down left its ARP entry INCOMPLETE: packets queue for its next
    # retransmit (each second), and when its last one goes unanswered they get a host
    # unreachable. Once the kernel has given up on it, a new packet asks at once.
    deadline = Deadline(5, "a's ARP entry for b to stop being INCOMPLETE")
    while "INCOMPLETE" in (neigh := _neigh(flap_lab, "a")) and not deadline.expired():
        time.sleep(0.1)
    assert "INCOMPLETE" not in neigh, deadline.message()
    rc, verdict = _check(netlab_cli, flap_lab)
    assert rc == 0 and verdict["round_trips"]["lost"] == 0, verdict


def _link(netlab_cli: Any, lab: Any, node: str, ifname: str) -> dict[str, Any]:
    r = netlab_cli("status", lab.name, "--json")
    [status] = json.loads(r.out)["labs"]
    [link] = [x for x in status["nodes"][node]["links"] if x["name"] == ifname]
    return link  # type: ignore[no-any-return]


def test_impair_without_netem_says_how_and_changes_nothing(netlab_cli: Any, flap_lab: Any) -> None:
    if probe_features(["netem"])[0].ok:
        pytest.skip("this kernel has netem (the VM?); tests/vm/test_netem.py impairs for real")
    r = netlab_cli("impair", flap_lab.name, "a:eth0", "--delay", "50ms", "--loss", "5%")
    assert r.rc == 3, r.out + r.err
    assert "this kernel lacks netem" in r.err and "netlab vm run" in r.err
    assert _link(netlab_cli, flap_lab, "a", "eth0")["netem"] is None


def test_clearing_a_link_without_impairment_is_no_error(netlab_cli: Any, flap_lab: Any) -> None:
    r = netlab_cli("impair", flap_lab.name, "a:eth0", "--clear", "--json")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    Draft202012Validator(schema("impair")).validate(doc)
    assert (doc["before"]["netem"], doc["after"]["netem"], doc["changed"]) == (None, None, False)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["a:eth9", "--clear"], "node a of lab {lab} has no interface 'eth9' (its interfaces: lo, eth0)"),
        (["c:eth0", "--clear"], "lab {lab} has no node 'c' (nodes: a, b)"),
        (["a-eth0", "--clear"], "'a-eth0' is not NODE:IF (e.g. node1:eth0)"),
        (["a:eth0", "--jitter", "5ms"], "--jitter needs --delay (jitter varies the delay)"),
        (["a:eth0", "--loss", "150%"], "--loss: '150%' is more than 100%"),
        (["a:eth0", "--clear", "--loss", "5%"], "give impairments (--delay, --loss, …) or --clear, not both"),
    ],
)
def test_impair_bad_use_is_exit_2_with_the_reason(netlab_cli: Any, flap_lab: Any, args: list[str], words: str) -> None:
    r = netlab_cli("impair", flap_lab.name, *args)
    assert r.rc == 2, r.out + r.err
    assert words.format(lab=flap_lab.name) in r.err


def test_link_of_a_lab_that_is_not_up(netlab_cli: Any, lab_file: Any) -> None:
    name = lab_file.new_name()
    r = netlab_cli("link", name, "a:eth0", "down")
    assert r.rc == 2 and f"lab {name} is not up" in r.err, r.out + r.err


def test_the_mean_round_trip_is_judged_by_avg(netlab_cli: Any, lab_file: Any) -> None:
    """`rtt_ms: {avg: …}` bounds the mean of real pings: a bound the kernel's veth round
    trips (well under a second) meet passes, one they cannot fails saying the mean."""
    lab = lab_file(
        FLAP.split("checks:")[0]
        + """\
checks:
  - name: no added delay
    probe: {from: a, to: b, count: 5}
    expect: {rtt_ms: {avg: {max: 1000}}, loss: {max: 0}}
  - name: a second per round trip on average
    probe: {from: a, to: b, count: 5}
    expect: {rtt_ms: {avg: {min: 1000}}}
"""
    )
    r = netlab_cli("check", "--up", lab, "--json")
    doc = json.loads(r.out)
    Draft202012Validator(schema("check")).validate(doc)
    fast, slow = doc["checks"]
    assert r.rc == 1 and fast["passed"] and not slow["passed"], r.out + r.err
    mean = slow["round_trips"]["rtt_ms"]["avg"]
    assert 0 < mean < 1000, slow
    (reason,) = slow["reasons"]
    assert reason.startswith(f"expected round trips of a mean of at least 1000 ms, the mean was {mean:g} ms"), reason
    assert not list(Path("/run/netns").glob(f"{lab.name}.*"))
