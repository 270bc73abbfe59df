"""The kernel's own drop reasons and FIB lookups while a trace's probes are out: the
tracepoints skb:kfree_skb (with its `reason`), net:netif_receive_skb (which interface a
packet came in on) and fib:fib_table_lookup / fib6:fib6_table_lookup, read through a
tracefs instance of our own (the live half of KernelObserver.watch_drops).

The machine's root mount namespace is never touched: tracefs is mounted by a short-lived
thread that first moved into a private mount namespace of its own (unshare(CLONE_NEWNS),
every mount made private), which opens the mount point and detaches it at once. What
stays is one directory descriptor; the mount, unreachable by any path, goes when that is
closed. The tracing instance (`instances/netlab-PID-N-RANDOM`: its own buffer and event switches,
so the machine's tracing and other tools' instances are left as they are) is removed in a
`finally` that a Ctrl-C cannot cut short, by a thread the interpreter waits for at exit.

Tracepoints are global, not per network namespace: the instance records only the events
of netlab's own threads (set_event_pid, with event-fork for the probe threads started
later). A packet's way through veths and routers is handled in the context of the thread
that sent it (softirq at the end of the send), so its drop is among those events; a drop
in a timer (a neighbour that never answered, a retransmission) or another process is not.
Events are read back as the instance's `trace` text (`parse`, pure).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import os
import re
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

from netlab import interrupts
from netlab.observations import FibLookup, KernelDrop, KernelSeen

T = TypeVar("T")

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE, MNT_DETACH = 0x4000, 1 << 18, 2
NOT_SPECIFIED = 2  # skb_drop_reason: a free that says nothing (most of them)
EVENTS = (
    "skb/kfree_skb",
    "net/netif_receive_skb",
    "fib/fib_table_lookup",
    "fib6/fib6_table_lookup",
)

_ids = itertools.count(1)
_libc = ctypes.CDLL(None, use_errno=True)


class TracefsError(OSError):
    """The kernel's tracepoints cannot be read here (no tracefs, no such event, not allowed)."""


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise TracefsError(err, f"{what}: {os.strerror(err)}")


def private_tracefs() -> int:
    """A directory descriptor of a tracefs mounted in a private mount namespace, already
    detached (see the module's docstring)."""
    found: dict[str, int | BaseException] = {}

    def mount() -> None:
        try:
            _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
            where = tempfile.mkdtemp(prefix="netlab-tracefs-")
            try:
                _check(_libc.mount(b"tracefs", where.encode(), b"tracefs", 0, None), "mount -t tracefs")
                try:
                    found["fd"] = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                finally:
                    _libc.umount2(where.encode(), MNT_DETACH)
            finally:
                os.rmdir(where)
        except BaseException as e:  # handed to the caller's thread
            found["error"] = e

    thread = threading.Thread(target=mount, name="netlab-tracefs")
    thread.start()
    thread.join()
    error = found.get("error")
    if isinstance(error, BaseException):
        raise error
    fd = found["fd"]
    assert isinstance(fd, int)
    return fd


def missing_events(root: int) -> list[str]:
    """The events of EVENTS this kernel lacks (a kfree_skb without `reason` counts as lacking)."""
    out = []
    for event in EVENTS:
        try:
            fmt = _read(root, f"events/{event}/format")
        except FileNotFoundError:
            out.append(event)
            continue
        if event == "skb/kfree_skb" and "reason" not in fmt:
            out.append(f"{event} (without a drop reason)")
    return out


def _read(root: int, path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=root)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def _write(root: int, path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=root)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _start(root: int, name: str, every_task: bool) -> None:
    _write(root, f"{name}/options/event-fork", "1")
    if not every_task:
        _write(root, f"{name}/set_event_pid", _own_threads(root, name))
    _write(root, f"{name}/events/skb/kfree_skb/filter", f"reason != {NOT_SPECIFIED}")
    for event in EVENTS:
        _write(root, f"{name}/events/{event}/enable", "1")
    _write(root, f"{name}/tracing_on", "1")


INITIAL_PID_NS = 0xEFFFFFFC  # PROC_PID_INIT_INO: the inode of the machine's own PID namespace
_MARK = re.compile(r"^\s*.+?-(\d+)\s+.*tracing_mark_write: netlab-tid (\d+)$", re.MULTILINE)


def _own_threads(root: int, name: str) -> str:
    """This process's threads as set_event_pid takes them: the kernel's own numbers. In a
    PID namespace of its own (a container, a simulated host) /proc numbers them otherwise,
    so the calling thread learns its number from a marker it writes into the instance
    (the trace names a line's writer by the kernel's number); event-fork then follows the
    threads it starts (the probes'). Elsewhere: every thread, as /proc lists them."""
    if os.stat("/proc/self/ns/pid").st_ino == INITIAL_PID_NS:
        return " ".join(os.listdir("/proc/self/task"))
    tid = threading.get_native_id()
    _write(root, f"{name}/trace_marker", f"netlab-tid {tid}")
    found = [m[1] for m in _MARK.finditer(_read(root, f"{name}/trace")) if m[2] == str(tid)]
    _write(root, f"{name}/trace", "")
    if not found:
        raise TracefsError(0, "tracefs: this thread's own number could not be learnt from a trace marker")
    return found[-1]


_removals: list[threading.Thread] = []
_removals_lock = threading.Lock()


def _remove(root: int, name: str | None) -> None:
    """Switch the instance's events off, remove it and close the tracefs."""
    try:
        if name is not None:
            with contextlib.suppress(OSError):
                _write(root, f"{name}/events/enable", "0")
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=root)
    finally:
        os.close(root)


def _remove_later(root: int, name: str | None) -> None:
    """Remove the instance in a thread of its own: the kernel takes 50-150 ms to free it
    (an RCU grace period), which the trace spends waiting for its last events anyway. Not
    a daemon: the interpreter waits for it before it exits, also after Ctrl-C."""
    thread = threading.Thread(target=_remove, args=(root, name), name="netlab-tracefs-remove")
    with _removals_lock:
        _removals[:] = [t for t in _removals if t.is_alive()]
        _removals.append(thread)
    thread.start()


def wait_removed() -> None:
    """Until every instance this process made is removed."""
    with _removals_lock:
        pending = list(_removals)
    for thread in pending:
        thread.join()


class DropWatch:
    """The kernel's drops and FIB lookups from open() to close(): of this process's threads
    (and those they start), or with `every_task` of every task of the machine — what a
    host records when packets reach it over the wire, handled in whatever task the
    network's softirq interrupted (a trace across hosts, netlab.multihost.agent)."""

    def __init__(self, *, every_task: bool = False) -> None:
        self.every_task = every_task
        self.root: int | None = None
        self.name: str | None = None
        self.unavailable: str | None = None  # why nothing is recorded (then close() says so)

    def open(self) -> None:
        try:
            self.root = private_tracefs()
        except OSError as e:
            self.unavailable = f"tracefs: {e.strerror or e}"
            return
        try:
            missing = missing_events(self.root)
            if missing:
                self.unavailable = f"this kernel has no tracepoint {', '.join(missing)}"
                return
            with interrupts.deferred():  # made and known to close(), or not made
                # Instances are the kernel's, not a PID namespace's: two hosts simulated on
                # one kernel (each its own PID namespace) can both be pid 7 making its first
                self.name = f"instances/netlab-{os.getpid()}-{next(_ids)}-{os.urandom(4).hex()}"
                os.mkdir(self.name, dir_fd=self.root)
            _start(self.root, self.name, self.every_task)
        except OSError as e:
            self.unavailable = f"tracefs: {e.strerror or e}"

    def close(self, *, read: bool = True) -> KernelSeen:
        """What was recorded (or why nothing was); the instance is removed in any case."""
        root, name = self.root, self.name
        self.root = self.name = None
        try:
            if not read or root is None or name is None or self.unavailable is not None:
                return KernelSeen(unavailable=self.unavailable)
            _write(root, f"{name}/tracing_on", "0")
            return parse(_read(root, f"{name}/trace"))
        except OSError as e:
            raise TracefsError(e.errno or 0, f"tracefs: {e.strerror or e}") from e
        finally:
            if root is not None:
                with interrupts.deferred():
                    _remove_later(root, name)


def watch_drops(send: Callable[[], T]) -> tuple[T, KernelSeen]:
    """send() with the kernel's drop and FIB tracepoints recorded for netlab's own threads:
    its result and what they told (or why they could not be read: then the send still runs)."""
    watch = DropWatch()
    try:
        watch.open()
        result = send()
    except BaseException:
        watch.close(read=False)
        raise
    return result, watch.close()


# ---------------------------------------------------------------- the trace text

_LINE = re.compile(r"^\s*.+?-\d+\s+(?:\(.*?\)\s+)?\[\d+\]\s+\S+\s+[\d.]+:\s+(\w+):\s+(.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
_REASON = re.compile(r"reason:\s*(\w+)")
_LOOKUP = re.compile(
    r"table\s+(\d+)\s+oif\s+(-?\d+)\s+iif\s+(-?\d+)\s+proto\s+\d+\s+(\S+?)/\d+\s+->\s+(\S+?)/\d+"
    r".*?==>\s+dev\s+(\S+)\s+gw\s+(\S+)\s+err\s+(-?\d+)"
)


def parse(text: str) -> KernelSeen:
    """The drops and FIB lookups in an instance's `trace` text, in order; a drop is named
    with the interface its packet (skbaddr) last came in on."""
    drops: list[KernelDrop] = []
    lookups: list[FibLookup] = []
    arrived: dict[str, str] = {}  # skbaddr → the interface it came in on
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        event, body = m.groups()
        fields = dict(_FIELD.findall(body))
        if event == "netif_receive_skb" and "skbaddr" in fields and "dev" in fields:
            arrived[fields["skbaddr"]] = fields["dev"]
        elif event == "kfree_skb" and (reason := _REASON.search(body)) and reason[1] != "NOT_SPECIFIED":
            drops.append(
                KernelDrop(
                    reason[1],
                    fields.get("location", "?"),
                    arrived.get(fields.get("skbaddr", "")),
                    int(fields.get("protocol", "0")),
                )
            )
        elif event in ("fib_table_lookup", "fib6_table_lookup") and (found := _lookup(body)) is not None:
            lookups.append(found)
    return KernelSeen(tuple(drops), tuple(lookups))


def _lookup(body: str) -> FibLookup | None:
    m = _LOOKUP.search(body)
    if m is None:
        return None
    table, oif, iif, src, dst, dev, gw, err = m.groups()
    gateway = gw.split("/")[0]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(gateway).is_unspecified:
            gateway = ""
    return FibLookup(
        int(table), src, dst, int(iif), int(oif), None if dev in ("-", "") else dev, gateway or None, int(err)
    )
