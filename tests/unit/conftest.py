"""The unit tier is rootless by construction: a guard makes any test here fail that
reaches the kernel, even when the suite runs as root (where nothing else would notice),
and netlab sees an unprivileged user here, so root and non-root runs test the same paths.

Reaching the kernel means: a netlink socket, entering or making a namespace, or running
one of the tools that change or read kernel network state. Unit tests use the fakes
(netlab.kernel.fake) instead; what needs the kernel belongs in tests/kernel.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tools that read or change the kernel's network state (or enter namespaces to do so).
KERNEL_TOOLS = frozenset(
    {
        "ip",
        "bridge",
        "tc",
        "nft",
        "iptables",
        "iptables-restore",
        "iptables-nft-restore",
        "ip6tables",
        "ip6tables-restore",
        "ipset",
        "ipvsadm",
        "conntrack",
        "tcpdump",
        "unshare",
        "nsenter",
        "sysctl",
    }
)


UNPRIVILEGED_UID = 65534


class KernelTouched(AssertionError):
    """A unit test reached the kernel; it belongs in tests/kernel (or should use the fakes)."""


def _refuse(what: str) -> KernelTouched:
    return KernelTouched(
        f"the unit tier may not reach the kernel, but this test tried: {what} "
        "(use netlab.kernel.fake, or move the test to tests/kernel)"
    )


def _argv0(args: Any) -> str:
    if isinstance(args, (str, bytes)):
        first = str(args).split()[0] if str(args).split() else ""
    else:
        first = str(next(iter(args), ""))
    return Path(first).name


class _GuardedSocket(socket.socket):
    def __init__(self, family: Any = -1, type: Any = -1, proto: Any = -1, fileno: Any = None) -> None:
        if family == socket.AF_NETLINK:
            raise _refuse("a netlink socket")
        super().__init__(family, type, proto, fileno)


@pytest.fixture(autouse=True)
def _no_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_popen_init = subprocess.Popen.__init__

    def popen_init(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        if _argv0(args) in KERNEL_TOOLS:
            raise _refuse(f"running {_argv0(args)!r}")
        real_popen_init(self, args, *a, **kw)

    def refuse(what: str) -> Any:
        def call(*_a: Any, **_kw: Any) -> Any:
            raise _refuse(what)

        return call

    # As root or not, the unit tier sees the same netlab: the unprivileged one (a test of a
    # root-only path with the fakes says so by patching geteuid itself).
    monkeypatch.setattr(os, "geteuid", lambda: UNPRIVILEGED_UID)
    monkeypatch.setattr(socket, "socket", _GuardedSocket)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)
    monkeypatch.setattr(os, "unshare", refuse("unshare(2), a new namespace"), raising=False)
    monkeypatch.setattr(os, "setns", refuse("setns(2), entering a namespace"), raising=False)
    try:
        import nftables
    except ImportError:
        pass
    else:
        monkeypatch.setattr(nftables, "Nftables", refuse("libnftables"))
    yield
