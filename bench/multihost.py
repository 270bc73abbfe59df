"""Benchmark one lab over several hosts, on simulated hosts (netlab.multihost.simulate:
real sshd, real ssh, each host a namespace with its own /run), as whole CLI commands.

    bench/multihost [--pods 200] [--repeat 3] [--probes 100] [--baseline DIR] [--served] [--direct]

up: a flannel cluster of 3 nodes × PODS pods, one node per host (3 hosts), against 1 node
× PODS pods on one host through the same path (`up --hosts` with a one-host inventory);
the runs are interleaved, and each is taken down before the next. check: PROBES TCP
probes from pods on node1 (h1) to pods on node2 (h2), every one crossing the hosts'
tunnel, timed as `netlab check` (ssh, the agents' start-up and the probes) and as the
run the report states. The issue's targets: 3 hosts ≤ 1.5× one host; the check ≤ 2 s.
With `--baseline DIR` (another netlab source tree, e.g. `git archive main | tar -x -C
DIR`), every up is also run with DIR's netlab on the coordinator and the hosts,
interleaved. Each tree's bytecode is written first (this machine's shells set
PYTHONDONTWRITEBYTECODE: a command would compile netlab every time). With `--served` every
host runs `netlab serve` (each host's part is built by its server's child, without a start-up
of its own). With `--direct`, each lab's sub-labs are also built by the hosts' own `netlab up`,
run inside the hosts at once without ssh or a coordinator: the ratio of those is what this
machine allows for three times the namespaces on one kernel and its cores, whatever
coordinates them.

Safety: every namespace is the simulation's or a lab's inside a simulated host; close()
removes them, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from netlab.multihost.engine import render_sub_lab
from netlab.multihost.lifecycle import load_split
from netlab.multihost.simulate import SimulatedHosts

NETLAB = str(Path(sys.executable).with_name("netlab"))


def cluster(name: str, nodes: int, per_node: int, probes: int = 0) -> dict[str, Any]:
    """nodes × per_node pods (web-k on node (k mod nodes) + 1), node i pinned to host hi;
    `probes` TCP checks from node1's pods to node2's."""
    checks = [
        {
            "name": f"probe {i + 1}: web-{nodes * (i % per_node)} → web-{1 + nodes * ((i * 7) % per_node)}",
            "probe": {"from": f"web-{nodes * (i % per_node)}", "to": f"web-{1 + nodes * ((i * 7) % per_node)}"}
            | {"port": 8080},
            "expect": {"served_by": f"web-{1 + nodes * ((i * 7) % per_node)}"},
        }
        for i in range(probes)
    ]
    return {
        "name": name,
        "cluster": {
            "backend": "vxlan",
            "pod_cidr": "10.244.0.0/16",
            "nodes": {f"node{i + 1}": {"host": f"h{i + 1}"} for i in range(nodes)},
            "pods": {"web": {"replicas": nodes * per_node, "serve": ["tcp/8080"]}},
        },
        "checks": checks,
    }


def run(sim: SimulatedHosts, *args: str, tree: str | None = None) -> tuple[float, str]:
    """A netlab command on the coordinator (with tree: that source tree's netlab)."""
    env = sim.env | ({"PYTHONPATH": tree} if tree else {})
    started = time.monotonic()
    done = subprocess.run(sim.coordinator_argv([NETLAB, *args]), capture_output=True, text=True, timeout=1800, env=env)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"netlab {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took, done.stdout


def inventory(sim: SimulatedHosts, hosts: int, where: Path, tree: str | None = None) -> str:
    """The simulation's inventory with its first `hosts` hosts only (with tree: the hosts
    run that source tree's netlab)."""
    drop = {f"h{i + 1}:" for i in range(hosts, len(sim.hosts))}
    lines = Path(sim.inventory).read_text().splitlines(keepends=True)
    text = "".join(line for line in lines if not line.split() or line.split()[0] not in drop)
    path = where / f"hosts-{hosts}.yaml"
    if tree:
        wrapper = where / "netlab-baseline"
        wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={tree} exec {NETLAB} "$@"\n')
        wrapper.chmod(0o755)
        text = text.replace(f"netlab_command: {sim.host_netlab}", f"netlab_command: {wrapper}")
        path = where / f"hosts-{hosts}-baseline.yaml"
    path.write_text(text)
    return str(path)


def up_directly(sim: SimulatedHosts, path: Path, hosts: str, work: Path) -> float:
    """Seconds for each host's `netlab up` of its sub-lab (as the coordinator splits it),
    started inside every host at once; each is taken down afterwards."""
    _, split = load_split(path, None, hosts)
    files = {}
    for name, sub in split.sub_labs.items():
        files[name] = work / f"{path.stem}-{name}.yaml"
        files[name].write_text(render_sub_lab(sub, f"part of {split.lab.name} on {name}, built directly"))
    started = time.monotonic()
    ups = {
        n: subprocess.Popen(sim.inside_argv(sim.host(n), [sim.host_netlab, "up", str(f)]), stdout=subprocess.DEVNULL)
        for n, f in files.items()
    }
    failed = [n for n, p in ups.items() if p.wait(timeout=1800) != 0]
    took = time.monotonic() - started
    for name in files:
        sim.inside(sim.host(name), [sim.host_netlab, "down", split.lab.name])
    if failed:
        raise SystemExit(f"netlab up of the sub-lab failed directly on {', '.join(failed)}")
    return took


def compiled(tree: str) -> None:
    """The tree's bytecode written, as pip does on install."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", f"{tree}/netlab"], check=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="netlab-bench-mh-"))
    try:
        bench(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=200, help="pods per node (per host)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-check", action="store_true", help="time the check only, not up")
    parser.add_argument("--probes", type=int, default=100, help="cross-host probe checks")
    parser.add_argument("--baseline", metavar="DIR", help="also time DIR's netlab (a source tree), interleaved")
    parser.add_argument("--served", action="store_true", help="every host runs `netlab serve`")
    parser.add_argument("--direct", action="store_true", help="also time the hosts' own up of their sub-labs")
    o = parser.parse_args()
    labs = {
        "1 host": (work / "one.yaml", cluster("benchmh-one", 1, o.pods), 1),
        "3 hosts": (work / "three.yaml", cluster("benchmh-three", 3, o.pods), 3),
    }
    here = str(Path(__file__).resolve().parents[1])
    trees: dict[str, str | None] = {"": os.environ.get("PYTHONPATH") or None}
    if o.baseline:
        trees["baseline "] = str(Path(o.baseline).resolve())
    for tree in trees.values():
        compiled(tree or here)
    times: dict[str, list[float]] = {f"{t}{k}": [] for t in trees for k in labs}
    direct: dict[str, list[float]] = {k: [] for k in labs}
    with SimulatedHosts(3, netlab=NETLAB, serve=o.served) as sim:
        invs = {
            f"{t}{k}": inventory(sim, n, work, tree if t else None)
            for t, tree in trees.items()
            for k, (_, _, n) in labs.items()
        }
        for path, data, _ in labs.values():
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        for r in range(0 if o.only_check else o.repeat):
            for t, tree in trees.items():
                for key, (path, data, _) in labs.items():
                    print(f"run {r + 1}: up {t}{key} ({len(data['cluster']['nodes'])} × {o.pods} pods), load {load()}")
                    took, _ = run(sim, "up", "--hosts", invs[f"{t}{key}"], str(path), tree=tree if t else None)
                    times[f"{t}{key}"].append(took)
                    run(sim, "down", data["name"], tree=tree if t else None)
            for key, (path, _, _) in labs.items() if o.direct else ():
                print(f"run {r + 1}: up {key} directly on the hosts, load {load()}")
                direct[key].append(up_directly(sim, path, invs[key], work))
        checks = work / "checks.yaml"
        checks.write_text(yaml.safe_dump(cluster("benchmh-check", 2, 20, o.probes), sort_keys=False))
        run(sim, "up", "--hosts", invs["3 hosts"], str(checks))
        walls: dict[str, list[float]] = {t: [] for t in trees}
        stated: dict[str, list[float]] = {t: [] for t in trees}
        try:
            for _ in range(o.repeat):
                for t, tree in trees.items():  # by name: the record says where (with the tree's netlab on the hosts)
                    args = ["check", "benchmh-check", "--json", "--hosts", invs[f"{t}3 hosts"]]
                    took, out = run(sim, *args, tree=tree if t else None)
                    report = json.loads(out)
                    assert report["passed"] == o.probes, report["failed"]
                    walls[t].append(took)
                    stated[t].append(report["seconds"])
        finally:
            run(sim, "down", "benchmh-check")
    print(f"\nload average at the end: {load()} (2 cores, shared)")
    for key, values in [(k, v) for k, v in times.items() if v]:
        print(f"up {key:17} × {o.pods} pods each: " + ", ".join(f"{v:.2f}" for v in values) + " s")
    for t in trees if not o.only_check else ():
        one, three = statistics.median(times[f"{t}1 host"]), statistics.median(times[f"{t}3 hosts"])
        print(f"{t}ratio 3 hosts / 1 host (medians {one:.2f}, {three:.2f} s): {three / one:.2f} (target ≤ 1.5)")
    if o.direct and not o.only_check:
        one, three = statistics.median(direct["1 host"]), statistics.median(direct["3 hosts"])
        print(
            "directly on the hosts (their own `netlab up`, at once; no ssh, no coordinator): 1 host "
            + ", ".join(f"{v:.2f}" for v in direct["1 host"])
            + " s; 3 hosts "
            + ", ".join(f"{v:.2f}" for v in direct["3 hosts"])
            + f" s; ratio {three / one:.2f}: this machine's own for three times the namespaces"
        )
    for t in trees:
        print(
            f"{t}check of {o.probes} cross-host probes: wall "
            + ", ".join(f"{v:.2f}" for v in walls[t])
            + f" s (median {statistics.median(walls[t]):.2f}); as reported "
            + ", ".join(f"{v:.2f}" for v in stated[t])
            + " s (target ≤ 2 s)"
        )


if __name__ == "__main__":
    main()
