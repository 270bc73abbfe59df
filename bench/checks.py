"""Benchmark `netlab check`: one bridge, P pods serving tcp/udp/http, and C checks
(mostly real probes with served_by/server_saw, some route checks, some expected
failures, a few captures), timed as whole CLI commands: up, check, down.

    bench/checks [--pods 50] [--checks 100] [--repeat 3]

Safety: the lab lives in namespaces named `benchck-<run>.*`, created and removed by
netlab itself; `netlab down` runs in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from labrun import up_check_down


def pod_addr(i: int) -> str:
    n = i + 2
    return f"10.0.{n // 256}.{n % 256}"


def lab(name: str, pods: int, checks: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {"host": {"links": {"br0": {"kind": "bridge", "addresses": ["10.0.0.1/16"]}}}}
    for i in range(pods):
        nodes["host"]["links"][f"p{i}"] = {"peer": f"pod{i}:eth0", "master": "br0"}
        nodes[f"pod{i}"] = {
            "serve": ["tcp/8080", "udp/53", "http/80"],
            "links": {"eth0": {"addresses": [f"{pod_addr(i)}/16"]}},
            "routes": [{"to": "default", "via": "10.0.0.1"}],
        }
    out: list[dict[str, Any]] = []
    kinds = ["tcp", "udp", "http", "icmp", "route", "tcp", "refused", "capture", "tcp", "udp"]
    for k in range(checks):
        kind = kinds[k % len(kinds)]
        a, b = k % pods, (k * 7 + 3) % pods
        if a == b:
            b = (b + 1) % pods
        name_ = f"{k:03d} {kind} pod{a} → pod{b}"
        if kind in ("tcp", "udp", "http"):
            port = {"tcp": 8080, "udp": 53, "http": 80}[kind]
            out.append(
                {
                    "name": name_,
                    "probe": {"from": f"pod{a}", "to": f"pod{b}", "proto": kind, "port": port},
                    "expect": {"served_by": f"pod{b}", "server_saw": f"pod{a}"},
                }
            )
        elif kind == "icmp":
            out.append({"name": name_, "probe": {"from": f"pod{a}", "to": f"pod{b}"}})
        elif kind == "route":
            out.append(
                {
                    "name": name_,
                    "route": {"on": f"pod{a}", "get": pod_addr(b)},
                    "expect": {"dev": "eth0", "table": "main"},
                }
            )
        elif kind == "refused":
            out.append(
                {
                    "name": name_,
                    "probe": {"from": f"pod{a}", "to": f"pod{b}", "port": 9999},
                    "expect": {"result": "refused"},
                }
            )
        else:
            out.append(
                {
                    "name": name_,
                    "probe": {"from": f"pod{a}", "to": f"pod{b}", "port": 8080},
                    "capture": {"on": f"host:p{b}", "expect": {"src": f"pod{a}"}},
                }
            )
    return {"name": name, "nodes": nodes, "checks": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--checks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="`netlab check` runs on the same lab")
    args = ap.parse_args()
    name = f"benchck-{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump(lab(name, args.pods, args.checks), sort_keys=False))
        result = up_check_down(path, name, args.repeat)
    if result is None:
        return 1
    print(f"pods={args.pods} checks={args.checks} {result.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
