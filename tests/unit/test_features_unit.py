"""Rootless tests of netlab.kernel.features: names, the non-root path, hints, tools."""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any, ClassVar

import pytest

from netlab.kernel import encode, features, ipset, nlsock
from netlab.kernel.features import FEATURES, kernel_hint, normalize_feature, probe_features
from netlab.kernel.nlsock import Failure
from netlab.plan.ops import CreateIpset, CreateLink, SetNetem, VxlanType


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


# --------------------------------------------------------------------------- doctor takes netlab's own paths


class RecordingSocket:
    """Stands in for netlab.kernel.nlsock.NetlinkSocket: records what a probe sends and
    answers with canned failures (none: the kernel accepted everything)."""

    sent: ClassVar[list[Any]] = []
    failures: ClassVar[list[Any]] = []

    def __init__(self, protocol: int = 0) -> None:
        self.protocol = protocol

    def link_indexes(self) -> dict[str, int]:
        return {"lo": 1}

    def request(self, msgs: list[Any]) -> list[Any]:
        RecordingSocket.sent += msgs
        return RecordingSocket.failures

    def close(self) -> None:
        pass


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[RecordingSocket]:
    monkeypatch.setattr(nlsock, "NetlinkSocket", RecordingSocket)
    RecordingSocket.sent, RecordingSocket.failures = [], []
    return RecordingSocket


def test_a_link_probe_sends_the_drivers_message(recording: type[RecordingSocket]) -> None:
    """`doctor` vouches for the message `up` sends: the encoder's, for a CreateLink op."""
    assert features._probe_vxlan() == (True, "ip link add type vxlan", "kernel")
    [sent] = recording.sent
    op = CreateLink(features.PROBE_NS, name="nlprobe-vxlan", type=VxlanType(vni=42, port=4789), up=False)
    want = encode.request(op, {"lo": 1}.__getitem__, lambda _ns: -1)
    assert (sent.type, sent.flags) == (want.type, want.flags)
    assert sent.msg == want.msg


def test_a_refused_link_says_the_kind_is_unknown(recording: type[RecordingSocket]) -> None:
    recording.failures = [Failure(0, errno.EOPNOTSUPP, "Operation not supported (EOPNOTSUPP): Unknown device type")]
    assert features._probe_vrf() == (
        False,
        "ip link add type vrf: Operation not supported (EOPNOTSUPP) - link kind 'vrf' unknown to this kernel",
        "kernel",
    )


def test_the_netem_probe_is_a_root_netem_qdisc_on_lo(recording: type[RecordingSocket]) -> None:
    """`doctor` vouches for what a link end's `netem:` sends: the encoder's SetNetem."""
    recording.failures = [Failure(0, errno.ENOENT, "No such file or directory (ENOENT): Unknown qdisc kind")]
    ok, detail, _ = features._probe_netem()
    assert not ok and detail.endswith("(ENOENT) - qdisc kind 'netem' unknown to this kernel (no sch_netem)")
    [sent] = recording.sent
    want = encode.request(SetNetem(features.PROBE_NS, dev="lo", delay=1000), {"lo": 1}.__getitem__, lambda _ns: -1)
    assert (sent.type, sent.flags, sent.msg["index"], sent.msg["parent"]) == (want.type, want.flags, 1, 0xFFFFFFFF)
    assert sent.msg.get_attr("TCA_KIND") == "netem"


def test_the_ipset_probe_makes_its_set_as_up_does(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    def apply_here(ops: list[Any]) -> list[tuple[Any, str]]:
        made.extend(ops)
        return [(ops[0], "ipset create: Kernel error received: set type not supported")]

    monkeypatch.setattr(ipset, "apply_here", apply_here)
    assert features._probe_ipset() == (
        False,
        "ipset create hash:ip: Kernel error received: set type not supported",
        "kernel",
    )
    assert made == [CreateIpset(features.PROBE_NS, name="nlprobe", type="hash:ip")]
