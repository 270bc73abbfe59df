"""Benchmark kube-proxy's rules at scale: S services × E endpoints in a `cluster:` lab,
in nftables mode (default) or iptables mode, timed as whole CLI commands: up, check, down.

    bench/services [--services 200] [--endpoints 3] [--nodes 3] [--pods 150] [--mode nftables|iptables]
                   [--repeat 3] [--rounds 1] [--sample 20] [--keep-lab PATH]

The lab: N nodes (host-gw), one `client` pod on node1, and `--pods` pods serving
tcp/8080 spread over the nodes like a scheduler would. By default (150 pods) the pods
are 50 deployments of E replicas (`app: grpG`) and service K selects deployment K mod 50,
so each deployment backs four services (as an app's ClusterIP, headless, metrics and
admin services do): the rules are as large as with one deployment per service (S × E
endpoint chains on every node) for a quarter of the namespaces. `--pods S×E` (600) makes
every service its own deployment (`app: svcK`). Every tenth service is a NodePort. Each
node gets the whole table: nftables mode one `kube-proxy` table (one libnftables
transaction), iptables mode one iptables-save dump (one iptables-nft-restore).

The checks: `--sample` services spread over the range, one probe each from `client` to the
ClusterIP (served by one of its E pods, not SNATed), and for the NodePorts among them one
probe to node2's address (masqueraded: the pod sees a node address, not the client's).

Printed: the ruleset size per node (lines, chains), then the medians over `--rounds`
rounds of: `netlab render` (load and expand alone), `netlab up`, `netlab check --json`
(each of --repeat runs; also its own `seconds`) and `netlab down`, as whole commands.

Safety: the lab lives in namespaces named `benchsvc-<run>.*`, created and removed by netlab
itself; `netlab down` runs in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from labrun import render_up_check_down

SERVICE_CIDR = "10.96.0.0/16"


def vip(k: int) -> str:
    return f"10.96.{1 + k // 250}.{1 + k % 250}"


def lab(name: str, *, services: int, endpoints: int, nodes: int, pods: int, mode: str, sample: int) -> dict[str, Any]:
    own = pods >= services * endpoints  # every service its own deployment
    groups = max(1, pods // endpoints)
    pod_specs: dict[str, Any] = {"client": {"node": "node1", "labels": {"role": "client"}}}
    if own:
        for k in range(services):
            pod_specs[f"svc{k}"] = {"replicas": endpoints, "labels": {"app": f"svc{k}"}, "serve": ["tcp/8080"]}
    else:
        for g in range(groups):
            pod_specs[f"grp{g}"] = {"replicas": endpoints, "labels": {"app": f"grp{g}"}, "serve": ["tcp/8080"]}

    def members(k: int) -> list[str]:
        base = f"svc{k}" if own else f"grp{k % groups}"
        return [f"{base}-{i}" for i in range(endpoints)]

    svc_specs: dict[str, Any] = {}
    for k in range(services):
        spec: dict[str, Any] = {
            "cluster_ip": vip(k),
            "selector": {"app": f"svc{k}" if own else f"grp{k % groups}"},
            "ports": [{"port": 80, "target_port": 8080}],
        }
        if k % 10 == 0:
            spec["type"] = "NodePort"
            spec["ports"][0]["node_port"] = 30000 + k
        svc_specs[f"svc{k}"] = spec
    checks: list[dict[str, Any]] = []
    step = max(1, services // max(1, sample))
    for k in range(0, services, step)[:sample]:
        checks.append(
            {
                "name": f"client → svc{k}'s ClusterIP",
                "probe": {"from": "client", "to": f"{vip(k)}:80"},
                "expect": {"served_by": members(k), "server_saw": "client"},
            }
        )
        if k % 10 == 0 and nodes > 1:
            checks.append(
                {
                    "name": f"client → svc{k}'s NodePort on node2",
                    "probe": {"from": "client", "to": f"node2:{30000 + k}"},
                    "expect": {"served_by": members(k)},
                }
            )
    return {
        "name": name,
        "description": f"{services} services × {endpoints} endpoints in kube-proxy's {mode} mode, {nodes} nodes",
        "requires": ["netns", "veth", "bridge", "nftables", "conntrack"],
        "cluster": {
            "backend": "host-gw",
            "proxy_mode": mode,
            "service_cidr": SERVICE_CIDR,
            "subnet_len": 22,  # room for 600 pods on 3 nodes
            "nodes": {f"node{i + 1}": {} for i in range(nodes)},
            "pods": pod_specs,
            "services": svc_specs,
        },
        "checks": checks,
    }


def ruleset_size(path: Path, mode: str) -> str:
    """Lines and chains of node1's kube-proxy rules, from the rendered lab."""
    from netlab.load import load_lab

    node = load_lab(str(path)).nodes["node1"]
    text = "".join((r.ruleset or "") for r in node.nftables) + "".join((d.save or "") for d in node.iptables)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if mode == "nftables":
        chains = sum(1 for line in lines if line.startswith("add chain "))
        rules = sum(1 for line in lines if line.startswith("add rule "))
        elements = sum(1 for line in lines if line.startswith("add element "))
        return f"node1 ruleset: {len(lines)} lines, {chains} chains, {rules} rules, {elements} elements"
    chains = sum(1 for line in lines if line.startswith(":"))
    rules = sum(1 for line in lines if line.startswith("-A "))
    return f"node1 dump: {len(lines)} lines, {chains} chains, {rules} rules"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument(
        "--pods",
        type=int,
        default=150,
        help="serving pods, grouped ENDPOINTS at a time (services × endpoints: one deployment each)",
    )
    ap.add_argument("--mode", choices=["nftables", "iptables"], default="nftables")
    ap.add_argument("--repeat", type=int, default=3, help="`netlab check` runs on the same lab")
    ap.add_argument("--rounds", type=int, default=1, help="whole render/up/check/down rounds (medians are printed)")
    ap.add_argument("--sample", type=int, default=20, help="services probed by the checks")
    ap.add_argument("--keep-lab", metavar="PATH", help="also write the lab file here")
    args = ap.parse_args()
    if args.services > 250 * 250:
        ap.error("at most 62500 services (the cluster IPs come from 10.96.0.0/16)")
    pods = args.pods
    name = f"benchsvc-{secrets.token_hex(2)}"
    data = lab(
        name,
        services=args.services,
        endpoints=args.endpoints,
        nodes=args.nodes,
        pods=pods,
        mode=args.mode,
        sample=args.sample,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        if args.keep_lab:
            Path(args.keep_lab).write_text(path.read_text())
        print(ruleset_size(path, args.mode), file=sys.stderr)
        timings = render_up_check_down(path, name, args.repeat, args.rounds)
        if timings is None:
            return 1
    namespaces = args.nodes + pods + 2  # + client + the underlay switch
    print(
        f"mode={args.mode} services={args.services} endpoints={args.endpoints} nodes={args.nodes} pods={pods} "
        f"namespaces={namespaces} " + timings
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
