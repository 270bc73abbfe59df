"""Named network namespaces, made the way `ip netns add` makes them, but in-process.

A namespace is created by a thread that unshares its network namespace and bind-mounts
it onto /run/netns/NAME (so `ip netns exec` works for users). Doing this in threads
instead of forked children (pyroute2.netns.create) or `ip` processes is what lets
hundreds of namespaces come up in well under a second. Only this thread changes
namespace; the rest of the process stays in the machine's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import resource
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from netlab.naming import NETNS_DIR

CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000

T = TypeVar("T")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


_dir_lock = threading.Lock()
_dir_ready = False


def prepare_netns_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so mounts made here
    propagate to users' mount namespaces (and `ip netns` sees the same files)."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        d = NETNS_DIR.encode()
        if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:
                _check(-1, f"mount --make-shared {NETNS_DIR}")
            _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"mount --bind {NETNS_DIR}")
            _check(_libc.mount(b"none", d, None, MS_SHARED | MS_REC, None), f"mount --make-shared {NETNS_DIR}")
        _dir_ready = True


def in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread (which may change its network namespace) and return its result."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed back to the caller's thread
            box["error"] = err

    t = threading.Thread(target=run, name="netlab-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class MountPoints:
    """The files under /run/netns that namespaces are bind-mounted onto, made as hard
    links of one unnamed inode (O_TMPFILE) instead of one new file each: on a filesystem
    without a journal (ext4 here) every new inode is found by scanning past the recently
    deleted ones, ~40 % of a namespace's creation after a lab of 500 was taken down; a
    link allocates no inode, and its unlink frees none. Where the filesystem cannot
    (no O_TMPFILE, no linkat), each file is created as `ip netns add` does. close()
    once the namespaces are made: the inode lives on as long as any of its names."""

    def __init__(self, directory: str = NETNS_DIR) -> None:
        try:
            self._fd: int | None = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0)
        except OSError:
            self._fd = None

    def make(self, path: str) -> None:
        """Make the empty file `path`; FileExistsError if it is there already."""
        fd = self._fd
        if fd is not None:
            if _libc.linkat(fd, b"", AT_FDCWD, path.encode(), AT_EMPTY_PATH) == 0:
                return
            err = ctypes.get_errno()
            if err == errno.EEXIST:
                raise FileExistsError(err, os.strerror(err), path)
            # e.g. EPERM without CAP_DAC_READ_SEARCH: a file of its own, as ip does
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def create_here(name: str, points: MountPoints | None = None) -> None:
    """In the *calling thread*: unshare into a new network namespace and name it (its
    file made by `points` when given, see MountPoints).

    The calling thread stays in the new namespace; use only from a thread made for it.
    """
    path = netns_path(name)
    if points is not None:
        points.make(path)
    else:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(src, path.encode(), b"none", MS_BIND, None), f"mount {path}")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def unshare_here() -> None:
    """In the *calling thread*: a new network namespace of its own, with no name. Nothing
    holds it but the thread (and processes it starts), so it vanishes when they end: for
    trying things out (the firewall preflight). Use only from a thread made for it."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def enter_here(fd: int) -> None:
    """In the calling thread: switch to the namespace open at fd."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


# Long-lived descriptors (one namespace fd and one netlink socket per namespace while a
# lab is built) are moved to 1024 and up: libnftables (nft 1.0.6) waits on its own socket
# with select(), which aborts the process ("bit out of range 0 - FD_SETSIZE") when that
# socket's fd is above 1023 — as it is in a lab of ~500 namespaces otherwise.
HIGH_FDS = 1024


def high_fd(fd: int) -> int:
    """fd moved to the lowest free number >= HIGH_FDS (close-on-exec); the old one closed.
    Left where it is when the process may not have that many descriptors."""
    try:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FDS)
    except OSError:
        return fd
    os.close(fd)
    return moved


def raise_fd_limit() -> None:
    """Lift the soft limit on open descriptors to the hard one (a login shell's soft limit
    is often 1024, too few for a big lab, and below HIGH_FDS)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# Besides two per namespace: stdio, the state and lock files, libnftables' and the host's
# netlink sockets, a probe's pipe (a 1201-namespace lab peaked at 2407 = 2 x 1201 + 5).
SPARE_FDS = 64


def descriptors_short(namespaces: int) -> tuple[int, int] | None:
    """(needed, allowed) when building `namespaces` namespaces would run out of descriptors
    (the driver holds a namespace fd and a netlink socket for each until it is done), with
    the soft limit lifted as far as it goes; None when there are enough."""
    raise_fd_limit()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * namespaces + SPARE_FDS
    return None if soft == resource.RLIM_INFINITY or needed <= soft else (needed, soft)


def open_netns(name: str) -> int:
    return high_fd(os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC))


def delete_netns(name: str) -> bool:
    """Unmount and remove /run/netns/NAME. The kernel destroys the namespace (and every
    link, route and socket in it) once nothing holds it. Returns False if it did not exist."""
    path = netns_path(name)
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return False
        if err != errno.EINVAL:  # EINVAL: not a mount point (half-made); still remove the file
            raise OSError(err, f"umount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def processes_in(names: list[str]) -> dict[str, list[int]]:
    """PIDs of the processes whose network namespace is one of the named ones (what
    `ip netns pids` reports): compared by the namespace's inode, not by name."""
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            st = os.stat(netns_path(name))
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        owner = wanted.get((st.st_dev, st.st_ino))
        if owner is not None:
            found.setdefault(owner, []).append(int(entry))
    return found


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Enter a named namespace in the *current thread* for the duration of the block.

    Only for worker threads or forked children: the main thread's namespace must not move.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = open_netns(name)
    try:
        enter_here(target)
        try:
            yield
        finally:
            enter_here(home)
    finally:
        os.close(target)
        os.close(home)
