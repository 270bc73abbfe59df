"""Rootless tests of netlab.kernel.features: names, the non-root path, hints, tools."""

from __future__ import annotations

import os
import shutil

import pytest

from netlab.kernel import features
from netlab.kernel.features import FEATURES, kernel_hint, normalize_feature, probe_features


def test_normalize_canonical_names() -> None:
    for name in FEATURES:
        assert normalize_feature(name) == name


@pytest.mark.parametrize(
    ("alias", "canon"),
    [("ip_vs", "ipvs"), ("nf_tables", "nftables"), ("sch_netem", "netem"), (" IP_VS ", "ipvs")],
)
def test_normalize_aliases(alias: str, canon: str) -> None:
    assert normalize_feature(alias) == canon


@pytest.mark.parametrize("name", ["", "ipv6", "macvlan", "ip vs"])
def test_normalize_unknown(name: str) -> None:
    assert normalize_feature(name) is None


def _no_fork() -> int:
    raise AssertionError("must not fork")


def test_non_root_reports_every_feature_without_forking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "fork", _no_fork)
    results = probe_features()
    assert [r.name for r in results] == list(FEATURES)
    for r in results:
        assert r.ok is False
        assert "root" in r.detail
        assert r.hint


def test_subset_order_and_dedup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "fork", _no_fork)
    got = [r.name for r in probe_features(["sch_netem", "veth", "netem", "ip_vs"])]
    assert got == ["veth", "ipvs", "netem"]
    assert probe_features([]) == []
    assert [r.name for r in probe_features("ip_vs")] == ["ipvs"]


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="macvlan"):
        probe_features(["veth", "macvlan"])


def test_hint_kernel_built_without() -> None:
    hint = kernel_hint("vrf", {"CONFIG_VETH": "y"}, None)
    assert "CONFIG_NET_VRF" in hint and "linux-image-amd64" in hint


def test_hint_module_configured() -> None:
    assert "modprobe ip_vs" in kernel_hint("ipvs", {"CONFIG_IP_VS": "m"}, frozenset({"ip_vs"}))


def test_hint_module_installed_config_unknown() -> None:
    assert kernel_hint("netem", None, frozenset({"sch_netem"})) == "modprobe sch_netem"


def test_hint_nothing_known() -> None:
    hint = kernel_hint("netem", None, None)
    assert "modprobe sch_netem failed / not built" in hint and "linux-image-amd64" in hint


def test_every_feature_has_a_hint() -> None:
    for name in FEATURES:
        hint = kernel_hint(name, {}, frozenset())
        assert hint and "\n" not in hint


def test_probe_tools(monkeypatch: pytest.MonkeyPatch) -> None:

    def which(cmd: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        return None if cmd in ("ip", "socat") else f"/usr/sbin/{cmd}"

    monkeypatch.setattr(shutil, "which", which)
    tools = {t.name: t for t in features.probe_tools()}
    assert list(tools) == list(features.TOOLS)
    assert not tools["ip"].ok and tools["ip"].hint == "apt-get install iproute2"
    assert tools["ip"].path == ""
    assert tools["socat"].hint == "apt-get install socat"
    assert tools["nft"].ok and tools["nft"].path == "/usr/sbin/nft" and tools["nft"].hint == ""
