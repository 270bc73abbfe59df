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

from tests.kernel.conftest import cli_env, namespaces_of, state_dir
from tests.kernel.interrupting import TINY, Outcome, interrupt, interrupt_when, judge, lab_is_up

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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("made", [0.2, 1.0])
def test_signal_while_the_namespaces_are_made(made: float, sig: signal.Signals, lab_file: Any, kn: Any) -> None:
    """The namespace stage makes every namespace first, then each one's sysctls and mark:
    a signal once a fifth of them exist (the first pass) or once all do (the second pass,
    or just after it) undoes them all, in one line."""
    pods = 300
    lab = lab_file({"nodes": {f"p{i}": {} for i in range(pods)}})
    ready = lambda: len(namespaces_of(lab.name)) >= pods * made  # noqa: E731
    rc, out, err = interrupt_when(kn.cli_argv("up", lab.path), sig, ready, cli_env())
    if rc == 0:  # the rest of `up` after the last namespace was shorter than our look
        assert "is up" in out, (out, err)
        return
    assert rc == 128 + sig, (rc, out, err)
    assert err.strip().startswith(f"netlab: up of lab {lab.name} interrupted by {sig.name} while creating "), err
    assert err.strip().endswith("everything created so far was removed") and len(err.strip().splitlines()) == 1, err
    assert kn.leftovers(lab.name) == []
