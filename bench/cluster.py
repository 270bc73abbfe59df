"""Benchmark a flannel VXLAN cluster: N nodes × P pods from a `cluster:` section, with
sampled all-pairs reachability, timed as whole CLI commands: up, check, down.

    bench/cluster [--nodes 10] [--pods-per-node 20] [--repeat 3]
    bench/cluster --write-lab labs/flannel-scale.yaml     # (re)write the shipped scale lab

The checks: for every ordered pair of nodes (i, j) one TCP probe from a pod on node i to
a pod on node j (the pods rotate, so most pods are used), with `served_by` and
`server_saw` (no NAT); one same-node probe per node; one route check per node (the
next node's pod subnet goes into flannel.1); and a capture of VXLAN on node1's eth0.

Safety: the lab lives in namespaces named `benchcl-<run>.*`, created and removed by
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


def lab(name: str, nodes: int, per_node: int) -> dict[str, Any]:
    # `web` replicas are spread like a scheduler does: web-k runs on node (k mod N) + 1.
    def pod(node: int, slot: int) -> str:
        return f"web-{node + nodes * (slot % per_node)}"

    checks: list[dict[str, Any]] = []
    for i in range(nodes):
        for j in range(nodes):
            a, b = pod(i, i * 3 + j), pod(j, j * 7 + i)
            if i == j:
                b = pod(j, i * 3 + j + 1)
            if a == b:
                continue
            checks.append(
                {
                    "name": f"node{i + 1} {a} → node{j + 1} {b}",
                    "probe": {"from": a, "to": b, "port": 8080},
                    "expect": {"served_by": b, "server_saw": a},
                }
            )
    for i in range(nodes):
        nxt = (i + 1) % nodes
        if nxt != i:
            checks.append(
                {
                    "name": f"node{i + 1} routes node{nxt + 1}'s pods into flannel.1",
                    "route": {"on": f"node{i + 1}", "get": f"10.244.{nxt}.2"},
                    "expect": {"dev": "flannel.1", "via": f"10.244.{nxt}.0"},
                }
            )
    if nodes > 1:
        checks.append(
            {
                "name": "node1's underlay carries VXLAN (UDP 8472, VNI 1)",
                "probe": {"from": pod(0, 0), "to": pod(1, 0), "port": 8080},
                "capture": {"on": "node1:eth0", "expect": {"udp_dport": 8472, "vxlan_vni": 1}},
            }
        )
    return {
        "name": name,
        "description": f"{nodes} nodes × {per_node} pods on flannel's VXLAN overlay; sampled all-pairs reachability",
        "requires": ["netns", "veth", "bridge", "vxlan"],
        "cluster": {
            "backend": "vxlan",
            "pod_cidr": "10.244.0.0/16",
            "nodes": {f"node{i + 1}": {} for i in range(nodes)},
            "pods": {"web": {"replicas": nodes * per_node, "labels": {"app": "web"}, "serve": ["tcp/8080"]}},
        },
        "checks": checks,
    }


HEADER = """\
# A scale lab: 10 nodes × 20 pods on flannel's VXLAN overlay (211 namespaces with the
# underlay switch), written by `bench/cluster --write-lab labs/flannel-scale.yaml`.
# The `web` deployment's 200 replicas are spread over the nodes like a scheduler would
# (web-k on node (k mod 10) + 1). The checks sample all-pairs reachability: one probe for
# every ordered pair of nodes, one per node within it, a route check per node and a
# capture of the VXLAN on node1's underlay. `bench/cluster` times up, check and down.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="`netlab check` runs on the same lab")
    ap.add_argument("--write-lab", metavar="PATH", help="write the lab file (named flannel-scale) and exit")
    args = ap.parse_args()
    if args.write_lab:
        data = lab("flannel-scale", args.nodes, args.pods_per_node)
        text = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)
        Path(args.write_lab).write_text(HEADER + text, encoding="utf-8")
        return 0
    name = f"benchcl-{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump(lab(name, args.nodes, args.pods_per_node), sort_keys=False))
        result = up_check_down(path, name, args.repeat)
    if result is None:
        return 1
    pods = args.nodes * args.pods_per_node
    print(
        f"nodes={args.nodes} pods={pods} namespaces={args.nodes + pods + 1} checks={result.n_checks} {result.summary()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
