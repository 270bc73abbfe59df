"""Sysctl names without root: normalised, compared with the shipped list, and warned about
(not refused) by `netlab validate`; tests/kernel/test_sysctl_preflight.py covers root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from netlab.cli import cli
from netlab.lab.sysctls import normalise, shipped_keys, unknown


def test_names_are_normalised() -> None:
    assert normalise("net.ipv4.conf.eth0.rp_filter") == "net.ipv4.conf.*.rp_filter"
    assert normalise("net/ipv4/conf/flannel.1/rp_filter") == "net.ipv4.conf.*.rp_filter"
    assert normalise("net.ipv6.neigh.cni0.base_reachable_time_ms") == "net.ipv6.neigh.*.base_reachable_time_ms"
    assert normalise("net.ipv4.ip_forward") == "net.ipv4.ip_forward"


def test_unknown_names_get_the_closest_known_one() -> None:
    known = shipped_keys()
    assert unknown("net.ipv4.ip_forward", known) is None
    assert unknown("net/ipv4/conf/flannel.1/rp_filter", known) is None
    assert unknown("net.ipv4.ip_fowrard", known) == "; did you mean net.ipv4.ip_forward?"
    assert unknown("net.ipv4.conf.eth0.rp_filtr", known) == "; did you mean net.ipv4.conf.eth0.rp_filter?"
    assert unknown("net.ipv4.zzz", known) == ""
    # A module's tree (br_netfilter, IPVS) is not judged by a list that lacks the module …
    assert unknown("net.bridge.bridge-nf-call-iptablez", frozenset({"net.ipv4.ip_forward"})) is None
    # … and is where it has it.
    assert unknown("net.bridge.bridge-nf-call-iptablez", known) == "; did you mean net.bridge.bridge-nf-call-iptables?"


def test_validate_without_root_warns_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: s\nnodes:\n  a:\n    sysctls:\n      net.ipv4.ip_fowrard: 1\n")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["validate", str(lab)], standalone_mode=False)
    assert result.exception is None, result.output
    assert result.return_value == 0
    assert (
        f"warning: {lab}:5: nodes.a.sysctls[\"net.ipv4.ip_fowrard\"]: netlab's list of a 6.18 kernel's "
        "sysctls has no net.ipv4.ip_fowrard; did you mean net.ipv4.ip_forward? (as root, validate asks this "
        "kernel)" in result.output
    )
