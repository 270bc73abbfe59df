"""Benchmark reconcile: how long `netlab up FILE` takes, as a whole command, to change a
running 500-pod lab after a one-line edit of its file.

    bench/reconcile [--pods 500] [--nodes 2] [--rounds 5] [--serve] [--baseline DIR | --served]

The lab: a `cluster:` (host-gw backend, `--nodes` nodes) whose `web` deployment has
`--pods` replicas (serving tcp/8080 with `--serve`), and a plain node pair `gw`/`ext`
with a route on `ext`. Once it is up, each round makes, interleaved:

  add-pod       web's replicas + 1 (one namespace, its veth, address and routes; the
                node's route to it), then back (not timed)
  change-route  ext's route to another destination (route del + route add), then back
  nothing       `up` of the unchanged file (the floor: start-up, load, plan, state)

and prints each edit's median wall time (and the spread) over the rounds, and its median
CPU time (user + sys of the command and its children, which other load on the machine
disturbs less), with the load average. NETLAB_TIMING=1 in the environment makes netlab
print its own stage times.

With `--baseline DIR` (another netlab source tree, e.g. `git archive main | tar -x -C DIR`),
every timed `up` is run twice in a row, by DIR's netlab (`PYTHONPATH=DIR`) and by this
checkout's, their order alternating round by round, on the same running lab: a
before/after comparison in one run, under the same load. Both must read each other's
state (the same state format).

With `--served`, a `netlab serve` of this checkout runs for the benchmark, and every timed
`up` is run twice in a row, by the command itself (NETLAB_SERVER=0: the baseline) and by
the server's child, their order alternating round by round. A served command's CPU time
is the client's and the server's child's (from the server's log line for it).

Safety: the lab lives in namespaces named `benchrc-<run>.*`, created and removed by
netlab itself; `netlab down` runs in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from labrun import NETLAB, compile_bytecode, serving, timed

Edit = Callable[[dict[str, Any]], None]


def lab(name: str, pods: int, nodes: int, serve: bool) -> dict[str, Any]:
    web: dict[str, Any] = {"replicas": pods, "labels": {"app": "web"}}
    if serve:
        web["serve"] = ["tcp/8080"]
    return {
        "name": name,
        "cluster": {
            "backend": "host-gw",
            "pod_cidr": "10.244.0.0/16",
            "subnet_len": 22,
            "nodes": {f"node{i + 1}": {} for i in range(nodes)},
            "pods": {"web": web},
        },
        "nodes": {
            "gw": {"links": {"eth0": {"peer": "ext:eth0", "addresses": ["10.50.0.1/24"]}}},
            "ext": {
                "links": {"eth0": {"addresses": ["10.50.0.2/24"]}},
                "routes": [{"to": "10.60.0.0/24", "via": "10.50.0.1"}],
            },
        },
    }


def add_pod(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["web"]["replicas"] += 1


def change_route(d: dict[str, Any]) -> None:
    d["nodes"]["ext"]["routes"] = [{"to": "10.61.0.0/24", "via": "10.50.0.1"}]


def nothing(d: dict[str, Any]) -> None:
    pass


EDITS: dict[str, Edit] = {"add-pod": add_pod, "change-route": change_route, "nothing": nothing}


LOCAL = {**os.environ, "NETLAB_SERVER": "0"}  # the command runs itself, also while --served's server runs


def _up(path: Path, data: dict[str, Any], expect: str, how: str | None = None) -> tuple[float, float]:
    """Write the lab file and run `netlab up` of it — by the baseline tree's netlab (`how`
    a directory), by the server (`how` == SERVED), or by this checkout's: its wall and
    CPU time."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**LOCAL, "PYTHONPATH": how} if how not in (None, SERVED) else None if how == SERVED else LOCAL
    ran = _served_so_far() if how == SERVED else 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # not from a checkout's top directory: `python -m` would import its netlab, whatever PYTHONPATH says
    seconds, p = timed([*NETLAB, "up", str(path)], env, cwd=path.parent)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode or expect not in p.stdout:
        raise SystemExit(f"netlab up: exit {p.returncode}, expected {expect!r}\n{p.stdout}{p.stderr}")
    if os.environ.get("NETLAB_TIMING") and p.stderr:
        print(p.stderr, end="", file=sys.stderr)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu + (_served_cpu(ran) if how == SERVED else 0.0)


SERVED = "served"
SERVER_LOG: list[Path] = []  # --served: the server's log


def _served_lines() -> list[str]:
    return [line for line in SERVER_LOG[0].read_text().splitlines() if " → exit " in line]


def _served_so_far() -> int:
    return len(_served_lines()) if SERVER_LOG else 0


def _served_cpu(ran: int) -> float:
    """The CPU time of the server's child that ran the command after the first `ran`
    (its log line comes once the child is reaped, a moment after the client ends)."""
    deadline = time.monotonic() + 10
    while len(lines := _served_lines()) <= ran:
        if time.monotonic() > deadline:
            raise SystemExit(f"the command was not run by the server: {SERVER_LOG[0].read_text()[-400:]}")
        time.sleep(0.005)
    return float(lines[ran].rsplit("(cpu ", 1)[1].split(" s)")[0])


def _compile(tree: str, cwd: Path) -> None:
    """Bytecode of the baseline tree, as compile_bytecode writes this checkout's; and a
    check that the baseline's commands really import it."""
    code = f"import compileall; compileall.compile_dir({str(Path(tree) / 'netlab')!r}, quiet=1)"
    timed([NETLAB[0], "-c", code])
    _, p = timed([NETLAB[0], "-c", "import netlab; print(netlab.__file__)"], {**os.environ, "PYTHONPATH": tree}, cwd)
    if not p.stdout.startswith(tree + "/"):
        raise SystemExit(f"--baseline {tree}: its commands would import {p.stdout.strip() or p.stderr}")


Times = dict[str, list[tuple[float, float]]]  # edit → (wall, cpu) of each round


def _summary(times: Times) -> str:
    parts = []
    for edit, runs in times.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        parts.append(
            f"{edit}_s={statistics.median(wall):.3f} ({min(wall):.3f}–{max(wall):.3f}, cpu {statistics.median(cpu):.3f})"
        )
    return " ".join(parts)


def _ratio(times: Times, before: Times, edit: str, i: int) -> float:
    return statistics.median(r[i] for r in times[edit]) / statistics.median(r[i] for r in before[edit])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--serve", action="store_true", help="web's pods serve tcp/8080 (a responder each)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--baseline", metavar="DIR", help="also time DIR's netlab, interleaved (a source tree)")
    group.add_argument("--served", action="store_true", help="also time each up run by `netlab serve`, interleaved")
    args = ap.parse_args()
    name = f"benchrc-{secrets.token_hex(2)}"
    base = lab(name, args.pods, args.nodes, args.serve)
    times: Times = {edit: [] for edit in EDITS}
    before: Times = {edit: [] for edit in EDITS}
    compile_bytecode(NETLAB[0])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        if args.baseline:
            args.baseline = str(Path(args.baseline).resolve())
            _compile(args.baseline, path.parent)
        other = args.baseline  # what `before` times: the baseline tree's commands, or (--served) this one's
        with contextlib.ExitStack() as stack:
            if args.served:
                SERVER_LOG.append(stack.enter_context(serving(NETLAB, path.parent)))
            _rounds(args, name, base, path, times, before, other)
    head = f"pods={args.pods} nodes={args.nodes} serve={args.serve} rounds={args.rounds} load={load:.2f}"
    if args.baseline or args.served:
        label = "baseline" if args.baseline else "run by the command itself"
        print(f"{head} {label}: {_summary(before)}")
        ratios = " ".join(
            f"{e}={_ratio(times, before, e, 0):.2f} (cpu {_ratio(times, before, e, 1):.2f})" for e in EDITS
        )
        this = "this" if args.baseline else "run by the server"
        print(f"{head} {this}: {_summary(times)} ratio {this}/{label} (medians): {ratios}")
    else:
        print(f"{head} {_summary(times)}")
    return 0


def _rounds(
    args: argparse.Namespace,
    name: str,
    base: dict[str, Any],
    path: Path,
    times: Times,
    before: Times,
    other: str | None,
) -> None:
    """Up, the rounds of edits (each timed `up` also by `other`'s way when comparing), then
    down (also on an error or Ctrl-C)."""
    mine = SERVED if args.served else None
    try:
        t_up, _ = _up(path, base, "is up")
        print(f"up of {args.pods} pods: {t_up:.2f} s", file=sys.stderr)
        for i in range(args.rounds):
            for edit_name, edit in EDITS.items():
                data = copy.deepcopy(base)
                edit(data)
                expect = "" if edit is nothing else "reconciled in place"
                runs = [(mine, times[edit_name])]
                if args.baseline or args.served:  # the other way first in odd rounds, second in even ones
                    runs.insert(len(runs) * (i % 2), (other, before[edit_name]))
                for how, into in runs:
                    into.append(_up(path, data, expect, how))
                    if edit is not nothing:
                        _up(path, base, "reconciled in place")
            line = " ".join(f"{e}={t[-1][0]:.3f}" for e, t in times.items())
            if args.baseline or args.served:
                line += " (other way " + " ".join(f"{e}={t[-1][0]:.3f}" for e, t in before.items()) + ")"
            print(f"round {i + 1}: {line}", file=sys.stderr)
    finally:
        timed([*NETLAB, "down", name], LOCAL)


if __name__ == "__main__":
    sys.exit(main())
