"""Sysctls of a lab namespace: written under /proc/sys by a thread that stands in the
namespace (/proc/sys/net is per network namespace, as the reading thread sees it).

They are written through a procfs instance of our own (fsopen/fsmount: a mount attached
nowhere, gone with its descriptor), not the machine's /proc. procfs keeps one dentry per
namespace for /proc/sys/net/ipv6 (and ipv4, core, …), all hashed alike, and every lookup
compares against each of them under a global spinlock (proc_sys_compare): through the
machine's /proc, a lab's first write in each namespace walked the dentries of every
namespace anyone on the machine had ever looked there in (10-18 % of a 500-pod `up`'s CPU
with 500-1000 namespaces of other labs). Ours holds only the lab's own. Where the kernel
has no fsopen (before 5.2) or refuses it, the machine's /proc/sys is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Sequence

from netlab.kernel import netns as nsops
from netlab.lab.sysctls import interface_of
from netlab.plan.ops import Op, SetSysctl


def path(key: str) -> str:
    # sysctl(8) convention: with a '/', '/' separates and '.' is literal (net/ipv4/conf/flannel.1/rp_filter)
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


# fsopen(2), fsconfig(2), fsmount(2): the same numbers on every architecture but alpha
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC, _FSCONFIG_CMD_CREATE, _FSMOUNT_CLOEXEC = 1, 6, 1


class _OwnProcSys:
    """`sys` of a procfs mounted by us alone (an O_PATH descriptor), a fresh one every
    `OPENS` opens: the dentries an instance keeps are those of the namespaces written
    through it, so each lookup compares against at most that many (in a 2000-pod lab the
    last namespaces' lookups walked 2000: 12 % of `up`'s CPU). A mount costs ~3 ms. A
    retired instance is closed once no thread is opening through it."""

    OPENS = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._tried = False  # a mount failed: /proc/sys from then on
        self._opens = 0
        self._users: dict[int, int] = {}
        self._retired: set[int] = set()

    def acquire(self) -> int | None:
        with self._lock:
            if self._fd is not None and self._opens >= self.OPENS:
                self._retired.add(self._fd)
                self._close_unused()
                self._fd = None
            if self._fd is None and not self._tried:
                self._fd = _mount_proc_sys()
                self._tried = self._fd is None
                self._opens = 0
            if self._fd is not None:
                self._opens += 1
                self._users[self._fd] = self._users.get(self._fd, 0) + 1
            return self._fd

    def release(self, fd: int | None) -> None:
        if fd is None:
            return
        with self._lock:
            self._users[fd] -= 1
            self._close_unused()

    def _close_unused(self) -> None:
        for fd in [fd for fd in self._retired if not self._users.get(fd)]:
            self._retired.discard(fd)
            self._users.pop(fd, None)
            os.close(fd)


_own = _OwnProcSys()


def _mount_proc_sys() -> int | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fs = libc.syscall(_SYS_FSOPEN, b"proc", _FSOPEN_CLOEXEC)
    if fs < 0:
        return None
    try:
        if libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            return None
        mnt = libc.syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, 0)
        if mnt < 0:
            return None
    finally:
        os.close(fs)
    try:
        return nsops.high_fd(os.open("sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mnt))
    except OSError:
        return None
    finally:
        os.close(mnt)


def _open_for_writing(key: str) -> int:
    full = path(key)
    own = _own.acquire()
    try:
        if own is None:
            return os.open(full, os.O_WRONLY | os.O_CLOEXEC)
        try:
            return os.open(full[len("/proc/sys/") :], os.O_WRONLY | os.O_CLOEXEC, dir_fd=own)
        except OSError as err:  # named as the machine's /proc/sys path, as users know it
            raise type(err)(err.errno, err.strerror, full) from None
    finally:
        _own.release(own)


def write(key: str, value: str) -> None:
    """Set one sysctl in the calling thread's namespace; FileNotFoundError says what to write instead."""
    try:
        fd = _open_for_writing(key)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except FileNotFoundError:
        if path(key).startswith("/proc/sys/net/ipv4/vs/"):
            raise FileNotFoundError(
                2,
                f"no sysctl {key} in this namespace: the IPVS sysctls exist only on a kernel with ip_vs "
                "loaded (a lab with `ipvs:` objects or net.ipv4.vs.* sysctls gets it checked before `up`)",
            ) from None
        raise FileNotFoundError(
            2,
            f"no sysctl {key} in this namespace (for interface names with a dot write "
            f"slashes, e.g. net/ipv4/conf/flannel.1/rp_filter)",
        ) from None


def apply_here(ops: Sequence[Op]) -> list[tuple[Op, str]]:
    """Write the SetSysctl ops in the calling thread's namespace; (op, reason) of each refused."""
    failed: list[tuple[Op, str]] = []
    for op in ops:
        if not isinstance(op, SetSysctl):
            raise TypeError(f"not a sysctl op: {type(op).__name__}")
        try:
            write(op.key, op.value)
        except OSError as err:
            failed.append((op, reason(err)))
    return failed


def reason(err: BaseException) -> str:
    """An OSError's words as the kernel gave them (strerror, and the path if any)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror if not err.filename else f"{err.strerror}: {err.filename}"
    return str(err)


def net_files() -> list[str]:
    """The files under /proc/sys/net as the calling thread's network namespace shows them,
    relative to /proc/sys (net/ipv4/ip_forward, …)."""
    return [os.path.relpath(os.path.join(d, f), "/proc/sys") for d, _, files in os.walk("/proc/sys/net") for f in files]


def fresh_value(key: str) -> str:
    """The value a fresh network namespace has for `key` (for a per-interface key, what a
    new interface gets: its `default`), read in a throwaway namespace. Needs root."""
    iface = interface_of(key)
    parts = key.split("/") if "/" in key else key.split(".")
    if iface is not None:
        parts[3] = "default"

    def run() -> str:
        nsops.unshare_here()
        with open("/proc/sys/" + "/".join(parts)) as f:
            return f.read().strip()

    return nsops.in_thread(run)
