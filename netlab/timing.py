"""NETLAB_TIMING=1: each phase of a command prints how long it took on stderr (for
profiling: bench/README.md). Off, a phase costs one flag test."""

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
    started = time.perf_counter()
    try:
        yield
    finally:
        print(f"netlab: {label}: {time.perf_counter() - started:.3f} s", file=sys.stderr)
