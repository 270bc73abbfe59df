"""Sysctls are written through a procfs of netlab's own (kernel/sysctl.py): the value lands in
the writing thread's network namespace and nowhere else, and a refusal reads as it does
through the machine's /proc/sys."""

from __future__ import annotations

import os

import pytest

from netlab.kernel import netns, sysctl


def _read(key: str) -> str:
    with open(sysctl.path(key)) as f:
        return f.read().strip()


def _in_fresh_namespace(key: str, value: str) -> str:
    """key's value once written with sysctl.write in a namespace of the thread's own."""

    def run() -> str:
        netns.unshare_here()  # gone when the thread ends
        sysctl.write(key, value)
        return _read(key)

    return netns.in_thread(run)


def test_the_write_goes_through_a_procfs_of_our_own_renewed_as_it_goes() -> None:
    own = sysctl._OwnProcSys()
    first = own.acquire()
    assert first is not None, "fsopen/fsmount of procfs failed on this kernel"
    assert os.fstat(first).st_dev != os.stat("/proc/sys").st_dev
    for _ in range(own.OPENS):
        own.release(own.acquire())
    renewed = own.acquire()  # the instance in use (first) stays open, a fresh one comes
    assert renewed is not None and os.fstat(renewed).st_dev not in (os.fstat(first).st_dev, os.stat("/proc/sys").st_dev)
    own.release(first)  # retired and unused: closed
    with pytest.raises(OSError):
        os.fstat(first)
    own.release(renewed)


def test_written_in_the_thread_namespace_only() -> None:
    root_before = _read("net.ipv4.ip_forward")
    assert _in_fresh_namespace("net.ipv4.ip_forward", "1") == "1"
    assert _in_fresh_namespace("net.ipv6.conf.all.disable_ipv6", "1") == "1"
    assert _in_fresh_namespace("net.ipv6.conf.all.disable_ipv6", "0") == "0"
    assert _read("net.ipv4.ip_forward") == root_before


def test_a_refused_value_is_the_kernel_word() -> None:
    with pytest.raises(OSError) as err:
        _in_fresh_namespace("net.ipv4.conf.all.rp_filter", "banana")
    assert sysctl.reason(err.value) == "Invalid argument"


def test_a_read_only_sysctl_is_named_by_its_proc_sys_path() -> None:
    with pytest.raises(PermissionError) as err:
        _in_fresh_namespace("net.ipv4.tcp_available_congestion_control", "reno")
    assert sysctl.reason(err.value) == "Permission denied: /proc/sys/net/ipv4/tcp_available_congestion_control"


def test_a_missing_sysctl_says_what_to_write() -> None:
    with pytest.raises(FileNotFoundError, match=r"no sysctl net\.ipv4\.conf\.flannel\.1\.rp_filter in this namespace"):
        _in_fresh_namespace("net.ipv4.conf.flannel.1.rp_filter", "0")
