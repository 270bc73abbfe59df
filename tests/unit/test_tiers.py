"""The unit tier's guard (tests/unit/conftest.py) holds: whatever reaches the kernel fails
with the reason, as root too, and netlab sees an unprivileged user."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.unit.conftest import UNPRIVILEGED_UID, KernelTouched


def test_netlink_socket_is_refused() -> None:
    with pytest.raises(KernelTouched, match="a netlink socket"):
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)


def test_other_sockets_still_work() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"


@pytest.mark.parametrize("argv", [["ip", "link"], ["/usr/sbin/nft", "list", "ruleset"], "tcpdump -i any"])
def test_kernel_tools_are_refused(argv: list[str] | str) -> None:
    with pytest.raises(KernelTouched, match=r"running '(ip|nft|tcpdump)'"):
        subprocess.run(argv, shell=isinstance(argv, str), check=False)


def test_other_programs_still_run() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


def test_namespaces_are_refused() -> None:
    with pytest.raises(KernelTouched, match="setns"):
        os.setns(0, 0)  # type: ignore[attr-defined]  # Python 3.12's; the guard puts it there on 3.11
    with pytest.raises(KernelTouched, match="unshare"):
        os.unshare(0)  # type: ignore[attr-defined]


def test_libnftables_is_refused() -> None:
    nftables = pytest.importorskip("nftables")
    with pytest.raises(KernelTouched, match="libnftables"):
        nftables.Nftables()


def test_netlab_sees_an_unprivileged_user() -> None:
    assert os.geteuid() == UNPRIVILEGED_UID
