"""Shared by bench/checks.py and bench/cluster.py: time a lab's `netlab up`, `netlab check
--json` (repeated) and `netlab down` as whole CLI commands. `down` runs in a finally, so
an error or Ctrl-C never leaves the lab behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NETLAB = [str(REPO / ".venv" / "bin" / "python"), "-m", "netlab.cli"]


def netns_workers() -> list[int]:
    """PIDs of kworkers currently executing a work item of the "netns" workqueue.

    The kernel names a worker "kworker/u8:3+netns" while it runs a netns work
    item and "kworker/u8:3-netns" after (wq_worker_comm()); the rescuer is
    "kworker/R-netns"."""
    busy = []
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        c = comm(int(d.name))
        if c and c.startswith("kworker") and "+netns" in c:
            busy.append(int(d.name))
    return busy


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def wait_netns_idle(quiet: float = 0.2, timeout: float = 300) -> None:
    """Until no kworker has run the kernel's namespace cleanup for `quiet` seconds (it runs
    in batches): namespaces deleted just before are still being freed, which slows whatever
    is timed next."""
    now = time.monotonic()
    end, idle_since = now + timeout, now
    while now < end and now - idle_since < quiet:
        if netns_workers():
            idle_since = now
        time.sleep(0.01)
        now = time.monotonic()


def compile_bytecode(python: str) -> None:
    """Write the bytecode caches of the netlab that `python` imports, as pip does when it
    installs a package. Where PYTHONDONTWRITEBYTECODE is set (this machine's shells),
    every command of an editable checkout would compile its modules again, ~0.3 s each,
    and the benchmark would time that instead of netlab."""
    code = "import compileall, os, netlab; compileall.compile_dir(os.path.dirname(netlab.__file__), quiet=1)"
    subprocess.run([python, "-c", code], capture_output=True, check=False)


@contextlib.contextmanager
def serving(netlab: Sequence[str], directory: Path) -> Iterator[Path]:
    """`netlab serve` (started as `netlab`, the command's argv), for the benchmark's served
    commands, ended by its PID afterwards; yields its log (a line per command it ran)."""
    log = directory / "serve.log"
    sock = Path(os.environ.get("NETLAB_STATE_DIR", "/run/netlab")) / ".server.sock"
    env = {k: v for k, v in os.environ.items() if k != "NETLAB_SERVER"}
    with open(log, "w") as out:
        proc = subprocess.Popen([*netlab, "serve"], stdout=out, stderr=out, env=env, cwd=directory)
        try:
            deadline = time.monotonic() + 120
            while not sock.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"netlab serve did not start: {log.read_text()[-400:]}")
                time.sleep(0.05)
            yield log
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def timed(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    return time.perf_counter() - t0, proc


@dataclass
class Timings:
    up: float
    checks: list[float]  # each `netlab check` command
    inside: float  # the last run's own `seconds`
    n_checks: int
    down: float

    def summary(self) -> str:
        runs = ", ".join(f"{t:.2f}" for t in self.checks)
        return (
            f"up_s={self.up:.2f} check_s={statistics.median(self.checks):.2f} (runs: {runs}; last run "
            f"inside netlab {self.inside:.2f}) down_s={self.down:.2f}"
        )


def up_check_down(path: Path, name: str, repeat: int) -> Timings | None:
    """None (after printing why on stderr) if `up` failed or a check did not pass."""
    checks: list[float] = []
    inside, n_checks = float("nan"), 0
    compile_bytecode(NETLAB[0])
    try:
        t_up, p = timed([*NETLAB, "up", str(path)])
        if p.returncode:
            print(p.stdout + p.stderr, file=sys.stderr)
            return None
        for _ in range(repeat):
            t, p = timed([*NETLAB, "check", str(path), "--json"])
            report = json.loads(p.stdout)
            if report["failed"]:
                bad = [c for c in report["checks"] if not c["passed"]][:3]
                print(json.dumps(bad, indent=1), file=sys.stderr)
                return None
            checks.append(t)
            inside, n_checks = report["seconds"], len(report["checks"])
    finally:
        t_down, _ = timed([*NETLAB, "down", name])
    return Timings(t_up, checks, inside, n_checks, t_down)


def render_up_check_down(path: Path, name: str, repeat: int, rounds: int) -> str | None:
    """`rounds` rounds of `netlab render` then up_check_down; the medians as one line
    ("checks=… rounds=… (medians:) render_s=… up_s=… …"), or None after printing why."""
    renders: list[float] = []
    done: list[Timings] = []
    for i in range(rounds):
        t_render, p = timed([*NETLAB, "render", str(path)])
        if p.returncode:
            print(p.stdout + p.stderr, file=sys.stderr)
            return None
        result = up_check_down(path, name, repeat)
        if result is None:
            return None
        renders.append(t_render)
        done.append(result)
        if rounds > 1:
            print(f"round {i + 1}: render_s={t_render:.2f} {result.summary()}", file=sys.stderr)
    med = statistics.median
    return (
        f"checks={done[0].n_checks} rounds={len(done)} (medians:) "
        f"render_s={med(renders):.2f} up_s={med(r.up for r in done):.2f} "
        f"check_s={med(c for r in done for c in r.checks):.2f} "
        f"check_inside_s={med(r.inside for r in done):.2f} down_s={med(r.down for r in done):.2f}"
    )
