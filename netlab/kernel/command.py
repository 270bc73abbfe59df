"""A lab's `exec:` commands: `ip netns exec NS ARGV…`, one at a time, killed (never left
running) if the caller is interrupted while it runs. What each printed goes to the lab's
exec log next to its state (`netlab logs LAB`)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from netlab.kernel.driver import OpFailed
from netlab.naming import split_netns_name
from netlab.plan.ops import RunCommand
from netlab.state import exec_log_path, state_path

TIMEOUT = 300  # seconds a command may take


def run(op: RunCommand) -> None:
    """Run the command in its namespace; OpFailed (with the end of its output) unless it exits 0."""
    # Ctrl-C/SIGTERM wait until the child is ours (after the fork, before Popen returns,
    # it could not be killed yet), and any exception kills it: the rollback must never
    # remove the lab while the command runs on in its namespace.
    proc: subprocess.Popen[str] | None = None
    try:
        with signals_deferred():
            proc = subprocess.Popen(
                ["ip", "netns", "exec", op.ns, *op.argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except BaseException as err:
        if proc is not None:
            proc.kill()
            proc.communicate()
        if isinstance(err, (OSError, subprocess.TimeoutExpired)):
            raise OpFailed(op, str(err)) from None
        raise
    _record(op, proc.returncode, stdout, stderr)
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise OpFailed(op, f"exit status {proc.returncode}" + (": " + " | ".join(tail) if tail else ""))


def _record(op: RunCommand, code: int, stdout: str, stderr: str) -> None:
    """The command and its output, appended to the lab's exec log (`netlab logs`): each
    line stamped with the time and node, stderr's marked."""
    names = split_netns_name(op.ns)
    if names is None or not os.path.exists(state_path(names[0])):  # a lab netlab keeps no state of
        return
    lab, node = names
    stamp = time.strftime("%H:%M:%S")
    lines = [f"{stamp} {node} exec $ {shlex.join(op.argv)}"]
    lines += [f"{stamp} {node} | {line}" for line in stdout.splitlines()]
    lines += [f"{stamp} {node} ! {line}" for line in stderr.splitlines()]
    lines.append(f"{stamp} {node} exec exit status {code}")
    # the log is for people; the build does not depend on it
    with contextlib.suppress(OSError), open(exec_log_path(lab), "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Let Ctrl-C / SIGTERM take effect only when the block is done. At the Python level
    (not with a signal mask, which a child would inherit through exec); signal handlers
    run in the main thread only, so elsewhere there is nothing to defer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append((signum, frame))

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for signum, frame in caught[:1]:
            handler = old[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)  # raises KeyboardInterrupt, or the CLI's Signalled
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
