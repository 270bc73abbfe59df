"""Processes netlab started or found: what /proc says of them, and ending them by PID.

Shared by teardown (processes still inside a lab's namespaces) and the responders'
control. Never by name (no pkill): a PID is signalled only when the caller knows it is
its own (a child it started, or one whose /proc entry it just checked), because PIDs are
reused. Ending is always SIGTERM first, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence

POLL = 0.02  # seconds between looks at /proc while waiting for a process to go


def state(pid: int) -> str | None:
    """The /proc state letter of `pid` (R, S, Z, …), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ..." - comm may contain spaces or parentheses, so split at the last ')'
    return stat[stat.rfind(b")") + 2 :][:1].decode() or None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no socket or namespace)."""
    return state(pid) not in (None, "Z", "X")


def argv(pid: int) -> list[bytes]:
    """The process's command line ([] if it is gone or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def end(pids: Sequence[int], grace: float, own: Mapping[int, subprocess.Popen[bytes]] | None = None) -> list[int]:
    """SIGTERM each of `pids`, SIGKILL what is still there after `grace` seconds, and wait
    (up to 5 s more) until they are gone. `own`: those that are our children, reaped here
    so they do not linger as zombies. Returns the PIDs that were signalled."""
    own = own or {}
    signalled = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    left = _wait_gone(signalled, own, grace)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    _wait_gone(left, own, 5.0)
    return signalled


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_gone(pids: Sequence[int], own: Mapping[int, subprocess.Popen[bytes]], timeout: float) -> list[int]:
    """Those of `pids` still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while True:
        for pid in left:
            if pid in own:
                own[pid].poll()  # reaps our child once it has exited
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # ours after all (started by this process)
        left = [pid for pid in left if (own[pid].returncode is None if pid in own else alive(pid))]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)
