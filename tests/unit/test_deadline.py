"""Waits that scale with the machine (netlab/deadline.py), against a fake clock."""

from __future__ import annotations

import pytest

from netlab import deadline
from netlab.deadline import Deadline


class SlowClock:
    """A clock that the test moves: one 'second' of the test is `slow` seconds of it."""

    def __init__(self, slow: float) -> None:
        self.now = 1000.0
        self.slow = slow

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        """What takes `seconds` on a normal machine takes `slow` times as long here."""
        self.now += seconds * self.slow


@pytest.mark.parametrize(("env", "factor"), [(None, 1.0), ("10", 10.0), ("2.5", 2.5), ("0.1", 1.0), ("x", 1.0)])
def test_slowness_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: str | None, factor: float) -> None:
    if env is None:
        monkeypatch.delenv(deadline.ENV, raising=False)
    else:
        monkeypatch.setenv(deadline.ENV, env)
    assert deadline.slowness() == factor  # never below 1: a machine is not made faster by a typo
    assert deadline.scaled(10) == 10 * factor


def test_a_slow_machine_gets_a_budget_as_slow_as_it_is() -> None:
    # 8 s of work on a normal machine against a 10 s budget: fine on it, too slow ten
    # times slower with a fixed budget, fine again once the budget scales.
    for slow, factor, expired in [(1, 1, False), (10, 1, True), (10, 10, False)]:
        clock = SlowClock(slow)
        d = Deadline(10, "the responders to report ready", clock=clock, factor=factor)
        clock.work(8)
        assert d.expired() is expired, (slow, factor)


def test_left_counts_down_and_stops_at_zero() -> None:
    clock = SlowClock(3)
    d = Deadline(10, "x", clock=clock, factor=3)
    assert d.budget == 30 and d.left() == 30
    clock.work(4)  # 12 s of the slow clock
    assert d.left() == 18 and not d.expired()
    clock.work(7)
    assert d.left() == 0 and d.expired()


def test_an_expired_deadline_says_how_long_it_waited_and_why() -> None:
    clock = SlowClock(10)
    d = Deadline(10, "the responder process to report ready", clock=clock, factor=10)
    clock.work(10.5)
    assert d.expired()
    assert d.message() == (
        "waited 105.0 s for the responder process to report ready "
        f"(budget 100 s: 10 s × slowness 10 from {deadline.ENV})"
    )
    plain = Deadline(10, "it", clock=clock, factor=1)
    clock.work(1.2)
    assert plain.message() == "waited 12.0 s for it (budget 10 s)"
