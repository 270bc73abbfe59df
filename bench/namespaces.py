"""Benchmark netlab at the scale of thousands of namespaces: a `host` node with one bridge
per 1000 pods (a Linux bridge takes at most 1024 ports) and N-1 pods (veth, address,
default route), brought up, checked (two probes across the lab) and taken down as whole
CLI commands. For each command: its wall time, the peak RSS of the netlab process
(getrusage of the waited child, as /usr/bin/time -v reports it) and the most
descriptors it held open (sampled from /proc/PID/fd every 0.1 s).

    bench/namespaces [--namespaces 5000] [--nofile HARD] [--floor]

Each command starts with the soft RLIMIT_NOFILE of a login shell (1024; netlab lifts it to
the hard limit itself); `--nofile HARD` also lowers the hard limit, to see how netlab
behaves on a machine that allows fewer descriptors than two per namespace.

The issue's targets (issue 21): 5000 namespaces up and down without error, at most 300 MB;
2000 pods up in at most 3.5 s, down in 1.5 s. `--floor` first builds and removes the same lab
by raw netlink (bench/floor.py, the floor of bench/run: one bridge per 1000 pods as here),
timed as commands too, and adds floor_up_s, floor_down_s and up_ratio (netlab's up ÷ the
floor's) to the last line: what this machine's kernel takes for the lab at the moment.

Safety: the lab lives in namespaces named `benchns-<run>.*`, created and removed by netlab
itself (the floor's `benchns-<run>-floor-*`, by bench/floor.py); `down` runs in a finally
(also on Ctrl-C), and the script then checks that none of them is left.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from labrun import NETLAB, compile_bytecode, wait_netns_idle

FLOOR = Path(__file__).with_name("floor.py")

PODS_PER_BRIDGE = 1000


def pod_addr(i: int) -> str:
    """Pod i's address: bridge i // 1000 has 10.<bridge>.0.0/16, its pods from .0.2 on."""
    b, n = divmod(i, PODS_PER_BRIDGE)
    return f"10.{b}.{(n + 2) // 256}.{(n + 2) % 256}"


def lab(name: str, pods: int) -> dict[str, Any]:
    links: dict[str, Any] = {}
    nodes: dict[str, Any] = {"host": {"sysctls": {"net.ipv4.ip_forward": 1}, "links": links}}
    for b in range((pods + PODS_PER_BRIDGE - 1) // PODS_PER_BRIDGE):
        links[f"br{b}"] = {"kind": "bridge", "addresses": [f"10.{b}.0.1/16"]}
    for i in range(pods):
        b = i // PODS_PER_BRIDGE
        links[f"p{i}"] = {"peer": f"pod{i}:eth0", "master": f"br{b}"}
        nodes[f"pod{i}"] = {
            "links": {"eth0": {"addresses": [f"{pod_addr(i)}/16"]}},
            "routes": [{"to": "default", "via": f"10.{b}.0.1"}],
        }
    last = pods - 1
    # `wait:` in case a link is slow after all: before `up` waited for its links (kernel/settle.py),
    # ~230 host ports were not yet forwarding when `up` of 5000 namespaces returned, all of
    # them ~2 s later; the run prints how long the checks took to pass.
    checks = [
        {"name": "first pod → last pod", "probe": {"from": "pod0", "to": f"pod{last}"}, "wait": 10},
        {
            "name": "last pod → its bridge",
            "probe": {"from": f"pod{last}", "to": f"10.{last // PODS_PER_BRIDGE}.0.1"},
            "wait": 10,
        },
    ]
    return {"name": name, "nodes": nodes, "checks": checks}


@dataclass
class Run:
    seconds: float
    rc: int
    max_rss_mb: float
    max_fds: int
    output: str
    errors: str

    def words(self) -> str:
        return f"{self.seconds:.2f} s, peak RSS {self.max_rss_mb:.0f} MB, at most {self.max_fds} descriptors"


def run(argv: list[str], nofile: int | None) -> Run:
    """argv as a child with a login shell's soft descriptor limit (and `nofile` as its hard
    one), waited for with wait4: its own peak RSS, not the benchmark's."""

    def limits() -> None:
        hard = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, preexec_fn=limits)
        most = [0]
        done = threading.Event()
        sampler = threading.Thread(target=_count_fds, args=(child.pid, most, done), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Run(seconds, child.returncode, usage.ru_maxrss / 1024, most[0], text, errors)


def _count_fds(pid: int, most: list[int], done: threading.Event) -> None:
    while not done.wait(0.1):
        try:
            most[0] = max(most[0], len(os.listdir(f"/proc/{pid}/fd")))
        except OSError:
            return


def left(name: str, sep: str = ".") -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{name}{sep}"))


def remove_left(name: str, sep: str = ".") -> bool:
    """Remove the namespaces of `name` a down left; whether there were any."""
    stray = left(name, sep)
    if stray:
        print(f"{len(stray)} namespaces of {name} left after down: removing them", file=sys.stderr)
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {n}\n" for n in stray), text=True)
    return bool(stray)


def floor(name: str, pods: int, nofile: int | None) -> dict[str, Run]:
    """bench/floor.py's up and down of the same lab, as commands; nothing of it left."""
    prefix = f"{name}-floor"
    results: dict[str, Run] = {}
    wait_netns_idle()  # a previous run's namespaces may still be being freed
    try:
        results["floor_up"] = run([sys.executable, str(FLOOR), "up", "--prefix", prefix, "--n", str(pods)], nofile)
    finally:
        results["floor_down"] = run([sys.executable, str(FLOOR), "down", "--prefix", prefix, "--n", str(pods)], nofile)
        failed = remove_left(prefix, "-")
    for step, r in results.items():
        print(f"{step}: {r.words()}, exit {r.rc}", file=sys.stderr)
        if r.rc or failed:
            raise SystemExit(f"the floor failed: {(r.output + r.errors)[-3000:]}")
    wait_netns_idle()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=5000, help="the host and N-1 pods")
    ap.add_argument("--nofile", type=int, help="the hard RLIMIT_NOFILE of the netlab commands")
    ap.add_argument(
        "--floor", action="store_true", help="build and remove the lab by raw netlink first (bench/floor.py)"
    )
    args = ap.parse_args()
    name = f"benchns-{secrets.token_hex(2)}"
    pods = args.namespaces - 1
    compile_bytecode(NETLAB[0])
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump(lab(name, pods), sort_keys=False))
        results: dict[str, Run] = floor(name, pods, args.nofile) if args.floor else {}
        try:
            for step, argv in (("up", ["up", str(path)]), ("check", ["check", str(path), "--json"])):
                results[step] = r = run([*NETLAB, *argv], args.nofile)
                print(f"{step}: {r.words()}, exit {r.rc}", file=sys.stderr)
                if step == "check" and r.output.startswith("{"):
                    for c in json.loads(r.output)["checks"]:
                        print(
                            f"  {c['name']}: {c['summary']} (attempts {c['attempts']}, {c['seconds']} s)",
                            file=sys.stderr,
                        )
                if r.rc:
                    print((r.output + r.errors)[-3000:], file=sys.stderr)
                    failed = True
                    break
                if step == "up" and len(left(name)) != args.namespaces:
                    print(f"up made {len(left(name))} namespaces, not {args.namespaces}", file=sys.stderr)
                    failed = True
                    break
        finally:
            results["down"] = r = run([*NETLAB, "down", name], args.nofile)
            print(f"down: {r.words()}, exit {r.rc}", file=sys.stderr)
            if r.rc:
                print((r.output + r.errors)[-3000:], file=sys.stderr)
                failed = True
            failed = remove_left(name) or failed
    line = f"namespaces={args.namespaces} nofile={args.nofile or 'hard'} load={os.getloadavg()[0]:.2f}"
    for step, r in results.items():
        line += f" {step}_s={r.seconds:.2f} {step}_rss_mb={r.max_rss_mb:.0f} {step}_fds={r.max_fds} {step}_rc={r.rc}"
    if args.floor and "up" in results:
        line += f" up_ratio={results['up'].seconds / results['floor_up'].seconds:.2f}"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
