"""NETLAB_TIMING=1: each phase of a command prints how long it took on stderr, in wall
time and in this process's CPU time (which other load on the machine disturbs less;
for profiling: bench/README.md). Off, a phase costs one flag test."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENABLED = bool(os.environ.get("NETLAB_TIMING"))


@contextmanager
def phase(label: str) -> Iterator[None]:
    if not ENABLED:
        yield
        return
    started, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"netlab: {label}: {wall:.3f} s (cpu {cpu:.3f} s)", file=sys.stderr)


def total() -> None:
    """The CPU time of the whole command so far, start-up included."""
    if ENABLED:
        print(f"netlab: whole command: cpu {time.process_time():.3f} s", file=sys.stderr)
