"""Waits that scale with the machine, and deadlines that say what they waited for.

A fixed wait written for this laptop (a responder process is ready within 10 s) fails on
a machine ten times slower — QEMU emulating a CPU without KVM, a loaded CI runner — and
then "did not report ready within 10 s" tells nobody why. So every wait that depends on
how fast the machine runs Python is a `Deadline`: its budget is the base budget times
the machine's `slowness()`, and its message names both.

slowness() is NETLAB_SLOWNESS (a number ≥ 1, default 1). `netlab vm run` sets it in the
guest: 1 under KVM, EMULATED_SLOWNESS when QEMU emulates (measured: Python starts and
runs about 10× slower there; the factor is deliberately generous — a budget only costs
time when something is really broken). Waits that are part of what a check asserts
(a probe's timeout, a check's `wait:`) are the lab's to choose and do not scale.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

ENV = "NETLAB_SLOWNESS"
EMULATED_SLOWNESS = 10.0


def slowness() -> float:
    """How many times slower than a normal machine this one runs (≥ 1)."""
    raw = os.environ.get(ENV, "")
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        return 1.0
    return value if value >= 1.0 else 1.0


def scaled(seconds: float) -> float:
    """A budget of `seconds` on a normal machine, on this one."""
    return seconds * slowness()


class Deadline:
    """`base` seconds (× the machine's slowness) for `what`, from now. (A plain class, not
    a dataclass: the served command's client imports this module, and dataclasses costs
    it ~4 ms.)"""

    def __init__(
        self, base: float, what: str, clock: Callable[[], float] = time.monotonic, factor: float | None = None
    ) -> None:
        self.base = base
        self.what = what  # what is awaited, e.g. "the responders to report ready"
        self.clock = clock
        self.factor = slowness() if factor is None else factor
        self.started = clock()

    @property
    def budget(self) -> float:
        return self.base * self.factor

    def left(self) -> float:
        """Seconds left (0 once expired)."""
        return max(0.0, self.started + self.budget - self.clock())

    def expired(self) -> bool:
        return self.left() <= 0

    def waited(self) -> float:
        return self.clock() - self.started

    def message(self) -> str:
        """Why a wait ended without what it waited for: how long, and where the budget came from."""
        budget = (
            f"{self.budget:g} s"
            if self.factor == 1
            else (f"{self.budget:g} s: {self.base:g} s × slowness {self.factor:g} from {ENV}")
        )
        return f"waited {self.waited():.1f} s for {self.what} (budget {budget})"
