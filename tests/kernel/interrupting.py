"""Send SIGINT or SIGTERM to a `netlab` command at a chosen moment and judge the outcome.

Shared by tests/kernel/test_interrupts.py (a fixed set of seeded moments) and
bench/interrupts.py (as many as you like). The promise judged: one line saying what was
interrupted and what was undone, no traceback, exit 128 + signal, nothing left by the
interrupted command — or, when the signal landed after the command had finished (after
`up` reported success), exit 0 with what it reported true.

The moment is measured from when netlab's handlers are installed (the first thing the
command does: netlab/client.py's main, or netlab/cli.py's first lines under `python -m
netlab.cli`, seen in /proc/PID/status): before that the interpreter itself is starting,
which no program controls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A tiny lab that still has every phase of `up`: namespaces, links, addresses, a
# responder, and a check for `check --up`.
TINY = """\
name: {name}
nodes:
  a:
    links:
      eth0: {{peer: "b:eth0", addresses: [10.9.0.1/24]}}
  b:
    links:
      eth0: {{addresses: [10.9.0.2/24]}}
    serve: [tcp/8080]
checks:
  - name: a reaches b
    probe: {{from: a, to: 10.9.0.2, proto: tcp, port: 8080}}
    expect: {{result: ok, served_by: b}}
"""
NODES = 2


def handlers_installed(pid: int) -> bool:
    """netlab catches SIGTERM (Python itself only catches SIGINT)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone: nothing left to wait for
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@dataclass
class Outcome:
    command: str  # up | check --up | down
    sig: signal.Signals
    delay: float  # seconds after the handlers were installed
    rc: int
    out: str
    err: str
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.command} + {self.sig.name} at {self.delay * 1000:.0f} ms: exit {self.rc}, "
            f"stderr {self.err.strip()!r}" + (f" — {'; '.join(self.problems)}" if self.problems else "")
        )


def interrupt(argv: list[str], sig: signal.Signals, delay: float, env: dict[str, str]) -> tuple[int, str, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    try:
        deadline = time.monotonic() + 30
        while not handlers_installed(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)  # an undo that hangs fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def interrupt_when(
    argv: list[str], sig: signal.Signals, ready: Callable[[], bool], env: dict[str, str], wait: float = 120
) -> tuple[int, str, str]:
    """Run argv, send `sig` once `ready()` says the moment has come (within `wait` seconds,
    else AssertionError), and return its exit code and output."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    try:
        deadline = time.monotonic() + wait
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready(), f"the moment to send {sig.name} never came"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=wait)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def lab_is_up(lab: str, state_dir: str) -> bool:
    try:
        state = json.loads(Path(state_dir, f"{lab}.json").read_text())
    except (OSError, ValueError):
        return False
    present = [n for n in os.listdir("/run/netns") if n.startswith(f"{lab}.")]
    return state.get("status") == "up" and len(present) == NODES


def judge(o: Outcome, lab: str, leftovers: list[str], up_after: bool) -> list[str]:
    """What is wrong with the outcome (empty: the promise held). `leftovers`: what of the
    lab exists now; `up_after`: the lab is fully up now."""
    problems = []
    lines = [line for line in o.err.splitlines() if line.strip()]
    if "Traceback" in o.err:
        problems.append("a traceback")
    if o.rc == 128 + o.sig:
        if len(lines) != 1 or not lines[0].startswith("netlab: ") or f"by {o.sig.name}" not in lines[0]:
            problems.append("not one line naming the signal")
        left_as_it_was = o.command == "down" and ("it is as it was" in o.err or "nothing was changed" in o.err)
        if left_as_it_was and not up_after:
            problems.append("down said the lab is as it was, but it is not fully up")
        if not left_as_it_was and leftovers:
            problems.append(f"left behind: {', '.join(leftovers)}")
    elif o.rc == 0:
        if o.command == "up":
            if not up_after:
                problems.append("exit 0 but the lab is not up")
            if lines and not (len(lines) == 1 and f"{o.sig.name} arrived after lab {lab} was up" in lines[0]):
                problems.append("exit 0 with unexpected stderr")
        else:
            if leftovers:
                problems.append(f"exit 0 but left behind: {', '.join(leftovers)}")
            if lines:
                problems.append("exit 0 with something on stderr")
    else:
        problems.append(f"exit {o.rc}, expected {128 + o.sig} or 0")
    return problems
