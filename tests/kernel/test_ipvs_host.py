"""IPVS on a kernel without it (this machine's): a lab with `ipvs:` objects, or with
net.ipv4.vs.* sysctls, needs the ipvs feature without saying `requires: [ipvs]` — `up`
exits 3 with the VM hint before anything exists; the IPVS readers answer "nothing"
instead of failing. (What IPVS does is tested in tests/vm/test_ipvs.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netlab.kernel.features import probe_features
from netlab.kernel.ipvs import ipvs_state
from netlab.pytest_plugin import LabFactory as PluginLabFactory

DIRECTOR = """\
name: @LAB@
nodes:
  client:
    links:
      eth0: {peer: "director:eth1", addresses: [192.0.2.2/24]}
  director:
    links:
      lo: {addresses: [192.0.2.100/32]}
      eth1: {addresses: [192.0.2.1/24]}
"""
SERVICE = """\
    ipvs:
      - {address: 192.0.2.100, port: 80, scheduler: rr, reals: [{address: 192.0.2.2, port: 8080}]}
"""
SYSCTL = """\
    sysctls: {net.ipv4.vs.conntrack: 1}
"""


@pytest.fixture
def no_ipvs() -> None:
    if probe_features(["ipvs"])[0].ok:
        pytest.skip("this kernel has ipvs (the VM or the Vagrant box); these tests need one without it")


@pytest.mark.parametrize("extra", [SERVICE, SYSCTL], ids=["ipvs-objects", "ipvs-sysctl"])
def test_up_infers_ipvs_and_stops_before_building(no_ipvs: None, netlab_cli: Any, lab_file: Any, extra: str) -> None:
    lab = lab_file(DIRECTOR + extra)
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err
    assert "  ipvs: " in r.err and "netlab vm run -- netlab check --up FILE [--variant V]" in r.err, r.err
    assert not list(Path("/run/netns").glob(f"{lab.name}.*"))


def test_dry_run_needs_no_ipvs(netlab_cli: Any, lab_file: Any) -> None:
    lab = lab_file(DIRECTOR + SERVICE)
    r = netlab_cli("up", "--dry-run", lab)
    assert r.rc == 0, r.out + r.err
    assert f"ip netns exec {lab.ns('director')} ipvsadm -A -t 192.0.2.100:80 -s rr\n" in r.out, r.out
    assert "ipvsadm -a -t 192.0.2.100:80 -r 192.0.2.2:8080 -m -w 1\n" in r.out, r.out


def test_readers_see_nothing_without_ipvs(no_ipvs: None, netlab_lab: PluginLabFactory) -> None:
    lab = netlab_lab({"name": "noipvs", "nodes": {"a": {}}}, unique=True)
    state = ipvs_state(lab.ns("a"))
    assert (state.services, state.connections) == ((), ())
    assert state.text == "(no virtual services)\n(no connections)"
