"""Benchmark network policy at scale: Q NetworkPolicies over P pods in K namespaces of a
`cluster:` lab, compiled by netlab to `table inet network-policy` per node, timed as whole
CLI commands: render, up, check, down.

    bench/policy [--pods 300] [--policies 100] [--namespaces 10] [--nodes 3] [--replicas 3]
                 [--sample 20] [--repeat 3] [--rounds 1] [--seed 1] [--keep-lab PATH]

The lab: N nodes (host-gw, subnet_len 22), one `client` pod on node1 (namespace default,
serves nothing) and P/R deployments `appJ` of R replicas (`app: appJ`, namespace `nsK` with
K = J mod namespaces, labelled `team: tK`), every pod serving tcp/8080 and tcp/9090.

Policy q (in namespace nsK of its app, app q mod deployments):
* most isolate the app for ingress: rule 0 allows 2-3 other apps of the namespace
  (`pod_selector`) on 8080 (every other policy also 9090), rule 1 allows every pod of one
  other namespace (`namespace_selector: {team: tM}`) on 9090;
* every eleventh (q mod 11 = 10) isolates its app for egress instead: to 2-3 apps of the
  namespace on 8080, to one namespace on 9090;
* q mod 50 = 3 also has an `ingress_deny` of one of its allowed apps on 8080.

The checks, with the verdict computed here from the policies under NetworkPolicy semantics
(isolation by direction, union of allow rules, peers: pod_selector alone = own namespace,
namespace_selector alone = every pod of those namespaces; deny rules first; egress on the
source, then ingress on the destination), not taken from netlab:
* `--sample` allowed probes (picked from the policies' rules: a peer → a selected pod on
  an allowed port, or a selected pod → an egress peer), which must be served by the
  destination and see the source's address;
* `--sample` denied probes (random source → a served port of an isolated pod, kept when the
  first drop is a default deny): `expect: {result: timeout, dropped_by: default-deny}`,
  `timeout: 0.3`;
* one probe per deny rule: dropped by that policy.

Printed: the network-policy table per node (lines, chains, rules, sets, set elements),
then the medians over `--rounds` rounds of `netlab render`, `netlab up`, `netlab check
--json` (each of --repeat runs; also its own `seconds`) and `netlab down`, as whole commands.

Safety: the lab lives in namespaces named `benchpol-<run>.*`, created and removed by netlab
itself; `netlab down` runs in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from labrun import render_up_check_down

PORTS = (8080, 9090)
DENIED_TIMEOUT = 0.3


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class Policies:
    """NetworkPolicy semantics over the generated pods and policies (independent of netlab)."""

    def __init__(self, pods: list[Pod], namespaces: dict[str, dict[str, str]], policies: dict[str, Any]) -> None:
        self.pods = pods
        self.ns_labels = {
            ns: {**namespaces.get(ns, {}), "kubernetes.io/metadata.name": ns}
            for ns in {p.namespace for p in pods} | set(namespaces)
        }
        self.policies = policies

    @staticmethod
    def types(policy: dict[str, Any]) -> list[str]:
        if "policy_types" in policy:
            return list(policy["policy_types"])
        return ["ingress", "egress"] if policy.get("egress") or policy.get("egress_deny") else ["ingress"]

    def selecting(self, pod: Pod, direction: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (name, p)
            for name, p in self.policies.items()
            if direction in self.types(p)
            and p.get("namespace", "default") == pod.namespace
            and _matches(p.get("pod_selector", {}), pod.labels)
        ]

    def peer_matches(self, policy: dict[str, Any], peer: dict[str, Any], pod: Pod) -> bool:
        if "namespace_selector" in peer:
            ns_ok = _matches(peer["namespace_selector"], self.ns_labels[pod.namespace])
        else:
            ns_ok = pod.namespace == policy.get("namespace", "default")
        return ns_ok and _matches(peer.get("pod_selector", {}), pod.labels)

    def rule_matches(self, policy: dict[str, Any], rule: dict[str, Any], peers_key: str, other: Pod, port: int) -> bool:
        peers = rule.get(peers_key, [])
        ports = rule.get("ports", [])
        return (not peers or any(self.peer_matches(policy, peer, other) for peer in peers)) and (
            not ports or any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port) for p in ports)
        )

    def stage(self, pod: Pod, direction: str, other: Pod, port: int) -> str | None:
        """None: not isolated; "allow"; "default-deny"; or the name of the policy whose deny rule matched."""
        chosen = self.selecting(pod, direction)
        if not chosen:
            return None
        peers_key = "from" if direction == "ingress" else "to"
        for name, p in chosen:
            if any(self.rule_matches(p, r, peers_key, other, port) for r in p.get(f"{direction}_deny", [])):
                return name
        for _name, p in chosen:
            if any(self.rule_matches(p, r, peers_key, other, port) for r in p.get(direction, [])):
                return "allow"
        return "default-deny"

    def verdict(self, src: Pod, dst: Pod, port: int) -> str:
        """ "ok", or what drops the flow first: "default-deny" or a policy's name."""
        for stage in (self.stage(src, "egress", dst, port), self.stage(dst, "ingress", src, port)):
            if stage not in (None, "allow"):
                return stage
        return "ok"


def lab(  # noqa: C901
    name: str,
    *,
    pods: int,
    policies: int,
    namespaces: int,
    nodes: int,
    replicas: int,
    sample: int,
    seed: int,
) -> dict[str, Any]:
    # One generator read top to bottom: its phases draw from one random sequence, so the
    # same seed gives the same lab (splitting it would change every bench lab's content).
    rng = random.Random(seed)
    deployments = max(1, pods // replicas)
    ns_of = [f"ns{j % namespaces}" for j in range(deployments)]
    ns_specs = {f"ns{k}": {"labels": {"team": f"t{k}"}} for k in range(namespaces)}
    pod_specs: dict[str, Any] = {"client": {"node": "node1", "labels": {"role": "client"}}}
    all_pods = [Pod("client", "default", {"role": "client"})]
    for j in range(deployments):
        pod_specs[f"app{j}"] = {
            "namespace": ns_of[j],
            "replicas": replicas,
            "labels": {"app": f"app{j}"},
            "serve": [f"tcp/{port}" for port in PORTS],
        }
        all_pods += [Pod(f"app{j}-{i}", ns_of[j], {"app": f"app{j}"}) for i in range(replicas)]

    pol_specs: dict[str, Any] = {}
    for q in range(policies):
        target = q % deployments
        ns = ns_of[target]
        mates = [j for j in range(deployments) if ns_of[j] == ns and j != target]
        peers = [{"pod_selector": {"app": f"app{j}"}} for j in rng.sample(mates, min(len(mates), 2 + q % 2))]
        other_ns = [k for k in range(namespaces) if f"ns{k}" != ns] or [int(ns[2:])]
        from_ns = [{"namespace_selector": {"team": f"t{rng.choice(other_ns)}"}}]
        ports = [{"port": 8080}] + ([{"port": 9090}] if q % 2 else [])
        egress = q % 11 == 10  # not every tenth: their apps would all be in one namespace
        key, peer_key = ("egress", "to") if egress else ("ingress", "from")
        rules = [{peer_key: peers, "ports": ports}] if peers else []
        rules.append({peer_key: from_ns, "ports": [{"port": 9090}]})
        spec: dict[str, Any] = {"namespace": ns, "pod_selector": {"app": f"app{target}"}}
        if egress:
            spec["policy_types"] = ["egress"]
        spec[key] = rules
        if not egress and q % 50 == 3 and peers:
            spec["ingress_deny"] = [{"from": [peers[0]], "ports": [{"port": 8080}]}]
        pol_specs[f"{key}-{q}-app{target}"] = spec

    model = Policies(all_pods, {ns: s["labels"] for ns, s in ns_specs.items()}, pol_specs)
    by_app: dict[str, list[Pod]] = {}
    for pod in all_pods:
        by_app.setdefault(pod.labels.get("app", ""), []).append(pod)

    def served(dst: Pod) -> bool:
        return dst.name != "client"

    seen: set[tuple[str, str, int]] = set()
    checks: list[dict[str, Any]] = []
    names = list(pol_specs)

    # allowed: from the rules themselves
    allowed, tries = 0, 0
    while allowed < sample and tries < 100 * sample:
        tries += 1
        pname = rng.choice(names)
        p = pol_specs[pname]
        direction = "egress" if "egress" in p else "ingress"
        rule = rng.choice(p[direction])
        peer = rng.choice(rule["from" if direction == "ingress" else "to"])
        port = rng.choice([x["port"] for x in rule["ports"]])
        selected = by_app[p["pod_selector"]["app"]]
        candidates = [x for x in all_pods if model.peer_matches(p, peer, x)]
        a, b = rng.choice(selected), rng.choice(candidates)
        src, dst = (b, a) if direction == "ingress" else (a, b)
        if src == dst or not served(dst) or (src.name, dst.name, port) in seen or model.verdict(src, dst, port) != "ok":
            continue
        seen.add((src.name, dst.name, port))
        allowed += 1
        checks.append(
            {
                "name": f"allowed: {src.namespace}/{src.name} → {dst.namespace}/{dst.name}:{port} "
                f"({pname} {direction})",
                "probe": {"from": src.name, "to": f"{dst.name}:{port}"},
                "expect": {"result": "ok", "served_by": dst.name, "server_saw": src.name},
            }
        )

    # denied by a default deny: random sources to isolated pods (half ingress-, half egress-isolated)
    ingress_isolated = [x for x in all_pods if model.selecting(x, "ingress")]
    egress_isolated = [x for x in all_pods if model.selecting(x, "egress")]
    denied, tries = 0, 0
    while denied < sample and tries < 100 * sample:
        tries += 1
        port = rng.choice(PORTS)
        if egress_isolated and denied % 2:
            src, dst = rng.choice(egress_isolated), rng.choice(all_pods)
        else:
            src, dst = rng.choice(all_pods), rng.choice(ingress_isolated)
        if src == dst or not served(dst) or (src.name, dst.name, port) in seen:
            continue
        if model.verdict(src, dst, port) != "default-deny":
            continue
        seen.add((src.name, dst.name, port))
        denied += 1
        checks.append(
            {
                "name": f"denied: {src.namespace}/{src.name} → {dst.namespace}/{dst.name}:{port}",
                "probe": {"from": src.name, "to": f"{dst.name}:{port}", "timeout": DENIED_TIMEOUT},
                "expect": {"result": "timeout", "dropped_by": "default-deny"},
            }
        )

    # each deny rule: its peer on 8080, which rule 0 allows
    for pname, p in pol_specs.items():
        for rule in p.get("ingress_deny", []):
            for src in by_app[rule["from"][0]["pod_selector"]["app"]]:
                dst = by_app[p["pod_selector"]["app"]][0]
                if model.verdict(src, dst, 8080) == pname:
                    checks.append(
                        {
                            "name": f"deny rule: {src.namespace}/{src.name} → {dst.namespace}/{dst.name}:8080",
                            "probe": {"from": src.name, "to": f"{dst.name}:8080", "timeout": DENIED_TIMEOUT},
                            "expect": {"result": "timeout", "dropped_by": pname},
                        }
                    )
                    break
    if allowed < sample or denied < sample:
        print(
            f"warning: found only {allowed} allowed and {denied} denied probes (wanted {sample} each)", file=sys.stderr
        )
    return {
        "name": name,
        "description": f"{policies} network policies over {pods} pods in {namespaces} namespaces, {nodes} nodes",
        "requires": ["netns", "veth", "bridge", "nftables", "conntrack", "br_netfilter"],
        "cluster": {
            "backend": "host-gw",
            "subnet_len": 22,  # room for 600+ pods on 3 nodes
            "nodes": {f"node{i + 1}": {} for i in range(nodes)},
            "namespaces": ns_specs,
            "pods": pod_specs,
            "policies": pol_specs,
        },
        "checks": checks,
    }


def table_sizes(path: Path) -> list[str]:
    """Each node's `table inet network-policy`, from the expanded lab (netlab's own loader)."""
    from netlab.load import load_lab

    t0 = time.perf_counter()
    expanded = load_lab(str(path))
    out = [f"load + expand in-process: {time.perf_counter() - t0:.2f} s"]
    for node_name, node in expanded.nodes.items():
        texts = [r.ruleset for r in node.nftables if r.ruleset and "table inet network-policy {" in r.ruleset]
        if not texts:
            continue
        lines = [line.strip() for line in "".join(texts).splitlines() if line.strip()]
        chains, rules, elements, sets, dropped, block = 0, 0, 0, 0, 0, ""
        for line in lines:
            if line.startswith(("chain ", "set ")):
                block = line.split()[0]
                chains += block == "chain"
                sets += block == "set"
                dropped += line.startswith("set dropped ")
            elif line == "}":
                block = ""
            elif block == "chain" and not line.startswith(("type ", "#")):
                rules += 1
            elif block == "set" and line.startswith("elements = {"):
                elements += len(line.split(","))
        vmap = sum(line.count(": jump ") for line in lines)
        out.append(
            f"{node_name}: {len(lines)} lines, {chains} chains, {rules} rules, {sets} sets "
            f"({dropped} of drops, {sets - dropped} of peers), {elements} set elements, "
            f"{vmap} vmap entries"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=300, help="serving pods, REPLICAS per deployment")
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="`netlab check` runs on the same lab")
    ap.add_argument("--rounds", type=int, default=1, help="whole render/up/check/down rounds (medians are printed)")
    ap.add_argument("--sample", type=int, default=20, help="allowed probes, and as many denied ones")
    ap.add_argument("--seed", type=int, default=1, help="for the policies' peers and the probes")
    ap.add_argument("--keep-lab", metavar="PATH", help="also write the lab file here")
    args = ap.parse_args()
    if args.pods // args.replicas < args.namespaces:
        ap.error("need at least one deployment per namespace (pods / replicas >= namespaces)")
    name = f"benchpol-{secrets.token_hex(2)}"
    data = lab(
        name,
        pods=args.pods,
        policies=args.policies,
        namespaces=args.namespaces,
        nodes=args.nodes,
        replicas=args.replicas,
        sample=args.sample,
        seed=args.seed,
    )
    pods = (args.pods // args.replicas) * args.replicas
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        if args.keep_lab:
            Path(args.keep_lab).write_text(path.read_text())
        for line in table_sizes(path):
            print(line, file=sys.stderr)
        timings = render_up_check_down(path, name, args.repeat, args.rounds)
        if timings is None:
            return 1
    namespaces = args.nodes + pods + 2  # + client + the underlay switch
    print(
        f"policies={args.policies} pods={pods} k8s_namespaces={args.namespaces} nodes={args.nodes} "
        f"namespaces={namespaces} " + timings
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
