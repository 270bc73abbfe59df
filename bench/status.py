"""Benchmark `netlab status`: a node with one bridge and P pods (the lab of bench/run's
netlab method), and `netlab status LAB` timed as whole CLI commands, output into a pipe:
the interface table, --brief (a line per node), --json and --format tsv, each
--repeat times, interleaved; the medians in one line on stdout, as the last line.

    bench/status [--pods 500] [--repeat 5]

The issue's target: `netlab status` of a 500-pod lab in at most 0.5 s.

Safety: the lab lives in namespaces named `benchst-<run>.*`, created and removed by
netlab itself; `netlab down` runs in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from checks import pod_addr
from labrun import NETLAB, timed

FORMS = {"table": [], "brief": ["--brief"], "json": ["--json"], "tsv": ["--format", "tsv"]}


def lab(name: str, pods: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {"host": {"links": {"br0": {"kind": "bridge", "addresses": ["10.0.0.1/16"]}}}}
    for i in range(pods):
        nodes["host"]["links"][f"p{i}"] = {"peer": f"pod{i}:eth0", "master": "br0"}
        nodes[f"pod{i}"] = {
            "links": {"eth0": {"addresses": [f"{pod_addr(i)}/16"]}},
            "routes": [{"to": "default", "via": "10.0.0.1"}],
        }
    return {"name": name, "nodes": nodes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    name = f"benchst-{secrets.token_hex(2)}"
    times: dict[str, list[float]] = {form: [] for form in FORMS}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump(lab(name, args.pods), sort_keys=False))
        try:
            t_up, p = timed([*NETLAB, "up", str(path)])
            if p.returncode:
                print(p.stdout + p.stderr, file=sys.stderr)
                return 1
            print(f"up of {args.pods} pods: {t_up:.2f} s", file=sys.stderr)
            for _ in range(args.repeat):
                for form, extra in FORMS.items():
                    t, p = timed([*NETLAB, "status", name, *extra])
                    if p.returncode or str(args.pods - 1) not in p.stdout:
                        print(p.stdout[-2000:] + p.stderr, file=sys.stderr)
                        return 1
                    times[form].append(t)
        finally:
            timed([*NETLAB, "down", name])
    for form, runs in times.items():
        print(f"status {form}: {', '.join(f'{t:.2f}' for t in runs)}", file=sys.stderr)
    medians = " ".join(f"status_{form}_s={statistics.median(runs):.2f}" for form, runs in times.items())
    print(f"pods={args.pods} load={load:.2f} {medians}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
