"""Ctrl-C and SIGTERM at seeded random moments of `up`, `check --up` and `down` (root,
real kernel): one line saying what was interrupted and what was undone, no traceback,
exit 130/143, nothing left — or exit 0 when the signal came after the command finished
(after `up` reported success, the lab is then up and taken down here).

42 runs, each on a tiny lab (the whole `up` takes under a second, so moments from 0 to
1 s cover importing, loading, building, starting the responder and reporting). More runs,
with other moments: bench/interrupts.py.
"""

from __future__ import annotations

import random
import signal
from typing import Any

import pytest

from tests.kernel.conftest import cli_env, state_dir
from tests.kernel.interrupting import TINY, Outcome, interrupt, judge, lab_is_up

COMMANDS = ("up", "check --up", "down")
RUNS_EACH = 7  # × 3 commands × 2 signals = 42


def moments() -> list[Any]:
    cases = []
    for command in COMMANDS:
        for sig in (signal.SIGINT, signal.SIGTERM):
            for i in range(RUNS_EACH):
                delay = random.Random(f"{command}/{sig.name}/{i}").uniform(0.0, 1.0)
                cases.append(pytest.param(command, sig, delay, id=f"{command.replace(' --', '-')}-{sig.name}-{i}"))
    return cases


@pytest.mark.parametrize(("command", "sig", "delay"), moments())
def test_signal_at_a_random_moment(
    command: str, sig: signal.Signals, delay: float, lab_file: Any, kn: Any, netlab_cli: Any
) -> None:
    name = lab_file.new_name()
    lab = lab_file(TINY.format(name=name), name=name)
    if command == "down":
        assert netlab_cli("up", lab.path).rc == 0
        argv = kn.cli_argv("down", lab.name)
    else:
        argv = kn.cli_argv(*command.split(), lab.path)
    rc, out, err = interrupt(argv, sig, delay, cli_env())
    outcome = Outcome(command, sig, delay, rc, out, err)
    up_after = lab_is_up(lab.name, state_dir())
    outcome.problems = judge(outcome, lab.name, kn.leftovers(lab.name), up_after)
    assert not outcome.problems, str(outcome)
    if up_after:  # the signal came after success (up), or before down removed anything
        assert netlab_cli("down", lab.name).rc == 0
    assert kn.leftovers(lab.name) == []
