"""What crosses a lab interface, as tcpdump (the kernel's own view, independent of netlab's
capture) prints it — evidence for the VM tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from netlab.pytest_plugin import LabHandle


@contextmanager
def tcpdump(lab: LabHandle, node: str, ifname: str, expression: str, *, settle: float = 1.0) -> Iterator[list[str]]:
    """tcpdump on node's ifname for the with block; the list fills with its lines after it
    (`settle` seconds after the block, for the last packets on their way: slow under
    emulation). The process is this test's own, ended by its PID."""
    # --immediate-mode: under emulation, packets still buffered when tcpdump ends are never printed
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(node), "tcpdump", "-n", "-l", "--immediate-mode", "-i", ifname, expression],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        said = ""
        while "listening on" not in said:  # the filter is attached: nothing is missed from here
            line = proc.stderr.readline()
            if not line:
                raise AssertionError(f"tcpdump on {node}:{ifname} did not start: {said}")
            said += line
        yield lines
        time.sleep(settle)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    lines += [line for line in out.splitlines() if line.strip()]
