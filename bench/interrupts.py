"""Interrupt `netlab up`, `check --up` and `down` at random moments, many times, and count
the outcomes: the promise (one line saying what was interrupted and undone, exit 130/143,
nothing left — or exit 0 once the command had finished) is judged exactly as in
tests/kernel/test_interrupts.py, which runs 42 of these.

    bench/interrupts [--runs 200] [--seed 1] [--max-delay 1.2] [--commands up,check --up,down]

Safety: each run's lab is named `benchint-<run>-<i>`, built and removed by netlab itself;
after every run `netlab down` takes away whatever the interrupted command left (and that
is counted as a failure). Needs root; run it under `flock /tmp/netlab-kernel.lock`.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.kernel.conftest import cli_argv, cli_env, leftovers, state_dir  # noqa: E402
from tests.kernel.interrupting import TINY, Outcome, interrupt, judge, lab_is_up  # noqa: E402


def one(command: str, sig: signal.Signals, delay: float, name: str, directory: Path) -> Outcome:
    path = directory / f"{name}.yaml"
    path.write_text(TINY.format(name=name))
    env = cli_env()
    try:
        if command == "down":
            subprocess.run(cli_argv("up", str(path)), env=env, capture_output=True, check=True, timeout=120)
            argv = cli_argv("down", name)
        else:
            argv = cli_argv(*command.split(), str(path))
        rc, out, err = interrupt(argv, sig, delay, env)
        outcome = Outcome(command, sig, delay, rc, out, err)
        outcome.problems = judge(outcome, name, leftovers(name), lab_is_up(name, state_dir()))
        return outcome
    finally:
        subprocess.run(cli_argv("down", name), env=env, capture_output=True, timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-delay", type=float, default=1.2, help="latest moment, in seconds after start")
    ap.add_argument("--commands", default="up,check --up,down")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/interrupts: needs root (it builds labs)", file=sys.stderr)
        return 3
    rng = random.Random(args.seed)
    commands = [c.strip() for c in args.commands.split(",")]
    run = secrets.token_hex(3)
    tally: collections.Counter[str] = collections.Counter()
    failures = []
    with tempfile.TemporaryDirectory(prefix="netlab-benchint-") as tmp:
        for i in range(args.runs):
            command, sig = rng.choice(commands), rng.choice([signal.SIGINT, signal.SIGTERM])
            o = one(command, sig, rng.uniform(0, args.max_delay), f"benchint-{run}-{i}", Path(tmp))
            tally[f"{command} {sig.name} exit {o.rc}"] += 1
            if o.problems:
                failures.append(o)
                print(f"FAIL {o}", file=sys.stderr)
    for key, n in sorted(tally.items()):
        print(f"{n:5d}  {key}")
    print(f"runs={args.runs} failures={len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
