"""Real-kernel checks of netlab.kernel.features (root only; probes run in a private netns)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from netlab.kernel import features
from netlab.kernel.features import FEATURES, probe_features

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.skip("needs root: probes unshare a network namespace", allow_module_level=True)

# Present on every kernel netlab supports, including this monolithic test kernel.
ALWAYS = {"netns", "veth", "bridge", "vxlan", "nftables", "conntrack", "ipset"}
# Kernel-dependent: the VM / Debian stock kernels have them, this test kernel does not
# (it is built without CONFIG_IP_VS, CONFIG_NET_VRF, CONFIG_NET_SCH_NETEM, CONFIG_DUMMY).
VARIABLE = {"ipvs": "IPVS", "vrf": "vrf", "netem": "netem", "dummy": "dummy", "drop_reasons": "trac"}


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    # "3: name@peer: <...>" -> name; ifindex/state churn is not what we care about
    return {line.split(":", 2)[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def test_results_on_this_kernel() -> None:
    results = probe_features()
    assert [r.name for r in results] == list(FEATURES)
    by_name = {r.name: r for r in results}
    for name in ALWAYS:
        r = by_name[name]
        assert r.ok, f"{name}: {r.detail} / {r.hint}"
        assert r.hint == ""
    for name, mention in VARIABLE.items():
        r = by_name[name]
        assert isinstance(r.ok, bool)
        if r.ok:
            assert r.hint == ""
        else:
            assert r.hint, name
            assert mention in r.detail, r.detail
            assert "\n" not in r.hint


def test_leaves_nothing_in_root_namespace() -> None:
    own_ns = os.stat("/proc/self/ns/net").st_ino
    netns_before, links_before = _netns_list(), _root_links()
    probe_features()
    assert os.stat("/proc/self/ns/net").st_ino == own_ns
    assert _netns_list() == netns_before
    assert _root_links() == links_before
    assert not any(n.startswith(features.PROBE_PREFIX) for n in _root_links())
    with open("/proc/self/mounts") as mounts:
        # ours only: another tool (perf) may have mounted the machine's own at /sys/kernel/tracing
        assert "netlab-tracefs" not in mounts.read(), (
            "drop_reasons' tracefs is mounted only in a private mount namespace"
        )


def test_subset_aliases_and_order() -> None:
    results = probe_features(["sch_netem", "ip_vs", "veth", "nf_tables", "veth"])
    assert [r.name for r in results] == ["veth", "ipvs", "nftables", "netem"]
    assert results[0].ok and results[2].ok


def test_hung_probe_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang() -> tuple[bool, str, str]:
        time.sleep(60)
        return True, "", "kernel"

    # The fork copies the patched table into the child.
    monkeypatch.setitem(features._PROBES, "bridge", hang)
    start = time.monotonic()
    results = {r.name: r for r in probe_features(["netns", "veth", "bridge", "vxlan"], timeout=1)}
    assert time.monotonic() - start < 5
    assert results["netns"].ok and results["veth"].ok
    for name in ("bridge", "vxlan"):
        assert not results[name].ok
        assert "no answer" in results[name].detail
        assert results[name].hint


def test_crashed_child_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def die() -> tuple[bool, str, str]:
        os._exit(7)

    monkeypatch.setitem(features._PROBES, "ipset", die)
    results = {r.name: r for r in probe_features(["veth", "ipset"])}
    assert results["veth"].ok
    assert not results["ipset"].ok
    assert "exit code 7" in results["ipset"].detail


def test_probe_exception_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> tuple[bool, str, str]:
        raise RuntimeError("kaput")

    monkeypatch.setitem(features._PROBES, "vxlan", boom)
    results = {r.name: r for r in probe_features(["vxlan", "ipset"])}
    assert not results["vxlan"].ok
    assert "kaput" in results["vxlan"].detail
    assert results["ipset"].ok


def test_lab_requiring_ipvs_stops_before_building(netlab_cli: Any, lab_file: Any) -> None:
    """`requires: [ipvs]` on a kernel without IPVS: exit 3 before anything exists, and the
    message says how to get such a kernel (the VM runner, the Vagrant box)."""
    if probe_features(["ipvs"])[0].ok:
        pytest.skip("this kernel has ipvs (the Vagrant box?); the test needs one without it")
    text = (REPO / "labs" / "ipvs-smoke.yaml").read_text().replace("name: ipvs-smoke", "name: @LAB@", 1)
    lab = lab_file(text)
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err
    assert "netlab vm run -- netlab check --up FILE [--variant V]" in r.err and "vagrant/README.md" in r.err
    assert r.err.rstrip().endswith(
        f"  → this lab under such a kernel: sudo netlab vm run -- netlab check --up {lab.path}"
    ), r.err
    assert not Path("/run/netns", lab.ns("client")).exists() and not list(Path("/run/netns").glob(f"{lab.name}.*"))


def test_lab_with_a_vrf_link_needs_vrf_without_saying_so(netlab_cli: Any, lab_file: Any) -> None:
    """A `kind: vrf` link needs the vrf feature whether or not `requires:` lists it (as a
    link kind does): on a kernel without VRF, `up` exits 3 before anything exists."""
    if probe_features(["vrf"])[0].ok:
        pytest.skip("this kernel has vrf (the Vagrant box?); the test needs one without it")
    lab = lab_file("""\
name: @LAB@
nodes:
  router:
    links:
      blue: {kind: vrf, table: 10}
      eth1: {peer: "a:eth0", master: blue, addresses: [10.1.0.1/24]}
  a:
    links:
      eth0: {addresses: [10.1.0.2/24]}
""")
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err and "  vrf: " in r.err, r.err
    assert "netlab vm run" in r.err, r.err
    assert not list(Path("/run/netns").glob(f"{lab.name}.*"))


def test_doctor_into_a_pipe_is_a_line_per_feature(netlab_cli: Any) -> None:
    """Piped, a missing feature's hint follows its detail on its line (on a terminal it
    goes below): `netlab doctor | grep ipvs` shows what is missing and how to get it."""
    r = netlab_cli("doctor")
    features_table = r.out.split("\ntools\n")[0]  # (the tools table follows: conntrack is a tool too)
    rows = {line.split()[0]: line for line in features_table.splitlines() if "│" in line}
    assert set(FEATURES) <= set(rows), r.out
    for status in probe_features():
        mark = "✓" if status.ok else "✗"
        assert f" {mark} │ {status.detail}" in rows[status.name], rows[status.name]
        assert status.ok or rows[status.name].rstrip().endswith(f"{status.detail} → {status.hint}")
    assert not any(line.lstrip().startswith("│") for line in r.out.splitlines()), r.out  # no continued rows
