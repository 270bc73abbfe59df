"""Reconcile of IPVS (the VM: this kernel's ip_vs): a running lab with a director's native
`ipvs:` services and a cluster in kube-proxy's IPVS mode is changed edit after edit with
`netlab up FILE` — a real server added, a weight changed, a scheduler changed (the
service made anew, its real servers with it), a service removed and another added, a
fwmark service's real servers, the cluster's replicas scaled (kube-proxy's real servers
follow the Endpoints) — and after every edit the director's and the cluster nodes'
`ipvsadm -Ln --sort`, `ip -d -j` links, addresses, routes and rules, ipsets and rulesets
are what a fresh build of the same file shows (tests/kernel/kernel_view.py)."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlab.pytest_plugin import unique_name
from tests.kernel.kernel_view import differences, view

REPO = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "cluster": {
        "backend": "host-gw",
        "proxy_mode": "ipvs",
        "nodes": {"node1": {}, "node2": {}},
        "pods": {"web": {"replicas": 2, "labels": {"app": "web"}, "serve": ["tcp/8080"]}},
        "services": {"web": {"selector": {"app": "web"}, "ports": [{"port": 80, "target_port": 8080}]}},
    },
    "nodes": {
        "director": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {
                "lo": {"addresses": ["192.0.2.100/32"]},
                "br0": {"kind": "bridge", "addresses": ["10.1.0.1/24"]},
                "v1": {"peer": "rs1:eth0", "master": "br0"},
                "v2": {"peer": "rs2:eth0", "master": "br0"},
            },
            "ipvs": [
                {
                    "address": "192.0.2.100",
                    "port": 80,
                    "scheduler": "rr",
                    "reals": [{"address": "10.1.0.11", "port": 8080}, {"address": "10.1.0.12", "port": 8080}],
                },
                {"fwmark": 1, "scheduler": "sh", "reals": [{"address": "10.1.0.11", "forward": "dr"}]},
            ],
        },
        "rs1": {"links": {"eth0": {"addresses": ["10.1.0.11/24"]}}, "routes": [{"to": "default", "via": "10.1.0.1"}]},
        "rs2": {"links": {"eth0": {"addresses": ["10.1.0.12/24"]}}, "routes": [{"to": "default", "via": "10.1.0.1"}]},
    },
}


def _add_real(d: dict[str, Any]) -> None:
    d["nodes"]["director"]["ipvs"][0]["reals"].append({"address": "10.1.0.13", "port": 8080})


def _weight(d: dict[str, Any]) -> None:
    d["nodes"]["director"]["ipvs"][0]["reals"][0]["weight"] = 3


def _scheduler(d: dict[str, Any]) -> None:
    d["nodes"]["director"]["ipvs"][0]["scheduler"] = "wrr"


def _fwmark_reals(d: dict[str, Any]) -> None:
    d["nodes"]["director"]["ipvs"][1]["reals"].append({"address": "10.1.0.12", "forward": "dr"})


def _replace_service(d: dict[str, Any]) -> None:
    d["nodes"]["director"]["ipvs"][0]["port"] = 8000  # another service: the old one goes


def _scale(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["web"]["replicas"] = 3  # kube-proxy adds the new endpoint's real server


def _scale_down(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["web"]["replicas"] = 1


EDITS: list[Callable[[dict[str, Any]], None]] = [
    _add_real,
    _weight,
    _scheduler,
    _fwmark_reals,
    _replace_service,
    _scale,
    _scale_down,
]


def _netlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True, timeout=600, cwd=REPO
    )


def _write(path: Path, name: str, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"name": name, **data}, sort_keys=False))


# Emulated, it is the VM tier's longest by far: 490 s of CI's 834 (24 CLI runs at 5-10 s
# of Python start each, and 14 kernel views of every namespace, ~11 commands a namespace);
# 900 s, the default, left too little room (on a loaded host it ran past it).
@pytest.mark.timeout(1800)
def test_ipvs_edits_reconcile_to_what_a_fresh_build_makes(tmp_path: Path) -> None:
    name, fresh = unique_name("rcipvs"), unique_name("rcipvs-fresh")
    lab, again = tmp_path / "lab.yaml", tmp_path / "fresh.yaml"
    data = copy.deepcopy(BASE)
    _write(lab, name, data)
    try:
        first = _netlab("up", str(lab))
        assert first.returncode == 0, first.stderr
        assert view(name)["director"]["ipvs"], "ipvsadm shows nothing: no IPVS in this kernel?"
        for edit in EDITS:
            edit(data)
            _write(lab, name, data)
            _write(again, fresh, data)
            done = _netlab("up", str(lab))
            assert done.returncode == 0 and "reconciled in place" in done.stdout, (edit.__name__, done)
            built = _netlab("up", str(again))
            assert built.returncode == 0, (edit.__name__, built.stderr)
            try:
                found = differences(view(name), view(fresh))
            finally:
                assert _netlab("down", fresh).returncode == 0
            assert found == [], (edit.__name__, done.stdout, found[:10])
    finally:
        _netlab("down", name)
        _netlab("down", fresh)
