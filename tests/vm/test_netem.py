"""netem under a kernel that has it (the VM): a link end's `netem:` is the qdisc tc
makes for the plan's own `tc` line, `netlab impair` changes it at run time (and `status`
shows it), and labs/flannel-vxlan.yaml's lossy-underlay variant passes its checks, which
state the impaired overlay in numbers (round trips, loss)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from netlab.lab.source import parse_yaml
from netlab.load import load_lab_data
from netlab.plan.build import build_plan
from netlab.pytest_plugin import LabFactory, lab_checks, unique_name

REPO = Path(__file__).resolve().parents[2]
GOLDEN = "tests/golden/good/netem.yaml"

test_lossy_underlay = lab_checks("labs/flannel-vxlan.yaml", unique=True, variant="lossy-underlay")


def _netem(ns: str) -> dict[str, Any]:
    """Each device's root netem qdisc, as `tc -j qdisc show` has it (its handle left out)."""
    shown = json.loads(
        subprocess.run(["tc", "-n", ns, "-j", "qdisc", "show"], capture_output=True, text=True, check=True).stdout
    )
    return {q["dev"]: q["options"] for q in shown if q["kind"] == "netem" and q.get("root")}


def _shown(ns: str, dev: str) -> str:
    return subprocess.run(
        ["tc", "-n", ns, "qdisc", "show", "dev", dev], capture_output=True, text=True, check=True
    ).stdout


def test_the_lab_files_netem_is_the_qdisc_tc_makes(netlab_lab: LabFactory) -> None:
    """tests/golden/good/netem.yaml built by netlab, and the same lab under another name
    built by running its plan's lines in a shell (`tc … netem …` for the qdiscs): every
    impairment the same, as tc reads them back."""
    built = netlab_lab(GOLDEN, unique=True)
    data = parse_yaml((REPO / GOLDEN).read_text(), GOLDEN)[0]
    data["name"] = unique_name("netem-tc")
    plan = build_plan(load_lab_data(data))
    try:
        done = subprocess.run(["bash", "-c", "set -e\n" + plan.render()], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        for node in ("client", "router"):
            assert _netem(built.ns(node)) == _netem(f"{data['name']}.{node}"), node
        client = _netem(built.ns("client"))
        assert set(client) == {"eth0", "lo"}, client
        shown = " ".join(_shown(built.ns("client"), "eth0").split())  # tc's text, spaces squeezed
        assert "delay 100ms 10ms 25%" in shown and "loss 5%" in shown, shown
        shown = " ".join(_shown(built.ns("router"), "br0").split())
        assert "limit 200" in shown and "rate 10Mbit" in shown, shown
        shown = " ".join(_shown(built.ns("router"), "c0").split())
        assert "reorder 25%" in shown and "corrupt 0.1%" in shown and "gap 1" in shown, shown
    finally:
        for ns in plan.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"{data['name']}.")]


def _netlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def test_impair_at_run_time_and_clear(netlab_lab: LabFactory) -> None:
    """`netlab impair` puts netem on a running lab's link end (status shows it in tc's
    words; the probes' round trips grow by the delay); `--clear` takes it off again."""
    lab = netlab_lab(
        {
            "name": "impair",
            "nodes": {
                "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.9.0.1/24"]}}},
                "b": {"links": {"eth0": {"addresses": ["10.9.0.2/24"]}}},
            },
        },
        unique=True,
    )
    r = _netlab("impair", lab.name, "a:eth0", "--delay", "100ms", "--loss", "0.5%", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["before"]["netem"], doc["after"]["netem"]) == (None, "delay 100ms loss 0.5%"), doc
    [status] = json.loads(_netlab("status", lab.name, "--json").stdout)["labs"]
    [eth0] = [x for x in status["nodes"]["a"]["links"] if x["name"] == "eth0"]
    assert eth0["netem"] == "delay 100ms loss 0.5%"
    assert "delay 100ms loss 0.5%" in _netlab("status", lab.name).stdout  # its netem column
    slow = [p for p in lab.probe("a", "b", count=3) if p.ok]
    assert slow and all(p.rtt_ms is not None and p.rtt_ms >= 100 for p in slow), [p.detail for p in slow]

    r = _netlab("impair", lab.name, "a:eth0", "--clear")
    assert r.returncode == 0 and r.stdout.strip().endswith("no impairment (before: netem delay 100ms loss 0.5%)"), r
    fast = lab.probe("a", "b")
    assert fast.ok and fast.rtt_ms is not None and fast.rtt_ms < 100, fast.detail
