"""`netlab vm run --timeout`'s watchdog, run where it runs: inside the VM. A command that
outlives its time is shown (where each process waits in the kernel, a Python command's
own stacks) and then ended with everything it started; the exit code says it timed out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netlab import deadline, vm

SLEEPER = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_command_past_its_timeout_is_shown_then_ended_with_all_it_started(tmp_path: Path) -> None:
    ready = tmp_path / "child-pid"
    secs = round(deadline.scaled(2))
    run = vm.VmRun([sys.executable, "-c", SLEEPER, str(ready)], tmp_path, "unused", kvm=False, timeout=secs)
    script = "\n".join(vm.watched(run)) + '\necho "rc=$rc"\n'
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=secs + 300)
    out = done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("rc=124"), out
    assert f"the command ran past its {secs} s (--timeout)" in out, out
    assert "-- kernel stack of" in out and "-- the kernel's last messages:" in out, out
    assert "Fatal Python error: Aborted" in out and "in <module>" in out, out  # the command's own stacks
    child = int(ready.read_text())
    assert not _alive(child), f"{child} (sleep 600, started by the command) outlived it:\n{out}"
    assert (tmp_path / vm.TIMED_OUT).exists()
