"""Benchmark `netlab trace`: one TCP probe from a client through two routers to a server
(four namespaces, each traced), answered, so the walk goes both ways.

    bench/trace [--repeat 10] [--baseline DIR]

Three ways, interleaved in one run (other work on the machine hits them alike):
`inside` is run_trace in this process (the trace itself: temporary tables and listeners
in four namespaces, the probe, 0.05 s of quiet that ends the collection, rule texts, the
kernel's drop tracepoints through a private tracefs); `no-tracefs` the same without the
kernel's tracepoints (what the private tracefs costs); `cli` the whole `netlab trace`
command (Python start-up and imports too); with `--baseline DIR` (another netlab source
tree, e.g. `git archive main | tar -x -C DIR`), `cli-baseline` is DIR's `netlab trace`, in
the same rounds. Prints each one's median and the ratios, and the load average. The
bytecode caches are written first, as pip does on install (this machine's shells set
PYTHONDONTWRITEBYTECODE: each command would compile netlab again).

Safety: the lab lives in namespaces named `benchtr-<run>.*`, created and removed by netlab
itself; `netlab down` runs in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from labrun import NETLAB, compile_bytecode, timed

T = TypeVar("T")


RULESET = """\
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy accept;
    tcp dport 8080 counter accept
  }
}
"""


def lab(name: str) -> dict[str, Any]:
    """client 10.0.1.2 — r1 — r2 — server 10.0.3.2 (tcp/8080), routed both ways; each
    router has a ruleset, so the walk has rules to resolve."""

    def router(left: str, right: str, peer: str, route: tuple[str, str]) -> dict[str, Any]:
        return {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {"eth0": {"addresses": [left]}, "eth1": {"peer": peer, "addresses": [right]}},
            "routes": [{"to": route[0], "via": route[1]}],
            "nftables": RULESET,
        }

    return {
        "name": name,
        "nodes": {
            "client": {
                "links": {"eth0": {"peer": "r1:eth0", "addresses": ["10.0.1.2/24"]}},
                "routes": [{"to": "default", "via": "10.0.1.1"}],
            },
            "r1": router("10.0.1.1/24", "10.0.2.1/24", "r2:eth0", ("10.0.3.0/24", "10.0.2.2")),
            "r2": router("10.0.2.2/24", "10.0.3.1/24", "server:eth0", ("10.0.1.0/24", "10.0.2.1")),
            "server": {
                "links": {"eth0": {"addresses": ["10.0.3.2/24"]}},
                "routes": [{"to": "default", "via": "10.0.3.1"}],
                "serve": ["tcp/8080"],
            },
        },
    }


def _baseline(tree: str, cwd: Path) -> dict[str, str]:
    """The environment that runs DIR's netlab (its bytecode written), checked to import it."""
    tree = str(Path(tree).resolve())
    env = {**os.environ, "PYTHONPATH": tree}
    timed([NETLAB[0], "-c", f"import compileall; compileall.compile_dir({tree + '/netlab'!r}, quiet=1)"])
    _, p = timed([NETLAB[0], "-c", "import netlab; print(netlab.__file__)"], env, cwd)
    if not p.stdout.startswith(tree + "/"):
        raise SystemExit(f"--baseline {tree}: its commands would import {p.stdout.strip() or p.stderr}")
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--baseline", metavar="DIR", help="also time DIR's netlab trace, interleaved (a source tree)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/trace needs root", file=sys.stderr)
        return 2

    from netlab.context import lab_context
    from netlab.kernel.observe import LiveObserver
    from netlab.observations import KernelSeen
    from netlab.probes.trace import run_trace

    class NoTracefs(LiveObserver):
        def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
            return send(), KernelSeen(unavailable="not read (bench)")

    name = f"benchtr-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(lab(name)))
        times: dict[str, list[float]] = {"inside": [], "no-tracefs": [], "cli": []}
        compile_bytecode(NETLAB[0])
        baseline = _baseline(args.baseline, Path(tmp)) if args.baseline else None
        if baseline is not None:
            times["cli-baseline"] = []
        load = os.getloadavg()
        try:
            _, p = timed([*NETLAB, "up", str(path)])
            if p.returncode:
                print(p.stdout + p.stderr, file=sys.stderr)
                return 1
            ctx = lab_context(name, None)
            plain = lab_context(name, None)
            plain.observer = NoTracefs()
            for _ in range(args.repeat):
                for method, context in (("inside", ctx), ("no-tracefs", plain)):
                    t0 = time.perf_counter()
                    trace = run_trace(context, "client", "10.0.3.2", "tcp", 8080)
                    times[method].append(time.perf_counter() - t0)
                    if not trace.ok or len({e.ns for e in trace.events}) != 4:
                        print(f"{method}: the trace did not cross four namespaces: {trace}", file=sys.stderr)
                        return 1
                t, p = timed([*NETLAB, "trace", name, "--from", "client", "--to", "server:8080"])
                if p.returncode:
                    print(p.stdout + p.stderr, file=sys.stderr)
                    return 1
                times["cli"].append(t)
                if baseline is not None:
                    t, p = timed(
                        [*NETLAB, "trace", name, "--from", "client", "--to", "server:8080"], baseline, Path(tmp)
                    )
                    if p.returncode:
                        print(p.stdout + p.stderr, file=sys.stderr)
                        return 1
                    times["cli-baseline"].append(t)
        finally:
            timed([*NETLAB, "down", name])
    med = {m: statistics.median(v) for m, v in times.items()}
    for m, v in times.items():
        print(f"{m:11s} median {med[m]:.3f} s  min {min(v):.3f}  max {max(v):.3f}  (n={len(v)})")
    print(
        f"tracefs costs {med['inside'] - med['no-tracefs']:.3f} s (inside/no-tracefs {med['inside'] / med['no-tracefs']:.2f})"
    )
    if "cli-baseline" in med:
        print(f"cli/cli-baseline {med['cli'] / med['cli-baseline']:.2f}")
    print(
        f"trace_inside_s={med['inside']:.3f} trace_no_tracefs_s={med['no-tracefs']:.3f} trace_cli_s={med['cli']:.3f} "
        f"load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
